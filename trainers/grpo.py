"""``llmctl run grpo``: group-relative policy optimisation with verifier rewards.

Each step: ``prompts_per_step`` prompts, ``num_generations`` (G) samples each from the KV-cache
generator; the shared verifier scores them (correct answer + ``format_weight`` x format score);
advantages are the rewards minus their group's mean, divided by the group's std (not for
``dr_grpo``); then ``num_iterations`` optimizer steps on the clipped-ratio objective with a k3
KL penalty to the frozen reference (none kept when ``kl_coef`` is 0). Rollouts (all or a sample)
go to ``samples.jsonl``; a step where every completion was truncated or every reward is zero is
logged as a ``warning``. Held-out accuracy (greedy) is logged as ``eval/accuracy``.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from llmctl.core.metrics import MetricsWriter
from llmctl.core.rl_params import GRPOParams
from llmctl.core.runs import SAMPLES_FILE
from llmctl.trainers import distributed as D
from llmctl.trainers import rl_common as R
from llmctl.trainers import rollout as RO
from llmctl.trainers.checkpoint import set_rng_state
from llmctl.trainers.heads import PolicyModel
from llmctl.trainers.loop import Progress, Session, continue_metrics
from llmctl.trainers.rl_losses import (
    entropy_from_logits,
    gather_logprobs,
    group_std,
    grpo_advantages,
    grpo_loss,
    masked_mean,
)

STAGE = "grpo"
NEEDS = "sft"


def held_out_accuracy(s: Session, gpt: Any, held: list[dict[str, Any]], tok: Any, p: Any,
                      gen_dtype: Any) -> dict[str, float]:
    """Greedy held-out accuracy over every process's share of ``held`` (also used by PPO)."""
    mine = held[s.dist.rank::s.dist.world_size]
    res = RO.evaluate_accuracy(gpt, mine, tok, max_new_tokens=p.max_new_tokens,
                               max_prompt_length=p.max_prompt_length, batch_size=max(8, p.micro_batch_size),
                               dtype=gen_dtype) if mine else {}
    keys = ("eval/accuracy", "eval/format", "eval/mean_length")
    t = torch.tensor([res.get(k, 0.0) * len(mine) for k in keys] + [float(len(mine))], device=s.device,
                     dtype=torch.float64)
    D.all_reduce_sum(t)
    n = max(t[-1].item(), 1.0)
    return {k: t[i].item() / n for i, k in enumerate(keys)}


