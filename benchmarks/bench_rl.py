"""GRPO step time split into generation / reward / update, and rollout tokens/s of our KV-cache
``generate`` against transformers' ``GPT2LMHeadModel.generate`` on the same-config model.

    python benchmarks/bench_rl.py [--steps 4] [--prompts 8] [--generations 8] [--new-tokens 32]
                                  [--n-embd 128] [--repeats 3] [--device cpu]

Everything runs on the real data: GSM8K and arithmetic prompts from ../shared/data through
``prepare rl``, rendered with the chat template. A fresh (untrained) model never emits EOT, so
every completion runs the full ``--new-tokens``: equal work for every engine and every step.
Both generators sample (temperature 1, no top-k/top-p) from the same weights (ours exported with
``export_hf.hf_state_dict``) on the same left-padded prompt batch.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from timing import best_time

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LLMCTL_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("LLMCTL_TIKTOKEN_FILE", str(SHARED / "tokenizer" / "r50k_base.tiktoken"))


def grpo_split(args: argparse.Namespace) -> dict[str, float]:
    """Average per-step seconds of a short GRPO run (the first step is a warm-up and is dropped)."""
    from llmctl.core import runs
    from llmctl.core.data.prepare_rl import PrepareRLParams
    from llmctl.core.data.prepare_rl import run as prepare_rl
    from llmctl.core.metrics import read_metrics
    from llmctl.core.rl_params import GRPOParams
    from llmctl.core.workspace import init_workspace
    from llmctl.trainers.checkpoint import save_checkpoint
    from llmctl.trainers.grpo import run as grpo
    from llmctl.trainers.model import GPT, GPTConfig

    tmp = Path(tempfile.mkdtemp(prefix="bench_rl_"))
    ws = init_workspace(tmp / "ws")
    prepare_rl(ws, PrepareRLParams(gsm8k=str(SHARED / "gsm8k"), max_examples=200, arithmetic_n=200,
                                   arithmetic_levels=[1]))
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=args.n_embd, block_size=1024))
    save_checkpoint(ws.checkpoints_dir / "sft" / "bench", model, step=0, stage="sft")
    params = GRPOParams(train_data=[args.data], max_steps=args.steps, prompts_per_step=args.prompts,
                        num_generations=args.generations, max_new_tokens=args.new_tokens,
                        micro_batch_size=args.prompts * args.generations, num_iterations=1, kl_coef=0.04,
                        eval_prompts=0, save_every=0, progress=False, samples_per_step=0, device=args.device)
    run_dir = runs.new_run_dir(ws.runs_dir, "grpo")
    grpo(ws, params, run_dir)
    rows = [r for r in read_metrics(run_dir / "metrics.jsonl") if "time/generation" in r][1:]
    out = {k: statistics.mean(r[k] for r in rows) for k in ("time/generation", "time/reward", "time/update")}
    out["rollout_tokens"] = args.prompts * args.generations * args.new_tokens
    return out


def rollout_throughput(args: argparse.Namespace) -> dict[str, float]:
    """Generated tokens/s: ours (KV cache, and without it) vs transformers on identical weights."""
    from transformers import GPT2Config, GPT2LMHeadModel

    from llmctl.core.data.chat import encode_prompt
    from llmctl.core.data.prompts import question_messages
    from llmctl.core.tokenizer import EOT_ID, N_VOCAB, get_tokenizer
    from llmctl.trainers.export_hf import hf_config, hf_state_dict
    from llmctl.trainers.generate import generate
    from llmctl.trainers.model import GPT, GPTConfig

    tok = get_tokenizer()
    device = torch.device(args.device)
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=args.n_embd, block_size=1024)).to(device).eval()
    cfg = {k: v for k, v in hf_config(ours, N_VOCAB).items() if k not in ("architectures", "model_type",
                                                                           "torch_dtype")}
    hf = GPT2LMHeadModel(GPT2Config(**cfg))
    missing, unexpected = hf.load_state_dict(hf_state_dict(ours, N_VOCAB), strict=False)
    assert not unexpected and all("attn.bias" in k or "masked_bias" in k or k == "lm_head.weight"
                                  for k in missing), (missing, unexpected)
    hf.tie_weights()
    hf.to(device).eval()

    lines = (SHARED / "gsm8k" / "test.jsonl").read_text(encoding="utf-8").splitlines()[:args.prompts]
    questions = [json.loads(line)["question"] for line in lines]
    prompts = [encode_prompt(question_messages(q), tok) for q in questions]
    prompts = [p for p in prompts for _ in range(args.generations)]
    B, P, N = len(prompts), max(len(p) for p in prompts), args.new_tokens
    ids = torch.full((B, P), EOT_ID, dtype=torch.long)
    att = torch.zeros((B, P), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):] = torch.tensor(p)
        att[i, P - len(p):] = 1
    ids, att = ids.to(device), att.to(device)

    def ours_cache() -> None:
        generate(ours, prompts, N, temperature=1.0, eos_id=None, seed=1)

    def ours_nocache() -> None:
        generate(ours, prompts, N, temperature=1.0, eos_id=None, seed=1, use_cache=False)

    def theirs() -> None:
        with torch.no_grad():
            out = hf.generate(input_ids=ids, attention_mask=att, do_sample=True, top_k=0, top_p=1.0,
                              temperature=1.0, max_new_tokens=N, min_new_tokens=N, pad_token_id=EOT_ID)
        assert out.shape[1] == P + N

    def timed(fn) -> float:
        return best_time(fn, device, args.repeats)  # after one warm-up call

    # interleave the engines so a load change on a shared machine hits all of them
    res = {"ours (KV cache)": timed(ours_cache), "transformers generate": timed(theirs)}
    if args.no_cache_too:
        res["ours (no cache)"] = timed(ours_nocache)
    return {"batch": B, "prompt_len": P, "new_tokens": N, **{k: B * N / v for k, v in res.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--n-embd", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data", default="data/rl_prompts_train.jsonl")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--no-cache-too", action="store_true", help="also time our generate without the KV cache")
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {args.device}, {torch.get_num_threads()} threads; tiny preset "
          f"(2 layers, 2 heads, n_embd {args.n_embd}); {args.prompts} prompts x {args.generations} samples x "
          f"{args.new_tokens} new tokens", flush=True)

    split = grpo_split(args)
    total = split["time/generation"] + split["time/reward"] + split["time/update"]
    print("\nGRPO step (mean over steps 2..N):")
    for k in ("time/generation", "time/reward", "time/update"):
        print(f"  {k.split('/')[1]:<11} {split[k] * 1000:9.1f} ms  {100 * split[k] / total:5.1f}%")
    print(f"  {'total':<11} {total * 1000:9.1f} ms  ({split['rollout_tokens']} rollout tokens)")

    thr = rollout_throughput(args)
    base = thr["transformers generate"]
    print(f"\nrollout throughput (batch {thr['batch']}, prompt {thr['prompt_len']} tokens, "
          f"{thr['new_tokens']} new tokens, best of {args.repeats}):")
    for k, v in thr.items():
        if isinstance(k, str) and k not in ("batch", "prompt_len", "new_tokens"):
            print(f"  {k:<22} {v:10.0f} tokens/s   x{v / base:.2f} vs transformers")


if __name__ == "__main__":
    sys.exit(main())
