"""Torch batches for the trainers: token windows for pretraining, packed rows for SFT.

Every iterator is deterministic in (seed, global micro-batch index), sharded by rank, and can
start at any micro-batch index, so a resumed or multi-process run reads exactly the data a
single uninterrupted run would. A batch is a dict of tensors on the device: ``x``, ``y`` and, for
packed SFT rows, ``loss_mask``, ``position_ids`` and ``doc_ids``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from llmctl.core.data.records import open_hdf5

Batch = dict[str, torch.Tensor]


def _to_device(arr: np.ndarray, device: torch.device, dtype: type = np.int64) -> torch.Tensor:
    """``arr`` as a tensor on ``device``; on CUDA through pinned memory, without waiting for the copy."""
    t = torch.from_numpy(np.ascontiguousarray(arr).astype(dtype, copy=False))
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


# ---- pretraining: windows of the flat token file (core.data.token_windows) -----------------------------

def token_batches(path: str | os.PathLike[str], context_length: int, batch_size: int, seed: int,
                  device: torch.device, *, rank: int = 0, world_size: int = 1,
                  start_step: int = 0) -> Iterator[Batch]:
    """``{"x", "y"}`` (batch_size, context_length) windows of a flat token file, from ``start_step`` on."""
    from llmctl.core.data.token_windows import get_batch_iterator

    it = get_batch_iterator(path, context_length, batch_size, seed, rank=rank, world_size=world_size,
                            start_step=start_step)
    for x, y in it:
        yield {"x": _to_device(x, device), "y": _to_device(y, device)}


def fixed_token_batches(path: str | os.PathLike[str], context_length: int, batch_size: int, n_batches: int,
                        seed: int, device: torch.device, *, rank: int = 0, world_size: int = 1) -> list[Batch]:
    """The same ``n_batches`` held-out batches every call (for eval loss), this rank's share."""
    it = token_batches(path, context_length, batch_size, seed, device, rank=rank, world_size=world_size)
    return [next(it) for _ in range(n_batches)]


# ---- SFT: packed rows -------------------------------------------------------------------------------

def restart_positions(example_ids: np.ndarray) -> np.ndarray:
    """Positions that restart at 0 wherever the example id changes along each row."""
    ids = np.asarray(example_ids)
    cols = np.arange(ids.shape[-1])
    change = np.ones_like(ids, dtype=bool)
    change[..., 1:] = ids[..., 1:] != ids[..., :-1]
    starts = np.where(change, cols, 0)
    return cols - np.maximum.accumulate(starts, axis=-1)


def trained_targets(loss_mask: np.ndarray, example_ids: np.ndarray) -> np.ndarray:
    """Which targets of packed rows (B, L+1) are trained, (B, L): the target's ``loss_mask``, and
    not where the target belongs to another example than its input (or to padding)."""
    ex_in, ex_out = example_ids[:, :-1], example_ids[:, 1:]
    return (loss_mask[:, 1:] != 0) & (ex_in == ex_out) & (ex_in >= 0)


def packed_batch(tokens: np.ndarray, loss_mask: np.ndarray, example_ids: np.ndarray,
                 device: torch.device) -> Batch:
    """A training batch from packed rows (B, L+1): inputs ``[:-1]``, targets ``[1:]``.

    The loss mask is :func:`trained_targets`; positions restart per example; ``doc_ids`` keep
    attention inside each example.
    """
    x, y = tokens[:, :-1], tokens[:, 1:]
    ex_in = example_ids[:, :-1]
    return {"x": _to_device(x, device), "y": _to_device(y, device),
            "loss_mask": _to_device(trained_targets(loss_mask, example_ids), device, np.bool_),
            "position_ids": _to_device(restart_positions(ex_in), device),
            "doc_ids": _to_device(ex_in, device)}


class PackedRows:
    """Rows of ``sft_packed.h5`` (``tokens``, ``loss_mask``, ``example_ids``), cropped to ``length`` columns."""

    def __init__(self, path: str | os.PathLike[str], length: int = 0) -> None:
        self.path = Path(path)
        with open_hdf5(self.path) as f:
            for name in ("tokens", "loss_mask", "example_ids"):
                if name not in f:
                    raise KeyError(f"{self.path}: dataset {name!r} missing (rebuild with `llmctl prepare sft`)")
            self.n_rows, self.row_len = f["tokens"].shape
        self.length = min(length, self.row_len) if length else self.row_len

    def read(self, rows: np.ndarray,
             names: tuple[str, ...] = ("tokens", "loss_mask", "example_ids")) -> tuple[np.ndarray, ...]:
        """The datasets ``names`` (tokens, loss_mask, example_ids) of ``rows`` (any order, repeats allowed)."""
        import h5py

        rows = np.asarray(rows, dtype=np.int64)
        uniq, inv = np.unique(rows, return_inverse=True)
        with h5py.File(self.path, "r") as f:
            return tuple(f[name][uniq, : self.length][inv] for name in names)

    def trained_rows(self, rows: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Those of ``rows``, in order, with a trained target in their first ``length`` columns.

        Rows cropped to a short window may hold prompt tokens only; training on them adds nothing.
        """
        rows = np.asarray(rows, dtype=np.int64)
        keep = [np.zeros(0, dtype=np.int64)]
        for i in range(0, len(rows), chunk):
            part = rows[i:i + chunk]
            keep.append(part[trained_targets(*self.read(part, ("loss_mask", "example_ids"))).any(axis=1)])
        return np.concatenate(keep)


def sft_batches(rows: PackedRows, row_ids: np.ndarray, batch_size: int, seed: int, device: torch.device, *,
                rank: int = 0, world_size: int = 1, start_step: int = 0) -> Iterator[Batch]:
    """Shuffled epochs over ``row_ids``; micro-batch ``i`` takes rows ``[i*B*W + r*B, …)`` of its epoch."""
    per_step = batch_size * world_size
    steps_per_epoch = len(row_ids) // per_step
    if steps_per_epoch == 0:
        raise ValueError(f"{rows.path}: {len(row_ids)} training rows is fewer than one global batch "
                         f"({batch_size} x {world_size} processes)")
    step = start_step
    while True:
        epoch, k = divmod(step, steps_per_epoch)
        order = np.random.default_rng([seed, epoch]).permutation(row_ids)
        lo = k * per_step + rank * batch_size
        tokens, mask, ex = rows.read(order[lo:lo + batch_size])
        yield packed_batch(tokens, mask, ex, device)
        step += 1


def fixed_sft_batches(rows: PackedRows, row_ids: np.ndarray, batch_size: int, device: torch.device, *,
                      rank: int = 0, world_size: int = 1) -> list[Batch]:
    """The held-out rows in order, this rank's share, as batches."""
    mine = row_ids[rank::world_size]
    out = []
    for i in range(0, len(mine), batch_size):
        tokens, mask, ex = rows.read(mine[i:i + batch_size])
        out.append(packed_batch(tokens, mask, ex, device))
    return out
