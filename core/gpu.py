"""GPU monitor: NVML initialised once, one polling thread filling a snapshot that readers take.

Every NVML field is optional: a field the driver does not support (MIG slices, WSL, containers
that see no host PIDs) is ``None`` and shown as ``n/a``, never an error. A missing driver or
library is a state (``available=False`` with the reason), not an exception. The NVML module is
injectable (``GpuPoller(nvml=...)``) so tests can stand in at exactly that boundary; by default
it is ``pynvml`` from nvidia-ml-py. Processes on a GPU are mapped to llmctl jobs by pid, process
group or parent chain, from the ``job.json`` files of the running jobs.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from llmctl.core.jobs import is_active, parent_pid
from llmctl.core.runs import list_runs

T = TypeVar("T")
HISTORY_FIELDS = ("util", "mem_pct")


@dataclass
class GpuProcess:
    """A process holding memory on a GPU, and the llmctl job it belongs to (if any)."""

    pid: int
    used_bytes: int | None = None
    name: str | None = None
    job: str | None = None  # "<stage>/<run_id>"


@dataclass
class GpuInfo:
    """One GPU's latest figures; any field may be None (unsupported)."""

    index: int
    name: str | None = None
    uuid: str | None = None
    util: float | None = None  # percent
    mem_util: float | None = None  # memory-controller percent
    mem_used: int | None = None  # bytes
    mem_total: int | None = None
    temp_c: float | None = None
    power_w: float | None = None
    power_limit_w: float | None = None
    fan_pct: float | None = None
    processes: list[GpuProcess] | None = None  # None: the driver cannot list them
    error: str | None = None

    @property
    def mem_pct(self) -> float | None:
        if self.mem_used is None or not self.mem_total:
            return None
        return 100.0 * self.mem_used / self.mem_total


@dataclass
class GpuSnapshot:
    """What the GPUs looked like at ``time``; ``available`` False carries the reason."""

    time: float
    available: bool
    reason: str = ""
    driver: str | None = None
    cuda: str | None = None
    gpus: list[GpuInfo] = field(default_factory=list)

    @property
    def status_line(self) -> str:
        if not self.available:
            return f"GPU unavailable: {self.reason}"
        return f"{len(self.gpus)} GPU(s), driver {self.driver or 'n/a'}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        for g, gd in zip(self.gpus, d["gpus"], strict=True):
            gd["mem_pct"] = g.mem_pct
        return d


