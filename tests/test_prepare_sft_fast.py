"""The vectorised SFT path against plain per-example references: chat runs, flat ids and packing."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmctl.core.chat import ROLES, encode_chats, encode_chats_flat, encode_chats_runs, shared_prefix_ids
from llmctl.core.packing import best_fit_decreasing, pack_flat
from llmctl.core.prompts import QUESTION_PREFIX, format_question

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
conversation = st.lists(st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(ROLES), text), max_size=4)


@SETTINGS
@given(st.lists(conversation, max_size=6))
def test_flat_and_runs_are_encode_chats_concatenated(tokenizer, convs):
    want = encode_chats(convs, tokenizer)
    ids, mask, lengths = encode_chats_flat(convs, tokenizer)
    assert ids.dtype == np.int32 and mask.dtype == np.uint8 and lengths.dtype == np.int64
    assert lengths.tolist() == [len(i) for i, _ in want]
    assert ids.tolist() == [t for i, _ in want for t in i]
    assert mask.tolist() == [t for _, m in want for t in m]
    runs = encode_chats_runs(convs, tokenizer)
    assert [len(r) for r in runs.runs] == runs.run_len.tolist()
    assert np.bincount(runs.run_conv, weights=runs.run_len, minlength=len(convs)).tolist() == lengths.tolist()


prefixed = st.builds(lambda head, rest: QUESTION_PREFIX + head + rest,
                     st.sampled_from(["", " ", "\n", "\t", "\u00a0", "A", "'s", "7", ".", "\u6f22"]), text)


@SETTINGS
@given(st.lists(st.lists(st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(ROLES),
                                   st.one_of(prefixed, text)), max_size=4), max_size=6))
def test_runs_with_the_question_prefix_and_repeats_equal_plain_encoding(tokenizer, convs):
    convs = convs + convs[:2]  # repeated contents are tokenized once
    want = encode_chats(convs, tokenizer)
    ids, mask, lengths = encode_chats_flat(convs, tokenizer)
    assert ids.tolist() == [t for i, _ in want for t in i]
    assert mask.tolist() == [t for _, m in want for t in m]
    assert lengths.tolist() == [len(i) for i, _ in want]


@SETTINGS
@given(text, st.characters(codec="utf-8", exclude_categories=("Cs",)).filter(lambda c: not c.isspace()), text)
def test_shared_prefix_ids_hold_for_any_non_space_continuation(tokenizer, head, first, rest):
    prefix = head + "\n"
    ids = shared_prefix_ids(prefix, tokenizer)
    assert ids is not None
    assert tokenizer.encode(prefix + first + rest) == ids + tokenizer.encode(first + rest)
    assert shared_prefix_ids(head + " ", tokenizer) is None  # a space joins the next word


def test_question_prefix_splits_every_real_gsm8k_question(tokenizer, shared_data):
    import json

    ids = shared_prefix_ids(QUESTION_PREFIX, tokenizer)
    assert ids == tokenizer.encode(QUESTION_PREFIX.rstrip("\n")) + tokenizer.encode("\n") * 2
    questions = [json.loads(line)["question"] for split in ("train", "test")
                 for line in open(shared_data / "gsm8k" / f"{split}.jsonl", encoding="utf-8")]
    assert len(questions) > 8000
    full = tokenizer.encode_batch([format_question(q) for q in questions])
    rest = tokenizer.encode_batch([q.strip() for q in questions])
    assert all(f == ids + r for f, r in zip(full, rest, strict=True))


@pytest.mark.parametrize("bad", [[{"role": "robot", "content": "x"}], [{"role": "user"}], [["user", "x"]],
                                 "User: hi", [{"role": "user", "content": 3}]])
def test_malformed_conversations_raise_the_checked_message(tokenizer, bad):
    with pytest.raises(ValueError) as flat:
        encode_chats_flat([[{"role": "user", "content": "ok"}], bad], tokenizer)
    with pytest.raises(ValueError) as slow:
        encode_chats([bad], tokenizer)
    assert str(flat.value) == str(slow.value)


def _reference_pack(lengths, cap, seed):
    """Rows filled example by example from the bins (the obvious loop), ids = arange over tokens."""
    clipped = [min(n, cap) for n in lengths]
    bins = best_fit_decreasing(clipped, cap)
    if seed is not None:
        random.Random(seed).shuffle(bins)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    tokens = np.full((len(bins), cap), -7, dtype=np.int32)
    ex_ids = np.full((len(bins), cap), -1, dtype=np.int32)
    for r, members in enumerate(bins):
        col = 0
        for j in members:
            tokens[r, col:col + clipped[j]] = np.arange(offsets[j], offsets[j] + clipped[j])
            ex_ids[r, col:col + clipped[j]] = j
            col += clipped[j]
    return tokens, ex_ids


@SETTINGS
@given(st.lists(st.integers(1, 40), min_size=1, max_size=40), st.integers(4, 48), st.sampled_from([None, 0, 5]))
def test_pack_flat_matches_the_per_example_loop(lengths, cap, seed):
    total = sum(lengths)
    ids = np.arange(total, dtype=np.int32)
    p = pack_flat(ids, (ids % 2).astype(np.uint8), lengths, cap, pad_id=-7, seed=seed)
    tokens, ex_ids = _reference_pack(lengths, cap, seed)
    assert np.array_equal(p.tokens, tokens) and np.array_equal(p.example_ids, ex_ids)
    assert np.array_equal(p.loss_mask, np.where(ex_ids >= 0, tokens % 2, 0))
    assert p.truncated == sum(n > cap for n in lengths)


def test_local_arrow_cache_is_kept_and_follows_file_changes(tmp_path, monkeypatch):
    from llmctl.core.hf_sources import iter_records, local_cache_dir

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    f = tmp_path / "d.jsonl"
    f.write_text('{"q": "a"}\n{"q": "b"}\n')
    assert [r.data["q"] for r in iter_records(str(f))] == ["a", "b"]
    first = Path(local_cache_dir(f))
    assert first.is_dir() and any(first.rglob("*.arrow"))  # kept for the next run
    assert [r.data["q"] for r in iter_records(str(f))] == ["a", "b"]
    f.write_text('{"q": "c"}\n')
    assert [r.data["q"] for r in iter_records(str(f))] == ["c"]
    assert not first.exists() and [p.name for p in first.parent.iterdir()] == [Path(local_cache_dir(f)).name]
