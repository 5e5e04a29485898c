"""Artifacts know their own status: missing, building, ready, stale or failed.

A file artifact ``X`` is written as ``X.tmp`` and renamed when complete; only then is its manifest
``X.manifest.json`` written (a folder artifact keeps ``manifest.json`` inside). While a writer works
it holds ``X.lock`` (its pid); a failure leaves ``X.failed.json``. So a killed job never leaves a
"ready" artifact that is half written, and a second writer of the same artifact is refused.
A checkpoint is ready when its ``step_N/manifest.json`` exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmctl.core import atomic

MANIFEST_SUFFIX = ".manifest.json"
LOCK_SUFFIX = ".lock"
FAILED_SUFFIX = ".failed.json"

# The stage's parameters as llmctl.toml gave them (before command-line overrides), set by the CLI:
# staleness compares the config against these, so a one-off override does not read as stale.
ENV_CONFIG_PARAMS = "LLMCTL_CONFIG_PARAMS"

STATES = ("missing", "building", "ready", "stale", "failed")


class ArtifactBusy(RuntimeError):
    """Another live process is writing this artifact."""


def manifest_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    if p.is_dir() or p.suffix == "":
        return p / "manifest.json"
    return p.with_name(p.name + MANIFEST_SUFFIX)


def lock_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + LOCK_SUFFIX)


def failed_path(path: str | os.PathLike[str]) -> Path:
    p = Path(path)
    return p.with_name(p.name + FAILED_SUFFIX)


def read_manifest(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The artifact's manifest, or None when it has none (not complete)."""
    mp = manifest_path(path)
    try:
        return json.loads(mp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists (zombies count as gone)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            return f.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def read_lock(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The live lock on an artifact, or None (a lock left by a dead process is ignored)."""
    lp = lock_path(path)
    try:
        info = json.loads(lp.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if info.get("host") == socket.gethostname() and not pid_alive(int(info.get("pid", -1))):
        return None
    return info


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Name, size and mtime of an input file (cheap; enough to notice a changed input)."""
    p = Path(path)
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def sha256_file(path: str | os.PathLike[str], limit: int | None = None) -> str:
    """sha256 of a file's bytes (of its first ``limit`` bytes when given)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while True:
            n = 1 << 20 if left is None else min(1 << 20, left)
            if n == 0:
                break
            chunk = f.read(n)
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def artifact_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """A ready artifact's identity for staleness checks: the hash of its manifest."""
    mp = manifest_path(path)
    try:
        return hashlib.sha256(mp.read_bytes()).hexdigest()[:16]
    except OSError:
        return None


def disk_usage(path: str | os.PathLike[str]) -> int:
    """Bytes used by a file or folder."""
    p = Path(path)
    if p.is_file():
        return p.stat().st_size
    total = 0
    for root, _, files in os.walk(p):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total


def check_free_space(path: str | os.PathLike[str], need_bytes: int, what: str) -> None:
    """Refuse to start when the disk holding ``path`` has less than ``need_bytes`` free."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    free = os.statvfs(p).f_bavail * os.statvfs(p).f_frsize
    if free < need_bytes:
        raise OSError(
            f"{what}: needs about {need_bytes / 1e9:.2f} GB free at {p}, only {free / 1e9:.2f} GB available"
        )


class ArtifactWriter:
    """Write one artifact under a temporary name, holding its lock; ``commit`` makes it ready.

    ``with ArtifactWriter(path, stage=..., params=..., inputs=...) as w:`` write ``w.tmp``, then
    call ``w.commit(counts=...)``. Leaving the block without commit (an exception, a kill) leaves
    the previous artifact untouched and no manifest for the new one. With ``keep_tmp`` a failed
    run keeps ``w.tmp`` so a rerun can resume from it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        stage: str,
        params: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
        keep_tmp: bool = False,
        job: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.tmp = atomic.tmp_path_for(self.path)
        self.stage = stage
        self.params = params or {}
        self.inputs = inputs or {}
        self.keep_tmp = keep_tmp
        self.job = job or os.environ.get("LLMCTL_RUN_DIR")
        self.committed = False
        self._locked = False

    def __enter__(self) -> ArtifactWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.acquire()
        return self

    def acquire(self) -> None:
        lp = lock_path(self.path)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "stage": self.stage,
                "job": self.job, "started": time.time()}
        for _ in range(2):
            try:
                fd = os.open(lp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = read_lock(self.path)
                if holder is not None:
                    raise ArtifactBusy(
                        f"{self.path.name} is being written by pid {holder.get('pid')} "
                        f"(stage {holder.get('stage')}, job {holder.get('job') or '-'}); "
                        "wait for it or cancel that job"
                    ) from None
                atomic.remove(lp)  # left by a dead process
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(info, f)
            self._locked = True
            return
        raise ArtifactBusy(f"{self.path.name}: cannot take its lock {lp}")

    def commit(self, counts: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Rename the finished temporary output into place and write its manifest."""
        manifest = {
            "artifact": self.path.name,
            "stage": self.stage,
            "params": self.params,
            "inputs": self.inputs,
            "counts": counts or {},
            "created": time.time(),
            "job": self.job,
            **extra,
        }
        config_params = os.environ.get(ENV_CONFIG_PARAMS)
        if config_params:
            try:
                manifest["config_params"] = json.loads(config_params)
            except ValueError:
                pass
        old_manifest = manifest_path(self.path)
        is_dir = self.tmp.is_dir()
        if not is_dir:
            atomic.remove(old_manifest)
        atomic.replace(self.tmp, self.path)
        manifest["bytes"] = disk_usage(self.path)
        atomic.write_json(manifest_path(self.path), manifest)
        atomic.remove(failed_path(self.path))
        self.committed = True
        return manifest

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if not self.committed:
                if not self.keep_tmp:
                    atomic.remove(self.tmp)
                if exc is not None:
                    reason = f"{exc_type.__name__}: {exc}" if exc_type is not KeyboardInterrupt else "interrupted"
                    atomic.write_json(failed_path(self.path), {
                        "stage": self.stage, "error": reason, "time": time.time(), "job": self.job,
                        "partial": str(self.tmp) if self.tmp.exists() else None,
                    })
        finally:
            if self._locked:
                atomic.remove(lock_path(self.path))
                self._locked = False


@dataclass
class ArtifactStatus:
    """What ``llmctl status`` and the TUI show for one artifact."""

    name: str
    path: str
    kind: str
    stage: str
    state: str
    size: int = 0
    counts: dict[str, Any] = field(default_factory=dict)
    created: float | None = None
    reason: str = ""
    manifest: dict[str, Any] | None = None

    @property
    def age_s(self) -> float | None:
        return None if self.created is None else max(0.0, time.time() - self.created)

    def to_json(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("name", "path", "kind", "stage", "state", "size", "counts",
                                            "created", "reason")}
        d["age_s"] = self.age_s
        return d


def ready_checkpoints(stage_dir: str | os.PathLike[str]) -> list[Path]:
    """Ready ``<run>/step_N`` folders under ``checkpoints/<stage>``, oldest first by completion."""
    root = Path(stage_dir)
    found = []
    if not root.is_dir():
        return []
    for run in root.iterdir():
        if not run.is_dir():
            continue
        for step in run.glob("step_*"):
            mp = step / "manifest.json"
            if mp.is_file():
                found.append((mp.stat().st_mtime, step))
    return [p for _, p in sorted(found)]


def newest_checkpoint(stage_dir: str | os.PathLike[str]) -> Path | None:
    """The most recently completed ready checkpoint of a stage, or None."""
    ready = ready_checkpoints(stage_dir)
    return ready[-1] if ready else None


def _checkpoint_status(name: str, path: Path, kind: str, stage: str) -> ArtifactStatus:
    ready = ready_checkpoints(path)
    if not ready:
        return ArtifactStatus(name, str(path), kind, stage, "missing")
    newest = ready[-1]
    man = read_manifest(newest) or {}
    return ArtifactStatus(name, str(newest), kind, stage, "ready", size=disk_usage(newest),
                          counts={"checkpoints": len(ready), **man.get("counts", {})},
                          created=man.get("created"), manifest=man)


def _eval_status(name: str, path: Path, kind: str, stage: str) -> ArtifactStatus:
    results = sorted(path.glob("*/results.json"), key=lambda p: p.stat().st_mtime) if path.is_dir() else []
    if not results:
        return ArtifactStatus(name, str(path), kind, stage, "missing")
    newest = results[-1]
    try:
        data = json.loads(newest.read_text())
    except (OSError, ValueError):
        data = {}
    return ArtifactStatus(name, str(newest), kind, stage, "ready", size=newest.stat().st_size,
                          counts={k: v for k, v in data.items() if isinstance(v, int | float)},
                          created=newest.stat().st_mtime, manifest=data)


def artifact_status(path: str | os.PathLike[str], *, name: str = "", kind: str = "", stage: str = "",
                    expect_params: dict[str, Any] | None = None,
                    expect_inputs: dict[str, Any] | None = None) -> ArtifactStatus:
    """Status of the artifact at ``path``; stale when its recorded params/inputs differ from these."""
    p = Path(path)
    name = name or p.name
    if kind == "checkpoint":
        return _checkpoint_status(name, p, kind, stage)
    if kind == "eval":
        return _eval_status(name, p, kind, stage)
    st = ArtifactStatus(name, str(p), kind, stage, "missing")
    lock = read_lock(p)
    man = read_manifest(p) if p.exists() else None
    if man is not None:
        st.manifest = man
        st.counts = man.get("counts", {})
        st.created = man.get("created")
        st.size = man.get("bytes") or disk_usage(p)
        st.state = "ready"
        if expect_params is not None and man.get("params") != expect_params:
            changed = sorted(k for k in set(expect_params) | set(man.get("params", {}))
                             if expect_params.get(k) != man.get("params", {}).get(k))
            st.state, st.reason = "stale", "parameters changed: " + ", ".join(changed)
        elif expect_inputs is not None and man.get("inputs") != expect_inputs:
            st.state, st.reason = "stale", "inputs changed"
    elif p.exists():
        st.state, st.reason = "failed", "incomplete: no manifest"
        st.size = disk_usage(p)
    if lock is not None:
        st.state, st.reason = "building", f"pid {lock.get('pid')}"
    elif st.state in ("missing", "failed"):
        fp = failed_path(p)
        if fp.exists():
            try:
                info = json.loads(fp.read_text())
                st.state, st.reason = "failed", str(info.get("error", ""))
            except (OSError, ValueError):
                st.state = "failed"
    return st
