"""Random training windows and previews from a flat token file, without loading it into memory.

A token file is the HDF5 dataset ``tokens`` written by ``llmctl prepare pretrain`` (int32, chunked
or contiguous, uncompressed). :class:`TokenFile` maps the dataset's bytes straight from the file
with ``np.memmap``: the byte offset of each HDF5 chunk comes from ``dset.id.chunk_iter`` (or
``get_chunk_info``), of a contiguous dataset from ``dset.id.get_offset()``; reads that cross chunk
boundaries are stitched. A compressed/filtered or partly unallocated dataset falls back to h5py
reads (same results, slower). numpy only: trainers wrap the arrays into torch tensors.

:func:`get_batch_iterator` yields ``(x, y)`` int64 arrays of shape ``(batch_size, context_length)``
from random ``context_length + 1`` windows: ``y`` is ``x`` shifted by one token. Batch ``k`` depends
only on ``(seed, k)``: window ``j`` of the run (``j = (k * world_size + rank) * batch_size + i``) starts
at a SplitMix64 hash of ``(seed, j)`` modulo the number of windows, so rank ``r`` takes the ``r``-th
slice of each global batch (ranks see different windows, and the global batch does not depend on how
it is split across ranks), any step is computed directly (``start_step`` resumes exactly: a resumed
run sees the same batches) and the stream is plain integer arithmetic, the same on every numpy.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from llmctl.core.closing import Closing
from llmctl.core.data.records import open_hdf5

DATASET = "tokens"
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)


def _mix(z: np.ndarray) -> np.ndarray:
    """SplitMix64's output function on a uint64 array (wrapping arithmetic)."""
    z = (z ^ (z >> _S30)) * _M1
    z = (z ^ (z >> _S27)) * _M2
    return z ^ (z >> _S31)


def window_starts(seed: int, step: int, batch_size: int, n_windows: int, *, rank: int = 0,
                  world_size: int = 1) -> np.ndarray:
    """Start offsets (int64, in ``[0, n_windows)``) of rank ``rank``'s windows in batch ``step``."""
    base = _mix(np.array([seed % 2**64], dtype=np.uint64))[0]
    first = (step * world_size + rank) * batch_size
    j = np.arange(first + 1, first + batch_size + 1, dtype=np.uint64)
    return (_mix(base + j * _GOLDEN) % np.uint64(n_windows)).astype(np.int64)


