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


def objects(g: Grid, bg: int, *, diagonal: bool = True, same_color: bool = False) -> list[list[tuple[int, int]]]:
    """Connected groups of non-background cells (8-connected unless ``diagonal`` is False)."""
    h, w = len(g), len(g[0])
    seen: set[tuple[int, int]] = set()
    steps = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1) if (a, b) != (0, 0) and (diagonal or 0 in (a, b))]
    out = []
    for i in range(h):
        for j in range(w):
            if g[i][j] == bg or (i, j) in seen:
                continue
            stack, cells = [(i, j)], []
            seen.add((i, j))
            while stack:
                a, b = stack.pop()
                cells.append((a, b))
                for da, db in steps:
                    x, y = a + da, b + db
                    if 0 <= x < h and 0 <= y < w and (x, y) not in seen and g[x][y] != bg \
                            and (not same_color or g[x][y] == g[a][b]):
                        seen.add((x, y))
                        stack.append((x, y))
            out.append(sorted(cells))
    return out


def crop(g: Grid, cells: list[tuple[int, int]]) -> Grid:
    """The bounding box of ``cells``."""
    r0, r1 = min(i for i, _ in cells), max(i for i, _ in cells)
    c0, c1 = min(j for _, j in cells), max(j for _, j in cells)
    return tuple(row[c0:c1 + 1] for row in g[r0:r1 + 1])


def rotate_cw(g: Grid) -> Grid:
    """A quarter turn clockwise."""
    return tuple(zip(*g[::-1], strict=True))


def rotate_ccw(g: Grid) -> Grid:
    """A quarter turn counter-clockwise."""
    return tuple(zip(*g, strict=True))[::-1]


def t_ae4f1146(g: Grid) -> Grid:
    """The block holding the most 1s."""
    bg = most(g)
    return max((crop(g, cells) for cells in objects(g, bg)), key=lambda b: sum(r.count(1) for r in b))


def t_ce22a75a(g: Grid) -> Grid:
    """Every mark grows into a 3x3 square of 1s."""
    bg = most(g)
    h, w = len(g), len(g[0])
    return as_grid([[1 if any(g[a][b] != bg for a in range(max(0, i - 1), min(h, i + 2))
                              for b in range(max(0, j - 1), min(w, j + 2))) else bg
                     for j in range(w)] for i in range(h)])


def t_a740d043(g: Grid) -> Grid:
    """The shape cut out, its background turned 0."""
    bg = most(g)
    cells = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v != bg]
    return tuple(tuple(0 if v == bg else v for v in row) for row in crop(g, cells))


def t_91413438(g: Grid) -> Grid:
    """As many copies of the pattern as it has colored cells, row by row, in a square of
    (empty cells) x (empty cells) tiles."""
    h, w = len(g), len(g[0])
    n = sum(1 for r in g for v in r if v != 0)
    k = h * w - n
    out = [[0] * (w * k) for _ in range(h * k)]
    for t in range(n):
        ti, tj = divmod(t, k)
        for i in range(h):
            for j in range(w):
                out[ti * h + i][tj * w + j] = g[i][j]
    return as_grid(out)


def t_c9f8e694(g: Grid) -> Grid:
    """Cells of the shape color take the color of the marker at the edge of their row (or column)."""
    bg = 0
    shape = next(c for c, _ in colors(g).most_common() if c != bg)
    edge_cols = [r[0] for r in g] + [r[-1] for r in g]
    edge_rows = list(g[0]) + list(g[-1])
    by_rows = sum(v not in (bg, shape) for v in edge_cols) >= sum(v not in (bg, shape) for v in edge_rows)
    grid = g if by_rows else rotate_cw(g)
    out = []
    for row in grid:
        marker = next((v for v in (row[0], row[-1]) if v not in (bg, shape)), None)
        out.append(tuple(marker if v == shape and marker is not None else v for v in row))
    return as_grid(out) if by_rows else rotate_ccw(as_grid(out))


def _edge_counts(g: Grid, bg: int) -> list[int]:
    return [sum(v != bg for v in g[-1]), sum(r[-1] != bg for r in g), sum(v != bg for v in g[0]),
            sum(r[0] != bg for r in g)]


