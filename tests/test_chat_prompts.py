"""The shared GSM8K instruction, gold parsing, answer format, and the arithmetic curriculum."""

from __future__ import annotations

import json
import re

import pytest

from llmctl.core.data.arithmetic import LEVELS, arithmetic_sft_examples, generate_problems, solve
from llmctl.core.data.chat import encode_chat
from llmctl.core.data.prompts import (
    GSM8K_INSTRUCTION,
    format_answer,
    format_question,
    gsm8k_target,
    normalize_number,
    parse_gsm8k_gold,
    question_messages,
    strip_annotations,
)


@pytest.mark.parametrize("raw,want", [
    ("#### 72", "72"), ("x\n#### 1,000", "1000"), ("#### -3.50", "-3.5"), ("#### 2.0", "2"),
    ("#### $5", "5"), ("####  -47 ", "-47"), ("#### 0.25", "0.25"), ("#### 007", "7"), ("#### -0", "0"),
    ("a #### 3\nb #### 4", "4"), ("#### 109,200,000", "109200000"), ("#### .5", "0.5"),
])
def test_parse_gold(raw, want):
    assert parse_gsm8k_gold(raw) == want


@pytest.mark.parametrize("raw", ["no marker 12", "#### ", "#### twelve", "#### 1/2", "#### 1e5", "#### 12 apples"])
def test_unparseable_gold_raises(raw):
    with pytest.raises(ValueError):
        parse_gsm8k_gold(raw)
    with pytest.raises(ValueError):
        gsm8k_target(raw)


def test_normalize_number_is_idempotent():
    for s in ["1,000", "-3.50", "0.000", "12.340", "-7"]:
        once = normalize_number(s)
        assert normalize_number(once) == once


def test_target_and_question_format():
    answer = "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nShe sold 48+24 = <<48+24=72>>72 clips.\n#### 72"
    assert gsm8k_target(answer) == ("<think>Natalia sold 48/2 = 24 clips in May.\nShe sold 48+24 = 72 clips."
                                    "</think><answer>72</answer>")
    assert "<think>" in GSM8K_INSTRUCTION and "<answer>" in GSM8K_INSTRUCTION
    q = format_question("  How many?\n")
    assert q == f"{GSM8K_INSTRUCTION}\n\nHow many?"
    assert question_messages("How many?") == [{"role": "user", "content": q}]
    assert format_answer(" a ", "5") == "<think>a</think><answer>5</answer>"


def test_every_real_gsm8k_answer_converts(shared_data):
    """Every train and test answer: gold = the number after ####, annotations gone, format exact."""
    n = 0
    for split in ("train", "test"):
        for line in (shared_data / "gsm8k" / f"{split}.jsonl").read_text().splitlines():
            answer = json.loads(line)["answer"]
            raw = answer.split("####")[-1].strip()
            gold = parse_gsm8k_gold(answer)
            assert gold == str(int(raw.replace(",", "")))  # all real golds are integers
            target = gsm8k_target(answer)
            m = re.fullmatch(r"<think>(.*)</think><answer>(.*)</answer>", target, re.S)
            assert m and m.group(2) == gold
            assert "<<" not in m.group(1) and ">>" not in m.group(1)
            assert m.group(1) == strip_annotations(answer.rsplit("####", 1)[0]).strip()
            n += 1
    assert n == 7473 + 1319


def test_arithmetic_levels_are_exact_and_seeded():
    for level in LEVELS:
        rows = generate_problems(200, level, seed=3)
        assert rows == generate_problems(200, level, seed=3)
        assert rows != generate_problems(200, level, seed=4)
        for r in rows:
            assert r["level"] == level
            expr = re.fullmatch(r"What is (.*)\?", r["prompt"]).group(1)
            assert re.fullmatch(r"-?\d+( [+*-] \d+)*", expr)
            assert r["gold"] == str(eval(expr))  # noqa: S307 - our own generated arithmetic
    easy = generate_problems(300, 1, seed=0)
    for r in easy:
        a, b = re.fullmatch(r"What is (\d) \+ (\d)\?", r["prompt"]).groups()
        assert int(r["gold"]) == int(a) + int(b)
    assert all(int(r["gold"]) >= 0 for r in generate_problems(300, 2, seed=0))
    three = {r["prompt"] for r in generate_problems(3000, 3, seed=0)}
    assert all(re.fullmatch(r"What is \d \+ \d \+ \d\?", q) for q in three) and len(three) > 900
    assert any("*" in r["prompt"] for r in generate_problems(100, 5, seed=0))
    assert max(len(r["prompt"]) for r in generate_problems(100, 6, 0)) > max(len(r["prompt"]) for r in easy)
    with pytest.raises(ValueError):
        generate_problems(3, 99, 0)


def test_arithmetic_sft_examples_encode(tokenizer):
    convs = arithmetic_sft_examples(30, 7, seed=1)
    rows = generate_problems(30, 7, seed=1)
    for conv, row in zip(convs, rows, strict=True):
        assert conv[0] == question_messages(row["prompt"])[0]
        assert conv[1]["role"] == "assistant"
        assert conv[1]["content"].endswith(f"<answer>{row['gold']}</answer>")
        ids, mask = encode_chat(conv, tokenizer)
        assert tokenizer.decode([t for t, m in zip(ids, mask, strict=True) if m]) == conv[1]["content"] + "<|endoftext|>"
    assert solve([2, 3, 4], ["+", "*"]) == (14, ["3 * 4 = 12", "2 + 12 = 14"])
