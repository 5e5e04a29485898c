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

import contextlib
import time
from pathlib import Path
from typing import Any

import torch

from llmctl.core.artifacts import newest_checkpoint
from llmctl.core.metrics import MetricsWriter
from llmctl.core.rl_params import PPOParams
from llmctl.core.runs import SAMPLES_FILE
from llmctl.trainers import distributed as D
from llmctl.trainers import rl_common as R
from llmctl.trainers import rollout as RO
from llmctl.trainers.checkpoint import resolve_checkpoint, set_rng_state
from llmctl.trainers.generate import generate
from llmctl.trainers.grpo import held_out_accuracy
from llmctl.trainers.heads import VALUE_HEAD, PolicyModel, RewardModel, attach_head, load_reward_model
from llmctl.trainers.loop import Progress, Session, continue_metrics
from llmctl.trainers.rl_losses import (
    entropy_from_logits,
    explained_variance,
    gae,
    gather_logprobs,
    masked_mean,
    masked_whiten,
    per_token_rewards,
    ppo_policy_loss,
    ppo_value_loss,
)

STAGE = "ppo"
NEEDS = "sft"


def default_prompt_files(p: PPOParams) -> list[str]:
    """Prompt files: ``--train-data``, else by reward source."""
    if p.train_data:
        return list(p.train_data)
    return ["data/preferences.jsonl"] if p.reward == "reward_model" else ["data/arithmetic_prompts.jsonl"]


@torch.no_grad()
def rm_scores(rm: RewardModel, ro: RO.Rollout, micro_batch_size: int, autocast: Any) -> torch.Tensor:
    """Reward-model scores (N,) of the rollout's prompt + completion rows."""
    out = []
    for sl in RO.micro_batches(len(ro), micro_batch_size):
        with autocast:
            out.append(rm(ro.input_ids[sl], attention_mask=ro.attention_mask[sl]).float())
    return torch.cat(out)


@torch.no_grad()
def held_out_rm_reward(s: Session, gpt: Any, rm: RewardModel, held: list[dict[str, Any]], tok: Any,
                       p: PPOParams, gen_dtype: Any) -> dict[str, float]:
    """Mean reward-model score of greedy completions to the held-out prompts (``eval/reward``)."""
    mine = held[s.dist.rank::s.dist.world_size]
    total = torch.zeros(2, device=s.device, dtype=torch.float64)
    for b0 in range(0, len(mine), p.micro_batch_size):
        chunk = mine[b0:b0 + p.micro_batch_size]
        prompts = [RO.prompt_ids(r, tok, p.max_prompt_length) for r in chunk]
        outs = generate(gpt, prompts, p.max_new_tokens, temperature=0.0, dtype=gen_dtype)
        ids, att, _, _ = RO.pack(prompts, outs, s.device)
        with s.autocast():
            sc = rm(ids, attention_mask=att).double()
        total += torch.stack([sc.sum(), torch.tensor(float(len(chunk)), device=s.device, dtype=torch.float64)])
    D.all_reduce_sum(total)
    return {"eval/reward": (total[0] / total[1].clamp(min=1)).item()}


