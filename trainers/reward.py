"""``llmctl run reward``: a Bradley-Terry reward model on preference pairs.

The GPT trunk (from the newest SFT checkpoint unless ``--init``) gets a scalar head read at each
sequence's last real token; the loss is ``-log sigmoid(r_chosen - r_rejected)``. Logged:
``train/loss``, ``train/accuracy``, ``train/margin`` and, on the held-out pairs,
``eval/loss``, ``eval/accuracy``, ``eval/margin``. Checkpoints (the GPT with its ``reward_head``)
go to ``checkpoints/reward/<run>/step_N``, where PPO finds them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from llmctl.core.rl_params import RewardParams
from llmctl.core.workspace import Workspace
from llmctl.trainers import distributed, rl_trainer
from llmctl.trainers.heads import REWARD_HEAD, RewardModel, attach_head
from llmctl.trainers.loop import Session, session, start_note
from llmctl.trainers.pref_data import PreferenceDataset, held_out_batches, load_splits, step_batches
from llmctl.trainers.rl_common import accumulating
from llmctl.trainers.rl_losses import bradley_terry_loss

STAGE = "reward"
NEEDS = "sft"
COUNTS = {"eval_loss": "eval/loss", "eval_accuracy": "eval/accuracy"}  # manifest counts -> metric keys


def pair_scores(model: Any, batch: dict[str, torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen scores, rejected scores) of a collated batch, in one forward pass."""
    ids = torch.cat([batch["chosen_ids"], batch["rejected_ids"]]).to(device)
    lens = torch.cat([batch["chosen_lens"], batch["rejected_lens"]]).to(device)
    scores = model(ids, lengths=lens)
    n = batch["chosen_ids"].shape[0]
    return scores[:n], scores[n:]


@torch.no_grad()
def evaluate(s: Session, model: Any, data: PreferenceDataset, batch_size: int) -> dict[str, float]:
    """Held-out ``eval/loss``, ``eval/accuracy`` (chosen scored higher) and ``eval/margin``."""
    was = model.training
    model.eval()
    tot = torch.zeros(4, device=s.device, dtype=torch.float64)  # loss sum, correct, margin sum, count
    for batch in held_out_batches(data, batch_size, s.dist.rank, s.dist.world_size):
        with s.autocast():
            c, r = pair_scores(model, batch, s.device)
        c, r = c.double(), r.double()
        tot += torch.stack([-torch.nn.functional.logsigmoid(c - r).sum(), (c > r).sum().double(),
                            (c - r).sum(), torch.tensor(float(len(c)), device=s.device, dtype=torch.float64)])
    model.train(was)
    distributed.all_reduce_sum(tot)
    n = max(tot[3].item(), 1.0)
    return {"eval/loss": tot[0].item() / n, "eval/accuracy": tot[1].item() / n, "eval/margin": tot[2].item() / n}


def reward_step(r: rl_trainer.Run, train_pairs: PreferenceDataset) -> rl_trainer.Row:
    """One optimizer step of the Bradley-Terry loss over ``grad_accum`` batches; its metrics row."""
    s, p = r.s, r.s.params
    stats = torch.zeros(4, device=s.device)  # loss, correct, margin, pairs
    for batch, last in step_batches(train_pairs, p, r.step, s.dist.rank, s.dist.world_size):
        with accumulating(r.model, last):
            with s.autocast():
                c, rej = pair_scores(r.model, batch, s.device)
            loss = bradley_terry_loss(c, rej)
            if p.center_rewards_coef:
                loss = loss + p.center_rewards_coef * ((c + rej) ** 2).mean()
            (loss / p.grad_accum).backward()
        with torch.no_grad():
            stats += torch.stack([loss.detach() * len(c), (c > rej).sum().float(), (c - rej).sum(),
                                  torch.tensor(float(len(c)), device=s.device)])
    distributed.all_reduce_sum(stats)
    n = stats[3].item()
    loss_v = stats[0].item() / n
    norm, lr = r.update(loss_v)
    return {"train/loss": loss_v, "train/accuracy": stats[1].item() / n, "train/margin": stats[2].item() / n,
            "lr": lr, "grad_norm": norm}


def run(ws: Workspace, params: RewardParams, run_dir: Path) -> dict[str, Any]:
    """Train the reward model; return the summary (accuracies, newest checkpoint)."""
    p = params
    train_pairs, test_pairs, inputs = load_splits(ws, p, ws.tokenizer())
    with session(ws, p, run_dir, STAGE) as s:
        gpt, resume, start, _ = rl_trainer.start_policy(s, NEEDS)
        attach_head(gpt, REWARD_HEAD, resume["extra_weights"] if resume else None)
        if start is not None and resume is None:
            inputs["init"] = str(start)
        r = rl_trainer.begin(s, gpt, RewardModel(gpt), total_steps=p.max_steps, resume=resume, start=start,
                             inputs=inputs, reference=None, counts=COUNTS)
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, {len(train_pairs)} train pairs "
              f"({train_pairs.truncated} truncated to {p.max_length} tokens), {len(test_pairs)} held out, "
              f"batch {p.batch_size} x {p.grad_accum} x {s.dist.world_size}, {s.device}"
              + start_note(resume, start or p.init))
        return rl_trainer.train(r, rl_trainer.Loop(
            step=lambda: reward_step(r, train_pairs),
            progress=lambda row: f"loss {row['train/loss']:.4f} acc {row['train/accuracy']:.2f}",
            summary=lambda row, ev: {"eval_accuracy": ev.get("eval/accuracy"), "eval_margin": ev.get("eval/margin")},
            evaluate=(lambda: evaluate(s, r.model, test_pairs, p.batch_size)) if len(test_pairs) else None,
            eval_line=lambda ev: f"eval accuracy {ev['eval/accuracy']:.3f}, margin {ev['eval/margin']:.3f}"))
