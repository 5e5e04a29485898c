"""Run folders: ``runs/<stage>/<run_id>/`` with job.json, log.txt, metrics.jsonl and provenance.

This module owns every job-state transition: :func:`begin` writes a fresh record, then
:func:`mark_running`, :func:`finish`, :func:`mark_failed`, :func:`mark_killed` and
:func:`request_cancel` move it along :data:`TRANSITIONS` under a lock on the run folder, so the
supervisor, the CLI and a cancel never overwrite each other's fields. States are a str-valued
enum: job.json stays plain text and records written by older versions load unchanged.
"""

from __future__ import annotations

import contextlib
import enum
import fcntl
import io
import json
import os
import platform
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from llmctl.core import atomic
from llmctl.core.metrics import last_step

ENV_RUN_DIR = "LLMCTL_RUN_DIR"
JOB_FILE = "job.json"
LOG_FILE = "log.txt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"
PROVENANCE_FILE = "provenance.json"


def new_run_id() -> str:
    """A sortable, unique run id: ``YYYYmmdd-HHMMSS-xxxx``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


SHORT_ID_LEN = 17  # the longest run id the app's tables show whole


def short_run(run_id: str) -> str:
    """The run id the app shows: ``HHMMSS-xxxx`` without its date; a long id (torchrun's) cut to
    its first characters. ``llmctl jobs`` accepts either form."""
    parts = run_id.split("-")
    if len(parts) == 3 and len(parts[0]) == 8:
        return "-".join(parts[1:])
    return run_id[:SHORT_ID_LEN]


class RunRefError(LookupError):
    """A run reference that names no run, several runs, or a folder outside the workspace's runs."""


def find_run(runs_dir: str | os.PathLike[str], ref: str, infos: list[RunInfo] | None = None) -> Path:
    """The run folder ``ref`` names: a run id, ``stage/run_id``, the short id the app shows, a
    prefix of one of those that only one run has, or the path of a run folder under ``runs_dir``.

    Raises :class:`RunRefError` naming every match when ``ref`` is ambiguous, and for a path that
    is not a run folder of ``runs_dir``.
    """
    infos = list_runs(runs_dir) if infos is None else infos
    names = [(r, (r.run_id, f"{r.stage}/{r.run_id}", short_run(r.run_id))) for r in infos]
    found = [r for r, forms in names if ref in forms]
    if not found and ref:
        found = [r for r, forms in names if any(f.startswith(ref) for f in forms)]
    if len(found) == 1:
        return found[0].path
    if len(found) > 1:
        shown = ", ".join(f"{r.stage}/{r.run_id}" for r in found[:8]) + (" …" if len(found) > 8 else "")
        raise RunRefError(f"{ref!r} matches {len(found)} runs: {shown}; give more of the run id")
    p = Path(ref).expanduser()
    if p.exists():
        root = Path(runs_dir).resolve()
        real = p.resolve()
        if real.parent.parent != root or not (real / JOB_FILE).is_file():
            raise RunRefError(f"{ref} is not a run folder under {runs_dir}")
        return real
    raise RunRefError(f"no run {ref!r} under {runs_dir}")


def new_run_dir(runs_dir: str | os.PathLike[str], stage: str, run_id: str | None = None) -> Path:
    """Create and return ``runs/<stage>/<run_id>``."""
    path = Path(runs_dir) / stage / (run_id or new_run_id())
    path.mkdir(parents=True, exist_ok=False)
    return path


def current_run_dir() -> Path | None:
    """The run folder this process works in, from ``$LLMCTL_RUN_DIR``."""
    raw = os.environ.get(ENV_RUN_DIR)
    return Path(raw) if raw else None


class JobState(enum.StrEnum):
    """A job's state as job.json records it (the string is what the file holds)."""

    STARTING = "starting"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    KILLED = "killed"  # its processes died without recording an end (kill -9, a crash, a reboot)
    LOST = "lost"  # its recorded pid now belongs to another process: nothing of the job is running
    UNKNOWN = "unknown"  # no or unreadable state

    @classmethod
    def parse(cls, value: Any) -> JobState:
        """The state for a job.json value; anything unrecognised is UNKNOWN."""
        try:
            return cls(value)
        except ValueError:
            return cls.UNKNOWN

    @property
    def active(self) -> bool:
        return self in (JobState.STARTING, JobState.RUNNING)

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


ACTIVE = frozenset({JobState.STARTING, JobState.RUNNING})
TERMINAL = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.KILLED, JobState.LOST})
# the moves a recorded state may make; a fresh record (begin) may replace any
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.STARTING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLED, JobState.KILLED}),
    JobState.RUNNING: frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.KILLED}),
    JobState.UNKNOWN: frozenset(JobState) - {JobState.UNKNOWN},
}


