"""The held-out table: what RL changes on prompts it never trains on, per arithmetic level.

One row of outcomes per held-out prompt (``greedy`` 0/1; ``correct`` = how many of ``k`` samples
at temperature ``T`` were right; ``format`` and ``length`` = the mean format score and completion
length of those samples, or of the greedy answer when ``k`` is 0) folds into a table::

    {"n": 128, "k": 8, "temperature": 1.0,
     "all": {"greedy": .., "pass@1": .., "pass@k": .., "format": .., "mean_length": .., "n": 128},
     "levels": {"3": {...same cells...}}}

``pass@1`` is the mean over prompts of ``correct / k`` (the expected accuracy of one sample at
``T``), ``pass@k`` the share of prompts with at least one right sample. Greedy accuracy and pass@1
move apart under RL: sharpening the policy towards its own best answers raises pass@1 first. Pure
Python, so the CLI, the report and the app read the table without torch.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

CELLS = ("greedy", "pass@1", "pass@k", "format", "mean_length")
FILE = "heldout.json"  # a GRPO/PPO run's table before its first step and after its latest evaluation


def read(path: Path) -> dict[str, Any] | None:
    """A run's ``heldout.json`` (``{"before": table, "after": table}``), or None where it is missing or unreadable."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and all(isinstance(data.get(k), dict) and "all" in data[k] for k in ("before", "after"))
    return data if ok else None


def outcome(greedy: float, level: Any, correct: int = 0, k: int = 0, fmt: float = 0.0,
            length: float = 0.0) -> dict[str, Any]:
    """One held-out prompt's outcome (``fmt`` and ``length`` are means over its samples)."""
    return {"greedy": float(greedy), "level": level, "correct": int(correct), "k": int(k), "format": float(fmt),
            "length": float(length)}


def _cells(rows: list[dict[str, Any]], k: int) -> dict[str, float]:
    n = max(1, len(rows))
    out = {"n": len(rows), "greedy": sum(r["greedy"] for r in rows) / n,
           "format": sum(r["format"] for r in rows) / n, "mean_length": sum(r["length"] for r in rows) / n}
    if k:
        out["pass@1"] = sum(r["correct"] / k for r in rows) / n
        out["pass@k"] = sum(1.0 for r in rows if r["correct"] > 0) / n
    return out


def table(outcomes: Iterable[dict[str, Any]], k: int, temperature: float) -> dict[str, Any]:
    """The held-out table of ``outcomes`` (see the module docstring)."""
    rows = list(outcomes)
    levels: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("level") is not None:
            levels.setdefault(str(r["level"]), []).append(r)
    return {"n": len(rows), "k": k, "temperature": temperature, "all": _cells(rows, k),
            "levels": {lv: _cells(levels[lv], k) for lv in sorted(levels, key=lambda x: (len(x), x))}}


def metrics(tab: dict[str, Any]) -> dict[str, float]:
    """The table as metrics: ``eval/accuracy`` (greedy), ``eval/pass@1``, ``eval/pass@k``, ``eval/format``,
    ``eval/mean_length``, and ``eval/level_L/accuracy`` / ``eval/level_L/pass@1`` per level."""
    def named(cells: dict[str, float], prefix: str, keys: tuple[str, ...]) -> dict[str, float]:
        return {f"{prefix}{'accuracy' if c == 'greedy' else c}": float(cells[c]) for c in keys if c in cells}

    out = named(tab["all"], "eval/", CELLS)
    if len(tab["levels"]) > 1:
        for lv, cells in tab["levels"].items():
            out.update(named(cells, f"eval/level_{lv}/", ("greedy", "pass@1")))
    return out


def _label(cell: str, tab: dict[str, Any]) -> str:
    if cell == "greedy":
        return "greedy accuracy"
    if cell == "pass@1":
        return f"pass@1 (T={tab['temperature']:g}, k={tab['k']})"
    if cell == "pass@k":
        return f"pass@{tab['k']}"
    return {"format": "format rate", "mean_length": "mean length (tokens)"}[cell]


def _fmt(v: float | None, cell: str) -> str:
    if v is None:
        return "-"
    return f"{v:.1f}" if cell == "mean_length" else f"{v:.2f}"


def change_lines(before: dict[str, Any], after: dict[str, Any], cells: tuple[str, ...] = ("pass@1", "greedy")
                 ) -> list[str]:
    """``held-out pass@1 (T=1, k=8): 0.34 -> 0.58`` lines, one per cell both tables have."""
    return [f"held-out {_label(c, after)}: {_fmt(before['all'][c], c)} -> {_fmt(after['all'][c], c)}"
            for c in cells if c in before["all"] and c in after["all"]]


def summary_line(tab: dict[str, Any]) -> str:
    """``held-out (128 prompts): greedy accuracy 0.70, pass@1 (T=1, k=8) 0.58, pass@8 0.83``."""
    cells = ", ".join(f"{_label(c, tab)} {_fmt(tab['all'][c], c)}" for c in ("greedy", "pass@1", "pass@k")
                      if c in tab["all"])
    return f"held-out ({tab['n']} prompts): {cells}"


def side_by_side(tables: dict[str, dict[str, Any]]) -> list[list[str]]:
    """Rows of a table with one column per named held-out table (e.g. ``before``, ``after``): the
    overall cells, then greedy accuracy and pass@1 per level when there is more than one level."""
    order = {"before": 0, "after": 1}
    tables = {k: tables[k] for k in sorted(tables, key=lambda k: order.get(k, 2))}
    first = next(iter(tables.values()))
    rows = [["held-out " + (f"({first['n']} prompts)"), *tables]]
    for c in CELLS:
        if c in first["all"]:
            rows.append([_label(c, first), *(_fmt(t["all"].get(c), c) for t in tables.values())])
    if len(first["levels"]) > 1:
        for lv in first["levels"]:
            for c in ("greedy", "pass@1"):
                if c in first["levels"][lv]:
                    rows.append([f"level {lv} {'greedy' if c == 'greedy' else 'pass@1'}",
                                 *(_fmt(t["levels"].get(lv, {}).get(c), c) for t in tables.values())])
    return rows


def chart_groups(before: dict[str, Any], after: dict[str, Any]) -> dict[str, dict[str, float]]:
    """``{cell label: {"before": v, "after": v}}`` for the rate cells (a bar chart's groups)."""
    return {_label(c, after): {"before": before["all"][c], "after": after["all"][c]}
            for c in ("greedy", "pass@1", "pass@k", "format") if c in before["all"] and c in after["all"]}


def markdown(tables: dict[str, dict[str, Any]]) -> list[str]:
    """``side_by_side`` as markdown table lines."""
    rows = side_by_side(tables)
    return ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])] + ["| " + " | ".join(r) + " |"
                                                                             for r in rows[1:]]
