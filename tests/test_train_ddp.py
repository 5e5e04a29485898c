"""DDP: two CPU processes under torchrun (gloo) match one process with the same global batch;
a cancelled two-process job checkpoints, leaves nothing running and resumes under torchrun."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stage_support import make_token_files

from llmctl.core import jobs
from llmctl.core.artifacts import pid_alive, ready_checkpoints
from llmctl.core.metrics import read_metrics
from llmctl.core.status import artifact_statuses
from llmctl.core.train_params import PretrainParams
from llmctl.trainers import pretrain
from llmctl.trainers.checkpoint import load_checkpoint

ARGS = dict(preset="tiny", n_embd=64, block_size=64, context_length=32, max_steps=2, log_every=1,
            eval_every=2, eval_batches=1, warmup_steps=1, progress=False)


@pytest.mark.slow
def test_two_processes_match_one(workspace, tokenizer, shared_data):
    ws = workspace
    make_token_files(ws, tokenizer, shared_data, chars=40_000)
    one_dir = ws.runs_dir / "pretrain" / "one"
    one_dir.mkdir(parents=True)
    pretrain.run(ws, PretrainParams(**ARGS, batch_size=4), one_dir)

    cli = [sys.executable, "-m", "llmctl.core.cli", "run", "pretrain", "--nproc", "2", "--workspace", str(ws.root),
           "--batch-size", "2", "--no-progress"]
    for k, v in ARGS.items():
        if k != "progress":
            cli += ["--" + k.replace("_", "-"), str(v)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("LLMCTL_RUN_DIR", None)
    proc = subprocess.run(cli, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    two_dir = next(p for p in (ws.runs_dir / "pretrain").iterdir() if p.name != "one")

    one = read_metrics(one_dir / "metrics.jsonl")
    two = read_metrics(two_dir / "metrics.jsonl")
    prov = (two_dir / "provenance.json").read_text()
    assert '"world_size": 2' in prov
    for key in ("train/loss", "grad_norm", "eval/loss"):
        a = [r[key] for r in one if key in r]
        b = [r[key] for r in two if key in r]
        assert len(a) == len(b) > 0
        assert b == pytest.approx(a, rel=1e-4), key
    assert [r["tokens"] for r in two if "tokens" in r] == [r["tokens"] for r in one if "tokens" in r]
    assert (ws.checkpoints_dir / "pretrain" / two_dir.name / "step_2" / "manifest.json").exists()


def wait_for_step(run_dir, step: int, timeout: float = 120) -> int:
    """Wait until the run's metrics reach ``step``; return the last step logged."""
    deadline = time.monotonic() + timeout
    last = 0
    while last < step and time.monotonic() < deadline:
        rows = read_metrics(run_dir / "metrics.jsonl")
        last = rows[-1]["step"] if rows else 0
        time.sleep(0.1)
    assert last >= step, (run_dir / "log.txt").read_text()
    return last


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group, from /proc."""
    out = []
    for d in os.listdir("/proc"):
        try:
            fields = Path(f"/proc/{d}/stat").read_text().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            out.append(int(d))
    return out


def assert_all_gone(pids: list[int], pgid: int) -> None:
    """No process of the job is left: not in its group, not among the workers (own sessions)."""
    # the supervisor writes the final state and then exits: its group empties a moment after
    deadline = time.monotonic() + 10
    while (any(pid_alive(p) for p in pids) or group_members(pgid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not [p for p in pids if pid_alive(p)]
    assert group_members(pgid) == []


@pytest.mark.slow
def test_cancel_two_processes_checkpoints_and_resumes(workspace, tokenizer, shared_data):
    ws = workspace
    make_token_files(ws, tokenizer, shared_data, chars=20_000)
    args = ["--preset", "tiny", "--n-embd", "64", "--block-size", "32", "--context-length", "32",
            "--batch-size", "1", "--max-steps", "100000", "--log-every", "1", "--save-every", "0",
            "--eval-every", "0", "--no-progress", "--workspace", str(ws.root)]
    env = {"OMP_NUM_THREADS": "1"}
    run_dir = jobs.start_job(ws.runs_dir, "pretrain", jobs.stage_argv(("run", "pretrain"), args, nproc=2),
                             env=env, workspace=ws.root)
    wait_for_step(run_dir, 2)
    job = jobs.job_state(run_dir)
    procs = jobs.descendant_pids(job["supervisor_pid"])
    assert len(procs) >= 3  # torchrun's agent and its two workers
    assert jobs.cancel_job(run_dir)  # SIGTERM to the group: the agent forwards it to the workers
    job = jobs.wait_job(run_dir, timeout=60)
    log = (run_dir / "log.txt").read_text()
    assert job["state"] == "cancelled", log
    assert log.count("llmctl: error: interrupted") == 2, log  # both ranks left through the stop flag
    assert_all_gone(procs, job["pgid"])

    stop = read_metrics(run_dir / "metrics.jsonl")[-1]["step"]
    assert f"stopped (SIGTERM) at step {stop};" in log
    (ckpt,) = ready_checkpoints(ws.checkpoints_dir / "pretrain")
    assert ckpt.parent.name == run_dir.name and ckpt.name == f"step_{stop}"
    assert (ckpt / "model.safetensors").is_file()
    model, state = load_checkpoint(ckpt)
    assert state["step"] == stop and state["extra"]["world_size"] == 2 and "optimizer" in state
    assert model.config.n_embd == 64
    assert artifact_statuses(ws)["ckpt_pretrain"].state == "ready"

    # --resume last under torchrun goes on at the next step; a forced cancel then kills every worker
    again = jobs.start_job(ws.runs_dir, "pretrain", jobs.stage_argv(("run", "pretrain"),
                                                                    [*args, "--resume", "last"], nproc=2),
                           env=env, workspace=ws.root)
    wait_for_step(again, stop + 1)
    rows = read_metrics(again / "metrics.jsonl")
    assert [r["step"] for r in rows][:stop + 1] == list(range(1, stop + 2))
    assert f"resuming at step {stop}" in (again / "log.txt").read_text()
    procs = jobs.descendant_pids(jobs.job_state(again)["supervisor_pid"])
    assert jobs.cancel_job(again, force=True)
    assert jobs.wait_job(again, timeout=10)["state"] == "killed"
    assert_all_gone(procs, jobs.job_state(again)["pgid"])
