"""The plant dashboard (驾驶舱): one static HTML page drawn from the warehouse's KPI views.

Order progress, OEE, yield, the scrap Pareto and inventory alerts, as inline SVG (etl.reporting.charts)
with no script and no external resource, so the file opens offline, from a share or a mail.
Every number on the page comes from a KPI view as it stands; the page only picks rows (the
latest days, the most urgent orders) and formats them. Periods are anchored on the data's own
latest day, not on today, so a demo or a late load still shows something.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, text

from etl.config.paths import REPO_ROOT
from etl.reporting import charts
from etl.reporting.charts import Bar, BarRow, Cell, ParetoItem

ORDERS_SHOWN = 20
YIELD_ROWS_SHOWN = 12
YIELD_DAYS = 7
ALERTS_SHOWN = 15
OEE_DAYS = 7
DELIVERY_DAYS = 30


@dataclass(frozen=True)
class Section:
    title: str
    note: str
    body: str


def _rows(conn: Connection, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in conn.execute(text(sql), params)]


def _number(value: Any) -> float:
    return float(value) if isinstance(value, (int, float, Decimal)) else 0.0


def _day(value: Any) -> date | None:
    """A DATE column as a date: PostgreSQL returns dates, SQLite ISO text."""
    if value is None or isinstance(value, date) and not isinstance(value, datetime):
        return value
    return date.fromisoformat(str(value)[:10])


def _moment(value: Any) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


def _percent(value: Any) -> str:
    return "–" if value is None else f"{_number(value) * 100:.1f} %"


def _quantity(value: Any) -> str:
    text_value = f"{_number(value):,.3f}".rstrip("0").rstrip(".")
    return text_value or "0"


def _latest_day(conn: Connection, view: str, column: str) -> date | None:
    # Identifiers are this module's own constants, never user input.
    return _day(conn.execute(text(f"SELECT MAX({column}) FROM {view}")).scalar())


def tiles(conn: Connection) -> str:
    """The headline numbers: open and overdue orders, on-time delivery, alerts, scrap cost."""
    orders = _rows(conn, "SELECT COUNT(*) AS open_orders, SUM(is_late) AS overdue FROM kpi_order_progress "
                         "WHERE status IN ('CRTD', 'REL')")[0]
    latest = _latest_day(conn, "kpi_on_time_delivery", "planned_end_date")
    delivery = {"on_time": None, "delivered": None}
    if latest is not None:
        since = (latest - timedelta(days=DELIVERY_DAYS - 1)).isoformat()
        delivery = _rows(conn, "SELECT SUM(on_time_orders) AS on_time, SUM(delivered_orders) AS delivered "
                               "FROM kpi_on_time_delivery WHERE planned_end_date >= :since", since=since)[0]
    alerts = conn.execute(text("SELECT COUNT(*) FROM kpi_inventory_shortfall WHERE is_short = 1")).scalar()
    scrap = conn.execute(text("SELECT SUM(scrap_cost) FROM kpi_scrap_pareto")).scalar()
    delivered = _number(delivery["delivered"])
    rate = _number(delivery["on_time"]) / delivered if delivered else None
    items = [
        ("Open orders", f"{_number(orders['open_orders']):.0f}", "released or created, not yet complete"),
        ("Overdue", f"{_number(orders['overdue']):.0f}", "open orders past their planned end"),
        ("On-time delivery", _percent(rate), f"completed orders, last {DELIVERY_DAYS} days of planned ends"),
        ("Inventory alerts", f"{_number(alerts):.0f}", "materials short for open orders"),
        ("Scrap cost", _quantity(round(_number(scrap), 0)), "at standard cost, all reported scrap"),
    ]
    return "<div class='tiles'>" + "".join(
        f"<div class='tile'><div class='tile-name'>{escape(name)}</div><div class='tile-value'>{escape(value)}</div>"
        f"<div class='tile-note'>{escape(note)}</div></div>"
        for name, value, note in items
    ) + "</div>"


def order_progress_section(conn: Connection) -> Section:
    """The most urgent released orders: reported output against plan, red when late."""
    rows = _rows(
        conn,
        "SELECT order_no, material_no, planned_qty, reported_good_qty, unit, progress, planned_end, is_late "
        "FROM kpi_order_progress WHERE status = 'REL' ORDER BY planned_end, order_no LIMIT :n",
        n=ORDERS_SHOWN,
    )
    bars = [
        BarRow(
            f"{r['order_no']} · {r['material_no']}",
            (Bar(
                _number(r["progress"]), charts.RED if r["is_late"] else charts.BLUE,
                f"{_percent(r['progress'])} · due {_moment(r['planned_end']):%m-%d %H:%M}",
                f"{r['order_no']}: {_quantity(r['reported_good_qty'])} of {_quantity(r['planned_qty'])} {r['unit']}",
            ),),
        )
        for r in rows
    ]
    body = charts.hbar_chart(bars, scale_max=1.0, reference=1.0, label="Order progress") + charts.legend(
        [(charts.BLUE, "on time"), (charts.RED, "past planned end")]
    )
    return Section(
        "Order progress", f"The {ORDERS_SHOWN} released orders due first: good output of the final operation "
        "against the planned quantity (kpi_order_progress).", body,
    )


def oee_section(conn: Connection) -> Section:
    """OEE per work center and day for the last days of the state log, with A / P / Q in tooltips."""
    latest = _latest_day(conn, "kpi_oee_daily", "production_date")
    if latest is None:
        return Section("OEE", "No equipment states loaded yet.", charts.empty())
    since = (latest - timedelta(days=OEE_DAYS - 1)).isoformat()
    rows = _rows(
        conn,
        "SELECT work_center, equipment_code, production_date, availability, performance, quality, oee "
        "FROM kpi_oee_daily WHERE production_date >= :since ORDER BY work_center, production_date",
        since=since,
    )
    days = sorted({day for r in rows if (day := _day(r["production_date"])) is not None})
    columns = [f"{d:%m-%d}" for d in days]
    labels = sorted({f"{r['work_center']} ({r['equipment_code']})" for r in rows})
    cells = {
        (f"{r['work_center']} ({r['equipment_code']})", f"{_day(r['production_date']):%m-%d}"): Cell(
            None if r["oee"] is None else _number(r["oee"]),
            _percent(r["oee"]),
            f"{r['work_center']} {_day(r['production_date'])}: availability {_percent(r['availability'])}, "
            f"performance {_percent(r['performance'])}, quality {_percent(r['quality'])}, OEE {_percent(r['oee'])}",
        )
        for r in rows
    }
    fast = sum(1 for r in rows if r["performance"] is not None and _number(r["performance"]) > 1)
    note = "Availability × performance × quality per work center and day (kpi_oee_daily); hover a cell for the parts."
    if fast:
        note += (f" {fast} work-center days ran faster than their routing standard (performance above 100 %): "
                 "review the standard times.")
    body = charts.heatmap(labels, columns, cells, label="OEE by work center and day") + charts.legend(
        [(charts.RED, "below 40 %"), (charts.AMBER, "40–65 %"), (charts.GREEN, "65–100 %"),
         (charts.PURPLE, "above 100 %: standard times to review")]
    )
    return Section("OEE", note, body)


def yield_section(conn: Connection) -> Section:
    """The lowest yields of the last days by material, work center and day, with first-pass yield."""
    latest = _latest_day(conn, "kpi_yield_daily", "production_date")
    if latest is None:
        return Section("Yield", "No confirmations loaded yet.", charts.empty())
    since = (latest - timedelta(days=YIELD_DAYS - 1)).isoformat()
    rows = _rows(
        conn,
        "SELECT production_date, material_no, work_center, unit, good_qty, scrap_qty, yield_rate, first_pass_yield "
        "FROM kpi_yield_daily WHERE production_date >= :since "
        "ORDER BY yield_rate, first_pass_yield, production_date, material_no, work_center LIMIT :n",
        since=since, n=YIELD_ROWS_SHOWN,
    )
    bars = [
        BarRow(f"{_day(r['production_date']):%m-%d} {r['material_no']} @ {r['work_center']}", (
            Bar(_number(r["yield_rate"]), charts.BLUE, f"yield {_percent(r['yield_rate'])}",
                f"{_quantity(r['good_qty'])} good, {_quantity(r['scrap_qty'])} scrap {r['unit']}"),
            Bar(_number(r["first_pass_yield"]), charts.TEAL, f"first pass {_percent(r['first_pass_yield'])}",
                "share of order operations without scrap"),
        ))
        for r in rows
    ]
    body = charts.hbar_chart(bars, scale_max=1.0, label="Yield") + charts.legend(
        [(charts.BLUE, "yield = good / (good + scrap)"), (charts.TEAL, "first-pass yield = lots without scrap / lots")]
    )
    return Section("Yield", f"The {YIELD_ROWS_SHOWN} lowest yields of the last {YIELD_DAYS} days by day, material "
                   "and work center (kpi_yield_daily).", body)


def scrap_section(conn: Connection) -> Section:
    """Scrap cost by reason, largest first, with the cumulative share."""
    rows = _rows(
        conn,
        "SELECT scrap_reason, scrap_reports, scrap_cost, share, cumulative_share FROM kpi_scrap_pareto "
        "ORDER BY pareto_rank",
    )
    items = [
        ParetoItem(
            str(r["scrap_reason"]), _number(r["scrap_cost"]), _number(r["cumulative_share"]),
            f"{r['scrap_reason']}: {_quantity(r['scrap_cost'])} in {r['scrap_reports']} reports, "
            f"{_percent(r['share'])} of scrap cost (cumulative {_percent(r['cumulative_share'])})",
        )
        for r in rows
    ]
    body = charts.pareto_chart(items, label="Scrap Pareto") + charts.legend(
        [(charts.BLUE, "scrap cost at standard cost"), (charts.RED, "cumulative share")]
    )
    return Section("Scrap by reason (Pareto)", "Reasons left of where the line crosses 80 % cause most of the "
                   "scrap cost (kpi_scrap_pareto).", body)


def inventory_section(conn: Connection) -> Section:
    """Materials whose stock does not cover the open orders' requirements, least covered first."""
    rows = _rows(
        conn,
        "SELECT plant_code, material_no, unit, open_orders, open_requirement_qty, stock_qty, shortfall_qty, coverage "
        "FROM kpi_inventory_shortfall WHERE is_short = 1 ORDER BY coverage, plant_code, material_no LIMIT :n",
        n=ALERTS_SHOWN,
    )
    bars = [
        BarRow(f"{r['material_no']} · plant {r['plant_code']}", (Bar(
            _number(r["coverage"]), charts.RED if _number(r["coverage"]) < 0.5 else charts.AMBER,
            f"covers {_percent(r['coverage'])}, short {_quantity(r['shortfall_qty'])} {r['unit']}",
            f"{_quantity(r['stock_qty'])} {r['unit']} in stock for {_quantity(r['open_requirement_qty'])} "
            f"{r['unit']} open in {r['open_orders']} orders",
        ),))
        for r in rows
    ]
    body = charts.hbar_chart(bars, scale_max=1.0, reference=1.0, label="Inventory alerts")
    return Section("Inventory alerts", "Stock on hand against what open orders still need "
                   "(kpi_inventory_shortfall); 100 % would cover every open requirement.", body)


