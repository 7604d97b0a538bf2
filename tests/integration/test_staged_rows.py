"""Document numbers, lines and delta postings are written back into staging set-based: a run
issues the same statements for 4 documents as for 80. Per-row updates of staging grew the run
with the square of the batch; counting statements shows it without timing anything."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event

from tests.integration.product_schemas import GOODS_MOVEMENT, ODOO, Site, T, make_site, odoo_order_with_lines_flow, write_orders

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql", "mariadb"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    yield from make_site(request, request.param)


def _statements(site: Site, name: str) -> int:
    """Statements the database runs for one run of flow ``name``: an executemany of an UPDATE or
    DELETE counts once per row (the driver sends them one by one), any other call once."""
    count = 0

    def counted(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, executemany: bool) -> None:
        nonlocal count
        per_row = executemany and statement.lstrip().upper().startswith(("UPDATE", "DELETE"))
        count += len(parameters) if per_row else 1

    event.listen(site.target, "before_cursor_execute", counted)
    try:
        site.run(name)
    finally:
        event.remove(site.target, "before_cursor_execute", counted)
    return count


def _orders(site: Site, first: int, count: int, minutes: int) -> None:
    numbers = [f"WO-{i:04d}" for i in range(first, first + count)]
    write_orders(site, [(n, "FG-1", "5") for n in numbers], at=T + timedelta(minutes=minutes))
    site.write(site.source, "mes_order_component", [
        {"order_no": n, "item_no": item, "material_no": "M-A", "quantity": Decimal("2"), "unit": "pcs"}
        for n in numbers for item in (10, 20)
    ])


def test_numbered_documents_with_lines_take_as_many_statements_for_80_as_for_4(site: Site) -> None:
    site.create(site.target, ODOO)
    site.add(odoo_order_with_lines_flow())
    _orders(site, 1, 3, 0)
    site.run("odoo_orders")  # the first run into an empty target takes a shorter path
    _orders(site, 100, 4, 1)
    few = _statements(site, "odoo_orders")
    _orders(site, 200, 80, 2)
    many = _statements(site, "odoo_orders")
    assert few == many
    assert site.scalar("SELECT count(*) FROM mrp_production") == 87
    assert site.scalar("SELECT count(*) FROM stock_move") == 174
    assert site.scalar("SELECT max(name) FROM mrp_production") == "WH/MO/00096"


def test_delta_postings_take_as_many_statements_for_120_reports_as_for_6(site: Site) -> None:
    site.create(site.target, GOODS_MOVEMENT)
    site.add({
        "flow": "fg_receipts",
        "source": {"connection": "mes_db", "table": "mes_progress"},
        "target": {"connection": "erp_db", "table": "if_goods_movement"},
        "key": ["posting_key"],
        "cursor": {"column": "updated_at"},
        "load": {"mode": "append"},
        "columns": [
            {"target": "posting_key", "expr": "concat('MES-', report_id)"},
            {"target": "order_no", "source": "order_no"},
            {"target": "material_no", "source": "material_no"},
            {"target": "movement_type", "value": "101"},
            {"target": "quantity", "source": "qty_done_cumulative", "delta": {
                "group_by": ["order_no", "material_no"], "negative": "post",
            }},
        ],
    })

    def reports(first: int, count: int, minutes: int) -> None:
        # Per order: a count up (posted), the same count again (nothing to post), a count down
        # (a reversal; quarantined ones would be retried by every later run).
        site.write(site.source, "mes_progress", [{
            "report_id": i, "order_no": f"WO-{i // 3}", "material_no": "FG-1",
            "qty_done_cumulative": Decimal((5, 5, 4)[i % 3] + minutes), "updated_at": T + timedelta(minutes=minutes),
        } for i in range(first, first + count)])

    reports(0, 3, 0)
    site.run("fg_receipts")
    reports(300, 6, 10)
    few = _statements(site, "fg_receipts")
    reports(600, 120, 20)
    many = _statements(site, "fg_receipts")
    assert few == many
    assert site.scalar("SELECT count(*) FROM if_goods_movement WHERE order_no LIKE 'WO-2%'") == 40 * 2
