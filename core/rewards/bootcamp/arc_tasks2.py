"""More of our own ARC programs (see :mod:`~llmctl.core.rewards.bootcamp.arc_tasks`): tasks that
place, stamp or complete shapes. Each was written from the demonstration pairs in the shared rows'
prompts and checked against them and the oracle's gold answers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from llmctl.core.rewards.bootcamp.arc_tasks import (
    Grid,
    as_grid,
    colors,
    crop,
    least,
    mirror_cols,
    most,
    objects,
    rotate_ccw,
    rotate_cw,
    turned,
)


def orientations(g: Grid) -> Iterator[Grid]:
    """The eight rotations and reflections of a grid."""
    for base in (g, mirror_cols(g)):
        for _ in range(4):
            yield base
            base = rotate_cw(base)


def t_97a05b5b(g: Grid) -> Grid:
    """The largest shape, cropped, with each small piece turned to plug its holes.

    A piece holds the shape's color plus marks: turned so that its shape-colored cells land on
    background cells of the crop and its marks on shape cells, it leaves its marks there; every
    other cell of the crop takes the shape's color. Bigger pieces go first; a filled hole is used up."""
    bg = most(g)
    parts = objects(g, bg)
    region = max(parts, key=len)
    color = g[region[0][0]][region[0][1]]
    box = [list(r) for r in crop(g, region)]
    for cells in sorted((p for p in parts if p is not region), key=len, reverse=True):
        for piece in orientations(crop(g, cells)):
            if _plug(box, piece, bg, color):
                break
    return as_grid([[color if v in (bg, color) else v for v in r] for r in box])


def _plug(box: list[list[int]], piece: Grid, bg: int, color: int) -> bool:
    """Put ``piece`` where it fits ``box`` (its color on background, its marks on ``color``)."""
    ph, pw = len(piece), len(piece[0])
    need = [[bg if v == color else color for v in row] for row in piece]
    for r in range(len(box) - ph + 1):
        for c in range(len(box[0]) - pw + 1):
            if all(box[r + i][c:c + pw] == row for i, row in enumerate(need)):
                for i, row in enumerate(piece):
                    box[r + i][c:c + pw] = [color if v == color else v for v in row]
                return True
    return False


def upscale(g: Grid, k: int) -> Grid:
    """Each cell blown up to a k by k block."""
    return tuple(tuple(v for v in row for _ in range(k)) for row in g for _ in range(k))


def _box(cells: list[tuple[int, int]]) -> tuple[int, int, int, int]:
    """Top, left, bottom, right."""
    rows, cols = [i for i, _ in cells], [j for _, j in cells]
    return min(rows), min(cols), max(rows), max(cols)


def _motif(g: Grid, bg: int) -> list[tuple[int, int]]:
    """The shape with the most colors, with every shape that touches its bounding box."""
    parts = objects(g, bg)
    cells = max(parts, key=lambda c: (len({g[i][j] for i, j in c}), len(c)))
    grown = True
    while grown:
        top, left, bottom, right = _box(cells)
        near = [p for p in parts if p[0] not in cells and any(top - 1 <= i <= bottom + 1 and left - 1 <= j <= right + 1 for i, j in p)]
        grown = bool(near)
        cells = cells + [c for p in near for c in p]
    return cells


