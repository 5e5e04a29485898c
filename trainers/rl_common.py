"""Small pieces the reward, DPO, PPO and GRPO trainers share.

Turning dropout off, the seeded data order that survives a resume, gradient accumulation under
DDP, averaging logged numbers over processes, and summed sequence log-probs. The run itself
(setup, the step loop, cancel and resume) is :mod:`llmctl.trainers.rl_trainer`.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
import torch.nn as nn

from llmctl.trainers import distributed
from llmctl.trainers.model import GPT
from llmctl.trainers.rl_losses import gather_logprobs


def no_dropout(model: nn.Module) -> nn.Module:
    """Turn dropout off everywhere: on-policy ratios and log-prob comparisons need a deterministic model."""
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.p = 0.0
        if hasattr(m, "dropout") and isinstance(m.dropout, float):
            m.dropout = 0.0
    if hasattr(model, "config"):
        model.config.dropout = 0.0
    return model


def accumulating(model: nn.Module, last: bool) -> Any:
    """The context of one micro-batch's backward: DDP's ``no_sync`` except on the ``last`` one."""
    if last or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def mean_over_ranks(values: dict[str, float], device: torch.device) -> dict[str, float]:
    """Average every number over the DDP processes (identity with one process)."""
    if not values or not distributed.dist_env().enabled:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], device=device, dtype=torch.float64)
    distributed.all_reduce_mean(t)
    return dict(zip(keys, t.tolist(), strict=True))


def shuffled_indices(n: int, count: int, seed: int, start: int) -> list[int]:
    """Items ``start .. start+count-1`` of an endless stream of seeded shuffles of ``range(n)``.

    A pure function of its arguments, so batch ``k`` is the same in a resumed run.
    """
    out: list[int] = []
    perms: dict[int, list[int]] = {}
    for k in range(start, start + count):
        epoch, i = divmod(k, n)
        if epoch not in perms:
            g = torch.Generator().manual_seed(seed * 100_003 + epoch)
            perms[epoch] = torch.randperm(n, generator=g).tolist()
        out.append(perms[epoch][i])
    return out


def sequence_logprobs(gpt: GPT, ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of log p(ids[:, t]) over ``loss_mask[:, t] == 1``, token count) per row, t >= 1.

    Rows are right-padded, so plain causal attention is exact. Only the masked positions go
    through the output layer (the 50k-wide projection dominates the cost of a small model).
    """
    h = gpt.hidden_states(ids[:, :-1])
    m = loss_mask[:, 1:].bool()
    rows, cols = m.nonzero(as_tuple=True)
    logits = gpt.lm_head(h[rows, cols])
    lp = gather_logprobs(logits, ids[:, 1:][rows, cols])
    out = torch.zeros(ids.shape[0], device=ids.device, dtype=lp.dtype).index_add(0, rows, lp)
    return out, m.sum(1)


class SequenceLogprobs(nn.Module):
    """DDP-friendly wrapper: ``forward(ids, loss_mask) -> (summed log-probs, counts)``."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt

    def forward(self, ids: torch.Tensor, loss_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return sequence_logprobs(self.gpt, ids, loss_mask)
