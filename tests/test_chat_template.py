"""The chat template: ids/mask properties (hypothesis), prompt prefixes, Jinja and transformers parity."""

from __future__ import annotations

import gzip
import json
import re

import jinja2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.sandbox import ImmutableSandboxedEnvironment

from llmctl.core.data.chat import (
    ASSISTANT_MARKER,
    ROLE_MARKERS,
    ROLES,
    chat_template_jinja,
    encode_chat,
    encode_chats,
    encode_completion,
    encode_prompt,
    render_chat,
    render_prompt,
)
from llmctl.core.data.prompts import format_question, gsm8k_target
from llmctl.core.tokenizer import EOT_ID

EOT = "<|endoftext|>"

content = st.lists(
    st.one_of(
        st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=6),
        st.sampled_from([" ", "\n", "\t", "  ", "<|endoftext|>", "User:", "Assistant:\n", "'s", "123", "é", "🙂"]),
    ),
    max_size=8,
).map("".join)
message = st.builds(lambda r, c: {"role": r, "content": c}, st.sampled_from(ROLES), content)
conversation = st.lists(message, min_size=0, max_size=6)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _expected(messages, tok):
    """An independent build of ids and mask from tiktoken (the reference encoder)."""
    ids, mask = [], []
    for m in messages:
        mk = tok.reference.encode_ordinary(ROLE_MARKERS[m["role"]])
        body = tok.reference.encode_ordinary(m["content"]) + [EOT_ID]
        ids += mk + body
        mask += [0] * len(mk) + [int(m["role"] == "assistant")] * len(body)
    return ids, mask


@SETTINGS
@given(conversation)
def test_ids_and_mask_properties(tokenizer, messages):
    ids, mask = encode_chat(messages, tokenizer)
    assert len(ids) == len(mask)
    assert set(mask) <= {0, 1}
    assert (ids, mask) == _expected(messages, tokenizer)
    # the masked tokens decode to exactly the assistant turns, each followed by the real EOT id
    masked = [t for t, m in zip(ids, mask, strict=True) if m]
    assistant = [m["content"] for m in messages if m["role"] == "assistant"]
    assert tokenizer.decode(masked) == "".join(c + EOT for c in assistant)
    assert masked.count(EOT_ID) == len(assistant)
    assert sum(mask) == sum(len(tokenizer.encode(c)) + 1 for c in assistant)
    # no user/system token is ever masked in: the unmasked tokens are everything else
    unmasked = [t for t, m in zip(ids, mask, strict=True) if not m]
    others = "".join(ROLE_MARKERS[m["role"]] + (m["content"] + EOT if m["role"] != "assistant" else "")
                     for m in messages)
    assert tokenizer.decode(unmasked) == others
    assert tokenizer.decode(ids) == render_chat(messages)
    assert ids.count(EOT_ID) == len(messages)


@SETTINGS
@given(conversation)
def test_prompt_ids_are_a_prefix(tokenizer, messages):
    ids, mask = encode_chat(messages, tokenizer)
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        prompt = encode_prompt(messages[:i], tokenizer)
        completion = encode_completion(m["content"], tokenizer)
        assert ids[:len(prompt) + len(completion)] == prompt + completion
        assert tokenizer.decode(prompt) == render_prompt(messages[:i])
        assert render_prompt(messages[:i]).endswith(ASSISTANT_MARKER)
        # the completion is exactly the masked run that follows the prompt
        assert mask[len(prompt):len(prompt) + len(completion)] == [1] * len(completion)
        assert mask[len(prompt) - len(tokenizer.encode(ASSISTANT_MARKER)):len(prompt)] == [0] * 3


TEMPLATES = [env.from_string(chat_template_jinja())
             for env in (jinja2.Environment(), ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True))]


@SETTINGS
@given(conversation, st.booleans())
def test_jinja_template_renders_the_same_text(messages, gen):
    for tmpl in TEMPLATES:
        want = render_prompt(messages) if gen else render_chat(messages)
        assert tmpl.render(messages=messages, add_generation_prompt=gen) == want


def test_format_is_documented_shape(tokenizer):
    m = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
         {"role": "assistant", "content": "Hello!"}]
    assert render_chat(m) == "System:\nBe brief.<|endoftext|>User:\nHi<|endoftext|>Assistant:\nHello!<|endoftext|>"
    assert render_prompt(m[:2]) == "System:\nBe brief.<|endoftext|>User:\nHi<|endoftext|>Assistant:\n"
    ids, mask = encode_chat(m, tokenizer)
    assert ids[-1] == EOT_ID and mask[-1] == 1
    # the assistant marker itself is not trained
    k = len(encode_prompt(m[:2], tokenizer))
    assert mask[:k] == [0] * k and all(mask[k:])


