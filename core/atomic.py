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


def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
    """Move ``src`` onto ``dst`` atomically (a folder ``dst`` is removed first)."""
    dst = Path(dst)
    if dst.is_dir() and not dst.is_symlink():
        old = dst.with_name(dst.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    fsync_dir(dst.parent)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], *, keep_on_error: bool = False) -> Iterator[Path]:
    """Yield a temporary path to write; on success rename it to ``path``.

    On an exception the temporary file/folder is removed (or kept for a resume when
    ``keep_on_error``), and ``path`` is left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_for(final)
    try:
        yield tmp
    except BaseException:
        if not keep_on_error:
            remove(tmp)
        raise
    replace(tmp, final)


def remove(path: str | os.PathLike[str]) -> None:
    """Remove a file or folder if it exists."""
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write a whole file atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a whole text file atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Write a JSON file atomically (pretty, sorted keys)."""
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
