"""``llmctl prepare rl``: GSM8K gold answers and the arithmetic curriculum as RL prompt files.

Outputs (one JSON object per line):

- ``data/rl_prompts_train.jsonl`` / ``data/rl_prompts_test.jsonl`` from GSM8K's train / test
  split: ``{"prompt": question, "gold": "N", "data_source": "openai/gsm8k", "index": i}``
- ``data/arithmetic_prompts.jsonl``: ``{"prompt", "gold", "level", "data_source": "llmctl/arithmetic",
  "index"}``

``prompt`` is the raw question; whoever renders it builds the user message with
``prompts.format_question`` (``prompts.question_messages``), so the instruction wording lives in one
place. ``gold`` is ``prompts.parse_gsm8k_gold`` of the ``#### N`` line (commas removed, negatives and
decimals normalised). Train questions that also occur in the test split are dropped (counted).
"""

from __future__ import annotations

import contextlib
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.artifacts import ArtifactWriter, commit_together, disk_full_error, is_disk_full
from llmctl.core.data import hf_sources
from llmctl.core.data.arithmetic import DATA_SOURCE, check_levels, generate_problems
from llmctl.core.data.prepare_sft import get_str, question_key, refuse_test_file
from llmctl.core.data.prompts import parse_gsm8k_gold
from llmctl.core.data.records import ErrorPolicy, InputError, check_on_error
from llmctl.core.params import param
from llmctl.core.stages import config_params, get_stage, params_dict
from llmctl.core.workspace import Workspace

GSM8K_SOURCE = "openai/gsm8k"


@dataclass
class PrepareRLParams:
    """Parameters of ``llmctl prepare rl``."""

    gsm8k: str = param("GSM8K: hub id (config 'main') or a local folder with train/test files.", GSM8K_SOURCE)
    gsm8k_train: str = param("Local GSM8K train file (overrides the folder/hub train split).", "")
    gsm8k_test: str = param("Local GSM8K test file (overrides the folder/hub test split).", "")
    max_examples: int = param("At most this many GSM8K prompts per split, a seeded sample (0 = all).", 0)
    arithmetic_n: int = param("Arithmetic prompts per level.", 1000, ge=0, le=1_000_000)
    arithmetic_levels: list[int] = param("Arithmetic levels to generate.", [1, 2, 3, 4, 5, 6, 7])
    seed: int = param("Seed for sampling and the arithmetic generator.", 1337)
    on_error: str = param("Bad records: fail, or skip (counted in the manifest).", "fail", run_only=True)

    def validate(self) -> None:
        if self.max_examples < 0 or self.arithmetic_n < 0:
            raise ValueError("max_examples and arithmetic_n must be >= 0")
        check_levels(self.arithmetic_levels)
        check_on_error(self.on_error)


def split_spec(params: PrepareRLParams, split: str) -> tuple[str, dict[str, Any]]:
    """The source spec and hub options for one GSM8K split."""
    explicit = params.gsm8k_train if split == "train" else params.gsm8k_test
    if explicit:
        return explicit, {}
    if hf_sources.is_local(params.gsm8k):
        p = Path(params.gsm8k).expanduser()
        if not p.is_dir():
            raise InputError(params.gsm8k, None, "a local GSM8K source must be a folder with train and test "
                                                 "files (or use --gsm8k-train / --gsm8k-test)")
        return params.gsm8k, {}
    return params.gsm8k, {"name": "main"}


def gsm8k_rows(spec: str, split: str, hub: dict[str, Any], policy: ErrorPolicy) -> list[dict[str, Any]]:
    """``{"prompt", "gold", "data_source", "index"}`` for every usable record of one split."""
    out = []
    for r in hf_sources.iter_records(spec, split=split, **hub):
        if isinstance(r, InputError):
            policy.bad(r)
            continue
        try:
            question = get_str(r, "question").strip()
            answer = get_str(r, "answer")
            try:
                gold = parse_gsm8k_gold(answer)
            except ValueError as e:
                raise r.error(str(e), "answer") from None
        except InputError as e:
            policy.bad(e)
            continue
        policy.ok()
        out.append({"prompt": question, "gold": gold, "data_source": GSM8K_SOURCE, "index": r.index})
    if not out and policy.seen == 0:
        raise InputError(spec, None, f"GSM8K {split} split: no records")
    return out


def uses_gsm8k(params: PrepareRLParams) -> bool:
    """An empty ``--gsm8k`` (and no split files) builds the arithmetic curriculum alone (offline)."""
    return bool(params.gsm8k or params.gsm8k_train or params.gsm8k_test)


