"""``llmctl verl check``: prove every data_source in verl parquet files is scored right before training.

For each data_source: every row's ground truth must parse; on up to ``rows_per_source`` rows a
correct response built from the ground truth must score 1 and a deliberately wrong one 0, through
the very ``compute_score`` verl will call. A source with no verifier fails, so a typo in a
data_source (or a bootcamp with neither a built-in verifier nor the internbootcamp package) is
caught here instead of silently training on zero rewards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

MAX_GT_CHARS = 1_000_000


@dataclass
class SourceCheck:
    """The verdict for one data_source."""

    data_source: str
    verifier: str = ""
    rows: int = 0
    bad_ground_truth: int = 0
    scored: int = 0
    correct_ok: int = 0
    correct_built: int = 0
    wrong_ok: int = 0
    wrong_built: int = 0
    unscorable: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok}


def parquet_files(paths: Iterable[str | Path]) -> list[Path]:
    """The parquet files named, folders searched recursively (sorted)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(q for q in p.rglob("*.parquet") if q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise FileNotFoundError(f"verl check: no such file or folder: {p}")
    if not out:
        raise FileNotFoundError("verl check: no parquet files found")
    return out


def read_rows(files: list[Path]) -> Iterable[tuple[str, Any]]:
    """(data_source, ground_truth) of every row."""
    import pyarrow.parquet as pq

    for f in files:
        pf = pq.ParquetFile(f)
        names = set(pf.schema_arrow.names)
        if not {"data_source", "reward_model"} <= names:
            raise ValueError(f"{f}: not verl RL data (needs data_source and reward_model columns)")
        for batch in pf.iter_batches(columns=["data_source", "reward_model"], batch_size=4096):
            sources = batch.column(0).to_pylist()
            gts = batch.column(1).field("ground_truth").to_pylist() \
                if batch.schema.field(1).type.num_fields else [None] * batch.num_rows
            yield from zip(sources, gts, strict=True)


def _row_label(ground_truth: Any) -> str:
    try:
        key = json.loads(ground_truth).get("task_key") if isinstance(ground_truth, str) else None
    except (ValueError, AttributeError):
        key = None
    return f"task_key {key}" if key else "this identity"


def _numeric(gold: str) -> Fraction | None:
    from llmctl.core.rewards.verifier import normalize_number

    v = normalize_number(gold)
    return v if isinstance(v, Fraction) else None


def _fmt(v: Fraction) -> str:
    return str(v.numerator) if v.denominator == 1 else f"{v.numerator}/{v.denominator}"


def build_responses(data_source: str, ground_truth: Any) -> tuple[str | None, str | None]:
    """(a correct response, a wrong response) for one row; None where none can be built.
    Raises ValueError when the ground truth does not parse."""
    from llmctl.core.rewards import bootcamp
    from llmctl.core.rewards.compute_score import BOOTCAMP_PREFIX, gold_answer, source_kind

    kind = source_kind(data_source)
    if kind in ("gsm8k", "math"):
        gold = gold_answer(ground_truth)
        num = _numeric(gold)
        wrong = _fmt(num + 1) if num is not None else "-987654321.5"
        if kind == "gsm8k":
            return (f"<think>Work it out.</think><answer>{gold}</answer>",
                    f"<think>A slip.</think><answer>{wrong}</answer>")
        return (f"<think>Work it out.</think><answer>\\boxed{{{gold}}}</answer>",
                f"<think>A slip.</think><answer>\\boxed{{{wrong}}}</answer>")
    if kind == "bootcamp":
        identity = bootcamp.parse_ground_truth(ground_truth, max_chars=MAX_GT_CHARS)
        task = bootcamp.builtin_task(data_source[len(BOOTCAMP_PREFIX):])
        if task is None or not task.supports(identity):
            return None, None
        return task.solve(identity), task.wrong(identity)
    return None, None


def unknown_hint(data_source: str) -> str:
    """What to do about a data_source with no verifier here."""
    from llmctl.core.rewards.compute_score import BOOTCAMP_PREFIX

    if data_source.startswith(BOOTCAMP_PREFIX):
        return ("add a verifier module for it under llmctl/core/rewards/bootcamp/ (one module per task type), "
                "or install the internbootcamp package (pip install -e . in a clone of InternLM/InternBootcamp), "
                "or drop these rows (llmctl verl launch --drop-unscorable)")
    return ("rename it to a source llmctl scores (openai/gsm8k, llmctl/arithmetic, a MATH source, "
            "bootcamp/<Name>), or install verl for its default scorers (pip install -e '.[verl]' from the "
            "llmctl clone), or drop these rows (llmctl verl launch --drop-unscorable)")


def row_backend(data_source: str, ground_truth: Any) -> str:
    """Which verifier scores this row: ``internbootcamp``, ``built-in``, ``none``, or the math/verl name."""
    from llmctl.core.rewards import bootcamp
    from llmctl.core.rewards.compute_score import BOOTCAMP_PREFIX, bootcamp_backend, can_score, source_kind

    if source_kind(data_source) != "bootcamp":
        return can_score(data_source)[1]
    try:
        identity = bootcamp.parse_ground_truth(ground_truth, max_chars=MAX_GT_CHARS)
    except ValueError:
        return "none"
    return bootcamp_backend(data_source[len(BOOTCAMP_PREFIX):], identity)


def _scored_as(c: SourceCheck, score: float, expected: float, kind: str, misses: int) -> int:
    """1 when ``score`` is ``expected``; else 0, noting the first three misses of this kind."""
    if score == expected:
        return 1
    if misses <= 3:
        c.problems.append(f"row {c.rows}: a {kind} answer scored {score}")
    return 0


def check_sources(rows: Iterable[tuple[str, Any]], *, rows_per_source: int = 20,
                  reward_kwargs: dict[str, Any] | None = None) -> list[SourceCheck]:
    """Check every data_source seen in ``rows`` (see the module doc)."""
    from llmctl.core.rewards.compute_score import can_score, compute_score

    kw = reward_kwargs or {}
    checks: dict[str, SourceCheck] = {}
    for ds, gt in rows:
        ds = str(ds)
        c = checks.get(ds)
        if c is None:
            c = checks[ds] = SourceCheck(ds)
            known, c.verifier = can_score(ds)
            if not known:
                c.problems.append(f"unknown data_source: no verifier for it here; to fix: {unknown_hint(ds)}")
        c.rows += 1
        if not c.ok and c.problems[0].startswith("unknown"):
            continue
        try:
            good, bad = build_responses(ds, gt)
        except (ValueError, TypeError) as e:
            c.bad_ground_truth += 1
            if c.bad_ground_truth <= 3:
                c.problems.append(f"row {c.rows}: ground truth does not parse: {str(e)[:120]}")
            continue
        if c.verifier in ("built-in", "internbootcamp") and row_backend(ds, gt) == "none":
            c.unscorable += 1
            if c.unscorable <= 3:
                c.problems.append(f"row {c.rows}: the built-in verifier does not support this row "
                                  f"({_row_label(gt)}); to fix: {unknown_hint(ds)}")
            continue
        if c.scored >= rows_per_source:
            continue
        c.scored += 1
        if good is not None:
            c.correct_built += 1
            c.correct_ok += _scored_as(c, compute_score(ds, good, gt, {}, **kw), 1.0, "correct",
                                       c.correct_built - c.correct_ok)
        if bad is not None:
            c.wrong_built += 1
            c.wrong_ok += _scored_as(c, compute_score(ds, bad, gt, {}, **kw), 0.0, "wrong",
                                     c.wrong_built - c.wrong_ok)
    for c in checks.values():
        if c.ok and c.scored and not c.correct_built and not c.wrong_built:
            c.notes.append("unchecked: no test answers can be built for this source")
    return sorted(checks.values(), key=lambda c: c.data_source)
