"""``llmctl run dpo``: direct preference optimisation against a frozen reference.

The policy starts from the newest SFT checkpoint (or ``--init``); the reference is a frozen copy
of those starting weights whose log-probs are computed once per batch without gradients. Each
response's log-prob is the sum over its tokens (the mean for ``ipo``, as the IPO paper assumes).
Logged under TRL's names: ``rewards/chosen``, ``rewards/rejected``, ``rewards/margins``,
``rewards/accuracies``, ``logps/chosen``, ``logps/rejected`` (plus ``train/loss``), and the same
on held-out pairs under ``eval/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmctl.core.rl_params import DPOParams
from llmctl.core.workspace import Workspace
from llmctl.trainers import distributed, rl_trainer
from llmctl.trainers.loop import Session, session
from llmctl.trainers.pref_data import PreferenceDataset, held_out_batches, load_splits, step_batches
from llmctl.trainers.rl_common import SequenceLogprobs, accumulating
from llmctl.trainers.rl_losses import dpo_loss

STAGE = "dpo"
NEEDS = "sft"
# summed per batch, then divided by the pair count
_STATS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
          "logps/chosen", "logps/rejected")
COUNTS = {"eval_loss": "eval/loss", "eval_margin": "eval/rewards/margins",  # manifest counts -> metric keys
          "eval_accuracy": "eval/rewards/accuracies"}


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
    for batch in held_out_batches(data, p.batch_size, s.dist.rank, s.dist.world_size):
        sums += batch_terms(p, policy, ref, batch, s.device, s.autocast())[1]
    policy.train(was)
    distributed.all_reduce_sum(sums)
    return _mean(sums, float(len(data)), prefix="eval/")


def dpo_step(r: rl_trainer.Run, ref: SequenceLogprobs, train_pairs: PreferenceDataset) -> rl_trainer.Row:
    """One optimizer step of the DPO loss over ``grad_accum`` batches; its metrics row."""
    s, p = r.s, r.s.params
    sums = torch.zeros(len(_STATS), device=s.device)
    for batch, last in step_batches(train_pairs, p, r.step, s.dist.rank, s.dist.world_size):
        with accumulating(r.model, last):
            loss, part = batch_terms(p, r.model, ref, batch, s.device, s.autocast())
            (loss / p.grad_accum).backward()
        sums += part
    distributed.all_reduce_sum(sums)
    row = _mean(sums, float(p.batch_size * p.grad_accum * s.dist.world_size))
    norm, lr = r.update(row["train/loss"])
    return {**row, "lr": lr, "grad_norm": norm}


def run(ws: Workspace, params: DPOParams, run_dir: Path) -> dict[str, Any]:
    """Train the policy with DPO; return the summary (held-out margins, newest checkpoint)."""
    p = params
    train_pairs, test_pairs, inputs = load_splits(ws, p, ws.tokenizer())
    with session(ws, p, run_dir, STAGE) as s:
        gpt, resume, start, ref_src = rl_trainer.start_policy(s, NEEDS)
        ref = SequenceLogprobs(rl_trainer.load_reference(s, ref_src))
        inputs["reference"] = ref_src
        r = rl_trainer.begin(s, gpt, SequenceLogprobs(gpt), total_steps=p.max_steps, resume=resume, start=start,
                             inputs=inputs, reference=ref_src, counts=COUNTS)
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, {len(train_pairs)} train pairs "
              f"({train_pairs.truncated} truncated to {p.max_length} tokens), {len(test_pairs)} held out, "
              f"beta {p.beta}, {p.loss_type} loss, batch {p.batch_size} x {p.grad_accum} x {s.dist.world_size}, "
              f"{s.device}" + (f", resuming at step {r.step}" if r.resumed else f", reference {ref_src}"))
        return rl_trainer.train(r, rl_trainer.Loop(
            step=lambda: dpo_step(r, ref, train_pairs),
            progress=lambda row: f"loss {row['train/loss']:.4f} margin {row['rewards/margins']:.3f}",
            summary=lambda row, ev: {"eval_margin": ev.get("eval/rewards/margins"),
                                     "eval_accuracy": ev.get("eval/rewards/accuracies")},
            evaluate=(lambda: evaluate(s, p, r.model, ref, test_pairs)) if len(test_pairs) else None,
            eval_line=lambda ev: (f"eval margin {ev['eval/rewards/margins']:.3f}, "
                                  f"accuracy {ev['eval/rewards/accuracies']:.3f}")))
