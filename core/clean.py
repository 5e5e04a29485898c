"""Leftovers of killed writers: what a kill -9 leaves behind and no live process owns.

A checkpoint is written as ``step_N.tmp`` under ``step_N.lock`` (see
:class:`llmctl.core.artifacts.ArtifactWriter`); a killed trainer leaves both, tens of MB each time.
A leftover is *provably dead* when no process holds its lock (a kernel lock, released when its
holder dies), or when a temp has no lock at all (a writer takes the lock before it makes its temp
and drops it after).
The next run of a stage removes its own leftovers; ``llmctl clean`` lists every one and removes
them with ``--yes``.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from llmctl.core import atomic
from llmctl.core.artifacts import LOCK_SUFFIX, disk_usage, lock_held, remove_free_lock
from llmctl.core.workspace import Workspace

_STEP_TMP = re.compile(r"^(step_\d+)" + re.escape(atomic.TMP_SUFFIX) + "$")
_STEP_LOCK = re.compile(r"^(step_\d+)" + re.escape(LOCK_SUFFIX) + "$")


@dataclass
class Leftover:
    """One file or folder that can go, its size and why it is dead."""

    path: Path
    size: int
    why: str


def lock_is_dead(lock: Path) -> bool:
    """Whether no live process holds ``lock`` (its kernel lock goes when its holder dies)."""
    return lock.is_file() and not lock.is_symlink() and not lock_held(lock)


def checkpoint_leftovers(stage_dir: str | Path) -> list[Leftover]:
    """Dead ``step_N.tmp`` folders and ``step_N.lock`` files under one stage's checkpoint runs."""
    out: list[Leftover] = []
    root = Path(stage_dir)
    if not root.is_dir():
        return out
    for run in sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
        for entry in sorted(run.iterdir()):
            if (m := _STEP_TMP.match(entry.name)) and not entry.is_symlink():
                lock = run / (m.group(1) + LOCK_SUFFIX)
                if not lock.exists():
                    out.append(Leftover(entry, disk_usage(entry), "unfinished checkpoint, no writer holds it"))
                elif lock_is_dead(lock):
                    out.append(Leftover(entry, disk_usage(entry), "unfinished checkpoint of a killed run"))
            elif (m := _STEP_LOCK.match(entry.name)) and lock_is_dead(entry):
                out.append(Leftover(entry, entry.stat().st_size, "lock of a killed run"))
    return out


def data_leftovers(data_dir: str | Path) -> list[Leftover]:
    """Unfinished ``data/*.tmp`` outputs whose writer is gone (a ``prepare … --resume`` could still use some)."""
    out: list[Leftover] = []
    root = Path(data_dir)
    if not root.is_dir():
        return out
    for entry in sorted(root.glob("*" + atomic.TMP_SUFFIX)):
        if entry.is_symlink():
            continue
        lock = entry.with_name(entry.name[: -len(atomic.TMP_SUFFIX)] + LOCK_SUFFIX)
        if not lock.exists() or lock_is_dead(lock):
            out.append(Leftover(entry, disk_usage(entry), "unfinished prepare output of a killed run"))
        if lock.exists() and lock_is_dead(lock):
            out.append(Leftover(lock, lock.stat().st_size, "lock of a killed run"))
    return out


def leftovers(ws: Workspace, stage: str | None = None) -> list[Leftover]:
    """Every dead leftover of the workspace (or only one stage's checkpoints)."""
    stages = [ws.checkpoints_dir / stage] if stage else sorted(p for p in ws.checkpoints_dir.glob("*") if p.is_dir())
    out = [x for s in stages for x in checkpoint_leftovers(s)]
    if stage is None:
        out += data_leftovers(ws.data_dir)
    return out


def remove(items: list[Leftover]) -> int:
    """Delete the leftovers (temps before their locks); return the bytes freed."""
    freed = 0
    for item in sorted(items, key=lambda x: x.path.suffix == LOCK_SUFFIX):
        if item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path, ignore_errors=True)
        elif item.path.suffix == LOCK_SUFFIX:
            if not remove_free_lock(item.path):  # taken again since it was listed
                continue
        else:
            item.path.unlink(missing_ok=True)
        freed += item.size
    return freed
