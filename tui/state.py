"""What the control center shows, read from the workspace (no textual here; called from workers).

``load_state`` gathers stage and artifact statuses (core/status) and every job with its progress
(last step of metrics.jsonl / max_steps from its parameters). ``TextTail`` follows a log by byte
offset. Small formatting helpers keep the widgets free of arithmetic.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.core import jobs as core_jobs
from llmctl.core import runs as core_runs
from llmctl.core.artifacts import ArtifactStatus
from llmctl.core.metrics import last_row
from llmctl.core.render import STATE_STYLE, human_bytes
from llmctl.core.status import StageStatus
from llmctl.core.workspace import Workspace

ACTIVE = tuple(core_runs.ACTIVE)
JOB_STYLE = {"done": "green", "running": "yellow", "starting": "yellow", "failed": "red", "killed": "red",
             "lost": "red", "cancelled": "magenta"}


def style_for(state: str) -> str:
    return STATE_STYLE.get(state, "") or JOB_STYLE.get(state, "")


def fmt_age(t: float | None, now: float) -> str:
    """'12s ago', '3m ago', '2h ago', '4d ago' or '-'."""
    if not t:
        return "-"
    s = max(0.0, now - t)
    for div, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= div:
            return f"{s // div:.0f}{unit} ago"
    return f"{s:.0f}s ago"


def fmt_duration(s: float | None) -> str:
    """Seconds as '42s', '3m05s', '2h04m'."""
    if s is None:
        return "-"
    s = max(0, int(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def fmt_bytes(n: float | None) -> str:
    return human_bytes(n)


def fmt_num(v: Any) -> str:
    """Numbers for people: thousands separated, small floats to 4 significant digits."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


COUNT_ORDER = ("tokens", "documents", "rows", "examples", "pairs", "checkpoints", "files")


def fmt_counts(counts: dict[str, Any], limit: int = 3) -> str:
    """The most telling counts first (tokens, documents, rows, …), as ``k v`` pairs."""
    parts = []
    ordered = [k for k in COUNT_ORDER if k in counts] + sorted(k for k in counts if k not in COUNT_ORDER)
    for k in ordered:
        v = counts[k]
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        parts.append(f"{k} {fmt_num(v)}")
        if len(parts) >= limit:
            break
    return ", ".join(parts) or "-"


short_run = core_runs.short_run  # the run id the app shows (core matches it too)


# ---- jobs ----------------------------------------------------------------------------------------

@dataclass
class JobRow:
    """A job (run folder) as the jobs table shows it."""

    run_dir: Path
    stage: str
    run_id: str
    state: str
    started: float | None = None
    ended: float | None = None
    exit_code: int | None = None
    step: int | None = None
    max_steps: int | None = None
    gpus: list[int] | None = None
    pid: int | None = None
    error: str | None = None
    command: list[str] = field(default_factory=list)
    stopped: str | None = None  # "stopped at step k/N" for a run that ended before its last step

    @property
    def key(self) -> str:
        return f"{self.stage}/{self.run_id}"

    @property
    def active(self) -> bool:
        return self.state in ACTIVE

    def elapsed(self, now: float) -> float | None:
        if not self.started:
            return None
        return (self.ended if self.ended and not self.active else now) - self.started

    @property
    def progress(self) -> float | None:
        if self.step is None or not self.max_steps:
            return None
        return min(1.0, max(0.0, self.step / self.max_steps))

    def progress_label(self) -> str:
        if self.step is None:
            return "-"
        if self.max_steps:
            return f"{self.step:,}/{self.max_steps:,} ({100 * (self.progress or 0):.0f}%)"
        return f"step {self.step:,}"

    @property
    def short_id(self) -> str:
        return short_run(self.run_id)

    def state_label(self) -> str:
        if self.exit_code is not None and self.state not in ACTIVE and self.exit_code != 0:
            return f"{self.state} ({self.exit_code})"
        return self.state


_last_rows: dict[str, tuple[tuple[int, int], dict[str, Any] | None]] = {}


def read_last_row(path: str | os.PathLike[str], tail_bytes: int = 8192) -> dict[str, Any] | None:
    """The last complete JSON row of a JSONL file, reading only its tail (cached while it is unchanged)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    sig = (st.st_size, st.st_mtime_ns)
    hit = _last_rows.get(str(path))
    if hit is not None and hit[0] == sig:
        return hit[1]
    row = last_row(path, tail_bytes)
    if len(_last_rows) > 1000:
        _last_rows.clear()
    _last_rows[str(path)] = (sig, row)
    return row


_prov_cache: dict[str, tuple[int, int | None]] = {}


def _max_steps_from(run_dir: Path, job: dict[str, Any], ws_config: dict[str, Any]) -> int | None:
    """The step budget the trainer recorded in job.json; for runs of older versions, the one in
    provenance.json's parameters, else the workspace's configured ``max_steps``."""
    recorded = job.get("max_steps")
    if isinstance(recorded, int) and not isinstance(recorded, bool) and recorded > 0:
        return recorded
    prov = run_dir / core_runs.PROVENANCE_FILE
    try:
        mt = prov.stat().st_mtime_ns
    except OSError:
        mt = None
    if mt is not None:
        cached = _prov_cache.get(str(prov))
        if cached and cached[0] == mt:
            if cached[1] is not None:
                return cached[1]
        else:
            val = None
            try:
                params = json.loads(prov.read_text(encoding="utf-8")).get("params") or {}
                for k in ("max_steps", "total_steps", "steps"):
                    if isinstance(params.get(k), int):
                        val = params[k]
                        break
            except (OSError, ValueError, AttributeError):
                pass
            _prov_cache[str(prov)] = (mt, val)
            if val is not None:
                return val
    v = ws_config.get("stages", {}).get(job.get("stage", ""), {}).get("max_steps")
    return v if isinstance(v, int) else None


def job_row(info: core_runs.RunInfo, ws_config: dict[str, Any]) -> JobRow:
    """A run folder's job record with its progress from metrics.jsonl."""
    j = info.job
    row = JobRow(info.path, info.stage, info.run_id, j.get("state", "unknown"), j.get("started"), j.get("ended"),
                 j.get("exit_code"), gpus=j.get("gpus"), pid=j.get("pid"), error=j.get("error"),
                 command=list(j.get("command") or []))
    last = read_last_row(info.path / core_runs.METRICS_FILE)
    if last is not None and isinstance(last.get("step"), int | float):
        row.step = int(last["step"])
        for k in ("max_steps", "total_steps"):
            if isinstance(last.get(k), int):
                row.max_steps = last[k]
    if row.max_steps is None:
        row.max_steps = _max_steps_from(info.path, j, ws_config)
    row.stopped = core_runs.stopped_at(j, row.step, row.max_steps)
    return row


