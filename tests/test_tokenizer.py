"""The tokenizer: riptoken ids equal tiktoken's on every real text file and on generated unicode."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llmctl.core.tokenizer import EOT_ID, PADDED_VOCAB, TokenizerError, get_tokenizer, read_ranks_file

TEXT_SUFFIXES = (".txt", ".md", ".jsonl", ".json", ".jsonl.gz")
CAP_CHARS = 300_000  # text per file (keeps the whole file under a few seconds)
MAX_STRINGS = 5_000  # text fields per file


def _real_files() -> list[Path]:
    from conftest import SHARED_DATA

    return sorted(p for p in SHARED_DATA.rglob("*") if p.is_file() and p.name.endswith(TEXT_SUFFIXES))


def _strings(obj, out: list[str]) -> None:
    if isinstance(obj, str):
        out.append(obj)
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.append(k)
            _strings(v, out)
    elif isinstance(obj, list):
        for v in obj:
            _strings(v, out)


def texts_of(path: Path) -> list[str]:
    """The text fields of a real data file (whole .txt/.md files split into ~64 KB pieces), capped."""
    name = path.name
    if name.endswith((".txt", ".md")):
        text = path.read_text(encoding="utf-8")[:CAP_CHARS]
        return [text[i:i + 65536] for i in range(0, len(text), 65536)]
    out: list[str] = []
    if name.endswith(".json"):
        _strings(json.loads(path.read_text(encoding="utf-8")), out)
    else:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    _strings(json.loads(line), out)
                if sum(map(len, out)) > CAP_CHARS:
                    break
    if len(out) > MAX_STRINGS:  # e.g. encoder.json's 50k keys: an even sample across the file
        out = out[:: len(out) // MAX_STRINGS + 1]
    kept, total = [], 0
    for t in out:
        if total > CAP_CHARS:
            break
        kept.append(t)
        total += len(t)
    return kept


def test_backend_is_riptoken_with_gpt2_constants(tokenizer):
    assert tokenizer.backend == "riptoken"
    assert tokenizer.eot_id == EOT_ID == 50256
    assert tokenizer.vocab_size == PADDED_VOCAB == 50304
    assert tokenizer.n_vocab == 50257
    assert tokenizer.reference.eot_token == 50256
    d = tokenizer.describe()
    assert d["name"] == "r50k_base" and d["eot_id"] == 50256 and d["vocab_size"] == 50304 and len(d["sha256"]) == 64


def test_every_real_file_is_covered():
    names = {p.name for p in _real_files()}
    for expected in ("c4_demo.jsonl", "wiki_demo.txt", "tinyshakespeare.txt", "alpaca_small.json",
                     "harmless-base-test.jsonl.gz", "train.jsonl", "math500_test.jsonl", "encoder.json"):
        assert expected in names
    assert len(names) >= 30


@pytest.mark.parametrize("path", _real_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_ids_equal_tiktoken_on_real_file(tokenizer, path):
    texts = texts_of(path)
    assert texts, f"no text read from {path}"
    ref = tokenizer.reference
    want = ref.encode_ordinary_batch(texts)
    got = tokenizer.encode_batch(texts)
    for i, (t, w, g) in enumerate(zip(texts, want, got, strict=True)):
        assert g == w, f"{path.name}: text {i} ({t[:60]!r}…) differs"
    assert tokenizer.encode(texts[0]) == want[0]
    # decode round trip on the real text
    assert tokenizer.decode(got[0]) == texts[0]
    assert all(i < 50257 for ids in got for i in ids)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=300))
def test_ids_equal_tiktoken_on_generated_unicode(tokenizer, text):
    ids = tokenizer.encode(text)
    assert ids == tokenizer.reference.encode_ordinary(text)
    assert tokenizer.decode(ids) == text
    assert EOT_ID not in ids


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=80), max_size=20),
       st.sampled_from(["", "<|endoftext|>", " \n\n\t", "ǅ𝔘🙂 12345 ..."]))
def test_batch_equals_single_and_special_text_stays_ordinary(tokenizer, texts, extra):
    texts = [t + extra for t in texts]
    got = tokenizer.encode_batch(texts)
    assert got == [tokenizer.reference.encode_ordinary(t) for t in texts]
    assert all(EOT_ID not in ids for ids in got)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(st.text(alphabet=st.characters(codec="utf-8"), max_size=40), max_size=5), max_size=10))
def test_batch_eot_reads_endoftext_as_the_eot_id_and_the_rest_as_ordinary(tokenizer, pieces):
    texts = ["<|endoftext|>".join(p) for p in pieces]
    got = tokenizer.encode_batch_eot(texts)
    assert got == [tokenizer.reference.encode(t, allowed_special={"<|endoftext|>"}) for t in texts]
    split = [t.split("<|endoftext|>") for t in texts]  # a piece may itself hold the string
    assert got == [sum(([EOT_ID] * (i > 0) + tokenizer.encode(s) for i, s in enumerate(p)), []) for p in split]


def test_decode_tokens_and_padding_ids(tokenizer):
    text = "Hello world, this is llmctl.\n"
    ids = tokenizer.encode(text)
    assert "".join(tokenizer.decode_tokens(ids)) == text
    assert tokenizer.decode(ids + [50300]) == text  # padded-vocab ids are dropped
    assert tokenizer.decode_tokens([50300]) == ["<pad>"]


def test_missing_file_is_a_clear_one_line_error(tmp_path):
    missing = tmp_path / "nope.tiktoken"
    with pytest.raises(TokenizerError) as e:
        get_tokenizer(missing)
    msg = str(e.value)
    assert str(missing) in msg and "cannot read" in msg and "\n" not in msg


def test_wrong_file_is_a_clear_one_line_error(shared_data):
    wrong = shared_data / "tokenizer" / "vocab.bpe"
    with pytest.raises(TokenizerError) as e:
        read_ranks_file(wrong)
    msg = str(e.value)
    assert "vocab.bpe" in msg and "is not r50k_base" in msg and "\n" not in msg
    with pytest.raises(TokenizerError):
        get_tokenizer(wrong)


def test_corrupt_copy_is_refused(tmp_path, tokenizer_file):
    bad = tmp_path / "r50k_base.tiktoken"
    data = bytearray(tokenizer_file.read_bytes())
    data[100] ^= 1
    bad.write_bytes(bytes(data))
    with pytest.raises(TokenizerError, match="is not r50k_base"):
        get_tokenizer(bad)