def t_d9f24cd1(g: Grid) -> Grid:
    """Rays rise from the marks on one edge; one that meets an obstacle steps aside one cell first."""
    bg = most(g)
    counts = _edge_counts(g, bg)
    turns = counts.index(max(counts))  # bottom, right, top, left: clockwise quarter turns to canonical
    c = g
    for _ in range(turns):
        c = rotate_cw(c)
    h, w = len(c), len(c[0])
    out = [list(r) for r in c]
    for j0 in range(w):
        color = c[h - 1][j0]
        if color == bg:
            continue
        j = j0
        for i in range(h - 1, -1, -1):
            if i < h - 1 and c[i][j] != bg:
                j += 1  # blocked: step aside on the row below, then go on up
                if j >= w:
                    break
                out[i + 1][j] = color
            out[i][j] = color if c[i][j] == bg or i == h - 1 else out[i][j]
    res = as_grid(out)
    for _ in range(turns):
        res = rotate_ccw(res)
    return res


def t_0a938d79(g: Grid) -> Grid:
    """Lines across the short side through the two marks, repeated along the long side."""
    tall = len(g) > len(g[0])
    c = g if not tall else rotate_ccw(g)
    bg = most(c)
    marks = sorted((j, c[i][j]) for i, r in enumerate(c) for j, v in enumerate(r) if v != bg)
    (j1, a), (j2, b) = marks[0], marks[1]
    step = j2 - j1
    out = [list(r) for r in c]
    col, k = j1, 0
    while col < len(c[0]):
        for i in range(len(c)):
            out[i][col] = (a, b)[k % 2]
        col += step
        k += 1
    res = as_grid(out)
    return res if not tall else rotate_cw(res)


def turned(g: Grid, turns: int) -> Grid:
    """``turns`` clockwise quarter turns (negative: counter-clockwise)."""
    for _ in range(turns % 4):
        g = rotate_cw(g)
    return g


def edge_turns(g: Grid, bg: int) -> int:
    """Clockwise quarter turns that bring the edge with the most non-background cells to the bottom."""
    counts = _edge_counts(g, bg)
    return counts.index(max(counts))


def t_ce9e57f2(g: Grid) -> Grid:
    """The half of each bar nearest the edge it grows from turns 8."""
    bg = most(g)
    k = edge_turns(g, bg)
    c = [list(r) for r in turned(g, k)]
    h = len(c)
    for j in range(len(c[0])):
        n = 0
        while n < h and c[h - 1 - n][j] != bg:
            n += 1
        for i in range(n // 2):
            c[h - 1 - i][j] = 8
    return turned(as_grid(c), -k)


def t_db3e9e38(g: Grid) -> Grid:
    """A staircase around the bar: bands as thick as the bar, one shorter per step, 8 and the bar's
    color alternating."""
    bg = most(g)
    k = (edge_turns(g, bg) + 1) % 4  # the bar's edge to the left
    c = turned(g, k)
    color = next(v for r in c for v in r if v != bg)
    rows = [i for i, r in enumerate(c) if r[0] == color]
    top, bottom = min(rows), max(rows)
    thick = bottom - top + 1
    length = sum(1 for v in c[top] if v == color)
    out = [list(r) for r in c]
    for i in range(len(c)):
        if top <= i <= bottom:
            continue
        step = (top - i - 1) // thick + 1 if i < top else (i - bottom - 1) // thick + 1
        n = length - step
        for j in range(max(n, 0)):
            out[i][j] = 8 if step % 2 else color
    return turned(as_grid(out), -k)


def t_b8825c91(g: Grid) -> Grid:
    """Cells painted 4 are restored from the pattern's mirror images."""
    h, w = len(g), len(g[0])
    cells = [(i, j) for i in range(h) for j in range(w)]

    def holds(f: Callable[[int, int], tuple[int, int]]) -> bool:
        return all(g[i][j] == g[a][b] for i, j in cells for a, b in [f(i, j)] if 4 not in (g[i][j], g[a][b]))

    mirrors = [f for f in (lambda i, j: (i, w - 1 - j), lambda i, j: (h - 1 - i, j),
                           lambda i, j: (h - 1 - i, w - 1 - j)) if holds(f)]
    out = [list(r) for r in g]
    for i, j in cells:
        if g[i][j] == 4:
            out[i][j] = next((g[a][b] for f in mirrors for a, b in [f(i, j)] if g[a][b] != 4), 4)
    return as_grid(out)


def t_a1570a43(g: Grid) -> Grid:
    """The shape moves inside the frame its four corner marks draw."""
    bg = most(g)
    counts = colors(g)
    marks = next(c for c, n in counts.items() if n == 4 and c != bg and _corners(g, c))
    rows, cols = _corners(g, marks)
    shape = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v not in (bg, marks)]
    di = rows[0] + 1 - min(i for i, _ in shape)
    dj = cols[0] + 1 - min(j for _, j in shape)
    out = [[v if v == marks else bg for v in r] for r in g]
    for i, j in shape:
        out[i + di][j + dj] = g[i][j]
    return as_grid(out)


