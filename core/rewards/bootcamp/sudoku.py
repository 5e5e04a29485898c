"""Sudoku: the grid in the last ``[answer]…[/answer]``, one row per line, as upstream reads it.

Rows are whitespace-separated integers (Python ``int``: full-width digits count); blank lines are
skipped. Right when the grid is ``size``×``size``, keeps every clue, and every row, column and
``region_rows``×``region_rows`` box holds 1…size once (upstream uses ``region_rows`` both ways).
"""

from __future__ import annotations

from llmctl.core.rewards.bootcamp.score import BootcampTask, think_block
from llmctl.core.rewards.scan import last_between

MAX_CELLS = 10_000


def extract(response: str) -> list[list[int]] | None:
    """The grid, or None when a token is not an integer."""
    block = last_between(response, "[answer]", "[/answer]")
    if block is None:
        return None
    grid = []
    for line in block.strip().split("\n"):
        try:
            nums = [int(tok) for tok in line.strip().split()]
        except ValueError:
            return None
        if nums:
            grid.append(nums)
    return grid


def check(solution: list[list[int]], identity: dict) -> bool:
    """A valid completion of the puzzle."""
    puzzle, size, box = identity["puzzle"], identity["size"], identity["region_rows"]
    if size * size > MAX_CELLS:
        return False
    if len(solution) != size or any(len(row) != size for row in solution):
        return False
    if any(puzzle[i][j] != 0 and solution[i][j] != puzzle[i][j] for i in range(size) for j in range(size)):
        return False
    full = set(range(1, size + 1))
    if any(set(row) != full for row in solution) or any(set(col) != full for col in zip(*solution, strict=True)):
        return False
    for r0 in range(0, size, box):
        rows = solution[r0:r0 + box]
        if len(rows) < box:
            raise IndexError("the last band of boxes runs off the grid")  # as upstream's loop does
        for c0 in range(0, size, box):
            cells = [v for row in rows for v in row[c0:c0 + box]]
            if len(cells) < box * box:
                raise IndexError("the last stack of boxes runs off the grid")
            if len(set(cells)) != len(cells) or min(cells) < 1 or max(cells) > size:
                return False
    return True


def solve_grid(puzzle: list[list[int]], box: int) -> list[list[int]] | None:
    """A filled grid for ``puzzle`` (0 = empty), by backtracking on the most constrained cell."""
    size = len(puzzle)
    grid = [list(row) for row in puzzle]
    empty = [(r, c) for r in range(size) for c in range(size) if not grid[r][c]]

    def options(r: int, c: int) -> set[int]:
        used = set(grid[r]) | {grid[i][c] for i in range(size)}
        r0, c0 = r - r % box, c - c % box
        used |= {grid[i][j] for i in range(r0, r0 + box) for j in range(c0, c0 + box)}
        return set(range(1, size + 1)) - used

    def fill() -> bool:
        if not empty:
            return True
        k = min(range(len(empty)), key=lambda i: len(options(*empty[i])))
        r, c = empty.pop(k)
        for v in sorted(options(r, c)):
            grid[r][c] = v
            if fill():
                return True
        grid[r][c] = 0
        empty.insert(k, (r, c))
        return False

    return grid if fill() else None


def _text(grid: list[list[int]]) -> str:
    return "[answer]\n" + "\n".join(" ".join(map(str, row)) for row in grid) + "\n[/answer]"


def solve(identity: dict) -> str | None:
    """A correct response."""
    grid = solve_grid(identity["puzzle"], identity["region_rows"])
    return None if grid is None else think_block("Fill the most constrained cells first.") + _text(grid)


def wrong(identity: dict) -> str | None:
    """A wrong response (two empty cells of one row swapped: a column breaks)."""
    grid = solve_grid(identity["puzzle"], identity["region_rows"])
    if grid is None:
        return None
    for r, row in enumerate(identity["puzzle"]):
        holes = [c for c, v in enumerate(row) if v == 0]
        if len(holes) >= 2 and grid[r][holes[0]] != grid[r][holes[1]]:
            grid[r][holes[0]], grid[r][holes[1]] = grid[r][holes[1]], grid[r][holes[0]]
            return think_block() + _text(grid)
    return None


TASK = BootcampTask("Sudoku", extract, check, solve, wrong)
