"""Write files and folders under a temporary name and rename them into place when complete."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

TMP_SUFFIX = ".tmp"


def tmp_path_for(path: str | os.PathLike[str]) -> Path:
    """The temporary name a file or folder is written under before its rename."""
    p = Path(path)
    return p.with_name(p.name + TMP_SUFFIX)


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """Flush a directory entry (after a rename) where the platform allows it."""
    with contextlib.suppress(OSError):
        fd = os.open(str(path), os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


OLD_SUFFIX = ".old"


def old_path_for(path: str | os.PathLike[str]) -> Path:
    """Where a folder swap parks the previous copy while the new one moves in."""
    p = Path(path)
    return p.with_name(p.name + OLD_SUFFIX)


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move ``src`` onto ``dst`` atomically (a folder ``dst`` is parked as ``dst.old`` first).

    A kill inside a folder swap leaves ``dst.old``; :func:`recover_swap` undoes or finishes it.
    """
    src, dst = Path(src), Path(dst)
    if src.is_symlink():
        raise OSError(f"{src} is a symbolic link: refusing to move it into place as {dst.name}")
    if dst.is_dir() and not dst.is_symlink():
        old = old_path_for(dst)
        remove(old)
        os.replace(dst, old)
        os.replace(src, dst)
        fsync_dir(dst.parent)
        remove(old)
    else:
        os.replace(src, dst)
    fsync_dir(dst.parent)


def recover_swap(path: str | os.PathLike[str]) -> str | None:
    """Repair what a killed folder swap left: restore ``path.old`` when ``path`` is gone, else
    remove it. Returns a one-line notice of what was done, or None when there was nothing."""
    final = Path(path)
    old = old_path_for(final)
    if not old.exists() and not old.is_symlink():
        return None
    if old.is_symlink() or not old.is_dir():
        remove(old)
        return f"removed {old.name}, not a folder swap's leftover"
    if not final.exists() and not final.is_symlink():
        os.replace(old, final)
        fsync_dir(final.parent)
        return f"restored {final.name} from {old.name} (a swap was interrupted)"
    remove(old)
    return f"removed {old.name}, the previous copy left by an interrupted swap"


def clear(path: str | os.PathLike[str]) -> bool:
    """Remove whatever sits at ``path`` (a symlink itself, never its target); True if something was."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        return False
    remove(p)
    return True


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary path to write; on success rename it to ``path``.

    Whatever sits at the temporary name first (a killed writer's leftover, a symlink) is removed,
    never followed. On an exception the temporary file/folder is removed and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    clear(tmp)
    try:
        yield tmp
    except BaseException:
        remove(tmp)
        raise
    replace(tmp, final)


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a file or folder if it exists (a symlink is unlinked, its target left alone)."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:  # exclusive: never through a link planted at the temporary name
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a whole text file atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write a JSON file atomically (pretty, sorted keys)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
