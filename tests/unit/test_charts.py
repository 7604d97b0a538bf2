"""The dashboard's SVG charts: scaled, escaped, and honest about missing data."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from etl.reporting import charts
from etl.reporting.charts import Bar, BarRow, Cell, ParetoItem

SVG = "{http://www.w3.org/2000/svg}"


def _rects(svg: str) -> list[ET.Element]:
    return ET.fromstring(svg).findall(f".//{SVG}rect")


def test_bars_are_proportional_and_cut_at_the_edge() -> None:
    rows = [
        BarRow("half", (Bar(0.5, charts.BLUE, "50 %", "tip"),)),
        BarRow("full", (Bar(1.0, charts.BLUE, "100 %", "tip"),)),
        BarRow("over", (Bar(3.0, charts.RED, "300 %", "tip"),)),
    ]
    widths = [float(r.get("width")) for r in _rects(charts.hbar_chart(rows, scale_max=1.0, label="x"))]
    assert widths[0] * 2 == widths[1] == widths[2] > 0


def test_grouped_rows_draw_one_bar_per_series() -> None:
    rows = [BarRow("a", (Bar(0.9, charts.BLUE, "y", "t"), Bar(0.5, charts.TEAL, "f", "t")))]
    assert [r.get("fill") for r in _rects(charts.hbar_chart(rows, scale_max=1.0, label="x"))] == [charts.BLUE, charts.TEAL]


def test_text_is_escaped() -> None:
    rows = [BarRow("<script>alert(1)</script> & 齿轮箱", (Bar(0.2, charts.BLUE, "a<b", "'quoted'"),))]
    svg = charts.hbar_chart(rows, scale_max=1.0, label="it's")
    assert "<script>" not in svg
    root = ET.fromstring(svg)
    assert "<script>alert(1)</script> & 齿轮箱" in [t.text for t in root.iter(f"{SVG}text")]
    assert root.get("aria-label") == "it's"


def test_no_data_says_so() -> None:
    assert "No data" in charts.hbar_chart([], scale_max=1.0, label="x")
    assert "No data" in charts.heatmap([], [], {}, label="x")
    assert "No data" in charts.pareto_chart([], label="x")


def test_heat_colours_follow_the_oee_bands() -> None:
    assert [charts.heat_color(v) for v in (None, 0.2, 0.5, 0.85, 1.0, 2.5)] == [
        charts.GRID, charts.RED, charts.AMBER, charts.GREEN, charts.GREEN, charts.PURPLE,
    ]


def test_heatmap_leaves_missing_cells_blank() -> None:
    cells = {("WC-1", "11-19"): Cell(0.7, "70 %", "tip"), ("WC-2", "11-20"): Cell(0.3, "30 %", "tip")}
    rects = _rects(charts.heatmap(["WC-1", "WC-2"], ["11-19", "11-20"], cells, label="x"))
    assert [r.get("fill") for r in rects] == [charts.GREEN, charts.RED]


def test_pareto_line_climbs_to_the_top() -> None:
    items = [ParetoItem("S01", 800, 0.8889, "t"), ParetoItem("S02", 100, 1.0, "t")]
    svg = charts.pareto_chart(items, label="x", height=260)
    points = ET.fromstring(svg).find(f".//{SVG}polyline").get("points").split()
    ys = [float(p.split(",")[1]) for p in points]
    assert ys[0] > ys[1] == 12.0  # the top of the plot is 100 %
    heights = [float(r.get("height")) for r in _rects(svg)]
    assert heights[0] == pytest.approx(8 * heights[1], abs=0.5)  # drawn to 0.1 px


def test_legend_escapes_names() -> None:
    assert re.search(r"a &amp; b", charts.legend([(charts.BLUE, "a & b")]))
