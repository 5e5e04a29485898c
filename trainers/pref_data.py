"""Tokenized preference pairs and their collator, for the reward model and DPO.

Each pair ``{"prompt": [messages], "chosen": [assistant msg], "rejected": [assistant msg]}`` (the
``prepare prefs`` format) is encoded through the chat template: the prompt with
``chat.encode_prompt`` (ending in ``Assistant:\\n``), each reply as its content tokens + EOT, so
prompt + reply ids equal ``chat.encode_chat`` of the whole conversation. Both sides share the
same prompt ids.

Truncation to ``max_len``: when prompt + the longer reply do not fit, the prompt is cut from the
left, keeping at least ``min(prompt, max_len // 2)`` tokens (so a long prompt never squeezes the
replies out entirely); then each reply is cut at the end to fit (it may lose its EOT).

A batch (right-padded with EOT; chosen and rejected padded to the same width T) holds LongTensors:

- ``chosen_ids`` / ``rejected_ids`` (B, T)
- ``chosen_mask`` / ``rejected_mask`` (B, T): the loss mask, 1 on reply tokens (content + EOT)
- ``chosen_lens`` / ``rejected_lens`` (B,): real tokens (the last real token is at ``lens - 1``,
  where a reward model reads its score)
- ``prompt_lens`` (B,): shared prompt tokens, so the reply occupies ``[prompt_len, len)``

For DPO, sum log-probs of ``ids[:, 1:]`` under ``mask[:, 1:]`` (the shifted-target convention).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from llmctl.core.data.chat import encode_completion, encode_prompt
from llmctl.core.tokenizer import EOT_ID, Tokenizer
from llmctl.core.workspace import Workspace
from llmctl.trainers.loop import input_fingerprint
from llmctl.trainers.rl_common import shuffled_indices


def _reply_text(side: Any, where: str) -> str:
    if isinstance(side, str):
        return side
    if isinstance(side, list) and side and isinstance(side[-1], dict) and side[-1].get("role") == "assistant" \
            and isinstance(side[-1].get("content"), str):
        return side[-1]["content"]
    raise ValueError(f"{where}: expected a list ending in an assistant message")


def encode_pair(pair: dict[str, Any], tok: Tokenizer, max_len: int) -> dict[str, Any]:
    """Token ids of one pair: shared prompt ids and each side's reply ids, truncated to ``max_len``."""
    prompt = encode_prompt(pair["prompt"], tok)
    chosen = encode_completion(_reply_text(pair["chosen"], "chosen"), tok)
    rejected = encode_completion(_reply_text(pair["rejected"], "rejected"), tok)
    truncated = False
    longest = max(len(chosen), len(rejected))
    if len(prompt) + longest > max_len:
        truncated = True
        keep = max(max_len - longest, min(len(prompt), max_len // 2))
        if keep < len(prompt):
            prompt = prompt[len(prompt) - keep:]
        room = max_len - len(prompt)
        chosen, rejected = chosen[:room], rejected[:room]
    return {"prompt_ids": prompt, "chosen_ids": chosen, "rejected_ids": rejected, "truncated": truncated}


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """The pairs of a ``preferences*.jsonl`` file."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except ValueError as e:
                    raise ValueError(f"{path}:{lineno}: invalid JSON ({e})") from None
    return out


class PreferenceDataset(torch.utils.data.Dataset):
    """Preference pairs tokenized once up front (``pairs`` or a ``.jsonl`` path) with ``tok``, the
    workspace's tokenizer (``ws.tokenizer()``)."""

    def __init__(self, pairs: str | Path | Sequence[dict[str, Any]], tok: Tokenizer, max_len: int = 1024) -> None:
        if isinstance(pairs, str | Path):
            pairs = read_pairs(pairs)
        self.max_len = max_len
        self.items = [encode_pair(p, tok, max_len) for p in pairs]
        self.truncated = sum(1 for it in self.items if it["truncated"])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.items[i]


def collate_pairs(batch: Sequence[dict[str, Any]], pad_id: int = EOT_ID) -> dict[str, torch.Tensor]:
    """Right-pad a list of ``encode_pair`` results into the tensors described in the module doc."""
    seqs = {"chosen": [], "rejected": []}
    for it in batch:
        for side in seqs:
            seqs[side].append(it["prompt_ids"] + it[f"{side}_ids"])
    width = max(len(s) for side in seqs.values() for s in side)
    n = len(batch)
    out: dict[str, torch.Tensor] = {}
    prompt_lens = torch.tensor([len(it["prompt_ids"]) for it in batch], dtype=torch.long)
    for side, rows in seqs.items():
        ids = torch.full((n, width), pad_id, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        lens = torch.zeros(n, dtype=torch.long)
        for b, row in enumerate(rows):
            ids[b, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[b, int(prompt_lens[b]):len(row)] = 1
            lens[b] = len(row)
        out[f"{side}_ids"], out[f"{side}_mask"], out[f"{side}_lens"] = ids, mask, lens
    out["prompt_lens"] = prompt_lens
    return out


# ---- what the reward and DPO trainers read -----------------------------------------------------


def load_splits(ws: Workspace, p: Any, tok: Tokenizer) -> tuple[PreferenceDataset, PreferenceDataset, dict[str, Any]]:
    """(train pairs, held-out pairs, input fingerprints) of a preference stage's ``train_data`` /
    ``test_data``, cut to ``max_pairs`` / ``eval_pairs`` (0 = all) and encoded to ``max_length``."""
    train_path, test_path = ws.path(p.train_data), ws.path(p.test_data)
    for path in (train_path, test_path):
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing: run `llmctl prepare prefs` first")
    train = PreferenceDataset(read_pairs(train_path)[:p.max_pairs or None], tok, p.max_length)
    test = PreferenceDataset(read_pairs(test_path)[:p.eval_pairs or None], tok, p.max_length)
    if len(train) == 0:
        raise ValueError(f"{train_path} holds no preference pairs")
    return train, test, {"preferences": input_fingerprint(train_path), "preferences_test": input_fingerprint(test_path)}


def step_batches(data: PreferenceDataset, p: Any, step: int, rank: int,
                 world_size: int) -> Iterator[tuple[dict[str, torch.Tensor], bool]]:
    """This process's ``grad_accum`` batches of ``batch_size`` pairs for optimizer step ``step``,
    each with whether it is the last: seeded passes over the data, the same in a resumed run."""
    for k in range(p.grad_accum):
        micro = (step * p.grad_accum + k) * world_size + rank
        idx = shuffled_indices(len(data), p.batch_size, p.seed, micro * p.batch_size)
        yield collate_pairs([data[i] for i in idx]), k == p.grad_accum - 1


def held_out_batches(data: PreferenceDataset, batch_size: int, rank: int,
                     world_size: int) -> Iterator[dict[str, torch.Tensor]]:
    """This process's share of ``data`` (every ``world_size``-th pair), in batches."""
    mine = list(range(rank, len(data), world_size))
    for b0 in range(0, len(mine), batch_size):
        yield collate_pairs([data[i] for i in mine[b0:b0 + batch_size]])
