"""Measure the held-out table (:mod:`llmctl.core.heldout`) of a policy: greedy answers plus ``k``
seeded samples per prompt at the rollout temperature, scored by the shared verifier.

GRPO and PPO run it before their first step and at every evaluation (each process takes its share
of the prompts); ``llmctl eval`` runs it on the arithmetic questions it scores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from llmctl.core import heldout
from llmctl.core.rewards.verifier import score
from llmctl.core.tokenizer import EOT_ID
from llmctl.trainers.generate import generate


def _text(ids: list[int], tok: Any) -> str:
    return tok.decode(ids[:-1] if ids and ids[-1] == EOT_ID else ids)


@torch.no_grad()
def sampled(model: Any, prompts: Sequence[list[int]], golds: Sequence[str], tok: Any, *, k: int, temperature: float,
            max_new_tokens: int, batch_size: int = 32, dtype: torch.dtype | None = None,
            seed: int = 0) -> list[tuple[int, float, float]]:
    """(right answers of ``k`` samples, mean format score, mean length) per prompt; the samples of
    chunk ``c`` use seed ``seed + c``, so a measurement repeats exactly."""
    out = []
    per = max(1, batch_size)
    for c0 in range(0, len(prompts), per):
        chunk = list(prompts[c0:c0 + per])
        outs = generate(model, [p for p in chunk for _ in range(k)], max_new_tokens, temperature=temperature,
                        seed=seed + c0, dtype=dtype)
        for i, gold in enumerate(golds[c0:c0 + per]):
            scores = [score(_text(ids, tok), gold) for ids in outs[i * k:(i + 1) * k]]
            out.append((sum(int(s.correct) for s in scores), sum(s.format for s in scores) / k,
                        sum(len(ids) for ids in outs[i * k:(i + 1) * k]) / k))
    return out


@torch.no_grad()
def measure(model: Any, prompts: Sequence[list[int]], rows: Sequence[dict[str, Any]], tok: Any, *, k: int,
            temperature: float, max_new_tokens: int, batch_size: int = 32, dtype: torch.dtype | None = None,
            seed: int = 0) -> list[dict[str, Any]]:
    """One :func:`llmctl.core.heldout.outcome` per row (``prompt`` ids given, ``gold`` and ``level``
    from the row): the greedy answer, and ``k`` samples at ``temperature`` when ``k`` > 0."""
    golds = [str(r["gold"]) for r in rows]
    greedy: list[tuple[float, float, int]] = []
    for b0 in range(0, len(prompts), batch_size):
        outs = generate(model, list(prompts[b0:b0 + batch_size]), max_new_tokens, temperature=0.0, dtype=dtype)
        for ids, gold in zip(outs, golds[b0:b0 + batch_size], strict=True):
            s = score(_text(ids, tok), gold)
            greedy.append((float(s.correct), s.format, len(ids)))
    samples = sampled(model, prompts, golds, tok, k=k, temperature=temperature, max_new_tokens=max_new_tokens,
                      batch_size=batch_size, dtype=dtype, seed=seed) if k else None
    out = []
    for i, r in enumerate(rows):
        g_ok, g_fmt, g_len = greedy[i]
        if samples is None:
            out.append(heldout.outcome(g_ok, r.get("level"), fmt=g_fmt, length=g_len))
        else:
            c, fmt, length = samples[i]
            out.append(heldout.outcome(g_ok, r.get("level"), c, k, fmt, length))
    return out
