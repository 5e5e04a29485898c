"""Calcudoku: the grid in the last ``[[…]]`` as comma-separated rows, checked as upstream does.

Each row is stripped of ``[``, ``]`` and spaces and read as whitespace-separated integers. Right
when every row and column is a permutation of 1…n and every cage meets its target: ``+`` sum,
``*`` product, ``-`` some cell ``x`` with ``2x = sum + target``, ``/`` some cell ``x`` with
``x / (product of the cells whose value differs from x) == target``.
Deliberate bound: an answer of :data:`MAX_ROWS` rows or more is wrong without being read.
"""

from __future__ import annotations

import math

from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_between

MAX_ROWS = 10_000


def extract(response: str) -> list[list[int]] | None:
    """The grid, or None when a token is not an integer."""
    content = last_between(response, "[[", "]]")
    if content is None:
        return None
    if content.count(",") >= MAX_ROWS:
        return []  # not read: wrong (upstream reads every row first; a grid has at most a dozen)
    grid = []
    for row in content.split(","):
        try:
            grid.append([int(tok) for tok in row.strip("[] ").strip().split()])
        except ValueError:
            return None
    return grid


def _cage_ok(op: str, target: int, nums: list[int]) -> bool:
    if op == "+":
        return sum(nums) == target
    if op == "*":
        return math.prod(nums) == target
    if op == "-":
        total = sum(nums)
        return any(2 * x == total + target for x in nums)
    if op == "/":
        for x in nums:
            rest = math.prod(v for v in nums if v != x)
            if rest != 0 and x / rest == target:
                return True
        return False
    return False


def check(solution: list[list[int]], identity: dict) -> bool:
    """Rows, columns and cages all hold."""
    n, grid, groups = identity["size"], identity["grid"], identity["groups"]
    if len(solution) != n or any(len(row) != n for row in solution):
        return False
    want = list(range(1, n + 1))
    for i in range(n):
        if sorted(solution[i]) != want or sorted(solution[j][i] for j in range(n)) != want:
            return False
    cells: dict[str, list[int]] = {}
    for i in range(n):
        for j in range(n):
            cells.setdefault(grid[i][j], []).append(solution[i][j])
    for name, (op, target) in groups.items():
        if not _cage_ok(op, target, cells.get(name, [])):
            return False
    return True


def solve_grid(identity: dict) -> list[list[int]] | None:
    """A grid meeting every constraint, by backtracking (cages checked when they fill up)."""
    n, cage_of, groups = identity["size"], identity["grid"], identity["groups"]
    grid = [[0] * n for _ in range(n)]
    left = {}
    for row in cage_of:
        for name in row:
            left[name] = left.get(name, 0) + 1

    def cage_values(name: str) -> list[int]:
        return [grid[i][j] for i in range(n) for j in range(n) if cage_of[i][j] == name and grid[i][j]]

    def place(k: int) -> bool:
        if k == n * n:
            return True
        i, j = divmod(k, n)
        name = cage_of[i][j]
        for v in range(1, n + 1):
            if v in grid[i] or any(grid[r][j] == v for r in range(i)):
                continue
            grid[i][j] = v
            left[name] -= 1
            ok = left[name] > 0 or name not in groups or _cage_ok(*groups[name], cage_values(name))
            if ok and place(k + 1):
                return True
            left[name] += 1
            grid[i][j] = 0
        return False

    return grid if place(0) else None


def _text(grid: list[list[int]]) -> str:
    return "[[" + ", ".join(" ".join(map(str, row)) for row in grid) + "]]"


def solve(identity: dict) -> str | None:
    """A correct response."""
    grid = solve_grid(identity)
    return None if grid is None else think_block("Fill cages with few options first.") + _text(grid)


def wrong(identity: dict) -> str | None:
    """A wrong response (the first row repeated)."""
    grid = solve_grid(identity)
    return None if grid is None else think_block() + _text([grid[0]] * len(grid))


TASK = BootcampTask("Calcudoku", extract, check, solve, wrong)
