"""Arc: the last ``[[…]]`` grid in the response, compared with the task's output grid.

Extraction as upstream: every ``[ [ … ] ]`` span (whitespace allowed between brackets) is read
as JSON from the last one back; the first that is a list of lists is the answer (as tuples).
When none is, the earliest span that parsed at all is handed on, and with none the answer is
missing. The expected grid is ``identity["std_ans"]`` when present (upstream's own shortcut),
else the task's transformation of ``input_grid``.

Upstream computes that transformation with re-arc's verifier for ``task_key`` (400 programs).
The built-in knows only the task keys in :data:`TRANSFORMS` (our own programs, in
:mod:`~llmctl.core.rewards.bootcamp.arc_tasks` and :mod:`~llmctl.core.rewards.bootcamp.arc_tasks2`);
a row of another task is not supported here (``supports`` says so, ``compute_score`` counts it, ``verl check`` fails on it).
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

from llmctl.core.rewards.bootcamp import arc_tasks, arc_tasks2
from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import all_nested_brackets

Grid = tuple[tuple[int, ...], ...]

TRANSFORMS = {**arc_tasks.TRANSFORMS, **arc_tasks2.TRANSFORMS}
"""Task key to our program for it."""


def as_tuples(value: Any) -> Any:
    """Lists turned into tuples, recursively."""
    if not isinstance(value, list):
        return value
    if list not in map(type, value) or dict in map(type, value):
        return tuple(as_tuples(v) for v in value)
    if all(type(row) is list for row in value) and list not in map(type, itertools.chain.from_iterable(value)):
        return tuple(map(tuple, value))  # a grid: the common case, at C speed
    return tuple(as_tuples(v) for v in value)


def extract(response: str) -> Grid | Any:
    """The answer grid (see the module doc); raises where upstream's extraction does."""
    parsed = None
    for item in reversed(all_nested_brackets(response)):
        try:
            parsed = json.loads(item)
        except json.JSONDecodeError:
            continue
        if isinstance(parsed, list) and all(isinstance(row, list) for row in parsed):
            return as_tuples(parsed)
    if parsed is None:
        raise ValueError("no grid in the response")  # upstream fails turning None into a tuple
    return as_tuples(parsed)


def expected(identity: dict) -> Grid:
    """The correct output grid for this row (KeyError for a task the built-in does not know)."""
    std = identity.get("std_ans")
    if isinstance(std, str):
        return as_tuples(json.loads(std))
    if isinstance(std, list):
        return as_tuples(std)
    grid = identity["input_grid"]
    if isinstance(grid, str):
        grid = json.loads(grid)
    return _transformed(identity["task_key"], as_tuples(grid))


@functools.lru_cache(maxsize=4096)
def _transformed(task_key: str, grid: Grid) -> Grid:
    return TRANSFORMS[task_key](grid)  # a GRPO group scores one row n times: compute it once


def supports(identity: dict) -> bool:
    """Whether the built-in can check this row."""
    return "std_ans" in identity or identity.get("task_key") in TRANSFORMS


def check(solution: Any, identity: dict) -> bool:
    """The answer equals the expected grid."""
    return solution == expected(identity)


def _text(grid: Grid) -> str:
    return "```arcmatrix\n[\n" + ",\n".join(str(list(row)) for row in grid) + "\n]\n```"


def solve(identity: dict) -> str | None:
    """A correct response, for a supported row."""
    return think_block("Find the rule in the examples.") + _text(expected(identity)) if supports(identity) else None


def wrong(identity: dict) -> str | None:
    """A wrong response (the expected grid with one cell changed)."""
    if not supports(identity):
        return None
    grid = [list(row) for row in expected(identity)]
    grid[0][0] = (grid[0][0] + 1) % 10
    return think_block() + _text(tuple(map(tuple, grid)))


TASK = BootcampTask("Arc", extract, check, solve, wrong, supports)
