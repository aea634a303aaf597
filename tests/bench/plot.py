"""The latency-against-offered-load chart: one colour per configuration, p50 solid and p99
dashed, latency on a log scale."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

from tests.bench.png import GLYPH_H, Canvas, Color, text_width

_COLORS: list[Color] = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
                        (140, 86, 75), (227, 119, 194), (127, 127, 127)]
_GRID: Color = (225, 225, 225)
_AXIS: Color = (60, 60, 60)
_INK: Color = (20, 20, 20)

Point = tuple[float, float, float]
"""(offered requests/s, p50 ms, p99 ms)"""


def _nice_step(span: float, ticks: int = 6) -> float:
    raw = span / ticks
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def _label(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def latency_chart(path: Path, title: str, series: Mapping[str, Sequence[Point]], *,
                  width: int = 960, height: int = 560) -> None:
    """Write the chart of ``series`` (label -> points) to ``path`` as PNG."""
    canvas = Canvas(width, height)
    left, right, top, bottom = 78, 250, 44, 64
    plot_w, plot_h = width - left - right, height - top - bottom
    points = [p for pts in series.values() for p in pts if p[1] > 0 and p[2] > 0]
    canvas.text(left, 14, title, _INK, scale=2)
    if not points:
        canvas.text(left, top + 20, "no data", _INK)
        canvas.save(path)
        return
    x_max = max(p[0] for p in points) * 1.05
    y_lo = 10 ** math.floor(math.log10(min(min(p[1], p[2]) for p in points)))
    y_hi = 10 ** math.ceil(math.log10(max(max(p[1], p[2]) for p in points)))
    if y_hi <= y_lo:
        y_hi = y_lo * 10

    def px(rate: float) -> int:
        return left + round(plot_w * rate / x_max)

    def py(ms: float) -> int:
        frac = (math.log10(ms) - math.log10(y_lo)) / (math.log10(y_hi) - math.log10(y_lo))
        return top + plot_h - round(plot_h * frac)

    # grid and ticks
    step = _nice_step(x_max)
    tick = 0.0
    while tick <= x_max:
        x = px(tick)
        canvas.line(x, top, x, top + plot_h, _GRID)
        label = _label(tick)
        canvas.text(x - text_width(label) // 2, top + plot_h + 8, label, _INK)
        tick += step
    decade = y_lo
    while decade <= y_hi * 1.0001:
        for factor in (1, 2, 5):
            value = decade * factor
            if value > y_hi * 1.0001:
                break
            y = py(value)
            canvas.line(left, y, left + plot_w, y, _GRID)
            label = f"{value:g}"
            canvas.text(left - 8 - text_width(label), y - GLYPH_H // 2, label, _INK)
        decade *= 10
    canvas.line(left, top, left, top + plot_h, _AXIS)
    canvas.line(left, top + plot_h, left + plot_w, top + plot_h, _AXIS)
    x_title = "offered load (requests/s)"
    canvas.text(left + plot_w // 2 - text_width(x_title) // 2, height - 26, x_title, _INK)
    canvas.text_vertical(16, top + plot_h // 2 + text_width("latency (ms, log)") // 2, "latency (ms, log)", _INK)

    # series
    legend_y = top
    for index, (name, pts) in enumerate(series.items()):
        color = _COLORS[index % len(_COLORS)]
        ordered = sorted(p for p in pts if p[1] > 0 and p[2] > 0)
        for column, dash in ((1, 0), (2, 5)):
            for a, b in itertools.pairwise(ordered):
                canvas.line(px(a[0]), py(a[column]), px(b[0]), py(b[column]), color, width=2, dash=dash)
            for p in ordered:
                canvas.dot(px(p[0]), py(p[column]), color, 5)
        lx = left + plot_w + 16
        canvas.line(lx, legend_y + 3, lx + 22, legend_y + 3, color, width=2)
        canvas.text(lx + 28, legend_y, f"{name} p50", _INK)
        canvas.line(lx, legend_y + 15, lx + 22, legend_y + 15, color, width=2, dash=5)
        canvas.text(lx + 28, legend_y + 12, f"{name} p99", _INK)
        legend_y += 32
    canvas.save(path)
