"""BbehMultistepArithmetic: a number in ``[answer]…[/answer]``, right within 1e-6 (upstream's rule).

The last ``[answer]`` block is read with Python's ``float`` (so ``1e3``, ``1_000``, full-width
digits and surrounding spaces are numbers, as upstream reads them; ``nan`` never matches).
"""

from __future__ import annotations

from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_between


def extract(response: str) -> float | None:
    """The last ``[answer]`` block as a float, or None."""
    block = last_between(response, "[answer]", "[/answer]")
    if block is None or len(block) > 10_000:  # float() of more is never a near-integer answer here
        return None
    try:
        return float(block.strip())
    except ValueError:
        return None


def check(solution: float, identity: dict) -> bool:
    """Within 1e-6 of the stored answer."""
    return abs(solution - identity["answer"]) < 1e-6


def solve(identity: dict) -> str:
    """A correct response."""
    return think_block("Evaluate A, B and C, then the final expression.") + f"[answer]{identity['answer']}[/answer]"


def wrong(identity: dict) -> str:
    """A wrong response."""
    return think_block() + f"[answer]{identity['answer'] + 1}[/answer]"


TASK = BootcampTask("BbehMultistepArithmetic", extract, check, solve, wrong)
