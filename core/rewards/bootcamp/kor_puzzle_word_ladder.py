"""KorPuzzleWordLadder: the number of steps in the last ``[[N]]`` (digits only), as upstream."""

from __future__ import annotations

from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_double_bracket_digits


def extract(response: str) -> int | None:
    """The last ``[[digits]]`` as an int (raises past Python's 4300-digit limit, as upstream does)."""
    digits = last_double_bracket_digits(response)
    return None if digits is None else int(digits)


def check(solution: int, identity: dict) -> bool:
    """Equal to the fewest steps."""
    return solution == identity["correct_steps"]


def solve(identity: dict) -> str:
    """A correct response."""
    return think_block("Search the ladder breadth first.") + f"[[{identity['correct_steps']}]]"


def wrong(identity: dict) -> str:
    """A wrong response."""
    return think_block() + f"[[{identity['correct_steps'] + 1}]]"


TASK = BootcampTask("KorPuzzleWordLadder", extract, check, solve, wrong)
