"""The one GSM8K-style instruction, gold-answer parsing and the answer format, shared by everyone.

SFT targets, RL prompts, evaluation and the verl conversion all build the user message with
``format_question`` and expect the reply format ``<think>reasoning</think><answer>N</answer>``.

Numbers are normalised by ``normalize_number``: thousands commas and a leading ``+`` or ``$``
removed, integers without leading zeros (``"1,000"`` -> ``"1000"``, ``"-0"`` -> ``"0"``), decimals
without trailing zeros (``"-3.50"`` -> ``"-3.5"``, ``"2.0"`` -> ``"2"``); no exponent notation.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

GSM8K_INSTRUCTION = (
    "Solve the following math problem. Think step by step inside <think></think>, "
    "then give only the final number inside <answer></answer>."
)
QUESTION_PREFIX = GSM8K_INSTRUCTION + "\n\n"  # every math user message starts with this

_ANNOTATION = re.compile(r"<<.*?>>", re.S)
_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)")


def format_question(question: str) -> str:
    """The user message for a math question: the shared instruction, a blank line, the question."""
    return QUESTION_PREFIX + question.strip()


def question_messages(question: str) -> list[dict[str, Any]]:
    """``[{"role": "user", "content": format_question(question)}]``: the prompt conversation."""
    return [{"role": "user", "content": format_question(question)}]


_MATH_EXPR = re.compile(r"\d\s*[-+*/×÷x]\s*\d")


def is_math_question(text: str) -> bool:
    """Whether a free-typed prompt reads as a math question, worded as training worded them: an
    arithmetic expression (``3 + 4``) or a question with a number in it (a GSM8K word problem)."""
    s = text.strip()
    return bool(_MATH_EXPR.search(s)) or (s.endswith("?") and any(c.isdigit() for c in s))


def user_messages(text: str, math: bool | None = None) -> list[dict[str, Any]]:
    """A typed prompt as the user turn a model trained here saw: math questions (``math``, or
    ``is_math_question`` when None) get the shared instruction, unless the text already has it."""
    if math is None:
        math = is_math_question(text)
    if math and not text.lstrip().startswith(GSM8K_INSTRUCTION):
        return question_messages(text)
    return [{"role": "user", "content": text}]


def format_answer(reasoning: str, answer: str) -> str:
    """The reply format: ``<think>reasoning</think><answer>answer</answer>``."""
    return f"<think>{reasoning.strip()}</think><answer>{answer.strip()}</answer>"


def normalize_number(text: str) -> str:
    """A number string in canonical form (see the module doc); ValueError when it is not one."""
    s = text.strip().replace(",", "")
    if s.isdigit() and s.isascii():
        return str(int(s))
    if s.startswith("$"):
        s = s[1:]
    elif s[:2] in ("-$", "+$"):
        s = s[0] + s[2:]
    if not _NUMBER.fullmatch(s):
        raise ValueError(f"not a number: {text!r}")
    try:
        d = Decimal(s)
    except InvalidOperation:  # pragma: no cover - the regex admits only valid decimals
        raise ValueError(f"not a number: {text!r}") from None
    if d == d.to_integral_value():
        return str(int(d))
    out = format(d.normalize(), "f")
    return out


def split_gsm8k_answer(answer_text: str) -> tuple[str, str]:
    """(reasoning, raw final answer) of a GSM8K answer, split at its last ``####``."""
    if not isinstance(answer_text, str):
        raise ValueError(f"answer must be a string, got {type(answer_text).__name__}")
    head, sep, tail = answer_text.rpartition("####")
    if not sep:
        raise ValueError("no '#### N' final answer")
    return head, tail.strip()


def parse_gsm8k_gold(answer_text: str) -> str:
    """The normalised number after ``####`` (``"#### 1,000"`` -> ``"1000"``); ValueError if none."""
    _, raw = split_gsm8k_answer(answer_text)
    return _gold(raw)


def _gold(raw: str) -> str:
    if not raw:
        raise ValueError("empty final answer after '####'")
    try:
        return normalize_number(raw)
    except ValueError:
        raise ValueError(f"final answer after '####' is not a number: {raw!r}") from None


def strip_annotations(text: str) -> str:
    """GSM8K reasoning without its calculator annotations ``<<48/2=24>>``."""
    return _ANNOTATION.sub("", text)


def gsm8k_target(answer_text: str) -> str:
    """The SFT completion for a GSM8K answer: ``<think>reasoning</think><answer>N</answer>``."""
    reasoning, raw = split_gsm8k_answer(answer_text)
    return format_answer(strip_annotations(reasoning), _gold(raw))
