"""The GPU figures of issue 17 in one command: decode speed, pretrain MFU, a GRPO step's split.

    python benchmarks/bench_gpu.py --out bench_gpu.json            # every section, < 8 minutes on one H200
    python benchmarks/bench_gpu.py --sections generation,grpo      # some of them
    python benchmarks/bench_gpu.py --list                          # the sections and their time caps

Sections (in this order; each runs in its own Python process, so a crash, a timeout or a poisoned
CUDA context loses that section only, and what it measured before is kept):

* ``equality``: fp32 with TF32 off, the fast decoder's greedy tokens against the eager KV-cache
  path (mismatches reported with the logit gap) and its log-probs against teacher forcing; bf16,
  the share of identical rows and the logit margin where the others first differ.
* ``generation``: tokens/s at batch 1, 8 and 64 (64-token prompts, 256 new tokens, greedy, 124M,
  bf16) for our eager KV-cache path, the fast decoder (CUDA graphs) and transformers'
  ``generate`` with its static cache (not compiled, bf16 weights).
* ``pretrain_124m``: ``llmctl run pretrain`` (the real loop, compiled, bf16, batch 32 x 1024,
  random tokens) MFU from its metrics; the compiled step alone (no loop: the ceiling) with and
  without a host sync per step; the step's top kernels by GPU time.
* ``grpo``: one GRPO step (64 prompts x 8 samples, 256 new tokens, 124M) timed as rollout /
  scoring / update (reference log-probs + clipped-ratio loss backward + AdamW).
* ``gen_compile``: the fast decoder's step compiled: ``inductor`` (fused kernels captured in our
  graphs) at batch 8 and 64, ``compile`` (``torch.compile(mode="reduce-overhead")``) at batch 8.
  ``LLMCTL_DECODE_MODE=inductor`` makes ``generate`` use the first.
* ``hf_training``: our training step vs transformers ``GPT2LMHeadModel`` (eager bf16 autocast,
  batch 16 x 1024, same weights, same fused AdamW), interleaved.
* ``attention``: SDPA forward+backward at (32, 12, 1024, 64) bf16 causal per backend.
* ``demo``: ``python -m llmctl.core.cli demo --preset small --workspace DIR`` (with ``--demo-corpus``,
  pretraining on those text files first); it prints the held-out table before/after GRPO (needs
  the tokenizer: set ``LLMCTL_TIKTOKEN_FILE``).
* ``pretrain_355m``: the loop and the step alone for gpt2-medium.

A section starts only while the budget (``--budget``, default 470 s on a GPU) has room for it.
Needs no dataset and no tokenizer (random token ids; scoring decodes with the tokenizer when one
is available, else with a stand-in). Prints a markdown table; ``--out`` writes everything as JSON.
Without a GPU it says so and runs a CPU subset at small sizes (about a minute on a quiet 2-core
machine; its caps allow for a loaded one).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from timing import best_time, sync

# ---- helpers ----------------------------------------------------------------------------------------


class Rec(dict):
    """A result dict that rewrites its JSON file on every change (a killed section keeps what it had)."""

    def __init__(self, path: Path | None) -> None:
        super().__init__()
        self.path = path

    def __setitem__(self, key: str, value: Any) -> None:
        super().__setitem__(key, value)
        if self.path is not None:
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self, default=str, indent=1))
            tmp.replace(self.path)


def random_prompts(n: int, lo: int, hi: int, seed: int) -> list[list[int]]:
    """``n`` prompts of random real-vocabulary ids, lengths in ``[lo, hi]``."""
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(lo, hi + 1, (n,), generator=g).tolist()
    return [torch.randint(0, 50257, (k,), generator=g).tolist() for k in lens]


def make_model(preset: str, device: torch.device, seed: int = 0) -> Any:
    from llmctl.trainers.model import GPT

    torch.manual_seed(seed)
    return GPT.from_preset(preset).to(device)


def hf_twin(model: Any, dtype: torch.dtype | None = None) -> Any:
    """transformers' GPT2LMHeadModel with our model's configuration and weights (vocab 50304, SDPA)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmctl.trainers.export_hf import hf_config, hf_state_dict

    vocab = model.config.vocab_size
    cfg = GPT2Config(**{k: v for k, v in hf_config(model, vocab).items()
                        if k not in ("architectures", "model_type", "torch_dtype")})
    cfg._attn_implementation = "sdpa"
    hf = GPT2LMHeadModel(cfg)
    hf.load_state_dict(hf_state_dict(model, vocab), strict=False)
    hf.tie_weights()
    hf = hf.to(next(model.parameters()).device)
    return hf.to(dtype) if dtype is not None else hf


def peak_flops(device: torch.device) -> float | None:
    from llmctl.trainers.loop import gpu_peak_flops

    return gpu_peak_flops(device)


def gen_dtype(device: torch.device) -> torch.dtype:
    return torch.bfloat16 if device.type == "cuda" else torch.float32


