"""What GRPO and PPO share around a rollout: a step's samples, the update epochs, the common row.

A step of either algorithm is: :func:`sample_step` (this process's prompts x ``num_generations``
seeded samples), scoring, the algorithm's advantages, :func:`policy_updates` (``epochs`` optimizer
steps, each accumulating over the rollout's micro-batches), then :func:`finish_row` (averaged over
processes, the degenerate-step warning, rows written to ``samples.jsonl``). The held-out check is
:func:`held_out_table`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from llmctl.core import heldout
from llmctl.core.atomic import write_json
from llmctl.trainers import distributed
from llmctl.trainers import heldout as heldout_measure
from llmctl.trainers.loop import Session
from llmctl.trainers.rl_common import accumulating, mean_over_ranks
from llmctl.trainers.rl_losses import gather_logprobs
from llmctl.trainers.rl_trainer import Row, Run
from llmctl.trainers.rollout import (
    Rollout,
    micro_batches,
    prompt_ids,
    rollout_stats,
    sample_records,
    sample_rollout,
    step_prompts,
)

# (epoch, micro-batch index, rows, logits, values or None, log-probs) -> the micro-batch's weighted loss
MicroLoss = Callable[[int, int, slice, torch.Tensor, "torch.Tensor | None", torch.Tensor], torch.Tensor]


def generation_dtype(s: Session) -> torch.dtype | None:
    """The generator's autocast dtype: the run's dtype on a GPU, none on the CPU."""
    return s.dtype if s.device.type == "cuda" else None


def sample_step(r: Run, rows: list[dict[str, Any]], tok: Any) -> Rollout:
    """This process's rollout for step ``r.step``: a function of (seed, step, rank), so a resumed
    run samples exactly what the unbroken one did."""
    s, p = r.s, r.s.params
    rank = s.dist.rank
    batch = step_prompts(rows, p.prompts_per_step, p.seed, r.step, rank, s.dist.world_size)
    return sample_rollout(r.gpt, batch, tok, num_generations=p.num_generations, max_new_tokens=p.max_new_tokens,
                          max_prompt_length=p.max_prompt_length, temperature=p.temperature, top_k=p.top_k,
                          top_p=p.top_p, seed=(p.seed * 1_000_003 + r.step) * 64 + rank, dtype=generation_dtype(s))


def policy_updates(r: Run, ro: Rollout, epochs: int, micro_loss: MicroLoss) -> tuple[list[float], list[float],
                                                                                    list[float]]:
    """``epochs`` optimizer steps over the rollout, each accumulating ``micro_loss`` over its
    micro-batches (DDP syncs on the last); ``(loss, grad norm, lr)`` of each step."""
    losses, norms, lrs = [], [], []
    for epoch in range(epochs):
        slices = micro_batches(len(ro), r.s.params.micro_batch_size)
        total = 0.0
        for j, sl in enumerate(slices):
            with accumulating(r.model, j == len(slices) - 1):
                with r.s.autocast():
                    logits, values = r.model(ro.input_ids[sl], ro.attention_mask[sl], ro.start, ro.temperature)
                lp = gather_logprobs(logits, ro.input_ids[sl, ro.start:])
                loss = micro_loss(epoch, j, sl, logits, values, lp)
                loss.backward()
            total += float(loss.detach())
            del logits, values, lp, loss
        norm, lr = r.update(total)
        losses.append(total)
        norms.append(norm)
        lrs.append(lr)
    return losses, norms, lrs


def update_row(ro: Rollout, norms: list[float], lrs: list[float], times: Sequence[float]) -> Row:
    """The row's shared tail: completion lengths, mean grad norm, the step's lr and the timings
    of generation, scoring and updates (``times`` = their four boundaries)."""
    t0, t1, t2, t3 = times
    return {**rollout_stats(ro), "grad_norm": sum(norms) / len(norms), "lr": lrs[0],
            "time/generation": t1 - t0, "time/reward": t2 - t1, "time/update": t3 - t2}


def verifier_row(ro: Rollout) -> Row:
    """``rewards/correct`` and ``rewards/format`` of a verifier-scored rollout (nothing otherwise)."""
    if not ro.scores:
        return {}
    return {"rewards/correct": sum(x.correct for x in ro.scores) / len(ro.scores),
            "rewards/format": sum(x.format for x in ro.scores) / len(ro.scores)}


def finish_row(r: Run, row: Row, ro: Rollout, warning: str | None, **per_row: Sequence[float]) -> Row:
    """The step's row averaged over processes, with rank 0's ``warning``; its samples written
    (``per_row`` adds per-completion numbers, e.g. ``advantage``)."""
    p, step = r.s.params, r.step + 1
    row = mean_over_ranks(row, r.s.device)
    warning = distributed.broadcast_object(warning)
    if warning:
        row["warning"] = warning
    if r.samples is not None and p.samples_per_step:
        for rec in sample_records(ro, p.samples_per_step, p.seed + step, **per_row):
            r.samples.log(step, rec)
    return row


def held_out_table(r: Run, held: list[dict[str, Any]], tok: Any) -> dict[str, float]:
    """The held-out table of the policy now (greedy, and ``eval_samples`` samples per prompt at the
    rollout temperature, the same seeds at every evaluation), over every process's share of ``held``.

    Rank 0 keeps ``heldout.json`` in the run folder: the run's first table as ``before``, this one as
    ``after``. Returns the table's metrics (:func:`llmctl.core.heldout.metrics`).
    """
    s, p = r.s, r.s.params
    mine = held[s.dist.rank::s.dist.world_size]
    prompts = [prompt_ids(row, tok, p.max_prompt_length) for row in mine]
    outs = heldout_measure.measure(r.gpt, prompts, mine, tok, k=p.eval_samples, temperature=p.temperature,
                                   max_new_tokens=p.max_new_tokens, batch_size=max(8, p.micro_batch_size),
                                   dtype=generation_dtype(s), seed=p.seed * 1_000_003 + s.dist.rank)
    tab = heldout.table(distributed.gather_lists(outs), p.eval_samples, p.temperature)
    if s.is_main:
        path = s.run_dir / heldout.FILE
        now = {"step": r.step, **tab}
        write_json(path, {"before": (heldout.read(path) or {}).get("before", now), "after": now})
    return heldout.metrics(tab)


def held_out_line(ev: dict[str, float]) -> str:
    """The message after a held-out check."""
    out = f"held-out greedy accuracy {ev['eval/accuracy']:.3f}"
    if "eval/pass@1" in ev:
        out += f", pass@1 {ev['eval/pass@1']:.3f}, pass@k {ev['eval/pass@k']:.3f}"
    return out
