"""Benchmark an SFT training step with the output layer on the trained positions only.

SFT trains on the assistant tokens alone (``loss_mask``), so ``GPT.forward(x, y, loss_mask=m)``
sends only those positions through the 50k-wide output layer. The baseline is the same step with
the head over every position and the untrained targets set to -1 (what the forward did before):
same model, same rows, same loss. Both alternate in one process; medians and their ratio print.

Rows: ``--source arithmetic`` packs the arithmetic curriculum (the demo's SFT data),
``--source alpaca`` the real Alpaca sample in ``../shared/data``; both through the real
``prepare sft`` encode + pack code.

Usage: ``python benchmarks/bench_sft_step.py [--preset tiny] [--source arithmetic] [--seq-len 128]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(SHARED / "tokenizer" / "r50k_base.tiktoken"))


def conversations(source: str, n: int) -> list[list[dict[str, str]]]:
    """``n`` chat examples from the arithmetic curriculum or the real Alpaca sample (read as
    ``prepare sft`` reads it)."""
    if source == "arithmetic":
        from llmctl.core.data.arithmetic import arithmetic_sft_examples

        return arithmetic_sft_examples(n, 1, seed=0)
    from llmctl.core.data.prepare_sft import read_source
    from llmctl.core.data.records import ErrorPolicy

    convs, _ = read_source("alpaca", str(SHARED / "alpaca" / "alpaca_small.json"), ErrorPolicy())
    return convs[:n]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--source", choices=("arithmetic", "alpaca"), default="arithmetic")
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=12)
    args = ap.parse_args()

    from llmctl.core.data.prepare_sft import pack_conversations
    from llmctl.core.tokenizer import get_tokenizer
    from llmctl.trainers.model import GPT

    packed, _ = pack_conversations(conversations(args.source, 2000), get_tokenizer(), args.seq_len, seed=0)
    tokens = torch.from_numpy(packed.tokens.astype("int64"))
    mask = torch.from_numpy(packed.loss_mask.astype("int64"))
    torch.manual_seed(0)
    model = GPT.from_preset(args.preset, block_size=max(1024, args.seq_len))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    n_batches = max(1, len(tokens) // args.batch)

    def step(i: int, masked: bool) -> float:
        b = slice((i % n_batches) * args.batch, (i % n_batches + 1) * args.batch)
        x, y, m = tokens[b, :-1], tokens[b, 1:], mask[b, 1:]
        t0 = time.perf_counter()
        if masked:
            _, loss = model(x, y, loss_mask=m)
        else:
            _, loss = model(x, y.masked_fill(m == 0, -1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    times: dict[bool, list[float]] = {True: [], False: []}
    for r in range(args.rounds + 2):
        for masked in ((True, False) if r % 2 else (False, True)):
            dt = step(r, masked)
            if r >= 2:  # two warm-up rounds
                times[masked].append(dt)
    share = float(mask[:, 1:].float().mean())
    tok = args.batch * (args.seq_len - 1)
    full, sel = statistics.median(times[False]), statistics.median(times[True])
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, load {os.getloadavg()[0]:.1f}")
    print(f"{args.preset}, {args.source} rows ({len(tokens)} x {args.seq_len}, trained tokens {share:.0%}), "
          f"batch {args.batch}, {args.rounds} interleaved rounds")
    print(f"  head over every position (baseline): {tok / full:8.0f} tok/s")
    print(f"  head over trained positions only:    {tok / sel:8.0f} tok/s   ratio {full / sel:.2f}x")


if __name__ == "__main__":
    main()
