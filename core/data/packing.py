"""Packing tokenized examples into fixed rows without splitting any example.

Best-fit decreasing (as TRL's ``bfd`` packing and nanochat's best-fit): longest example first,
each into the open row with the least room that still fits it, else a new row. An example longer
than a row is cut to the row length first (the caller counts it). Rows are padded with EOT under
loss mask 0 and example id -1; inside a row each example has its own id (its global index), so a
trainer can restart positions and keep attention within an example.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any


def best_fit_decreasing(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Bins of example indices, each bin's lengths summing to at most ``capacity``.

    Deterministic: ties broken by index. O(n log n) searches over the open bins' free space.
    """
    if capacity <= 0:
        raise ValueError(f"capacity must be > 0, got {capacity}")
    import numpy as np

    arr = np.asarray(lengths, dtype=np.int64).reshape(-1)
    lengths = arr.tolist()
    order = np.argsort(-arr, kind="stable").tolist()  # longest first, ties by index
    bins: list[list[int]] = []
    # open bins sorted by (free space, bin index), each kept as one int: room * m + bin
    m = len(lengths) + 1
    free: list[int] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens > capacity {capacity}; truncate it first")
        if n <= 0:
            raise ValueError(f"example {i} is empty")
        k = bisect.bisect_left(free, n * m)
        if k < len(free):
            room, b = divmod(free.pop(k), m)
            bins[b].append(i)
            room -= n
        else:
            b = len(bins)
            bins.append([i])
            room = capacity - n
        if room > 0:
            bisect.insort(free, room * m + b)
    return bins


@dataclass
class Packed:
    """Packed rows as numpy arrays plus bookkeeping for the manifest."""

    tokens: Any  # int32 (rows, seq_len)
    loss_mask: Any  # uint8 (rows, seq_len)
    example_ids: Any  # int32 (rows, seq_len), -1 on padding
    example_row: Any  # int32 (examples,): the row of each example
    example_start: Any  # int32 (examples,): its first column
    example_length: Any  # int32 (examples,): its tokens after truncation
    truncated: int
    real_tokens: int

    @property
    def efficiency(self) -> float:
        """Share of real (non-padding) tokens in all rows."""
        total = self.tokens.size
        return float(self.real_tokens) / total if total else 0.0


def pack_examples(examples: Sequence[tuple[Sequence[int], Sequence[int]]], seq_len: int, *,
                  pad_id: int, seed: int | None = 0) -> Packed:
    """Pack ``(ids, mask)`` examples into rows of ``seq_len`` (see ``pack_flat``)."""
    import numpy as np

    lengths = np.fromiter((len(ids) for ids, _ in examples), dtype=np.int64, count=len(examples))
    ids = np.fromiter(chain.from_iterable(i for i, _ in examples), dtype=np.int32, count=int(lengths.sum()))
    mask = np.fromiter(chain.from_iterable(m for _, m in examples), dtype=np.uint8, count=int(lengths.sum()))
    return pack_flat(ids, mask, lengths, seq_len, pad_id=pad_id, seed=seed)


@dataclass
class _Layout:
    """Where each example goes: rows as lists of examples, and per example row / first column."""

    bins: list[list[int]]
    order: Any  # int64: example indices row by row, in column order
    per_row: Any  # int64 (rows,): examples per row
    fill: Any  # int64 (rows,): real tokens per row
    ex_row: Any  # int32 (examples,)
    ex_start: Any  # int32 (examples,)


def exclusive_cumsum(a: Any) -> Any:
    """int64 running totals before each element: ``[0, a0, a0+a1, ...]`` (same length as ``a``)."""
    import numpy as np

    out = np.zeros(len(a), dtype=np.int64)
    np.cumsum(a[:-1], out=out[1:])
    return out


