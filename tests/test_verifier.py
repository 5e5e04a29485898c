"""The shared verifier: extraction, numeric/MATH equivalence, format score, bounds."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from llmctl.core.rewards import math_equiv
from llmctl.core.rewards.verifier import (
    MAX_TAIL_CHARS,
    ScoreResult,
    answers_match,
    extract_answer,
    format_score,
    normalize_number,
    score,
)


def _gsm8k(shared_data: Path, n: int = 200) -> list[dict]:
    with open(shared_data / "gsm8k" / "test.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f, strict=False)]


# ---- extraction --------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("<think>a</think><answer>18</answer>", "18"),
    ("<answer>1</answer> then <answer> 2 </answer>", "2"),  # the last one
    ("<answer>The total is \\boxed{42}.</answer>", "42"),  # boxed inside the answer tag
    ("so \\boxed{\\frac{1}{\\sqrt{2}}} done", "\\frac{1}{\\sqrt{2}}"),  # nested braces
    ("\\boxed{1} and later \\boxed{2}", "2"),
    ("\\fbox{7}", "7"),
    ("\\boxed 5$ is it", "5"),
    ("step\n#### 1,234\n", "1,234"),
    ("the answer is [[ 3 + 4 ]]", "3 + 4"),
    ("\\boxed{5} but finally #### 6", "6"),  # whichever comes last
    ("<answer>9</answer> and a stray \\boxed{3}", "9"),  # a closed answer tag wins
    ("\\boxed{unclosed", None),
    ("<answer>unclosed", None),
    ("no answer here", None),
    ("", None),
    (None, None),
])
def test_extract_answer(text, want):
    assert extract_answer(text) == want


def test_extract_answer_only_reads_the_tail():
    head = "<answer>1</answer>"
    assert extract_answer(head + "x" * (MAX_TAIL_CHARS - len("<answer>2</answer>")) + "<answer>2</answer>") == "2"
    # an answer tag opened before the window is not seen (documented bound)
    assert extract_answer("<answer>" + "7" * MAX_TAIL_CHARS + "</answer>") is None


# ---- matching ----------------------------------------------------------------------------------

@pytest.mark.parametrize("pred, gold", [
    ("1,000", "1000"), ("$18.00", "18"), ("18 dollars", "18"), ("-3", "-3"), ("+5", "5"), ("0.50", "0.5"),
    ("\\frac{3}{4}", "0.75"), ("3/4", "\\dfrac{3}{4}"), ("-\\frac{1}{2}", "-0.5"), ("\\frac12", "0.5"),
    ("50%", "50"), ("30^\\circ", "30"), ("30°", "30"), ("12\\text{ cm}", "12"), ("1.5e3", "1500"),
    ("\\$1,234.5", "1234.50"), ("18 eggs per day", "18"), ("=18", "18"),
    ("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("[2,5)", "\\left[ 2, 5 \\right)"),
    ("\\dfrac{\\sqrt{3}}{2}", "\\frac{\\sqrt3}{2}"), ("1-i", "-i+1"), ("\\text{Evelyn}", "Evelyn"),
    ("p-q", "p - q"), ("x^2+1", "1+x^{2}"),
])
def test_answers_match(pred, gold):
    assert answers_match(pred, gold)


@pytest.mark.parametrize("pred, gold", [
    ("19", "18"), ("-18", "18"), ("1.8", "18"), ("\\frac{3}{5}", "0.75"), ("18 and 19", "18"),
    ("q-p", "p - q"), ("(\\pi/2, 3)", "\\left( 3, \\frac{\\pi}{2} \\right)"), ("(2,5]", "[2,5)"),
    ("eighteen", "18"), ("", "18"), (None, "18"), ("18", None), ("2x", "2"), ("1e999999", "1"),
])
def test_answers_differ(pred, gold):
    assert not answers_match(pred, gold)


def test_normalize_number_forms():
    from fractions import Fraction

    assert normalize_number("1,000.50") == Fraction(200, 1) * 5 + Fraction(1, 2)
    assert normalize_number("\\$-2") == normalize_number("-$2") == normalize_number("$-2") == -2
    assert normalize_number("x+1") is None
    long = "9" * 500
    assert normalize_number(long) == normalize_number("0" + long)  # compared as digit strings
    assert not answers_match(long, long + "0")


# ---- format ------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, want", [
    ("<think>reason</think><answer>18</answer>", 1.0),
    ("  <think>r</think>\n<answer> 18 </answer>\n", 1.0),
    ("<answer>18</answer>", 0.5),
    ("<think>r</think><answer>18</answer> trailing", 0.0),
    ("<think>r</think><answer></answer>", 0.0),
    ("<think>r</think><think>s</think><answer>1</answer>", 0.0),
    ("<answer>1</answer><think>r</think>", 0.0),
    ("<think>r</think>x<answer>1</answer>", 0.0),
    ("<think>r<answer>1</answer></think>", 0.0),
    ("<answer>1</answer><answer>2</answer>", 0.0),
    ("", 0.0), (None, 0.0),
])
def test_format_score(text, want):
    assert format_score(text) == want


def test_score_fields():
    r = score("<think>x</think><answer>18</answer>", "18", format_weight=0.2)
    assert r == ScoreResult(correct=1.0, format=1.0, reward=1.2, extracted="18")
    r = score("<answer>17</answer>", "18", format_weight=0.2)
    assert (r.correct, r.format, r.extracted) == (0.0, 0.5, "17") and r.reward == pytest.approx(0.1)
    assert score("no answer", "18") == ScoreResult(0.0, 0.0, 0.0, None)


def test_real_gsm8k_gold(shared_data):
    from llmctl.core.data.prompts import gsm8k_target, parse_gsm8k_gold

    for rec in _gsm8k(shared_data):
        gold = parse_gsm8k_gold(rec["answer"])
        assert score(gsm8k_target(rec["answer"]), gold, format_weight=1.0).reward == 2.0
        assert score(rec["answer"], gold).correct == 1.0  # the raw "#### N" solution
        wrong = str(int(float(gold)) + 1) if "." not in gold else gold + "1"
        assert score(f"<think>x</think><answer>{wrong}</answer>", gold).correct == 0.0


# ---- bounds ------------------------------------------------------------------------------------

ADVERSARIAL = {
    "nested braces": "\\boxed{" + "{" * 500_000 + "}" * 499_990,
    "open braces": "{" * 1_000_000,
    "answer spam": "<answer>" * 120_000,
    "answer spam closed": "<answer>1</answer>" * 60_000,
    "boxed spam": "\\boxed{" * 150_000,
    "huge number": "<answer>" + "9" * 1_000_000 + "</answer>",
    "huge number tail": "x <answer>" + "9" * 9_000 + "</answer>",
    "huge exponent": "<answer>1e999999999</answer>",
    "power tower": "<answer>9^{9^{9^{9}}}</answer>",
    "hashes": "####" * 250_000,
    "brackets": "[[" * 500_000,
    "deep parens": "\\boxed{" + "(" * 5_000 + "}",
}


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", sorted(ADVERSARIAL))
def test_adversarial_outputs_score_zero(name):
    r = score(ADVERSARIAL[name], "18", format_weight=0.5)
    assert r.correct == 0.0


@pytest.mark.timeout(60)
def test_power_bombs_are_refused_unparsed():
    for expr in ("9^{9^{9^{9}}}", "10^{10^{100}}", "(999^{99999})^{99999}", "9^9^9", "100000!", "2^{1234567}"):
        assert math_equiv.power_bomb(expr), expr
        assert not answers_match(expr, "5")
    for expr in ("x^2+y^2", "(x^2)^3", "2^{10}", "\\frac{\\pi^2}{8}", "5!"):
        assert not math_equiv.power_bomb(expr), expr


@pytest.mark.timeout(60)
def test_math_verify_time_limit_in_main_thread_and_in_threads():
    slow = "\\binom{100000}{50000}"  # sympy grinds for seconds
    assert math_equiv.math_equal(slow, "5", timeout_s=0.2) is False
    before = math_equiv.equiv_stats()["timeouts"]
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(lambda _: math_equiv.math_equal(slow, "5", timeout_s=0.2), range(2))) == [False] * 2
    assert math_equiv.equiv_stats()["timeouts"] >= before + 1


def test_verifier_agrees_across_threads():
    """verl runs compute_score in a thread pool: math-verify's signal timeouts must not break it."""
    cases = [("(3, \\pi/2)", "\\left( 3, \\frac{\\pi}{2} \\right)", True), ("[2,5)", "[2,5)", True),
             ("q-p", "p - q", False), ("\\frac{3}{4}", "0.75", True), ("19", "18", False)] * 4
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda c: answers_match(c[0], c[1]), cases))
    assert got == [c[2] for c in cases]
    assert threading.current_thread() is threading.main_thread()
