"""Benchmark training and generation throughput of our GPT.

1. Training tokens/s (forward + backward + AdamW step) of ``llmctl.trainers.model.GPT`` against
   transformers' ``GPT2LMHeadModel`` of the identical configuration (same shape, vocab 50304,
   same weights copied over, SDPA attention, fp32 on CPU / bf16 autocast on GPU), the same batch
   of real tokens. The two run in alternating pairs in one process; the median of the per-pair
   ratios is reported (target >= 1.1x).
2. Generation tokens/s of one model with the KV cache against recomputing the whole context each
   step (only the last position through the output layer in both): batch 8, 64-token prompts,
   256 new tokens, greedy, runs alternated, best of ``--gen-reps`` (target >= 5x).

Usage: ``python benchmarks/bench_train.py [--presets tiny,mini] [--pairs 20] [--batch 4 --seq 256]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from timing import timed

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(SHARED / "tokenizer" / "r50k_base.tiktoken"))


def real_tokens(n: int) -> torch.Tensor:
    from llmctl.core.tokenizer import get_tokenizer

    text = (SHARED / "pile-sample" / "tinyshakespeare.txt").read_text(encoding="utf-8")
    ids = get_tokenizer().encode(text[: n * 6])
    return torch.tensor(ids[:n], dtype=torch.long)


def hf_twin(model):
    """GPT2LMHeadModel with our model's configuration and weights (vocab kept at 50304)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmctl.trainers.export_hf import hf_config, hf_state_dict

    cfg = GPT2Config(**{k: v for k, v in hf_config(model, model.config.vocab_size).items()
                        if k not in ("architectures", "model_type", "torch_dtype")})
    cfg._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(cfg)
    missing, unexpected = hf.load_state_dict(hf_state_dict(model, model.config.vocab_size), strict=False)
    assert not unexpected and all(k in ("lm_head.weight",) or k.endswith(".attn.bias") for k in missing), missing
    hf.tie_weights()
    return hf.to(next(model.parameters()).device)


def bench_training(preset: str, batch: int, seq: int, pairs: int, device: torch.device,
                   dtype: torch.dtype) -> dict:
    from llmctl.trainers.loop import autocast
    from llmctl.trainers.model import GPT
    from llmctl.trainers.optim import make_optimizer

    torch.manual_seed(0)
    ours = GPT.from_preset(preset).to(device)
    theirs = hf_twin(ours)
    data = real_tokens(batch * (seq + 1)).view(batch, seq + 1).to(device)
    x, y = data[:, :-1], data[:, 1:]
    opt_a = make_optimizer(ours, 1e-4, device_type=device.type)
    opt_b = make_optimizer(theirs, 1e-4, device_type=device.type)
    opt_c = torch.optim.AdamW(theirs.parameters(), lr=1e-4)  # what a plain transformers loop would use

    def step_ours():
        with autocast(device, dtype):
            _, loss = ours(x, y)
        loss.backward()
        opt_a.step()
        opt_a.zero_grad(set_to_none=True)

    def hf_step(opt):
        def step():  # labels = the inputs: transformers shifts them itself
            with autocast(device, dtype):
                loss = theirs(input_ids=x, labels=x).loss
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return step

    steps = {"ours": step_ours, "hf": hf_step(opt_b), "hf_torch_adamw": hf_step(opt_c)}
    for _ in range(2):  # warm-up: allocations, optimizer state, kernels
        for f in steps.values():
            f()
    times: dict[str, list[float]] = {k: [] for k in steps}
    names = list(steps)
    for i in range(pairs):  # interleaved single steps, rotating which goes first
        for k in names[i % 3:] + names[:i % 3]:
            times[k].append(timed(steps[k], device))
    n = batch * seq
    out = {"preset": preset, "params_M": ours.num_params() / 1e6}
    for k, ts in times.items():
        out[k + "_tok_s"] = n / statistics.median(ts)
        out[k + "_best"] = n / min(ts)
    for k in ("hf", "hf_torch_adamw"):
        out[k + "_ratio"] = statistics.median(b / a for a, b in zip(times["ours"], times[k], strict=True))
        out[k + "_ratio_best"] = min(times[k]) / min(times["ours"])
    return out


