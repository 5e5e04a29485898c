"""Benchmark ``prepare sft`` on the real Alpaca / Dolly / GSM8K files against raw tokenization.

Baseline: ``Tokenizer.encode_batch`` over the same conversations' text (role markers + contents,
the text the pipeline tokenizes; EOT ids are appended, not encoded) in the same run. Measured:

- ``prepare sft`` end to end (``run``: read through ``datasets``, convert, encode, pack, write
  HDF5 + manifest), in this process
- its in-memory core: chat encoding of the loaded conversations + packing

Each is repeated, interleaved with the baseline. The machine is shared and noisy, so besides the
best time of each, the median of the per-repeat paired ratios (tokens/s against the baseline run
right before it) is printed. Usage::

    python benchmarks/bench_prepare_sft.py [--repeats 5] [--data ../shared/data]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    args = ap.parse_args()
    os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(args.data / "tokenizer" / "r50k_base.tiktoken"))
    tmp = Path(tempfile.mkdtemp(prefix="bench-sft-"))
    os.environ["HF_HOME"] = str(tmp / "hf")

    from llmctl.core import prepare_sft as ps
    from llmctl.core.chat import ROLE_MARKERS, encode_chats_flat
    from llmctl.core.packing import pack_flat
    from llmctl.core.records import ErrorPolicy
    from llmctl.core.workspace import init_workspace

    ws = init_workspace(tmp / "ws")
    tok = ws.tokenizer()
    params = ps.PrepareSFTParams(alpaca=str(args.data / "alpaca" / "alpaca_small.json"),
                                 dolly=str(args.data / "dolly" / "databricks-dolly-15k.head49.jsonl"),
                                 gsm8k=str(args.data / "gsm8k"))
    convs = []
    for name in params.sources:
        got, _ = ps.read_source(name, getattr(params, name), ErrorPolicy())
        convs += got
    texts = ["".join(ROLE_MARKERS[m["role"]] + m["content"] for m in c) for c in convs]
    n_ex = len(convs)
    raw_tokens = sum(len(t) for t in tok.encode_batch(texts))

    times: dict[str, list[float]] = {"raw": [], "core": [], "run": []}
    counts = {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        tok.encode_batch(texts)
        times["raw"].append(time.perf_counter() - t)
        t = time.perf_counter()
        ids, mask, lengths = encode_chats_flat(convs, tok)
        packed = pack_flat(ids, mask, lengths, params.seq_len, pad_id=tok.eot_id, seed=params.seed)
        times["core"].append(time.perf_counter() - t)
        t = time.perf_counter()
        counts = ps.run(ws, params)
        times["run"].append(time.perf_counter() - t)
    pipe_tokens = int(lengths.sum())

    def rate(key: str, tokens: int) -> tuple[float, float, float]:
        best = min(times[key])
        return best, n_ex / best, tokens / best

    rows = [("raw encode_batch (baseline)", "raw", raw_tokens),
            ("encode + pack (in memory)", "core", pipe_tokens),
            ("prepare sft end to end", "run", pipe_tokens)]
    base_tps = rate("raw", raw_tokens)[2]
    print(f"examples {n_ex:,} | pipeline tokens {pipe_tokens:,} (baseline text {raw_tokens:,}) | "
          f"rows {counts['rows']:,} x {params.seq_len} | packing efficiency {packed.efficiency:.2%} | "
          f"truncated {packed.truncated} | tokenizer backend {tok.backend} | cores {os.cpu_count()}")
    print(f"{'what':32} {'best s':>8} {'median s':>9} {'examples/s':>12} {'tokens/s':>12} {'best/raw':>9} "
          f"{'paired':>7}")
    for label, key, tokens in rows:
        best, eps, tps = rate(key, tokens)
        paired = statistics.median((tokens / t) / (raw_tokens / r) for t, r in zip(times[key], times["raw"], strict=True))
        print(f"{label:32} {best:8.3f} {statistics.median(times[key]):9.3f} {eps:12,.0f} {tps:12,.0f} "
              f"{tps / base_tps:9.2f} {paired:7.2f}")


if __name__ == "__main__":
    main()
