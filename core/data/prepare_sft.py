"""``llmctl prepare sft``: Alpaca / Dolly / GSM8K (+ arithmetic) -> packed chat rows with a loss mask.

Each record becomes a conversation (user turn, assistant turn), is encoded with the chat template
(:mod:`llmctl.core.data.chat`) and packed best-fit into rows of ``seq_len`` tokens
(:mod:`llmctl.core.data.packing`). Output ``data/sft_packed.h5``:

- ``tokens`` int32 (rows, seq_len), padding = EOT
- ``loss_mask`` uint8 (rows, seq_len): 1 where the token is a training target (assistant content
  and the EOT ending it)
- ``example_ids`` int32 (rows, seq_len): the example a token belongs to (its global index), -1 on
  padding, so a trainer can restart positions and keep attention inside each example
- per example: ``example_source`` (index into attribute ``source_names``), ``example_row``,
  ``example_start``, ``example_length``
- attributes: ``sources``, ``counts``, ``parameters``, ``tokenizer`` (JSON strings),
  ``truncations``, ``packing_efficiency``, ``seq_len``, ``pad_id``, ``chat_template``

Sources: Alpaca (``instruction``, ``input``, ``output``; user = instruction + blank line + input),
Dolly (``instruction``, ``context``, ``response``), GSM8K train split (``question``, ``answer``; user
= ``prompts.format_question``, reply = ``<think>…</think><answer>N</answer>``). GSM8K questions that
also appear in its test split are dropped, and a GSM8K *file* named like a test split is refused.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.artifacts import ArtifactWriter
from llmctl.core.data import hf_sources
from llmctl.core.data.arithmetic import arithmetic_sft_examples, check_levels
from llmctl.core.data.chat import ASSISTANT_MARKER, EOT, ROLE_MARKERS, chat_template_jinja, encode_chats_spans
from llmctl.core.data.packing import pack_spans
from llmctl.core.data.prompts import GSM8K_INSTRUCTION, format_question, gsm8k_target
from llmctl.core.data.records import ErrorPolicy, InputError, check_on_error
from llmctl.core.params import param
from llmctl.core.stages import config_params, get_stage, params_dict
from llmctl.core.tokenizer import Tokenizer
from llmctl.core.workspace import Workspace

SFT_SOURCES = ("alpaca", "dolly", "gsm8k")
ARITHMETIC = "arithmetic"
GSM8K_CONFIG = "main"
FORMAT = "llmctl-sft-v1"


@dataclass
class PrepareSFTParams:
    """Parameters of ``llmctl prepare sft``."""

    sources: list[str] = param("Sources to use: " + ", ".join(SFT_SOURCES) + ".", list(SFT_SOURCES))
    alpaca: str = param("Alpaca: hub id or local .json/.jsonl/.parquet file.", "tatsu-lab/alpaca")
    dolly: str = param("Dolly: hub id or local file.", "databricks/databricks-dolly-15k")
    gsm8k: str = param("GSM8K: hub id (config 'main', split train) or a local train file or folder.",
                    "openai/gsm8k")
    max_examples: int = param("At most this many examples per source, a seeded sample (0 = all).", 0)
    seq_len: int = param("Packed row length: tokens per packed row (training windows are cut from it).", 1024)
    seed: int = param("Seed for sampling and row order.", 1337)
    include_arithmetic: int = param("Arithmetic curriculum examples to add (0 = none).", 0, le=10_000_000)
    arithmetic_levels: list[int] = param("Arithmetic levels the added examples cycle through.",
                                      [1, 2, 3])
    on_error: str = param("Bad records: fail, or skip (counted in the manifest).", "fail", run_only=True)

    def validate(self) -> None:
        bad = [s for s in self.sources if s not in SFT_SOURCES]
        if bad:
            raise ValueError(f"unknown source(s) {', '.join(bad)}; choose from {', '.join(SFT_SOURCES)}")
        if not self.sources and self.include_arithmetic <= 0:
            raise ValueError("nothing to prepare: no sources and include_arithmetic is 0")
        if self.seq_len < 16:
            raise ValueError(f"seq_len must be >= 16, got {self.seq_len}")
        if self.max_examples < 0 or self.include_arithmetic < 0:
            raise ValueError("max_examples and include_arithmetic must be >= 0")
        if self.include_arithmetic and not self.arithmetic_levels:
            raise ValueError("arithmetic_levels is empty")
        check_levels(self.arithmetic_levels)
        check_on_error(self.on_error)


# ---- records -> conversations ---------------------------------------------------------------------

def get_str(r: hf_sources.Record, key: str, *, allow_empty: bool = False, optional: bool = False) -> str:
    """``r.data[key]`` as a string, or the InputError naming the record and field."""
    rec = r.data
    if not isinstance(rec, dict):
        raise r.error(f"expected a JSON object, got {type(rec).__name__}")
    v = rec.get(key)
    if v is None:
        if optional:
            return ""
        raise r.error("missing", key)
    if not isinstance(v, str):
        raise r.error(f"expected a string, got {type(v).__name__}", key)
    if not allow_empty and not v.strip():
        raise r.error("empty", key)
    return v


def _pair(user: str, assistant: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]


def alpaca_messages(r: hf_sources.Record) -> list[dict[str, str]]:
    """Alpaca record -> [user, assistant]; a non-empty ``input`` follows the instruction."""
    instruction = get_str(r, "instruction").strip()
    extra = get_str(r, "input", allow_empty=True, optional=True).strip()
    output = get_str(r, "output").strip()
    return _pair(f"{instruction}\n\n{extra}" if extra else instruction, output)


def dolly_messages(r: hf_sources.Record) -> list[dict[str, str]]:
    """Dolly record -> [user, assistant]; a non-empty ``context`` follows the instruction."""
    instruction = get_str(r, "instruction").strip()
    context = get_str(r, "context", allow_empty=True, optional=True).strip()
    response = get_str(r, "response").strip()
    return _pair(f"{instruction}\n\n{context}" if context else instruction, response)


def gsm8k_messages(r: hf_sources.Record) -> list[dict[str, str]]:
    """GSM8K record -> [user (shared instruction + question), assistant (think/answer target)]."""
    question = get_str(r, "question")
    answer = get_str(r, "answer")
    try:
        target = gsm8k_target(answer)
    except ValueError as e:
        raise r.error(str(e), "answer") from None
    return _pair(format_question(question), target)


CONVERTERS = {"alpaca": alpaca_messages, "dolly": dolly_messages, "gsm8k": gsm8k_messages}


def question_key(question: str) -> str:
    """Whitespace-normalised question text, to find the same question in two splits."""
    return " ".join(question.split())


def refuse_test_file(spec: str, what: str) -> None:
    """Refuse a GSM8K *file* whose name says it is a test split (training uses train only)."""
    if hf_sources.is_local(spec) and not Path(spec).expanduser().is_dir():
        names = [f.name for f in hf_sources.resolve_files(spec)]
        aliases = set(hf_sources.SPLIT_ALIASES["test"])
        for n in names:
            if hf_sources.name_tokens(n) & aliases:
                raise InputError(spec, None, f"{n} looks like a test split; {what} uses GSM8K's train split only")


def gsm8k_test_questions(spec: str) -> set[str] | None:
    """Question keys of GSM8K's test split when ``spec`` (a folder or hub id) has one, else None."""
    if hf_sources.is_local(spec) and not Path(spec).expanduser().is_dir():
        return None
    try:
        recs = hf_sources.iter_records(spec, split="test", name=None if hf_sources.is_local(spec) else GSM8K_CONFIG)
        out = set()
        for r in recs:
            if isinstance(r, hf_sources.Record) and isinstance(r.data, dict) and isinstance(r.data.get("question"), str):
                out.add(question_key(r.data["question"]))
        return out
    except FileNotFoundError:
        return None


