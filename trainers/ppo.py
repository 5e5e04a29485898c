"""``llmctl run ppo``: PPO with a value head, GAE and a per-token KL penalty.

The policy (newest SFT checkpoint unless ``--init``) carries a scalar ``value_head`` on its
hidden states. Each step samples completions, scores them -- with the shared verifier on math
prompts (``--reward verifier``), or with a reward-model checkpoint on the preference prompts
(``--reward reward_model``) -- and shapes per-token rewards: ``-kl_coef * (log pi - log pi_ref)``
at every token plus the score at the last one. GAE gives advantages and returns; then
``ppo_epochs`` optimizer steps on the clipped policy loss plus ``vf_coef`` x the clipped value
loss. Logged: ``reward``, ``kl``, ``value_loss``, ``policy_loss``, ``clip_fraction``,
``explained_variance``, ``entropy``, ``completions/*`` (and ``eval/*`` on held-out prompts).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from llmctl.core.artifacts import newest_checkpoint
from llmctl.core.rl_params import PPOParams
from llmctl.core.workspace import Workspace
from llmctl.trainers import distributed, onpolicy, rl_trainer
from llmctl.trainers.checkpoint import resolve_checkpoint
from llmctl.trainers.generate import generate
from llmctl.trainers.heads import VALUE_HEAD, PolicyModel, RewardModel, attach_head, load_reward_model
from llmctl.trainers.loop import Session, session, start_note
from llmctl.trainers.rl_losses import (
    entropy_from_logits,
    explained_variance,
    gae,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
)
from llmctl.trainers.rollout import (
    Rollout,
    completion_logprobs,
    load_run_prompts,
    micro_batches,
    pack,
    prompt_ids,
    rollout_warning,
    score_rollout,
)

STAGE = "ppo"
NEEDS = "sft"
COUNTS = {"eval_accuracy": "eval/accuracy", "eval_reward": "eval/reward", "reward": "reward"}


def default_prompt_files(p: PPOParams) -> list[str]:
    """Prompt files: ``--train-data``, else by reward source."""
    if p.train_data:
        return list(p.train_data)
    return ["data/preferences.jsonl"] if p.reward == "reward_model" else ["data/arithmetic_prompts.jsonl"]


def load_scorer(ws: Workspace, s: Session, p: PPOParams) -> tuple[RewardModel, Path]:
    """The reward model (``--reward-model``, else the newest reward checkpoint) and its checkpoint."""
    src = ws.path(p.reward_model) if p.reward_model else newest_checkpoint(ws.checkpoints_dir / "reward")
    if src is None:
        raise FileNotFoundError("ppo: no reward model in checkpoints/reward: run `llmctl run reward` first "
                                "or pass --reward-model CKPT")
    path = resolve_checkpoint(src)
    return load_reward_model(path, s.device), path


@torch.no_grad()
def rm_scores(rm: RewardModel, ro: Rollout, micro_batch_size: int, autocast: Any) -> torch.Tensor:
    """Reward-model scores (N,) of the rollout's prompt + completion rows."""
    out = []
    for sl in micro_batches(len(ro), micro_batch_size):
        with autocast:
            out.append(rm(ro.input_ids[sl], attention_mask=ro.attention_mask[sl]).float())
    return torch.cat(out)


@torch.no_grad()
def held_out_rm_reward(s: Session, gpt: Any, rm: RewardModel, held: list[dict[str, Any]], tok: Any) -> dict[str, float]:
    """Mean reward-model score of greedy completions to the held-out prompts (``eval/reward``)."""
    p = s.params
    mine = held[s.dist.rank::s.dist.world_size]
    total = torch.zeros(2, device=s.device, dtype=torch.float64)
    for b0 in range(0, len(mine), p.micro_batch_size):
        chunk = mine[b0:b0 + p.micro_batch_size]
        prompts = [prompt_ids(r, tok, p.max_prompt_length) for r in chunk]
        outs = generate(gpt, prompts, p.max_new_tokens, temperature=0.0, dtype=onpolicy.generation_dtype(s))
        ids, att, _, _ = pack(prompts, outs, s.device)
        with s.autocast():
            sc = rm(ids, attention_mask=att).double()
        total += torch.stack([sc.sum(), torch.tensor(float(len(chunk)), device=s.device, dtype=torch.float64)])
    distributed.all_reduce_sum(total)
    return {"eval/reward": (total[0] / total[1].clamp(min=1)).item()}