def bench_generation(preset: str, batch: int, prompt_len: int, new: int, device: torch.device,
                     dtype: torch.dtype, reps: int) -> dict:
    from llmctl.trainers.generate import generate
    from llmctl.trainers.model import GPT

    torch.manual_seed(0)
    model = GPT.from_preset(preset).to(device).eval()
    toks = real_tokens(batch * prompt_len).view(batch, prompt_len).tolist()
    gen_dtype = None if dtype == torch.float32 else dtype
    times: dict[str, list[float]] = {"cache": [], "recompute": []}
    rows: dict[str, list[list[int]]] = {}
    for i in range(reps):  # alternate the two, so a load burst hits both alike
        for name in (("cache", "recompute") if i % 2 == 0 else ("recompute", "cache")):
            t = time.perf_counter()
            rows[name] = generate(model, toks, new, temperature=0.0, eos_id=None, use_cache=name == "cache",
                                  dtype=gen_dtype)
            if device.type == "cuda":
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t)
    n = batch * new
    return {"preset": preset, "cache": n / min(times["cache"]), "recompute": n / min(times["recompute"]),
            "ratio": min(times["recompute"]) / min(times["cache"]),
            "same_tokens": rows["cache"] == rows["recompute"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--presets", default="tiny,mini", help="Presets for the training comparison.")
    ap.add_argument("--gen-presets", default="tiny,mini", help="Presets for the generation comparison.")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=20, help="Rounds of interleaved training steps timed.")
    ap.add_argument("--gen-reps", type=int, default=3, help="Generation runs of each kind (best is kept).")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from llmctl.trainers.loop import resolve_device, resolve_dtype

    device = resolve_device(args.device)
    dtype = resolve_dtype("auto", device)
    print(f"machine: {platform.machine()} {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"threads {torch.get_num_threads()}, device {device}, dtype {dtype}")
    print(f"\n== training: ours vs transformers GPT2LMHeadModel (batch {args.batch} x {args.seq}, "
          f"{args.pairs} interleaved rounds) ==")
    for preset in filter(None, args.presets.split(",")):
        r = bench_training(preset, args.batch, args.seq, args.pairs, device, dtype)
        print(f"{preset:6} {r['params_M']:5.1f}M params   tok/s (median / best): ours {r['ours_tok_s']:.0f} / "
              f"{r['ours_best']:.0f}, hf {r['hf_tok_s']:.0f} / {r['hf_best']:.0f}, hf + torch AdamW "
              f"{r['hf_torch_adamw_tok_s']:.0f} / {r['hf_torch_adamw_best']:.0f}")
        print(f"{'':6} ours vs hf, same optimizer: {r['hf_ratio']:.2f}x (median of rounds), {r['hf_ratio_best']:.2f}x "
              f"(best steps);  vs hf + torch.optim.AdamW: {r['hf_torch_adamw_ratio']:.2f}x, "
              f"{r['hf_torch_adamw_ratio_best']:.2f}x")
    print("\n== generation: KV cache vs full recompute (batch 8, 64-token prompts, 256 new tokens, greedy) ==")
    for preset in filter(None, args.gen_presets.split(",")):
        g = bench_generation(preset, 8, 64, 256, device, dtype, args.gen_reps)
        print(f"{preset:6} cache {g['cache']:8.0f} tok/s   recompute {g['recompute']:8.0f} tok/s   "
              f"ratio {g['ratio']:.1f}x   identical tokens: {g['same_tokens']}")
    if device.type != "cuda":
        print("\nGPU MFU check: not run (no GPU here).")


if __name__ == "__main__":
    main()
