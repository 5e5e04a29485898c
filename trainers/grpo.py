"""``llmctl run grpo``: group-relative policy optimisation with verifier rewards.

Each step: ``prompts_per_step`` prompts, ``num_generations`` (G) samples each from the KV-cache
generator; the shared verifier scores them (correct answer + ``format_weight`` x format score);
advantages are the rewards minus their group's mean, divided by the group's std (not for
``dr_grpo``); then ``num_iterations`` optimizer steps on the clipped-ratio objective with a k3
KL penalty to the frozen reference (none kept when ``kl_coef`` is 0). Rollouts (all or a sample)
go to ``samples.jsonl``; a step where every completion was truncated or every reward is zero is
logged as a ``warning``. The held-out table (greedy accuracy as ``eval/accuracy``, pass@1 and
pass@k at the rollout temperature, format, length, per level) is logged before the first step and
at every evaluation, and kept before/after in the run's ``heldout.json``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from llmctl.core.rl_params import GRPOParams
from llmctl.core.workspace import Workspace
from llmctl.trainers import onpolicy, rl_trainer
from llmctl.trainers.heads import PolicyModel
from llmctl.trainers.loop import session, start_note
from llmctl.trainers.rl_losses import entropy_from_logits, group_std, grpo_advantages, grpo_loss, masked_mean
from llmctl.trainers.rollout import (
    Rollout,
    completion_logprobs,
    load_run_prompts,
    rollout_warning,
    score_rollout,
)

STAGE = "grpo"
NEEDS = "sft"
COUNTS = {"eval_accuracy": "eval/accuracy", "reward": "reward"}  # manifest counts -> metric keys


def grpo_updates(r: rl_trainer.Run, ro: Rollout, adv: torch.Tensor,
                 ref_lp: torch.Tensor | None) -> tuple[torch.Tensor, list[float], list[float], list[float]]:
    """``num_iterations`` updates on the clipped-ratio objective: (kl x tokens, clipped x tokens,
    entropy) sums, and the losses, grad norms and lrs of the updates."""
    p = r.s.params
    cmask = ro.completion_mask
    n_tok = cmask.sum().clamp(min=1.0)
    # the first update runs on the sampling weights: its own log-probs (detached) are the "old"
    # ones, kept for the later iterations -- no separate forward pass needed
    old_lp = torch.zeros_like(cmask)
    acc = torch.zeros(3, device=r.s.device)

    def micro_loss(it: int, j: int, sl: slice, logits: torch.Tensor, _: Any, lp: torch.Tensor) -> torch.Tensor:
        if it == 0:
            old_lp[sl] = lp.detach()
        loss, st = grpo_loss(lp, old_lp[sl], ref_lp[sl] if ref_lp is not None else None, adv[sl], cmask[sl],
                             p.clip_eps, p.kl_coef, p.loss_type, p.clip_eps_high or None, p.max_new_tokens)
        mtok = cmask[sl].sum()
        with torch.no_grad():
            acc[0] += st["kl"] * mtok
            acc[1] += st["clip_fraction"] * mtok
            if it == 0 and j == 0:  # entropy: estimated on the first micro-batch (it costs a softmax)
                acc[2] += masked_mean(entropy_from_logits(logits.detach()), cmask[sl])
        return loss * (mtok / n_tok if p.loss_type == "bnpo" else (sl.stop - sl.start) / len(ro))

    losses, norms, lrs = onpolicy.policy_updates(r, ro, p.num_iterations, micro_loss)
    return acc, losses, norms, lrs


def grpo_step(r: rl_trainer.Run, ref: PolicyModel | None, rows: list[dict[str, Any]], tok: Any) -> rl_trainer.Row:
    """Sample, score, group-normalise, update; the step's metrics row."""
    s, p = r.s, r.s.params
    G = p.num_generations
    t0 = time.perf_counter()
    ro = onpolicy.sample_step(r, rows, tok)
    t1 = time.perf_counter()
    rewards = score_rollout(ro, p.format_weight).to(s.device)
    t2 = time.perf_counter()
    adv = grpo_advantages(rewards, G, scale_std=p.scale_rewards and p.loss_type != "dr_grpo")
    std = group_std(rewards, G).view(-1, G)[:, 0]
    ref_lp = completion_logprobs(ref, ro, p.micro_batch_size, autocast=s.autocast())[0] if ref is not None else None
    acc, losses, norms, lrs = grpo_updates(r, ro, adv, ref_lp)
    t3 = time.perf_counter()
    n = ro.completion_mask.sum().clamp(min=1.0) * p.num_iterations
    row = {
        "reward": rewards.mean().item(),
        "reward_std": std.mean().item(),
        "frac_reward_zero_std": (std < 1e-6).float().mean().item(),
        **onpolicy.verifier_row(ro),
        "kl": (acc[0] / n).item(),
        "clip_fraction": (acc[1] / n).item(),
        "entropy": acc[2].item(),
        "loss": sum(losses) / p.num_iterations,
        **onpolicy.update_row(ro, norms, lrs, (t0, t1, t2, t3)),
        "rollout_tokens_per_s": sum(ro.lengths) / max(t1 - t0, 1e-9),
    }
    return onpolicy.finish_row(r, row, ro, rollout_warning(ro, rewards), advantage=adv.tolist())


def run(ws: Workspace, params: GRPOParams, run_dir: Path) -> dict[str, Any]:
    """Train the policy with GRPO; return the summary (rewards, held-out accuracy, checkpoint)."""
    p = params
    with session(ws, p, run_dir, STAGE) as s:
        rows, held, inputs = load_run_prompts(ws, p, p.train_data, need_gold=True)
        gpt, resume, start, ref_src = rl_trainer.start_policy(s, NEEDS)
        ref = PolicyModel(rl_trainer.load_reference(s, ref_src)) if p.kl_coef > 0 else None
        inputs["reference"] = ref_src if ref is not None else None
        r = rl_trainer.begin(s, gpt, PolicyModel(gpt), total_steps=p.max_steps * p.num_iterations, resume=resume,
                             start=start, inputs=inputs, reference=ref_src, counts=COUNTS, samples=True)
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, {len(rows)} train prompts, {len(held)} held out, "
              f"{p.prompts_per_step} prompts x {p.num_generations} samples x {s.dist.world_size} processes per "
              f"step, {p.num_iterations} updates per batch, {p.loss_type} loss, kl_coef {p.kl_coef}, {s.device}"
              + start_note(resume, ref_src))
        tok = ws.tokenizer()
        return rl_trainer.train(r, rl_trainer.Loop(
            step=lambda: grpo_step(r, ref, rows, tok),
            progress=lambda row: (f"reward {row['reward']:.3f} kl {row['kl']:.4f} "
                                  f"len {row['completions/mean_length']:.1f}"),
            summary=lambda row, ev: {"reward": row.get("reward"), "eval_accuracy": ev.get("eval/accuracy")},
            evaluate=(lambda: onpolicy.held_out_table(r, held, tok)) if held else None,
            eval_line=onpolicy.held_out_line,
            eval_first=True))