def run(ws: Any, params: GRPOParams, run_dir: Path) -> dict[str, Any]:
    """Train the policy with GRPO; return the summary (rewards, held-out accuracy, checkpoint)."""
    p = params
    s = Session(ws, p, run_dir, STAGE)
    try:
        rows, held, inputs = RO.load_run_prompts(ws, p, p.train_data, need_gold=True)
        gpt, resume, start, ref_src = R.start_policy(s, NEEDS)
        ref = PolicyModel(R.load_reference(s, ref_src)) if p.kl_coef > 0 else None
        tok = ws.tokenizer()
        policy = PolicyModel(gpt)
        G, mb = p.num_generations, p.micro_batch_size
        opt, sched = R.make_optim(s, policy, p.max_steps * p.num_iterations, resume)
        step = 0
        if resume is not None:
            step = int(resume["step"])
            continue_metrics(s, start, step)
            R.continue_file(s, start, SAMPLES_FILE, step)
            set_rng_state(resume["rng"])
        inputs["reference"] = ref_src if ref is not None else None
        s.provenance(seed=p.seed, inputs=inputs, model=gpt.config.to_dict(),
                     start_checkpoint=str(start) if start else None,
                     resumed_step=step if resume is not None else None)
        world, rank = s.dist.world_size, s.dist.rank
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, {len(rows)} train prompts, {len(held)} held out, "
              f"{p.prompts_per_step} prompts x {G} samples x {world} processes per step, {p.num_iterations} "
              f"updates per batch, {p.loss_type} loss, kl_coef {p.kl_coef}, {s.device}"
              + (f", resuming at step {step}" if resume else f", from {ref_src}"))
        gen_dtype = s.dtype if s.device.type == "cuda" else None
        samples = MetricsWriter(s.run_dir / SAMPLES_FILE) if s.is_main else None
        model = D.wrap_ddp(policy, s.device)
        model.train()
        last_path: Path | None = None
        ev: dict[str, float] = {}
        row: dict[str, Any] = {}

        def do_save(at: int) -> Path | None:
            nonlocal last_path
            counts = {"eval_accuracy": ev.get("eval/accuracy"), "reward": row.get("reward")}
            last_path = R.save(s, gpt, opt, sched, at, {"reference": ref_src}, inputs=inputs, counts=counts)
            return last_path

        if held and resume is None:
            ev = held_out_accuracy(s, gpt, held, tok, p, gen_dtype)
            s.log(0, ev)
            s.say(f"{STAGE} step 0: held-out accuracy {ev['eval/accuracy']:.3f}")
        s.progress = Progress(p.max_steps, step, STAGE, enabled=p.progress and s.is_main)
        while step < p.max_steps:
            if R.stop_requested(s):
                raise R.cancelled(s, step, do_save(step))
            # ---- rollout
            t0 = time.perf_counter()
            batch_rows = RO.step_prompts(rows, p.prompts_per_step, p.seed, step, rank, world)
            ro = RO.sample_rollout(gpt, batch_rows, tok, num_generations=G, max_new_tokens=p.max_new_tokens,
                                   max_prompt_length=p.max_prompt_length, temperature=p.temperature,
                                   top_k=p.top_k, top_p=p.top_p, seed=(p.seed * 1_000_003 + step) * 64 + rank,
                                   dtype=gen_dtype)
            t1 = time.perf_counter()
            rewards = RO.score_rollout(ro, p.format_weight).to(s.device)
            t2 = time.perf_counter()
            adv = grpo_advantages(rewards, G, scale_std=p.scale_rewards and p.loss_type != "dr_grpo")
            std = group_std(rewards, G)
            # the first update runs on the sampling weights: its own log-probs (detached) are the
            # "old" ones, kept for the later iterations -- no separate forward pass needed
            old_lp = torch.zeros_like(ro.completion_mask)
            ref_lp = RO.completion_logprobs(ref, ro, mb, autocast=s.autocast())[0] if ref is not None else None
            # ---- updates
            cmask = ro.completion_mask
            n_tok = cmask.sum().clamp(min=1.0)
            acc = torch.zeros(4, device=s.device)  # kl x tokens, clipped x tokens, entropy sum, loss
            norms, lrs = [], []
            for it in range(p.num_iterations):
                it_loss = 0.0
                slices = RO.micro_batches(len(ro), mb)
                for j, sl in enumerate(slices):
                    last = j == len(slices) - 1
                    sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
                    with sync:
                        with s.autocast():
                            logits, _ = model(ro.input_ids[sl], ro.attention_mask[sl], ro.start, ro.temperature)
                        lp = gather_logprobs(logits, ro.input_ids[sl, ro.start:])
                        if it == 0:
                            old_lp[sl] = lp.detach()
                        old = old_lp[sl]
                        loss, st = grpo_loss(lp, old, ref_lp[sl] if ref_lp is not None else None, adv[sl], cmask[sl],
                                             p.clip_eps, p.kl_coef, p.loss_type, p.clip_eps_high or None,
                                             p.max_new_tokens)
                        mtok = cmask[sl].sum()
                        weight = mtok / n_tok if p.loss_type == "bnpo" else (sl.stop - sl.start) / len(ro)
                        (loss * weight).backward()
                    with torch.no_grad():
                        acc[0] += st["kl"] * mtok
                        acc[1] += st["clip_fraction"] * mtok
                        it_loss += float(loss.detach() * weight)
                        if it == 0 and j == 0:  # entropy: estimated on the first micro-batch (it costs a softmax)
                            acc[2] += masked_mean(entropy_from_logits(logits.detach()), cmask[sl])
                    del logits, lp
                acc[3] += it_loss
                norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip or float("inf")))
                R.check_finite(s, step + 1, it_loss, norm, lambda at=step: do_save(at))
                lrs.append(sched.get_last_lr()[0])
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                norms.append(norm)
            t3 = time.perf_counter()
            step += 1
            # ---- metrics
            scores = ro.scores
            stats = RO.rollout_stats(ro)
            row = {
                "reward": rewards.mean().item(),
                "reward_std": std.view(-1, G)[:, 0].mean().item(),
                "frac_reward_zero_std": (std.view(-1, G)[:, 0] < 1e-6).float().mean().item(),
                "rewards/correct": sum(x.correct for x in scores) / len(scores),
                "rewards/format": sum(x.format for x in scores) / len(scores),
                "kl": (acc[0] / (n_tok * p.num_iterations)).item(),
                "clip_fraction": (acc[1] / (n_tok * p.num_iterations)).item(),
                "entropy": acc[2].item(),
                "loss": acc[3].item() / p.num_iterations,
                **stats,
                "grad_norm": sum(norms) / len(norms),
                "lr": lrs[0],
                "time/generation": t1 - t0,
                "time/reward": t2 - t1,
                "time/update": t3 - t2,
                "rollout_tokens_per_s": sum(ro.lengths) / max(t1 - t0, 1e-9),
            }
            row = R.mean_over_ranks(row, s.device)
            warning = RO.rollout_warning(ro, rewards)
            warning = D.broadcast_object(warning)
            if warning:
                row["warning"] = warning
                s.say(f"{STAGE} step {step}: warning: {warning}")
            if samples is not None and p.samples_per_step:
                for rec in RO.sample_records(ro, p.samples_per_step, p.seed + step, advantage=adv.tolist()):
                    samples.log(step, rec)
            if step % p.log_every == 0 or step == p.max_steps or warning:
                s.log(step, row)
                s.progress.update(step, f"reward {row['reward']:.3f} kl {row['kl']:.4f} "
                                        f"len {row['completions/mean_length']:.1f}", line=True)
            else:
                s.progress.update(step)
            if held and ((p.eval_every and step % p.eval_every == 0) or step == p.max_steps):
                ev = held_out_accuracy(s, gpt, held, tok, p, gen_dtype)
                s.log(step, ev)
                s.say(f"{STAGE} step {step}: held-out accuracy {ev['eval/accuracy']:.3f}")
            if (p.save_every and step % p.save_every == 0) or step == p.max_steps:
                do_save(step)
        s.progress.close()
        if samples is not None:
            samples.close()
        s.say(f"{STAGE}: done at step {step}, checkpoint {last_path}")
        return {"step": step, "reward": row.get("reward"), "eval_accuracy": ev.get("eval/accuracy"),
                "checkpoint": str(last_path) if last_path else None, "checkpoints": str(s.ckpt_dir)}
    finally:
        s.close()
