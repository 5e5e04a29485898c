"""Pure loss and advantage functions for the preference and RL trainers.

Everything here is a plain function of tensors: no model, no optimizer, no state. Shapes follow
one convention: per-sequence values are ``(B,)``; per-token values are ``(B, T)`` over the
completion tokens with a 0/1 ``mask`` of the same shape (1 = a real completion token). The
formulas and metric meanings follow TRL (DPO, GRPO, PPO) so the numbers read the same.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# ---- masked reductions ----------------------------------------------------------------------


def masked_sum(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Sum of ``x`` where ``mask`` is 1 (over ``dim``, or everything)."""
    m = mask.to(x.dtype)
    return (x * m).sum() if dim is None else (x * m).sum(dim)


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of ``x`` over the positions where ``mask`` is 1 (0 when there are none)."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp(min=1.0)
    return (x * m).sum(dim) / m.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of ``x`` over the masked positions (Bessel-corrected when ``unbiased``)."""
    mean = masked_mean(x, mask)
    m = mask.to(x.dtype)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = m.sum()
        var = var * n / (n - 1).clamp(min=1.0)
    return var


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True,
                  eps: float = 1e-8) -> torch.Tensor:
    """Normalise ``x`` to unit variance over the mask (and zero mean when ``shift_mean``)."""
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    return out if shift_mean else out + mean


# ---- token log-probabilities -----------------------------------------------------------------


def gather_logprobs(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log p(token) under ``logits`` (..., V) for ``tokens`` (...); computed in float32."""
    logits = logits.float()
    picked = logits.gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position of ``logits`` (..., V)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


# ---- preference losses -----------------------------------------------------------------------


def bradley_terry_loss(chosen_scores: torch.Tensor, rejected_scores: torch.Tensor,
                       margin: torch.Tensor | None = None) -> torch.Tensor:
    """Reward-model loss ``-log sigmoid(r_chosen - r_rejected [- margin])``, averaged over pairs."""
    diff = chosen_scores - rejected_scores
    if margin is not None:
        diff = diff - margin
    return -F.logsigmoid(diff).mean()


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor, beta: float,
             loss_type: str = "sigmoid",
             label_smoothing: float = 0.0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DPO loss on per-sequence log-probs (B,): ``(mean loss, chosen_rewards, rejected_rewards)``.

    ``sigmoid`` is the DPO paper's loss (with optional conservative label smoothing); ``ipo`` is
    ``(h - 1/(2 beta))^2`` from the IPO paper, meant for length-averaged log-probs. The implicit
    rewards ``beta * (log pi - log pi_ref)`` are returned detached, for logging.
    """
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    if loss_type == "sigmoid":
        losses = (-F.logsigmoid(beta * logits) * (1.0 - label_smoothing)
                  - F.logsigmoid(-beta * logits) * label_smoothing)
    elif loss_type == "ipo":
        losses = (logits - 1.0 / (2.0 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss_type {loss_type!r} (sigmoid or ipo)")
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return losses.mean(), chosen_rewards, rejected_rewards


# ---- KL estimators ---------------------------------------------------------------------------


def kl_estimate(logps: torch.Tensor, ref_logps: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(pi || pi_ref) from samples of pi.

    ``k1`` = log pi - log pi_ref (unbiased, can be negative); ``k3`` = exp(d) - d - 1 with
    d = log pi_ref - log pi (unbiased, never negative; Schulman's estimator, used by GRPO).
    """
    if kind == "k1":
        return logps - ref_logps
    if kind == "k3":
        d = ref_logps - logps
        return torch.exp(d) - d - 1.0
    raise ValueError(f"unknown KL estimator {kind!r} (k1 or k3)")


# ---- GRPO ------------------------------------------------------------------------------------