def _corners(g: Grid, color: int) -> tuple[list[int], list[int]] | None:
    cells = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v == color]
    rows, cols = sorted({i for i, _ in cells}), sorted({j for _, j in cells})
    return (rows, cols) if len(rows) == 2 and len(cols) == 2 and len(cells) == 4 else None


def t_834ec97d(g: Grid) -> Grid:
    """The mark drops one row; above it, every other column (its own parity) turns 4."""
    bg = most(g)
    (i0, j0), = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v != bg]
    out = [list(r) for r in g]
    for i in range(i0 + 1):
        for j in range(j0 % 2, len(g[0]), 2):
            out[i][j] = 4
    if i0 + 1 < len(g):
        out[i0 + 1][j0] = g[i0][j0]
    return as_grid(out)


def t_6e82a1ae(g: Grid) -> Grid:
    """Shapes recolored by size: 4 cells -> 1, 3 -> 2, 2 -> 3."""
    bg = most(g)
    out = [list(r) for r in g]
    for cells in objects(g, bg, diagonal=False):
        color = {4: 1, 3: 2, 2: 3}.get(len(cells))
        for i, j in cells:
            out[i][j] = color if color is not None else g[i][j]
    return as_grid(out)


def t_88a10436(g: Grid) -> Grid:
    """The shape is stamped centered on every single-cell mark."""
    bg = most(g)
    objs = objects(g, bg, diagonal=True)
    shape = max(objs, key=len)
    r0, c0 = min(i for i, _ in shape), min(j for _, j in shape)
    h = max(i for i, _ in shape) - r0 + 1
    w = max(j for _, j in shape) - c0 + 1
    out = [list(r) for r in g]
    for cells in objs:
        if len(cells) != 1:
            continue
        (mi, mj), = cells
        out[mi][mj] = bg
        for i, j in shape:
            a, b = mi - h // 2 + i - r0, mj - w // 2 + j - c0
            if 0 <= a < len(g) and 0 <= b < len(g[0]):
                out[a][b] = g[i][j]
    return as_grid(out)


def _period(seq: list) -> int:
    return next(p for p in range(1, len(seq) + 1) if all(seq[k] == seq[k % p] for k in range(len(seq))))


def t_caa06a1f(g: Grid) -> Grid:
    """The periodic pattern fills the grid, moved one step along its rows."""
    edges = [g[0], g[-1], tuple(r[0] for r in g), tuple(r[-1] for r in g)]
    bg = next((e[0] for e in edges if len(set(e)) == 1), most(g))  # the filler covers a whole edge
    cells = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v != bg]
    top = min(i for i, _ in cells) == 0
    left = min(j for _, j in cells) == 0
    k = {(True, True): 0, (False, True): 1, (False, False): 2, (True, False): 3}[(top, left)]
    c = turned(g, k)
    cells = [(i, j) for i, r in enumerate(c) for j, v in enumerate(r) if v != bg]
    h = max(i for i, _ in cells) + 1
    w = max(j for _, j in cells) + 1
    tile = [row[:w] for row in c[:h]]
    ph = _period(tile)
    pw = _period([tuple(r[j] for r in tile) for j in range(w)])
    out = [[tile[i % ph][(j + 1) % pw] for j in range(len(c[0]))] for i in range(len(c))]
    return turned(as_grid(out), -k)