# ---- sections ---------------------------------------------------------------------------------------


def sec_equality(a: argparse.Namespace, rec: Rec) -> None:
    from llmctl.trainers.decode import fast_generate, first_divergence
    from llmctl.trainers.generate import generate
    from llmctl.trainers.heads import PolicyModel
    from llmctl.trainers.rl_losses import gather_logprobs
    from llmctl.trainers.rollout import pack

    dev, gpu = a.device, a.device.type == "cuda"
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    model = make_model(a.gen_preset, dev).eval()
    prompts = random_prompts(8, 32, 64, seed=1)
    new = 128 if gpu else 24
    rec["fp32_setup"] = f"{a.gen_preset}, batch 8, ragged 32-64-token random prompts, {new} new tokens, greedy"
    eager = generate(model, prompts, new, temperature=0.0, eos_id=None, fast=False)
    fast = fast_generate(model, prompts, new, temperature=0.0, eos_id=None, logprobs=True)
    same = [f == e for f, e in zip(fast.tokens, eager, strict=True)]
    rec["fp32_identical_rows"] = f"{sum(same)}/{len(same)}"
    rec["fp32_mismatches"] = [dict(row=i, **(first_divergence(model, p, f, e) or {}))
                              for i, (p, f, e, ok) in enumerate(zip(prompts, fast.tokens, eager, same, strict=True))
                              if not ok]
    ids, att, _, start = pack(prompts, fast.tokens, dev)
    with torch.no_grad():
        logits, _ = PolicyModel(model)(ids, att, start, 1.0)
    ref = gather_logprobs(logits, ids[:, start:])
    rec["fp32_logprob_max_abs_diff"] = float((torch.tensor(fast.logprobs, device=dev) - ref).abs().max())
    del logits
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if not gpu:
        return
    # bf16: the eager path under autocast vs the fast decoder's bf16 copies, batch 64
    bf = torch.bfloat16
    prompts = random_prompts(64, 64, 64, seed=2)
    eager = generate(model, prompts, 256, temperature=0.0, eos_id=None, fast=False, dtype=bf)
    graph = fast_generate(model, prompts, 256, temperature=0.0, eos_id=None, dtype=bf)
    static = fast_generate(model, prompts, 256, temperature=0.0, eos_id=None, dtype=bf, mode="eager")
    same = [f == e for f, e in zip(graph, eager, strict=True)]
    rec["bf16_setup"] = "batch 64, 64-token random prompts, 256 new tokens, greedy, fresh 124M weights"
    rec["bf16_identical_rows"] = f"{sum(same)}/{len(same)}"
    rec["bf16_graph_equals_uncaptured_step"] = graph == static
    divs = [first_divergence(model, p, f, e, dtype=bf) for p, f, e, ok in zip(prompts, graph, eager, same, strict=True)
            if not ok]
    divs = [d for d in divs if d and "top2_gap" in d]
    if divs:
        rec["bf16_first_divergence_step_median"] = statistics.median(d["step"] for d in divs)
        rec["bf16_top2_gap_at_divergence_median"] = statistics.median(d["top2_gap"] for d in divs)
        rec["bf16_top2_gap_at_divergence_max"] = max(d["top2_gap"] for d in divs)
    # a fresh model's logits are nearly flat (top-2 gaps ~0.1), so bf16 rounding flips many near-ties;
    # with the embedding x 5 (tied to the output layer) the logits spread about as a trained model's
    with torch.no_grad():
        model.transformer.wte.weight.mul_(5.0)
    eager = generate(model, prompts, 256, temperature=0.0, eos_id=None, fast=False, dtype=bf)
    graph = fast_generate(model, prompts, 256, temperature=0.0, eos_id=None, dtype=bf)
    rec["bf16_sharpened_identical_rows"] = f"{sum(f == e for f, e in zip(graph, eager, strict=True))}/{len(graph)}"


def sec_generation(a: argparse.Namespace, rec: Rec) -> None:
    dev, gpu = a.device, a.device.type == "cuda"
    dt = gen_dtype(dev)
    model = make_model(a.gen_preset, dev).eval()
    new = 256 if gpu else 16
    batches = (1, 8, 64) if gpu else (1, 8)
    rec["setup"] = f"{a.gen_preset}, 64-token prompts, {new} new tokens, greedy, {str(dt).removeprefix('torch.')}"
    hf = None
    try:
        hf = hf_twin(model, dt).eval() if gpu else None
    except Exception as e:  # transformers missing or incompatible: the rest still runs
        rec["hf_error"] = f"{type(e).__name__}: {e}"
    for B in batches:
        rec[f"batch_{B}"] = {}
        _gen_batch(rec, f"batch_{B}", model, hf, random_prompts(B, 64, 64, seed=B), new, dt, gpu)


