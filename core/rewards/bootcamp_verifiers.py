"""Built-in verifiers for InternBootcamp tasks, used when the ``internbootcamp`` package is absent.

Each task follows its InternBootcamp original (answer extraction, the check, and the scoring
rules of ``Basebootcamp.verify_score``) so scores agree with it, with these differences:

- model text is never ``eval``-ed: 24-point expressions go through :func:`safe_arith` (an ``ast``
  walk over ``+ - * /``, unary signs, parentheses and number literals, in exact Fractions). Where
  the original's float ``eval`` rounds (``8/(3-8/3)`` is 23.999999999999996, so Game24's
  ``result != int(target)`` says wrong), the exact value counts; ``^`` (XOR under ``eval``) and
  calls like ``abs(...)`` are simply not arithmetic here;
- only the last :data:`~llmctl.core.rewards.verifier.MAX_TAIL_CHARS` characters are searched for the
  answer and answers are size-capped, so adversarial output costs milliseconds;
- tag matching is a linear scan (``str.find``), never a backtracking regex.

A task also knows how to *solve* its ground truth (24-point search, sudoku backtracking, maze BFS,
the stored arithmetic answer) and how to write a deliberately wrong answer: ``llmctl verl check``
and the tests use both.
"""

from __future__ import annotations

import ast
import functools
import itertools
import json
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from llmctl.core.rewards.verifier import MAX_TAIL_CHARS

MAX_EXPR_CHARS = 300  # a 24-point expression is a few dozen characters
MAX_GRID_CELLS = 10_000


@dataclass(frozen=True)
class BootcampTask:
    """One built-in task: extract the answer, check it, and build right/wrong outputs."""

    name: str
    extract: Callable[[str], Any]  # the answer, or None when there is none
    check: Callable[[Any, dict], bool]
    solve: Callable[[dict], str | None]  # a correct model output for this ground truth
    wrong: Callable[[dict], str | None]  # a well-formed, wrong model output


# ---- scanning helpers --------------------------------------------------------------------------

def _tail(text: str) -> str:
    return text[-MAX_TAIL_CHARS:]


def _last_between(text: str, open_: str, close: str, *, same_line: bool = False) -> str | None:
    """Content of the last non-overlapping ``open_ … close`` pair, like ``re.findall(...)[-1]``
    with a lazy group (``same_line``: the pair may not span a newline)."""
    last = None
    pos = 0
    while True:
        s = text.find(open_, pos)
        if s < 0:
            return last
        e = text.find(close, s + len(open_))
        if e < 0:
            return last
        if same_line:
            nl = text.find("\n", s + len(open_), e)
            if nl >= 0:
                pos = nl + 1  # no match can start before the newline and cross it
                continue
        last = text[s + len(open_):e]
        pos = e + len(close)


# ---- safe arithmetic ---------------------------------------------------------------------------

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}


def safe_arith(expr: str) -> Fraction | None:
    """Exact value of an arithmetic expression over ``+ - * /``, signs, parentheses and number
    literals, or None (anything else, a syntax error, division by zero, over-long input)."""
    if not isinstance(expr, str) or len(expr) > MAX_EXPR_CHARS:
        return None
    try:
        tree = ast.parse(expr.strip(), mode="eval")
        return _eval_node(tree.body)
    except (SyntaxError, ValueError, ZeroDivisionError, RecursionError, MemoryError, TypeError, OverflowError):
        return None


