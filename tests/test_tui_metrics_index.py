"""Curves from metrics.jsonl: bounded-memory buckets, incremental reads by offset, sampled first look."""

from __future__ import annotations

import json
import math

import numpy as np

from llmctl.core.metrics import MetricsWriter
from llmctl.core.metrics_index import MetricsIndex, Series, _columns_arrow, _columns_orjson, sample_index


def test_series_is_exact_until_it_must_downsample():
    s = Series(buckets=16)
    s.add(np.arange(10), np.arange(10, dtype=float) * 2)
    x, y = s.points()
    assert s.exact and list(x) == list(range(10)) and list(y) == [2.0 * i for i in range(10)]
    s.add(np.arange(10, 1000), np.arange(10, 1000, dtype=float) * 2)
    x, y = s.points()
    assert not s.exact and len(x) <= 16 and s.n == 1000
    assert (s.count.sum(), s.sum.sum()) == (1000, 2.0 * sum(range(1000)))  # nothing lost, only merged
    assert np.all(np.diff(x) > 0)
    _, lo, hi = s.envelope()
    assert lo[0] == 0.0 and hi[-1] == 1998.0
    assert s.last_step == 999 and s.last_value == 1998.0


def test_series_skips_nan_and_starts_at_first_step():
    s = Series(buckets=8)
    s.add(np.array([1_000_000, 1_000_001, 1_000_002]), np.array([1.0, np.nan, 3.0]))
    x, y = s.points()
    assert list(x) == [1_000_000, 1_000_002] and list(y) == [1.0, 3.0]


def _write(path, rows):
    with open(path, "a", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def test_index_reads_only_new_lines_and_keeps_partial(tmp_path):
    p = tmp_path / "metrics.jsonl"
    w = MetricsWriter(p)
    for i in range(1, 6):
        w.log(i, {"train/loss": 5.0 - i, "lr": 1e-3})
    idx = MetricsIndex(p)
    assert idx.update() == 5 and idx.keys == ["lr", "time", "train/loss"]
    with open(p, "a") as f:
        f.write('{"step": 6, "train/loss": 0.5, "eval/loss"')  # a line being written
    assert idx.update() == 0
    with open(p, "a") as f:
        f.write(': 0.7, "note": "text", "bad": null}\n')
    assert idx.update() == 1
    assert idx.latest("eval/loss") == 0.7 and idx.latest("train/loss") == 0.5 and "note" not in idx.series
    assert idx.last_row["step"] == 6 and idx.rows == 6
    size = p.stat().st_size
    assert idx.offset == size and idx.update() == 0


def test_index_restarts_when_the_file_is_rewritten(tmp_path):
    p = tmp_path / "metrics.jsonl"
    w = MetricsWriter(p)
    for i in range(1, 21):
        w.log(i, {"train/loss": float(i)})
    idx = MetricsIndex(p)
    idx.update()
    w.truncate_to_step(10)  # a resumed run cuts its metrics back
    assert idx.update() == 10 and idx.reset
    assert idx.series["train/loss"].last_step == 10 and idx.rows == 10


def test_arrow_and_per_line_parsers_agree(tmp_path):
    rows = [{"step": i, "a": i * 0.5, **({"b": 1} if i % 3 == 0 else {}), "s": "x"} for i in range(2000)]
    data = "".join(json.dumps(r) + "\n" for r in rows).encode()
    s1, c1 = _columns_arrow(data)
    s2, c2 = _columns_orjson(data.split(b"\n"))
    assert np.array_equal(s1, s2) and set(c1) == set(c2) == {"a", "b"}
    for k in c1:
        assert np.array_equal(c1[k], c2[k], equal_nan=True)


def test_sampled_index_has_the_whole_shape(tmp_path):
    p = tmp_path / "metrics.jsonl"
    n = 200_000
    with open(p, "w") as f:
        for i in range(n):
            f.write(f'{{"step": {i}, "train/loss": {4.0 * math.exp(-i / 40000) + 0.5:.5f}}}\n')
    quick = sample_index(p, lines=2000)
    full = MetricsIndex(p)
    full.update()
    qx, qy = quick.series["train/loss"].points()
    fx, fy = full.series["train/loss"].points()
    assert quick.rows < 5000 and full.rows == n
    assert qx[0] < n * 0.01 and quick.last_step == n - 1  # from the start to the newest line
    assert np.max(np.abs(np.interp(fx, qx, qy) - fy)) < 0.05  # the same curve
