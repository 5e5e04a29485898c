"""Jobs: real detached subprocesses with job.json, log.txt, cancel and re-attach."""

from __future__ import annotations

import sys
import time

from llmctl.core import jobs, runs

SCRIPT = r"""
import json, os, signal, sys, time
run = os.environ["LLMCTL_RUN_DIR"]
stop = False
def term(*a):
    global stop
    stop = True
signal.signal(signal.SIGTERM, term)
with open(os.path.join(run, "metrics.jsonl"), "a") as f:
    for step in range(1, 10000):
        f.write(json.dumps({"step": step, "train/loss": 1.0 / step}) + "\n"); f.flush()
        print(f"step {step}", flush=True)
        if stop:
            print("checkpoint written, exiting", flush=True)
            sys.exit(3)
        if step >= int(sys.argv[1]):
            break
        time.sleep(0.05)
"""


def test_job_runs_to_done(tmp_path):
    run_dir = jobs.start_job(tmp_path / "runs", "demo", [sys.executable, "-c", SCRIPT, "3"])
    job = jobs.wait_job(run_dir, timeout=30)
    assert job["state"] == "done" and job["exit_code"] == 0
    assert "step 3" in (run_dir / "log.txt").read_text()
    assert [r.run_id for r in jobs.list_jobs(tmp_path / "runs")] == [run_dir.name]


def test_job_failure_recorded(tmp_path):
    run_dir = jobs.start_job(tmp_path / "runs", "demo", [sys.executable, "-c", "raise SystemExit(7)"])
    job = jobs.wait_job(run_dir, timeout=30)
    assert job["state"] == "failed" and job["exit_code"] == 7


def test_cancel_is_graceful_then_forced(tmp_path):
    run_dir = jobs.start_job(tmp_path / "runs", "demo", [sys.executable, "-c", SCRIPT, "100000"])
    deadline = time.monotonic() + 30
    while "step 2\n" not in (run_dir / "log.txt").read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert jobs.is_active(runs.read_job(run_dir))
    assert jobs.cancel_job(run_dir)
    job = jobs.wait_job(run_dir, timeout=30)
    assert job["state"] == "cancelled" and job["exit_code"] == 3
    assert "checkpoint written" in (run_dir / "log.txt").read_text()

    # a job that ignores SIGTERM is killed with --force
    stubborn = "import signal,time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('REA'+'DY', flush=True); time.sleep(60)"
    run2 = jobs.start_job(tmp_path / "runs", "demo", [sys.executable, "-c", stubborn])
    while "READY" not in (run2 / "log.txt").read_text():
        time.sleep(0.05)
    jobs.cancel_job(run2)
    time.sleep(0.3)
    assert jobs.is_active(runs.read_job(run2))
    assert jobs.cancel_job(run2, force=True)
    assert jobs.wait_job(run2, timeout=10)["state"] == "killed"


def test_supervisor_killed_job_reads_as_killed(tmp_path):
    import os
    import signal

    run_dir = jobs.start_job(tmp_path / "runs", "demo", [sys.executable, "-c", SCRIPT, "100000"])
    while "step 1\n" not in (run_dir / "log.txt").read_text():
        time.sleep(0.05)
    os.killpg(runs.read_job(run_dir)["pgid"], signal.SIGKILL)
    assert jobs.wait_job(run_dir, timeout=10)["state"] == "killed"