def _gen_batch(rec: Rec, key: str, model: Any, hf: Any, prompts: list[list[int]], new: int, dt: torch.dtype,
               gpu: bool) -> None:
    """Tokens/s of each engine on one batch of prompts, recorded under ``rec[key]`` as they come."""
    from llmctl.core.tokenizer import EOT_ID
    from llmctl.trainers.decode import fast_generate
    from llmctl.trainers.generate import generate

    dev = next(model.parameters()).device
    B = len(prompts)
    out: dict[str, Any] = rec[key]

    def put(name: str, seconds: float) -> None:
        out[name] = B * new / seconds
        rec[key] = out

    def fast(mode: str) -> Callable[[], Any]:
        return lambda: fast_generate(model, prompts, new, temperature=0.0, eos_id=None, dtype=dt, mode=mode)

    put("eager_tok_s", best_time(lambda: generate(model, prompts, new, temperature=0.0, eos_id=None, fast=False,
                                                  dtype=dt), dev, reps=2 if gpu else 1))
    put("fast_tok_s", best_time(fast("graph"), dev, reps=5 if gpu else 2))
    out["fast_vs_eager"] = out["fast_tok_s"] / out["eager_tok_s"]
    if gpu and B == 8:
        put("fast_no_graph_tok_s", best_time(fast("eager"), dev, reps=2))
    if hf is None or not gpu:  # transformers' static cache is a GPU comparison
        return
    ids = torch.tensor(prompts, device=dev)
    kw = dict(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
              do_sample=False, pad_token_id=EOT_ID, cache_implementation="static")

    def theirs() -> None:
        with torch.no_grad():
            try:  # transformers compiles a static-cache forward by itself unless told not to
                o = hf.generate(**kw, disable_compile=True)
            except (TypeError, ValueError) as e:
                if "disable_compile" not in str(e):
                    raise
                out["hf_note"] = "this transformers has no disable_compile"
                o = hf.generate(**kw)
        assert o.shape[1] == ids.shape[1] + new

    try:
        put("hf_static_tok_s", best_time(theirs, dev, reps=2 if gpu else 1))
        out["fast_vs_hf"] = out["fast_tok_s"] / out["hf_static_tok_s"]
    except Exception as e:
        out["hf_error"] = f"{type(e).__name__}: {e}"
    rec[key] = out


def sec_gen_compile(a: argparse.Namespace, rec: Rec) -> None:
    """The fast decoder's step under torch.compile: "inductor" (fused kernels in our CUDA graphs) at
    batch 8 and 64, then "compile" (reduce-overhead, torch's own graphs) at batch 8, against "graph"."""
    from llmctl.trainers.decode import fast_generate

    dev = a.device
    if dev.type != "cuda":
        rec["skipped"] = "no GPU (CUDA graphs only)"
        return
    dt = gen_dtype(dev)
    model = make_model(a.gen_preset, dev).eval()
    rec["setup"] = f"{a.gen_preset}, 64-token prompts, 256 new tokens, greedy, bf16"
    for B, modes in ((8, ("graph", "inductor")), (64, ("graph", "inductor")), (8, ("compile",))):
        prompts = random_prompts(B, 64, 64, seed=B)
        res = rec.get(f"batch_{B}", {})
        for mode in modes:
            def run(m: str = mode, p: list[list[int]] = prompts) -> Any:
                return fast_generate(model, p, 256, temperature=0.0, eos_id=None, dtype=dt, mode=m)

            t0 = time.perf_counter()
            try:
                rows = run()
                sync(dev)
                res[f"{mode}_first_call_s"] = time.perf_counter() - t0
                res[f"{mode}_tok_s"] = B * 256 / best_time(run, dev, reps=5, warmup=0)
            except Exception as e:  # one mode failing keeps the others
                res[f"{mode}_error"] = f"{type(e).__name__}: {str(e)[:300]}"
                rec[f"batch_{B}"] = {k: v for k, v in res.items() if k != "graph_rows"}
                continue
            if mode != "graph" and "graph_rows" in res:
                res[f"{mode}_identical_rows_vs_graph"] = sum(x == y for x, y in zip(rows, res["graph_rows"],
                                                                                     strict=True)) / B
            if mode == "graph":
                res["graph_rows"] = rows
            rec[f"batch_{B}"] = {k: v for k, v in res.items() if k != "graph_rows"}


def _token_file(path: Path, n: int = 4_000_000) -> None:
    import h5py
    import numpy as np

    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("tokens", data=rng.integers(0, 50257, size=n, dtype=np.int32))


