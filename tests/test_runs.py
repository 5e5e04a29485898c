"""Job states and the processes behind them: real supervisors, real commands, real kills.

A pid in job.json is trusted only while it is provably the job's; a supervisor killed with -9 does
not orphan its command; run references are unambiguous; every run has its log; metrics lines that
are JSON but not rows are skipped and counted.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_spine_jobs import SCRIPT

from llmctl.core import jobs, runs
from llmctl.core.artifacts import pid_alive
from llmctl.core.metrics import MetricsWriter, load_metrics, read_metrics

# a command that ignores SIGTERM (SCRIPT stops on it: "checkpoint written", exit 3)
STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "for i in range(1, 3000): print(f'step {i}', flush=True); time.sleep(0.05)")


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmctl.core.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def wait_for(cond, what: str, timeout: float = 60.0) -> None:
    """Poll ``cond`` until true; the deadline only turns a hang into a failure."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def start_worker(runs_dir: Path, mode: str) -> tuple[Path, int, int]:
    """A real job running SCRIPT (or STUBBORN); returns (run folder, supervisor pid, command pid) once it logs."""
    run_dir = jobs.start_job(runs_dir, "demo", [sys.executable, "-c", STUBBORN if mode == "stubborn" else SCRIPT,
                                                "100000"])
    wait_for(lambda: "step 2\n" in (run_dir / "log.txt").read_text(), "the job never logged")
    job = runs.read_job(run_dir)
    return run_dir, job["supervisor_pid"], job["pid"]


def test_states_are_an_enum_and_old_records_load(tmp_path):
    run_dir = tmp_path / "runs" / "sft" / "20240101-000000-abcd"
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps({"state": "done", "stage": "sft", "exit_code": 0}))
    job = runs.read_job(run_dir)
    assert job["state"] is runs.JobState.DONE and job["state"] == "done"
    (run_dir / "job.json").write_text(json.dumps({"state": "exploded"}))
    assert runs.read_job(run_dir)["state"] is runs.JobState.UNKNOWN
    # transitions go through runs only, and only the allowed ones
    runs.begin(run_dir, stage="sft", command=["x"])
    with pytest.raises(ValueError):
        runs.update_job(run_dir, state="done")
    runs.mark_running(run_dir, pid=123)
    runs.finish(run_dir, 0)
    assert json.loads((run_dir / "job.json").read_text())["state"] == "done"  # plain text on disk
    with pytest.raises(runs.TransitionRefused):
        runs.mark_running(run_dir)


def test_supervisor_killed_takes_its_command_down(tmp_path):
    """kill -9 of the supervisor: the command gets SIGTERM (it checkpoints and exits), no orphan."""
    run_dir, sup, cmd = start_worker(tmp_path / "runs", "graceful")
    os.kill(sup, signal.SIGKILL)
    wait_for(lambda: not pid_alive(cmd), "the command outlived its supervisor")
    assert "checkpoint written" in (run_dir / "log.txt").read_text()
    assert jobs.job_state(run_dir)["state"] == "killed"


def test_cancel_stops_a_command_that_outlived_its_supervisor(tmp_path):
    """A command that ignores SIGTERM survives its supervisor's kill -9: it still shows as running
    and ``jobs cancel --force`` finds and kills it."""
    ws = tmp_path / "ws"
    assert cli("init", "--workspace", str(ws)).returncode == 0
    run_dir, sup, cmd = start_worker(ws / "runs", "stubborn")
    try:
        os.kill(sup, signal.SIGKILL)
        wait_for(lambda: not pid_alive(sup), "the supervisor did not die")
        assert pid_alive(cmd)
        listed = json.loads(cli("jobs", "--workspace", str(ws), "--json").stdout)
        assert [j["state"] for j in listed] == ["running"]
        res = cli("jobs", "cancel", run_dir.name, "--workspace", str(ws), "--force")
        assert res.returncode == 0 and res.stdout.startswith("killed"), res.stdout + res.stderr
        wait_for(lambda: not pid_alive(cmd), "cancel --force left the command running")
        assert runs.read_job(run_dir)["state"] == "killed"
    finally:
        if pid_alive(cmd):
            os.kill(cmd, signal.SIGKILL)


def test_a_reused_pid_is_never_trusted(tmp_path):
    """A 'running' record whose pids now belong to another process (pid reuse, a copied workspace,
    a crafted file) is shown as lost, and cancel --force leaves that process alone."""
    ws = tmp_path / "ws"
    assert cli("init", "--workspace", str(ws)).returncode == 0
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    try:
        for name, identity in (("crafted", None),
                               ("copied", {"start": 1, "sid": victim.pid, "boot": "another-machine"})):
            run_dir = ws / "runs" / "pretrain" / f"20200101-000000-{name[:4]}"
            run_dir.mkdir(parents=True)
            (run_dir / "job.json").write_text(json.dumps({
                "state": "running", "stage": "pretrain", "command": ["llmctl", "run", "pretrain"],
                "started": time.time() - 218_561_505, "pid": victim.pid, "supervisor_pid": victim.pid,
                "pgid": victim.pid, "supervisor_identity": identity, "pid_identity": identity,
                "run_dir": str(run_dir)}))
            listed = {j["run"]: j for j in json.loads(cli("jobs", "--workspace", str(ws), "--json").stdout)}
            assert listed[run_dir.name]["state"] == "lost"
            res = cli("jobs", "cancel", run_dir.name, "--workspace", str(ws), "--force")
            assert "not running (lost)" in res.stdout, res.stdout + res.stderr
            assert victim.poll() is None and pid_alive(victim.pid)
            assert jobs.descendant_pids(1) == []  # init's tree (the whole system) is never walked
    finally:
        victim.kill()
        victim.wait()


