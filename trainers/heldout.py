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
from llmctl.trainers.generate import generate
from llmctl.trainers.rollout import decode_completion


@torch.no_grad()
def sampled(model: Any, prompts: Sequence[list[int]], golds: Sequence[str], tok: Any, *, k: int, temperature: float,
            max_new_tokens: int, batch_size: int = 32, dtype: torch.dtype | None = None,
            seed: int = 0) -> list[tuple[int, float, float]]:
    """(right answers of ``k`` samples, mean format score, mean length) per prompt, ``batch_size``
    prompts at a time; chunk ``c`` samples with seed ``seed + c``, so a measurement repeats exactly
    (``temperature`` 0 with ``k`` 1 is the greedy answer)."""
    out = []
    for c0 in range(0, len(prompts), batch_size):
        chunk = list(prompts[c0:c0 + batch_size])
        outs = generate(model, [p for p in chunk for _ in range(k)], max_new_tokens, temperature=temperature,
                        seed=seed + c0, dtype=dtype)
        for i, gold in enumerate(golds[c0:c0 + batch_size]):
            mine = outs[i * k:(i + 1) * k]
            scores = [score(decode_completion(ids, tok), gold) for ids in mine]
            out.append((sum(int(s.correct) for s in scores), sum(s.format for s in scores) / k,
                        sum(len(ids) for ids in mine) / k))
    return out


@torch.no_grad()
def measure(model: Any, prompts: Sequence[list[int]], rows: Sequence[dict[str, Any]], tok: Any, *, k: int,
            temperature: float, max_new_tokens: int, batch_size: int = 32, dtype: torch.dtype | None = None,
            seed: int = 0) -> list[dict[str, Any]]:
    """One :func:`llmctl.core.heldout.outcome` per row (``prompt`` ids given, ``gold`` and ``level``
    from the row): the greedy answer, and ``k`` samples at ``temperature`` when ``k`` > 0."""
    golds = [str(r["gold"]) for r in rows]
    opts = {"max_new_tokens": max_new_tokens, "batch_size": batch_size, "dtype": dtype}
    greedy = sampled(model, prompts, golds, tok, k=1, temperature=0.0, **opts)
    samples = sampled(model, prompts, golds, tok, k=k, temperature=temperature, seed=seed, **opts) if k else greedy
    return [heldout.outcome(g_ok, r.get("level"), c if k else 0, k, fmt, length)
            for r, (g_ok, _, _), (c, fmt, length) in zip(rows, greedy, samples, strict=True)]