def _pretrain(a: argparse.Namespace, rec: Rec, preset: str, full: bool = True) -> None:
    """The real loop's MFU; then the compiled step alone; with ``full`` also a sync per step and a profile."""
    from llmctl.core.metrics import read_metrics
    from llmctl.core.train_params import PretrainParams
    from llmctl.core.workspace import init_workspace
    from llmctl.trainers import loop, pretrain
    from llmctl.trainers.optim import make_optimizer

    dev, gpu = a.device, a.device.type == "cuda"
    B, T = (32, 1024) if gpu else (2, 128)
    steps, every = ((40 if full else 30), 10) if gpu else (6, 2)
    if not gpu:
        preset = "tiny"
    rec["setup"] = f"{preset}, batch {B} x {T}, bf16 autocast, torch.compile, random tokens" if gpu else \
        f"{preset}, batch {B} x {T}, fp32, CPU (no compile, no MFU)"
    tmp = Path(tempfile.mkdtemp(prefix="bench_gpu_"))
    ws = init_workspace(tmp / "ws")
    _token_file(ws.data_dir / "pile_train.h5")
    params = PretrainParams(preset=preset, batch_size=B, context_length=T, max_steps=steps, log_every=every,
                            eval_every=0, save_every=0, warmup_steps=5, progress=False, device=str(dev))
    run_dir = ws.runs_dir / "pretrain" / "bench"
    run_dir.mkdir(parents=True)
    saved = loop.save_checkpoint, loop.prune_checkpoints
    loop.save_checkpoint = lambda *x, **k: None  # the final checkpoint (GBs of disk writes) is not measured
    loop.prune_checkpoints = lambda *x, **k: []
    t0 = time.perf_counter()
    try:
        pretrain.run(ws, params, run_dir)
    finally:
        loop.save_checkpoint, loop.prune_checkpoints = saved
    rec["loop_wall_s"] = time.perf_counter() - t0
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "tokens_per_s" in r][1:]  # first: compile
    rec["loop_tok_s"] = statistics.mean(r["tokens_per_s"] for r in rows)
    if rows and rows[0].get("mfu") is not None:
        rec["loop_mfu"] = statistics.mean(r["mfu"] for r in rows)
    rec["loop_rows"] = [{k: r.get(k) for k in ("step", "tokens_per_s", "mfu", "train/loss")} for r in rows]

    if not gpu:
        return
    # the compiled step alone: batch already on the device, no loop (ceiling), then one host sync per step
    model = make_model(preset, dev).train()
    fpt = model.estimate_flops_per_token(T)
    peak = peak_flops(dev)
    run = torch.compile(model)
    opt = make_optimizer(model, 1e-4, device_type=dev.type)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 50257, (B, T + 1), generator=g).to(dev)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()  # as the loop's batches
    ctx = torch.autocast(dev.type, dtype=torch.bfloat16)

    def one(read: bool) -> None:
        with ctx:
            _, loss = run(x, y)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if read:
            loss.item(), norm.item()
        opt.step()
        opt.zero_grad(set_to_none=True)

    n = 20
    for read in (False, True) if full else (False,):
        for _ in range(3):
            one(read)
        sync(dev)
        t = time.perf_counter()
        for _ in range(n):
            one(read)
        sync(dev)
        tps = n * B * T / (time.perf_counter() - t)
        key = "step_sync_each" if read else "step_ceiling"
        rec[f"{key}_tok_s"] = tps
        if peak:
            rec[f"{key}_mfu"] = fpt * tps / peak
    if not full:
        return
    try:
        _profile(rec, lambda: one(False), dev)
    except Exception as e:
        rec["profile_error"] = f"{type(e).__name__}: {e}"


