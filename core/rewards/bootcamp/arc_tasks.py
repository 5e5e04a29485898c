"""Our own programs for ARC task keys, written from each task's rule and checked against the
demonstration pairs in the shared rows' prompts and the oracle's gold answers. A grid is a tuple
of row tuples; every function takes the test input and returns the output grid."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

Grid = tuple[tuple[int, ...], ...]


def colors(g: Grid) -> Counter:
    """Cell count per color."""
    return Counter(v for row in g for v in row)


def most(g: Grid) -> int:
    """The most common color (the background in most tasks)."""
    return colors(g).most_common(1)[0][0]


def least(g: Grid) -> int:
    """The least common color."""
    return min(colors(g).items(), key=lambda kv: (kv[1], kv[0]))[0]


def flip_rows(g: Grid) -> Grid:
    """Upside down."""
    return g[::-1]


def mirror_cols(g: Grid) -> Grid:
    """Left-right mirror."""
    return tuple(row[::-1] for row in g)


def as_grid(rows: list[list[int]]) -> Grid:
    """Lists to a grid."""
    return tuple(tuple(r) for r in rows)


def connect_lines(g: Grid, color_of_fill: int, *, rows: bool = True, cols: bool = True,
                  only: int | None = None) -> Grid:
    """Fill background cells between two cells of the same (non-background) color in a row/column."""
    bg = most(g)
    out = [list(r) for r in g]
    h, w = len(g), len(g[0])
    lines = ([[(i, j) for j in range(w)] for i in range(h)] if rows else []) + \
        ([[(i, j) for i in range(h)] for j in range(w)] if cols else [])
    for line in lines:
        seen: dict[int, int] = {}
        for k, (i, j) in enumerate(line):
            v = g[i][j]
            if v == bg or (only is not None and v != only):
                continue
            if v in seen:
                for a, b in line[seen[v] + 1:k]:
                    if g[a][b] == bg:
                        out[a][b] = v if color_of_fill < 0 else color_of_fill
            seen[v] = k
    return as_grid(out)


def t_dbc1a6ce(g: Grid) -> Grid:
    """Pairs of marks in a row or column are joined by 8s over the background."""
    return connect_lines(g, 8)


def t_22168020(g: Grid) -> Grid:
    """Cells of one color in the same row or column are joined in that color."""
    return connect_lines(g, -1)


def t_75b8110e(g: Grid) -> Grid:
    """Four quadrants overlaid: top-right over bottom-left over bottom-right over top-left."""
    h, w = len(g) // 2, len(g[0]) // 2
    tl = [r[:w] for r in g[:h]]
    tr = [r[w:] for r in g[:h]]
    bl = [r[:w] for r in g[h:]]
    br = [r[w:] for r in g[h:]]
    quads = (tl, tr, bl, br)
    shared = [c for c, _ in colors(g).most_common() if all(any(c in r for r in q) for q in quads)]
    bg = shared[0] if shared else most(g)
    out = []
    for i in range(h):
        row = []
        for j in range(w):
            v = next((q[i][j] for q in (tr, bl, br, tl) if q[i][j] != bg), bg)
            row.append(v)
        out.append(row)
    return as_grid(out)


def t_623ea044(g: Grid) -> Grid:
    """Each mark shoots both diagonals to the edges in its color."""
    bg = most(g)
    h, w = len(g), len(g[0])
    out = [list(r) for r in g]
    for i in range(h):
        for j in range(w):
            if g[i][j] != bg:
                for di, dj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
                    a, b = i + di, j + dj
                    while 0 <= a < h and 0 <= b < w:
                        out[a][b] = g[i][j]
                        a, b = a + di, b + dj
    return as_grid(out)


def t_6d75e8bb(g: Grid) -> Grid:
    """The background inside the shape's bounding box becomes 2."""
    bg, fg = most(g), least(g)
    cells = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v == fg]
    r0, r1 = min(i for i, _ in cells), max(i for i, _ in cells)
    c0, c1 = min(j for _, j in cells), max(j for _, j in cells)
    return as_grid([[2 if r0 <= i <= r1 and c0 <= j <= c1 and v == bg else v for j, v in enumerate(r)]
                    for i, r in enumerate(g)])


def _recolor(mapping: dict[int, int]) -> Callable[[Grid], Grid]:
    return lambda g: tuple(tuple(mapping.get(v, v) for v in row) for row in g)


def _tile_mirrored(g: Grid) -> Grid:
    top = tuple(row + row[::-1] for row in g)
    return top + top[::-1]


TRANSFORMS: dict[str, Callable[[Grid], Grid]] = {
    "6fa7a44f": lambda g: g + flip_rows(g),  # the grid, then its upside-down copy
    "68b16354": flip_rows,
    "3af2c5a8": _tile_mirrored,  # 2x2 tiling with mirror images
    "0d3d703e": _recolor({3: 4, 4: 3, 1: 5, 5: 1, 2: 6, 6: 2, 8: 9, 9: 8}),
    "dbc1a6ce": t_dbc1a6ce,
    "22168020": t_22168020,
    "75b8110e": t_75b8110e,
    "623ea044": t_623ea044,
    "6d75e8bb": t_6d75e8bb,
}
