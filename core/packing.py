"""Packing tokenized examples into fixed rows without splitting any example.

Best-fit decreasing (as TRL's ``bfd`` packing and nanochat's best-fit): longest example first,
each into the open row with the least room that still fits it, else a new row. An example longer
than a row is cut to the row length first (the caller counts it). Rows are padded with EOT under
loss mask 0 and example id -1; inside a row each example has its own id (its global index), so a
trainer can restart positions and keep attention within an example.
"""

from __future__ import annotations

import bisect
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
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    # open bins sorted by (free space, bin index)
    free: list[tuple[int, int]] = []
    for i in order:
        n = lengths[i]
        if n > capacity:
            raise ValueError(f"example {i} has {n} tokens > capacity {capacity}; truncate it first")
        if n <= 0:
            raise ValueError(f"example {i} is empty")
        k = bisect.bisect_left(free, (n, -1))
        if k < len(free):
            room, b = free.pop(k)
            bins[b].append(i)
            room -= n
        else:
            b = len(bins)
            bins.append([i])
            room = capacity - n
        if room > 0:
            bisect.insort(free, (room, b))
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


def pack_flat(ids: Any, mask: Any, lengths: Any, seq_len: int, *, pad_id: int, seed: int | None = 0) -> Packed:
    """Pack examples given as flat arrays (example ``j`` is ``lengths[j]`` tokens after ``j-1``).

    Examples longer than ``seq_len`` keep their first ``seq_len`` tokens and count as truncated;
    rows are shuffled with ``seed`` (None keeps best-fit order). Example ``j``'s id is ``j``.
    """
    import numpy as np

    lengths = np.asarray(lengths, dtype=np.int64)
    n_ex = len(lengths)
    src_start = np.zeros(n_ex, dtype=np.int64)
    np.cumsum(lengths[:-1], out=src_start[1:])
    ex_len = np.minimum(lengths, seq_len)
    truncated = int((lengths > seq_len).sum())
    if truncated:  # keep each example's first seq_len tokens
        pos = np.arange(len(ids), dtype=np.int64) - np.repeat(src_start, lengths)
        keep = pos < seq_len
        ids, mask = ids[keep], mask[keep]
    total = int(ex_len.sum())
    bins = best_fit_decreasing(ex_len.tolist(), seq_len)
    if seed is not None:
        import random

        random.Random(seed).shuffle(bins)
    n_rows = len(bins)
    ex_row = np.empty(n_ex, dtype=np.int32)
    ex_start = np.empty(n_ex, dtype=np.int32)
    lens = ex_len.tolist()
    for r, members in enumerate(bins):
        col = 0
        for j in members:
            ex_row[j] = r
            ex_start[j] = col
            col += lens[j]
    kept_start = np.zeros(n_ex, dtype=np.int64)
    np.cumsum(ex_len[:-1], out=kept_start[1:])
    offset = ex_row.astype(np.int64) * seq_len + ex_start - kept_start
    dest = np.repeat(offset, ex_len) + np.arange(total, dtype=np.int64)
    tokens = np.full((n_rows, seq_len), pad_id, dtype=np.int32)
    loss_mask = np.zeros((n_rows, seq_len), dtype=np.uint8)
    ex_ids = np.full((n_rows, seq_len), -1, dtype=np.int32)
    tokens.reshape(-1)[dest] = ids
    loss_mask.reshape(-1)[dest] = mask
    ex_ids.reshape(-1)[dest] = np.repeat(np.arange(n_ex, dtype=np.int32), ex_len)
    return Packed(tokens, loss_mask, ex_ids, ex_row, ex_start, ex_len.astype(np.int32), truncated, total)