def _profile(rec: Rec, one: Callable[[], None], dev: torch.device) -> None:
    """What the profile says: the kernels of three steps, by GPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(3):
            one()
        sync(dev)

    def gpu_us(e: Any) -> float:
        return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0)

    events = [e for e in prof.key_averages() if gpu_us(e) > 0]
    total = sum(gpu_us(e) for e in events) or 1.0
    rec["profile_gpu_ms_per_step"] = total / 3 / 1e3
    rec["profile_top_kernels"] = [{"name": e.key[:90], "ms_per_step": gpu_us(e) / 3 / 1e3, "share": gpu_us(e) / total,
                                   "calls_per_step": e.count / 3} for e in sorted(events, key=gpu_us, reverse=True)[:15]]


def sec_pretrain_124m(a: argparse.Namespace, rec: Rec) -> None:
    _pretrain(a, rec, "gpt2")


def sec_pretrain_355m(a: argparse.Namespace, rec: Rec) -> None:
    if a.device.type != "cuda":
        rec["skipped"] = "CPU subset: the tiny preset runs in pretrain_124m"
        return
    _pretrain(a, rec, "gpt2-medium", full=False)


def sec_hf_training(a: argparse.Namespace, rec: Rec) -> None:
    from llmctl.trainers.optim import make_optimizer

    dev, gpu = a.device, a.device.type == "cuda"
    preset, B, T, pairs = ("gpt2", 16, 1024, 8) if gpu else ("tiny", 2, 128, 3)
    rec["setup"] = f"{preset}, batch {B} x {T}, eager (no compile), {'bf16 autocast' if gpu else 'fp32'}, fused AdamW"
    ours = make_model(preset, dev).train()
    theirs = hf_twin(ours).train()
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 50257, (B, T + 1), generator=g).to(dev)
    x, y = data[:, :-1], data[:, 1:]
    opts = {"ours": make_optimizer(ours, 1e-4, device_type=dev.type),
            "hf": make_optimizer(theirs, 1e-4, device_type=dev.type)}
    ctx = (lambda: torch.autocast(dev.type, dtype=torch.bfloat16)) if gpu else contextlib.nullcontext

    def step(name: str) -> None:
        with ctx():
            loss = ours(x, y)[1] if name == "ours" else theirs(input_ids=x, labels=x).loss
        loss.backward()
        opts[name].step()
        opts[name].zero_grad(set_to_none=True)

    for _ in range(2):
        step("ours")
        step("hf")
    times: dict[str, list[float]] = {"ours": [], "hf": []}
    for i in range(pairs):
        for name in (("ours", "hf") if i % 2 == 0 else ("hf", "ours")):
            times[name].append(best_time(lambda n=name: step(n), dev, reps=1, warmup=0))
    rec["ours_tok_s"] = B * T / statistics.median(times["ours"])
    rec["hf_tok_s"] = B * T / statistics.median(times["hf"])
    rec["ratio_median"] = statistics.median(h / o for o, h in zip(times["ours"], times["hf"], strict=True))


def _decoder() -> tuple[Callable[[list[int]], str], str]:
    try:
        from llmctl.core.tokenizer import get_tokenizer

        tok = get_tokenizer()
        tok.decode([15496])
        return tok.decode, "r50k_base"
    except Exception:
        return (lambda ids: " ".join(str(i) for i in ids)), "stand-in (no tokenizer file: ids joined as text)"


def _score() -> Callable[[str, str], float]:
    try:
        from llmctl.core.verifier import score
    except ImportError:  # the verifier's home after core's reorganisation
        from llmctl.core.rewards.verifier import score  # type: ignore[no-redef]
    return lambda text, gold: score(text, gold).reward


def sec_grpo(a: argparse.Namespace, rec: Rec) -> None:
    from llmctl.trainers.generate import generate
    from llmctl.trainers.heads import PolicyModel
    from llmctl.trainers.optim import make_optimizer
    from llmctl.trainers.rl_losses import gather_logprobs, grpo_advantages, grpo_loss
    from llmctl.trainers.rollout import micro_batches, pack

    dev, gpu = a.device, a.device.type == "cuda"
    preset, n_prompts, G, new, mb = ("gpt2", 64, 8, 256, 32) if gpu else ("tiny", 4, 4, 16, 16)
    dt = gen_dtype(dev)
    decode, decoder = _decoder()
    score = _score()
    rec["setup"] = (f"{preset}, {n_prompts} prompts x {G} samples, {new} new tokens (a fresh model never stops "
                    f"early), prompts 80-192 random ids, temperature 1, kl_coef 0.04, micro-batch {mb}, "
                    f"{str(dt).removeprefix('torch.')}; text for the verifier: {decoder}")
    gpt = make_model(preset, dev).train()
    ref = copy.deepcopy(gpt).eval()
    for p in ref.parameters():
        p.requires_grad_(False)
    policy, ref_policy = PolicyModel(gpt), PolicyModel(ref)
    opt = make_optimizer(policy, 1e-6, device_type=dev.type)
    prompts = random_prompts(n_prompts, 80, 192, seed=3) if gpu else random_prompts(n_prompts, 20, 48, seed=3)
    rows = [p for p in prompts for _ in range(G)]
    ctx = (lambda: torch.autocast(dev.type, dtype=dt)) if dt != torch.float32 else contextlib.nullcontext
    splits = []
    for it in range(2):  # the first step captures the decode graphs: the second is the one reported
        sync(dev)
        t0 = time.perf_counter()
        completions = generate(gpt, rows, new, temperature=1.0, seed=it, dtype=dt if gpu else None)
        sync(dev)
        t1 = time.perf_counter()
        rewards = torch.tensor([score(decode(c), "42") for c in completions], dtype=torch.float32, device=dev)
        t2 = time.perf_counter()
        ids, att, cmask, start = pack(rows, completions, dev)
        adv = grpo_advantages(rewards, G)
        with torch.no_grad(), ctx():
            ref_lp = torch.cat([gather_logprobs(ref_policy(ids[sl], att[sl], start, 1.0)[0], ids[sl, start:])
                                for sl in micro_batches(len(rows), mb)])
        old = torch.zeros_like(cmask)
        for sl in micro_batches(len(rows), mb):
            with ctx():
                logits, _ = policy(ids[sl], att[sl], start, 1.0)
            lp = gather_logprobs(logits, ids[sl, start:])
            old[sl] = lp.detach()
            loss, _ = grpo_loss(lp, old[sl], ref_lp[sl], adv[sl], cmask[sl], 0.2, 0.04, "grpo", None, new)
            (loss * (sl.stop - sl.start) / len(rows)).backward()
            del logits, lp
        torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(dev)
        t3 = time.perf_counter()
        splits.append({"rollout_s": t1 - t0, "scoring_s": t2 - t1, "update_s": t3 - t2,
                       "rollout_tokens": sum(len(c) for c in completions)})
        rec["steps"] = splits
    last = splits[-1]
    total = last["rollout_s"] + last["scoring_s"] + last["update_s"]
    rec["step_s"] = total
    rec["rollout_share"] = last["rollout_s"] / total
    rec["rollout_tok_s"] = last["rollout_tokens"] / last["rollout_s"]


def sec_attention(a: argparse.Namespace, rec: Rec) -> None:
    dev = a.device
    if dev.type != "cuda":
        rec["skipped"] = "no GPU"
        return
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    B, H, T, D = 32, 12, 1024, 64
    q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
    flops = 4 * B * H * T * T * D / 2 * 3.5  # causal forward, backward ~2.5x
    rec["setup"] = f"({B}, {H}, {T}, {D}) bf16 causal, forward + backward"
    for name in ("FLASH_ATTENTION", "CUDNN_ATTENTION", "EFFICIENT_ATTENTION"):
        backend = getattr(SDPBackend, name, None)
        if backend is None:
            continue
        try:
            def run(b: Any = backend) -> None:
                with sdpa_kernel([b]):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True).sum().backward()

            t = best_time(run, dev, reps=10, warmup=2)
            rec[name.lower()] = {"ms": t * 1e3, "tflops": flops / t / 1e12}
        except Exception as e:
            rec[name.lower()] = {"error": f"{type(e).__name__}: {str(e)[:200]}"}


def sec_demo(a: argparse.Namespace, rec: Rec) -> None:
    if a.device.type != "cuda" and not a.demo_on_cpu:
        rec["skipped"] = "CPU subset (the demo takes minutes on a CPU; --demo-on-cpu runs it)"
        return
    cmd = [sys.executable, "-m", "llmctl.core.cli", "demo"]
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    help_out = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120, env=env)
    if "--preset" not in help_out.stdout:
        rec["skipped"] = "`llmctl demo` has no --preset option yet" + \
            (f" (help exited {help_out.returncode}: {help_out.stderr.strip()[-300:]})" if help_out.returncode else "")
        return
    ws = Path(tempfile.mkdtemp(prefix="bench_gpu_demo_")) / "ws"
    full = cmd + ["--preset", "small", "--workspace", str(ws)]
    for c in a.demo_corpus or []:
        full += ["--corpus", c]
    rec["command"] = " ".join(full[1:])
    t0 = time.perf_counter()
    proc = subprocess.Popen(full, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        for line in proc.stdout:  # type: ignore[union-attr]
            lines.append(line.rstrip())
            print("  demo |", line.rstrip(), flush=True)
            rec["output_tail"] = lines[-40:]
            rec["wall_s"] = time.perf_counter() - t0
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
    rec["exit_code"] = proc.returncode
    rec["wall_s"] = time.perf_counter() - t0
    rec["output_lines"] = len(lines)
    rec["output_tail"] = lines[-40:]


# name -> (function, cap in seconds on a GPU, cap on a CPU (0: GPU only), least time worth starting it with)
SECTIONS: dict[str, tuple[Callable[[argparse.Namespace, Rec], None], int, int, int]] = {
    "equality": (sec_equality, 60, 40, 20),
    "generation": (sec_generation, 100, 60, 40),
    "pretrain_124m": (sec_pretrain_124m, 110, 45, 60),
    "grpo": (sec_grpo, 70, 40, 30),
    "gen_compile": (sec_gen_compile, 150, 0, 60),
    "hf_training": (sec_hf_training, 50, 30, 25),
    "attention": (sec_attention, 25, 0, 10),
    "demo": (sec_demo, 185, 0, 60),
    "pretrain_355m": (sec_pretrain_355m, 110, 0, 70),
}


# ---- the report -------------------------------------------------------------------------------------


def _f(x: Any, fmt: str = "{:,.0f}") -> str:
    return fmt.format(x) if isinstance(x, int | float) else "n/a"


def table(res: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(what, figure, note) rows for the markdown table."""
    out: list[tuple[str, str, str]] = []
    g = res.get("generation", {})
    for B in (1, 8, 64):
        r = g.get(f"batch_{B}")
        if not r:
            continue
        fast, eager, hf = r.get("fast_tok_s"), r.get("eager_tok_s"), r.get("hf_static_tok_s")
        r = {**r, "fast_vs_eager": fast / eager if fast and eager else None, "fast_vs_hf": fast / hf if fast and hf else None}
        out.append((f"generation batch {B}: eager / fast / HF static (tok/s)",
                    f"{_f(r.get('eager_tok_s'))} / {_f(r.get('fast_tok_s'))} / {_f(r.get('hf_static_tok_s'))}",
                    f"fast vs eager {_f(r.get('fast_vs_eager'), '{:.1f}x')}, vs HF {_f(r.get('fast_vs_hf'), '{:.1f}x')}"
                    + (f"; no graph {_f(r.get('fast_no_graph_tok_s'))}" if "fast_no_graph_tok_s" in r else "")))
    c = res.get("gen_compile", {})
    for B in (8, 64):
        r = c.get(f"batch_{B}") or {}
        if "graph_tok_s" in r:
            out.append((f"fast decode batch {B}: graph / inductor / compile reduce-overhead (tok/s)",
                        f"{_f(r.get('graph_tok_s'))} / {_f(r.get('inductor_tok_s'))} / {_f(r.get('compile_tok_s'))}",
                        "first call (s, with compile): " + ", ".join(
                            f"{m} {_f(r.get(m + '_first_call_s'), '{:.1f}')}" for m in ("graph", "inductor", "compile")
                            if m + "_first_call_s" in r)
                        + f"; rows equal to graph's: inductor {_f(r.get('inductor_identical_rows_vs_graph'), '{:.2f}')}"
                        + "".join(f"; {m} failed: {r[m + '_error'][:80]}" for m in ("inductor", "compile")
                                  if m + "_error" in r)))
    e = res.get("equality", {})
    if "fp32_identical_rows" in e:
        out.append(("fp32 greedy fast == eager (rows)", e["fp32_identical_rows"],
                    f"log-prob max abs diff {_f(e.get('fp32_logprob_max_abs_diff'), '{:.1e}')}; mismatches "
                    f"{e.get('fp32_mismatches')}"))
    if "bf16_identical_rows" in e:
        out.append(("bf16 greedy fast == eager (rows)", e["bf16_identical_rows"],
                    f"first divergence step median {e.get('bf16_first_divergence_step_median', 'n/a')}, top-2 "
                    f"logit gap there median {_f(e.get('bf16_top2_gap_at_divergence_median'), '{:.3f}')}; graph == "
                    f"uncaptured step: {e.get('bf16_graph_equals_uncaptured_step')}; sharpened logits (wte x 5): "
                    f"{e.get('bf16_sharpened_identical_rows', 'n/a')} rows identical"))
    for name in ("pretrain_124m", "pretrain_355m"):
        p = res.get(name, {})
        if "loop_tok_s" in p:
            out.append((f"{name}: loop tok/s, MFU", f"{_f(p.get('loop_tok_s'))}, {_f(p.get('loop_mfu'), '{:.3f}')}",
                        f"step alone {_f(p.get('step_ceiling_tok_s'))} tok/s MFU "
                        f"{_f(p.get('step_ceiling_mfu'), '{:.3f}')}; with a sync per step MFU "
                        f"{_f(p.get('step_sync_each_mfu'), '{:.3f}')} ({p.get('setup')})"))
    h = res.get("hf_training", {})
    if "ratio_median" in h:
        out.append(("training ours vs HF GPT2LMHeadModel", _f(h["ratio_median"], "{:.2f}x"),
                    f"{_f(h.get('ours_tok_s'))} vs {_f(h.get('hf_tok_s'))} tok/s ({h.get('setup')})"))
    r = res.get("grpo", {})
    if "rollout_share" in r:
        s = r["steps"][-1]
        out.append(("GRPO step: rollout / scoring / update (s)",
                    f"{s['rollout_s']:.2f} / {s['scoring_s']:.2f} / {s['update_s']:.2f}",
                    f"rollout {100 * r['rollout_share']:.0f}% of {r['step_s']:.2f} s, {_f(r.get('rollout_tok_s'))} tok/s"))
    at = res.get("attention", {})
    parts = [f"{k.split('_')[0]} {v['tflops']:.0f}" for k, v in at.items() if isinstance(v, dict) and "tflops" in v]
    if parts:
        out.append(("SDPA fwd+bwd TFLOP/s (32x12x1024x64 causal)", ", ".join(parts), ""))
    d = res.get("demo", {})
    if d:
        out.append(("llmctl demo --preset small", _f(d.get("wall_s"), "{:.0f} s") if "wall_s" in d else "skipped",
                    d.get("skipped") or f"exit {d.get('exit_code')}, {d.get('output_lines')} lines; last: "
                    f"{(d.get('output_tail') or [''])[-1]}"))
    for name, v in res.items():
        if isinstance(v, dict) and v.get("error"):
            out.append((f"{name}: FAILED", v["error"].splitlines()[0][:160].replace("|", "/"), ""))
    return out


