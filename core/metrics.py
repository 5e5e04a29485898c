"""Append-only ``metrics.jsonl``: one flushed line per log call; readers tail by byte offset.

A line looks like ``{"step": 120, "time": 1732.4, "train/loss": 3.21, "lr": 6e-4}``: ``step`` is
required and increasing, non-finite numbers are written as null, keys are ``/``-namespaced.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

try:  # orjson is a dependency; json is the fallback
    import orjson

    def _loads(b: bytes) -> Any:
        return orjson.loads(b)
except ImportError:  # pragma: no cover
    def _loads(b: bytes) -> Any:
        return json.loads(b)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return _clean(v.item())
        except (TypeError, ValueError):
            return str(v)
    return v


class MetricsWriter:
    """Append metrics lines to ``path`` (opened lazily, flushed after every line)."""

    def __init__(self, path: str | os.PathLike[str], *, start_time: float | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.t0 = start_time if start_time is not None else time.time()
        self._f = None
        self.last_step: int | None = None

    def log(self, step: int, values: dict[str, Any] | None = None, **kw: Any) -> dict[str, Any]:
        """Write one line: ``step``, seconds since start as ``time``, then the values."""
        if self.last_step is not None and step < self.last_step:
            raise ValueError(f"metrics step went back from {self.last_step} to {step}")
        row: dict[str, Any] = {"step": int(step), "time": round(time.time() - self.t0, 3)}
        for k, v in {**(values or {}), **kw}.items():
            row[k] = _clean(v)
        if self._f is None:
            self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        self._f.write(json.dumps(row, allow_nan=False) + "\n")
        self._f.flush()
        self.last_step = int(step)
        return row

    def truncate_to_step(self, step: int) -> None:
        """Drop every line with ``step`` greater than ``step`` (used on resume), and any torn tail."""
        self.close()
        if not self.path.exists():
            return
        keep = bytearray()
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    break
                try:
                    row = _loads(line)
                except ValueError:
                    continue
                if int(row.get("step", 0)) <= step:
                    keep += line
                    if "time" in row and row["time"] is not None:
                        self.t0 = time.time() - float(row["time"])
        from llmctl.core.atomic import write_bytes

        write_bytes(self.path, bytes(keep))
        self.last_step = None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class JsonlTail:
    """Read the complete lines appended to a JSONL file since the last call.

    Keeps the byte offset and a partial last line for the next read; never re-reads the file.
    A file that shrank (rewritten on resume) is read again from the start.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.offset = 0
        self._partial = b""
        self._ino: int | None = None
        self.reset = False

    def read_new(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        """Parsed new rows (undecodable lines skipped); ``reset`` tells whether it restarted."""
        self.reset = False
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return []
        if st.st_size < self.offset or (self._ino is not None and st.st_ino != self._ino):
            self.offset, self._partial, self.reset = 0, b"", True
        self._ino = st.st_ino
        if st.st_size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read() if max_bytes is None else f.read(max_bytes)
        self.offset += len(data)
        data = self._partial + data
        lines = data.split(b"\n")
        self._partial = lines.pop()
        rows = []
        for line in lines:
            if not line.strip():
                continue
            try:
                rows.append(_loads(line))
            except ValueError:
                continue
        return rows


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete rows of a metrics file."""
    return JsonlTail(path).read_new()


def iter_series(rows: list[dict[str, Any]], key: str) -> Iterator[tuple[int, float]]:
    """(step, value) pairs of one metric, skipping rows without it or with null."""
    for r in rows:
        v = r.get(key)
        if isinstance(v, int | float) and not isinstance(v, bool):
            yield int(r["step"]), float(v)
