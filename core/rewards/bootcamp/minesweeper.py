"""Minesweeper: the list of mine coordinates in the last ``[answer]…[/answer]``, as upstream.

The block is read as a Python literal (:func:`ast.literal_eval`, never ``eval``) and must be a
list of 2-element lists; right when its set of coordinates equals the mines' (duplicates
collapse, ``1.0`` equals ``1``) and every coordinate is on the board.
Deliberate bound: blocks over :data:`MAX_BLOCK_CHARS` are not read (upstream parses any size).
"""

from __future__ import annotations

import ast
from typing import Any

from llmctl.core.rewards.bootcamp import literal
from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_between

MAX_BLOCK_CHARS = 100_000


def extract(response: str) -> list | None:
    """The coordinate list, or None."""
    block = last_between(response, "[answer]", "[/answer]")
    if block is None:
        return None
    block = block.strip()
    if len(block) > MAX_BLOCK_CHARS:
        return None
    fast = literal.pairs(block, brackets="[]")
    if fast is not None:
        return fast
    try:
        value: Any = ast.literal_eval(block)
    except (SyntaxError, ValueError):
        return None
    if isinstance(value, list) and all(isinstance(c, list) and len(c) == 2 for c in value):
        return value
    return None


def check(solution: list, identity: dict) -> bool:
    """Exactly the mines, all on the board."""
    try:
        marked = {tuple(c) for c in solution}
    except TypeError:
        return False
    mines = {tuple(m) for m in identity.get("mines", [])}
    if len(marked) != len(mines):
        return False
    rows, cols = identity["rows"], identity["cols"]
    if not all(0 <= r < rows and 0 <= c < cols for r, c in marked):
        return False
    return marked == mines


def solve(identity: dict) -> str:
    """A correct response."""
    return think_block("Deduce the mines from the numbers.") + f"[answer]{[list(m) for m in identity['mines']]}[/answer]"


def wrong(identity: dict) -> str | None:
    """A wrong response (one mine left out)."""
    mines = [list(m) for m in identity["mines"]]
    return think_block() + f"[answer]{mines[1:]}[/answer]" if mines else None


TASK = BootcampTask("Minesweeper", extract, check, solve, wrong)
