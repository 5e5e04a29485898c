"""Faults as a user meets them: a full disk, not enough space, killed jobs, two writers."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from llmctl.core.artifacts import artifact_status, manifest_path


def _cli(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl.core.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_full_disk_mid_write_is_clear_and_corrupts_nothing(small_disk, shared_data, tmp_path):
    ws = small_disk / "ws"
    assert _cli("init", "--workspace", str(ws)).returncode == 0
    small = tmp_path / "small.txt"
    small.write_text((shared_data / "pile-sample" / "tinyshakespeare.txt").read_text()[:20000])
    ok = _cli("prepare", "pretrain", "--workspace", str(ws), "--inputs", str(small))
    assert ok.returncode == 0, ok.stderr
    good = (ws / "data" / "pile_train.h5").read_bytes()
    # the estimate passes (plain text ~ its own size) but the disk fills while writing: fill most of it first
    filler = small_disk / "filler.bin"
    free = shutil.disk_usage(small_disk).free
    filler.write_bytes(b"\0" * max(0, free - 1_200_000))
    big = shared_data / "pile-sample" / "wiki_demo.txt"
    res = _cli("prepare", "pretrain", "--workspace", str(ws), "--inputs", str(big), "--txt-docs", "lines")
    assert res.returncode != 0
    err = res.stderr.strip().splitlines()[-1]
    assert err.startswith("llmctl: error:") and ("No space left" in err or "needs about" in err), res.stderr
    # the earlier complete artifact is untouched and still ready; no temporary file is left behind
    assert (ws / "data" / "pile_train.h5").read_bytes() == good
    assert artifact_status(ws / "data" / "pile_train.h5").state == "ready"
    filler.unlink()


def test_not_enough_space_refused_before_start(small_disk, shared_data):
    ws = small_disk / "ws"
    assert _cli("init", "--workspace", str(ws)).returncode == 0
    corpus = [str(p) for p in sorted((shared_data / "pile-sample").glob("*.txt"))]
    args = []
    for c in corpus:
        args += ["--inputs", c]
    res = _cli("prepare", "pretrain", "--workspace", str(ws), *args)
    assert res.returncode == 1
    msg = res.stderr.strip().splitlines()[-1]
    assert "needs about" in msg and "MB free at" in msg and "available" in msg and "pile_train.h5" in msg, msg
    assert not (ws / "data" / "pile_train.h5").exists()
    assert not list((ws / "data").glob("*.tmp"))


def test_two_writers_second_refused(workspace, shared_data):
    """A second prepare of the same artifact, started while the first holds it, refuses clearly."""
    import time

    src = shared_data / "pile-sample"
    args = ["prepare", "pretrain", "--workspace", str(workspace.root), "--inputs", str(src / "wiki_demo.txt"),
            "--inputs", str(src / "gutenberg-16215-jack-sheppard.txt"), "--txt-docs", "lines",
            "--batch-docs", "50", "--flush-tokens", "4096", "--chunk-tokens", "4096"]
    first = subprocess.Popen([sys.executable, "-m", "llmctl.core.cli", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, text=True)
    lock = workspace.data_dir / "pile_train.h5.lock"
    deadline = time.monotonic() + 120
    while not lock.exists() and first.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    second = _cli(*args)
    first.wait(timeout=300)
    if first.returncode == 0 and "being written" not in second.stderr:
        pytest.skip("the first writer finished before the second started")
    assert second.returncode == 1
    assert "pile_train.h5 is being written by pid" in second.stderr
    assert first.returncode == 0
    man = json.loads(manifest_path(workspace.data_dir / "pile_train.h5").read_text())
    assert man["counts"]["documents"] > 0


def _pretrain_args(ws: Path, *extra: str) -> list[str]:
    return ["run", "pretrain", "--workspace", str(ws), "--preset", "tiny", "--max-steps", "12",
            "--batch-size", "2", "--context-length", "32", "--eval-every", "0", "--log-every", "1",
            "--save-every", "4", "--keep-last", "5", "--warmup-steps", "2", "--no-progress", *extra]


def _losses(run_dir: Path) -> dict[int, float]:
    from llmctl.core.metrics import read_metrics

    return {r["step"]: r["train/loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "train/loss" in r}


@pytest.mark.slow
def test_training_killed_then_resumed_gives_the_same_curve(workspace, shared_data):
    """SIGKILL a training job mid-way: no half checkpoint reads as ready, and --resume last
    continues from the last complete checkpoint with exactly the curve of an unbroken run."""
    import signal
    import time

    from llmctl.core import jobs, runs
    from llmctl.core.artifacts import ready_checkpoints

    text = shared_data / "pile-sample" / "tinyshakespeare.txt"
    res = _cli("prepare", "pretrain", "--workspace", str(workspace.root), "--inputs", str(text),
               "--txt-docs", "paragraphs", "--val-fraction", "0.1", "--max-tokens", "60000")
    assert res.returncode == 0, res.stderr
    # the unbroken reference run
    ref = _cli(*_pretrain_args(workspace.root))
    assert ref.returncode == 0, ref.stderr
    ref_run = runs.list_runs(workspace.runs_dir, "pretrain")[-1].path
    ref_losses = _losses(ref_run)
    assert sorted(ref_losses) == list(range(1, 13))

    argv = jobs.stage_argv(("run", "pretrain"), _pretrain_args(workspace.root)[2:])
    run_dir = jobs.start_job(workspace.runs_dir, "pretrain", argv, workspace=workspace.root)
    ckpt_root = workspace.checkpoints_dir / "pretrain" / run_dir.name
    deadline = time.monotonic() + 300
    while not any(p.name == "step_4" for p in ready_checkpoints(workspace.checkpoints_dir / "pretrain")
                  if p.parent == ckpt_root):
        assert time.monotonic() < deadline, (run_dir / "log.txt").read_text()
        assert jobs.is_active(runs.read_job(run_dir)), (run_dir / "log.txt").read_text()
        time.sleep(0.05)
    os.killpg(runs.read_job(run_dir)["pgid"], signal.SIGKILL)
    assert jobs.wait_job(run_dir, timeout=30)["state"] == "killed"
    for step in ckpt_root.glob("step_*"):  # whatever was being written is not a ready checkpoint
        if not (step / "manifest.json").exists():
            assert step not in ready_checkpoints(workspace.checkpoints_dir / "pretrain")
    done = {int(p.name.split("_")[1]) for p in ckpt_root.glob("step_*") if (p / "manifest.json").exists()}
    assert 4 in done and 12 not in done

    again = _cli(*_pretrain_args(workspace.root, "--resume", "last"))
    assert again.returncode == 0, again.stderr
    resumed_run = runs.list_runs(workspace.runs_dir, "pretrain")[-1].path
    resumed = _losses(resumed_run)
    assert sorted(resumed) == list(range(1, 13))  # the curve carried over, cut back to the checkpoint
    for step in range(max(done) + 1, 13):
        assert resumed[step] == ref_losses[step], f"step {step}: {resumed[step]} != {ref_losses[step]}"
