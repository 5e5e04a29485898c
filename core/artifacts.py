"""Artifacts know their own status: missing, building, ready, stale or failed.

A file artifact ``X`` is written as ``X.tmp`` and renamed when complete; only then is its manifest
``X.manifest.json`` written (a folder artifact keeps ``manifest.json`` inside). While a writer works
it holds an exclusive ``flock`` on ``X.lock`` (which also records its pid, for messages): the kernel
releases it when the writer dies, so a lock is live exactly while its holder runs. Every writer
starts from an empty ``X.tmp`` (a leftover, or a symlink planted there, is removed, never followed)
unless it resumes one it can prove (``keep_tmp``). Artifacts made together are committed together
(:func:`commit_together`): ready together, or neither. A failure leaves ``X.failed.json``. So a
killed job never leaves a "ready" artifact that is half written, and a second writer of the same
artifact is refused.
A checkpoint is ready when its ``step_N/manifest.json`` exists.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import socket
import sys
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


def lock_held(lp: Path) -> bool:
    """Whether some process holds the flock on ``lp`` (a shared probe, released at once)."""
    try:
        fd = os.open(lp, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def read_lock(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The live lock on an artifact (its holder's record), or None when no process holds it."""
    lp = lock_path(path)
    if not lock_held(lp):
        return None
    for _ in range(20):  # the holder writes its record right after taking the lock
        try:
            info = json.loads(lp.read_text(encoding="utf-8"))
            if isinstance(info, dict):
                return info
        except (OSError, ValueError):
            pass
        time.sleep(0.005)
    return {"pid": "?"}


def try_lock(lp: Path, record: dict[str, Any]) -> int | None:
    """Take the exclusive flock on the lock file ``lp`` and write ``record`` into it; the open fd,
    or None when another process holds it. The lock file is created if needed, never followed."""
    while True:
        fd = os.open(lp, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        try:  # its previous holder may have unlinked it between our open and our flock
            same = os.fstat(fd).st_ino == os.stat(lp, follow_symlinks=False).st_ino
        except FileNotFoundError:
            same = False
        if same:
            data = json.dumps(record).encode()
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, data, 0)
            except OSError as e:
                release_lock(lp, fd)
                if is_disk_full(e):
                    raise disk_full_error(lp, lp, len(data)) from None
                raise
            return fd
        os.close(fd)


def remove_free_lock(lp: Path) -> bool:
    """Remove a lock file that no process holds, without a race: take it, then give it back
    (which unlinks it). False when a live process holds it."""
    fd = try_lock(lp, {"pid": os.getpid(), "host": socket.gethostname(), "stage": "clean"})
    if fd is None:
        return False
    release_lock(lp, fd)
    return True


def release_lock(lp: Path, fd: int) -> None:
    """Give a lock back: unlink its file first, so a waiter that opened it retries on a new one."""
    with contextlib.suppress(FileNotFoundError):
        lp.unlink()
    os.close(fd)


FINGERPRINT_SPAN = 1 << 20  # bytes hashed at each end of an input file


def content_hash(path: str | os.PathLike[str], span: int = FINGERPRINT_SPAN) -> str:
    """sha256 of a file's size, first ``span`` bytes and last ``span`` bytes: its identity by
    content, cheap on any size and the same for a moved or copied file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        h.update(str(size).encode() + b"\0")
        h.update(f.read(span))
        if size > span:
            f.seek(max(span, size - span))
            h.update(f.read(span))
    return h.hexdigest()[:32]


def file_fingerprint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Name, size, mtime and content hash (:func:`content_hash`) of an input file."""
    p = Path(path)
    st = p.stat()
    return {"path": str(p), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "head_tail_sha256": content_hash(p)}