def _eval_node(node: ast.AST) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return Fraction(repr(node.value)) if isinstance(node.value, float) else Fraction(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        return _BINOPS[type(node.op)](_eval_node(node.left), _eval_node(node.right))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        v = _eval_node(node.operand)
        return -v if isinstance(node.op, ast.USub) else v
    raise ValueError(f"not arithmetic: {type(node).__name__}")


def _digit_runs(text: str) -> list[str]:
    """``re.findall(r"\\d+", text)`` without a regex."""
    out, cur = [], []
    for ch in text:
        if ch.isdigit():
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


# ---- 24-point search ---------------------------------------------------------------------------

def solve_arith(numbers: list[int], target: Fraction | int) -> str | None:
    """An expression using every number once with ``+ - * /`` that equals ``target``, or None."""
    target = Fraction(target)
    seen: set[tuple[Fraction, ...]] = set()

    def search(items: list[tuple[Fraction, str]]) -> str | None:
        if len(items) == 1:
            return items[0][1] if items[0][0] == target else None
        key = tuple(sorted(v for v, _ in items))
        if key in seen:
            return None
        seen.add(key)
        for i, j in itertools.combinations(range(len(items)), 2):
            (a, ea), (b, eb) = items[i], items[j]
            rest = [items[k] for k in range(len(items)) if k not in (i, j)]
            cands = [(a + b, f"({ea}+{eb})"), (a * b, f"({ea}*{eb})"), (a - b, f"({ea}-{eb})"),
                     (b - a, f"({eb}-{ea})")]
            if b:
                cands.append((a / b, f"({ea}/{eb})"))
            if a:
                cands.append((b / a, f"({eb}/{ea})"))
            for v, e in cands:
                found = search(rest + [(v, e)])
                if found is not None:
                    return found
        return None

    found = search([(Fraction(n), str(n)) for n in numbers])
    if found is None:
        return None
    if found.startswith("(") and _matching_close(found) == len(found) - 1:
        found = found[1:-1]
    return found


def _matching_close(s: str) -> int:
    depth = 0
    for i, ch in enumerate(s):
        depth += (ch == "(") - (ch == ")")
        if depth == 0:
            return i
    return -1


# ---- Game24 ------------------------------------------------------------------------------------

def _game24_extract(output: str) -> str | None:
    """Last ``\\boxed{…}`` as the original does: a ``\\boxed `` (with a space) form wins and runs
    to the next ``$``; otherwise the braces after the last ``\\boxed`` must match."""
    text = _tail(output)
    if "\\boxed " in text:
        return text.rsplit("\\boxed ", 1)[1].split("$", 1)[0]
    idx = text.rfind("\\boxed")
    if idx < 0:
        return None  # the original finds \fbox here but then fails its "\boxed{" assert
    depth, close = 0, None
    for i in range(idx, len(text)):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                close = i
                break
    if close is None:
        return None
    boxed = text[idx:close + 1]
    if not boxed.startswith("\\boxed{"):
        return None
    return boxed[len("\\boxed{"):-1]


def _game24_normalize(solution: str) -> str:
    for a, b in (("**", ""), ("\\times", "*"), ("\\div", "/"), ("\\left", ""), ("\\right", "")):
        solution = solution.replace(a, b)
    return solution


def _game24_check(solution: str, identity: dict) -> bool:
    puzzle, target = identity["puzzle"], identity["target"]
    if not isinstance(puzzle, str):
        return False  # the original calls puzzle.split() and fails
    solution = _game24_normalize(solution)
    if len(solution) > MAX_EXPR_CHARS:
        return False
    remaining = puzzle.split()
    numbers = _digit_runs(solution)
    if len(numbers) != len(remaining):
        return False
    for n in numbers:
        if n not in remaining:
            return False
        remaining.remove(n)
    if "//" in solution:
        return False
    value = safe_arith(solution)
    try:
        return value is not None and value == int(target)
    except (TypeError, ValueError):
        return False


def _game24_solve(identity: dict) -> str | None:
    expr = solve_arith([int(x) for x in str(identity["puzzle"]).split()], int(identity["target"]))
    if expr is None:
        return None
    return f"<think>Search over the numbers.</think>\nFinal Answer: \\boxed{{{expr}}}"


def _game24_wrong(identity: dict) -> str | None:
    nums = str(identity["puzzle"]).split()
    return "<think>guess</think>\nFinal Answer: \\boxed{" + "+".join(nums) + "+1}"


# ---- KorPuzzle24Points -------------------------------------------------------------------------

def _kor24_extract(output: str) -> str | None:
    m = _last_between(_tail(output), "[[", "]]", same_line=True)
    return m.strip() if m is not None else None


def _kor24_check(solution: str, identity: dict) -> bool:
    if len(solution) > MAX_EXPR_CHARS:
        return False
    wanted = sorted(int(n) for n in identity["numbers"])
    used = sorted(int(n) for n in _word_numbers(solution))
    if wanted != used:
        return False
    value = safe_arith(solution.replace("×", "*").replace("÷", "/").replace(" ", ""))
    return value is not None and abs(value - 24) < Fraction(1, 10**6)


def _word_numbers(text: str) -> list[str]:
    """``re.findall(r"\\b\\d+\\b", text)``: digit runs not glued to letters or underscores."""
    out = []
    i, n = 0, len(text)
    while i < n:
        if text[i].isdigit():
            j = i
            while j < n and text[j].isdigit():
                j += 1
            before = text[i - 1] if i else ""
            after = text[j] if j < n else ""
            if not (before.isalnum() or before == "_") and not (after.isalnum() or after == "_"):
                out.append(text[i:j])
            i = j
        else:
            i += 1
    return out


def _kor24_solve(identity: dict) -> str | None:
    expr = solve_arith([int(n) for n in identity["numbers"]], 24)
    if expr is None:
        return None
    return f"The expression is [[{expr.replace('*', ' × ').replace('/', ' ÷ ')}]]"


def _kor24_wrong(identity: dict) -> str | None:
    return "[[" + " + ".join(str(n) for n in identity["numbers"]) + " + 1]]"


# ---- Sudoku ------------------------------------------------------------------------------------

def _answer_block(output: str) -> str | None:
    return _last_between(_tail(output), "[answer]", "[/answer]")


def _sudoku_extract(output: str) -> list[list[int]] | None:
    block = _answer_block(output)
    if block is None:
        return None
    grid = []
    try:
        for line in block.strip().split("\n"):
            nums = [int(tok) for tok in line.split()]
            if nums:
                grid.append(nums)
    except ValueError:
        return None
    return grid


def _sudoku_check(solution: list[list[int]], identity: dict) -> bool:
    puzzle, size, box = identity["puzzle"], int(identity["size"]), int(identity["region_rows"])
    if size * size > MAX_GRID_CELLS:
        return False
    if len(solution) != size or any(len(row) != size for row in solution):
        return False
    for i in range(size):
        for j in range(size):
            if puzzle[i][j] != 0 and solution[i][j] != puzzle[i][j]:
                return False
    full = set(range(1, size + 1))
    for i in range(size):
        if set(solution[i]) != full or {solution[r][i] for r in range(size)} != full:
            return False
    for r0 in range(0, size, box):
        for c0 in range(0, size, box):
            seen = set()
            for r in range(r0, r0 + box):
                for c in range(c0, c0 + box):
                    v = solution[r][c]
                    if v < 1 or v > size or v in seen:
                        return False
                    seen.add(v)
    return True


def solve_sudoku(puzzle: list[list[int]], box: int) -> list[list[int]] | None:
    """A filled grid for ``puzzle`` (0 = empty) by backtracking on the most constrained cell."""
    size = len(puzzle)
    grid = [list(row) for row in puzzle]
    rows = [set(r) - {0} for r in grid]
    cols = [{grid[r][c] for r in range(size)} - {0} for c in range(size)]
    boxes: dict[tuple[int, int], set[int]] = {}
    for r in range(size):
        for c in range(size):
            if grid[r][c]:
                boxes.setdefault((r // box, c // box), set()).add(grid[r][c])
    empty = [(r, c) for r in range(size) for c in range(size) if not grid[r][c]]
    digits = set(range(1, size + 1))

    def options(r: int, c: int) -> set[int]:
        return digits - rows[r] - cols[c] - boxes.get((r // box, c // box), set())

    def fill() -> bool:
        if not empty:
            return True
        best = min(range(len(empty)), key=lambda k: len(options(*empty[k])))
        r, c = empty.pop(best)
        for v in sorted(options(r, c)):
            grid[r][c] = v
            rows[r].add(v)
            cols[c].add(v)
            boxes.setdefault((r // box, c // box), set()).add(v)
            if fill():
                return True
            rows[r].discard(v)
            cols[c].discard(v)
            boxes[(r // box, c // box)].discard(v)
        grid[r][c] = 0
        empty.insert(best, (r, c))
        return False

    return grid if fill() else None


def _sudoku_text(grid: list[list[int]]) -> str:
    return "[answer]\n" + "\n".join(" ".join(map(str, row)) for row in grid) + "\n[/answer]"


def _sudoku_solve(identity: dict) -> str | None:
    grid = solve_sudoku(identity["puzzle"], int(identity["region_rows"]))
    return None if grid is None else "Solved by elimination.\n" + _sudoku_text(grid)


def _sudoku_wrong(identity: dict) -> str | None:
    grid = solve_sudoku(identity["puzzle"], int(identity["region_rows"]))
    if grid is None:
        return None
    row = next((r for r in range(len(grid)) if sum(1 for v in identity["puzzle"][r] if v == 0) >= 2), None)
    if row is None:
        return None
    a, b = [c for c, v in enumerate(identity["puzzle"][row]) if v == 0][:2]
    grid[row][a], grid[row][b] = grid[row][b], grid[row][a]  # rows still fine, columns break
    return _sudoku_text(grid)


# ---- Maze --------------------------------------------------------------------------------------

def _maze_extract(output: str) -> Any:
    text = _tail(output)
    block = None
    pos = 0
    while True:  # last ```json … ``` pair (non-overlapping, left to right)
        s = text.find("```json", pos)
        if s < 0:
            break
        e = text.find("```", s + 7)
        if e < 0:
            break
        block = text[s + 7:e].strip()
        pos = e + 3
    if block is None:
        return None
    try:
        return ast.literal_eval(block)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return block  # the original hands the raw string on (and then fails the check)


def _maze_check(solution: Any, identity: dict) -> bool:
    grid = identity["grid"]
    start, end = tuple(identity["start_pos"]), tuple(identity["end_pos"])
    if not solution or not isinstance(solution, list | tuple):
        return False
    # the original compares with tuples, so a list of lists fails at the endpoints
    if solution[0] != start or solution[-1] != end:
        return False
    h = len(grid)
    w = len(grid[0]) if h else 0
    prev = None
    for step in solution:
        x, y = step
        if not (0 <= x < h and 0 <= y < w) or grid[x][y] == 1:
            return False
        if prev is not None:
            px, py = prev
            if not ((abs(x - px) == 1 and y == py) or (abs(y - py) == 1 and x == px)):
                return False
        prev = (x, y)
    return True


def solve_maze(grid: list[list[int]], start: tuple[int, int], end: tuple[int, int]) -> list[tuple[int, int]] | None:
    """Shortest path of open cells (0) from ``start`` to ``end`` by BFS, or None."""
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
        for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= nr < h and 0 <= nc < w and grid[nr][nc] == 0 and (nr, nc) not in prev:
                prev[(nr, nc)] = cell
                queue.append((nr, nc))
    return None


def _maze_text(path: list[tuple[int, int]]) -> str:
    return "Final-answer: ```json\n" + repr([tuple(p) for p in path]) + "\n```"


def _maze_solve(identity: dict) -> str | None:
    path = solve_maze(identity["grid"], tuple(identity["start_pos"]), tuple(identity["end_pos"]))
    return None if path is None else "Walk the open cells.\n" + _maze_text(path)


def _maze_wrong(identity: dict) -> str | None:
    path = solve_maze(identity["grid"], tuple(identity["start_pos"]), tuple(identity["end_pos"]))
    if path is None or len(path) < 3:
        return None
    return _maze_text(path[:1] + path[2:])  # skips a step: not adjacent


# ---- BbehMultistepArithmetic -------------------------------------------------------------------

def _bbeh_extract(output: str) -> float | None:
    block = _answer_block(output)
    if block is None or len(block) > 400:
        return None
    try:
        return float(block.strip())
    except ValueError:
        return None


def _bbeh_check(solution: float, identity: dict) -> bool:
    return abs(solution - float(identity["answer"])) < 1e-6


def _bbeh_solve(identity: dict) -> str | None:
    return f"<think>Evaluate A, B and C.</think>\n[answer]{identity['answer']}[/answer]"


def _bbeh_wrong(identity: dict) -> str | None:
    return f"[answer]{identity['answer'] + 1}[/answer]"


# ---- registry and scoring ----------------------------------------------------------------------

BUILTIN: dict[str, BootcampTask] = {t.name.lower(): t for t in (
    BootcampTask("Game24", _game24_extract, _game24_check, _game24_solve, _game24_wrong),
    BootcampTask("KorPuzzle24Points", _kor24_extract, _kor24_check, _kor24_solve, _kor24_wrong),
    BootcampTask("Sudoku", _sudoku_extract, _sudoku_check, _sudoku_solve, _sudoku_wrong),
    BootcampTask("Maze", _maze_extract, _maze_check, _maze_solve, _maze_wrong),
    BootcampTask("BbehMultistepArithmetic", _bbeh_extract, _bbeh_check, _bbeh_solve, _bbeh_wrong),
)}

# Originals that eval model text (a "9**9**9**9" answer would stall the reward worker): scored by
# the built-in even when the internbootcamp package is installed, unless asked otherwise.
EVAL_ORIGINALS = frozenset({"game24", "korpuzzle24points"})


def builtin_task(name: str) -> BootcampTask | None:
    """The built-in task for a bootcamp name (case-insensitive), or None."""
    return BUILTIN.get(name.lower())


def verify_score(task: BootcampTask, model_output: str, identity: dict, *, format_score: float = 0.0,
                 short_penalty: bool = False, short_threshold: int = 256, ans_threshold: int = 128,
                 format_penalty: bool = False) -> float:
    """Score like ``Basebootcamp.verify_score``: 0 without an extractable answer, ``format_score``
    for a wrong one (or one whose check raises), 1.0 for a right one; ``format_penalty`` gives 0
    unless the output is exactly one ``<think>…</think>`` at the start (and not the end);
    ``short_penalty`` scales the score down for outputs (or post-``</think>`` parts) shorter than
    the thresholds."""
    if not isinstance(model_output, str):
        return 0.0
    if format_penalty and not _think_ok(model_output):
        return 0.0
    score = 0.0
    try:
        solution = task.extract(model_output)
    except Exception:
        solution = None
    if solution is None:
        return 0.0
    score = float(format_score)
    try:
        if task.check(solution, identity) is True:
            score = 1.0
    except Exception:
        pass
    if short_penalty:
        cut = model_output.rfind("</think>")
        ans_len = len(model_output) - cut - len("</think>") if cut >= 0 else 0
        if len(model_output) < short_threshold or ans_len < ans_threshold:
            return min(score * len(model_output) / short_threshold, score * ans_len / ans_threshold)
    return score


def _think_ok(text: str) -> bool:
    if "<think>" not in text or "</think>" not in text:
        return False
    n_open, n_close = text.count("<think>"), text.count("</think>")
    return n_open == 1 and n_close == 1 and text.startswith("<think>") and not text.endswith("</think>")


# ---- the internbootcamp package (optional) -----------------------------------------------------

@functools.cache
def package_classes() -> dict[str, type]:
    """``{lowercase class name: class}`` for the bootcamp classes the ``internbootcamp`` package
    exports (classes named ``…bootcamp`` other than the base class, defined inside the package, with
    ``verify_score``);
    empty when the package is not installed. Only these classes are ever looked up."""
    try:
        import internbootcamp
    except ImportError:
        return {}
    out = {}
    for attr, obj in vars(internbootcamp).items():
        if (isinstance(obj, type) and attr.lower().endswith("bootcamp") and not attr.lower().startswith("base")
                and getattr(obj, "__module__", "").split(".")[0] == "internbootcamp"
                and callable(getattr(obj, "verify_score", None))):
            out[attr.lower()] = obj
    return out


def package_class(name: str) -> type | None:
    """The package's ``<name>bootcamp`` class (case-insensitive), or None."""
    return package_classes().get(name.lower() + "bootcamp")


def parse_ground_truth(ground_truth: Any, *, max_chars: int = 1_000_000) -> dict:
    """A bootcamp ground truth as a dict (verl stores it as a JSON string)."""
    if isinstance(ground_truth, dict):
        return ground_truth
    if not isinstance(ground_truth, str | bytes):
        raise ValueError(f"ground truth is a {type(ground_truth).__name__}, expected a JSON object string")
    if len(ground_truth) > max_chars:
        raise ValueError(f"ground truth is {len(ground_truth)} characters (limit {max_chars})")
    value = json.loads(ground_truth)
    if not isinstance(value, dict):
        raise ValueError(f"ground truth JSON is a {type(value).__name__}, expected an object")
    return value