def _layout(ex_len: Any, seq_len: int, seed: int | None) -> _Layout:
    """Best-fit decreasing over ``ex_len`` (each <= seq_len), rows shuffled with ``seed``."""
    import numpy as np

    bins = best_fit_decreasing(ex_len.tolist(), seq_len)
    if seed is not None:
        random.Random(seed).shuffle(bins)
    n_ex, n_rows = len(ex_len), len(bins)
    order = np.fromiter(chain.from_iterable(bins), dtype=np.int64, count=n_ex)
    per_row = np.fromiter(map(len, bins), dtype=np.int64, count=n_rows)
    lens = ex_len[order]
    before = exclusive_cumsum(lens)  # tokens before each example, row by row
    row_of = np.repeat(np.arange(n_rows, dtype=np.int64), per_row)
    ex_row = np.empty(n_ex, dtype=np.int32)
    ex_start = np.empty(n_ex, dtype=np.int32)
    ex_row[order] = row_of
    ex_start[order] = before - np.repeat(before[exclusive_cumsum(per_row)], per_row) if n_ex else before
    fill = np.bincount(row_of, weights=lens, minlength=n_rows).astype(np.int64)
    return _Layout(bins, order, per_row, fill, ex_row, ex_start)


def gather_spans(at: Any, length: Any) -> Any:
    """int64 positions of the spans ``[at[i], at[i] + length[i])`` one after another."""
    import numpy as np

    where = np.repeat(at - exclusive_cumsum(length), length)
    where += np.arange(len(where), dtype=np.int64)
    return where


def pack_flat(ids: Any, mask: Any, lengths: Any, seq_len: int, *, pad_id: int, seed: int | None = 0) -> Packed:
    """Pack examples given as flat arrays (example ``j`` is ``lengths[j]`` tokens after ``j-1``).

    Examples longer than ``seq_len`` keep their first ``seq_len`` tokens and count as truncated;
    rows are shuffled with ``seed`` (None keeps best-fit order). Example ``j``'s id is ``j``.
    """
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    return pack_spans(ids, mask, exclusive_cumsum(lengths), lengths, 1, seq_len, pad_id=pad_id, seed=seed)


def pack_spans(ids: Any, mask: Any, span_at: Any, span_len: Any, spans_per_example: int, seq_len: int, *,
               pad_id: int, seed: int | None = 0) -> Packed:
    """Pack examples made of spans of ``ids`` / ``mask``: example ``j`` is spans
    ``k*j .. k*j + k - 1`` (``k = spans_per_example``) concatenated, span ``i`` being
    ``ids[span_at[i]:span_at[i] + span_len[i]]``. Otherwise as ``pack_flat``; the rows are
    gathered from the spans in one pass, so the examples never need to be contiguous.
    """
    import numpy as np

    k = spans_per_example
    span_len = np.asarray(span_len, dtype=np.int64).reshape(-1, k)
    span_at = np.asarray(span_at, dtype=np.int64).reshape(-1, k)
    lengths = span_len.sum(axis=1)
    n_long = int((lengths > seq_len).sum())
    if n_long:  # keep each example's first seq_len tokens
        before = np.cumsum(span_len, axis=1) - span_len
        span_len = np.clip(seq_len - before, 0, span_len)
    ex_len = np.minimum(lengths, seq_len)
    lay = _layout(ex_len, seq_len, seed)
    n_rows = len(lay.bins)
    # pieces row by row: each example's spans in column order, then the row's padding, which reads
    # from seq_len pad slots appended after the ids
    row_end = np.cumsum(lay.per_row) * k
    piece_at = np.insert(span_at[lay.order].reshape(-1), row_end, len(ids))
    piece_len = np.insert(span_len[lay.order].reshape(-1), row_end, seq_len - lay.fill)
    where = gather_spans(piece_at, piece_len)
    tokens = np.concatenate([ids, np.full(seq_len, pad_id, dtype=ids.dtype)])[where].astype(np.int32, copy=False)
    loss_mask = np.concatenate([mask, np.zeros(seq_len, dtype=mask.dtype)])[where].astype(np.uint8, copy=False)
    # example ids row by row: each row's examples in column order, then -1 over its padding
    piece_id = np.insert(lay.order.astype(np.int32), row_end // k, -1)
    piece_ex_len = np.insert(ex_len[lay.order], row_end // k, seq_len - lay.fill)
    ex_ids = np.repeat(piece_id, piece_ex_len).reshape(n_rows, seq_len)
    return Packed(tokens.reshape(n_rows, seq_len), loss_mask.reshape(n_rows, seq_len), ex_ids, lay.ex_row,
                  lay.ex_start, ex_len.astype(np.int32), n_long, int(ex_len.sum()))