def t_ddf7fa4f(g: Grid) -> Grid:
    """Each block takes the color of the edge mark in line with it."""
    bg = most(g)
    objs = objects(g, bg, diagonal=False)
    h, w = len(g), len(g[0])
    marks = [cells[0] for cells in objs if len(cells) == 1 and (cells[0][0] in (0, h - 1) or cells[0][1] in (0, w - 1))]
    out = [list(r) for r in g]
    for cells in objs:
        if len(cells) == 1 and cells[0] in marks:
            continue
        rows = {i for i, _ in cells}
        cols = {j for _, j in cells}
        hit = [(i, j) for i, j in marks if (j in (0, w - 1) and i in rows) or (i in (0, h - 1) and j in cols)]
        if hit:
            color = g[hit[0][0]][hit[0][1]]
            for i, j in cells:
                out[i][j] = color
    return as_grid(out)


def t_1f0c79e5(g: Grid) -> Grid:
    """Each 2x2 block slides diagonally to the edge toward every corner that holds a 2, in its color."""
    bg = most(g)
    h, w = len(g), len(g[0])
    out = [list(r) for r in g]
    for i in range(h - 1):
        for j in range(w - 1):
            block = [(i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)]
            if any(g[a][b] == bg for a, b in block) or (i and g[i - 1][j] != bg and g[i - 1][j + 1] != bg) \
                    or (j and g[i][j - 1] != bg and g[i + 1][j - 1] != bg):
                continue
            others = [g[a][b] for a, b in block if g[a][b] != 2]
            color = others[0] if others else 2
            for (a, b), (di, dj) in zip(block, ((-1, -1), (-1, 1), (1, -1), (1, 1)), strict=True):
                if g[a][b] != 2:
                    continue
                k = 0
                while True:
                    cells = [(x + k * di, y + k * dj) for x, y in block]
                    inside = [(x, y) for x, y in cells if 0 <= x < h and 0 <= y < w]
                    if not inside:
                        break
                    for x, y in inside:
                        out[x][y] = color
                    k += 1
    return as_grid(out)


def _shape(cells: list[tuple[int, int]]) -> frozenset[tuple[int, int]]:
    r0, c0 = min(i for i, _ in cells), min(j for _, j in cells)
    return frozenset((i - r0, j - c0) for i, j in cells)


def t_228f6490(g: Grid) -> Grid:
    """Shapes that exactly fit an enclosed hole move into it."""
    bg = most(g)
    h, w = len(g), len(g[0])
    inverse = as_grid([[1 if v == bg else 0 for v in r] for r in g])
    holes = [c for c in objects(inverse, 0, diagonal=False)
             if all(0 < i < h - 1 and 0 < j < w - 1 for i, j in c)]
    out = [list(r) for r in g]
    if not holes:
        return g
    frame = Counter(g[i + di][j + dj] for c in holes for i, j in c for di, dj in ((0, 1), (1, 0), (0, -1), (-1, 0))
                    if g[i + di][j + dj] != bg).most_common(1)[0][0]
    pieces = [c for c in objects(g, bg, diagonal=False, same_color=True) if g[c[0][0]][c[0][1]] != frame]
    for hole in holes:
        want = _shape(hole)
        match = next((p for p in pieces if _shape(p) == want), None)
        if match is None:
            continue
        pieces.remove(match)
        color = g[match[0][0]][match[0][1]]
        for i, j in match:
            out[i][j] = bg
        for i, j in hole:
            out[i][j] = color
    return as_grid(out)