def list_job_rows(ws: Workspace, limit: int = 200) -> list[JobRow]:
    """Running jobs first, then finished ones newest first."""
    infos = core_jobs.list_jobs(ws.runs_dir)
    rows = [job_row(i, ws.config) for i in infos[-limit:]]
    rows.sort(key=lambda r: (not r.active, -(r.started or 0)))
    return rows


# ---- the whole workspace -------------------------------------------------------------------------

@dataclass
class WorkspaceState:
    """One refresh of everything the main screen shows."""

    root: Path
    time: float
    stages: list[StageStatus] = field(default_factory=list)
    artifacts: dict[str, ArtifactStatus] = field(default_factory=dict)
    jobs: list[JobRow] = field(default_factory=list)
    error: str = ""

    @property
    def running(self) -> list[JobRow]:
        return [j for j in self.jobs if j.active]

    def stage(self, name: str) -> StageStatus | None:
        return next((s for s in self.stages if s.name == name), None)

    def job(self, key: str) -> JobRow | None:
        return next((j for j in self.jobs if j.key == key or str(j.run_dir) == key), None)


def load_state(root: str | os.PathLike[str], now: float | None = None) -> WorkspaceState:
    """Read stage, artifact and job status of the workspace (re-reading llmctl.toml)."""
    from llmctl.core.status import artifact_statuses, stage_statuses

    now = time.time() if now is None else now
    try:
        ws = Workspace.open(root, create=False)
    except Exception as e:  # a broken llmctl.toml is shown, not fatal
        return WorkspaceState(Path(root), now, error=str(e))
    st = WorkspaceState(ws.root, now)
    try:
        st.artifacts = artifact_statuses(ws)
        st.stages = stage_statuses(ws, st.artifacts)
        st.jobs = list_job_rows(ws)
    except Exception as e:
        st.error = f"{type(e).__name__}: {e}"
    return st


# ---- following a log -----------------------------------------------------------------------------

class TextTail:
    """New lines of a growing text file, by byte offset; the first read starts near the end."""

    def __init__(self, path: str | os.PathLike[str], start_tail: int = 256 << 10) -> None:
        self.path = Path(path)
        self.offset: int | None = None
        self.start_tail = start_tail
        self._partial = b""
        self.skipped = 0  # bytes not shown at the start of a long log

    def read_new(self, max_bytes: int = 4 << 20) -> list[str]:
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if self.offset is None:
            self.offset = max(0, size - self.start_tail)
            self.skipped = self.offset
        elif size < self.offset:
            self.offset, self._partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(max_bytes)
        first = self.offset == self.skipped and self.skipped > 0 and not self._partial
        self.offset += len(data)
        data = self._partial + data
        parts = data.split(b"\n")
        self._partial = parts.pop()
        if first and parts:
            parts = parts[1:]  # the first line was cut by the tail start
        out = []
        for p in parts:
            line = p.decode("utf-8", "replace")
            if "\r" in line:  # progress bars: keep what the terminal would show last
                line = [seg for seg in line.split("\r") if seg.strip()][-1:] or [""]
                line = line[0]
            out.append(line)
        return out


def run_files(run_dir: Path) -> list[tuple[str, int, float]]:
    """(relative name, bytes, mtime) of every file in a run folder."""
    out = []
    for p in sorted(run_dir.rglob("*")):
        if p.is_file():
            st = p.stat()
            out.append((str(p.relative_to(run_dir)), st.st_size, st.st_mtime))
    return out


def ready_checkpoints(ws_root: Path) -> list[Path]:
    """Every ready checkpoint step folder of the workspace, newest first."""
    from llmctl.core.artifacts import ready_checkpoints as ready

    try:
        ws = Workspace.open(ws_root, create=False)
        base = ws.checkpoints_dir
    except Exception:
        base = Path(ws_root) / "checkpoints"
    found: list[Path] = []
    if base.is_dir():
        for stage_dir in sorted(base.iterdir()):
            if stage_dir.is_dir():
                found.extend(ready(stage_dir))
    found.sort(key=lambda p: (p / "manifest.json").stat().st_mtime, reverse=True)
    return found
