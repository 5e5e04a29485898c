"""``llmctl run dpo``: direct preference optimisation against a frozen reference.

The policy starts from the newest SFT checkpoint (or ``--init``); the reference is a frozen copy
of those starting weights whose log-probs are computed once per batch without gradients. Each
response's log-prob is the sum over its tokens (the mean for ``ipo``, as the IPO paper assumes).
Logged under TRL's names: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
``rewards/accuracies``, ``logps/chosen``, ``logps/rejected`` (plus ``train/loss``), and the same
on held-out pairs under ``eval/``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from llmctl.core.rl_params import DPOParams
from llmctl.trainers import distributed as D
from llmctl.trainers import rl_common as R
from llmctl.trainers.checkpoint import set_rng_state
from llmctl.trainers.loop import Progress, Session, continue_metrics, input_fingerprint
from llmctl.trainers.pref_data import PreferenceDataset, collate_pairs, read_pairs
from llmctl.trainers.rl_losses import dpo_loss

STAGE = "dpo"
NEEDS = "sft"
# summed per batch, then divided by the pair count
_STATS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
          "logps/chosen", "logps/rejected")


def batch_terms(p: DPOParams, policy: Any, ref: Any, batch: dict[str, torch.Tensor],
                device: torch.device, autocast: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss with grad, per-statistic sums (len(_STATS),)) of one collated batch."""
    n = batch["chosen_ids"].shape[0]
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]]).to(device)
    mask = torch.cat([batch["chosen_mask"], batch["rejected_mask"]]).to(device)
    with autocast:
        lp, count = policy(ids, mask)
        with torch.no_grad():
            ref_lp, _ = ref(ids, mask)
    if p.loss_type == "ipo":
        lp, ref_lp = lp / count.clamp(min=1), ref_lp / count.clamp(min=1)
    loss, cr, rr = dpo_loss(lp[:n], lp[n:], ref_lp[:n], ref_lp[n:], p.beta, p.loss_type, p.label_smoothing)
    with torch.no_grad():
        sums = torch.stack([loss.detach() * n, cr.sum(), rr.sum(), (cr - rr).sum(), (cr > rr).float().sum(),
                            lp[:n].detach().sum(), lp[n:].detach().sum()]).float()
    return loss, sums


def _mean(sums: torch.Tensor, n: float, prefix: str = "") -> dict[str, float]:
    out = {}
    for k, v in zip(_STATS, (sums / max(n, 1.0)).tolist(), strict=True):
        out[prefix + ("train/loss" if k == "loss" and not prefix else k)] = v
    return out


@torch.no_grad()
def evaluate(s: Session, p: DPOParams, policy: Any, ref: Any, data: PreferenceDataset) -> dict[str, float]:
    """The DPO statistics on the held-out pairs, under ``eval/``."""
    was = policy.training
    policy.eval()
    sums = torch.zeros(len(_STATS), device=s.device)
    mine = list(range(s.dist.rank, len(data), s.dist.world_size))
    n = torch.tensor([float(len(mine))], device=s.device)
    for b0 in range(0, len(mine), p.batch_size):
        batch = collate_pairs([data[i] for i in mine[b0:b0 + p.batch_size]])
        _, part = batch_terms(p, policy, ref, batch, s.device, s.autocast())
        sums += part
    policy.train(was)
    D.all_reduce_sum(sums)
    D.all_reduce_sum(n)
    return _mean(sums, n.item(), prefix="eval/")