def t_22233c11(g: Grid) -> Grid:
    """Two squares touching at a corner get two 8-squares across the other diagonal, three
    half-sizes away from their center."""
    bg = most(g)
    h, w = len(g), len(g[0])
    out = [list(r) for r in g]
    for cells in objects(g, bg, diagonal=True, same_color=True):
        r0, c0 = min(i for i, _ in cells), min(j for _, j in cells)
        size = max(i for i, _ in cells) - r0 + 1
        if size % 2 or max(j for _, j in cells) - c0 + 1 != size or len(cells) * 2 != size * size:
            continue
        s = size // 2
        main = (r0, c0) in cells  # squares on the main diagonal: 8s go on the other one
        sign = -1 if main else 1
        for k in (1, -1):
            i0 = round(r0 + s - 0.5 + k * 1.5 * s - (s - 1) / 2)  # the 8-square's top-left corner
            j0 = round(c0 + s - 0.5 + sign * k * 1.5 * s - (s - 1) / 2)
            for i in range(i0, i0 + s):
                for j in range(j0, j0 + s):
                    if 0 <= i < h and 0 <= j < w:
                        out[i][j] = 8
    return as_grid(out)


def t_db93a21d(g: Grid) -> Grid:
    """Each square gets a 3-colored frame half its side wide and a 1-colored shadow down to the bottom."""
    bg = most(g)
    h, w = len(g), len(g[0])
    squares = objects(g, bg, diagonal=False, same_color=True)
    out = [list(r) for r in g]
    boxes = []
    for cells in squares:
        r0, c0 = min(i for i, _ in cells), min(j for _, j in cells)
        r1, c1 = max(i for i, _ in cells), max(j for _, j in cells)
        boxes.append((r0, c0, r1, c1))
        for i in range(r1 + 1, h):
            for j in range(c0, c1 + 1):
                if g[i][j] == bg:
                    out[i][j] = 1
    for r0, c0, r1, c1 in boxes:
        m = (r1 - r0 + 1) // 2
        for i in range(max(0, r0 - m), min(h, r1 + m + 1)):
            for j in range(max(0, c0 - m), min(w, c1 + m + 1)):
                if g[i][j] == bg:
                    out[i][j] = 3
    return as_grid(out)


def t_b527c5c6(g: Grid) -> Grid:
    """The mark on a block's edge shoots a beam out of that edge to the border, flanked on each
    side by the block's color as wide as the block is deep (less one)."""
    bg = most(g)
    h, w = len(g), len(g[0])
    out = [list(r) for r in g]
    for cells in objects(g, bg, diagonal=False):
        counts = Counter(g[i][j] for i, j in cells)
        if len(counts) < 2:
            continue
        body, mark = counts.most_common(1)[0][0], min(counts, key=lambda c: counts[c])
        r0, c0 = min(i for i, _ in cells), min(j for _, j in cells)
        r1, c1 = max(i for i, _ in cells), max(j for _, j in cells)
        for mi, mj in [(i, j) for i, j in cells if g[i][j] == mark]:
            if mi == r0 or mi == r1:
                di, dj, depth = (-1 if mi == r0 else 1), 0, r1 - r0 + 1
            else:
                di, dj, depth = 0, (-1 if mj == c0 else 1), c1 - c0 + 1
            i, j = mi + di, mj + dj
            while 0 <= i < h and 0 <= j < w:
                for k in range(-(depth - 1), depth):
                    a, b = (i, j + k) if di else (i + k, j)
                    if 0 <= a < h and 0 <= b < w:
                        out[a][b] = mark if k == 0 else body
                i, j = i + di, j + dj
    return as_grid(out)


