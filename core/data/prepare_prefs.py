"""``llmctl prepare prefs``: HH-RLHF and UltraFeedback -> prompt / chosen / rejected pairs.

Output is TRL's conversational preference format, one JSON object per line::

    {"prompt": [{"role": "user", "content": …}, …],
     "chosen": [{"role": "assistant", "content": …}],
     "rejected": [{"role": "assistant", "content": …}], "source": "hh-rlhf/helpful-base"}

in ``data/preferences.jsonl`` and the held-out ``data/preferences_test.jsonl``.

- HH-RLHF (``chosen`` / ``rejected`` full ``\\n\\nHuman: … \\n\\nAssistant: …`` transcripts): each side
  is split at its LAST ``\\n\\nAssistant:``; both must share the text before it (else the pair is
  counted as ``prompt_mismatch`` and dropped). The prompt is parsed into user/assistant turns.
- UltraFeedback binarized: ``chosen`` / ``rejected`` as message lists (the prompt is every message
  but the last, which must be the assistant's), or flat strings with a ``prompt`` string.

Dropped and counted, not errors: pairs whose chosen and rejected replies are identical, pairs with
an empty final reply (real HH-RLHF and UltraFeedback rows have them), prompt mismatches. Errors
(InputError, ``--on-error``): missing or non-string fields, an empty prompt, a transcript with no
Assistant turn or not starting with a Human turn.

Held-out pairs come from the source's own test split where it has one (hub: ``test`` /
``test_prefs``; local: the ``*_test`` parameters), else from a seeded split by prompt hash with
``test_fraction``. No prompt is in both files: training pairs whose prompt is held out are dropped.

Source specs: a hub id, for HH-RLHF optionally with a subset as ``Anthropic/hh-rlhf:helpful-base``
(the hub ``data_dir``), or local ``.jsonl`` / ``.jsonl.gz`` / ``.json`` / ``.parquet`` files or globs.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.artifacts import ArtifactWriter, commit_together
from llmctl.core.data import hf_sources
from llmctl.core.data.prepare_rl import write_jsonl
from llmctl.core.data.records import ErrorPolicy, InputError, check_on_error
from llmctl.core.params import param
from llmctl.core.stages import config_params, get_stage, params_dict
from llmctl.core.workspace import Workspace

HH_HUB = "Anthropic/hh-rlhf"
UF_HUB = "HuggingFaceH4/ultrafeedback_binarized"
HUB_SPLITS = {"hh-rlhf": ("train", "test"), "ultrafeedback": ("train_prefs", "test_prefs")}
_TURN = re.compile(r"\n\n(Human|Assistant):")
ASSISTANT_SEP = "\n\nAssistant:"


@dataclass
class PreparePrefsParams:
    """Parameters of ``llmctl prepare prefs``."""

    hh_rlhf: list[str] = param("HH-RLHF sources: hub id[:subset] or local .jsonl(.gz) files/globs (empty = none).",
                            [f"{HH_HUB}:helpful-base", f"{HH_HUB}:harmless-base"])
    hh_rlhf_test: list[str] = param("Local HH-RLHF held-out files (hub sources use their test split).",
                                 [])
    ultrafeedback: list[str] = param("UltraFeedback binarized: hub id or local files/globs (empty = none).",
                                  [UF_HUB])
    ultrafeedback_test: list[str] = param("Local UltraFeedback held-out files (hub: test_prefs).", [])
    max_pairs: int = param("At most this many pairs per source split, a seeded sample (0 = all).", 0)
    test_fraction: float = param("Held-out share for sources without a test split (split by prompt hash).", 0.05)
    seed: int = param("Seed for sampling and the prompt-hash split.", 1337)
    on_error: str = param("Bad records: fail, or skip (counted in the manifest).", "fail", run_only=True)

    def validate(self) -> None:
        for name in ("hh_rlhf", "hh_rlhf_test", "ultrafeedback", "ultrafeedback_test"):
            setattr(self, name, [s for s in getattr(self, name) if s.strip()])  # --hh-rlhf "" = none
        if not (self.hh_rlhf or self.ultrafeedback):
            raise ValueError("no preference sources: give --hh-rlhf and/or --ultrafeedback")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in [0, 1), got {self.test_fraction}")
        if self.max_pairs < 0:
            raise ValueError("max_pairs must be >= 0")
        check_on_error(self.on_error)


# ---- parsing -----------------------------------------------------------------------------------------

class Dropped(Exception):
    """A pair that is well formed but not kept (identical replies, empty reply, prompt mismatch)."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def _field(r: hf_sources.Record, key: str) -> Any:
    if not isinstance(r.data, dict):
        raise r.error(f"expected a JSON object, got {type(r.data).__name__}")
    v = r.data.get(key)
    if v is None:
        raise r.error("missing", key)
    return v


def _text(r: hf_sources.Record, key: str) -> str:
    v = _field(r, key)
    if not isinstance(v, str):
        raise r.error(f"expected a string, got {type(v).__name__}", key)
    if not v.strip():
        raise r.error("empty", key)
    return v


