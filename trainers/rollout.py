"""Shared on-policy rollout for GRPO and PPO: prompts -> samples -> token masks, log-probs, rewards.

A rollout batch lays every completion out the same way: the prompt left-padded to width ``P``,
then the completion right-padded to width ``C``, so completion token ``t`` of every row sits in
column ``P + t``. ``completion_mask`` (N, C) is 1 on real completion tokens, the closing EOT
included (the policy learns to stop); a completion without EOT was cut at ``max_new_tokens``
("truncated"). Math rows (those with a ``gold``) are rendered with the shared GSM8K instruction
(``prompts.question_messages``); rows without one (preference prompts for PPO with a reward
model) become a plain user turn, or are used as given when ``prompt`` is a message list.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from llmctl.core.data.chat import encode_prompt
from llmctl.core.data.prompts import question_messages
from llmctl.core.data.records import InputError
from llmctl.core.rewards.verifier import ScoreResult, score
from llmctl.core.tokenizer import EOT_ID
from llmctl.core.workspace import Workspace
from llmctl.trainers.generate import generate
from llmctl.trainers.rl_common import shuffled_indices
from llmctl.trainers.rl_losses import entropy_from_logits, gather_logprobs

# ---- prompts ---------------------------------------------------------------------------------


def load_prompt_rows(paths: Sequence[str | Path], level: int = 0) -> list[dict[str, Any]]:
    """Rows ``{prompt, gold?, data_source, ...}`` of jsonl prompt files, in file order.

    ``level`` > 0 drops rows whose ``level`` is another one (rows without a level stay). A row needs a ``prompt`` (a string or
    a message list); errors name the file and line.
    """
    rows: list[dict[str, Any]] = []
    for path in paths:
        p = Path(path)
        if not p.is_file():
            raise FileNotFoundError(f"prompt file not found: {p} (run `llmctl prepare rl` / `llmctl prepare prefs`)")
        with open(p, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except ValueError as e:
                    raise InputError(p, lineno, f"invalid JSON: {e}") from None
                if not isinstance(rec, dict):
                    raise InputError(p, lineno, f"expected a JSON object, got {type(rec).__name__}")
                prompt = rec.get("prompt")
                if not (isinstance(prompt, str) and prompt.strip()) and not isinstance(prompt, list):
                    raise InputError(p, lineno, "missing or empty", "prompt")
                if "gold" in rec and not isinstance(rec["gold"], str | int | float):
                    raise InputError(p, lineno, "expected a string", "gold")
                if level and rec.get("level") is not None and rec.get("level") != level:
                    continue
                row = {k: rec[k] for k in ("prompt", "gold", "data_source", "level", "index") if k in rec}
                if "gold" in row:
                    row["gold"] = str(row["gold"])
                row.setdefault("data_source", p.stem)
                rows.append(row)
    if not rows:
        raise ValueError(f"no prompts in {', '.join(map(str, paths))}" + (f" at level {level}" if level else ""))
    return rows


def load_run_prompts(ws: Workspace, p: Any, train_data: Sequence[str], need_gold: bool
                     ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(train rows, held-out rows, input fingerprints) of an RL run.

    Held-out rows come from ``p.eval_data`` (its first ``p.eval_prompts``), else ``p.eval_prompts``
    rows drawn from the training files are held out of training. ``p.train_prompts`` > 0 keeps the
    training rows of only the first that many distinct prompts.
    """
    from llmctl.trainers.loop import input_fingerprint

    train_files = [ws.path(f) for f in train_data]
    rows = load_prompt_rows(train_files, p.arithmetic_level)
    eval_files = [ws.path(f) for f in p.eval_data]
    if eval_files:
        held = load_prompt_rows(eval_files, p.arithmetic_level)[:p.eval_prompts] if p.eval_prompts else []
    else:
        rows, held = split_eval(rows, p.eval_prompts, p.seed)
    if p.train_prompts:
        keys = [_prompt_key(r) for r in rows]
        keep = set(list(dict.fromkeys(keys))[:p.train_prompts])
        rows = [r for r, k in zip(rows, keys, strict=True) if k in keep]
    if need_gold:
        for r in rows + held:
            if "gold" not in r:
                raise ValueError(f"prompt rows from {r.get('data_source')} have no 'gold' answer for the verifier")
    return rows, held, {str(f): input_fingerprint(f) for f in train_files + eval_files}


def prompt_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The conversation a row's prompt is rendered from."""
    prompt = row["prompt"]
    if isinstance(prompt, list):
        return prompt
    if "gold" in row:
        return question_messages(prompt)
    return [{"role": "user", "content": prompt}]


