"""Inline SVG charts for the dashboard: pure functions from numbers to markup.

No scripts and nothing fetched: a chart is a string of SVG the page embeds, so the dashboard
opens offline and from a mail attachment. Every text is escaped. Each mark carries a
``<title>``, which browsers show as a tooltip.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

BLUE = "#2f6fb0"
TEAL = "#2a9d8f"
RED = "#c8553d"
AMBER = "#e9a03b"
GREEN = "#3c9a5f"
GREY = "#8a8f98"
GRID = "#e3e6ea"
TEXT = "#22272e"

FONT = "font-family='system-ui, \"Noto Sans CJK SC\", \"Microsoft YaHei\", sans-serif' font-size='12'"


@dataclass(frozen=True)
class Bar:
    """One bar: its length, colour, the text beside it and its tooltip."""

    value: float
    color: str
    text: str
    title: str


@dataclass(frozen=True)
class BarRow:
    """A labelled row of one or more bars (several bars make a grouped chart)."""

    label: str
    bars: tuple[Bar, ...]


@dataclass(frozen=True)
class Cell:
    """One heatmap cell: the value that picks its colour, its text and tooltip."""

    value: float | None
    text: str
    title: str


@dataclass(frozen=True)
class ParetoItem:
    label: str
    value: float
    cumulative_share: float
    title: str


def empty(message: str = "No data yet.") -> str:
    """What a chart shows when it has nothing to draw."""
    return f"<p class='empty'>{escape(message)}</p>"


def legend(entries: Sequence[tuple[str, str]]) -> str:
    """A legend line of (colour, name) swatches, as HTML."""
    items = "".join(
        f"<span class='swatch' style='background:{color}'></span>{escape(name)}" for color, name in entries
    )
    return f"<div class='legend'>{items}</div>"


def _svg(width: int, height: int, body: str, label: str) -> str:
    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 {width} {height}' width='100%' "
        f"role='img' aria-label='{escape(label)}' {FONT}>{body}</svg>"
    )


def hbar_chart(
    rows: Sequence[BarRow], *, scale_max: float, label: str, width: int = 760, label_width: int = 230,
    bar_height: int = 12, reference: float | None = None,
) -> str:
    """Horizontal bars, one group per row, scaled so ``scale_max`` fills the plot; longer bars
    are cut at the edge (their text still says the value). ``reference`` draws a dashed line
    at that value (e.g. 100 %)."""
    if not rows:
        return empty()
    text_width = 170
    plot = width - label_width - text_width
    group = bar_height * max(len(r.bars) for r in rows) + 10
    height = group * len(rows) + 8
    scale = plot / scale_max if scale_max > 0 else 0.0
    parts = []
    for i, row in enumerate(rows):
        top = 4 + i * group
        parts.append(
            f"<text x='{label_width - 8}' y='{top + group / 2:.1f}' text-anchor='end' dominant-baseline='middle' "
            f"fill='{TEXT}'>{escape(row.label)}</text>"
        )
        for j, bar in enumerate(row.bars):
            y = top + 5 + j * bar_height
            length = max(0.0, min(bar.value * scale, plot))
            parts.append(
                f"<rect x='{label_width}' y='{y}' width='{length:.1f}' height='{bar_height - 2}' fill='{bar.color}'>"
                f"<title>{escape(bar.title)}</title></rect>"
                f"<text x='{label_width + length + 6:.1f}' y='{y + bar_height / 2:.1f}' dominant-baseline='middle' "
                f"fill='{TEXT}'>{escape(bar.text)}</text>"
            )
    if reference is not None and scale_max > 0:
        x = label_width + min(reference * scale, plot)
        parts.append(
            f"<line x1='{x:.1f}' y1='0' x2='{x:.1f}' y2='{height}' stroke='{GREY}' stroke-dasharray='4 3'/>"
        )
    return _svg(width, height, "".join(parts), label)


PURPLE = "#7b5ea7"


def heat_color(value: float | None) -> str:
    """Red below 40 %, amber below 65 %, green up to 100 % (the usual OEE bands); purple above
    100 %, which only wrong standard times produce; grey when unknown."""
    if value is None:
        return GRID
    if value > 1.0:
        return PURPLE
    if value < 0.40:
        return RED
    if value < 0.65:
        return AMBER
    return GREEN


def heatmap(
    row_labels: Sequence[str], column_labels: Sequence[str], cells: dict[tuple[str, str], Cell], *, label: str,
    label_width: int = 210, cell_width: int = 78, cell_height: int = 26,
) -> str:
    """A grid of coloured cells, rows by columns; a missing cell stays blank."""
    if not row_labels or not column_labels:
        return empty()
    width = label_width + cell_width * len(column_labels) + 4
    height = 22 + cell_height * len(row_labels) + 4
    parts = [
        f"<text x='{label_width + cell_width * (k + 0.5):.1f}' y='14' text-anchor='middle' fill='{TEXT}'>"
        f"{escape(column)}</text>"
        for k, column in enumerate(column_labels)
    ]
    for i, row in enumerate(row_labels):
        y = 22 + i * cell_height
        parts.append(
            f"<text x='{label_width - 8}' y='{y + cell_height / 2:.1f}' text-anchor='end' dominant-baseline='middle' "
            f"fill='{TEXT}'>{escape(row)}</text>"
        )
        for k, column in enumerate(column_labels):
            cell = cells.get((row, column))
            if cell is None:
                continue
            x = label_width + k * cell_width
            parts.append(
                f"<rect x='{x + 1}' y='{y + 1}' width='{cell_width - 2}' height='{cell_height - 2}' rx='3' "
                f"fill='{heat_color(cell.value)}'><title>{escape(cell.title)}</title></rect>"
                f"<text x='{x + cell_width / 2:.1f}' y='{y + cell_height / 2:.1f}' text-anchor='middle' "
                f"dominant-baseline='middle' fill='#fff' pointer-events='none'>{escape(cell.text)}</text>"
            )
    return _svg(width, height, "".join(parts), label)


def pareto_chart(
    items: Sequence[ParetoItem], *, label: str, threshold: float = 0.8, width: int = 760, height: int = 260,
) -> str:
    """Bars in the given (largest first) order on the left axis, the cumulative share as a line
    on the right axis (0-100 %), and a dashed line at ``threshold``: the vital few sit left of
    where the line crosses it."""
    if not items:
        return empty()
    left, right, top, bottom = 60, 50, 12, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    peak = max(item.value for item in items) or 1.0
    slot = plot_w / len(items)
    parts = [
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='{GREY}'/>",
        f"<text x='{left - 6}' y='{top + 4}' text-anchor='end' fill='{TEXT}'>{escape(_compact(peak))}</text>",
        f"<text x='{left + plot_w + 6}' y='{top + 4}' fill='{TEXT}'>100 %</text>",
    ]
    threshold_y = top + plot_h * (1 - threshold)
    parts.append(
        f"<line x1='{left}' y1='{threshold_y:.1f}' x2='{left + plot_w}' y2='{threshold_y:.1f}' stroke='{GREY}' "
        f"stroke-dasharray='4 3'/><text x='{left + plot_w + 6}' y='{threshold_y + 4:.1f}' fill='{GREY}'>"
        f"{threshold * 100:.0f} %</text>"
    )
    points = []
    for k, item in enumerate(items):
        bar_h = plot_h * item.value / peak
        x = left + k * slot
        parts.append(
            f"<rect x='{x + slot * 0.15:.1f}' y='{top + plot_h - bar_h:.1f}' width='{slot * 0.7:.1f}' "
            f"height='{bar_h:.1f}' fill='{BLUE}'><title>{escape(item.title)}</title></rect>"
            f"<text x='{x + slot / 2:.1f}' y='{top + plot_h + 16}' text-anchor='middle' fill='{TEXT}'>"
            f"{escape(item.label)}</text>"
        )
        points.append(f"{x + slot / 2:.1f},{top + plot_h * (1 - item.cumulative_share):.1f}")
    parts.append(f"<polyline points='{' '.join(points)}' fill='none' stroke='{RED}' stroke-width='2'/>")
    parts += [f"<circle cx='{p.split(',')[0]}' cy='{p.split(',')[1]}' r='3' fill='{RED}'/>" for p in points]
    return _svg(width, height, "".join(parts), label)


def _compact(value: float) -> str:
    """A short axis number: 1234567 -> 1.2M, 12345 -> 12k."""
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= limit:
            return f"{value / limit:.1f}{suffix}"
    return f"{value:.0f}"


def daily_columns(
    day_labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float]]], *, label: str,
    width: int = 420, height: int = 110,
) -> str:
    """A small grouped column chart, one group per day: ``series`` is (colour, name, values per
    day). Every series shares the scale of the largest value; a tooltip gives each exact value."""
    if not day_labels or not series:
        return empty()
    left, bottom, top = 44, 18, 8
    plot_w, plot_h = width - left - 4, height - top - bottom
    peak = max((v for _, _, values in series for v in values), default=0.0) or 1.0
    slot = plot_w / len(day_labels)
    bar_w = slot * 0.8 / len(series)
    parts = [
        f"<line x1='{left}' y1='{top + plot_h}' x2='{left + plot_w}' y2='{top + plot_h}' stroke='{GREY}'/>",
        f"<text x='{left - 4}' y='{top + 8}' text-anchor='end' fill='{TEXT}'>{escape(_compact(peak))}</text>",
        f"<text x='{left - 4}' y='{top + plot_h}' text-anchor='end' fill='{TEXT}'>0</text>",
    ]
    for k, day in enumerate(day_labels):
        x0 = left + k * slot + slot * 0.1
        for j, (color, name, values) in enumerate(series):
            value = values[k]
            bar_h = plot_h * value / peak
            parts.append(
                f"<rect x='{x0 + j * bar_w:.1f}' y='{top + plot_h - bar_h:.1f}' width='{max(bar_w - 1, 1):.1f}' "
                f"height='{bar_h:.1f}' fill='{color}'><title>{escape(f'{day}: {value:,.0f} {name}')}</title></rect>"
            )
        if (len(day_labels) - 1 - k) % max(1, len(day_labels) // 7) == 0:  # always label the latest day
            parts.append(
                f"<text x='{left + k * slot + slot / 2:.1f}' y='{height - 4}' text-anchor='middle' fill='{TEXT}' "
                f"font-size='10'>{escape(day)}</text>"
            )
    return _svg(width, height, "".join(parts), label)