def make_run(runs_dir: Path, stage: str, run_id: str, log: str | None = "hello\n", **job) -> Path:
    run_dir = runs_dir / stage / run_id
    run_dir.mkdir(parents=True)
    (run_dir / "job.json").write_text(json.dumps({"state": "done", "stage": stage, "started": time.time(),
                                                  "ended": time.time(), "run_dir": str(run_dir), **job}))
    if log is not None:
        (run_dir / "log.txt").write_text(log)
    return run_dir


def test_run_references_are_unambiguous(tmp_path):
    ws = tmp_path / "ws"
    assert cli("init", "--workspace", str(ws)).returncode == 0
    make_run(ws / "runs", "sft", "20261204-101010-aaaa", "sft log\n")
    make_run(ws / "runs", "grpo", "20261204-111111-bbbb", "grpo log\n")
    long_id = "torchrun-6f1c2a9e-5b7d-4c1e-9a3f-0d8e7c6b5a49"
    make_run(ws / "runs", "pretrain", long_id, "ddp log\n")

    amb = cli("jobs", "logs", "2", "--workspace", str(ws))
    assert amb.returncode == 1 and "matches 2 runs" in amb.stderr and "sft/20261204-101010-aaaa" in amb.stderr
    assert "matches 2 runs" in cli("jobs", "cancel", "2", "--workspace", str(ws)).stderr
    # the short ids the app shows
    assert cli("jobs", "logs", "101010-aaaa", "--workspace", str(ws)).stdout == "sft log\n"
    short = runs.short_run(long_id)
    assert len(short) <= runs.SHORT_ID_LEN
    assert cli("jobs", "logs", short, "--workspace", str(ws)).stdout == "ddp log\n"
    assert cli("jobs", "logs", "grpo/20261204-111111-bbbb", "--workspace", str(ws)).stdout == "grpo log\n"
    # folders that are not runs of this workspace are refused
    for ref in ("/", str(tmp_path), str(ws / "runs" / "sft")):
        res = cli("jobs", "logs", ref, "--workspace", str(ws))
        assert res.returncode == 1 and "not a run folder" in res.stderr, (ref, res.stdout, res.stderr)
        assert res.stdout == ""
    assert cli("jobs", "logs", str(ws / "runs" / "sft" / "20261204-101010-aaaa"),
               "--workspace", str(ws)).stdout == "sft log\n"


def test_an_empty_log_says_why(tmp_path):
    ws = tmp_path / "ws"
    assert cli("init", "--workspace", str(ws)).returncode == 0
    make_run(ws / "runs", "sft", "20261204-101010-aaaa", log="")
    make_run(ws / "runs", "sft", "20261204-101011-bbbb", log=None)
    res = cli("jobs", "logs", "101010-aaaa", "--workspace", str(ws))
    assert res.returncode == 0 and res.stdout == "" and "is empty: the run (done) printed nothing" in res.stderr
    res = cli("jobs", "logs", "101011-bbbb", "--workspace", str(ws))
    assert "has no log.txt" in res.stderr


def test_a_foreground_run_keeps_its_log_and_names_a_bad_data_file(tmp_path):
    """A stage run outside a job (as the demo runs its stages) writes log.txt; ``--train-data
    /etc/passwd`` ends in one line naming the file."""
    ws = tmp_path / "ws"
    assert cli("init", "--workspace", str(ws)).returncode == 0
    res = cli("run", "pretrain", "--workspace", str(ws), "--train-data", "/etc/passwd", "--max-steps", "1",
              "--no-progress")
    assert res.returncode == 1
    assert res.stderr.strip().splitlines()[-1] == \
        "llmctl: error: /etc/passwd: not an HDF5 file of tokens (file signature not found)"
    assert "Traceback" not in res.stderr
    [info] = runs.list_runs(ws / "runs", "pretrain")
    assert info.state == "failed"
    log = (info.path / "log.txt").read_text()
    assert "pretrain: 6.8M parameters" in log and "/etc/passwd: not an HDF5 file" in log
    assert cli("jobs", "logs", info.run_id, "--workspace", str(ws)).stdout == log


GARBAGE = ['[1, 2]', '"text"', '5', '{"loss": 1.0}', '{"step": "3", "loss": 1.0}', '{"step": 1.5, "loss": 1.0}',
           '{"step": null}', '{"step": true, "loss": 1.0}', 'not json']


def test_metrics_lines_that_are_not_rows_are_skipped_and_counted(tmp_path):
    ws = tmp_path / "ws"
    assert cli("init", "--workspace", str(ws)).returncode == 0
    run_dir = make_run(ws / "runs", "sft", "20261204-101010-aaaa")
    lines = ['{"step": 1, "train/loss": 3.0}', *GARBAGE, '{"step": 2.0, "train/loss": 2.0}', '{"step": 3, "train/loss": 1.0}']
    (run_dir / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    rows, skipped = load_metrics(run_dir / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and skipped == len(GARBAGE)
    for fmt in ("md", "html"):
        args = ["report", "--workspace", str(ws)] + (["--html"] if fmt == "html" else [])
        res = cli(*args)
        assert res.returncode == 0, res.stderr
        text = (ws / f"report.{fmt}").read_text()
        assert f"{len(GARBAGE)} line(s) of metrics.jsonl skipped" in text
    w = MetricsWriter(run_dir / "metrics.jsonl")  # what --resume does to the source run's metrics
    w.truncate_to_step(2)
    assert [r["step"] for r in read_metrics(run_dir / "metrics.jsonl")] == [1, 2]
