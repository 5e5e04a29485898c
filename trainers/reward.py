"""``llmctl run reward``: a Bradley-Terry reward model on preference pairs.

The GPT trunk (from the newest SFT checkpoint unless ``--init``) gets a scalar head read at each
sequence's last real token; the loss is ``-log sigmoid(r_chosen - r_rejected)``. Logged:
``train/loss``, ``train/accuracy``, ``train/margin`` and, on the held-out pairs,
``eval/loss``, ``eval/accuracy``, ``eval/margin``. Checkpoints (the GPT with its ``reward_head``)
go to ``checkpoints/reward/<run>/step_N``, where PPO finds them.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch

from llmctl.core.rl_params import RewardParams
from llmctl.trainers import distributed as D
from llmctl.trainers import rl_common as R
from llmctl.trainers.checkpoint import set_rng_state
from llmctl.trainers.heads import REWARD_HEAD, RewardModel, attach_head
from llmctl.trainers.loop import Progress, Session, continue_metrics, input_fingerprint
from llmctl.trainers.pref_data import PreferenceDataset, collate_pairs, read_pairs
from llmctl.trainers.rl_losses import bradley_terry_loss

STAGE = "reward"
NEEDS = "sft"


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
    mine = list(range(s.dist.rank, len(data), s.dist.world_size))
    for b0 in range(0, len(mine), batch_size):
        batch = collate_pairs([data[i] for i in mine[b0:b0 + batch_size]])
        with s.autocast():
            c, r = pair_scores(model, batch, s.device)
        c, r = c.double(), r.double()
        tot += torch.stack([-torch.nn.functional.logsigmoid(c - r).sum(), (c > r).sum().double(),
                            (c - r).sum(), torch.tensor(float(len(c)), device=s.device, dtype=torch.float64)])
    model.train(was)
    D.all_reduce_sum(tot)
    n = max(tot[3].item(), 1.0)
    return {"eval/loss": tot[0].item() / n, "eval/accuracy": tot[1].item() / n, "eval/margin": tot[2].item() / n}


def run(ws: Any, params: RewardParams, run_dir: Path) -> dict[str, Any]:
    """Train the reward model; return the summary (accuracies, newest checkpoint)."""
    p = params
    train_path, test_path = ws.path(p.train_data), ws.path(p.test_data)
    for path in (train_path, test_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `llmctl prepare prefs` first")
    s = Session(ws, p, run_dir, STAGE)
    try:
        gpt, resume, start, _ = R.start_policy(s, NEEDS)
        attach_head(gpt, REWARD_HEAD, resume["extra_weights"] if resume else None)
        rm = RewardModel(gpt)
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
        opt, sched = R.make_optim(s, rm, p.max_steps, resume)
        step = 0
        if resume is not None:
            step = int(resume["step"])
            continue_metrics(s, start, step)
            set_rng_state(resume["rng"])
        inputs = {"preferences": input_fingerprint(train_path), "preferences_test": input_fingerprint(test_path)}
        if start is not None and resume is None:
            inputs["init"] = str(start)
        s.provenance(seed=p.seed, inputs=inputs, model=gpt.config.to_dict(),
                     start_checkpoint=str(start) if start else None,
                     resumed_step=step if resume is not None else None)
        s.say(f"{STAGE}: {gpt.num_params() / 1e6:.1f}M parameters, {len(train)} train pairs "
              f"({train.truncated} truncated to {p.max_length} tokens), {len(test)} held out, "
              f"batch {p.batch_size} x {p.grad_accum} x {s.dist.world_size}, {s.device}"
              + (f", resuming at step {step}" if resume else f", from {start or p.init}"))
        model = D.wrap_ddp(rm, s.device)
        model.train()
        last_path: Path | None = None
        ev: dict[str, float] = {}
        world, rank = s.dist.world_size, s.dist.rank

        def do_save(at: int) -> Path | None:
            nonlocal last_path
            counts = {"eval_loss": ev.get("eval/loss"), "eval_accuracy": ev.get("eval/accuracy")}
            last_path = R.save(s, gpt, opt, sched, at, {"reference": None}, inputs=inputs, counts=counts)
            return last_path

        s.progress = Progress(p.max_steps, step, STAGE, enabled=p.progress and s.is_main)
        while step < p.max_steps:
            if R.stop_requested(s):
                raise R.cancelled(s, step, do_save(step))
            stats = torch.zeros(4, device=s.device)  # loss, correct, margin, pairs
            for k in range(p.grad_accum):
                micro = (step * p.grad_accum + k) * world + rank
                idx = R.shuffled_indices(len(train), p.batch_size, p.seed, micro * p.batch_size)
                batch = collate_pairs([train[i] for i in idx])
                last = k == p.grad_accum - 1
                sync = contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync()
                with sync:
                    with s.autocast():
                        c, r = pair_scores(model, batch, s.device)
                    loss = bradley_terry_loss(c, r)
                    if p.center_rewards_coef:
                        loss = loss + p.center_rewards_coef * ((c + r) ** 2).mean()
                    (loss / p.grad_accum).backward()
                with torch.no_grad():
                    stats += torch.stack([loss.detach() * len(c), (c > r).sum().float(), (c - r).sum(),
                                          torch.tensor(float(len(c)), device=s.device)])
            norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), p.grad_clip or float("inf")))
            D.all_reduce_sum(stats)
            n = stats[3].item()
            loss_v = stats[0].item() / n
            R.check_finite(s, step + 1, loss_v, norm, lambda at=step: do_save(at))
            lr = sched.get_last_lr()[0]
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            step += 1
            row = {"train/loss": loss_v, "train/accuracy": stats[1].item() / n, "train/margin": stats[2].item() / n,
                   "lr": lr, "grad_norm": norm}
            if step % p.log_every == 0 or step == p.max_steps:
                s.log(step, row)
                s.progress.update(step, f"loss {loss_v:.4f} acc {row['train/accuracy']:.2f}", line=True)
            else:
                s.progress.update(step)
            if (p.eval_every and step % p.eval_every == 0) or step == p.max_steps:
                ev = evaluate(s, model, test, p.batch_size) if len(test) else {}
                if ev:
                    s.log(step, ev)
                    s.say(f"{STAGE} step {step}: eval accuracy {ev['eval/accuracy']:.3f}, "
                          f"margin {ev['eval/margin']:.3f}")
            if (p.save_every and step % p.save_every == 0) or step == p.max_steps:
                do_save(step)
        s.progress.close()
        s.say(f"{STAGE}: done at step {step}, checkpoint {last_path}")
        return {"step": step, "eval_accuracy": ev.get("eval/accuracy"), "eval_margin": ev.get("eval/margin"),
                "checkpoint": str(last_path) if last_path else None, "checkpoints": str(s.ckpt_dir)}
    finally:
        s.close()
