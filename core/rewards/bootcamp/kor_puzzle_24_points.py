"""KorPuzzle24Points: an expression in the last one-line ``[[…]]`` that makes 24, as upstream.

The numbers are the answer's stand-alone digit runs (``\\b\\d+\\b``), which must equal the given
numbers as a multiset; ``×``/``÷`` become ``*``/``/``, spaces are removed, and the value (Python's
own arithmetic through :mod:`~llmctl.core.rewards.bootcamp.pyexpr`, never ``eval``) must be within
1e-6 of 24.
"""

from __future__ import annotations

import re

from llmctl.core.rewards.bootcamp import pyexpr
from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.bootcamp.solve24 import solve_numbers
from llmctl.core.rewards.scan import last_between

_WORD_NUMBER = re.compile(r"\b\d+\b")


def extract(response: str) -> str | None:
    """The stripped content of the last ``[[…]]`` that does not span a newline."""
    m = last_between(response, "[[", "]]", one_line=True)
    return None if m is None else m.strip()


def check(solution: str, identity: dict) -> bool:
    """Uses the given numbers and makes 24."""
    if len(solution) > pyexpr.MAX_CHARS:
        return False
    try:
        used = sorted(int(n) for n in _WORD_NUMBER.findall(solution))
        if sorted(identity["numbers"]) != used:
            return False
        value = pyexpr.evaluate(solution.replace("×", "*").replace("÷", "/").replace(" ", ""))
        return abs(value - 24) < 1e-6
    except Exception:
        return False


def solve(identity: dict) -> str | None:
    """A correct response."""
    expr = solve_numbers(list(identity["numbers"]), 24)
    return None if expr is None else think_block("Try the pairs.") + f"[[{expr.replace('*', '×').replace('/', '÷')}]]"


def wrong(identity: dict) -> str:
    """A wrong response (the numbers summed, plus one)."""
    return think_block() + "[[" + " + ".join(map(str, identity["numbers"])) + " + 1]]"


TASK = BootcampTask("KorPuzzle24Points", extract, check, solve, wrong)
