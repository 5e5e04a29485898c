"""Benchmark ``prepare sft`` on the real Alpaca / Dolly / GSM8K files against raw tokenization.

Baseline: ``Tokenizer.encode_batch`` (the riptoken backend the pipeline uses) over the same
conversations' text (role markers + contents, the text the pipeline tokenizes; EOT ids are
appended, not encoded) in the same run. A second reference row is tiktoken's own
``encode_ordinary_batch`` on the same texts (r50k_base as tiktoken ships it). Measured:

- ``encode + pack``: the stage's in-memory core (``prepare_sft.pack_conversations``: chat
  encoding of the loaded conversations, dropping examples left without targets, packing)
- ``end to end, warm``: ``run`` in this process (read through ``datasets``, convert, encode,
  pack, write HDF5 + manifest) with the ``datasets`` arrow cache of the inputs already built, as
  on a user's second run
- ``end to end, cold``: the same with an empty ``datasets`` cache (a first run: JSON parsed and
  arrow files written)
- ``read only``: reading the sources into conversations (warm cache, no tokenizer, nothing
  written): its ratio is the ceiling of the end-to-end ratio on this machine, what the stage
  would reach if encoding, packing and writing took no time at all

Each measured repeat runs right after its own baseline run (the machine is shared and noisy), so
besides the best time of each, the median of the per-repeat paired ratios (tokens/s against the
baseline run right before it) is printed; the load average is printed before and after. Usage::

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

    from llmctl.core.data import prepare_sft as ps
    from llmctl.core.data.chat import ROLE_MARKERS
    from llmctl.core.data.records import ErrorPolicy
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
    load0 = os.getloadavg()

    def core() -> object:
        return ps.pack_conversations(convs, tok, params.seq_len, params.seed)[0]

    def warm() -> dict:
        return ps.run(ws, params)

    def read() -> int:
        return sum(len(ps.read_source(name, getattr(params, name), ErrorPolicy())[0]) for name in params.sources)

    def cold() -> dict:
        os.environ["HF_DATASETS_CACHE"] = tempfile.mkdtemp(dir=tmp, prefix="cold-")
        try:
            return ps.run(ws, params)
        finally:
            os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf" / "datasets")

    os.environ["HF_DATASETS_CACHE"] = str(tmp / "hf" / "datasets")
    warm()  # build the warm cache
    measured = {"core": core, "warm": warm, "cold": cold, "read": read}
    times: dict[str, list[float]] = {k: [] for k in measured}
    base: dict[str, list[float]] = {k: [] for k in measured}
    tiktoken_times: list[float] = []
    out: dict[str, object] = {}
    for _ in range(args.repeats):
        t = time.perf_counter()
        tok.reference.encode_ordinary_batch(texts)
        tiktoken_times.append(time.perf_counter() - t)
        for key, fn in measured.items():
            t = time.perf_counter()
            tok.encode_batch(texts)
            base[key].append(time.perf_counter() - t)
            t = time.perf_counter()
            out[key] = fn()
            times[key].append(time.perf_counter() - t)
    packed, counts = out["core"], out["warm"]
    pipe_tokens = int(packed.real_tokens)
    raw_all = [r for v in base.values() for r in v]
    base_tps = raw_tokens / min(raw_all)

    print(f"examples {n_ex:,} (packed {counts['examples']:,}) | pipeline tokens {pipe_tokens:,} (baseline text "
          f"{raw_tokens:,}) | rows {counts['rows']:,} x {params.seq_len} | packing efficiency {packed.efficiency:.2%} | "
          f"truncated {packed.truncated} | tokenizer backend {tok.backend} | cores {os.cpu_count()} | "
          f"load avg {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}")
    print(f"{'what':32} {'best s':>8} {'median s':>9} {'examples/s':>12} {'tokens/s':>12} {'best/raw':>9} "
          f"{'paired':>7}")
    labels = {"core": "encode + pack (in memory)", "warm": "end to end, warm datasets cache",
              "cold": "end to end, cold datasets cache", "read": "read only (end-to-end ceiling)"}
    # (label, times, tokens, the baseline runs paired with those times or None)
    rows = [("raw encode_batch (baseline)", raw_all, raw_tokens, raw_all),
            ("tiktoken encode_ordinary_batch", tiktoken_times, raw_tokens, None),
            *[(labels[k], times[k], pipe_tokens, base[k]) for k in measured]]
    for label, ts, tokens, paired_with in rows:
        best = min(ts)
        paired = "-"
        if paired_with is not None:
            ratios = [(tokens / t) / (raw_tokens / r) for t, r in zip(ts, paired_with, strict=True)]
            paired = f"{statistics.median(ratios):.2f}"
        print(f"{label:32} {best:8.3f} {statistics.median(ts):9.3f} {n_ex / best:12,.0f} {tokens / best:12,.0f} "
              f"{tokens / best / base_tps:9.2f} {paired:>7}")
    tt = raw_tokens / min(tiktoken_times)
    print("against tiktoken's batch (best vs best): " + ", ".join(
        f"{k} {pipe_tokens / min(times[k]) / tt:.2f}x" for k in measured if k != "read"))


if __name__ == "__main__":
    main()
