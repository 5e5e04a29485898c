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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core.metrics import iter_series, read_metrics
from llmctl.core.runs import ENV_RUN_DIR, list_runs
from llmctl.core.workspace import Workspace

STOP_POINTS = ("data", "pretrain", "sft", "grpo", "eval")


@dataclass(frozen=True)
class DemoStep:
    """One demo stage: where it sits in the pipeline, a title, and the ``llmctl`` command words."""
    point: str
    title: str
    words: list[str]


def demo_steps(ws: Workspace, corpus: list[str], fast: bool, stop_after: str = "eval") -> list[DemoStep]:
    """The demo's stages in order, up to and including ``stop_after`` (one of ``STOP_POINTS``)."""
    if stop_after not in STOP_POINTS:
        raise ValueError(f"stop_after must be one of {', '.join(STOP_POINTS)}, got {stop_after!r}")
    steps = [
        DemoStep("data", "arithmetic prompts", ["prepare", "rl", "--gsm8k", "", "--arithmetic-n", "400",
                                                "--arithmetic-levels", "1", "--arithmetic-levels", "2"]),
        DemoStep("data", "arithmetic SFT rows", ["prepare", "sft", "--sources", "", "--include-arithmetic", "3000",
                                                 "--arithmetic-levels", "1", "--seq-len", "128"]),
    ]
    init: list[str] = []
    if corpus:
        prep = ["prepare", "pretrain", "--val-fraction", "0.05", "--txt-docs", "paragraphs"]
        for c in corpus:
            prep += ["--inputs", c]
        steps.append(DemoStep("data", "pretraining tokens", prep))
        steps.append(DemoStep("pretrain", "pretrain", [
            "run", "pretrain", "--max-steps", "40" if fast else "150", "--context-length", "128",
            "--eval-every", "50", "--save-every", "0"]))
    else:
        init = ["--preset", "tiny"]
    # SFT to ~0.7 greedy accuracy on level 1; GRPO then runs at a low learning rate: at 1e-3 its
    # first update undid the SFT on this model (held-out accuracy 0.94 -> 0.46), even with AdamW's
    # second moments carried over from SFT; 1e-4 holds the SFT model's reward.
    steps.append(DemoStep("sft", "SFT", [
        "run", "sft", *init, "--max-steps", "60" if fast else "200", "--batch-size", "8", "--lr", "0.003",
        "--warmup-steps", "10", "--eval-every", "50", "--save-every", "0"]))
    steps.append(DemoStep("grpo", "GRPO", [
        "run", "grpo", "--train-data", "data/arithmetic_prompts.jsonl", "--arithmetic-level", "1",
        "--max-steps", "6" if fast else "24", "--prompts-per-step", "16", "--num-generations", "8",
        "--max-new-tokens", "24", "--lr", "1e-4", "--num-iterations", "1", "--eval-every", "8",
        "--save-every", "0"]))
    steps.append(DemoStep("eval", "evaluation", [
        "eval", "--gsm8k-n", "0", "--arithmetic-n", "64", "--arithmetic-level", "1", "--dev-batches", "0",
        "--max-new-tokens", "32"]))
    last = max(i for i, st in enumerate(steps) if STOP_POINTS.index(st.point) <= STOP_POINTS.index(stop_after))
    return steps[:last + 1]


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


def run_demo(ws: Workspace, *, corpus: list[str] | None = None, fast: bool = False, stop_after: str = "eval",
             echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the demo's stages in order (up to ``stop_after``); return the timings, the GRPO reward
    trend and, after a whole run, the report's path."""
    corpus = [str(Path(c).expanduser()) for c in (corpus or [])]
    timings = {}
    steps = demo_steps(ws, corpus, fast, stop_after)
    for i, st in enumerate(steps, 1):
        echo(f"[{i}/{len(steps)}] {st.title}: llmctl {' '.join(w if w else repr(w) for w in st.words)}")
        t0 = time.time()
        _run(ws, st.words, echo)
        timings[st.title] = round(time.time() - t0, 1)
    trend = reward_trend(ws)
    if stop_after != "eval":
        echo(f"demo stopped after {stop_after} in {sum(timings.values()):.0f} s")
        return {"timings": timings, "reward_trend": trend, "report": None}
    if trend:
        echo(f"GRPO mean reward: {trend[0]:.3f} (first quarter) -> {trend[1]:.3f} (last quarter)")
    from llmctl.core.report import build_report

    report = build_report(ws)
    echo(f"demo done in {sum(timings.values()):.0f} s; report: {report}")
    return {"timings": timings, "reward_trend": trend, "report": str(report)}
