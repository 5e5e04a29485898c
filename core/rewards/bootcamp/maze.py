"""Maze: a path of ``(row, col)`` steps in the last ```` ```json ```` block, as upstream checks it.

The block is read with :func:`ast.literal_eval` (a block that is not a literal is handed on as
text and fails). Right when the path starts at ``start_pos`` and ends at ``end_pos`` compared as
tuples (so a list of lists fails, as upstream), and every step is an open cell next to the one
before it. Deliberate bound: blocks over :data:`MAX_BLOCK_CHARS` are not read.
"""

from __future__ import annotations

import ast
from collections import deque
from typing import Any

from llmctl.core.rewards.bootcamp import literal
from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_fenced

MAX_BLOCK_CHARS = 100_000


def extract(response: str) -> Any:
    """The literal in the block, the raw block text when it is not a literal, or None."""
    block = last_fenced(response, "json")
    if block is None:
        return None
    block = block.strip()
    if len(block) > MAX_BLOCK_CHARS:
        return block
    fast = literal.pairs(block)
    if fast is not None:
        return fast
    try:
        return ast.literal_eval(block)
    except Exception:  # upstream hands any failure on as the raw text
        return block


def check(solution: Any, identity: dict) -> bool:
    """A valid path from start to end."""
    grid = identity["grid"]
    start, end = tuple(identity["start_pos"]), tuple(identity["end_pos"])
    if not solution:
        return False
    if solution[0] != start or solution[-1] != end:
        return False
    height = len(grid)
    width = len(grid[0]) if height > 0 else 0
    prev = None
    for x, y in solution:
        if not (0 <= x < height and 0 <= y < width) or grid[x][y] == 1:
            return False
        if prev is not None:
            px, py = prev
            if not ((abs(x - px) == 1 and y == py) or (abs(y - py) == 1 and x == px)):
                return False
        prev = (x, y)
    return True


def shortest_path(grid: list[list[int]], start: tuple[int, int], end: tuple[int, int]) -> list[tuple[int, int]] | None:
    """The shortest path over open cells (0) by breadth-first search, or None."""
    h, w = len(grid), len(grid[0])
    prev: dict[tuple[int, int], tuple[int, int] | None] = {start: None}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        if cell == end:
            path = []
            node: tuple[int, int] | None = cell
            while node is not None:
                path.append(node)
                node = prev[node]
            return path[::-1]
        r, c = cell
        for nxt in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nxt[0] < h and 0 <= nxt[1] < w and grid[nxt[0]][nxt[1]] == 0 and nxt not in prev:
                prev[nxt] = cell
                queue.append(nxt)
    return None


def _text(path: list[tuple[int, int]]) -> str:
    return "Final-answer: ```json\n" + repr(path) + "\n```"


def _path(identity: dict) -> list[tuple[int, int]] | None:
    return shortest_path(identity["grid"], tuple(identity["start_pos"]), tuple(identity["end_pos"]))


def solve(identity: dict) -> str | None:
    """A correct response."""
    path = _path(identity)
    return None if path is None else think_block("Walk the open cells.") + _text(path)


def wrong(identity: dict) -> str | None:
    """A wrong response (a step skipped)."""
    path = _path(identity)
    return None if path is None or len(path) < 3 else think_block() + _text(path[:1] + path[2:])


TASK = BootcampTask("Maze", extract, check, solve, wrong)
