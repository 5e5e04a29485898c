"""A seeded arithmetic curriculum: questions with exact integer answers, by difficulty level.

Levels (operand ranges inclusive; ``*`` takes its own ranges):

    1  a + b                 single digits (0-9): easy enough that a weak policy earns reward
    2  a + b, a - b          single digits, a >= b (no negative answers)
    3  a + b + c             single digits: 1,000 distinct questions, two carries to track, so a
                             small model's sampled answers stay well below its greedy ones
    4  a + b, a - b          two digits (10-99), answers may be negative
    5  + - on two digits, a * b with a two-digit a and a one-digit b
    6  + - on three digits, a * b on two digits each
    7  three terms of level 5, usual precedence (* before + and -)

Every row is ``{"prompt": "What is 7 + 5?", "gold": "12", "level": 1}``; the prompt is a raw
question (the shared instruction is added by ``prompts.format_question`` where prompts are
rendered), the gold an exact integer as a string. The same ``(n, level, seed)`` always gives the
same rows.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from llmctl.core.data.prompts import format_answer, question_messages


@dataclass(frozen=True)
class Level:
    ops: str
    add_range: tuple[int, int]
    mul_ranges: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
    terms: int = 2
    non_negative: bool = False


LEVELS: dict[int, Level] = {
    1: Level("+", (0, 9)),
    2: Level("+-", (0, 9), non_negative=True),
    3: Level("+", (0, 9), terms=3),
    4: Level("+-", (10, 99)),
    5: Level("+-*", (10, 99), ((10, 99), (2, 9))),
    6: Level("+-*", (100, 999), ((10, 99), (10, 99))),
    7: Level("+-*", (10, 99), ((10, 99), (2, 9)), terms=3),
}
MAX_LEVEL = max(LEVELS)
DATA_SOURCE = "llmctl/arithmetic"


def check_levels(levels: Iterable[int]) -> None:
    """ValueError naming the first of ``levels`` that does not exist."""
    for lv in levels:
        if lv not in LEVELS:
            raise ValueError(f"arithmetic level {lv} does not exist (levels {min(LEVELS)}..{max(LEVELS)})")


def _level(level: int) -> Level:
    if level not in LEVELS:
        raise ValueError(f"arithmetic level must be 1..{MAX_LEVEL}, got {level!r}")
    return LEVELS[level]


def _expression(rng: random.Random, spec: Level) -> tuple[list[int], list[str]]:
    """Operands and operators of one problem."""
    ops = [rng.choice(spec.ops) for _ in range(spec.terms - 1)]
    nums: list[int] = []
    for i in range(spec.terms):
        left_mul = i < len(ops) and ops[i] == "*"
        right_mul = i > 0 and ops[i - 1] == "*"
        if right_mul:
            lo, hi = spec.mul_ranges[1]
        elif left_mul:
            lo, hi = spec.mul_ranges[0]
        else:
            lo, hi = spec.add_range
        nums.append(rng.randint(lo, hi))
    if spec.non_negative and spec.terms == 2 and ops[0] == "-" and nums[0] < nums[1]:
        nums.reverse()
    return nums, ops


def solve(nums: list[int], ops: list[str]) -> tuple[int, list[str]]:
    """Value of ``n0 op0 n1 op1 n2 …`` (``*`` first, then left to right) and the worked steps."""
    nums, ops = list(nums), list(ops)
    steps = []
    i = 0
    while i < len(ops):
        if ops[i] == "*":
            v = nums[i] * nums[i + 1]
            steps.append(f"{nums[i]} * {nums[i + 1]} = {v}")
            nums[i:i + 2] = [v]
            del ops[i]
        else:
            i += 1
    acc = nums[0]
    for op, b in zip(ops, nums[1:], strict=True):
        v = acc + b if op == "+" else acc - b
        steps.append(f"{acc} {op} {b} = {v}")
        acc = v
    if not steps:
        steps.append(f"{acc} = {acc}")
    return acc, steps


def format_arithmetic(nums: list[int], ops: list[str]) -> str:
    """The question text: ``What is 12 + 7 * 3?``."""
    expr = str(nums[0]) + "".join(f" {op} {n}" for op, n in zip(ops, nums[1:], strict=True))
    return f"What is {expr}?"


def _problems(n: int, level: int, seed: int) -> list[tuple[dict[str, Any], list[str]]]:
    spec = _level(level)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(f"llmctl-arithmetic:{seed}:{level}")
    out = []
    for _ in range(n):
        nums, ops = _expression(rng, spec)
        value, steps = solve(nums, ops)
        out.append(({"prompt": format_arithmetic(nums, ops), "gold": str(value), "level": level}, steps))
    return out


def generate_problems(n: int, level: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` seeded problems of one level: ``{"prompt", "gold", "level"}``."""
    return [row for row, _ in _problems(n, level, seed)]


def arithmetic_sft_examples(n: int, level: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """``n`` chat examples: the user question (shared instruction) and a worked
    ``<think>steps</think><answer>N</answer>`` reply."""
    out = []
    for row, steps in _problems(n, level, seed):
        out.append(question_messages(row["prompt"]) + [
            {"role": "assistant", "content": format_answer(", ".join(steps), row["gold"])}])
    return out
