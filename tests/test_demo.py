"""`llmctl demo` as a new user runs it: the real CLI in a subprocess, on a fresh workspace."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl.core.cli.demo import STOP_POINTS, demo_steps
from llmctl.core.runs import list_runs
from llmctl.core.workspace import Workspace


def _llmctl(*words: str, tokenizer_file: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMCTL_")}
    env["LLMCTL_TIKTOKEN_FILE"] = str(tokenizer_file)
    return subprocess.run([sys.executable, "-m", "llmctl.core.cli", *words], env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_demo_first_stages_build_ready_artifacts(tmp_path, tokenizer_file):
    ws = tmp_path / "fresh-ws"  # does not exist yet: the demo creates it
    out = _llmctl("demo", "--workspace", str(ws), "--stop-after", "data", tokenizer_file=tokenizer_file)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[1/2] arithmetic prompts" in out.stdout and "[2/2] arithmetic SFT rows" in out.stdout
    assert "demo stopped after data" in out.stdout
    status = _llmctl("status", "--workspace", str(ws), "--json", tokenizer_file=tokenizer_file)
    assert status.returncode == 0, status.stderr
    states = {a["name"]: a["state"] for a in json.loads(status.stdout)["artifacts"]}
    assert states["arithmetic_prompts"] == "ready" and states["sft_packed"] == "ready", states
    rows = [json.loads(line) for line in (ws / "data" / "arithmetic_prompts.jsonl").read_text().splitlines()]
    assert {r["level"] for r in rows} == {1, 2, 3} and len(rows) == 3000
    stage_runs = list_runs(ws / "runs")
    assert {r.stage for r in stage_runs} == {"prepare-rl", "prepare-sft"}, stage_runs
    for r in stage_runs:  # every stage run keeps its log, as a job's does
        assert r.state == "done" and (r.path / "log.txt").read_text().strip(), r.path
    # run again: the stages rebuild over their own ready artifacts without complaint
    again = _llmctl("demo", "--workspace", str(ws), "--stop-after", "data", tokenizer_file=tokenizer_file)
    assert again.returncode == 0, again.stdout + again.stderr


@pytest.mark.slow
def test_fast_demo_runs_the_whole_pipeline_offline(tmp_path, tokenizer_file):
    """`llmctl demo --fast` on a fresh workspace: every stage runs, the checkpoints and evaluation are
    ready artifacts, and the report card is written (about a minute on an idle 2-core box)."""
    ws = tmp_path / "demo-ws"
    out = _llmctl("demo", "--workspace", str(ws), "--fast", tokenizer_file=tokenizer_file, timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    assert "[5/5] evaluation" in out.stdout and "GRPO mean reward on its training prompts:" in out.stdout
    assert "GRPO on 32 held-out prompts it never trains on, before -> after:" in out.stdout
    assert "held-out pass@1 (T=1, k=8): " in out.stdout and "held-out greedy accuracy: " in out.stdout
    assert "eval: arithmetic accuracy " in out.stdout and "demo done in" in out.stdout
    status = _llmctl("status", "--workspace", str(ws), "--json", tokenizer_file=tokenizer_file)
    states = {a["name"]: a["state"] for a in json.loads(status.stdout)["artifacts"]}
    for name in ("arithmetic_prompts", "sft_packed", "ckpt_sft", "ckpt_grpo", "eval_results"):
        assert states[name] == "ready", (name, states)
    grpo_runs = list((ws / "runs" / "grpo").iterdir())
    rows = [json.loads(line) for line in (grpo_runs[0] / "metrics.jsonl").read_text().splitlines()]
    assert sum("reward" in r for r in rows) == 6  # --fast: six GRPO steps, each logged
    report = (ws / "report.md").read_text()
    assert "## Artifacts" in report and "## Runs" in report and "grpo" in report
    assert "| held-out (32 prompts) | before | after |" in report and "-heldout.svg)" in report
    fig = json.loads((ws / "demo_figures.json").read_text())
    assert fig["heldout"]["n"] == 32 and len(fig["heldout"]["pass@1"]) == 2 and fig["seed"] == 0


def test_demo_refuses_an_unknown_stop_point(tmp_path, tokenizer_file):
    out = _llmctl("demo", "--workspace", str(tmp_path / "ws"), "--stop-after", "ppo", tokenizer_file=tokenizer_file)
    assert out.returncode != 0
    assert "--stop-after must be one of data, pretrain, sft, grpo, eval" in out.stdout + out.stderr
    assert not (tmp_path / "ws").exists()  # nothing created for a command that was refused


@pytest.mark.parametrize("corpus", [[], ["corpus.txt"]])
def test_demo_plan_follows_the_pipeline(tmp_path, corpus):
    ws = Workspace(tmp_path)
    full = demo_steps(ws, corpus, fast=False)
    points = [st.point for st in full]
    assert points == sorted(points, key=STOP_POINTS.index)  # stages come in pipeline order
    assert ("pretrain" in points) == bool(corpus)
    sft = next(st for st in full if st.point == "sft")
    assert ("--preset" in sft.words) != bool(corpus)  # SFT starts fresh only when nothing was pretrained
    first = next(st for st in full if st.point in ("pretrain", "sft"))
    assert first.words[first.words.index("--preset") + 1] == "tiny"
    seeded = demo_steps(ws, corpus, fast=False, seed=3, preset="small")
    assert all(st.words[st.words.index("--seed") + 1] == "3" for st in seeded if st.point != "data")
    sft_words = next(st for st in seeded if "--preset" in st.words).words
    assert sft_words[sft_words.index("--preset") + 1] == "small"
    assert [st.point for st in demo_steps(ws, corpus, fast=False, stop_after="sft")][-1] == "sft"
    with pytest.raises(ValueError, match="stop_after"):
        demo_steps(ws, corpus, fast=False, stop_after="nope")