def parse_hh_transcript(text: str) -> list[dict[str, str]]:
    """``\\n\\nHuman: a\\n\\nAssistant: b…`` -> messages (Human -> user); ValueError when malformed."""
    parts = _TURN.split(text)
    if parts[0].strip():
        raise ValueError("transcript does not start with '\\n\\nHuman:'")
    msgs = []
    for role, content in zip(parts[1::2], parts[2::2], strict=True):
        msgs.append({"role": "user" if role == "Human" else "assistant", "content": content.strip()})
    if not msgs:
        raise ValueError("no '\\n\\nHuman:' turn")
    return msgs


def split_hh(r: hf_sources.Record, key: str) -> tuple[str, str]:
    """(prompt text, final reply) of one HH transcript, split at its last ``\\n\\nAssistant:``."""
    text = _text(r, key)
    k = text.rfind(ASSISTANT_SEP)
    if k < 0:
        raise r.error("no '\\n\\nAssistant:' turn", key)
    return text[:k], text[k + len(ASSISTANT_SEP):].strip()


def hh_pair(r: hf_sources.Record, source: str) -> dict[str, Any]:
    """One HH-RLHF record as a preference pair (raises InputError or Dropped)."""
    p_chosen, chosen = split_hh(r, "chosen")
    p_rejected, rejected = split_hh(r, "rejected")
    if p_chosen != p_rejected:
        raise Dropped("prompt_mismatch")
    try:
        prompt = parse_hh_transcript(p_chosen)
    except ValueError as e:
        raise r.error(str(e), "chosen") from None
    if not any(m["content"] for m in prompt if m["role"] == "user"):
        raise r.error("empty prompt", "chosen")
    return _pair(prompt, chosen, rejected, source)


def _messages(r: hf_sources.Record, key: str) -> list[dict[str, str]]:
    v = _field(r, key)
    if not isinstance(v, list) or not v:
        raise r.error(f"expected a non-empty list of messages, got {type(v).__name__}", key)
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) \
                or m.get("role") not in ("system", "user", "assistant"):
            raise r.error(f"message {i} is not {{role: system|user|assistant, content: str}}", key)
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        raise r.error("the last message is not the assistant's", key)
    return out


def uf_pair(r: hf_sources.Record, source: str) -> dict[str, Any]:
    """One UltraFeedback binarized record (message lists or flat strings) as a preference pair."""
    chosen_v = _field(r, "chosen")
    if isinstance(chosen_v, list):
        chosen_m = _messages(r, "chosen")
        rejected_m = _messages(r, "rejected")
        prompt = chosen_m[:-1]
        if prompt != rejected_m[:-1]:
            raise Dropped("prompt_mismatch")
        if not prompt:  # lists holding only the reply: the prompt string is the user turn
            prompt = [{"role": "user", "content": _text(r, "prompt")}]
        chosen, rejected = chosen_m[-1]["content"], rejected_m[-1]["content"]
    else:
        prompt = [{"role": "user", "content": _text(r, "prompt")}]
        chosen, rejected = (_field(r, k) for k in ("chosen", "rejected"))
        for k, v in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(v, str):
                raise r.error(f"expected a string or a list of messages, got {type(v).__name__}", k)
    if not any(m["content"].strip() for m in prompt if m["role"] == "user"):
        raise r.error("empty prompt", "prompt")
    return _pair(prompt, chosen.strip(), rejected.strip(), source)


def _pair(prompt: list[dict[str, str]], chosen: str, rejected: str, source: str) -> dict[str, Any]:
    if not chosen or not rejected:
        raise Dropped("empty_reply")
    if chosen == rejected:
        raise Dropped("identical")
    return {"prompt": prompt,
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "source": source}


def prompt_key(prompt: list[dict[str, str]]) -> str:
    """A canonical string of a prompt conversation (for held-out splitting and overlap checks)."""
    return json.dumps([[m["role"], m["content"]] for m in prompt], ensure_ascii=False)


def in_test(key: str, seed: int, fraction: float) -> bool:
    """Seeded, stable membership of a prompt in the held-out share."""
    h = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64 < fraction


# ---- sources -----------------------------------------------------------------------------------------

@dataclass
class SourceSplit:
    """One readable input: its spec, hub options, kind, label and whether it is held out."""

    kind: str  # hh-rlhf | ultrafeedback
    spec: str
    hub: dict[str, Any]
    split: str
    label: str
    held_out: bool


def plan_sources(params: PreparePrefsParams) -> list[SourceSplit]:
    """Every (source, split) to read; hub sources contribute their train and test splits."""
    out: list[SourceSplit] = []
    for kind, specs, tests in (("hh-rlhf", params.hh_rlhf, params.hh_rlhf_test),
                               ("ultrafeedback", params.ultrafeedback, params.ultrafeedback_test)):
        train_split, test_split = HUB_SPLITS[kind]
        for spec in specs:
            if hf_sources.is_local(spec):
                for f in hf_sources.resolve_files(spec):
                    out.append(SourceSplit(kind, str(f), {}, "train", f"{kind}/{_stem(f)}", False))
                continue
            hub_id, _, subset = spec.partition(":")
            hub = {"data_dir": subset} if subset else {}
            label = f"{kind}/{subset}" if subset else kind
            out.append(SourceSplit(kind, hub_id, hub, train_split, label, False))
            out.append(SourceSplit(kind, hub_id, hub, test_split, label, True))
        for spec in tests:
            if not hf_sources.is_local(spec):
                raise InputError(spec, None, "held-out sources must be local files (hub sources use their "
                                             "own test split)")
            for f in hf_sources.resolve_files(spec):
                out.append(SourceSplit(kind, str(f), {}, "test", f"{kind}/{_stem(f)}", True))
    return out