def prompt_ids(row: dict[str, Any], tok: Any, max_prompt_length: int) -> list[int]:
    """Token ids of a row's rendered prompt (its last ``max_prompt_length``), cached on the row."""
    ids = row.get("_ids")
    if ids is None:
        ids = row["_ids"] = encode_prompt(prompt_messages(row), tok)
    return ids[-max_prompt_length:]


def _prompt_key(row: dict[str, Any]) -> str:
    prompt = row["prompt"]
    return prompt.strip() if isinstance(prompt, str) else json.dumps(prompt, sort_keys=True)


def split_eval(rows: list[dict[str, Any]], n: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out): ``n`` distinct prompts drawn with ``seed`` are held out, and every
    training row with the same prompt text is dropped, so held-out prompts are never trained on."""
    if n <= 0:
        return rows, []
    keys = list(dict.fromkeys(_prompt_key(r) for r in rows))
    if n >= len(keys):
        raise ValueError(f"cannot hold out {n} of {len(keys)} distinct prompts; lower eval_prompts or pass eval_data")
    random.Random(f"llmctl-heldout:{seed}").shuffle(keys)
    chosen = set(keys[:n])
    held, seen, train = [], set(), []
    for r in rows:
        k = _prompt_key(r)
        if k not in chosen:
            train.append(r)
        elif k not in seen:
            seen.add(k)
            held.append(r)
    return train, held


def step_prompts(rows: list[dict[str, Any]], n: int, seed: int, step: int, rank: int = 0,
                 world_size: int = 1) -> list[dict[str, Any]]:
    """The ``n`` prompts of a step on one process: passes over seeded shuffles of the data, a
    function of (seed, step, rank) only, so a resumed run sees exactly the same prompts."""
    start = (step * world_size + rank) * n
    return [rows[i] for i in shuffled_indices(len(rows), n, seed, start)]


# ---- rollouts --------------------------------------------------------------------------------


@dataclass
class Rollout:
    """``N = prompts x G`` completions laid out as (left-padded prompt | right-padded completion)."""

    rows: list[dict[str, Any]]
    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    truncated: list[bool]
    input_ids: torch.Tensor  # (N, P + C)
    attention_mask: torch.Tensor  # (N, P + C)
    completion_mask: torch.Tensor  # (N, C) float
    start: int  # P: column of the first completion token
    temperature: float = 1.0  # sampling temperature: log-probs are taken at the same one
    scores: list[ScoreResult] = field(default_factory=list)

    @property
    def lengths(self) -> list[int]:
        return [len(c) for c in self.completion_ids]

    def __len__(self) -> int:
        return len(self.completion_ids)


def pack(prompts: list[list[int]], completions: list[list[int]], device: Any,
         pad_id: int = EOT_ID) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """(input_ids, attention_mask, completion_mask, P) for prompt/completion id lists."""
    N = len(prompts)
    P = max(len(p) for p in prompts)
    C = max(1, max(len(c) for c in completions))
    ids = torch.full((N, P + C), pad_id, dtype=torch.long)
    att = torch.zeros((N, P + C), dtype=torch.long)
    cmask = torch.zeros((N, C), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        att[i, P - len(p):P] = 1
        if c:
            ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
            att[i, P:P + len(c)] = 1
            cmask[i, :len(c)] = 1.0
    return ids.to(device), att.to(device), cmask.to(device), P


def decode_completion(ids: list[int], tok: Any) -> str:
    """The completion's text, without its closing EOT."""
    if ids and ids[-1] == EOT_ID:
        ids = ids[:-1]
    return tok.decode(ids)


def sample_rollout(model: Any, rows: list[dict[str, Any]], tok: Any, *, num_generations: int,
                   max_new_tokens: int, max_prompt_length: int, temperature: float = 1.0, top_k: int = 0,
                   top_p: float = 1.0, seed: int | None = None, dtype: torch.dtype | None = None,
                   gen_batch_size: int = 0) -> Rollout:
    """Sample ``num_generations`` completions per row with the KV-cache generator.

    ``model`` is the plain GPT (not DDP-wrapped). Completions of one prompt are consecutive. On
    CUDA, :func:`generate` runs the static-cache decoder (:mod:`llmctl.trainers.decode`: CUDA
    graphs, sampling on the device); its buffers stay allocated between rollouts of the same shape.
    ``gen_batch_size`` > 0 generates in chunks of that many rows.
    """
    device = next(model.parameters()).device
    expanded = [r for r in rows for _ in range(num_generations)]
    prompts = [prompt_ids(r, tok, max_prompt_length) for r in expanded]
    chunk = gen_batch_size if gen_batch_size > 0 else len(prompts)
    completions: list[list[int]] = []
    for c0 in range(0, len(prompts), chunk):
        completions += generate(model, prompts[c0:c0 + chunk], max_new_tokens, temperature=temperature,
                                top_k=top_k or None, top_p=top_p if top_p < 1.0 else None,
                                seed=None if seed is None else seed + c0, dtype=dtype)
    texts = [decode_completion(c, tok) for c in completions]
    truncated = [not (c and c[-1] == EOT_ID) for c in completions]
    ids, att, cmask, P = pack(prompts, completions, device)
    return Rollout(expanded, prompts, completions, texts, truncated, ids, att, cmask, P, temperature)


