"""``llmctl demo``: the whole pipeline offline on the tiny model, in a few minutes on a CPU.

Data comes from what llmctl makes itself (the arithmetic curriculum for SFT and GRPO) plus, when the
user points at one, a small text corpus to pretrain on first. Every stage runs as its own
``llmctl`` command in its own run folder, so the control center shows each one live.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmctl.core import heldout, jobs
from llmctl.core.cli.report import build_report
from llmctl.core.metrics import iter_series, read_metrics
from llmctl.core.progress import Progress, parse_step_line
from llmctl.core.runs import ENV_RUN_DIR, list_runs
from llmctl.core.workspace import Workspace

STOP_POINTS = ("data", "pretrain", "sft", "grpo", "eval")


@dataclass(frozen=True)
class DemoStep:
    """One demo stage: where it sits in the pipeline, a title, and the ``llmctl`` command words."""
    point: str
    title: str
    words: list[str]


LEVELS = ("1", "2", "3")  # the arithmetic levels the demo prepares and fine-tunes on
RL_LEVEL = "3"  # a + b + c: 1,000 questions, sampled accuracy well below greedy after SFT
HELD_OUT = "128"  # level-3 prompts GRPO never trains on, scored before and after it
SFT_STEPS, SFT_STEPS_FAST = "500", "60"
GRPO_STEPS, GRPO_STEPS_FAST = "16", "6"
HELD_OUT_FAST = "32"


def _levels(flag: str) -> list[str]:
    return [w for lv in LEVELS for w in (flag, lv)]


def demo_steps(ws: Workspace, corpus: list[str], fast: bool, stop_after: str = "eval", *, seed: int = 0,
               preset: str = "tiny") -> list[DemoStep]:
    """The demo's stages in order, up to and including ``stop_after`` (one of ``STOP_POINTS``);
    every training stage and the held-out split use ``seed``, new models the ``preset`` shape."""
    if stop_after not in STOP_POINTS:
        raise ValueError(f"stop_after must be one of {', '.join(STOP_POINTS)}, got {stop_after!r}")
    sd = ["--seed", str(seed)]
    held = HELD_OUT_FAST if fast else HELD_OUT
    steps = [
        DemoStep("data", "arithmetic prompts", ["prepare", "rl", "--gsm8k", "", "--arithmetic-n", "1000",
                                                *_levels("--arithmetic-levels")]),
        DemoStep("data", "arithmetic SFT rows", ["prepare", "sft", "--sources", "", "--include-arithmetic", "3000",
                                                 *_levels("--arithmetic-levels"), "--seq-len", "128"]),
    ]
    init = ["--preset", preset]
    if corpus:
        prep = ["prepare", "pretrain", "--val-fraction", "0.05", "--txt-docs", "paragraphs"]
        for c in corpus:
            prep += ["--inputs", c]
        steps.append(DemoStep("data", "pretraining tokens", prep))
        steps.append(DemoStep("pretrain", "pretrain", [
            "run", "pretrain", *init, *sd, "--max-steps", "40" if fast else "150", "--context-length", "128",
            "--eval-every", "50", "--save-every", "0"]))
        init = []
    # The recipe (benchmarks/RESULTS.md, "GRPO that generalizes"): SFT at a constant lr to where the
    # model answers level-3 questions greedily about half the time but one sample at T=1 only a third
    # of the time; GRPO on level-3 prompts then sharpens the policy towards its own best answers, and
    # pass@1 on 128 held-out level-3 prompts rises while greedy accuracy holds or rises too.
    steps.append(DemoStep("sft", "SFT", [
        "run", "sft", *init, *sd, "--max-steps", SFT_STEPS_FAST if fast else SFT_STEPS, "--batch-size", "8",
        "--lr", "0.003", "--min-lr-ratio", "1.0", "--warmup-steps", "10", "--eval-every", "100",
        "--save-every", "0"]))
    steps.append(DemoStep("grpo", "GRPO", [
        "run", "grpo", *sd, "--train-data", "data/arithmetic_prompts.jsonl", "--arithmetic-level", RL_LEVEL,
        "--eval-prompts", held, "--eval-samples", "8", "--max-steps", GRPO_STEPS_FAST if fast else GRPO_STEPS,
        "--prompts-per-step", "16", "--num-generations", "8", "--max-new-tokens", "32", "--lr", "5e-4",
        "--warmup-steps", "3", "--kl-coef", "0.2", "--num-iterations", "1", "--eval-every", "0",
        "--save-every", "0"]))
    steps.append(DemoStep("eval", "evaluation", [
        "eval", *sd, "--gsm8k-n", "0", "--arithmetic-heldout", held, "--arithmetic-level", RL_LEVEL,
        "--dev-batches", "0", "--max-new-tokens", "32", "--batch-size", "32"]))
    last = max(i for i, st in enumerate(steps) if STOP_POINTS.index(st.point) <= STOP_POINTS.index(stop_after))
    return steps[:last + 1]


def _run(ws: Workspace, words: list[str], echo: Callable[[str], Any], bar: Progress | None = None) -> None:
    env = {k: v for k, v in os.environ.items() if k != ENV_RUN_DIR}
    env["PYTHONUNBUFFERED"] = "1"
    argv = jobs.cli_argv(*words, "--workspace", str(ws.root))
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        echo("    " + line.rstrip())
        hit = parse_step_line(line) if bar is not None else None
        if bar is not None and hit is not None:
            if bar.total != hit[2]:
                bar.set_total(hit[2])
            bar.update(hit[1])
    code = proc.wait()
    if code != 0:
        raise RuntimeError(f"`llmctl {' '.join(words)}` failed with exit code {code}")


def grpo_trends(ws: Workspace) -> tuple[dict[str, tuple[float, float]], dict[str, Any] | None]:
    """The newest GRPO run's mean reward over its first and last quarter of steps (``reward``), and
    its held-out tables before its first step and after its last (``heldout.json``), or None."""
    runs = list_runs(ws.runs_dir, "grpo")
    if not runs:
        return {}, None
    rows = read_metrics(runs[-1].path / "metrics.jsonl")
    out = {}
    series = [v for _, v in iter_series(rows, "reward")]
    if len(series) >= 2:
        q = max(1, len(series) // 4)
        out["reward"] = (sum(series[:q]) / q, sum(series[-q:]) / q)
    return out, heldout.read(runs[-1].path / heldout.FILE)


def run_demo(ws: Workspace, *, corpus: list[str] | None = None, fast: bool = False, stop_after: str = "eval",
             seed: int = 0, preset: str = "tiny", echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the demo's stages in order (up to ``stop_after``); return the timings, the GRPO reward
    trend, the held-out tables before and after GRPO and, after a whole run, the report's path."""
    from llmctl.core.cli import demo_figures

    corpus = [str(Path(c).expanduser()) for c in (corpus or [])]
    timings = {}
    load_before = demo_figures.load()
    steps = demo_steps(ws, corpus, fast, stop_after, seed=seed, preset=preset)
    for i, st in enumerate(steps, 1):
        echo(f"[{i}/{len(steps)}] {st.title}: llmctl {' '.join(w if w else repr(w) for w in st.words)}")
        t0 = time.time()
        with Progress(st.title, None) if sys.stdout.isatty() else contextlib.nullcontext() as bar:
            _run(ws, st.words, bar.print if bar is not None else echo, bar)
        timings[st.title] = round(time.time() - t0, 1)
    trends, held = grpo_trends(ws)
    trend = trends.get("reward")
    if stop_after != "eval":
        echo(f"demo stopped after {stop_after} in {sum(timings.values()):.0f} s")
        return {"timings": timings, "reward_trend": trend, "heldout": held, "report": None}
    if trend:
        echo(f"GRPO mean reward on its training prompts: {trend[0]:.3f} (first quarter) -> {trend[1]:.3f} "
             "(last quarter)")
    if held:
        echo(f"GRPO on {held['after']['n']} held-out prompts it never trains on, before -> after:")
        for line in heldout.change_lines(held["before"], held["after"]):
            echo("  " + line)

    grpo = next((st for st in steps if st.point == "grpo"), None)
    fig = demo_figures.measured(sum(timings.values()), trends, held, fast=fast, load_before=load_before, seed=seed,
                                preset=preset,
                                grpo_steps=int(grpo.words[grpo.words.index("--max-steps") + 1]) if grpo else None)
    (ws.root / demo_figures.FILE).write_text(json.dumps(fig, indent=2) + "\n", encoding="utf-8")
    echo(demo_figures.figures_line(fig) + f" ({demo_figures.FILE})")
    report = build_report(ws)
    echo(f"demo done in {sum(timings.values()):.0f} s; report: {report}")
    return {"timings": timings, "reward_trend": trend, "heldout": held, "report": str(report)}
