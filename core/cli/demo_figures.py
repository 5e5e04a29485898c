"""The demo's measured figures, kept in one place: what ``llmctl demo`` measured, on which machine.

``llmctl demo`` writes ``demo_figures.json`` into its workspace at the end of a whole run (wall time,
GRPO's reward and held-out trends, the machine and its load). The README's figures line is rendered
from ``benchmarks/demo_figures.json``, a copy of one such file; after a new recipe or on a new
machine, refresh both with::

    python -m llmctl.core.cli.demo_figures demo-ws     # copies demo-ws/demo_figures.json, rewrites the README line

``tests/test_readme.py`` holds the README's line to the file.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

FILE = "demo_figures.json"
BEGIN, END = "<!-- demo-figures -->", "<!-- /demo-figures -->"
REPO = Path(__file__).resolve().parents[2]


def machine() -> str:
    """``2-core x86_64 CPU, 24 GiB`` for this machine (memory where /proc/meminfo says it)."""
    out = f"{os.cpu_count() or '?'}-core {platform.machine()} CPU"
    try:
        kb = next(int(x.split()[1]) for x in Path("/proc/meminfo").read_text().splitlines()
                  if x.startswith("MemTotal:"))
        out += f", {kb / 2**20:.0f} GiB"
    except (OSError, StopIteration, ValueError):
        pass
    return out


def load() -> float | None:
    """The 1-minute load average (None where the system has none)."""
    try:
        return round(os.getloadavg()[0], 1)
    except OSError:
        return None


def measured(seconds: float, trends: dict[str, tuple[float, float]], *, grpo_steps: int | None, fast: bool,
             load_before: float | None) -> dict[str, Any]:
    """The figures of one whole demo run, with the machine, its load before and after, and the date."""
    return {"seconds": round(seconds), "fast": fast, "grpo_steps": grpo_steps,
            "reward": [round(x, 2) for x in trends["reward"]] if "reward" in trends else None,
            "heldout_accuracy": [round(x, 2) for x in trends["eval/accuracy"]] if "eval/accuracy" in trends else None,
            "machine": machine(), "load": [load_before, load()], "date": time.strftime("%Y-%m-%d")}


def figures_line(fig: dict[str, Any]) -> str:
    """The README's line for ``fig``."""
    lo = fig.get("load") or [None, None]
    if isinstance(lo[0], str):  # words for the load ("quiet machine") where no figure was kept
        busy = f" ({lo[0]})"
    else:
        busy = f", load average {lo[0]} → {lo[1]}" if None not in lo else ""
    where = f"{fig['machine']}{busy}, {fig['date']}"
    out = f"Measured{' (--fast)' if fig.get('fast') else ''}: {fig['seconds']} s on a {where}"
    if fig.get("reward"):
        steps = f" of {fig['grpo_steps']} steps" if fig.get("grpo_steps") else ""
        out += f"; GRPO mean reward {fig['reward'][0]:.2f} → {fig['reward'][1]:.2f} (first vs last quarter{steps})"
    if fig.get("heldout_accuracy"):
        a, b = fig["heldout_accuracy"]
        out += f"; held-out greedy accuracy {a:.2f} → {b:.2f}"
    return out + "."


def readme_block(text: str) -> str | None:
    """The figures line between the README's markers, or None without them."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def update(workspace: Path, repo: Path = REPO) -> str:
    """Copy ``workspace/demo_figures.json`` to ``benchmarks/`` and rewrite the README's line."""
    fig = json.loads((workspace / FILE).read_text(encoding="utf-8"))
    (repo / "benchmarks" / FILE).write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    readme = repo / "README.md"
    text = readme.read_text(encoding="utf-8")
    old = readme_block(text)
    if old is None:
        raise SystemExit(f"{readme}: no {BEGIN} … {END} block")
    line = figures_line(fig)
    readme.write_text(text.replace(f"{BEGIN}\n{old}\n{END}", f"{BEGIN}\n{line}\n{END}"), encoding="utf-8")
    return line


if __name__ == "__main__":
    print(update(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-ws")))
