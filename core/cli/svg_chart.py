"""Small dependency-free SVG line and bar charts (for the workspace report)."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf")


def downsample(points: list[tuple[float, float]], max_points: int = 600) -> list[tuple[float, float]]:
    """Keep the curve's shape: min and max of each bucket, in step order."""
    if len(points) <= max_points:
        return points
    bucket = math.ceil(len(points) / (max_points // 2))
    out: list[tuple[float, float]] = []
    for i in range(0, len(points), bucket):
        chunk = points[i:i + bucket]
        lo = min(chunk, key=lambda p: p[1])
        hi = max(chunk, key=lambda p: p[1])
        out.extend(sorted({lo, hi}))
    return out


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 5, 10) if m * mag >= raw), default=raw)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def _fmt(v: float) -> str:
    if v == 0:
        return "0"
    if abs(v) >= 1e4 or abs(v) < 1e-3:
        return f"{v:.1e}"
    return f"{v:.4g}"


def _frame(width: int, height: int, title: str, box: tuple[int, int, int, int]) -> list[str]:
    x, y, w, h = box
    return [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
            f'<rect width="{width}" height="{height}" fill="white"/>',
            f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13">{escape(title)}</text>',
            f'<rect x="{x}" y="{y}" width="{w}" height="{h}" fill="none" stroke="#999"/>']


def bar_chart(groups: dict[str, dict[str, float]], *, title: str = "", top: float = 1.0, width: int = 640,
              height: int = 300) -> str:
    """An SVG document of grouped bars from 0 to ``top``: one group per key of ``groups`` (e.g. a
    metric), one bar per inner key (e.g. ``before``/``after``) with its value written above it."""
    pad_l, pad_r, pad_t, pad_b = 40, 16, 28, 40
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    names = list(dict.fromkeys(k for g in groups.values() for k in g))
    parts = _frame(width, height, title, (pad_l, pad_t, pw, ph))
    for t in _ticks(0.0, top):
        y = pad_t + (1 - t / top) * ph
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    slot = pw / max(1, len(groups))
    bw = slot * 0.7 / max(1, len(names))
    for gi, (group, vals) in enumerate(groups.items()):
        gx = pad_l + gi * slot + slot * 0.15
        for i, name in enumerate(names):
            if name not in vals:
                continue
            v = min(max(vals[name], 0.0), top)
            x, h = gx + i * bw, v / top * ph
            parts.append(f'<rect x="{x:.1f}" y="{pad_t + ph - h:.1f}" width="{bw * 0.9:.1f}" height="{h:.1f}" '
                         f'fill="{PALETTE[i % len(PALETTE)]}"/>')
            parts.append(f'<text x="{x + bw * 0.45:.1f}" y="{pad_t + ph - h - 3:.1f}" text-anchor="middle">'
                         f'{vals[name]:.2f}</text>')
        parts.append(f'<text x="{gx + slot * 0.35:.1f}" y="{pad_t + ph + 14}" text-anchor="middle">'
                     f'{escape(group)}</text>')
    for i, name in enumerate(names):
        parts.append(f'<text x="{pad_l + 8}" y="{pad_t + 14 + 13 * i}" fill="{PALETTE[i % len(PALETTE)]}">'
                     f'{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def line_chart(series: dict[str, list[tuple[float, float]]], *, title: str = "", xlabel: str = "step",
               width: int = 640, height: int = 320) -> str:
    """An SVG document plotting each named series of (x, y) points."""
    pad_l, pad_r, pad_t, pad_b = 64, 16, 28, 40
    pts = {k: downsample([(float(x), float(y)) for x, y in v if math.isfinite(y)]) for k, v in series.items()}
    pts = {k: v for k, v in pts.items() if v}
    xs = [x for v in pts.values() for x, _ in v] or [0.0, 1.0]
    ys = [y for v in pts.values() for _, y in v] or [0.0, 1.0]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b

    def sx(x: float) -> float:
        return pad_l + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return pad_t + (1 - (y - y0) / (y1 - y0)) * ph

    parts = _frame(width, height, title, (pad_l, pad_t, pw, ph))
    for t in _ticks(y0, y1):
        y = sy(t)
        parts.append(f'<line x1="{pad_l}" x2="{pad_l + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{pad_l - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(x0, x1):
        x = sx(t)
        parts.append(f'<text x="{x:.1f}" y="{pad_t + ph + 14}" text-anchor="middle">{_fmt(t)}</text>')
    parts.append(f'<text x="{pad_l + pw / 2}" y="{height - 6}" text-anchor="middle">{escape(xlabel)}</text>')
    for i, (name, v) in enumerate(pts.items()):
        color = PALETTE[i % len(PALETTE)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in v)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{path}"/>')
        parts.append(f'<text x="{pad_l + 8}" y="{pad_t + 14 + 13 * i}" fill="{color}">{escape(name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)
