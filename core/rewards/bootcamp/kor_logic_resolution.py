"""KorLogicResolution: the last one-line ``[[…]]``, checked per problem type as upstream does.

- ``can_resolve``: ``A`` (yes) or ``B`` (no), case-insensitive;
- ``compute_dispel``: any of the ``;``-separated results equals the resolvent as a set of
  literals joined by `` ∨ `` (``0`` is the empty clause);
- ``algorithm_output``: ``output;steps``, the output case-insensitive and the steps an integer.
"""

from __future__ import annotations

from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_between

OR = " ∨ "


def extract(response: str) -> str | None:
    """The stripped content of the last ``[[…]]`` that does not span a newline."""
    m = last_between(response, "[[", "]]", one_line=True)
    return None if m is None else m.strip()


def _literals(clause: str) -> set[str]:
    return set(clause.split(OR)) if clause != "0" else set()


def check(solution: str, identity: dict) -> bool:
    """Whether the answer is right for this problem type."""
    kind = identity["problem_type"]
    if kind == "can_resolve":
        ans = solution.upper()
        expected = identity["expected"]
        return (ans == "A" and expected) or (ans == "B" and not expected)
    if kind == "compute_dispel":
        expected = _literals(identity["expected"])
        return any(_literals(part.strip()) == expected for part in solution.split(";"))
    if kind == "algorithm_output":
        parts = solution.split(";")
        if len(parts) != 2:
            return False
        try:
            steps = int(parts[1])
        except ValueError:
            return False
        return parts[0].strip().lower() == identity["expected_output"].lower() and steps == identity["steps"]
    return False


def _answer(identity: dict) -> str:
    kind = identity["problem_type"]
    if kind == "can_resolve":
        return "A" if identity["expected"] else "B"
    if kind == "compute_dispel":
        return identity["expected"]
    return f"{identity['expected_output']};{identity['steps']}"


def solve(identity: dict) -> str:
    """A correct response."""
    return think_block("Apply the resolution rule.") + f"[[{_answer(identity)}]]"


def wrong(identity: dict) -> str | None:
    """A wrong response."""
    kind = identity["problem_type"]
    if kind == "can_resolve":
        bad = "B" if identity["expected"] else "A"
    elif kind == "compute_dispel":
        bad = "p ∨ ¬p ∨ q ∨ ¬q ∨ r ∨ ¬r ∨ s ∨ ¬s"
    else:
        bad = f"{identity['expected_output']};{identity['steps'] + 1}"
    return think_block() + f"[[{bad}]]"


TASK = BootcampTask("KorLogicResolution", extract, check, solve, wrong)
