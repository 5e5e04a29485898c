"""The vectorised SFT path against plain per-example references: chat runs, flat ids and packing."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmctl.core.data.chat import EOT, ROLES, encode_chats, encode_chats_flat, shared_prefix_ids
from llmctl.core.data.packing import best_fit_decreasing, pack_flat
from llmctl.core.data.prompts import QUESTION_PREFIX, format_question

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=12)
# pieces at the seams of the joined encoding: EOT and its fragments, leading spaces, markers
SEAMS = [EOT, "<|endoftext", "|>", "<|", "\n", " ", "\t", "\u00a0", "\u2028", "User:\n", "Assistant:\n", "'s",
         "7", "x", ".", QUESTION_PREFIX]
tricky = st.lists(st.one_of(st.sampled_from(SEAMS), text), max_size=4).map("".join)
conversation = st.lists(st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(ROLES),
                                  st.one_of(text, tricky)), max_size=4)


@SETTINGS
@given(st.lists(conversation, max_size=40))
def test_flat_is_encode_chats_concatenated(tokenizer, convs):
    want = encode_chats(convs, tokenizer)
    ids, mask, lengths = encode_chats_flat(convs, tokenizer)
    assert ids.dtype == np.int32 and mask.dtype == np.uint8 and lengths.dtype == np.int64
    assert lengths.tolist() == [len(i) for i, _ in want]
    assert ids.tolist() == [t for i, _ in want for t in i]
    assert mask.tolist() == [t for _, m in want for t in m]


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
    from llmctl.core.data.hf_sources import iter_records, local_cache_dir

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


def test_flat_equals_plain_encoding_on_every_real_sft_conversation(tokenizer, shared_data, tmp_path, monkeypatch):
    """All Alpaca / Dolly / GSM8K conversations the stage reads, plus arithmetic ones."""
    from llmctl.core.data.prepare_sft import arithmetic_conversations, read_source
    from llmctl.core.data.records import ErrorPolicy

    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    files = {"alpaca": shared_data / "alpaca" / "alpaca_small.json",
             "dolly": shared_data / "dolly" / "databricks-dolly-15k.head49.jsonl", "gsm8k": shared_data / "gsm8k"}
    convs = [c for name, f in files.items() for c in read_source(name, str(f), ErrorPolicy())[0]]
    convs += arithmetic_conversations(300, [1, 2, 3], seed=5)
    assert len(convs) > 9000
    want = encode_chats(convs, tokenizer)
    ids, mask, lengths = encode_chats_flat(convs, tokenizer)
    assert lengths.tolist() == [len(i) for i, _ in want]
    assert np.array_equal(ids, np.concatenate([i for i, _ in want]))
    assert np.array_equal(mask, np.concatenate([m for _, m in want]))


@SETTINGS
@given(st.lists(conversation, min_size=1, max_size=30), st.integers(16, 40))
def test_pack_conversations_drops_exactly_the_examples_without_targets_in_a_row(tokenizer, convs, seq_len):
    from llmctl.core.data.prepare_sft import pack_conversations
    from llmctl.core.data.records import InputError

    want = encode_chats(convs, tokenizer)
    keep_ref = [any(m[:seq_len]) for _, m in want]
    if not any(keep_ref):
        with pytest.raises(InputError, match="no examples left"):
            pack_conversations(convs, tokenizer, seq_len, seed=0)
        return
    packed, keep = pack_conversations(convs, tokenizer, seq_len, seed=0)
    assert keep.tolist() == keep_ref
    kept = [w for w, k in zip(want, keep_ref, strict=True) if k]
    assert packed.example_length.tolist() == [min(len(i), seq_len) for i, _ in kept]
    for j, (ids, mask) in enumerate(kept):
        r, s, n = packed.example_row[j], packed.example_start[j], packed.example_length[j]
        assert packed.tokens[r, s:s + n].tolist() == ids[:n] and packed.loss_mask[r, s:s + n].tolist() == mask[:n]


@SETTINGS
@given(st.lists(conversation, max_size=20))
def test_tiktoken_backend_gives_the_same_flat_encoding(tokenizer, tokenizer_file, convs):
    from llmctl.core.tokenizer import get_tokenizer

    plain = get_tokenizer(tokenizer_file, backend="tiktoken")
    assert plain.backend == "tiktoken"
    for got, want in zip(encode_chats_flat(convs, plain), encode_chats_flat(convs, tokenizer), strict=True):
        assert np.array_equal(got, want)
