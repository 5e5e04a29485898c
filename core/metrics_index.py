"""Fast, bounded-memory curves from a growing ``metrics.jsonl``.

:class:`MetricsIndex` reads the file incrementally by byte offset (keeping a partial last line)
and folds every numeric metric into a :class:`Series`: at most ``buckets`` buckets of steps, each
holding count / sum / min / max / last. When the steps outgrow the buckets, neighbouring buckets
merge (the bucket width doubles), so memory stays fixed however long the run, and the plotted
line (bucket means) keeps the whole curve's shape. Big chunks are parsed with pyarrow's JSON
reader (C++, releases the GIL), small ones with orjson line by line.

For a first frame on a huge file, :func:`sample_index` reads a few thousand lines at evenly
spaced byte offsets: the curve's shape immediately, refined when the full index is built.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.metrics import json_objects

CHUNK_BYTES = 4 << 20  # small chunks keep the parser's transient memory small
ARROW_MIN_BYTES = 256 << 10
SKIP_KEYS = frozenset({"step"})


class Series:
    """One metric, downsampled into at most ``buckets`` step buckets (fixed memory)."""

    def __init__(self, buckets: int = 1024) -> None:
        self.nb = buckets
        self.origin: int | None = None
        self.width = 1
        self.count = np.zeros(buckets, dtype=np.int64)
        self.sum = np.zeros(buckets)
        self.ssum = np.zeros(buckets)  # sum of steps: x of a bucket is its mean step
        self.min = np.full(buckets, np.inf)
        self.max = np.full(buckets, -np.inf)
        self.last = np.full(buckets, np.nan)
        self.n = 0
        self.last_step: int | None = None
        self.last_value: float | None = None

    def _grow(self, need: int) -> None:
        while need >= self.nb * self.width:
            half = self.nb // 2
            for name, op in (("count", np.add), ("sum", np.add), ("ssum", np.add),
                             ("min", np.minimum), ("max", np.maximum)):
                a = getattr(self, name)
                merged = op(a[0::2], a[1::2])
                a[:half] = merged
                a[half:] = 0 if op is np.add else (np.inf if op is np.minimum else -np.inf)
            last = self.last
            pair = np.where(np.isnan(last[1::2]), last[0::2], last[1::2])
            last[:half] = pair
            last[half:] = np.nan
            self.width *= 2

    def add(self, steps: np.ndarray, values: np.ndarray) -> None:
        """Fold points (steps increasing) into the buckets; NaN values are skipped."""
        ok = np.isfinite(values)
        if not ok.all():
            steps, values = steps[ok], values[ok]
        if steps.size == 0:
            return
        steps = steps.astype(np.int64, copy=False)
        if self.origin is None:
            self.origin = int(steps.min())
        if int(steps.min()) < self.origin:  # steps went back (a rewritten file): start again
            self.__init__(self.nb)  # type: ignore[misc]
            self.origin = int(steps.min())
        rel = steps - self.origin
        self._grow(int(rel.max()))
        idx = rel // self.width
        fsteps = steps.astype(np.float64)
        if idx.size > 1 and np.any(idx[1:] < idx[:-1]):  # out of order: slow but general
            np.add.at(self.count, idx, 1)
            np.add.at(self.sum, idx, values)
            np.add.at(self.ssum, idx, fsteps)
            np.minimum.at(self.min, idx, values)
            np.maximum.at(self.max, idx, values)
            self.last[idx] = values
        else:  # steps only go up: reduce each bucket's run of points at once
            starts = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
            b = idx[starts]
            self.count[b] += np.diff(np.r_[starts, idx.size])
            self.sum[b] += np.add.reduceat(values, starts)
            self.ssum[b] += np.add.reduceat(fsteps, starts)
            self.min[b] = np.minimum(self.min[b], np.minimum.reduceat(values, starts))
            self.max[b] = np.maximum(self.max[b], np.maximum.reduceat(values, starts))
            self.last[b] = values[np.r_[starts[1:], idx.size] - 1]
        self.n += int(steps.size)
        self.last_step, self.last_value = int(steps[-1]), float(values[-1])

    def points(self) -> tuple[np.ndarray, np.ndarray]:
        """(x, y): the mean step and mean value of every non-empty bucket."""
        m = self.count > 0
        c = self.count[m]
        return self.ssum[m] / c, self.sum[m] / c

    def envelope(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(x, min, max) of every non-empty bucket: the spread the means smooth over."""
        m = self.count > 0
        return self.ssum[m] / self.count[m], self.min[m], self.max[m]

    @property
    def exact(self) -> bool:
        """True while every point has its own bucket (no downsampling yet)."""
        return self.width == 1