def test_literal_eot_text_is_not_the_eot_token(tokenizer):
    ids, mask = encode_chat([{"role": "user", "content": "a <|endoftext|> b"}], tokenizer)
    assert ids.count(EOT_ID) == 1 and ids[-1] == EOT_ID


def test_bad_messages_are_refused(tokenizer):
    for bad, what in [([{"role": "bot", "content": "x"}], "unknown role"),
                      ([{"role": "user", "content": 3}], "content must be a string"),
                      ([{"role": "user"}], "content must be a string"),
                      ("User: hi", "must be a list"),
                      (["hi"], "expected a dict")]:
        with pytest.raises(ValueError, match=what):
            encode_chat(bad, tokenizer)
        with pytest.raises(ValueError, match=what):
            render_chat(bad)
    with pytest.raises(jinja2.exceptions.UndefinedError):
        jinja2.Environment().from_string(chat_template_jinja()).render(messages=[{"role": "bot", "content": "x"}])


def test_encode_chats_matches_one_by_one(tokenizer):
    convs = [[{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a {i}"}] for i in range(50)]
    assert encode_chats(convs, tokenizer) == [encode_chat(c, tokenizer) for c in convs]


def _real_conversations(shared_data, n=150):
    from llmctl.core.data.prepare_prefs import parse_hh_transcript

    convs = []
    with open(shared_data / "gsm8k" / "train.jsonl") as f:
        for _, line in zip(range(n), f, strict=False):
            r = json.loads(line)
            convs.append([{"role": "user", "content": format_question(r["question"])},
                          {"role": "assistant", "content": gsm8k_target(r["answer"])}])
    for r in json.loads((shared_data / "alpaca" / "alpaca_small.json").read_text())[:n]:
        user = r["instruction"] + (f"\n\n{r['input']}" if r["input"] else "")
        convs.append([{"role": "system", "content": "You are helpful."}, {"role": "user", "content": user},
                      {"role": "assistant", "content": r["output"]}])
    with gzip.open(shared_data / "hh-rlhf" / "helpful-base-test.jsonl.gz", "rt") as f:
        for _, line in zip(range(n), f, strict=False):
            convs.append(parse_hh_transcript(json.loads(line)["chosen"]))
    with open(shared_data / "ultrafeedback" / "ultrafeedback_binarized.eval_clean.jsonl") as f:
        for _, line in zip(range(n), f, strict=False):
            r = json.loads(line)
            convs.append([{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}])
    return convs


def test_jinja_matches_on_real_conversations(shared_data):
    convs = _real_conversations(shared_data)
    assert len(convs) > 500
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    tmpl = env.from_string(chat_template_jinja())
    for m in convs:
        assert tmpl.render(messages=m, add_generation_prompt=False) == render_chat(m)
        assert tmpl.render(messages=m[:-1], add_generation_prompt=True) == render_prompt(m[:-1])


def test_transformers_apply_chat_template(shared_data, tokenizer):
    """transformers renders the same text, and its ids match ours except at documented boundaries."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    tokdir = shared_data / "tokenizer"
    bpe = tokenizers.models.BPE.from_file(str(tokdir / "encoder.json"), str(tokdir / "vocab.bpe"))
    core = tokenizers.Tokenizer(bpe)
    core.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = tokenizers.decoders.ByteLevel()
    hf = transformers.GPT2TokenizerFast(tokenizer_object=core, eos_token=EOT, bos_token=EOT, unk_token=EOT)
    hf.chat_template = chat_template_jinja()
    assert hf.eos_token_id == EOT_ID
    same = 0
    convs = _real_conversations(shared_data, 60)
    for m in convs:
        assert hf.apply_chat_template(m, tokenize=False) == render_chat(m)
        assert hf.apply_chat_template(m[:-1], tokenize=False, add_generation_prompt=True) == render_prompt(m[:-1])
        hf_ids = hf(render_chat(m), add_special_tokens=False)["input_ids"]
        ours, _ = encode_chat(m, tokenizer)
        boundary_case = any(re.match(r"\s\s", x["content"]) or EOT in x["content"] for x in m)
        if hf_ids == ours:
            same += 1
        else:
            assert boundary_case, m
    assert same >= len(convs) * 0.95, (same, len(convs))
