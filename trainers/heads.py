"""Scalar heads on the GPT's final hidden states: the reward model's score and PPO's value.

A head is attached to the GPT module itself (``gpt.reward_head`` / ``gpt.value_head``), so a
checkpoint of the GPT carries it beside the language-model weights and
:func:`llmctl.trainers.checkpoint.load_checkpoint` hands it back in ``extra_weights`` (a plain
GPT load simply ignores it). The small wrappers here give DDP one ``forward`` to go through.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from llmctl.core.tokenizer import N_VOCAB
from llmctl.trainers.model import GPT

REWARD_HEAD = "reward_head"
VALUE_HEAD = "value_head"


class ScalarHead(nn.Module):
    """``Linear(n_embd, 1)``: one number per position, starting at exactly 0.

    Zero initial weights make a fresh value head predict 0 (GAE then starts from plain returns,
    not from noise that would steer the first policy updates) and a fresh reward model start at
    the Bradley-Terry loss log 2; the gradient w.r.t. the weights is the hidden state, so
    training moves them at once.
    """

    def __init__(self, n_embd: int) -> None:
        super().__init__()
        self.proj = nn.Linear(n_embd, 1)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.proj(h).squeeze(-1).float()


def attach_head(gpt: GPT, name: str, weights: dict[str, torch.Tensor] | None = None) -> ScalarHead:
    """Add a :class:`ScalarHead` named ``name`` to ``gpt`` (loading ``name.*`` from ``weights``)."""
    head = ScalarHead(gpt.config.n_embd).to(gpt.lm_head.weight.device)
    if weights:
        prefix = name + "."
        own = {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}
        if own:
            head.load_state_dict(own)
    gpt.add_module(name, head)
    return head


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of each row's last real token (1 in ``attention_mask``); 0 for an empty row."""
    T = attention_mask.shape[1]
    pos = torch.arange(T, device=attention_mask.device).expand_as(attention_mask)
    return torch.where(attention_mask.bool(), pos, torch.zeros_like(pos)).max(dim=1).values


class RewardModel(nn.Module):
    """A GPT with a reward head: ``forward(ids, attention_mask) -> score (B,)`` at the last real token."""

    def __init__(self, gpt: GPT) -> None:
        super().__init__()
        self.gpt = gpt
        if not hasattr(gpt, REWARD_HEAD):
            attach_head(gpt, REWARD_HEAD)

    @property
    def config(self) -> Any:
        return self.gpt.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """Scores (B,). Right-padded rows pass ``lengths`` (plain causal attention, exact);
        rows with left padding pass ``attention_mask``."""
        if attention_mask is not None:
            h = self.gpt.hidden_states(input_ids, attention_mask=attention_mask)
            last = last_token_index(attention_mask)
        elif lengths is not None:
            h = self.gpt.hidden_states(input_ids)
            last = (lengths - 1).clamp(min=0)
        else:
            raise ValueError("RewardModel needs attention_mask or lengths")
        h_last = h[torch.arange(h.shape[0], device=h.device), last]
        return getattr(self.gpt, REWARD_HEAD)(h_last)


class PolicyModel(nn.Module):
    """A GPT (optionally with a value head) scored over completion positions only.

    ``forward(input_ids, attention_mask, start)`` runs the trunk over the whole
    (left-padded prompt | right-padded completion) rows but the output layer only over the
    positions that predict tokens ``start..`` -- the completion -- returning
    ``(logits (B, C, V), values (B, C) or None)``; ``values[:, t]`` is the value of the state
    before completion token ``t``. The logits are those of the distribution the rollout sampled
    from: over the real vocabulary only (``V = N_VOCAB``, as the generator never draws a padded
    id) and divided by the sampling ``temperature``.
    """

    def __init__(self, gpt: GPT, with_value: bool = False) -> None:
        super().__init__()
        self.gpt = gpt
        if with_value and not hasattr(gpt, VALUE_HEAD):
            attach_head(gpt, VALUE_HEAD)
        self.with_value = with_value

    @property
    def config(self) -> Any:
        return self.gpt.config

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, start: int,
                temperature: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = self.gpt.hidden_states(input_ids, attention_mask=attention_mask)
        h = h[:, start - 1:-1]
        logits = F.linear(h, self.gpt.lm_head.weight[:N_VOCAB])
        if temperature != 1.0:
            logits = logits / temperature
        values = getattr(self.gpt, VALUE_HEAD)(h) if self.with_value else None
        return logits, values


def load_reward_model(path: Any, device: Any = "cpu") -> RewardModel:
    """A frozen :class:`RewardModel` from a reward-stage checkpoint, in eval mode."""
    from llmctl.trainers.checkpoint import load_checkpoint

    gpt, state = load_checkpoint(path, device)
    if not any(k.startswith(REWARD_HEAD + ".") for k in state["extra_weights"]):
        raise ValueError(f"{state['path']} has no reward head: not a reward-model checkpoint")
    attach_head(gpt, REWARD_HEAD, state["extra_weights"])
    rm = RewardModel(gpt).to(device).eval()
    for p in rm.parameters():
        p.requires_grad_(False)
    return rm