def read_source(name: str, spec: str, policy: ErrorPolicy) -> tuple[list[list[dict[str, str]]], dict[str, int]]:
    """All conversations of one SFT source, bad records handled by ``policy``."""
    convert = CONVERTERS[name]
    extra: dict[str, Any] = {}
    test_keys = None
    if name == "gsm8k":
        refuse_test_file(spec, "prepare sft")
        if not hf_sources.is_local(spec):
            extra["name"] = GSM8K_CONFIG
        test_keys = gsm8k_test_questions(spec)
    out = []
    dropped_test = 0
    for r in hf_sources.iter_records(spec, split="train", **extra):
        if isinstance(r, InputError):
            policy.bad(r)
            continue
        try:
            msgs = convert(r)
        except InputError as e:
            policy.bad(e)
            continue
        policy.ok()
        if test_keys is not None and question_key(r.data["question"]) in test_keys:
            dropped_test += 1
            continue
        out.append(msgs)
    if not out and policy.seen == 0:
        raise InputError(spec, None, f"source {name}: no records")
    return out, {"gsm8k_test_overlap": dropped_test} if name == "gsm8k" else {}


def arithmetic_conversations(n: int, levels: list[int], seed: int) -> list[list[dict[str, str]]]:
    """``n`` arithmetic SFT conversations spread evenly over ``levels``."""
    out: list[list[dict[str, str]]] = []
    for k, lv in enumerate(levels):
        share = n // len(levels) + (1 if k < n % len(levels) else 0)
        out.extend(arithmetic_sft_examples(share, lv, seed))
    return out