def input_change(fp: dict[str, Any]) -> tuple[str, str]:
    """Compare a recorded input fingerprint with the file here: ``("", "")`` when it is the same,
    ``("changed", why)``, or ``("absent", why)`` when the file is not present on this machine
    (not a change: a workspace moved to another machine keeps its artifacts usable)."""
    p = Path(str(fp.get("path", "")))
    if not p.is_file():
        return "absent", f"input {p.name} not present here"
    st = p.stat()
    if st.st_size != fp.get("size", st.st_size):
        return "changed", f"input {p.name} changed"
    if st.st_mtime_ns == fp.get("mtime_ns"):  # untouched since it was read: no need to hash it
        return "", ""
    recorded = fp.get("head_tail_sha256")
    if recorded is not None:
        try:
            same = content_hash(p) == recorded
        except OSError:
            return "absent", f"input {p.name} not readable here"
        return ("", "") if same else ("changed", f"input {p.name} changed")
    if "mtime_ns" in fp:  # recorded before content hashes: a new mtime is all there is to go on
        return "changed", f"input {p.name} changed"
    return "", ""


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


class DiskFull(OSError):
    """A write ran out of disk (or would): names the path and the space it needs."""

    def __init__(self, message: str) -> None:
        super().__init__(errno.ENOSPC, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def free_bytes(path: str | os.PathLike[str]) -> tuple[Path, int]:
    """(the nearest existing folder at or above ``path``, bytes free to us on its disk)."""
    p = Path(path)
    while not p.exists() and p != p.parent:
        p = p.parent
    st = os.statvfs(p)
    return p, st.f_bavail * st.f_frsize


def human_bytes(n: float) -> str:
    """``1.5 MB``-style size for messages."""
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= div:
            return f"{n / div:.2f} {unit}" if unit == "GB" else f"{n / div:.1f} {unit}"
    return f"{n:.0f} B"


def check_free_space(path: str | os.PathLike[str], need_bytes: int, what: str) -> None:
    """Refuse to start when the disk holding ``path`` has less than ``need_bytes`` free."""
    p, free = free_bytes(path)
    if free < need_bytes:
        raise DiskFull(f"{what}: needs about {human_bytes(need_bytes)} free at {p}, "
                                     f"only {human_bytes(free)} available")


def is_disk_full(exc: BaseException | None) -> bool:
    """Whether an exception (h5py's and pyarrow's wrappers included) is a full disk."""
    while exc is not None:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(exc) or "errno = 28" in str(exc):
            return True
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return False


def disk_full_error(path: Path, tmp: Path, expect_bytes: int | None) -> DiskFull:
    """The one-line error for a write that filled the disk at ``path``."""
    where, free = free_bytes(path.parent)
    need = f"needs about {human_bytes(expect_bytes)}" if expect_bytes else "needs more space than that"
    return DiskFull(f"no space left on device writing {path} ({need}; {human_bytes(free)} free "
                                  f"at {where})" + ("" if tmp == path else f"; the partial {tmp.name} was removed"))


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


COMMIT_SUFFIX = ".commit.json"


def commit_journal(path: Path) -> Path:
    """The journal of a group commit led by the artifact at ``path``."""
    return path.with_name(path.name + COMMIT_SUFFIX)


def _journals_naming(path: Path) -> list[tuple[Path, dict[str, Any]]]:
    out = []
    for j in sorted(path.parent.glob("*" + COMMIT_SUFFIX)):
        try:
            info = json.loads(j.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if str(path) in [m.get("path") for m in info.get("members", [])]:
            out.append((j, info))
    return out


def _finish_commit(journal: Path, info: dict[str, Any], own: Path) -> str | None:
    """Roll an interrupted group commit forward (every temporary file was complete before the
    journal was written); None when another live process holds one of its artifacts."""
    fds: list[tuple[Path, int]] = []
    try:
        for m in info.get("members", []):
            mp = Path(m["path"])
            if mp == own:
                continue
            fd = try_lock(lock_path(mp), {"pid": os.getpid(), "host": socket.gethostname(), "stage": "recovery"})
            if fd is None:
                return None
            fds.append((lock_path(mp), fd))
        for m in info["members"]:
            mp, tmp = Path(m["path"]), atomic.tmp_path_for(m["path"])
            rolled = tmp.exists() and not tmp.is_symlink()
            if rolled:
                atomic.replace(tmp, mp)
            if mp.exists() and (rolled or read_manifest(mp) is None):
                atomic.write_json(manifest_path(mp), {**m["manifest"], "bytes": disk_usage(mp)})
        atomic.remove(journal)
        return "finished the interrupted commit of " + ", ".join(Path(m["path"]).name for m in info["members"])
    finally:
        for lp, fd in fds:
            release_lock(lp, fd)


def commit_together(writers: list[ArtifactWriter], details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Commit artifacts made together so they become ready together, or none does.

    ``details[i]`` holds ``counts`` and the extra manifest fields of ``writers[i]``. A journal
    listing every member is written first, then every old manifest is removed, every artifact
    renamed into place, every manifest written, and the journal removed last: while it exists no
    member reads as ready (:func:`artifact_status`), and the next writer of any member rolls it
    forward.
    """
    manifests = [w.manifest(**d) for w, d in zip(writers, details, strict=True)]
    journal = commit_journal(writers[0].path)
    atomic.write_json(journal, {"pid": os.getpid(), "members": [
        {"path": str(w.path), "manifest": m} for w, m in zip(writers, manifests, strict=True)]})
    for w in writers:
        atomic.remove(manifest_path(w.path))
    for w in writers:
        w.install()
    for w, m in zip(writers, manifests, strict=True):
        w.write_manifest(m)
    atomic.remove(journal)
    return manifests


class ArtifactWriter:
    """Write one artifact under a temporary name, holding its lock; ``commit`` makes it ready.

    ``with ArtifactWriter(path, stage=..., params=..., inputs=..., config_params=...) as w:`` write
    ``w.tmp``, then call ``w.commit(counts=...)``. Leaving the block without commit (an exception, a kill) leaves
    the previous artifact untouched and no manifest for the new one. Entering removes what a dead
    writer left (a half-done folder swap is undone, an interrupted group commit finished, a stale
    ``w.tmp`` removed); with ``keep_tmp`` a regular ``w.tmp`` is kept for the caller to resume (it
    must prove what it holds) and a failed run keeps it too, except on a full disk. ``expect_bytes``
    (settable) is the size the artifact is expected to take, named when the disk fills.
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
        expect_bytes: int | None = None,
        config_params: dict[str, Any] | None = None,
    ) -> None:
        self.path = Path(path)
        self.tmp = atomic.tmp_path_for(self.path)
        self.stage = stage
        self.params = params or {}
        self.inputs = inputs or {}
        self.config_params = config_params
        self.keep_tmp = keep_tmp
        self.job = job or os.environ.get("LLMCTL_RUN_DIR")
        self.expect_bytes = expect_bytes
        self.committed = False
        self._lock_fd: int | None = None

    def __enter__(self) -> ArtifactWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.acquire()
        try:
            self.recover()
        except BaseException:
            self._release()
            raise
        return self

    def acquire(self) -> None:
        """Take the artifact's lock, or raise ArtifactBusy naming the live holder."""
        lp = lock_path(self.path)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "stage": self.stage,
                "job": self.job, "started": time.time()}
        for _ in range(50):  # a status reader's probe holds the lock for microseconds
            fd = try_lock(lp, info)
            if fd is not None:
                self._lock_fd = fd
                return
            holder = read_lock(self.path)
            if holder is not None and holder.get("pid") != "?" and holder.get("stage") != "recovery":
                break
            time.sleep(0.01)
        holder = read_lock(self.path) or {}
        raise ArtifactBusy(
            f"{self.path.name} is being written by pid {holder.get('pid', '?')} "
            f"(stage {holder.get('stage')}, job {holder.get('job') or '-'}); wait for it or cancel that job")

    def recover(self) -> None:
        """Under the lock: repair what a killed writer left (see the class doc)."""
        note = atomic.recover_swap(self.path)
        if note:
            _say(note)
        for journal, info in _journals_naming(self.path):
            note = _finish_commit(journal, info, self.path)
            if note:
                _say(note)
        if self.tmp.is_symlink() or (self.tmp.exists() and not self.keep_tmp):
            what = "a symbolic link" if self.tmp.is_symlink() else "the leftover of an earlier run"
            atomic.remove(self.tmp)
            _say(f"removed {self.tmp.name}, {what}")

    def reserve(self, nbytes: int) -> None:
        """Before writing ``nbytes`` (about): remember the size, and raise DiskFull naming the
        path and the space needed when the disk cannot hold it (with 5% and 16 kB to spare)."""
        self.expect_bytes = nbytes
        need = int(nbytes * 1.05) + (16 << 10)
        where, free = free_bytes(self.path.parent)
        if free < need:
            raise DiskFull(f"{self.stage}: {self.path} needs about {human_bytes(need)}, "
                                         f"only {human_bytes(free)} free at {where}")

    def manifest(self, counts: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """The manifest this artifact gets when committed (``bytes`` is added on install)."""
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
        if self.config_params is not None:  # the stage's llmctl.toml values: what staleness compares
            manifest["config_params"] = self.config_params
        return manifest

    def install(self) -> None:
        """Rename the finished temporary output into place (its manifest comes next)."""
        if self.tmp.is_symlink():
            raise OSError(f"{self.tmp} is a symbolic link: refusing to make it {self.path.name}")
        if not self.tmp.is_dir():
            atomic.remove(manifest_path(self.path))
        atomic.replace(self.tmp, self.path)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """Write the manifest of the installed artifact (with its size on disk)."""
        manifest["bytes"] = disk_usage(self.path)
        atomic.write_json(manifest_path(self.path), manifest)
        atomic.remove(failed_path(self.path))
        self.committed = True

    def commit(self, counts: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
        """Rename the finished temporary output into place and write its manifest (through a
        journal, so a kill in between is finished by the next writer: :func:`commit_together`)."""
        return commit_together([self], [{"counts": counts, **extra}])[0]

    def _release(self) -> None:
        if self._lock_fd is not None:
            release_lock(lock_path(self.path), self._lock_fd)
            self._lock_fd = None

    def __exit__(self, exc_type, exc, tb) -> None:
        full = is_disk_full(exc)
        try:
            if not self.committed:
                if not self.keep_tmp or full:  # a partial file must not keep a full disk full
                    atomic.remove(self.tmp)
                if exc is not None:
                    reason = f"{exc_type.__name__}: {exc}" if exc_type is not KeyboardInterrupt else "interrupted"
                    with contextlib.suppress(OSError):
                        atomic.write_json(failed_path(self.path), {
                            "stage": self.stage, "error": reason, "time": time.time(), "job": self.job,
                            "partial": str(self.tmp) if self.tmp.exists() else None,
                        })
        finally:
            self._release()
        if full and not isinstance(exc, DiskFull):
            raise disk_full_error(self.path, self.tmp, self.expect_bytes) from exc


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
    if man is not None and _journals_naming(p):  # ready only once its whole group is
        man = None
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
        if _journals_naming(p):
            st.reason = "its group commit was interrupted; the next run of its stage finishes it"
    elif atomic.old_path_for(p).is_dir():
        st.state = "failed"
        st.reason = f"a swap was interrupted; the next run of its stage restores {atomic.old_path_for(p).name}"
    if lock is not None:
        st.state, st.reason = "building", f"pid {lock.get('pid')}"
    elif st.state == "missing" or (st.state == "failed" and st.reason == "incomplete: no manifest"):
        fp = failed_path(p)
        if fp.exists():
            try:
                info = json.loads(fp.read_text())
                st.state, st.reason = "failed", str(info.get("error", ""))
            except (OSError, ValueError):
                st.state = "failed"
    return st
