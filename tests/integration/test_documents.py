"""Header-and-lines documents: an order and its components written together, lines pointing at
the header's generated id, a failing line sending its whole document to quarantine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from etl.core.errors import StepFailed
from etl.sync.pipeline_tables import quarantine
from tests.integration.product_schemas import (
    ERPNEXT,
    ODOO,
    Site,
    erpnext_receipt_flow,
    make_site,
    odoo_order_with_lines_flow,
    write_orders,
)

pytestmark = pytest.mark.slow

LATER = datetime(2026, 11, 20, 9, 0)


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    yield from make_site(request, request.param)


def _components(site: Site, rows: list[tuple[str, int, str | None, str, str]]) -> None:
    """Write MES order components (order_no, item_no, material_no, quantity, unit)."""
    site.write(site.source, "mes_order_component", [
        {"order_no": o, "item_no": i, "material_no": m, "quantity": Decimal(q), "unit": u} for o, i, m, q, u in rows
    ])


def _waiting(site: Site) -> list[tuple[str, str]]:
    with site.target.connect() as conn:
        return [tuple(r) for r in conn.execute(
            select(quarantine.c.source_key, quarantine.c.reason).where(quarantine.c.status == "waiting").order_by(quarantine.c.source_key)
        )]


def _moves(site: Site) -> list[tuple[Any, ...]]:
    return [(m["id"], m["raw_material_production_id"], m["line_no"], m["product_ref"], m["product_uom_qty"], m["product_uom"])
            for m in site.rows("stock_move", "id")]


def _setup_odoo(site: Site) -> None:
    site.create(site.target, ODOO)
    site.add(odoo_order_with_lines_flow())
    write_orders(site, [("WO-1", "FG-1", "5"), ("WO-2", "FG-2", "1"), ("WO-3", "FG-3", "2")])
    _components(site, [
        ("WO-1", 10, "M-A", "2500", "g"),
        ("WO-1", 20, "M-B", "3", "pcs"),
        ("WO-2", 10, "M-A", "1", "pcs"),
        ("WO-2", 20, "M-C", "4", "oz"),  # no such unit in the crosswalk: WO-2 must wait whole
    ])


def test_a_document_is_written_whole_with_lines_pointing_at_the_generated_id(site: Site) -> None:
    _setup_odoo(site)
    first = site.run("odoo_orders")
    assert first.record.options["transform"] == "python"
    headers = {r["origin"]: (r["id"], r["name"]) for r in site.rows("mrp_production", "id")}
    assert headers == {"WO-1": (1, "WH/MO/00010"), "WO-3": (2, "WH/MO/00011")}  # no number drawn for WO-2
    assert _moves(site) == [
        (1, 1, 10, "M-A", Decimal("2.500"), "KG"),
        (2, 1, 20, "M-B", Decimal("3.000"), "PC"),
    ]
    ((key, reason),) = _waiting(site)
    assert key == "order_no=WO-2"
    assert reason.startswith("document not loaded: line item_no=20: ") and "'oz'" in reason
    assert first.record.counts.rows_loaded == 4  # two headers, two lines
    assert first.record.counts.rows_new_in_quarantine == 1

    again = site.run("odoo_orders", full_refresh=True)
    assert again.record.counts.rows_loaded == 0
    assert again.record.counts.rows_new_in_quarantine == 0
    assert len(site.rows("mrp_production", "id")) == 2 and len(_moves(site)) == 2


def test_lines_are_updated_in_place_and_a_fixed_document_leaves_quarantine(site: Site) -> None:
    _setup_odoo(site)
    site.run("odoo_orders")
    site.execute(site.source, [
        "UPDATE mes_order_component SET quantity = 7 WHERE order_no = 'WO-1' AND item_no = 20",
        "UPDATE mes_order_component SET unit = 'pcs' WHERE order_no = 'WO-2' AND item_no = 20",
    ])
    # The header's cursor moves with its lines; WO-2 is read afresh and retried from quarantine.
    write_orders(site, [("WO-1", "FG-1", "5"), ("WO-2", "FG-2", "1")], at=LATER)

    fixed = site.run("odoo_orders")
    assert fixed.record.counts.rows_released == 1 and _waiting(site) == []
    headers = {r["origin"]: r["id"] for r in site.rows("mrp_production", "id")}
    # Ids are the target's: MariaDB may leave gaps after a bulk INSERT ... SELECT.
    assert headers["WO-1"] == 1 and headers["WO-3"] == 2 and headers["WO-2"] > 2
    moves = _moves(site)
    assert moves[:2] == [
        (1, 1, 10, "M-A", Decimal("2.500"), "KG"),
        (2, 1, 20, "M-B", Decimal("7.000"), "PC"),  # same row, new quantity
    ]
    assert [m[1:] for m in moves[2:]] == [
        (headers["WO-2"], 10, "M-A", Decimal("1.000"), "PC"),
        (headers["WO-2"], 20, "M-C", Decimal("4.000"), "PC"),
    ]
    assert site.run("odoo_orders", full_refresh=True).record.counts.rows_loaded == 0
    assert len(_moves(site)) == 4


def test_a_crash_after_the_merge_leaves_neither_header_nor_lines(site: Site) -> None:
    _setup_odoo(site)

    def crash(step: str) -> None:
        if step == "write_ledger":
            raise RuntimeError("injected crash after headers and lines were merged")

    with pytest.raises(StepFailed):
        site.run("odoo_orders", hook=crash)
    assert site.rows("mrp_production", "id") == [] and _moves(site) == [] and _waiting(site) == []
    site.run("odoo_orders")
    assert len(site.rows("mrp_production", "id")) == 2 and len(_moves(site)) == 2


def test_a_line_key_given_twice_sends_the_document_to_quarantine(site: Site) -> None:
    site.create(site.target, ODOO)
    flow = odoo_order_with_lines_flow()
    flow["lines"]["key"] = ["product_ref"]
    site.add(flow)
    write_orders(site, [("WO-1", "FG-1", "5"), ("WO-2", "FG-2", "1")])
    _components(site, [("WO-1", 10, "M-A", "1", "pcs"), ("WO-1", 20, "M-A", "2", "pcs"), ("WO-2", 10, "M-A", "1", "pcs")])
    site.run("odoo_orders")
    assert [r["origin"] for r in site.rows("mrp_production", "id")] == ["WO-2"]
    ((key, reason),) = _waiting(site)
    assert (key, reason) == ("order_no=WO-1", "document not loaded: line key (product_ref=M-A) appears more than once in the document")


@pytest.mark.parametrize("site", ["mariadb"], indirect=True)
def test_erpnext_lines_point_at_the_document_name(site: Site) -> None:
    site.create(site.target, ERPNEXT)
    site.add({
        **erpnext_receipt_flow(),
        "lines": {
            "source": {"table": "mes_order_component", "parent_column": "order_no", "header_column": "order_no"},
            "target": {"table": "tabStock Entry Detail", "header_id_column": "parent"},
            "key": ["idx"],
            "columns": [
                {"target": "name", "expr": "concat(order_no, '-', item_no)"},
                {"target": "parenttype", "value": "Stock Entry"},
                {"target": "idx", "source": "item_no"},
                {"target": "item_code", "source": "material_no"},
                {"target": "qty", "source": "quantity"},
                {"target": "uom", "source": "unit", "crosswalk": "unit"},
            ],
        },
    })
    write_orders(site, [("WO-1", "FG-1", "5"), ("WO-2", "FG-2", "1")])
    _components(site, [("WO-1", 10, "M-A", "2", "pcs"), ("WO-1", 20, "M-B", "3", "pcs"), ("WO-2", 10, None, "1", "pcs")])
    site.run("erpnext_receipts")
    assert [(r["name"], r["custom_mes_ref"]) for r in site.rows("tabStock Entry", "name")] == [("MAT-STE-2026-00042", "WO-1")]
    details = [(d["name"], d["parent"], d["parenttype"], d["idx"], d["item_code"]) for d in site.rows("tabStock Entry Detail", "idx")]
    assert details == [
        ("WO-1-10", "MAT-STE-2026-00042", "Stock Entry", 10, "M-A"),
        ("WO-1-20", "MAT-STE-2026-00042", "Stock Entry", 20, "M-B"),
    ]
    ((key, reason),) = _waiting(site)
    assert key == "order_no=WO-2" and "item_code is NULL" in reason
    assert site.run("erpnext_receipts", full_refresh=True).record.counts.rows_loaded == 0
    assert site.scalar('SELECT current FROM "tabSeries"') == 42


def test_lines_gone_from_the_source_are_kept_or_deleted_as_configured(site: Site) -> None:
    site.create(site.target, ODOO)
    flow = odoo_order_with_lines_flow()
    site.add(flow)
    write_orders(site, [("WO-1", "FG-1", "5"), ("WO-2", "FG-2", "1")])
    _components(site, [("WO-1", 10, "M-A", "1", "pcs"), ("WO-1", 20, "M-B", "2", "pcs"), ("WO-2", 10, "M-A", "1", "pcs")])
    site.run("odoo_orders")
    site.execute(site.source, ["DELETE FROM mes_order_component WHERE order_no = 'WO-1' AND item_no = 20"])

    kept = site.run("odoo_orders", full_refresh=True)
    assert kept.record.counts.rows_deleted == 0 and len(_moves(site)) == 3

    flow["lines"]["missing"] = "delete"
    site.add(flow)
    removed = site.run("odoo_orders", full_refresh=True)
    assert removed.record.counts.rows_deleted == 1
    assert [(m[1], m[2]) for m in _moves(site)] == [(1, 10), (2, 10)]


def test_a_document_without_lines_loads_its_header(site: Site) -> None:
    site.create(site.target, ODOO)
    site.add(odoo_order_with_lines_flow())
    write_orders(site, [("WO-1", "FG-1", "5")])
    result = site.run("odoo_orders")
    assert result.record.counts.rows_loaded == 1
    assert [r["origin"] for r in site.rows("mrp_production", "id")] == ["WO-1"] and _moves(site) == []