def _columns_orjson(lines: list[bytes]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    rows = [r for r in json_objects(lines)[0] if isinstance(r.get("step"), int | float)]
    steps = np.fromiter((r["step"] for r in rows), dtype=np.int64, count=len(rows))
    keys: dict[str, None] = {}
    for r in rows:
        for k, v in r.items():
            if k not in SKIP_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                keys.setdefault(k)
    cols = {}
    nan = float("nan")
    for k in keys:
        vals = [r.get(k, nan) for r in rows]
        cols[k] = np.array([v if isinstance(v, int | float) and not isinstance(v, bool) else nan for v in vals],
                           dtype=np.float64)
    return steps, cols


def _columns_arrow(data: bytes) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    try:
        import pyarrow as pa
        import pyarrow.json as pj
    except ImportError:  # pragma: no cover
        return None
    try:
        # one thread: the UI keeps the other core, and arrow's per-thread arenas stay small
        tbl = pj.read_json(io.BytesIO(data), read_options=pj.ReadOptions(block_size=CHUNK_BYTES, use_threads=False))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None  # mixed types, torn lines, …: the per-line reader copes
    if "step" not in tbl.column_names:
        return None
    step_col = tbl.column("step")
    numeric = pa.types.is_integer(step_col.type) or pa.types.is_floating(step_col.type)
    if step_col.null_count or not numeric:
        return None
    steps = step_col.to_numpy().astype(np.int64)
    cols = {}
    for name in tbl.column_names:
        if name in SKIP_KEYS:
            continue
        col = tbl.column(name)
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t):
            cols[name] = col.cast(pa.float64()).to_numpy(zero_copy_only=False)  # nulls -> NaN
    del tbl
    pa.default_memory_pool().release_unused()
    return steps, cols


def parse_chunk(data: bytes) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Complete JSONL lines -> (steps, {metric: values with NaN where absent})."""
    if len(data) >= ARROW_MIN_BYTES:
        got = _columns_arrow(data)
        if got is not None:
            return got
    return _columns_orjson(data.split(b"\n"))


class MetricsIndex:
    """Every numeric metric of a metrics.jsonl as a bounded :class:`Series`, updated by offset."""

    def __init__(self, path: str | os.PathLike[str], buckets: int = 1024) -> None:
        self.path = Path(path)
        self.buckets = buckets
        self.offset = 0
        self._partial = b""
        self._ino: int | None = None
        self.series: dict[str, Series] = {}
        self.rows = 0
        self.last_row: dict[str, Any] = {}
        self.last_step: int | None = None
        self.reset = False

    def _clear(self) -> None:
        self.offset, self._partial, self.series, self.rows = 0, b"", {}, 0
        self.last_row, self.last_step = {}, None

    @property
    def keys(self) -> list[str]:
        return sorted(self.series)

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except OSError:
            return 0

    def update(self, max_bytes: int | None = None) -> int:
        """Fold the lines appended since the last call; returns how many rows were added."""
        self.reset = False
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return 0
        if st.st_size < self.offset or (self._ino is not None and st.st_ino != self._ino):
            self._clear()
            self.reset = True
        self._ino = st.st_ino
        added = 0
        budget = max_bytes if max_bytes is not None else st.st_size
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            while budget > 0:
                data = f.read(min(CHUNK_BYTES, budget))
                if not data:
                    break
                budget -= len(data)
                self.offset += len(data)
                data = self._partial + data
                cut = data.rfind(b"\n")
                if cut < 0:
                    self._partial = data
                    continue
                self._partial = data[cut + 1:]
                added += self._fold(data[: cut + 1])
        return added

    def _fold(self, data: bytes) -> int:
        steps, cols = parse_chunk(data)
        if steps.size == 0:
            return 0
        if self.last_step is not None and int(steps[0]) < self.last_step:
            keep = steps >= self.last_step  # ignore rows that went back in step
            steps = steps[keep]
            cols = {k: v[keep] for k, v in cols.items()}
        for k, v in cols.items():
            s = self.series.get(k)
            if s is None:
                s = self.series[k] = Series(self.buckets)
            s.add(steps, v)
        self.rows += int(steps.size)
        if steps.size:
            self.last_step = int(steps[-1])
            self.last_row = {"step": self.last_step}
            for k, v in cols.items():
                if np.isfinite(v[-1]):
                    self.last_row[k] = float(v[-1])
        return int(steps.size)

    def latest(self, key: str) -> float | None:
        """The most recent value of ``key`` (None when never logged)."""
        s = self.series.get(key)
        return None if s is None else s.last_value


def sample_index(path: str | os.PathLike[str], lines: int = 4000, buckets: int = 1024) -> MetricsIndex:
    """A quick index from ``lines`` lines read at evenly spaced byte offsets (the shape, fast)."""
    p = Path(path)
    idx = MetricsIndex(p, buckets)
    size = p.stat().st_size
    picked: list[bytes] = []
    with open(p, "rb") as f:
        tail_start = max(0, size - (64 << 10))
        step = max(1, tail_start // lines)
        pos = 0
        while pos < tail_start:
            f.seek(pos)
            if pos:
                f.readline()  # finish the line we landed in
            if f.tell() >= tail_start:
                break
            line = f.readline()
            if line.endswith(b"\n"):
                picked.append(line)
            pos += step
        f.seek(tail_start)
        if tail_start:
            f.readline()
        picked.append(f.read())  # the newest lines, exact
    idx._fold(b"".join(picked))
    return idx
