"""Batched sampling with a KV cache: temperature, top-k, top-p, stop at EOT, per-row lengths.

Prompts of different lengths are left-padded internally: padding slots are masked out of
attention and positions start at 0 on each row's first real token, so a row's output does not
depend on what else is in the batch. Only the last position goes through the output layer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch

from llmctl.core.tokenizer import EOT_ID, N_VOCAB
from llmctl.trainers.model import GPT, KVCache


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                top_p: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """One token id per row from ``logits`` (B, V); ``temperature <= 0`` means greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None and 0 < top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0.0 < top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        before = probs.cumsum(dim=-1) - probs  # mass of the tokens ranked above each one
        drop_sorted = before > top_p  # never drops the top token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(dim=-1)
    # inverse-CDF sampling: one uniform per row and a searchsorted over the cumulative
    # probabilities -- same distribution as torch.multinomial, ~10x faster on CPU at 50k vocab
    cdf = probs.cumsum(dim=-1)
    u = torch.rand(probs.size(0), 1, device=probs.device, generator=generator) * cdf[:, -1:]
    idx = torch.searchsorted(cdf, u, right=True).clamp_(max=probs.size(-1) - 1)
    # float rounding at the very top of the CDF could land on a zero-probability token
    ok = probs.gather(-1, idx) > 0
    if not bool(ok.all()):
        idx = torch.where(ok, idx, probs.argmax(dim=-1, keepdim=True))
    return idx.squeeze(-1)


def last_logits(h: torch.Tensor, head: torch.Tensor) -> torch.Tensor:
    """Float logits (B, V) of the last position of ``h`` (B, T, C) under the output weight ``head`` (V, C).

    Computed as ``head @ h.T`` and returned transposed (a view, not contiguous): with a few rows
    against a 50k x C weight, that product is several times faster on CPU than ``F.linear``.
    """
    return (head @ h[:, -1].T).T.float()


def _autocast(device: torch.device, dtype: torch.dtype | None) -> Any:
    if dtype is None or dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def generate(model: GPT, prompts: Sequence[Sequence[int]], max_new_tokens: int, temperature: float = 1.0,
             top_k: int | None = None, top_p: float | None = None, eos_id: int | None = EOT_ID,
             seed: int | None = None, *, use_cache: bool = True, dtype: torch.dtype | None = None,
             vocab_limit: int = N_VOCAB) -> list[list[int]]:
    """Sample up to ``max_new_tokens`` after each prompt; return each row's new tokens.

    A row stops after it samples ``eos_id`` (the EOT token is the row's last returned token).
    Prompts longer than ``block_size - max_new_tokens`` keep their last tokens. ``seed`` makes
    sampling reproducible; ``temperature=0`` is greedy. ``use_cache=False`` recomputes the whole
    context each step (the reference the KV cache is checked and benchmarked against). ``dtype``
    (e.g. ``torch.bfloat16``) runs under autocast. Token ids ``>= vocab_limit`` (the padded part
    of the vocabulary) are never sampled.
    """
    if max_new_tokens < 1 or not prompts:
        return [[] for _ in prompts]
    block = model.config.block_size
    if max_new_tokens >= block:
        raise ValueError(f"max_new_tokens {max_new_tokens} must be below block_size {block}")
    rows = [list(p)[-(block - max_new_tokens):] for p in prompts]
    if any(len(r) == 0 for r in rows):
        raise ValueError("every prompt needs at least one token")
    device = next(model.parameters()).device
    B = len(rows)
    lens = torch.tensor([len(r) for r in rows], device=device)
    P = int(lens.max())
    pad = P - lens
    idx = torch.zeros(B, P, dtype=torch.long, device=device)
    for i, r in enumerate(rows):
        idx[i, P - len(r):] = torch.tensor(r, dtype=torch.long)
    cols = torch.arange(P, device=device)[None]
    real = cols >= pad[:, None]  # (B, P): False on left padding
    positions = (cols - pad[:, None]).clamp(min=0)
    gen = torch.Generator(device=device).manual_seed(seed) if seed is not None else None

    was_training = model.training
    model.eval()
    out = torch.empty(B, max_new_tokens, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    n = 0
    try:
        with _autocast(device, dtype):
            cache = KVCache(model.config, B, P + max_new_tokens, device=device) if use_cache else None
            if cache is not None:
                cache.key_mask[:, :P] = real
                cache.all_real = bool(real.all())  # no padding: decoding steps need no attention mask
                h = model.hidden_states(idx, position_ids=positions, kv_cache=cache)
            else:
                h = model.hidden_states(idx, position_ids=positions, attention_mask=real)
            head = model.lm_head.weight[:vocab_limit]  # the padded rows are never sampled
            for t in range(max_new_tokens):
                logits = last_logits(h, head)
                if temperature > 0:
                    logits = logits.contiguous()
                nxt = sample_next(logits, temperature, top_k, top_p, gen)
                if eos_id is not None:
                    nxt = nxt.masked_fill(done, eos_id)
                out[:, t] = nxt
                n = t + 1
                if eos_id is not None:
                    done |= nxt == eos_id
                    if bool(done.all()):
                        break
                if t == max_new_tokens - 1:
                    break
                pos = (lens + t)[:, None]
                if cache is not None:
                    cache.key_mask[:, cache.pos] = True
                    h = model.hidden_states(nxt[:, None], position_ids=pos, kv_cache=cache)
                else:
                    idx = torch.cat([idx, nxt[:, None]], dim=1)
                    real = torch.cat([real, torch.ones(B, 1, dtype=torch.bool, device=device)], dim=1)
                    positions = torch.cat([positions, pos], dim=1)
                    h = model.hidden_states(idx, position_ids=positions, attention_mask=real)
    finally:
        model.train(was_training)

    result = []
    for row in out[:, :n].tolist():
        if eos_id is not None and eos_id in row:
            row = row[: row.index(eos_id) + 1]
        result.append(row)
    return result