class TokenFile(Closing):
    """A flat token array in an HDF5 file: ``len``, ``read(start, n)`` and ``attrs``."""

    def __init__(self, path: str | os.PathLike[str], dataset: str = DATASET) -> None:
        self.path = Path(path)
        self._h5 = open_hdf5(self.path)
        try:
            if dataset not in self._h5:
                raise KeyError(f"{self.path}: no dataset {dataset!r}")
            dset = self._h5[dataset]
            if dset.ndim != 1:
                raise ValueError(f"{self.path}: dataset {dataset!r} is not 1-D (shape {dset.shape})")
            self.dtype = np.dtype(dset.dtype)
            self._n = int(dset.shape[0])
            self.attrs: dict[str, Any] = {k: _attr(v) for k, v in self._h5.attrs.items()}
            self._dset = dset
            self._flat: np.ndarray | None = None  # one array over the whole dataset
            self._chunks: list[np.ndarray] = []  # or one array per chunk
            self._chunk_len = 0
            self.mode = self._map(dset)
        except BaseException:
            self._h5.close()
            raise
        if self.mode != "h5py":
            self._h5.close()
            self._dset = None

    # ---- layout ----
    def _map(self, dset: Any) -> str:
        import h5py

        if self._n == 0 or dset.compression or dset.fletcher32 or dset.scaleoffset or dset.shuffle:
            return "h5py"
        plist = dset.id.get_create_plist()
        if plist.get_nfilters() > 0:
            return "h5py"
        itemsize = self.dtype.itemsize
        layout = plist.get_layout()
        maps: dict[int, np.ndarray] = {}
        fsize = self.path.stat().st_size

        def view(byte_off: int, count: int) -> np.ndarray:
            r = byte_off % itemsize
            if r not in maps:
                maps[r] = np.memmap(self.path, dtype=self.dtype, mode="r", offset=r,
                                    shape=((fsize - r) // itemsize,))
            start = (byte_off - r) // itemsize
            return maps[r][start:start + count]

        if layout == h5py.h5d.CONTIGUOUS:
            off = dset.id.get_offset()
            if off is None:
                return "h5py"
            self._flat = view(off, self._n)
            return "memmap"
        if layout != h5py.h5d.CHUNKED:
            return "h5py"
        clen = int(dset.chunks[0])
        infos: list[Any] = []
        if hasattr(dset.id, "chunk_iter"):
            dset.id.chunk_iter(infos.append)
        else:  # older HDF5
            infos = [dset.id.get_chunk_info(i) for i in range(dset.id.get_num_chunks())]
        need = -(-self._n // clen)
        by_index = {}
        for info in infos:
            if info.filter_mask != 0 or info.byte_offset is None or info.size != clen * itemsize:
                return "h5py"
            by_index[info.chunk_offset[0] // clen] = info.byte_offset
        if any(i not in by_index for i in range(need)):
            return "h5py"  # a hole: let h5py supply the fill value
        offs = [by_index[i] for i in range(need)]
        chunk_bytes = clen * itemsize
        if all(offs[i] == offs[0] + i * chunk_bytes for i in range(need)):
            self._flat = view(offs[0], self._n)  # chunks lie back to back in the file
            return "memmap"
        self._chunk_len = clen
        self._chunks = [view(o, clen) for o in offs]
        return "memmap-chunks"

    # ---- reading ----
    def __len__(self) -> int:
        return self._n

    def read_into(self, start: int, out: np.ndarray) -> None:
        """Fill ``out`` with tokens ``start : start + len(out)`` (must lie inside the file)."""
        n = len(out)
        if start < 0 or start + n > self._n:
            raise IndexError(f"tokens {start}:{start + n} outside 0:{self._n}")
        if self._flat is not None:
            out[:] = self._flat[start:start + n]
        elif self._chunks:
            clen, done, pos = self._chunk_len, 0, start
            while done < n:
                c, off = divmod(pos, clen)
                take = min(n - done, clen - off)
                out[done:done + take] = self._chunks[c][off:off + take]
                done += take
                pos += take
        else:
            out[:] = self._dset[start:start + n]

    def read(self, start: int, n: int) -> np.ndarray:
        """A copy of up to ``n`` tokens from ``start`` (clipped to the file)."""
        start = max(0, min(int(start), self._n))
        n = max(0, min(int(n), self._n - start))
        out = np.empty(n, dtype=self.dtype)
        self.read_into(start, out)
        return out

    def close(self) -> None:
        if self._dset is not None:
            self._h5.close()
            self._dset = None
        self._flat, self._chunks = None, []


def _attr(v: Any) -> Any:
    if isinstance(v, bytes):
        v = v.decode("utf-8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


class BatchIterator:
    """Infinite ``(x, y)`` batches of random windows; ``step`` is the index of the next batch."""

    def __init__(self, path: str | os.PathLike[str], context_length: int, batch_size: int, seed: int, *,
                 rank: int = 0, world_size: int = 1, start_step: int = 0) -> None:
        if context_length < 1 or batch_size < 1:
            raise ValueError("context_length and batch_size must be >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world_size {world_size}")
        self.file = TokenFile(path)
        if len(self.file) < context_length + 1:
            n = len(self.file)
            self.file.close()
            raise ValueError(f"{path}: {n} tokens, fewer than one window of {context_length + 1}")
        self.T, self.B, self.seed = context_length, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.step = start_step
        self._buf = np.empty((batch_size, context_length + 1), dtype=self.file.dtype)

    def starts(self, step: int) -> np.ndarray:
        """The window starts of this rank's share of batch ``step``."""
        return window_starts(self.seed, step, self.B, len(self.file) - self.T, rank=self.rank,
                             world_size=self.world_size)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        return self

    def __next__(self) -> tuple[np.ndarray, np.ndarray]:
        buf = self._buf
        for i, s in enumerate(self.starts(self.step)):
            self.file.read_into(int(s), buf[i])
        self.step += 1
        return buf[:, :-1].astype(np.int64), buf[:, 1:].astype(np.int64)

    def close(self) -> None:
        self.file.close()


def get_batch_iterator(path: str | os.PathLike[str], context_length: int, batch_size: int, seed: int, *,
                       rank: int = 0, world_size: int = 1, start_step: int = 0) -> BatchIterator:
    """Infinite iterator of int64 ``(x, y)`` arrays, ``(batch_size, context_length)`` each.

    Deterministic for ``seed``; batch ``k`` is the same whatever ``start_step`` the iterator began
    at; rank ``r`` of ``world_size`` gets its own slice of each global batch.
    """
    return BatchIterator(path, context_length, batch_size, seed, rank=rank, world_size=world_size,
                         start_step=start_step)