def ppo_updates(r: rl_trainer.Run, ro: Rollout, old_lp: torch.Tensor, old_v: torch.Tensor, adv: torch.Tensor,
                returns: torch.Tensor) -> tuple[torch.Tensor, float, list[float], list[float]]:
    """``ppo_epochs`` updates on the clipped policy loss + ``vf_coef`` x the clipped value loss:
    per-token means of (policy loss, value loss, clip, value clip, approx kl), entropy, norms, lrs."""
    p = r.s.params
    cmask = ro.completion_mask
    n_tok = cmask.sum().clamp(min=1.0)
    acc = torch.zeros(5, device=r.s.device)  # the five statistics x tokens
    entropy = [0.0]

    def micro_loss(ep: int, j: int, sl: slice, logits: torch.Tensor, values: Any, lp: torch.Tensor) -> torch.Tensor:
        m = cmask[sl]
        pg, pst = ppo_policy_loss(lp, old_lp[sl], adv[sl], m, p.clip_eps)
        vf, vst = ppo_value_loss(values.float(), old_v[sl], returns[sl], m, p.cliprange_value)
        mtok = m.sum()
        with torch.no_grad():
            acc.add_(torch.stack([pg.detach(), vf.detach(), pst["clip_fraction"], vst["value_clip_fraction"],
                                  pst["approx_kl"]]) * mtok)
            if ep == 0 and j == 0:  # entropy: estimated on the first micro-batch
                entropy[0] = masked_mean(entropy_from_logits(logits.detach()), m).item()
        return (pg + p.vf_coef * vf) * (mtok / n_tok)

    _, norms, lrs = onpolicy.policy_updates(r, ro, p.ppo_epochs, micro_loss)
    return acc / (n_tok * p.ppo_epochs), entropy[0], norms, lrs


