"""More of our own ARC programs (see :mod:`~llmctl.core.rewards.bootcamp.arc_tasks`): tasks that
place, stamp or complete shapes. Each was written from the demonstration pairs in the shared rows'
prompts and checked against them and the oracle's gold answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from llmctl.core.rewards.bootcamp.arc_tasks import Grid, as_grid, crop, mirror_cols, most, objects, rotate_cw


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
    for r in range(len(box) - ph + 1):
        for c in range(len(box[0]) - pw + 1):
            if all(box[r + i][c + j] == (bg if v == color else color)
                   for i, row in enumerate(piece) for j, v in enumerate(row)):
                for i, row in enumerate(piece):
                    box[r + i][c:c + pw] = [color if v == color else v for v in row]
                return True
    return False


TRANSFORMS: dict[str, Callable[[Grid], Grid]] = {
    "97a05b5b": t_97a05b5b,
}
