"""metrics.jsonl: writer, NaN as null, resume truncation, incremental tail reader."""

from __future__ import annotations

import json

import pytest

from llmctl.core.metrics import JsonlTail, MetricsWriter, read_metrics


def test_write_and_tail(tmp_path):
    p = tmp_path / "metrics.jsonl"
    tail = JsonlTail(p)
    assert tail.read_new() == []
    w = MetricsWriter(p)
    w.log(1, {"train/loss": 3.0, "lr": 1e-3})
    w.log(2, {"train/loss": float("nan")})
    rows = tail.read_new()
    assert [r["step"] for r in rows] == [1, 2]
    assert rows[1]["train/loss"] is None and "time" in rows[0]
    assert tail.read_new() == []
    with pytest.raises(ValueError):
        w.log(1, {"x": 1})
    w.close()


def test_partial_line_kept_for_next_read(tmp_path):
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 1, "a": 1}\n{"step": 2, "a"')
    tail = JsonlTail(p)
    assert [r["step"] for r in tail.read_new()] == [1]
    with open(p, "a") as f:
        f.write(': 2}\n')
    assert tail.read_new() == [{"step": 2, "a": 2}]


def test_truncate_on_resume(tmp_path):
    p = tmp_path / "m.jsonl"
    w = MetricsWriter(p)
    for s in range(1, 11):
        w.log(s, {"train/loss": 10 - s})
    w.close()
    with open(p, "a") as f:
        f.write('{"step": 11, "tra')  # torn line of a killed run
    tail = JsonlTail(p)
    tail.read_new()
    w2 = MetricsWriter(p)
    w2.truncate_to_step(6)
    w2.log(7, {"train/loss": 0.5})
    w2.close()
    rows = read_metrics(p)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert all(json.loads(line) for line in p.read_text().splitlines())
    tail.read_new()
    assert tail.reset  # the file shrank: the reader started over