# ---- running ----------------------------------------------------------------------------------------


def run_section(name: str, a: argparse.Namespace, out_path: Path) -> None:
    """Inside the child process: run one section, recording into ``out_path``."""
    rec = Rec(out_path)
    try:
        SECTIONS[name][0](a, rec)
    except BaseException as e:
        rec["error"] = f"{type(e).__name__}: {e}\n{traceback.format_exc()[-2000:]}"
        raise


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=None, help="Write every figure as JSON here.")
    ap.add_argument("--sections", default="", help="Comma-separated subset (default: all, in order).")
    ap.add_argument("--budget", type=float, default=0.0,
                    help="Seconds for everything (default 470 on a GPU, 220 on a CPU); sections that no longer fit "
                         "are skipped.")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--gen-preset", default="", help="Model for decoding (default gpt2 on a GPU, mini on a CPU).")
    ap.add_argument("--demo-on-cpu", action="store_true")
    ap.add_argument("--demo-corpus", action="append", help="text files the demo section pretrains on first")
    ap.add_argument("--list", action="store_true", help="List the sections and their time caps.")
    ap.add_argument("--section", default="", help=argparse.SUPPRESS)  # internal: run one section (child)
    ap.add_argument("--section-out", type=Path, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.list:
        for name, (_, cap_gpu, cap_cpu, _) in SECTIONS.items():
            print(f"{name:14} cap {cap_gpu:4d} s on a GPU, " + (f"{cap_cpu:3d} s on a CPU" if cap_cpu else "GPU only"))
        return 0
    gpu = torch.cuda.is_available() and a.device in ("auto", "cuda") or a.device.startswith("cuda")
    a.device = torch.device("cuda:0" if gpu and a.device in ("auto", "cuda") else ("cpu" if not gpu else a.device))
    a.gen_preset = a.gen_preset or ("gpt2" if gpu else "tiny")
    if a.section:
        run_section(a.section, a, a.section_out)
        return 0

    t_start = time.perf_counter()
    budget = a.budget or (470.0 if gpu else 220.0)
    if gpu:
        name = torch.cuda.get_device_name(0)
        mem = torch.cuda.get_device_properties(0).total_memory / 2**30
        machine = f"{name} ({mem:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}"
    else:
        machine = (f"no GPU: CPU subset at small sizes ({platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__})")
    print(f"bench_gpu: {machine}; budget {budget:.0f} s", flush=True)
    try:
        import transformers

        machine += f", transformers {transformers.__version__}"
    except ImportError:
        pass
    wanted = [s for s in a.sections.split(",") if s] or list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"unknown sections: {', '.join(unknown)}; known: {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    results: dict[str, Any] = {"machine": machine, "budget_s": budget}
    timings: dict[str, float] = {}
    work = Path(tempfile.mkdtemp(prefix="bench_gpu_sections_"))
    for name in wanted:
        _, cap_gpu, cap_cpu, least = SECTIONS[name]
        if not gpu and not cap_cpu and not (name == "demo" and a.demo_on_cpu):
            results[name] = {"skipped": "GPU only"}
            continue
        cap_cpu = cap_cpu or 600
        left = budget - (time.perf_counter() - t_start)
        if left < (least if gpu else min(least, cap_cpu)):
            results[name] = {"skipped": f"out of time budget ({left:.0f} s left)"}
            print(f"== {name}: skipped, {left:.0f} s of the budget left", flush=True)
            continue
        cap = int(min(cap_gpu if gpu else cap_cpu, left))
        out_path = work / f"{name}.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--section", name, "--section-out", str(out_path),
               "--device", str(a.device), "--gen-preset", a.gen_preset] + (["--demo-on-cpu"] if a.demo_on_cpu else [])
        cmd += [w for c in a.demo_corpus or [] for w in ("--demo-corpus", c)]
        print(f"== {name} (cap {cap} s)", flush=True)
        t0 = time.perf_counter()
        status = "ok"
        try:
            rc = subprocess.run(cmd, timeout=cap).returncode
            if rc != 0:
                status = f"exit code {rc}"
        except subprocess.TimeoutExpired:
            status = f"timed out after {cap} s (partial figures kept)"
        timings[name] = time.perf_counter() - t0
        try:
            res = json.loads(out_path.read_text()) if out_path.exists() else {}
        except ValueError:
            res = {}
        if status != "ok":
            res.setdefault("error", status)
            res["status"] = status
        res["section_s"] = round(timings[name], 1)
        results[name] = res
        print(f"== {name}: {status}, {timings[name]:.0f} s", flush=True)
        if a.out:
            a.out.write_text(json.dumps(results, indent=1, default=str))
    results["total_s"] = time.perf_counter() - t_start

    print(f"\n### bench_gpu on {machine}\n")
    print("| what | figure | note |\n|---|---|---|")
    for what, fig, note in table(results):
        print(f"| {what} | {fig} | {note} |")
    print(f"\nsections: {', '.join(f'{k} {v:.0f} s' for k, v in timings.items())}; total {results['total_s']:.0f} s")
    if a.out:
        a.out.write_text(json.dumps(results, indent=1, default=str))
        print(f"JSON: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