# ---- the stage -------------------------------------------------------------------------------------

def pack_conversations(convs: list[list[dict[str, str]]], tok: Any, seq_len: int, seed: int) -> tuple[Any, Any]:
    """Encode and pack conversations: (Packed, keep), ``keep[k]`` false for a conversation dropped
    because truncation to ``seq_len`` cut off all its targets (the others keep their order)."""
    enc = encode_chats_spans(convs, tok)
    # an example whose targets are all cut off by truncation teaches nothing: drop it
    keep = enc.trained_within(seq_len) > 0
    if not keep.any():
        raise InputError("prepare-sft", None, "no examples left to pack")
    if not keep.all():
        enc = enc.select(keep)
    packed = pack_spans(enc.pool, enc.pool_mask, enc.span_at, enc.span_len, 2, seq_len, pad_id=tok.eot_id, seed=seed)
    return packed, keep


def build(params: PrepareSFTParams, tok: Any, policy: ErrorPolicy) -> dict[str, Any]:
    """Read, encode and pack; returns the packed arrays and the bookkeeping (no file written)."""
    convs: list[list[dict[str, str]]] = []
    src_of: list[int] = []
    names = list(params.sources) + ([ARITHMETIC] if params.include_arithmetic else [])
    per_source: dict[str, dict[str, int]] = {}
    dropped: dict[str, int] = {}
    for si, name in enumerate(names):
        if name == ARITHMETIC:
            got = arithmetic_conversations(params.include_arithmetic, list(params.arithmetic_levels), params.seed)
            read = len(got)
        else:
            seen0, skip0 = policy.seen, policy.n_skipped
            got, extra = read_source(name, getattr(params, name), policy)
            for k, v in extra.items():
                dropped[k] = dropped.get(k, 0) + v
            read = policy.seen - seen0 - (policy.n_skipped - skip0)
            if params.max_examples and len(got) > params.max_examples:
                rng = random.Random(f"{params.seed}:{name}")
                pick = sorted(rng.sample(range(len(got)), params.max_examples))
                got = [got[i] for i in pick]
        per_source[name] = {"read": read, "examples": len(got)}
        convs.extend(got)
        src_of.extend([si] * len(got))
    policy.finish()
    packed, keep = pack_conversations(convs, tok, params.seq_len, params.seed)
    dropped["no_target_after_truncation"] = len(keep) - int(keep.sum())
    sources = [s for s, k in zip(src_of, keep.tolist(), strict=True) if k]
    examples = len(sources)
    for name in names:
        per_source[name]["packed"] = 0
    for s in sources:
        per_source[names[s]]["packed"] += 1
    return {"packed": packed, "names": names, "sources": sources, "per_source": per_source,
            "dropped": dropped, "examples": examples}


