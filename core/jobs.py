"""Jobs: stage commands run as detached subprocesses, each in its own run folder.

A job is ``llmctl <stage command>`` started under a small supervisor in a new process session,
its output in ``log.txt`` and its state in ``job.json``. The supervisor records the exit code even
when the command dies; closing the TUI never stops a job, and reopening re-attaches through the
run folders. ``torchrun`` wraps the same command for several processes; its workers run in
sessions of their own, so a cancel reaches them through torchrun (which forwards SIGTERM and
SIGKILLs after its shutdown timeout, 30 s by default) and a forced one kills them by pid.

A pid in job.json is trusted only while it is provably the same process: its start time (from
``/proc/PID/stat``), boot, session and command line are recorded at launch and compared before any
signal. The command runs with ``PR_SET_PDEATHSIG`` (SIGTERM), so a supervisor killed with -9 takes its
command down with it (a command that ignores SIGTERM is still found through its recorded identity).
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
from llmctl.core.runs import JobState

TERMINAL_STATES = tuple(runs.TERMINAL)

LAUNCH_GRACE_S = 60.0  # a 'starting' record with no pid yet is believed this long
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


def _stat_fields(pid: int) -> list[str] | None:
    """``/proc/PID/stat`` from field 3 (state) on, or None without it."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            return f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def process_identity(pid: int, argv: list[str] | None = None) -> dict[str, Any] | None:
    """What tells this process apart from a later one with the same pid: start time (clock ticks
    since boot), boot id, session id and command line (``argv`` when the caller just started it:
    right after exec ``/proc`` may still show none). None where ``/proc`` does not show it."""
    fields = _stat_fields(pid)
    if fields is None or len(fields) < 20:
        return None
    if argv is None:
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        argv = [c.decode("utf-8", "replace") for c in cmd if c]
    return {"start": int(fields[19]), "sid": int(fields[3]), "boot": _boot_id(), "cmdline": [str(a) for a in argv]}


def is_same_process(pid: Any, identity: Any, *, legacy_arg: str | None = None) -> bool:
    """Whether ``pid`` is alive and still the process recorded as ``identity`` (never pid 0 or 1).

    Without a recorded identity (a job.json of an older version) the process must at least have
    ``legacy_arg`` on its command line (a supervisor names its run folder); where there is no
    ``/proc`` to ask, being alive is all that can be checked.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1 or not pid_alive(pid):
        return False
    now = process_identity(pid)
    if now is None:  # no /proc (macOS): liveness is what there is
        return True
    if not isinstance(identity, dict) or not identity:
        return legacy_arg is not None and legacy_arg in now["cmdline"]
    keys = ["start", "sid", "boot"]
    if now["cmdline"] and identity.get("cmdline"):  # an exiting (or just exec'd) process shows none
        keys.append("cmdline")
    return all(identity[k] == now[k] for k in keys if k in identity)


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
    runs.begin(run_dir, stage=stage, command=argv, gpus=gpus)
    log = open(run_dir / runs.LOG_FILE, "ab")  # noqa: SIM115
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "llmctl.core.supervisor", str(run_dir)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=child_env, start_new_session=True, close_fds=True,
        )
    finally:
        log.close()
    runs.update_job(run_dir, supervisor_pid=proc.pid, pgid=proc.pid,
                    supervisor_identity=process_identity(proc.pid, proc.args))
    return run_dir


def live_processes(job: dict[str, Any]) -> list[int]:
    """The job's recorded processes (supervisor, command) that are alive and provably its own."""
    out = []
    run_dir = job.get("run_dir") if isinstance(job.get("run_dir"), str) else None
    for pid_key, id_key, legacy in (("supervisor_pid", "supervisor_identity", run_dir),
                                    ("pid", "pid_identity", None)):
        pid = job.get(pid_key)
        if pid not in out and is_same_process(pid, job.get(id_key), legacy_arg=legacy):
            out.append(pid)
    return out


def _last_sign_of_life(job: dict[str, Any]) -> float | None:
    """When the run folder was last written (its end, as near as can be told)."""
    times = []
    run_dir = job.get("run_dir")
    for name in (runs.JOB_FILE, runs.LOG_FILE, runs.METRICS_FILE):
        with contextlib.suppress(OSError, TypeError):
            times.append(os.stat(Path(run_dir) / name).st_mtime)
    return max(times) if times else None