def advantages(p: PPOParams, scores: torch.Tensor, old_lp: torch.Tensor, ref_lp: torch.Tensor,
               old_v: torch.Tensor, cmask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(advantages, returns, per-token KL): KL-shaped per-token rewards, then GAE."""
    shaped = masked_whiten(scores, torch.ones_like(scores), shift_mean=False) if p.whiten_rewards else scores
    rewards, kl = per_token_rewards(shaped, old_lp, ref_lp, cmask, p.kl_coef)
    adv, returns = gae(rewards, old_v, cmask, p.gamma, p.lam)
    if p.whiten_advantages:
        adv = masked_whiten(adv, cmask) * cmask
    return adv, returns, kl


def ppo_step(r: rl_trainer.Run, policy: PolicyModel, rm: RewardModel | None, ref: PolicyModel | None,
             rows: list[dict[str, Any]], tok: Any) -> rl_trainer.Row:
    """Sample, score (verifier or reward model), shape and GAE, update; the step's metrics row."""
    s, p = r.s, r.s.params
    mb = p.micro_batch_size
    t0 = time.perf_counter()
    ro = onpolicy.sample_step(r, rows, tok)
    t1 = time.perf_counter()
    scores = rm_scores(rm, ro, mb, s.autocast()) if rm is not None else score_rollout(ro, p.format_weight).to(s.device)
    t2 = time.perf_counter()
    cmask = ro.completion_mask
    old_lp, old_v, _ = completion_logprobs(policy, ro, mb, autocast=s.autocast(), with_values=True)
    ref_lp = completion_logprobs(ref, ro, mb, autocast=s.autocast())[0] if ref is not None else old_lp
    adv, returns, kl = advantages(p, scores, old_lp, ref_lp, old_v, cmask)
    acc, entropy, norms, lrs = ppo_updates(r, ro, old_lp, old_v, adv, returns)
    t3 = time.perf_counter()
    row = {
        "reward": scores.mean().item(),
        "reward_std": scores.std().item() if len(scores) > 1 else 0.0,
        "kl": masked_mean(kl, cmask).item(),
        "kl/sequence": (kl * cmask).sum(1).mean().item(),
        "policy_loss": acc[0].item(),
        "value_loss": acc[1].item(),
        "clip_fraction": acc[2].item(),
        "value_clip_fraction": acc[3].item(),
        "approx_kl": acc[4].item(),
        "explained_variance": explained_variance(old_v, returns, cmask).item(),
        "values/mean": masked_mean(old_v, cmask).item(),
        "returns/mean": masked_mean(returns, cmask).item(),
        "entropy": entropy,
        **onpolicy.update_row(ro, norms, lrs, (t0, t1, t2, t3)),
        **onpolicy.verifier_row(ro),
    }
    warning = rollout_warning(ro, scores) if rm is None else rollout_warning(ro, torch.ones(1))
    return onpolicy.finish_row(r, row, ro, warning, **({"score": scores.tolist()} if rm is not None else {}))


def run(ws: Workspace, params: PPOParams, run_dir: Path) -> dict[str, Any]:
    """Train the policy with PPO; return the summary (rewards, held-out score, checkpoint)."""
    p = params
    with session(ws, p, run_dir, STAGE) as s:
        use_rm = p.reward == "reward_model"
        rows, held, inputs = load_run_prompts(ws, p, default_prompt_files(p), need_gold=not use_rm)
        rm, rm_path = load_scorer(ws, s, p) if use_rm else (None, None)
        if rm_path is not None:
            inputs["reward_model"] = str(rm_path)
        gpt, resume, start, ref_src = rl_trainer.start_policy(s, NEEDS)
        attach_head(gpt, VALUE_HEAD, resume["extra_weights"] if resume else None)
        ref = PolicyModel(rl_trainer.load_reference(s, ref_src)) if p.kl_coef > 0 else None
        inputs["reference"] = ref_src if ref is not None else None
        policy = PolicyModel(gpt, with_value=True)
        r = rl_trainer.begin(s, gpt, policy, total_steps=p.max_steps * p.ppo_epochs, resume=resume, start=start,
                             inputs=inputs, reference=ref_src, counts=COUNTS, samples=True)
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, rewards from the "
              f"{'reward model ' + str(rm_path) if use_rm else 'verifier'}, {len(rows)} train prompts, "
              f"{len(held)} held out, {p.prompts_per_step} prompts x {p.num_generations} samples x "
              f"{s.dist.world_size} processes per step, {p.ppo_epochs} epochs, kl_coef {p.kl_coef}, {s.device}"
              + start_note(resume, ref_src))
        tok = ws.tokenizer()

        def evaluate() -> dict[str, float]:
            if rm is not None:
                return held_out_rm_reward(s, gpt, rm, held, tok)
            return onpolicy.held_out_table(r, held, tok)

        return rl_trainer.train(r, rl_trainer.Loop(
            step=lambda: ppo_step(r, policy, rm, ref, rows, tok),
            progress=lambda row: (f"reward {row['reward']:.3f} kl {row['kl']:.4f} "
                                  f"vloss {row['value_loss']:.4f}"),
            summary=lambda row, ev: {"reward": row.get("reward"), **{k.replace("/", "_"): v for k, v in ev.items()}},
            evaluate=evaluate if held else None,
            eval_line=(lambda ev: f"held-out reward {ev['eval/reward']:.3f}") if rm is not None else onpolicy.held_out_line,
            eval_first=True))
