"""Game24: an expression in the last ``\\boxed{…}`` that reaches the target, as upstream checks it.

Extraction as upstream: a ``\\boxed `` (with a space) anywhere wins and runs to the next ``$``;
otherwise the last ``\\boxed`` (or, lacking one, ``\\fbox``, which then fails upstream's form
check) up to its matching brace. The answer is normalised (``**`` deleted, ``\\times`` -> ``*``,
``\\div`` -> ``/``, ``\\left``/``\\right`` deleted), must use exactly the puzzle's numbers (digit
runs, compared as text), no ``//``, and evaluate to ``int(target)`` with Python's own arithmetic
(:mod:`~llmctl.core.rewards.bootcamp.pyexpr`, never ``eval``; float rounding as upstream).
"""

from __future__ import annotations

import re

from llmctl.core.rewards.bootcamp import pyexpr
from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.bootcamp.solve24 import solve_numbers
from llmctl.core.rewards.scan import brace_close

_DIGITS = re.compile(r"\d+")


def extract(response: str) -> str | None:
    """The boxed answer, or None; raises where upstream's form assertions fail."""
    if "\\boxed " in response:
        return response.rsplit("\\boxed ", 1)[1].split("$", 1)[0]
    idx = response.rfind("\\boxed")
    if idx < 0:
        idx = response.rfind("\\fbox")
        if idx < 0:
            return None
    close = brace_close(response, idx)
    if close < 0:
        return None
    boxed = response[idx:close + 1]
    if not boxed.startswith("\\boxed{"):
        raise ValueError("not a \\boxed{...} answer")
    return boxed[len("\\boxed{"):-1]


def normalize(solution: str) -> str:
    """Upstream's rewrites of LaTeX operators."""
    for a, b in (("**", ""), ("\\times", "*"), ("\\div", "/"), ("\\left", ""), ("\\right", "")):
        solution = solution.replace(a, b)
    return solution


def check(solution: str, identity: dict) -> bool:
    """Uses the puzzle's numbers once each and reaches the target."""
    remaining = identity["puzzle"].split()
    solution = normalize(solution)
    numbers = _DIGITS.findall(solution)
    if len(numbers) != len(remaining):
        return False
    for n in numbers:
        if n not in remaining:
            return False
        remaining.remove(n)
    if remaining or "//" in solution:
        return False
    try:
        return pyexpr.evaluate(solution) == int(identity["target"])
    except Exception:
        return False


def solve(identity: dict) -> str | None:
    """A correct response."""
    expr = solve_numbers([int(x) for x in identity["puzzle"].split()], int(identity["target"]))
    return None if expr is None else think_block("Search over pairs of numbers.") + f"Final Answer: \\boxed{{{expr}}}"


def wrong(identity: dict) -> str:
    """A wrong response (the numbers summed, plus one more number)."""
    return think_block() + "Final Answer: \\boxed{" + "+".join(identity["puzzle"].split()) + "+1}"


TASK = BootcampTask("Game24", extract, check, solve, wrong)
