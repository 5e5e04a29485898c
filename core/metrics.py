"""Append-only ``metrics.jsonl``: one flushed line per log call; readers tail by byte offset.

A line looks like ``{"step": 120, "time": 1732.4, "train/loss": 3.21, "lr": 6e-4}``: ``step`` is
required and increasing, non-finite numbers are written as null, keys are ``/``-namespaced.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from llmctl.core.atomic import write_bytes
from llmctl.core.closing import Closing

try:  # orjson is a dependency; json is the fallback
    import orjson

    def _loads(b: bytes) -> Any:
        return orjson.loads(b)
except ImportError:  # pragma: no cover
    def _loads(b: bytes) -> Any:
        return json.loads(b)


def json_objects(lines: Iterable[bytes]) -> tuple[list[dict[str, Any]], int]:
    """The JSON objects among ``lines`` (blank ones passed over), and how many other lines there
    were (not JSON, or JSON but not an object)."""
    rows, other = [], 0
    for line in lines:
        if not line.strip():
            continue
        try:
            row = _loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            other += 1
    return rows, other


def row_step(row: Any) -> int | None:
    """The step of a metrics line: a JSON object's integer ``step`` (``3.0`` counts), else None.

    Every reader goes through this: a line that is JSON but not an object, has no step or a
    step that is not a whole number is skipped (and counted) rather than trusted.
    """
    if not isinstance(row, dict):
        return None
    step = row.get("step")
    if isinstance(step, bool):
        return None
    if isinstance(step, int):
        return step
    if isinstance(step, float) and math.isfinite(step) and step.is_integer():
        return int(step)
    return None


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if hasattr(v, "item") and callable(v.item):  # numpy / torch scalars
        try:
            return _clean(v.item())
        except (TypeError, ValueError):
            return str(v)
    return v


class MetricsWriter(Closing):
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
                at = row_step(row)
                if at is not None and at <= step:
                    keep += line
                    if isinstance(row.get("time"), int | float):
                        self.t0 = time.time() - float(row["time"])

        write_bytes(self.path, bytes(keep))
        self.last_step = None

    def close(self) -> None:
        if self._f is not None:
            self._f.close()
            self._f = None


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
        self.skipped = 0  # lines that were not a JSON object

    def read_new(self, max_bytes: int | None = None) -> list[dict[str, Any]]:
        """Parsed new rows (lines that are not a JSON object skipped and counted in ``skipped``);
        ``reset`` tells whether it restarted."""
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
        rows, other = json_objects(lines)
        self.skipped += other
        return rows


def load_metrics(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], int]:
    """``(rows, skipped)``: every complete line with a whole-number step, and how many lines were
    not (not JSON, not an object, no step, a step that is not an integer)."""
    tail = JsonlTail(path)
    rows = []
    skipped = 0
    for row in tail.read_new():
        if row_step(row) is None:
            skipped += 1
        else:
            rows.append({**row, "step": row_step(row)})
    return rows, skipped + tail.skipped


def read_metrics(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All complete rows of a metrics file that have a step (see :func:`load_metrics`)."""
    return load_metrics(path)[0]


def last_row(path: str | os.PathLike[str], tail_bytes: int = 65536, *, with_step: bool = False) -> dict[str, Any] | None:
    """The last complete JSON object of a JSONL file (with ``with_step``, the last with a whole-number
    step), reading only its tail."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - tail_bytes))
            data = f.read()
    except OSError:
        return None
    for line in reversed(data.split(b"\n")[1 if size > tail_bytes else 0:]):
        if line.strip():
            try:
                row = _loads(line)
            except ValueError:
                continue
            if isinstance(row, dict) and (not with_step or row_step(row) is not None):
                return row
    return None


def last_step(path: str | os.PathLike[str], tail_bytes: int = 65536) -> int | None:
    """The step of the last valid line of a metrics file, reading only its tail."""
    return row_step(last_row(path, tail_bytes, with_step=True))


def iter_series(rows: list[dict[str, Any]], key: str) -> Iterator[tuple[int, float]]:
    """(step, value) pairs of one metric, skipping rows without it or with null."""
    for r in rows:
        v = r.get(key)
        step = row_step(r)
        if step is not None and isinstance(v, int | float) and not isinstance(v, bool):
            yield step, float(v)
