"""``llmctl demo``: the whole pipeline offline on the tiny model, in a few minutes on a CPU.

Data comes from what llmctl makes itself (the arithmetic curriculum for SFT and GRPO) plus, when the
user points at one, a small text corpus to pretrain on first. Every stage runs as its own
``llmctl`` command in its own run folder, so the control center shows each one live.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from llmctl.core.metrics import iter_series, read_metrics
from llmctl.core.runs import ENV_RUN_DIR, list_runs
from llmctl.core.workspace import Workspace


def demo_steps(ws: Workspace, corpus: list[str], fast: bool) -> list[tuple[str, list[str]]]:
    """The (title, command words) of each demo stage, in order."""
    steps: list[tuple[str, list[str]]] = [
        ("arithmetic prompts", ["prepare", "rl", "--gsm8k", "", "--arithmetic-n", "400",
                                "--arithmetic-levels", "1", "--arithmetic-levels", "2"]),
        ("arithmetic SFT rows", ["prepare", "sft", "--sources", "", "--include-arithmetic", "3000",
                                 "--arithmetic-levels", "1", "--seq-len", "128"]),
    ]
    init: list[str] = []
    if corpus:
        prep = ["prepare", "pretrain", "--val-fraction", "0.05", "--txt-docs", "paragraphs"]
        for c in corpus:
            prep += ["--inputs", c]
        steps.append(("pretraining tokens", prep))
        steps.append(("pretrain", ["run", "pretrain", "--max-steps", "40" if fast else "150",
                                   "--context-length", "128", "--eval-every", "50", "--save-every", "0"]))
    else:
        init = ["--preset", "tiny"]
    steps.append(("SFT", ["run", "sft", *init, "--max-steps", "60" if fast else "250", "--batch-size", "8",
                          "--lr", "0.003", "--warmup-steps", "10", "--eval-every", "50", "--save-every", "0"]))
    steps.append(("GRPO", ["run", "grpo", "--train-data", "data/arithmetic_prompts.jsonl",
                           "--arithmetic-level", "1", "--max-steps", "8" if fast else "40",
                           "--prompts-per-step", "16", "--num-generations", "8", "--max-new-tokens", "32",
                           "--eval-every", "10", "--save-every", "0"]))
    steps.append(("evaluation", ["eval", "--gsm8k-n", "0", "--arithmetic-n", "64", "--arithmetic-level", "1",
                                 "--dev-batches", "0", "--max-new-tokens", "32"]))
    return steps


def _run(ws: Workspace, words: list[str], echo: Callable[[str], Any]) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_RUN_DIR}
    env["PYTHONUNBUFFERED"] = "1"
    argv = [sys.executable, "-m", "llmctl.core.cli", *words, "--workspace", str(ws.root)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        echo("    " + line.rstrip())
    code = proc.wait()
    if code != 0:
        raise RuntimeError(f"`llmctl {' '.join(words)}` failed with exit code {code}")


def reward_trend(ws: Workspace) -> tuple[float, float] | None:
    """Mean reward of the newest GRPO run's first and last quarter of steps."""
    runs = list_runs(ws.runs_dir, "grpo")
    if not runs:
        return None
    series = [v for _, v in iter_series(read_metrics(runs[-1].path / "metrics.jsonl"), "reward")]
    if len(series) < 2:
        return None
    q = max(1, len(series) // 4)
    return sum(series[:q]) / q, sum(series[-q:]) / q


def run_demo(ws: Workspace, *, corpus: list[str] | None = None, fast: bool = False,
             echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every demo stage in order; return the timings and the GRPO reward trend."""
    corpus = [str(Path(c).expanduser()) for c in (corpus or [])]
    timings = {}
    steps = demo_steps(ws, corpus, fast)
    for i, (title, words) in enumerate(steps, 1):
        echo(f"[{i}/{len(steps)}] {title}: llmctl {' '.join(w if w else repr(w) for w in words)}")
        t0 = time.time()
        _run(ws, words, echo)
        timings[title] = round(time.time() - t0, 1)
    trend = reward_trend(ws)
    if trend:
        echo(f"GRPO mean reward: {trend[0]:.3f} (first quarter) -> {trend[1]:.3f} (last quarter)")
    from llmctl.core.report import build_report

    report = build_report(ws)
    echo(f"demo done in {sum(timings.values()):.0f} s; report: {report}")
    return {"timings": timings, "reward_trend": trend, "report": str(report)}