def _stem(path: Path) -> str:
    name = Path(path).name
    for suf in sorted(hf_sources.DATA_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def read_pairs(src: SourceSplit, policy: ErrorPolicy, dropped: dict[str, int],
               where: list[str] | None = None) -> list[dict[str, Any]]:
    """The pairs of one source split; errors go to ``policy``, drops are counted in ``dropped``
    (and the first few located in ``where`` as ``file:line: kind``)."""
    convert = hh_pair if src.kind == "hh-rlhf" else uf_pair
    out = []
    seen_before = policy.seen
    for r in hf_sources.iter_records(src.spec, split=src.split, **src.hub):
        if isinstance(r, InputError):
            policy.bad(r)
            continue
        try:
            pair = convert(r, src.label)
        except InputError as e:
            policy.bad(e)
            continue
        except Dropped as d:
            policy.ok()
            dropped[d.kind] = dropped.get(d.kind, 0) + 1
            if where is not None and len(where) < 20:
                where.append(f"{r.source}:{r.line}: {d.kind}")
            continue
        policy.ok()
        out.append(pair)
    if policy.seen == seen_before:
        raise InputError(src.spec, None, "no records")
    return out


def build(params: PreparePrefsParams, policy: ErrorPolicy) -> dict[str, Any]:
    """Train and held-out pairs plus bookkeeping (no file written)."""
    dropped: dict[str, int] = {}
    dropped_where: list[str] = []
    train: list[dict[str, Any]] = []
    test: list[dict[str, Any]] = []
    per_source: dict[str, dict[str, int]] = {}
    has_test = {s.kind for s in plan_sources(params) if s.held_out}
    inputs: dict[str, Any] = {}
    for src in plan_sources(params):
        pairs = read_pairs(src, policy, dropped, dropped_where)
        if params.max_pairs and len(pairs) > params.max_pairs:
            rng = random.Random(f"{params.seed}:{src.label}:{src.split}")
            pairs = [pairs[i] for i in sorted(rng.sample(range(len(pairs)), params.max_pairs))]
        key = f"{src.label}[{src.split}]"
        inputs[key] = hf_sources.source_fingerprint(src.spec, src.split, **src.hub)
        stats = per_source.setdefault(src.label, {"train": 0, "test": 0})
        if src.held_out:
            test.extend(pairs)
            stats["test"] += len(pairs)
        elif src.kind in has_test:
            train.extend(pairs)
            stats["train"] += len(pairs)
        else:
            for p in pairs:
                held = in_test(prompt_key(p["prompt"]), params.seed, params.test_fraction)
                (test if held else train).append(p)
                stats["test" if held else "train"] += 1
    policy.finish()
    test_keys = {prompt_key(p["prompt"]) for p in test}
    n = len(train)
    train = [p for p in train if prompt_key(p["prompt"]) not in test_keys]
    dropped["prompt_in_test"] = n - len(train)
    if not train:
        raise InputError("prepare-prefs", None, "no training pairs left")
    return {"train": train, "test": test, "dropped": dropped, "dropped_examples": dropped_where,
            "per_source": per_source, "inputs": inputs}


def run(ws: Workspace, params: PreparePrefsParams, run_dir: Path | None = None) -> dict[str, Any]:
    """Build ``data/preferences.jsonl`` and ``data/preferences_test.jsonl`` in the workspace."""
    params.validate()
    policy = ErrorPolicy(params.on_error)
    pdict = params_dict(params)
    cfg = config_params(get_stage("prepare-prefs"), ws.config)
    outs = {"train": ws.path("data/preferences.jsonl"), "test": ws.path("data/preferences_test.jsonl")}
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(ArtifactWriter(p, stage="prepare-prefs", params=pdict, config_params=cfg))
                   for k, p in outs.items()}
        built = build(params, policy)
        summary = {}
        for k in ("train", "test"):
            write_jsonl(writers[k], built[k])
        details = []
        for k in ("test", "train"):
            writers[k].inputs = built["inputs"]
            counts = {"pairs": len(built[k]), "skipped": policy.n_skipped,
                      **{f"dropped_{d}": v for d, v in sorted(built["dropped"].items())}}
            details.append({"counts": counts, "per_source": built["per_source"], "errors": policy.report(),
                            "dropped_examples": built["dropped_examples"]})
            summary[k] = counts
        commit_together([writers["test"], writers["train"]], details)
    print(f"preferences: {summary['train']['pairs']} train pairs, {summary['test']['pairs']} held out, "
          f"dropped {built['dropped']}, skipped {policy.n_skipped}", flush=True)
    return summary