def run(ws: Any, params: PPOParams, run_dir: Path) -> dict[str, Any]:
    """Train the policy with PPO; return the summary (rewards, held-out score, checkpoint)."""
    p = params
    s = Session(ws, p, run_dir, STAGE)
    try:
        use_rm = p.reward == "reward_model"
        rows, held, inputs = RO.load_run_prompts(ws, p, default_prompt_files(p), need_gold=not use_rm)
        rm = None
        if use_rm:
            src = ws.path(p.reward_model) if p.reward_model else newest_checkpoint(ws.checkpoints_dir / "reward")
            if src is None:
                raise FileNotFoundError("ppo: no reward model in checkpoints/reward: run `llmctl run reward` first "
                                        "or pass --reward-model CKPT")
            rm_path = resolve_checkpoint(src)
            rm = load_reward_model(rm_path, s.device)
            inputs["reward_model"] = str(rm_path)
        gpt, resume, start, ref_src = R.start_policy(s, NEEDS)
        attach_head(gpt, VALUE_HEAD, resume["extra_weights"] if resume else None)
        ref = PolicyModel(R.load_reference(s, ref_src)) if p.kl_coef > 0 else None
        tok = ws.tokenizer()
        policy = PolicyModel(gpt, with_value=True)
        G, mb = p.num_generations, p.micro_batch_size
        opt, sched = R.make_optim(s, policy, p.max_steps * p.ppo_epochs, resume)
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
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, rewards from the "
              f"{'reward model ' + inputs['reward_model'] if use_rm else 'verifier'}, {len(rows)} train prompts, "
              f"{len(held)} held out, {p.prompts_per_step} prompts x {G} samples x {world} processes per step, "
              f"{p.ppo_epochs} epochs, kl_coef {p.kl_coef}, {s.device}"
              + (f", resuming at step {step}" if resume else f", from {ref_src}"))
        gen_dtype = s.dtype if s.device.type == "cuda" else None
        samples = MetricsWriter(s.run_dir / SAMPLES_FILE) if s.is_main else None
        model = D.wrap_ddp(policy, s.device)
        model.train()
        last_path: Path | None = None
        ev: dict[str, float] = {}
        row: dict[str, Any] = {}

        def evaluate() -> dict[str, float]:
            if rm is not None:
                return held_out_rm_reward(s, gpt, rm, held, tok, p, gen_dtype)
            return held_out_accuracy(s, gpt, held, tok, p, gen_dtype)

        def do_save(at: int) -> Path | None:
            nonlocal last_path
            counts = {"eval_accuracy": ev.get("eval/accuracy"), "eval_reward": ev.get("eval/reward"),
                      "reward": row.get("reward")}
            last_path = R.save(s, gpt, opt, sched, at, {"reference": ref_src}, inputs=inputs, counts=counts)
            return last_path

        if held and resume is None:
            ev = evaluate()
            s.log(0, ev)
            s.say(f"{STAGE} step 0: held-out {', '.join(f'{k} {v:.3f}' for k, v in ev.items())}")
        s.progress = Progress(p.max_steps, step, STAGE, enabled=p.progress and s.is_main)
        while step < p.max_steps:
            if R.stop_requested(s):
                raise R.cancelled(s, step, do_save(step))
            # ---- rollout and scoring
            t0 = time.perf_counter()
            batch_rows = RO.step_prompts(rows, p.prompts_per_step, p.seed, step, rank, world)
            ro = RO.sample_rollout(gpt, batch_rows, tok, num_generations=G, max_new_tokens=p.max_new_tokens,
                                   max_prompt_length=p.max_prompt_length, temperature=p.temperature,
                                   top_k=p.top_k, top_p=p.top_p, seed=(p.seed * 1_000_003 + step) * 64 + rank,
                                   dtype=gen_dtype)
            t1 = time.perf_counter()
            if rm is not None:
                scores = rm_scores(rm, ro, mb, s.autocast())
            else:
                scores = RO.score_rollout(ro, p.format_weight).to(s.device)
            t2 = time.perf_counter()
            cmask = ro.completion_mask
            old_lp, old_v, _ = RO.completion_logprobs(policy, ro, mb, autocast=s.autocast(), with_values=True)
            ref_lp = RO.completion_logprobs(ref, ro, mb, autocast=s.autocast())[0] if ref is not None else old_lp
            shaped = masked_whiten(scores, torch.ones_like(scores), shift_mean=False) if p.whiten_rewards else scores
            rewards, kl = per_token_rewards(shaped, old_lp, ref_lp, cmask, p.kl_coef)
            adv, returns = gae(rewards, old_v, cmask, p.gamma, p.lam)
            if p.whiten_advantages:
                adv = masked_whiten(adv, cmask) * cmask
            # ---- updates
            n_tok = cmask.sum().clamp(min=1.0)
            acc = torch.zeros(5, device=s.device)  # policy loss, value loss, clip, value clip, approx kl (x tokens)
            entropy = 0.0
            norms, lrs = [], []
            for ep in range(p.ppo_epochs):
                slices = RO.micro_batches(len(ro), mb)
                ep_loss = 0.0
                for j, sl in enumerate(slices):
                    last = j == len(slices) - 1
                    sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
                    with sync:
                        with s.autocast():
                            logits, values = model(ro.input_ids[sl], ro.attention_mask[sl], ro.start, ro.temperature)
                        lp = gather_logprobs(logits, ro.input_ids[sl, ro.start:])
                        m = cmask[sl]
                        pg, pst = ppo_policy_loss(lp, old_lp[sl], adv[sl], m, p.clip_eps)
                        vf, vst = ppo_value_loss(values.float(), old_v[sl], returns[sl], m, p.cliprange_value)
                        mtok = m.sum()
                        weight = mtok / n_tok
                        loss = (pg + p.vf_coef * vf) * weight
                        loss.backward()
                    with torch.no_grad():
                        acc += torch.stack([pg.detach(), vf.detach(), pst["clip_fraction"],
                                            vst["value_clip_fraction"], pst["approx_kl"]]) * mtok
                        ep_loss += float(loss.detach())
                        if ep == 0 and j == 0:  # entropy: estimated on the first micro-batch
                            entropy = masked_mean(entropy_from_logits(logits.detach()), m).item()
                    del logits, lp, values
                norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip or float("inf")))
                R.check_finite(s, step + 1, ep_loss, norm, lambda at=step: do_save(at))
                lrs.append(sched.get_last_lr()[0])
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                norms.append(norm)
            t3 = time.perf_counter()
            step += 1
            # ---- metrics
            acc = acc / (n_tok * p.ppo_epochs)
            stats = RO.rollout_stats(ro)
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
                **stats,
                "grad_norm": sum(norms) / len(norms),
                "lr": lrs[0],
                "time/generation": t1 - t0,
                "time/reward": t2 - t1,
                "time/update": t3 - t2,
            }
            if ro.scores:
                row["rewards/correct"] = sum(x.correct for x in ro.scores) / len(ro.scores)
                row["rewards/format"] = sum(x.format for x in ro.scores) / len(ro.scores)
            row = R.mean_over_ranks(row, s.device)
            warning = D.broadcast_object(RO.rollout_warning(ro, scores) if rm is None else
                                         RO.rollout_warning(ro, torch.ones(1)))
            if warning:
                row["warning"] = warning
                s.say(f"{STAGE} step {step}: warning: {warning}")
            if samples is not None and p.samples_per_step:
                extra = {"score": scores.tolist()} if rm is not None else {}
                for rec in RO.sample_records(ro, p.samples_per_step, p.seed + step, **extra):
                    samples.log(step, rec)
            if step % p.log_every == 0 or step == p.max_steps or warning:
                s.log(step, row)
                s.progress.update(step, f"reward {row['reward']:.3f} kl {row['kl']:.4f} "
                                        f"vloss {row['value_loss']:.4f}", line=True)
            else:
                s.progress.update(step)
            if held and ((p.eval_every and step % p.eval_every == 0) or step == p.max_steps):
                ev = evaluate()
                s.log(step, ev)
                s.say(f"{STAGE} step {step}: held-out {', '.join(f'{k} {v:.3f}' for k, v in ev.items())}")
            if (p.save_every and step % p.save_every == 0) or step == p.max_steps:
                do_save(step)
        s.progress.close()
        if samples is not None:
            samples.close()
        s.say(f"{STAGE}: done at step {step}, checkpoint {last_path}")
        return {"step": step, "reward": row.get("reward"), **{k.replace("/", "_"): v for k, v in ev.items()},
                "checkpoint": str(last_path) if last_path else None, "checkpoints": str(s.ckpt_dir)}
    finally:
        s.close()