STYLE = """
body{margin:0;background:#f4f6f8;color:#22272e;font:14px/1.45 system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif}
header{background:#1f3b57;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8}main{padding:18px 28px;display:grid;gap:18px;max-width:1280px}
.tiles{display:grid;grid-template-columns:repeat(5,1fr);gap:12px}
.tile{background:#fff;border-radius:8px;padding:12px 14px;box-shadow:0 1px 2px #0001}
.tile-name{font-size:12px;color:#5b6470;text-transform:uppercase;letter-spacing:.04em}
.tile-value{font-size:26px;font-weight:600;margin:2px 0}.tile-note{font-size:12px;color:#5b6470}
section{background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 2px #0001}
section h2{margin:0 0 4px;font-size:17px}section p.note{margin:0 0 10px;color:#5b6470}
.legend{margin-top:6px;font-size:12px;color:#5b6470}.swatch{display:inline-block;width:10px;height:10px;
margin:0 5px 0 14px;border-radius:2px;vertical-align:middle}.empty{color:#8a8f98;font-style:italic}
footer{padding:0 28px 24px;color:#8a8f98;font-size:12px}
"""


def page(sections: Sequence[Section], headline: str, generated_at: datetime, as_of: datetime | None) -> str:
    """The whole HTML document: self-contained, UTF-8, no script."""
    data_as_of = f"{as_of:%Y-%m-%d %H:%M}" if as_of else "no shop-floor data yet"
    blocks = "".join(
        f"<section><h2>{escape(s.title)}</h2><p class='note'>{escape(s.note)}</p>{s.body}</section>"
        for s in sections
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'><title>Plant dashboard</title>"
        f"<style>{STYLE}</style></head><body>"
        f"<header><h1>Plant dashboard · 生产驾驶舱</h1><p>Latest shop-floor report {escape(data_as_of)} "
        f"(plant time) · generated {generated_at:%Y-%m-%d %H:%M} UTC</p></header>"
        f"<main>{headline}{blocks}</main>"
        "<footer>erp-mes-sync · from the warehouse's KPI views; formulas in sql/warehouse/ and the README.</footer>"
        "</body></html>"
    )


def render_dashboard(conn: Connection, generated_at: datetime) -> str:
    """The dashboard's HTML from the KPI views on ``conn``."""
    as_of = _moment(conn.execute(text("SELECT MAX(end_time) FROM fact_operation_confirmation")).scalar())
    sections = [
        order_progress_section(conn), oee_section(conn), yield_section(conn), scrap_section(conn),
        inventory_section(conn),
    ]
    return page(sections, tiles(conn), generated_at, as_of)


def write_dashboard(engine: Engine, path: Path, generated_at: datetime | None = None) -> Path:
    """Write the dashboard of the warehouse at ``engine`` to ``path`` (folders created);
    returns the absolute path. Reads only; the warehouse must have been built."""
    moment = generated_at or datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    with engine.connect() as conn:
        html = render_dashboard(conn, moment)
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path


DEFAULT_DASHBOARD = REPO_ROOT / ".demo" / "dashboard.html"