def build(params: PrepareRLParams, policy: ErrorPolicy) -> dict[str, Any]:
    """Rows of the three outputs and the bookkeeping (no file written)."""
    arith = []
    for lv in params.arithmetic_levels:
        for row in generate_problems(params.arithmetic_n, lv, params.seed):
            arith.append({**row, "data_source": DATA_SOURCE, "index": len(arith)})
    if not uses_gsm8k(params):
        return {"train": [], "test": [], "arithmetic": arith, "test_overlap_dropped": 0, "inputs": {}}
    train_spec, train_hub = split_spec(params, "train")
    test_spec, test_hub = split_spec(params, "test")
    if params.gsm8k_train:
        refuse_test_file(params.gsm8k_train, "the RL train prompt file")
    test = gsm8k_rows(test_spec, "test", test_hub, policy)
    train = gsm8k_rows(train_spec, "train", train_hub, policy)
    policy.finish()
    test_keys = {question_key(r["prompt"]) for r in test}
    n_train = len(train)
    train = [r for r in train if question_key(r["prompt"]) not in test_keys]
    overlap = n_train - len(train)
    if params.max_examples:
        for name, rows in (("train", train), ("test", test)):
            if len(rows) > params.max_examples:
                rng = random.Random(f"{params.seed}:{name}")
                keep = sorted(rng.sample(range(len(rows)), params.max_examples))
                rows[:] = [rows[i] for i in keep]
    return {"train": train, "test": test, "arithmetic": arith, "test_overlap_dropped": overlap,
            "inputs": {"gsm8k_train": hf_sources.source_fingerprint(train_spec, "train", **train_hub),
                       "gsm8k_test": hf_sources.source_fingerprint(test_spec, "test", **test_hub)}}


_LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))


def jsonl_bytes(rows: list[dict[str, Any]]) -> bytes:
    """One compact JSON object per line (UTF-8, non-ASCII kept except characters that some
    readers treat as line breaks — U+0085, U+2028, U+2029 — which are escaped)."""
    out = []
    for r in rows:
        line = json.dumps(r, ensure_ascii=False)
        for ch, esc in _LINE_BREAKS:
            if ch in line:
                line = line.replace(ch, esc)
        out.append(line + "\n")
    return "".join(out).encode("utf-8")


def write_jsonl(writer: Any, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` (:func:`jsonl_bytes`) to an ArtifactWriter's empty temporary file, created
    exclusively, after checking the disk holds them (a full disk names the path and the size)."""
    data = jsonl_bytes(rows)
    writer.reserve(len(data))
    try:
        with open(writer.tmp, "xb") as f:
            f.write(data)
    except OSError as e:
        if is_disk_full(e):
            raise disk_full_error(writer.path, writer.tmp, len(data)) from None
        raise


def run(ws: Workspace, params: PrepareRLParams, run_dir: Path | None = None) -> dict[str, Any]:
    """Build the three RL prompt files in the workspace."""
    params.validate()
    policy = ErrorPolicy(params.on_error)
    pdict = params_dict(params)
    cfg = config_params(get_stage("prepare-rl"), ws.config)
    outs = {"train": ws.path("data/rl_prompts_train.jsonl"), "test": ws.path("data/rl_prompts_test.jsonl"),
            "arithmetic": ws.path("data/arithmetic_prompts.jsonl")}
    if not uses_gsm8k(params):
        outs = {"arithmetic": outs["arithmetic"]}
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(ArtifactWriter(p, stage="prepare-rl", params=pdict, config_params=cfg)) for k, p in outs.items()}
        built = build(params, policy)
        for k, w in writers.items():
            write_jsonl(w, built[k])
        summary: dict[str, Any] = {}
        group: list[Any] = []
        details: list[dict[str, Any]] = []
        for k in ("test", "train", "arithmetic"):
            if k not in writers:
                summary[k] = {"rows": 0}
                continue
            w = writers[k]
            rows = built[k]
            counts: dict[str, Any] = {"rows": len(rows)}
            if k == "arithmetic":
                w.inputs = {"generator": {"levels": list(params.arithmetic_levels), "n": params.arithmetic_n,
                                          "seed": params.seed}}
                for lv in params.arithmetic_levels:
                    counts[f"level_{lv}"] = sum(1 for r in rows if r["level"] == lv)
            else:
                w.inputs = {"file": built["inputs"][f"gsm8k_{k}"]}
                counts["skipped"] = policy.n_skipped
                if k == "train":
                    counts["test_overlap_dropped"] = built["test_overlap_dropped"]
            group.append(w)
            details.append({"counts": counts, "errors": policy.report()})
            summary[k] = counts
        commit_together(group, details)
    print(f"rl prompts: train {summary['train']['rows']}, test {summary['test']['rows']}, "
          f"arithmetic {summary['arithmetic']['rows']}, skipped {policy.n_skipped}", flush=True)
    return summary
