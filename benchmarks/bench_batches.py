"""Benchmark the batch iterator against np.memmap of a raw .bin holding the same tokens.

Tokenizes the pile-sample text (real tokens), repeats it to ``--tokens`` tokens, writes it once as
``prepare pretrain`` does (HDF5 ``tokens``, 8M-token chunks, written in blocks) and once as a raw
int32 ``.bin``, then times ``get_batch_iterator`` and a baseline that reads the very same windows
from ``np.memmap`` of the ``.bin`` (nanoGPT's way: slice each window, stack, cast to int64).
Also times h5py slicing of the same windows (the fallback for compressed files).
Usage: ``python benchmarks/bench_batches.py [--tokens 40000000] [--steps 300] [--repeat 7]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(SHARED / "tokenizer" / "r50k_base.tiktoken"))


def real_tokens(n: int) -> np.ndarray:
    from llmctl.core.data.prepare_pretrain import to_int32
    from llmctl.core.tokenizer import get_tokenizer

    tok = get_tokenizer()
    d = SHARED / "pile-sample"
    docs = [p.read_text(encoding="utf-8") for p in sorted(d.glob("*.txt"))]
    base = to_int32(tok.encode_batch(docs), tok.eot_id)
    return np.resize(base, n)  # repeats the real tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=40_000_000)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=7, help="interleaved rounds (best is kept)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--context", type=int, default=1024)
    args = ap.parse_args()

    import h5py

    from llmctl.core.data.prepare_pretrain import TokenWriter
    from llmctl.core.data.token_windows import get_batch_iterator

    toks = real_tokens(args.tokens)
    B, T = args.batch_size, args.context
    with tempfile.TemporaryDirectory(prefix="bench_batches_") as td:
        h5 = Path(td) / "tokens.h5"
        w = TokenWriter(h5)
        for part in np.array_split(toks, 10):
            w.append(part, 0)
            w.flush({})
        w.finish({})
        raw = Path(td) / "tokens.bin"
        toks.tofile(raw)
        scattered = Path(td) / "scattered.h5"  # 1M-token chunks written last-first: per-chunk maps, stitched
        with h5py.File(scattered, "w") as f:
            d = f.create_dataset("tokens", shape=(len(toks),), dtype=np.int32, chunks=(1 << 20,))
            for c in reversed(range(0, len(toks), 1 << 20)):
                d[c:c + (1 << 20)] = toks[c:c + (1 << 20)]

        it = get_batch_iterator(h5, T, B, seed=0)
        it2 = get_batch_iterator(scattered, T, B, seed=0)
        starts = [it.starts(s) for s in range(args.steps)]
        mm = np.memmap(raw, dtype=np.int32, mode="r")

        def ours() -> None:
            it.step = 0
            for _ in range(args.steps):
                next(it)

        def ours_chunks() -> None:
            it2.step = 0
            for _ in range(args.steps):
                next(it2)

        def baseline() -> None:
            for st in starts:
                buf = np.stack([mm[s:s + T + 1] for s in st])
                buf[:, :-1].astype(np.int64), buf[:, 1:].astype(np.int64)

        f = h5py.File(h5, "r")
        dset = f["tokens"]

        def h5py_reads() -> None:
            for st in starts:
                buf = np.stack([dset[s:s + T + 1] for s in st])
                buf[:, :-1].astype(np.int64), buf[:, 1:].astype(np.int64)

        it.step = 0
        x, y = next(it)
        s0 = starts[0]
        assert np.array_equal(x[0], np.asarray(mm[s0[0]:s0[0] + T])), "different windows"
        fns = {"ours": ours, f"ours, 1M-token chunks ({it2.file.mode})": ours_chunks,
               "memmap .bin": baseline, "h5py slicing": h5py_reads}
        times: dict[str, list[float]] = {name: [] for name in fns}
        for fn in fns.values():
            fn()  # warm the page cache
        for _ in range(args.repeat):  # interleaved, so machine load hits every variant alike
            for name, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        results = {name: min(ts) / args.steps for name, ts in times.items()}
        f.close()
        print(f"{args.tokens:,} real tokens ({args.tokens * 4 / 1e6:.0f} MB), batch {B} x {T + 1}, "
              f"{args.steps} batches, best of {args.repeat}; iterator mode: {it.file.mode}, "
              f"HDF5 chunks: {h5py.File(h5)['tokens'].chunks}")
        for name, t in results.items():
            print(f"  {name:<40} {t * 1e6:8.1f} us/batch  {B * T / t / 1e6:8.1f} M tokens/s")
        print(f"  ratio get_batch_iterator / memmap .bin time = {results['ours'] / results['memmap .bin']:.2f} "
              f"(1.0 = as fast as a raw memmap)")
        print(f"  ratio h5py slicing / get_batch_iterator time = {results['h5py slicing'] / results['ours']:.1f}")
        print(f"machine: {platform.machine()}, {os.cpu_count()} cpus")
        it.close()
        it2.close()


if __name__ == "__main__":
    main()
