"""The demo's measured figures, kept in one place: what ``llmctl demo`` measured, on which machine.

``llmctl demo`` writes ``demo_figures.json`` into its workspace at the end of a whole run (wall time,
seed, GRPO's reward trend and its held-out table before and after, the machine and its load). The
README's figures line is rendered from ``benchmarks/demo_figures.json``, which gathers such files of
several seeds (``{"runs": [...]}``); after a new recipe or on a new machine, refresh both with::

    llmctl demo -w ws0 --seed 0; llmctl demo -w ws1 --seed 1; llmctl demo -w ws2 --seed 2
    python -m llmctl.core.cli.demo_figures ws0 ws1 ws2     # gathers their files, rewrites the README line

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


def measured(seconds: float, trends: dict[str, tuple[float, float]], held: dict[str, Any] | None = None, *,
             grpo_steps: int | None, fast: bool, load_before: float | None, seed: int = 1337,
             preset: str = "tiny") -> dict[str, Any]:
    """The figures of one whole demo run, with the machine, its load before and after, and the date."""
    fig: dict[str, Any] = {
        "seconds": round(seconds), "fast": fast, "seed": seed, "preset": preset, "grpo_steps": grpo_steps,
        "reward": [round(x, 2) for x in trends["reward"]] if "reward" in trends else None,
        "heldout": None, "machine": machine(), "load": [load_before, load()], "date": time.strftime("%Y-%m-%d")}
    if held:
        b, a = held["before"], held["after"]
        fig["heldout"] = {"n": a["n"], "k": a["k"], "temperature": a["temperature"],
                          "accuracy": [round(b["all"]["greedy"], 2), round(a["all"]["greedy"], 2)]}
        if "pass@1" in a["all"] and "pass@1" in b["all"]:
            fig["heldout"]["pass@1"] = [round(b["all"]["pass@1"], 2), round(a["all"]["pass@1"], 2)]
    return fig


def _where(runs: list[dict[str, Any]]) -> str:
    loads = [r.get("load") or [None, None] for r in runs]
    if any(isinstance(lo[0], str) for lo in loads):  # words ("quiet machine") where no figure was kept
        busy = f" ({loads[0][0]})"
    else:
        figures = [x for lo in loads for x in lo if x is not None]
        busy = f", load average {min(figures)}–{max(figures)}" if len(runs) > 1 and figures else (
            f", load average {loads[0][0]} → {loads[0][1]}" if None not in loads[0] else "")
    return f"{runs[0]['machine']}{busy}, {runs[-1]['date']}"


def _pair(xs: list[float]) -> str:
    return f"{xs[0]:.2f} → {xs[1]:.2f}"


def figures_line(data: dict[str, Any]) -> str:
    """The README's line for one run's figures, or for ``{"runs": [...]}`` (one clause per seed)."""
    runs = data["runs"] if "runs" in data else [data]
    first = runs[0]
    secs = "/".join(str(r["seconds"]) for r in runs)
    seeds = f" over seeds {', '.join(str(r.get('seed')) for r in runs)}" if len(runs) > 1 else ""
    out = f"Measured{' (--fast)' if first.get('fast') else ''}{seeds}: {secs} s on a {_where(runs)}"
    if first.get("reward"):
        steps = f" of {first['grpo_steps']} steps" if first.get("grpo_steps") else ""
        out += (f"; GRPO mean reward {', '.join(_pair(r['reward']) for r in runs if r.get('reward'))} "
                f"(first vs last quarter{steps})")
    held = [r["heldout"] for r in runs if r.get("heldout")]
    if held:
        h = held[0]
        if all("pass@1" in x for x in held):
            out += (f"; held-out pass@1 (T={h['temperature']:g}, k={h['k']}, {h['n']} prompts) "
                    f"{', '.join(_pair(x['pass@1']) for x in held)}")
        out += f"; held-out greedy accuracy {', '.join(_pair(x['accuracy']) for x in held)}"
    elif first.get("heldout_accuracy"):
        out += f"; held-out greedy accuracy {_pair(first['heldout_accuracy'])}"
    return out + "."


def readme_block(text: str) -> str | None:
    """The figures line between the README's markers, or None without them."""
    if BEGIN not in text or END not in text:
        return None
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def update(*workspaces: Path, repo: Path = REPO) -> str:
    """Gather the ``demo_figures.json`` of ``workspaces`` (one demo run each, e.g. one per seed)
    into ``benchmarks/`` and rewrite the README's line."""
    fig = {"runs": [json.loads((Path(w) / FILE).read_text(encoding="utf-8")) for w in workspaces]}
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
    print(update(*(Path(a) for a in (sys.argv[1:] or ["demo-ws"]))))
