"""Bbehbooleanexpressions: the option letter (A–E) in the last ``[answer]…[/answer]``.

As upstream: the block is stripped and its first character upper-cased; anything but A–E is no
answer; right when the letter's index equals ``identity["answer"]``.
"""

from __future__ import annotations

from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_between

LETTERS = "ABCDE"


def extract(response: str) -> str | None:
    """The answer letter, or None."""
    block = last_between(response, "[answer]", "[/answer]")
    if block is None:
        return None
    block = block.strip()
    if not block:
        return None
    letter = block[0].upper()
    return letter if letter in LETTERS and len(letter) == 1 else None


def check(solution: str, identity: dict) -> bool:
    """The letter names the true expression."""
    return ord(solution) - ord("A") == identity["answer"]


def solve(identity: dict) -> str:
    """A correct response."""
    return think_block("Evaluate each expression.") + f"[answer]{LETTERS[identity['answer']]}[/answer]"


def wrong(identity: dict) -> str:
    """A wrong response."""
    return think_block() + f"[answer]{LETTERS[(identity['answer'] + 1) % len(LETTERS)]}[/answer]"


TASK = BootcampTask("Bbehbooleanexpressions", extract, check, solve, wrong)
