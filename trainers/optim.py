"""AdamW with decay / no-decay parameter groups and a linear-warmup + cosine learning-rate schedule."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Matrices (linear and embedding weights) decay; biases and LayerNorm parameters do not."""
    decay, no_decay = [], []
    for p in model.parameters():  # tied weights appear once here
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.1,
                   betas: tuple[float, float] = (0.9, 0.95), eps: float = 1e-8,
                   device_type: str = "cpu") -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`, with the fused (single-pass) kernel on CUDA and CPU.

    On a 2-core CPU the fused step is about 2.5x faster than the per-tensor loop for the tiny
    preset, where the 50304 x n_embd embedding is most of the parameters.
    """
    fused = device_type in ("cuda", "cpu")
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=betas, eps=eps, fused=fused)


class WarmupCosine:
    """LR multiplier: linear warmup to 1 over ``warmup_steps``, then cosine down to ``min_ratio``.

    A callable object (not a lambda) so ``LambdaLR.state_dict`` records its settings.
    """

    def __init__(self, warmup_steps: int, max_steps: int, min_ratio: float = 0.1) -> None:
        self.warmup_steps = warmup_steps
        self.max_steps = max_steps
        self.min_ratio = min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if step >= self.max_steps:
            return self.min_ratio
        span = max(1, self.max_steps - self.warmup_steps)
        progress = (step - self.warmup_steps) / span
        return self.min_ratio + 0.5 * (1.0 - self.min_ratio) * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int,
                   min_ratio: float = 0.1) -> torch.optim.lr_scheduler.LambdaLR:
    """The warmup + cosine schedule as a ``LambdaLR`` (call ``.step()`` after each optimizer step)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(warmup_steps, max_steps, min_ratio))