def t_2dee498d(g: Grid) -> Grid:
    """The grid is one tile repeated three times: the tile."""
    w = len(g[0]) // 3
    if len(g[0]) % 3 == 0 and all(r[:w] * 3 == r for r in g):
        return tuple(r[:w] for r in g)
    return g[:len(g) // 3]


def t_7468f01a(g: Grid) -> Grid:
    """The shape, cut out and mirrored left to right."""
    bg = most(g)
    return mirror_cols(crop(g, [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v != bg]))


def t_d23f8c26(g: Grid) -> Grid:
    """Only the middle column is kept."""
    bg, mid = most(g), len(g[0]) // 2
    return tuple(tuple(v if j == mid else bg for j, v in enumerate(r)) for r in g)


def t_8eb1be9a(g: Grid) -> Grid:
    """The band of rows holding the pattern repeats up and down the grid."""
    bg = most(g)
    rows = [i for i, r in enumerate(g) if any(v != bg for v in r)]
    r0, n = rows[0], rows[-1] - rows[0] + 1
    return tuple(g[r0 + (i - r0) % n] for i in range(len(g)))


def t_50cb2852(g: Grid) -> Grid:
    """The inside of every rectangle turns 8."""
    bg = most(g)
    out = [list(r) for r in g]
    for cells in objects(g, bg, diagonal=False, same_color=True):
        r0, c0 = cells[0][0], min(j for _, j in cells)
        r1, c1 = cells[-1][0], max(j for _, j in cells)
        for i, j in cells:
            if r0 < i < r1 and c0 < j < c1:
                out[i][j] = 8
    return as_grid(out)


def _holes(g: Grid, bg: int) -> list[list[tuple[int, int]]]:
    """Background regions that cannot reach the border, even through diagonal gaps."""
    h, w = len(g), len(g[0])
    inverse = as_grid([[1 if v == bg else 0 for v in r] for r in g])
    return [c for c in objects(inverse, 0, diagonal=True) if all(0 < i < h - 1 and 0 < j < w - 1 for i, j in c)]


def t_810b9b61(g: Grid) -> Grid:
    """Shapes that close a loop around background turn 3."""
    bg = most(g)
    h, w = len(g), len(g[0])
    owner = {}
    objs = objects(g, bg, diagonal=False, same_color=True)
    for k, cells in enumerate(objs):
        for c in cells:
            owner[c] = k
    loops = set()
    for hole in _holes(g, bg):
        for i, j in hole:
            for x, y in ((i + 1, j), (i - 1, j), (i, j + 1), (i, j - 1)):
                if 0 <= x < h and 0 <= y < w and g[x][y] != bg:
                    loops.add(owner[(x, y)])
    out = [list(r) for r in g]
    for k in loops:
        for i, j in objs[k]:
            out[i][j] = 3
    return as_grid(out)


def t_aabf363d(g: Grid) -> Grid:
    """The shape takes the single mark's color; the mark goes."""
    bg = most(g)
    objs = sorted(objects(g, bg, diagonal=True, same_color=True), key=len)
    mark, color = objs[0], g[objs[0][0][0]][objs[0][0][1]]
    out = [list(r) for r in g]
    for cells in objs[1:]:
        for i, j in cells:
            out[i][j] = color
    for i, j in mark:
        out[i][j] = bg
    return as_grid(out)


def t_f25ffba3(g: Grid) -> Grid:
    """The pattern on one side is mirrored onto the empty other side."""
    bg = most(g)
    w = len(g[0])
    empty_cols = all(r[j] == bg for r in g for j in range(w - w // 2, w)) or \
        all(r[j] == bg for r in g for j in range(w // 2))
    mirror = mirror_cols(g) if empty_cols else flip_rows(g)
    return tuple(tuple(v if v != bg else m for v, m in zip(r, mr, strict=True)) for r, mr in zip(g, mirror, strict=True))


def t_bbc9ae5d(g: Grid) -> Grid:
    """A one-row strip slides right one cell per row, its first color filling in behind, for half
    its width in rows."""
    row = g[0]
    w = len(row)
    return tuple((row[0],) * i + row[:w - i] for i in range(w // 2))


def t_928ad970(g: Grid) -> Grid:
    """A rectangle in the shape's color, one cell inside the four marks."""
    bg = most(g)
    objs = objects(g, bg, diagonal=False, same_color=True)
    marks = [c[0] for c in objs if len(c) == 1]
    color = next(g[c[0][0]][c[0][1]] for c in objs if len(c) > 1)
    r0, r1 = min(i for i, _ in marks) + 1, max(i for i, _ in marks) - 1
    c0, c1 = min(j for _, j in marks) + 1, max(j for _, j in marks) - 1
    out = [list(r) for r in g]
    for i in range(r0, r1 + 1):
        for j in range(c0, c1 + 1):
            if (i in (r0, r1) or j in (c0, c1)) and g[i][j] == bg:
                out[i][j] = color
    return as_grid(out)


def t_8403a5d5(g: Grid) -> Grid:
    """From the mark's column rightwards: every other column in its color, and 5s capping the gaps,
    top and bottom in turn."""
    bg = most(g)
    (mi, mj), = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v != bg]
    color, h = g[mi][mj], len(g)
    out = [list(r) for r in g]
    for j in range(mj, len(g[0])):
        k = j - mj
        if k % 2 == 0:
            for i in range(h):
                out[i][j] = color
        else:
            out[0 if (k // 2) % 2 == 0 else h - 1][j] = 5
    return as_grid(out)


def t_2bee17df(g: Grid) -> Grid:
    """Rows and columns open all the way across the framed area turn 3."""
    bg = most(g)
    cells = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v == bg]
    r0, r1 = min(i for i, _ in cells), max(i for i, _ in cells)
    c0, c1 = min(j for _, j in cells), max(j for _, j in cells)
    out = [list(r) for r in g]
    for i in range(r0, r1 + 1):
        if all(g[i][j] == bg for j in range(c0, c1 + 1)):
            for j in range(c0, c1 + 1):
                out[i][j] = 3
    for j in range(c0, c1 + 1):
        if all(g[i][j] == bg for i in range(r0, r1 + 1)):
            for i in range(r0, r1 + 1):
                out[i][j] = 3
    return as_grid(out)


def t_31aa019c(g: Grid) -> Grid:
    """Only the color that occurs once stays, ringed by 2s; everything else is cleared."""
    bg = most(g)
    counts = colors(g)
    (i0, j0), = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if counts[v] == 1]
    out = [[bg] * len(g[0]) for _ in g]
    for i in range(max(0, i0 - 1), min(len(g), i0 + 2)):
        for j in range(max(0, j0 - 1), min(len(g[0]), j0 + 2)):
            out[i][j] = 2
    out[i0][j0] = g[i0][j0]
    return as_grid(out)


def t_39a8645d(g: Grid) -> Grid:
    """The shape that occurs most often, cut out."""
    bg = most(g)
    seen: Counter = Counter()
    crops = {}
    for cells in objects(g, bg, diagonal=True, same_color=True):
        key = (g[cells[0][0]][cells[0][1]], _shape(cells))
        seen[key] += 1
        crops.setdefault(key, crop(g, cells))
    return crops[seen.most_common(1)[0][0]]


def t_d9fac9be(g: Grid) -> Grid:
    """The color at the center of the 3x3 ring."""
    bg = most(g)
    for i in range(len(g) - 2):
        for j in range(len(g[0]) - 2):
            ring = {g[i + a][j + b] for a in range(3) for b in range(3) if (a, b) != (1, 1)}
            center = g[i + 1][j + 1]
            if len(ring) == 1 and bg not in ring and center not in ring and center != bg:
                return ((center,),)
    raise ValueError("no ring")


def t_8f2ea7aa(g: Grid) -> Grid:
    """The pattern is copied into every block its own cells mark."""
    bg = most(g)
    cells = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v != bg]
    k = round(len(g) ** 0.5)
    r0, c0 = min(i for i, _ in cells) // k * k, min(j for _, j in cells) // k * k
    pattern = [row[c0:c0 + k] for row in g[r0:r0 + k]]
    out = [[bg] * len(g[0]) for _ in g]
    for a in range(k):
        for b in range(k):
            if pattern[a][b] != bg:
                for x in range(k):
                    for y in range(k):
                        out[a * k + x][b * k + y] = pattern[x][y]
    return as_grid(out)


def t_e73095fd(g: Grid) -> Grid:
    """Background closed in by the lines turns 4."""
    bg = most(g)
    h, w = len(g), len(g[0])
    inverse = as_grid([[1 if v == bg else 0 for v in r] for r in g])
    out = [list(r) for r in g]
    for c in objects(inverse, 0, diagonal=False):
        if all(0 < i < h - 1 and 0 < j < w - 1 for i, j in c):
            for i, j in c:
                out[i][j] = 4
    return as_grid(out)


def t_dae9d2b5(g: Grid) -> Grid:
    """The two halves laid over each other: 6 wherever either half has its own color."""
    w = len(g[0]) // 2
    left, right = [r[:w] for r in g], [r[w:] for r in g]
    shared = next(c for c, _ in colors(g).most_common() if any(c in r for r in left) and any(c in r for r in right))
    return tuple(tuple(shared if a == shared and b == shared else 6 for a, b in zip(x, y, strict=True))
                 for x, y in zip(left, right, strict=True))


def t_a65b410d(g: Grid) -> Grid:
    """A line from one edge: on one side a 3-staircase growing by a cell per row, on the other a
    1-staircase shrinking (the line's row counted as 0)."""
    bg = most(g)
    for k in range(4):
        c = turned(g, k)
        rows = [i for i, r in enumerate(c) if r[0] != bg]
        if len(rows) == 1 and all(v == bg for i, r in enumerate(c) if i != rows[0] for v in r):
            break
    else:
        raise ValueError("no line from an edge")
    r = rows[0]
    n = sum(1 for v in c[r] if v != bg)
    out = [list(row) for row in c]
    for i in range(len(c)):
        d = i - r
        length = n - d  # above the line (d < 0) n + distance, below n - distance
        for j in range(min(max(length, 0), len(c[0]))):
            if d:
                out[i][j] = 3 if d < 0 else 1
    return turned(as_grid(out), -k)


def t_1caeab9d(g: Grid) -> Grid:
    """Every shape moves up or down until its top lines up with the 1-colored shape's."""
    bg = most(g)
    top = min(i for i, r in enumerate(g) if 1 in r)
    out = [[bg] * len(g[0]) for _ in g]
    for cells in objects(g, bg, diagonal=True, same_color=True):
        shift = top - cells[0][0]
        for i, j in cells:
            if 0 <= i + shift < len(g):
                out[i + shift][j] = g[i][j]
    return as_grid(out)


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
    "ae4f1146": t_ae4f1146,
    "ce22a75a": t_ce22a75a,
    "a740d043": t_a740d043,
    "91413438": t_91413438,
    "c9f8e694": t_c9f8e694,
    "d9f24cd1": t_d9f24cd1,
    "0a938d79": t_0a938d79,
    "ce9e57f2": t_ce9e57f2,
    "db3e9e38": t_db3e9e38,
    "b8825c91": t_b8825c91,
    "a1570a43": t_a1570a43,
    "834ec97d": t_834ec97d,
    "6e82a1ae": t_6e82a1ae,
    "88a10436": t_88a10436,
    "caa06a1f": t_caa06a1f,
    "ddf7fa4f": t_ddf7fa4f,
    "1f0c79e5": t_1f0c79e5,
    "228f6490": t_228f6490,
    "22233c11": t_22233c11,
    "db93a21d": t_db93a21d,
    "b527c5c6": t_b527c5c6,
    "2dee498d": t_2dee498d,
    "7468f01a": t_7468f01a,
    "c9e6f938": lambda g: tuple(r + r[::-1] for r in g),  # the grid and its mirror image side by side
    "d23f8c26": t_d23f8c26,
    "8eb1be9a": t_8eb1be9a,
    "50cb2852": t_50cb2852,
    "810b9b61": t_810b9b61,
    "aabf363d": t_aabf363d,
    "f25ffba3": t_f25ffba3,
    "bbc9ae5d": t_bbc9ae5d,
    "928ad970": t_928ad970,
    "8403a5d5": t_8403a5d5,
    "2bee17df": t_2bee17df,
    "31aa019c": t_31aa019c,
    "39a8645d": t_39a8645d,
    "d9fac9be": t_d9fac9be,
    "8f2ea7aa": t_8f2ea7aa,
    "e73095fd": t_e73095fd,
    "dae9d2b5": t_dae9d2b5,
    "a65b410d": t_a65b410d,
    "1caeab9d": t_1caeab9d,
}