def score_rollout(rollout: Rollout, format_weight: float) -> torch.Tensor:
    """Verifier rewards ``correct + format_weight * format`` (N,), stored in ``rollout.scores``."""
    rollout.scores = [score(t, r["gold"], format_weight=format_weight) for t, r in zip(rollout.texts, rollout.rows,
                                                                                     strict=True)]
    return torch.tensor([s.reward for s in rollout.scores], dtype=torch.float32)


def micro_batches(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


@torch.no_grad()
def completion_logprobs(model: Any, rollout: Rollout, micro_batch_size: int, *, autocast: Any = None,
                        with_values: bool = False,
                        with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """(log-probs (N, C), values or None, entropy or None) of the rollout's completion tokens.

    ``model`` is a :class:`llmctl.trainers.heads.PolicyModel` (possibly wrapped); no gradients.
    """
    import contextlib

    was = model.training
    model.eval()
    lps, vals, ents = [], [], []
    try:
        for sl in micro_batches(len(rollout), micro_batch_size):
            with autocast or contextlib.nullcontext():
                logits, values = model(rollout.input_ids[sl], rollout.attention_mask[sl], rollout.start,
                                       rollout.temperature)
            tokens = rollout.input_ids[sl, rollout.start:]
            lps.append(gather_logprobs(logits, tokens))
            if with_values:
                vals.append(values.float())
            if with_entropy:
                ents.append(entropy_from_logits(logits))
    finally:
        model.train(was)
    return (torch.cat(lps), torch.cat(vals) if with_values else None, torch.cat(ents) if with_entropy else None)


# ---- evaluation and logging ------------------------------------------------------------------


def rollout_stats(rollout: Rollout) -> dict[str, float]:
    """``completions/mean_length``, ``completions/clipped_ratio`` and min/max lengths."""
    lengths = rollout.lengths
    n = max(1, len(lengths))
    return {
        "completions/mean_length": sum(lengths) / n,
        "completions/min_length": float(min(lengths, default=0)),
        "completions/max_length": float(max(lengths, default=0)),
        "completions/clipped_ratio": sum(rollout.truncated) / n,
    }


def rollout_warning(rollout: Rollout, rewards: torch.Tensor) -> str | None:
    """A warning for a degenerate step: every completion truncated, or every reward zero."""
    parts = []
    if rollout.truncated and all(rollout.truncated):
        parts.append("every completion was truncated at max_new_tokens")
    if rewards.numel() and bool((rewards == 0).all()):
        parts.append("every reward is zero")
    return "; ".join(parts) or None


def sample_records(rollout: Rollout, limit: int, seed: int, **per_row: Sequence[float]) -> list[dict[str, Any]]:
    """Rows for ``samples.jsonl``: prompt, completion, extracted answer, gold and each reward part.

    ``limit`` -1 keeps all, 0 none, else a seeded sample of that many (whole groups kept together
    when possible). ``per_row`` adds per-completion numbers (e.g. ``advantage``).
    """
    n = len(rollout)
    if limit == 0 or n == 0:
        return []
    idx = list(range(n)) if limit < 0 or limit >= n else sorted(random.Random(seed).sample(range(n), limit))
    out = []
    for i in idx:
        row = rollout.rows[i]
        prompt = row["prompt"] if isinstance(row["prompt"], str) else json.dumps(row["prompt"])
        rec: dict[str, Any] = {"index": i, "prompt": prompt, "completion": rollout.texts[i],
                               "data_source": row.get("data_source"), "gold": row.get("gold"),
                               "length": len(rollout.completion_ids[i]), "truncated": rollout.truncated[i]}
        if rollout.scores:
            s = rollout.scores[i]
            rec.update(extracted=s.extracted, correct=s.correct, format=s.format, reward=s.reward)
        for k, vals in per_row.items():
            rec[k] = float(vals[i])
        out.append(rec)
    return out