def run(ws: Any, params: DPOParams, run_dir: Path) -> dict[str, Any]:
    """Train the policy with DPO; return the summary (held-out margins, newest checkpoint)."""
    p = params
    train_path, test_path = ws.path(p.train_data), ws.path(p.test_data)
    for path in (train_path, test_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `llmctl prepare prefs` first")
    s = Session(ws, p, run_dir, STAGE)
    try:
        gpt, resume, start, ref_src = R.start_policy(s, NEEDS)
        ref = R.SequenceLogprobs(R.load_reference(s, ref_src))
        tok = ws.tokenizer()
        pairs = read_pairs(train_path)
        if p.max_pairs:
            pairs = pairs[:p.max_pairs]
        test_pairs = read_pairs(test_path)
        if p.eval_pairs:
            test_pairs = test_pairs[:p.eval_pairs]
        train = PreferenceDataset(pairs, tok, p.max_length)
        test = PreferenceDataset(test_pairs, tok, p.max_length)
        if len(train) == 0:
            raise ValueError(f"{train_path} holds no preference pairs")
        policy = R.SequenceLogprobs(gpt)
        opt, sched = R.make_optim(s, policy, p.max_steps, resume)
        step = 0
        if resume is not None:
            step = int(resume["step"])
            continue_metrics(s, start, step)
            set_rng_state(resume["rng"])
        inputs = {"preferences": input_fingerprint(train_path), "preferences_test": input_fingerprint(test_path),
                  "reference": ref_src}
        s.provenance(seed=p.seed, inputs=inputs, model=gpt.config.to_dict(),
                     start_checkpoint=str(start) if start else None,
                     resumed_step=step if resume is not None else None)
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, {len(train)} train pairs "
              f"({train.truncated} truncated to {p.max_length} tokens), {len(test)} held out, beta {p.beta}, "
              f"{p.loss_type} loss, batch {p.batch_size} x {p.grad_accum} x {s.dist.world_size}, {s.device}"
              + (f", resuming at step {step}" if resume else f", reference {ref_src}"))
        model = D.wrap_ddp(policy, s.device)
        model.train()
        last_path: Path | None = None
        ev: dict[str, float] = {}
        world, rank = s.dist.world_size, s.dist.rank

        def do_save(at: int) -> Path | None:
            nonlocal last_path
            counts = {"eval_loss": ev.get("eval/loss"), "eval_margin": ev.get("eval/rewards/margins"),
                      "eval_accuracy": ev.get("eval/rewards/accuracies")}
            last_path = R.save(s, gpt, opt, sched, at, {"reference": ref_src}, inputs=inputs, counts=counts)
            return last_path

        s.progress = Progress(p.max_steps, step, STAGE, enabled=p.progress and s.is_main)
        while step < p.max_steps:
            if R.stop_requested(s):
                raise R.cancelled(s, step, do_save(step))
            sums = torch.zeros(len(_STATS), device=s.device)
            for k in range(p.grad_accum):
                micro = (step * p.grad_accum + k) * world + rank
                idx = R.shuffled_indices(len(train), p.batch_size, p.seed, micro * p.batch_size)
                batch = collate_pairs([train[i] for i in idx])
                last = k == p.grad_accum - 1
                sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
                with sync:
                    loss, part = batch_terms(p, model, ref, batch, s.device, s.autocast())
                    (loss / p.grad_accum).backward()
                sums += part
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip or float("inf")))
            D.all_reduce_sum(sums)
            row = _mean(sums, float(p.batch_size * p.grad_accum * world))
            R.check_finite(s, step + 1, row["train/loss"], norm, lambda at=step: do_save(at))
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            if step % p.log_every == 0 or step == p.max_steps:
                s.log(step, {**row, "lr": lr, "grad_norm": norm})
                s.progress.update(step, f"loss {row['train/loss']:.4f} margin {row['rewards/margins']:.3f}",
                                  line=True)
            else:
                s.progress.update(step)
            if (p.eval_every and step % p.eval_every == 0) or step == p.max_steps:
                ev = evaluate(s, p, model, ref, test) if len(test) else {}
                if ev:
                    s.log(step, ev)
                    s.say(f"{STAGE} step {step}: eval margin {ev['eval/rewards/margins']:.3f}, "
                          f"accuracy {ev['eval/rewards/accuracies']:.3f}")
            if (p.save_every and step % p.save_every == 0) or step == p.max_steps:
                do_save(step)
        s.progress.close()
        s.say(f"{STAGE}: done at step {step}, checkpoint {last_path}")
        return {"step": step, "eval_margin": ev.get("eval/rewards/margins"),
                "eval_accuracy": ev.get("eval/rewards/accuracies"),
                "checkpoint": str(last_path) if last_path else None, "checkpoints": str(s.ckpt_dir)}
    finally:
        s.close()