def t_6aa20dc0(g: Grid) -> Grid:
    """The many-colored motif is completed wherever its marks recur, turned, mirrored or scaled up.

    The motif's most common color is its body, the other colors its marks; wherever all marks of
    a turned or scaled copy sit on the grid, the copy's body is painted over the background.
    Bigger copies are found first, and a mark serves one copy only."""
    bg = most(g)
    motif = crop(g, _motif(g, bg))
    body = Counter(v for row in motif for v in row if v != bg).most_common(1)[0][0]
    h, w = len(g), len(g[0])
    out = [list(r) for r in g]
    used: set[tuple[int, int]] = set()
    where: dict[int, list[tuple[int, int]]] = {}
    for i, row in enumerate(g):
        for j, v in enumerate(row):
            where.setdefault(v, []).append((i, j))
    for k in range(min(h, w) // max(len(motif), len(motif[0])), 0, -1):
        for shape in dict.fromkeys(orientations(upscale(motif, k))):
            marks = [(i, j, v) for i, row in enumerate(shape) for j, v in enumerate(row) if v not in (bg, body)]
            fill = [(i, j) for i, row in enumerate(shape) for j, v in enumerate(row) if v == body]
            starts = [(a - marks[0][0], b - marks[0][1]) for a, b in where.get(marks[0][2], ())] if marks \
                else [(r, c) for r in range(h) for c in range(w)]  # a copy starts where its first mark sits
            for r, c in starts:
                if 0 <= r <= h - len(shape) and 0 <= c <= w - len(shape[0]) \
                        and all(g[r + i][c + j] == v and (r + i, c + j) not in used for i, j, v in marks):
                    used.update((r + i, c + j) for i, j, _ in marks)
                    for i, j in fill:
                        if g[r + i][c + j] == bg:
                            out[r + i][c + j] = body
    return as_grid(out)


def t_32597951(g: Grid) -> Grid:
    """Inside the bounding box of the rarest color, every other cell turns 3."""
    mark = least(g)
    top, left, bottom, right = _box([(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v == mark])
    return as_grid([[3 if top <= i <= bottom and left <= j <= right and v != mark else v for j, v in enumerate(r)]
                    for i, r in enumerate(g)])


def t_6d58a25d(g: Grid) -> Grid:
    """Below the open side of the chevron, a column (or row) holding a dot fills with the dot's color.

    The chevron is the rarest color; its open side is the bounding-box edge it touches
    most (the two arm tips, against the single apex). Each line that crosses the chevron and holds a
    dot past it fills, from the chevron to the grid's edge, with the dots' color."""
    bg = most(g)
    color = least(g)
    shape = [(i, j) for i, r in enumerate(g) for j, v in enumerate(r) if v == color]
    top, left, bottom, right = _box(shape)
    touches = [sum(i == bottom for i, _ in shape), sum(j == right for _, j in shape),
               sum(i == top for i, _ in shape), sum(j == left for _, j in shape)]
    k = touches.index(max(touches))  # quarter turns that bring the open side to the bottom
    t = [list(r) for r in turned(g, k)]
    for j in range(len(t[0])):
        col = [t[i][j] for i in range(len(t))]
        if color not in col:
            continue
        start = max(i for i, v in enumerate(col) if v == color) + 1
        dots = {v for v in col[start:] if v != bg}
        if len(dots) == 1:
            dot = dots.pop()
            for i in range(start, len(t)):
                t[i][j] = dot
    return turned(as_grid(t), -k)


def t_d07ae81c(g: Grid) -> Grid:
    """Each dot shoots its four diagonals to the edges, colored after the area they cross.

    The two most common colors are the areas; a dot sitting in an area names that area's ray color."""
    h, w = len(g), len(g[0])
    areas = [c for c, _ in colors(g).most_common(2)]
    dots = [(i, j) for i in range(h) for j in range(w) if g[i][j] not in areas]
    paint: dict[int, int] = {}
    for i, j in dots:
        around = Counter(g[a][b] for a, b in ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
                         if 0 <= a < h and 0 <= b < w and g[a][b] in areas)
        if around:
            paint.setdefault(around.most_common(1)[0][0], g[i][j])
    out = [list(r) for r in g]
    for i, j in dots:
        for di, dj in ((1, 1), (1, -1), (-1, 1), (-1, -1)):
            a, b = i + di, j + dj
            while 0 <= a < h and 0 <= b < w:
                if g[a][b] in paint:
                    out[a][b] = paint[g[a][b]]
                a, b = a + di, b + dj
    return as_grid(out)


def _diagonal(cells: list[tuple[int, int]]) -> tuple[int, int] | None:
    """``(sign, k)`` when all cells lie on one diagonal, ``j - sign * i == k``; else None."""
    for sign in (1, -1):
        ks = {j - sign * i for i, j in cells}
        if len(ks) == 1 and len(cells) > 2:
            return sign, ks.pop()
    return None


def t_a78176bb(g: Grid) -> Grid:
    """Each triangle leaning on a diagonal line is erased and the line is drawn again past it.

    The copy runs parallel, through the cell diagonally beyond the triangle's far corner (two
    diagonals past the triangle's farthest cell); longer lines are drawn last."""
    bg = most(g)
    h, w = len(g), len(g[0])
    lines = []
    rest = [list(r) for r in g]
    for cells in objects(g, bg, same_color=True):
        line = _diagonal(cells)
        if line:
            lines.append((len(cells), line, g[cells[0][0]][cells[0][1]], cells))
            for i, j in cells:
                rest[i][j] = bg
    blobs = objects(as_grid(rest), bg, diagonal=False, same_color=True)
    out = [list(r) for r in g]
    new = []
    for _, (sign, k), color, cells in sorted(lines):
        on = set(cells)
        for blob in blobs:
            if not any((i + a, j + b) in on for i, j in blob for a, b in ((0, 1), (1, 0), (0, -1), (-1, 0))):
                continue
            offsets = [j - sign * i - k for i, j in blob]
            far = max(offsets, key=abs)
            new.append((k + far + (2 if far > 0 else -2), sign, color))
            for i, j in blob:
                out[i][j] = bg
    for k, sign, color in new:
        for i in range(h):
            if 0 <= k + sign * i < w:
                out[i][k + sign * i] = color
    return as_grid(out)


def t_e9afcf9a(g: Grid) -> Grid:
    """Striped rows pair up from the outside in (first with last, …) and each takes its partner's
    color on every other cell, starting with the second. Striped columns are done the same way."""
    if any(len(set(r)) > 1 for r in g):
        return rotate_cw(t_e9afcf9a(rotate_ccw(g))) if all(len(set(r)) == 1 for r in rotate_ccw(g)) else g
    n = len(g)
    return as_grid([[g[n - 1 - i][0] if j % 2 else v for j, v in enumerate(r)] for i, r in enumerate(g)])


def transpose(g: Grid) -> Grid:
    """Rows as columns."""
    return tuple(zip(*g, strict=True))


def t_ecdecbb3(g: Grid) -> Grid:
    """Each dot runs to the nearest full line on either side; where it meets a line, a ring of the
    line's color frames the dot's color."""
    bg = most(g)
    full = [i for i, r in enumerate(g) if len(set(r)) == 1 and r[0] != bg]
    if not full:
        return transpose(t_ecdecbb3(transpose(g))) if any(len(set(c)) == 1 and c[0] != bg
                                                          for c in transpose(g)) else g
    line = g[full[0]][0]
    h, w = len(g), len(g[0])
    out = [list(r) for r in g]
    hits = []
    for i in range(h):
        for j in range(w):
            dot = g[i][j]
            if dot in (bg, line) or i in full:
                continue
            for stop in (max((k for k in full if k < i), default=None), min((k for k in full if k > i), default=None)):
                if stop is not None:
                    for k in range(min(i, stop), max(i, stop)):
                        out[k][j] = dot
                    hits.append((stop, j, dot))
    for i, j, _ in hits:
        for a in range(max(i - 1, 0), min(i + 2, h)):
            for b in range(max(j - 1, 0), min(j + 2, w)):
                out[a][b] = line
    for i, j, dot in hits:
        out[i][j] = dot
    return as_grid(out)


_ORBITS = (((0, 0),), ((-1, -1), (-1, 1), (1, -1), (1, 1)), ((-2, 0), (2, 0), (0, -2), (0, 2)),
           ((-2, -2), (-2, 2), (2, -2), (2, 2)))
_LATTICE = {d for orbit in _ORBITS for d in orbit}


def _centered(g: Grid, bg: int, i: int, j: int) -> tuple[int, int] | None:
    """For a 5 by 5 pattern centred on ``(i, j)``: the cells it would add and minus the marks it holds;
    None where it cannot be one (a mark off the pattern's lattice, or an orbit of two colors)."""
    if not (2 <= i < len(g) - 2 and 2 <= j < len(g[0]) - 2) or g[i][j] == bg:
        return None
    if any(g[i + a][j + b] != bg for a in range(-2, 3) for b in range(-2, 3) if (a, b) not in _LATTICE):
        return None
    added = marks = 0
    for orbit in _ORBITS:
        held = [g[i + a][j + b] for a, b in orbit if g[i + a][j + b] != bg]
        if len(set(held)) > 1:
            return None
        marks += len(held)
        added += len(orbit) - len(held) if held else 0
    return added, -marks


def t_11852cab(g: Grid) -> Grid:
    """Each 5 by 5 pattern (an X lattice around a centre) is completed to look the same turned or
    mirrored: every cell takes the color its turned copies hold. Centres that add the fewest cells
    (then hold the most) are chosen first, their windows apart."""
    bg = most(g)
    h, w = len(g), len(g[0])
    scores = {(i, j): _centered(g, bg, i, j) for i in range(h) for j in range(w)}
    out = [list(r) for r in g]
    taken: set[tuple[int, int]] = set()
    for i, j in sorted((c for c, s in scores.items() if s), key=lambda c: (scores[c], c)):
        window = {(i + a, j + b) for a in range(-2, 3) for b in range(-2, 3)}
        if window & taken:
            continue
        taken |= window
        for orbit in _ORBITS:
            color = next((g[i + a][j + b] for a, b in orbit if g[i + a][j + b] != bg), bg)
            for a, b in orbit:
                out[i + a][j + b] = color
    return as_grid(out)


_TILES = ((8, ((0, 0), (0, 1), (1, 0), (1, 1))), (2, ((0, 0), (0, 1), (0, 2))), (2, ((0, 0), (1, 0), (2, 0))))
"""Color and cells of a 2 by 2 square and of a bar across and down, each from its first cell."""


def _tiling(cells: list[tuple[int, int]], budget: int = 50_000) -> list[tuple[int, tuple[tuple[int, int], ...]]] | None:
    """An exact cover of ``cells`` by squares and bars (squares tried first), or None (also when
    ``budget`` placements did not find one: a big shape that cannot be cut would take forever).

    The first cell still open, in reading order, is always a tile's first cell, so each step tries
    at most three tiles there."""
    todo = sorted(cells)
    left = set(todo)
    chosen: list[tuple[int, tuple[tuple[int, int], ...]]] = []
    tries = [budget]

    def search(k: int) -> bool:
        while k < len(todo) and todo[k] not in left:
            k += 1
        if k == len(todo):
            return True
        i, j = todo[k]
        for color, shape in _TILES:
            placed = tuple((i + a, j + b) for a, b in shape)
            if left.issuperset(placed) and tries[0] > 0:
                tries[0] -= 1
                left.difference_update(placed)
                chosen.append((color, placed))
                if search(k + 1):
                    return True
                chosen.pop()
                left.update(placed)
        return False

    return chosen if search(0) else None


def t_150deff5(g: Grid) -> Grid:
    """Each shape is cut into 2 by 2 squares (turned 8) and 1 by 3 bars (turned 2); a shape that
    cannot be cut so stays as it is."""
    bg = most(g)
    out = [list(r) for r in g]
    for cells in objects(g, bg, diagonal=False):
        for color, placed in _tiling(cells) or ():
            for i, j in placed:
                out[i][j] = color
    return as_grid(out)


def t_447fd412(g: Grid) -> Grid:
    """The two-colored shape is a template: its cells of the color found elsewhere too are the
    anchor; every solid block of that color elsewhere is the anchor scaled up, and gets the
    template's other cells scaled the same, painted around it over the background."""
    bg = most(g)
    parts = objects(g, bg)
    if not parts:
        return g
    template = max(parts, key=lambda c: (len({g[i][j] for i, j in c}), len(c)))
    inside = set(template)
    outside = Counter(v for i, row in enumerate(g) for j, v in enumerate(row) if v != bg and (i, j) not in inside)
    held = {g[i][j] for i, j in template}
    if len(held) < 2 or not held & set(outside):
        return g
    mark = max(held & set(outside), key=lambda v: (outside[v], -v))
    top, left, bottom, right = _box([(i, j) for i, j in template if g[i][j] == mark])
    ah, aw = bottom - top + 1, right - left + 1
    rest = [(i - top, j - left, g[i][j]) for i, j in template if g[i][j] != mark]
    marks = as_grid([[int(v == mark and (i, j) not in inside) for j, v in enumerate(row)] for i, row in enumerate(g)])
    h, w = len(g), len(g[0])
    out = [list(r) for r in g]
    for cells in objects(marks, 0, diagonal=False):
        r0, c0, r1, c1 = _box(cells)
        k = (r1 - r0 + 1) // ah
        if len(cells) != (r1 - r0 + 1) * (c1 - c0 + 1) or (k * ah, k * aw) != (r1 - r0 + 1, c1 - c0 + 1):
            continue  # not a solid block the anchor's shape
        for a, b, v in rest:
            for i in range(max(r0 + a * k, 0), min(r0 + (a + 1) * k, h)):
                for j in range(max(c0 + b * k, 0), min(c0 + (b + 1) * k, w)):
                    if out[i][j] == bg:
                        out[i][j] = v
    return as_grid(out)


TRANSFORMS: dict[str, Callable[[Grid], Grid]] = {
    "97a05b5b": t_97a05b5b,
    "6aa20dc0": t_6aa20dc0,
    "32597951": t_32597951,
    "6d58a25d": t_6d58a25d,
    "d07ae81c": t_d07ae81c,
    "a78176bb": t_a78176bb,
    "e9afcf9a": t_e9afcf9a,
    "ecdecbb3": t_ecdecbb3,
    "11852cab": t_11852cab,
    "150deff5": t_150deff5,
    "447fd412": t_447fd412,
}