def refresh(job: dict[str, Any]) -> dict[str, Any]:
    """A job record with its state corrected (nothing is written).

    An active record none of whose processes is alive is ``killed``; one whose pids are alive but
    belong to other processes (pid reuse after a crash or reboot, a copied workspace, a crafted
    file) is ``lost``. Either gets an ``ended`` time from the run folder's last write.
    """
    state = runs.JobState.parse(job.get("state"))
    if not state.active:
        return job
    pids = [job.get(k) for k in ("supervisor_pid", "pid")]
    started = job.get("started")
    launching = state is JobState.STARTING and not any(pids) and isinstance(started, int | float) \
        and time.time() - started < LAUNCH_GRACE_S  # the launcher is between its two writes
    if launching or live_processes(job):
        return job
    reused = any(isinstance(p, int) and not isinstance(p, bool) and p > 0 and pid_alive(p) for p in pids)
    out = {**job, "state": JobState.LOST if reused else JobState.KILLED}
    if not isinstance(job.get("ended"), int | float):
        out["ended"] = _last_sign_of_life(job)
    return out


def job_state(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The refreshed job record of a run folder."""
    return refresh(runs.read_job(run_dir) or {})


def is_active(job: dict[str, Any]) -> bool:
    """Whether the job is starting or running, checked against its live processes."""
    return runs.JobState.parse(refresh(job).get("state")).active


def parent_pid(pid: int) -> int | None:
    """The parent of ``pid`` from ``/proc`` (None when it is gone or there is no ``/proc``)."""
    fields = _stat_fields(pid)
    try:
        return int(fields[1]) if fields else None
    except (ValueError, IndexError):
        return None


def descendant_pids(pid: int) -> list[int]:
    """Every current descendant of ``pid``, parents before children, whatever their session
    (none for pid 0 or 1: the whole system descends from init)."""
    if pid <= 1:
        return []
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


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except OSError:
        return None


def _signal(pid: int, sig: int, *, group: bool) -> bool:
    try:
        (os.killpg if group else os.kill)(pid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def cancel_job(run_dir: str | os.PathLike[str], *, force: bool = False) -> bool:
    """Ask a job to stop: SIGTERM to its process group (trainers checkpoint first).

    Only processes proven to be the job's are signalled (see :func:`is_same_process`): the
    supervisor's group while the supervisor lives, the command itself too (it may have outlived a
    supervisor killed with -9). ``force`` SIGKILLs them and every descendant of each, including
    torchrun's workers, which sit in sessions of their own and would otherwise outlive their agent.
    Returns False when nothing of the job is running.
    """
    job = runs.read_job(run_dir) or {}
    if not runs.JobState.parse(job.get("state")).active:
        return False
    live = live_processes(job)
    if not live:
        return False
    if not force:
        runs.request_cancel(run_dir)
    sig = signal.SIGKILL if force else signal.SIGTERM
    # collected before the kill: once their parents die, orphans no longer point back to the job
    stray = [d for pid in live for d in descendant_pids(pid)] if force else []
    sent = False
    pgid = job.get("pgid")
    for pid in live:
        if pid == job.get("supervisor_pid") and pgid == pid:  # it leads its own session and group
            sent = _signal(pid, sig, group=True) or sent
        elif pgid not in live or _group_of(pid) != pgid:  # the group signal did not reach it
            sent = _signal(pid, sig, group=False) or sent
    for pid in stray:
        _signal(pid, signal.SIGKILL, group=False)
    if force and sent:
        with contextlib.suppress(runs.TransitionRefused):
            runs.mark_killed(run_dir)
    return sent


def wait_job(run_dir: str | os.PathLike[str], timeout: float = 60.0, poll: float = 0.1) -> dict[str, Any]:
    """Wait until the job reaches a terminal state (or ``timeout``); return its record."""
    deadline = time.monotonic() + timeout
    while True:
        job = job_state(run_dir)
        if runs.JobState.parse(job.get("state")).terminal or time.monotonic() > deadline:
            return job
        time.sleep(poll)


def list_jobs(runs_dir: str | os.PathLike[str]) -> list[runs.RunInfo]:
    """Every run with a refreshed job record, oldest first."""
    out = []
    for r in runs.list_runs(runs_dir):
        r.job = refresh(r.job)
        out.append(r)
    return out