def write_h5(path: Path, built: dict[str, Any], *, counts: dict[str, Any], params: dict[str, Any],
             tokenizer: dict[str, Any], inputs: dict[str, Any]) -> None:
    """Write the packed rows and their attributes to an HDF5 file."""
    import h5py
    import numpy as np


    p = built["packed"]
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=p.tokens)
        f.create_dataset("loss_mask", data=p.loss_mask)
        f.create_dataset("example_ids", data=p.example_ids)
        f.create_dataset("example_source", data=np.asarray(built["sources"], dtype=np.int16))
        f.create_dataset("example_row", data=p.example_row)
        f.create_dataset("example_start", data=p.example_start)
        f.create_dataset("example_length", data=p.example_length)
        a = f.attrs
        a["format"] = FORMAT
        a["seq_len"] = int(p.tokens.shape[1])
        a["pad_id"] = int(tokenizer.get("eot_id", 50256))
        a["source_names"] = json.dumps(built["names"])
        a["sources"] = json.dumps({"per_source": built["per_source"], "inputs": inputs}, default=str)
        a["counts"] = json.dumps(counts)
        a["parameters"] = json.dumps(params)
        a["tokenizer"] = json.dumps(tokenizer)
        a["truncations"] = int(p.truncated)
        a["packing_efficiency"] = float(p.efficiency)
        a["chat_template"] = chat_template_jinja()


def run(ws: Workspace, params: PrepareSFTParams, run_dir: Path | None = None) -> dict[str, Any]:
    """Build ``data/sft_packed.h5`` in the workspace."""
    params.validate()
    tok = ws.tokenizer()
    policy = ErrorPolicy(params.on_error)
    inputs: dict[str, Any] = {}
    for name in params.sources:
        spec = getattr(params, name)
        hub_config = GSM8K_CONFIG if name == "gsm8k" and not hf_sources.is_local(spec) else None
        inputs[name] = hf_sources.source_fingerprint(spec, "train", name=hub_config)
    out = ws.path("data/sft_packed.h5")
    pdict = params_dict(params)
    cfg = config_params(get_stage("prepare-sft"), ws.config)
    with ArtifactWriter(out, stage="prepare-sft", params=pdict, inputs=inputs, config_params=cfg) as w:
        built = build(params, tok, policy)
        p = built["packed"]
        counts = {
            "rows": int(p.tokens.shape[0]),
            "examples": built["examples"],
            "tokens": int(p.real_tokens),
            "target_tokens": int(p.loss_mask.sum()),
            "truncated": int(p.truncated),
            "efficiency": round(p.efficiency, 4),
            "skipped": policy.n_skipped,
            **{f"examples_{k}": v["packed"] for k, v in built["per_source"].items()},
        }
        w.reserve(sum(getattr(a, "nbytes", 0) for a in vars(p).values()))
        write_h5(w.tmp, built, counts=counts, params=pdict, tokenizer=tok.describe(), inputs=inputs)
        w.commit(counts=counts, tokenizer=tok.describe(), per_source=built["per_source"],
                 dropped=built["dropped"], errors=policy.report())
    print(f"sft_packed.h5: {counts['rows']} rows x {params.seq_len} tokens, {counts['examples']} examples, "
          f"efficiency {p.efficiency:.1%}, truncated {p.truncated}, skipped {counts['skipped']}", flush=True)
    return counts


# ---- checks and previews ----------------------------------------------------------------------------

_TARGET = re.compile(r"<think>(.*)</think><answer>(-?\d+(?:\.\d+)?)</answer><\|endoftext\|>", re.S)


def _example(row: int, j: int, lo: int, hi: int, ids: Any, mask: Any, exs: Any, source: str,
             tok: Any) -> dict[str, Any]:
    import numpy as np

    if not (exs[lo:hi] == j).all() or (lo > 0 and exs[lo - 1] == j) or (hi < len(exs) and exs[hi] == j):
        raise ValueError(f"row {row}: example {j} does not occupy exactly columns {lo}..{hi - 1}")
    seg_ids, seg_mask = ids[lo:hi], mask[lo:hi]
    on = np.flatnonzero(seg_mask)
    return {
        "row": row,
        "example": j,
        "source": source,
        "start": lo,
        "length": hi - lo,
        "prompt": tok.decode(seg_ids[seg_mask == 0]),
        "completion": tok.decode(seg_ids[seg_mask == 1]),
        "completion_contiguous": bool(len(on) == 0 or len(on) == on[-1] - on[0] + 1),
        "completion_at_end": bool(len(on) > 0 and on[-1] == hi - lo - 1),
    }


