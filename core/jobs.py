"""Jobs: stage commands run as detached subprocesses, each in its own run folder.

A job is ``llmctl <stage command>`` started under a small supervisor in a new process session,
its output in ``log.txt`` and its state in ``job.json``. The supervisor records the exit code even
when the command dies; closing the TUI never stops a job, and reopening re-attaches through the
run folders. ``torchrun`` wraps the same command for several processes; its workers run in
sessions of their own, so a cancel reaches them through torchrun (which forwards SIGTERM and
SIGKILLs after its shutdown timeout, 30 s by default) and a forced one kills them by pid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from llmctl.core import runs
from llmctl.core.artifacts import pid_alive

TERMINAL_STATES = ("done", "failed", "cancelled", "killed")

CLI_MODULE = "llmctl.core.cli"  # the one place the command line's module path is spelled


def cli_argv(*words: str) -> list[str]:
    """``python -m llmctl.core.cli WORDS…`` with this interpreter: how jobs and the app call llmctl."""
    return [sys.executable, "-m", CLI_MODULE, *words]


def stage_argv(command: tuple[str, ...] | list[str], args: list[str], nproc: int = 1) -> list[str]:
    """The full command line for a stage: ``python -m llmctl.core.cli …``, under torchrun if nproc > 1."""
    argv = cli_argv(*command, *args)
    if nproc > 1:
        return [sys.executable, "-m", "torch.distributed.run", "--standalone",
                f"--nproc_per_node={nproc}", *argv[1:]]
    return argv


def start_job(runs_dir: str | os.PathLike[str], stage: str, argv: list[str], *,
              env: dict[str, str] | None = None, gpus: list[int] | None = None,
              workspace: str | os.PathLike[str] | None = None) -> Path:
    """Start ``argv`` detached in a new run folder of ``stage``; return the run folder."""
    run_dir = runs.new_run_dir(runs_dir, stage)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env[runs.ENV_RUN_DIR] = str(run_dir)
    child_env["PYTHONUNBUFFERED"] = "1"
    if workspace is not None:
        child_env["LLMCTL_WORKSPACE"] = str(workspace)
    if gpus is not None:
        child_env["CUDA_VISIBLE_DEVICES"] = ",".join(str(g) for g in gpus)
    runs.update_job(run_dir, stage=stage, command=argv, state="starting", started=time.time(),
                    gpus=gpus, run_dir=str(run_dir))
    log = open(run_dir / runs.LOG_FILE, "ab")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmctl.core.supervisor", str(run_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=child_env, start_new_session=True, close_fds=True,
        )
    finally:
        log.close()
    runs.update_job(run_dir, supervisor_pid=proc.pid, pgid=proc.pid)
    return run_dir


def refresh(job: dict[str, Any]) -> dict[str, Any]:
    """A job record with its state corrected: a 'running' job whose processes are gone is 'killed'."""
    state = job.get("state")
    if state in ("starting", "running"):
        pid = job.get("supervisor_pid") or job.get("pid")
        if pid and not pid_alive(int(pid)):
            job = {**job, "state": "killed"}
    return job


def job_state(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The refreshed job record of a run folder."""
    return refresh(runs.read_job(run_dir) or {})


def is_active(job: dict[str, Any]) -> bool:
    return refresh(job).get("state") in ("starting", "running")


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` from ``/proc`` (None when it is gone or there is no ``/proc``)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return int(f.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descendant_pids(pid: int) -> list[int]:
    """Every current descendant of ``pid``, parents before children, whatever their session."""
    children: dict[int, list[int]] = {}
    try:
        for entry in os.scandir("/proc"):
            if entry.name.isdigit() and (ppid := parent_pid(int(entry.name))) is not None:
                children.setdefault(ppid, []).append(int(entry.name))
    except FileNotFoundError:  # no /proc (macOS): ask ps
        out = subprocess.run(["ps", "-A", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
        for line in out.splitlines():
            child, parent = map(int, line.split())
            children.setdefault(parent, []).append(child)
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(0), [])
        found += kids
        todo += kids
    return found


def cancel_job(run_dir: str | os.PathLike[str], *, force: bool = False) -> bool:
    """Ask a job to stop: SIGTERM to its process group (trainers checkpoint first).

    ``force`` SIGKILLs the group and every descendant of the supervisor, including torchrun's
    workers, which sit in sessions of their own and would otherwise outlive their agent.
    """
    job = runs.read_job(run_dir) or {}
    pgid = job.get("pgid") or job.get("supervisor_pid")
    if not pgid or not is_active(job):
        return False
    if not force:
        runs.update_job(run_dir, cancel_requested=time.time())
    # collected before the kill: once their parents die, orphans no longer point back to the job
    stray = descendant_pids(int(job.get("supervisor_pid") or pgid)) if force else []
    try:
        os.killpg(int(pgid), signal.SIGKILL if force else signal.SIGTERM)
    except ProcessLookupError:
        return False
    finally:
        for pid in stray:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    if force:
        runs.update_job(run_dir, state="killed", ended=time.time())
    return True


def wait_job(run_dir: str | os.PathLike[str], timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:
    """Wait until the job reaches a terminal state (or ``timeout``); return its record."""
    deadline = time.monotonic() + timeout
    while True:
        job = job_state(run_dir)
        if job.get("state") in TERMINAL_STATES or time.monotonic() > deadline:
            return job
        time.sleep(poll)


def list_jobs(runs_dir: str | os.PathLike[str]) -> list[runs.RunInfo]:
    """Every run with a refreshed job record, oldest first."""
    out = []
    for r in runs.list_runs(runs_dir):
        r.job = refresh(r.job)
        out.append(r)
    return out
