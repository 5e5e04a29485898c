"""Benchmark ``llmctl prepare pretrain`` against plain tiktoken and the naive way, on real text.

Builds a ``.jsonl.zst`` shard from /work/shared/data/pile-sample (C4 records, Wikipedia lines,
Gutenberg books and Shakespeare split into paragraphs) in a temporary folder, then measures in one
run, on the same documents:

  (a) ``prepare pretrain`` end to end (the stage runner in-process: read, decompress, parse,
      tokenize, write HDF5, manifest),
  (b) tiktoken ``encode_ordinary_batch`` over the documents already in memory (no I/O at all),
  (c) the naive way: tiktoken ``encode_ordinary`` one document at a time, the HDF5 dataset resized
      and written per document,

and prints throughput (on the 4x input, so fixed start-up costs weigh little), the ratios a/b and a/c,
and the peak RSS of (a) run in a subprocess at several input sizes (1x, 4x, 16x).
Usage: ``python benchmarks/bench_prepare_pretrain.py [--repeat 3] [--big 4] [--mem-sizes 1,4,16]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(SHARED / "tokenizer" / "r50k_base.tiktoken"))
os.environ["LLMCTL_NO_PROGRESS"] = "1"


def sample_documents() -> list[tuple[str, str]]:
    """(text, source set) of every document in pile-sample (the books split into paragraphs by
    ``prepare pretrain``'s own reader, ``--txt-docs paragraphs``)."""
    from llmctl.core.data.text_sources import expand_inputs, iter_documents

    d = SHARED / "pile-sample"
    docs = [(json.loads(line)["text"], "C4") for line in open(d / "c4_demo.jsonl", encoding="utf-8")]
    docs += [(line.rstrip("\n"), "Wikipedia") for line in open(d / "wiki_demo.txt", encoding="utf-8") if line.strip()]
    for src in expand_inputs([str(d / "*.txt")]):
        if src.label != "wiki_demo.txt":
            docs += [(t, "Gutenberg") for _, t in iter_documents(src, txt_docs="paragraphs")]
    return docs


def write_shard(path: Path, docs: list[tuple[str, str]], repeat: int) -> None:
    import zstandard

    cctx = zstandard.ZstdCompressor(level=3, write_checksum=True)
    with open(path, "wb") as raw, cctx.stream_writer(raw) as w:
        for _ in range(repeat):
            for text, name in docs:
                w.write(json.dumps({"text": text, "meta": {"pile_set_name": name}}).encode() + b"\n")


def run_prepare(ws_root: Path, shard: Path, run_dir: Path) -> dict:
    from llmctl.core.data.prepare_pretrain import PreparePretrainParams, run
    from llmctl.core.workspace import init_workspace

    ws = init_workspace(ws_root)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run(ws, PreparePretrainParams(inputs=[str(shard)]), run_dir)


def naive(path: Path, texts: list[str], enc) -> int:
    import h5py
    import numpy as np

    with h5py.File(path, "w") as f:
        d = f.create_dataset("tokens", shape=(0,), maxshape=(None,), dtype=np.int32, chunks=True)
        n = 0
        for t in texts:
            ids = enc.encode_ordinary(t) + [50256]
            d.resize((n + len(ids),))
            d[n:] = ids
            n += len(ids)
    return n


MEM_CODE = r"""
import json, sys, os
from pathlib import Path
sys.path.insert(0, {bench_dir!r})
import bench_prepare_pretrain as b
from llmctl.core.tokenizer import get_tokenizer
get_tokenizer()
import h5py, numpy, zstandard, fsspec  # noqa
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
base = status("VmRSS:")
try:
    open("/proc/self/clear_refs", "w").write("5")  # reset VmHWM to the current RSS
    reset = True
except OSError:
    reset = False
b.run_prepare(Path({ws!r}), Path({shard!r}), Path({run_dir!r}))
print(json.dumps({{"base_kb": base, "hwm_kb": status("VmHWM:"), "reset": reset}}))
"""


def peak_memory(tmp: Path, shard: Path, tag: str) -> dict:
    code = MEM_CODE.format(bench_dir=str(Path(__file__).parent), ws=str(tmp / f"ws_mem_{tag}"),
                           shard=str(shard), run_dir=str(tmp / f"run_mem_{tag}"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3, help="runs per measurement (best is kept)")
    ap.add_argument("--big", type=int, default=4,
                    help="the larger input (throughput and 2nd memory point) is this many times the sample")
    ap.add_argument("--mem-sizes", default="1,4,16", help="input sizes (multiples of the sample) for peak RSS")
    args = ap.parse_args()

    from llmctl.core.tokenizer import get_tokenizer

    tok = get_tokenizer()
    docs = sample_documents()
    texts = [t for t, _ in docs]
    nbytes = sum(len(t.encode("utf-8")) for t in texts)
    with tempfile.TemporaryDirectory(prefix="bench_prep_") as td:
        tmp = Path(td)
        shard1, shard_big = tmp / "sample_1x.jsonl.zst", tmp / f"sample_{args.big}x.jsonl.zst"
        write_shard(shard1, docs, 1)
        write_shard(shard_big, docs, args.big)
        print(f"input: {len(texts):,} documents, {nbytes / 1e6:.2f} MB of text, "
              f"{shard1.stat().st_size / 1e6:.2f} MB as .jsonl.zst; cpus: {os.cpu_count()}")

        # throughput on the big input; (a), (b) and (c) interleaved so machine load hits them alike
        counter = iter(range(1000))
        result = {}
        big_texts = texts * args.big

        def a() -> None:
            i = next(counter)
            result.update(run_prepare(tmp / "ws_a", shard_big, tmp / f"run_a{i}"))

        enc = tok.reference
        times: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        fns = {"a": a, "b": lambda: enc.encode_ordinary_batch(big_texts),
               "c": lambda: naive(tmp / "naive.h5", big_texts, enc)}
        for rep in range(args.repeat):
            for k in ("b", "a", "c") if rep == 0 else ("b", "a"):
                times[k].append(best(fns[k], 1))
        t_a, t_b, t_c = (min(times[k]) for k in "abc")
        n_tokens = result["tokens"]
        big_bytes = nbytes * args.big

        def line(name: str, t: float) -> str:
            return f"  {name:<52} {t:7.3f} s  {big_bytes / t / 1e6:7.2f} MB/s  {n_tokens / t / 1e6:6.2f} M tokens/s"

        print(f"throughput on the {args.big}x input ({big_bytes / 1e6:.1f} MB of text, {n_tokens:,} tokens; "
              f"(a), (b) best of {args.repeat}, (c) once):")
        print(line("(a) llmctl prepare pretrain, end to end", t_a))
        print(line("(b) tiktoken encode_ordinary_batch, in memory", t_b))
        print(line("(c) naive: per-document encode + HDF5 resize", t_c))
        print(f"  ratio a/b = {t_b / t_a:.2f}x   (target >= 2.0)")
        print(f"  ratio a/c = {t_c / t_a:.2f}x   (target >= 4)")

        print("peak RSS of (a) in a subprocess (VmHWM; base = after imports and tokenizer load):")
        for mult in sorted({1, args.big, *(int(x) for x in args.mem_sizes.split(",") if x)}):
            shard = {1: shard1, args.big: shard_big}.get(mult)
            if shard is None:
                shard = tmp / f"sample_{mult}x.jsonl.zst"
                write_shard(shard, docs, mult)
            m = peak_memory(tmp, shard, f"{mult}x")
            print(f"  {mult:>3}x input ({nbytes * mult / 1e6:6.1f} MB text): peak {m['hwm_kb'] / 1024:6.1f} MiB, "
                  f"base {m['base_kb'] / 1024:6.1f} MiB, growth {(m['hwm_kb'] - m['base_kb']) / 1024:6.1f} MiB"
                  + ("" if m["reset"] else " (VmHWM not resettable: peak includes startup)"))
        print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, python {platform.python_version()}")


if __name__ == "__main__":
    main()