class RunStopped(RuntimeError):
    """A run ended for a reason its message states in one line (a non-finite loss, non-finite
    weights, a checkpoint that cannot be written or read); the CLI shows it without a traceback."""


class TransitionRefused(RuntimeError):
    """A job-state change that the recorded state does not allow (e.g. done -> running)."""


def read_job(run_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The run's job.json (its ``state`` as a :class:`JobState`), or None when absent or unreadable."""
    try:
        job = json.loads((Path(run_dir) / JOB_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(job, dict):
        return None
    if "state" in job:
        job["state"] = JobState.parse(job["state"])
    return job


@contextlib.contextmanager
def _locked(run_dir: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on the run folder while a record is read, changed and written."""
    fd = os.open(str(run_dir), os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def update_job(run_dir: str | os.PathLike[str], /, **fields: Any) -> dict[str, Any]:
    """Merge fields other than ``state`` into the run's job.json (atomically, under the run's lock)."""
    if "state" in fields:
        raise ValueError("a job's state changes only through the transition functions of llmctl.core.runs")
    with _locked(run_dir):
        job = read_job(run_dir) or {}
        job.update(fields)
        atomic.write_json(Path(run_dir) / JOB_FILE, job)
    return job


def _move(run_dir: str | os.PathLike[str], to: JobState, fields: dict[str, Any]) -> dict[str, Any]:
    with _locked(run_dir):
        job = read_job(run_dir) or {}
        now = JobState.parse(job.get("state"))
        if to not in TRANSITIONS.get(now, frozenset()):
            raise TransitionRefused(f"{run_dir}: job state {now} cannot become {to}")
        job.update(fields, state=to)
        atomic.write_json(Path(run_dir) / JOB_FILE, job)
    return job


def begin(run_dir: str | os.PathLike[str], *, stage: str, command: list[str], state: JobState = JobState.STARTING,
          **fields: Any) -> dict[str, Any]:
    """Write a fresh job record (``starting`` for a job, ``running`` for a foreground run)."""
    if not state.active:
        raise ValueError(f"a job begins starting or running, not {state}")
    job = {"stage": stage, "command": list(command), "state": state, "started": time.time(),
           "run_dir": str(run_dir), **fields}
    with _locked(run_dir):
        atomic.write_json(Path(run_dir) / JOB_FILE, job)
    return job


def mark_running(run_dir: str | os.PathLike[str], **fields: Any) -> dict[str, Any]:
    """starting -> running (the supervisor has started the command: ``pid`` and its identity)."""
    return _move(run_dir, JobState.RUNNING, fields)


def finish(run_dir: str | os.PathLike[str], exit_code: int, *, cancelled: bool = False,
           **fields: Any) -> dict[str, Any]:
    """The command ended: done (exit 0), cancelled (it was asked to stop) or failed."""
    state = JobState.DONE if exit_code == 0 else (JobState.CANCELLED if cancelled else JobState.FAILED)
    return _move(run_dir, state, {"exit_code": exit_code, "ended": time.time(), **fields})


def mark_failed(run_dir: str | os.PathLike[str], error: str, **fields: Any) -> dict[str, Any]:
    """The job could not run (no command, cannot start): failed with ``error``."""
    return _move(run_dir, JobState.FAILED, {"error": error, "ended": time.time(), **fields})


def mark_killed(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """A forced cancel SIGKILLed the job."""
    return _move(run_dir, JobState.KILLED, {"ended": time.time()})


def request_cancel(run_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Record that a graceful stop was asked for (the job's screen shows "stopping…")."""
    return update_job(run_dir, cancel_requested=time.time())


def record_max_steps(run_dir: str | os.PathLike[str], max_steps: int) -> None:
    """The trainer's own step budget, so progress reads ``k/N`` without guessing from the command line.

    Written into job.json when the run has one (a job or a foreground run), never creating it.
    """
    if (Path(run_dir) / JOB_FILE).is_file():
        update_job(run_dir, max_steps=int(max_steps))


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The git commit of the llmctl source tree, when it is a git checkout."""
    here = Path(cwd) if cwd else Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def package_versions(names: tuple[str, ...] = ("llmctl", "torch", "numpy", "h5py", "tiktoken", "riptoken",
                                               "datasets", "pyarrow", "transformers", "textual")) -> dict[str, str]:
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_provenance(run_dir: str | os.PathLike[str], *, stage: str, params: dict[str, Any],
                     seed: int | None = None, tokenizer: dict[str, Any] | None = None,
                     inputs: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    """Record what produced this run: config, seed, commit, versions, tokenizer, inputs."""
    prov = {
        "stage": stage,
        "params": params,
        "seed": seed,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "argv": sys.argv,
        "tokenizer": tokenizer,
        "inputs": inputs or {},
        "time": time.time(),
        **extra,
    }
    atomic.write_json(Path(run_dir) / PROVENANCE_FILE, prov)
    return prov


@dataclass
class RunInfo:
    """A run folder and its job record, as listed by the CLI and the TUI."""

    path: Path
    stage: str
    run_id: str
    job: dict[str, Any]

    @property
    def state(self) -> JobState:
        return JobState.parse(self.job.get("state"))


def list_runs(runs_dir: str | os.PathLike[str], stage: str | None = None) -> list[RunInfo]:
    """Every run folder (of one stage, or all), oldest first."""
    root = Path(runs_dir)
    stages = [root / stage] if stage else sorted(p for p in root.glob("*") if p.is_dir())
    out = []
    for sdir in stages:
        if not sdir.is_dir():
            continue
        for rdir in sorted(sdir.iterdir()):
            if rdir.is_dir():
                job = read_job(rdir)
                if job is not None:
                    out.append(RunInfo(rdir, sdir.name, rdir.name, job))
    out.sort(key=lambda r: (_started(r.job), r.run_id))
    return out


def recorded_max_steps(job: dict[str, Any]) -> int | None:
    """The step budget the trainer wrote into job.json (None for runs of older versions)."""
    n = job.get("max_steps")
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def run_progress(run_dir: str | os.PathLike[str], job: dict[str, Any]) -> tuple[int | None, int | None]:
    """``(last step in metrics.jsonl, max_steps)`` of a run, either None when unknown."""
    return last_step(Path(run_dir) / METRICS_FILE), recorded_max_steps(job)


def stopped_at(job: dict[str, Any], step: int | None, max_steps: int | None) -> str | None:
    """``stopped at step k/N`` for a run that ended (killed, cancelled, failed, lost) before its
    last step; None for a run that is active, done, or never logged a step."""
    state = JobState.parse(job.get("state"))
    if state.active or state is JobState.DONE or step is None:
        return None
    if max_steps is not None and step >= max_steps:
        return None
    return f"stopped at step {step}/{max_steps}" if max_steps else f"stopped at step {step}"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class _Tee(io.TextIOBase):
    """A text stream that writes to ``stream`` and copies the text (without terminal codes) to ``log``."""

    def __init__(self, stream: Any, log: Any) -> None:
        self.stream, self.log = stream, log

    def write(self, text: str) -> int:
        n = self.stream.write(text)
        plain = _ANSI.sub("", text)
        if plain:
            with contextlib.suppress(OSError, ValueError):
                self.log.write(plain)
        return n if n is not None else len(text)

    def flush(self) -> None:
        self.stream.flush()
        with contextlib.suppress(OSError, ValueError):
            self.log.flush()

    def isatty(self) -> bool:
        return self.stream.isatty()

    def fileno(self) -> int:
        return self.stream.fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self.stream, "encoding", "utf-8")

    def __getattr__(self, name: str) -> Any:  # ``buffer``, ``errors``, … of the real stream
        return getattr(self.stream, name)


class LogTee:
    """Copy this process's ``sys.stdout``/``sys.stderr`` into a run's log.txt until :meth:`close`.

    For runs that no supervisor logs (a foreground ``llmctl run``, the demo's stages): every run
    folder then has its log, which the app's Log tab and ``llmctl jobs logs`` show.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.file = open(path, "a", encoding="utf-8", errors="replace", buffering=1)  # noqa: SIM115
        self.saved = sys.stdout, sys.stderr
        sys.stdout = _Tee(sys.stdout, self.file)  # type: ignore[assignment]
        sys.stderr = _Tee(sys.stderr, self.file)  # type: ignore[assignment]

    def note(self, line: str) -> None:
        """A line for the log only (e.g. the error that ends the run, printed later by the CLI)."""
        with contextlib.suppress(OSError, ValueError):
            self.file.write(line.rstrip("\n") + "\n")

    def close(self) -> None:
        """Restore the streams and close the log."""
        if sys.stdout is not self.saved[0] and isinstance(sys.stdout, _Tee):
            sys.stdout = self.saved[0]
        if sys.stderr is not self.saved[1] and isinstance(sys.stderr, _Tee):
            sys.stderr = self.saved[1]
        self.file.close()


def _started(job: dict[str, Any]) -> float:
    t = job.get("started")
    return float(t) if isinstance(t, int | float) and not isinstance(t, bool) else 0.0