def group_std(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Per-group (unbiased) standard deviation, repeated for every member: shape like ``rewards``."""
    std = rewards.view(-1, group_size).std(dim=1)
    return std.repeat_interleave(group_size)


def grpo_advantages(rewards: torch.Tensor, group_size: int, scale_std: bool = True,
                    eps: float = 1e-4) -> torch.Tensor:
    """Group-relative advantages for ``rewards`` (N*G,), each group of G consecutive samples.

    ``r - mean(group)``, divided by ``std(group) + eps`` when ``scale_std`` (GRPO); Dr. GRPO
    keeps the unscaled difference (``scale_std=False``) to avoid favouring easy/hard groups.
    """
    if rewards.numel() % group_size:
        raise ValueError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    grouped = rewards.view(-1, group_size)
    adv = grouped - grouped.mean(dim=1, keepdim=True)
    if scale_std:
        adv = adv / (grouped.std(dim=1, keepdim=True) + eps)
    return adv.reshape(-1)


def dr_grpo_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr. GRPO advantages: the group-mean baseline without std scaling."""
    return grpo_advantages(rewards, group_size, scale_std=False)


def grpo_loss(logps: torch.Tensor, old_logps: torch.Tensor, ref_logps: torch.Tensor | None,
              advantages: torch.Tensor, mask: torch.Tensor, clip_eps: float, kl_coef: float,
              loss_type: str = "grpo", clip_eps_high: float | None = None,
              max_completion_length: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped-ratio GRPO objective with a k3 KL penalty to the reference.

    ``logps``/``old_logps``/``ref_logps``/``mask`` are (B, T) over completion tokens and
    ``advantages`` is (B,). Aggregation: ``grpo`` averages each sequence over its length and then
    over sequences; ``dr_grpo`` sums all tokens and divides by ``B * max_completion_length`` (a
    constant, so no length bias); ``bnpo`` averages over all tokens of the batch. ``ref_logps``
    may be None when ``kl_coef`` is 0. Returns the loss and detached stats: ``kl`` (mean k3),
    ``clip_fraction`` (tokens whose clipped branch was active) and ``ratio`` (mean).
    """
    mask = mask.to(logps.dtype)
    ratio = torch.exp(logps - old_logps)
    adv = advantages.unsqueeze(1)
    high = clip_eps if clip_eps_high is None else clip_eps_high
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_eps, 1.0 + high) * adv
    per_token = -torch.min(unclipped, clipped)
    if kl_coef != 0.0:
        if ref_logps is None:
            raise ValueError("grpo_loss: kl_coef is non-zero but ref_logps is None")
        kl = kl_estimate(logps, ref_logps, "k3")
        per_token = per_token + kl_coef * kl
    elif ref_logps is not None:
        kl = kl_estimate(logps, ref_logps, "k3")
    else:
        kl = torch.zeros_like(logps)
    if loss_type == "grpo":
        loss = (masked_sum(per_token, mask, 1) / mask.sum(1).clamp(min=1.0)).mean()
    elif loss_type == "dr_grpo":
        length = max_completion_length or mask.shape[1]
        loss = masked_sum(per_token, mask) / (mask.shape[0] * length)
    elif loss_type == "bnpo":
        loss = masked_mean(per_token, mask)
    else:
        raise ValueError(f"unknown GRPO loss_type {loss_type!r} (grpo, dr_grpo or bnpo)")
    with torch.no_grad():
        is_clipped = ((ratio < 1.0 - clip_eps) & (adv < 0)) | ((ratio > 1.0 + high) & (adv > 0))
        stats = {
            "kl": masked_mean(kl.detach(), mask),
            "clip_fraction": masked_mean(is_clipped.to(mask.dtype), mask),
            "ratio": masked_mean(ratio.detach(), mask),
        }
    return loss, stats


# ---- PPO -------------------------------------------------------------------------------------


def per_token_rewards(scores: torch.Tensor, logps: torch.Tensor, ref_logps: torch.Tensor,
                      mask: torch.Tensor, kl_coef: float,
                      kl_kind: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """PPO's shaped rewards: ``-kl_coef * KL_t`` at every completion token, plus the sequence
    ``scores`` (B,) at each sequence's last real token. Returns ``(rewards, kl)``, both (B, T)."""
    m = mask.to(logps.dtype)
    kl = kl_estimate(logps, ref_logps, kl_kind) * m
    rewards = -kl_coef * kl
    lengths = m.sum(1).long()
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(rewards.shape[0], device=rewards.device)
    bonus = torch.where(lengths > 0, scores.to(rewards.dtype), torch.zeros_like(scores, dtype=rewards.dtype))
    rewards = rewards.index_put((rows, last), bonus, accumulate=True)
    return rewards, kl


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float,
        lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation over (B, T) completion tokens.

    ``mask`` marks real tokens (trailing padding); the value after the last real token is 0.
    Returns ``(advantages, returns)`` with ``returns = advantages + values``, zero on padding.
    """
    m = mask.to(values.dtype)
    values = values * m
    rewards = rewards * m
    T = rewards.shape[1]
    last = torch.zeros_like(rewards[:, 0])
    out = []
    for t in reversed(range(T)):
        next_v = values[:, t + 1] if t + 1 < T else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * next_v - values[:, t]
        last = (delta + gamma * lam * last) * m[:, t]
        out.append(last)
    adv = torch.stack(out[::-1], dim=1)
    return adv, (adv + values) * m


def ppo_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor, clip_eps: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate on per-token ``advantages`` (B, T), averaged over masked tokens.

    Stats: ``clip_fraction`` (share of tokens where the clipped term was larger) and
    ``approx_kl`` (``0.5 * mean((log pi - log pi_old)^2)``).
    """
    ratio = torch.exp(logps - old_logps)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_eps, 1.0 + clip_eps)
    loss = masked_mean(torch.max(loss1, loss2), mask)
    with torch.no_grad():
        stats = {
            "clip_fraction": masked_mean((loss2 > loss1).to(logps.dtype), mask),
            "approx_kl": 0.5 * masked_mean((logps - old_logps) ** 2, mask),
        }
    return loss, stats


def ppo_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor,
                   mask: torch.Tensor, clip_range: float) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss ``0.5 * mean(max((v - R)^2, (clip(v, v_old +- c) - R)^2))``."""
    clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    l1 = (values - returns) ** 2
    l2 = (clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(l1, l2), mask)
    with torch.no_grad():
        stats = {"value_clip_fraction": masked_mean((l2 > l1).to(values.dtype), mask)}
    return loss, stats


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var(returns - values) / Var(returns)`` over the mask (1 = perfect, <= 0 = useless)."""
    var_r = masked_var(returns, mask, unbiased=False)
    var_res = masked_var(returns - values, mask, unbiased=False)
    if var_r.item() == 0.0:
        return torch.tensor(float("nan"))
    return 1.0 - var_res / var_r