def _text(v: Any) -> str | None:
    if v is None:
        return None
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _proc_name(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
            return f.read().strip() or None
    except OSError:
        return None


def active_job_pids(runs_dir: str | os.PathLike[str] | None) -> dict[int, str]:
    """``{pid or pgid: "<stage>/<run_id>"}`` for every running job under ``runs_dir``."""
    if runs_dir is None:
        return {}

    out: dict[int, str] = {}
    for r in list_runs(runs_dir):
        if not is_active(r.job):
            continue
        label = f"{r.stage}/{r.run_id}"
        for key in ("pid", "supervisor_pid", "pgid"):
            v = r.job.get(key)
            if isinstance(v, int) and v > 0:
                out[v] = label
    return out


def match_job(pid: int, job_pids: dict[int, str]) -> str | None:
    """The job a process belongs to: its pid, its process group, or an ancestor is a job's."""
    if pid in job_pids:
        return job_pids[pid]
    try:
        pgid = os.getpgid(pid)
    except (OSError, ProcessLookupError):
        pgid = None  # not visible from here (e.g. a host pid seen from a container)
    if pgid is not None and pgid in job_pids:
        return job_pids[pgid]
    cur: int | None = pid
    for _ in range(16):
        cur = parent_pid(cur) if cur else None
        if not cur or cur <= 1:
            return None
        if cur in job_pids:
            return job_pids[cur]
    return None


def gpus_in_use(snapshot: GpuSnapshot | None, runs_dir: str | os.PathLike[str] | None) -> dict[int, str]:
    """``{gpu index: job}`` for GPUs a running job uses: its recorded ``gpus`` or its processes there."""
    used: dict[int, str] = {}
    if runs_dir is not None:
        for r in list_runs(runs_dir):
            if is_active(r.job):
                for g in r.job.get("gpus") or []:
                    used.setdefault(int(g), f"{r.stage}/{r.run_id}")
    if snapshot is not None:
        for g in snapshot.gpus:
            for p in g.processes or []:
                if p.job:
                    used.setdefault(g.index, p.job)
    return used


class GpuPoller:
    """Initialise NVML once and keep the latest :class:`GpuSnapshot` (plus a short history).

    ``start()`` runs one daemon thread polling every ``interval`` seconds; ``poll_once()`` polls
    in the caller's thread (the CLI and tests). ``snapshot`` is the latest result, safe to read
    from any thread. ``nvml`` is a pynvml-like module (default: ``import pynvml``).
    """

    def __init__(self, nvml: Any = None, *, interval: float = 1.0, history: int = 60,
                 runs_dir: str | os.PathLike[str] | None = None, jobs_every: float = 5.0) -> None:
        self.interval = interval
        self.runs_dir = Path(runs_dir) if runs_dir is not None else None
        self._nvml = nvml
        self._initialised = False
        self._init_error: str | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._history: dict[tuple[int, str], deque[float]] = {}
        self._history_len = history
        self._jobs_every = jobs_every
        self._jobs_at = -1e9
        self._job_pids: dict[int, str] = {}
        self._listeners: list[Callable[[GpuSnapshot], None]] = []
        self.polls = 0
        self.snapshot = GpuSnapshot(time=0.0, available=False, reason="not polled yet")

    # -- NVML lifecycle ---------------------------------------------------------------------
    def _init(self) -> None:
        if self._initialised or self._init_error is not None:
            return
        if self._nvml is None:
            try:
                import pynvml  # nvidia-ml-py
            except ImportError as e:
                self._init_error = f"pynvml is not installed ({e})"
                return
            self._nvml = pynvml
        try:
            self._nvml.nvmlInit()
        except Exception as e:  # NVMLError_LibraryNotFound, DriverNotLoaded, NoPermission, ...
            self._init_error = str(e) or type(e).__name__
            return
        self._initialised = True

    def close(self) -> None:
        """Stop the thread and shut NVML down."""
        self.stop()
        if self._initialised:
            try:
                self._nvml.nvmlShutdown()
            except Exception:
                pass
            self._initialised = False

    # -- polling ----------------------------------------------------------------------------
    def _call(self, name: str, *args: Any) -> Any:
        fn = getattr(self._nvml, name, None)
        if fn is None:
            return None
        try:
            return fn(*args)
        except Exception:  # NotSupported, NoPermission, GPU lost, ...: this field is n/a
            return None

    def _device(self, i: int) -> GpuInfo:
        g = GpuInfo(index=i)
        try:
            h = self._nvml.nvmlDeviceGetHandleByIndex(i)
        except Exception as e:
            g.error = str(e) or type(e).__name__
            return g
        g.name = _text(self._call("nvmlDeviceGetName", h))
        g.uuid = _text(self._call("nvmlDeviceGetUUID", h))
        util = self._call("nvmlDeviceGetUtilizationRates", h)
        if util is not None:
            g.util = _num(getattr(util, "gpu", None))
            g.mem_util = _num(getattr(util, "memory", None))
        mem = self._call("nvmlDeviceGetMemoryInfo", h)
        if mem is not None:
            g.mem_used = _int(getattr(mem, "used", None))
            g.mem_total = _int(getattr(mem, "total", None))
        temp_kind = getattr(self._nvml, "NVML_TEMPERATURE_GPU", 0)
        g.temp_c = _num(self._call("nvmlDeviceGetTemperature", h, temp_kind))
        mw = _num(self._call("nvmlDeviceGetPowerUsage", h))
        g.power_w = None if mw is None else mw / 1000.0
        lim = _num(self._call("nvmlDeviceGetEnforcedPowerLimit", h))
        g.power_limit_w = None if lim is None else lim / 1000.0
        g.fan_pct = _num(self._call("nvmlDeviceGetFanSpeed", h))
        g.processes = self._processes(h)
        return g

    def _processes(self, handle: Any) -> list[GpuProcess] | None:
        seen: dict[int, GpuProcess] = {}
        listed = False
        for fn in ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetGraphicsRunningProcesses"):
            procs = self._call(fn, handle)
            if procs is None:
                continue
            listed = True
            for p in procs:
                pid = _int(getattr(p, "pid", None))
                if pid is None or pid in seen:
                    continue
                used = _int(getattr(p, "usedGpuMemory", None))
                seen[pid] = GpuProcess(pid=pid, used_bytes=used, name=_proc_name(pid),
                                       job=match_job(pid, self._job_pids))
        return list(seen.values()) if listed else None

    def poll_once(self) -> GpuSnapshot:
        """Take one sample of every GPU (initialising NVML the first time) and store it."""
        self._init()
        now = time.time()
        if self._init_error is not None:
            snap = GpuSnapshot(time=now, available=False, reason=self._init_error)
        else:
            if now - self._jobs_at >= self._jobs_every:
                try:
                    self._job_pids = active_job_pids(self.runs_dir)
                except OSError:
                    self._job_pids = {}
                self._jobs_at = now
            count = _int(self._call("nvmlDeviceGetCount"))
            if count is None:
                snap = GpuSnapshot(time=now, available=False, reason="cannot count GPUs")
            else:
                snap = GpuSnapshot(time=now, available=True,
                                   driver=_text(self._call("nvmlSystemGetDriverVersion")),
                                   cuda=_cuda_version(self._call("nvmlSystemGetCudaDriverVersion")),
                                   gpus=[self._device(i) for i in range(count)])
                if count == 0:
                    snap.available, snap.reason = False, "no GPUs found"
        with self._lock:
            for g in snap.gpus:
                for name in HISTORY_FIELDS:
                    v = getattr(g, name)
                    dq = self._history.setdefault((g.index, name), deque(maxlen=self._history_len))
                    dq.append(float(v) if v is not None else 0.0)
            self.snapshot = snap
            self.polls += 1
            listeners = list(self._listeners)
        for fn in listeners:
            fn(snap)
        return snap

    def history(self, index: int, name: str = "util") -> list[float]:
        """The recent values of ``name`` (``util`` or ``mem_pct``) for GPU ``index``, oldest first."""
        with self._lock:
            return list(self._history.get((index, name), ()))

    def add_listener(self, fn: Callable[[GpuSnapshot], None]) -> None:
        """Call ``fn(snapshot)`` from the polling thread after every poll."""
        with self._lock:
            self._listeners.append(fn)

    def remove_listener(self, fn: Callable[[GpuSnapshot], None]) -> None:
        with self._lock:
            if fn in self._listeners:
                self._listeners.remove(fn)

    # -- thread -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start the polling thread (once)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="llmctl-gpu-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                snap = self.poll_once()
            except Exception as e:  # never let the monitor thread die
                with self._lock:
                    snap = self.snapshot = GpuSnapshot(time=time.time(), available=False,
                                                       reason=f"poll failed: {e}")
            if not snap.available and self._init_error is not None:
                return  # no driver: nothing will change, stop polling
            self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive() and t is not threading.current_thread():
            t.join(timeout=2.0)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()


def _as(kind: Callable[[Any], T], v: Any) -> T | None:
    """``kind(v)`` (float or int), or None for a missing, boolean or unreadable value."""
    if v is None or isinstance(v, bool):
        return None
    try:
        return kind(v)
    except (TypeError, ValueError):
        return None


def _num(v: Any) -> float | None:
    return _as(float, v)


def _int(v: Any) -> int | None:
    return _as(int, v)


def _cuda_version(v: Any) -> str | None:
    n = _int(v)
    if not n:
        return None
    return f"{n // 1000}.{(n % 1000) // 10}"


def read_gpus(nvml: Any = None, runs_dir: str | os.PathLike[str] | None = None) -> GpuSnapshot:
    """One snapshot, NVML initialised and shut down around it (for ``llmctl gpus``)."""
    p = GpuPoller(nvml=nvml, runs_dir=runs_dir)
    try:
        return p.poll_once()
    finally:
        p.close()