def iter_examples(path: str | Path, tok: Tokenizer, rows: Any = None,
                  source: str | None = None) -> Iterator[dict[str, Any]]:
    """The examples of packed rows (all, or ``rows``; all sources, or one): source, prompt text
    (mask 0), trained text (mask 1) and whether the trained span is one run at the example's end."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        names = json.loads(f.attrs["source_names"])
        ex_source = f["example_source"][:]
        ex_row, ex_start, ex_len = f["example_row"][:], f["example_start"][:], f["example_length"][:]
        n = f["tokens"].shape[0]
        want = None if source is None else (names.index(source) if source in names else -1)
        order = np.argsort(ex_row, kind="stable")
        bounds = np.searchsorted(ex_row[order], np.arange(n + 1))
        todo = list(range(n)) if rows is None else [int(r) for r in rows]
        for r in todo:
            if not 0 <= r < n:
                raise IndexError(f"row {r} out of range (0..{n - 1})")
        chunk = 64
        for c in range(0, len(todo), chunk):
            part = todo[c:c + chunk]
            lo_r, hi_r = min(part), max(part) + 1
            if hi_r - lo_r > 4 * chunk:  # scattered rows: read one by one
                blocks = {r: (f["tokens"][r], f["loss_mask"][r], f["example_ids"][r]) for r in part}
            else:
                t, m, e = f["tokens"][lo_r:hi_r], f["loss_mask"][lo_r:hi_r], f["example_ids"][lo_r:hi_r]
                blocks = {r: (t[r - lo_r], m[r - lo_r], e[r - lo_r]) for r in part}
            for r in part:
                ids, mask, exs = blocks[r]
                members = sorted(order[bounds[r]:bounds[r + 1]], key=lambda j: ex_start[j])
                for j in members:
                    if want is not None and ex_source[j] != want:
                        continue
                    lo = int(ex_start[j])
                    yield _example(r, int(j), lo, lo + int(ex_len[j]), ids, mask, exs, names[int(ex_source[j])], tok)


def row_examples(path: str | Path, row: int, tok: Tokenizer) -> list[dict[str, Any]]:
    """The examples of one packed row (see ``iter_examples``)."""
    return list(iter_examples(path, tok, [row]))


def check_gsm8k_example(e: dict[str, Any]) -> dict[str, Any]:
    """Check one GSM8K example of ``iter_examples``; adds its ``question``. ValueError on a mismatch."""
    where = f"row {e['row']} example {e['example']}"
    if not (e["completion_contiguous"] and e["completion_at_end"]):
        raise ValueError(f"{where}: the trained span is not one run at the end of the example")
    if not _TARGET.fullmatch(e["completion"]):
        raise ValueError(f"{where}: trained text is not <think>…</think><answer>N</answer><|endoftext|>: "
                         f"{e['completion'][:120]!r}")
    head, tail = ROLE_MARKERS["user"] + GSM8K_INSTRUCTION + "\n\n", EOT + ASSISTANT_MARKER
    if not e["prompt"].startswith(head) or not e["prompt"].endswith(tail):
        raise ValueError(f"{where}: untrained part is not the user turn + assistant marker: {e['prompt'][:120]!r}")
    question = e["prompt"][len(head):-len(tail)]
    if "<answer>" in question or "</think>" in question:
        raise ValueError(f"{where}: the answer appears in the untrained prompt part")
    e["question"] = question
    return e


def check_gsm8k_row(path: str | Path, row: int, tok: Tokenizer) -> list[dict[str, Any]]:
    """Check every GSM8K example of a packed row and return them (with ``question``).

    The trained span must be one contiguous run at the end of the example decoding to exactly
    ``<think>…</think><answer>N</answer><|endoftext|>``; the untrained part must be exactly the
    ``User:`` turn (shared instruction + question) and the ``Assistant:`` marker, with no answer
    in it. Raises ValueError naming the row and example on any mismatch.
    """
    return [check_gsm8k_example(e) for e in iter_examples(path, tok, [row], "gsm8k")]


def rows_with_source(path: str | Path, source: str) -> list[int]:
    """Rows holding at least one example of ``source``."""
    import h5py
    import numpy as np

    with h5py.File(path, "r") as f:
        names = json.loads(f.attrs["source_names"])
        if source not in names:
            return []
        src = f["example_source"][:]
        rows = f["example_row"][:]
    return sorted({int(r) for r in rows[np.flatnonzero(src == names.index(source))]})
