"""Targets that generate their own ids: merge by a natural key without a unique index, and
document numbers drawn from the product's own series for new rows only."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import inspect

from etl.core.errors import SchemaDriftError, StepFailed
from tests.integration.product_schemas import ERPNEXT, ODOO, Site, erpnext_receipt_flow, make_site, odoo_order_flow, write_orders

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    yield from make_site(request, request.param)


def test_ids_come_from_the_target_and_a_rerun_creates_nothing(site: Site) -> None:
    site.create(site.target, ODOO)
    assert not any(ix.get("unique") for ix in inspect(site.target).get_indexes("mrp_production"))
    site.add(odoo_order_flow())
    write_orders(site, [("WO-1", "M-1", "5"), ("WO-2", "M-2", "7"), ("WO-3", "M-1", "1.5")])

    first = site.run("odoo_orders")
    assert first.record.counts.rows_loaded == 3
    rows = site.rows("mrp_production", "id")
    assert [(r["id"], r["name"], r["origin"], r["product_qty"]) for r in rows] == [
        (1, "WH/MO/00010", "WO-1", Decimal("5.000")),
        (2, "WH/MO/00011", "WO-2", Decimal("7.000")),
        (3, "WH/MO/00012", "WO-3", Decimal("1.500")),
    ]
    assert site.scalar("SELECT number_next FROM ir_sequence WHERE code = 'mrp.production'") == 13
    assert site.scalar("SELECT number_next FROM ir_sequence WHERE code = 'stock.picking'") == 500

    again = site.run("odoo_orders", full_refresh=True)
    assert (again.record.counts.rows_loaded, again.record.counts.rows_unchanged) == (0, 3)
    assert site.rows("mrp_production", "id") == rows
    assert site.scalar("SELECT number_next FROM ir_sequence WHERE code = 'mrp.production'") == 13

    # A changed order is updated in place (its id and number stay); a new one draws the next number.
    write_orders(site, [("WO-2", "M-2", "9"), ("WO-4", "M-4", "2")], at=datetime(2026, 11, 20, 9, 0))
    third = site.run("odoo_orders")
    assert third.record.counts.rows_loaded == 2
    after = {r["origin"]: (r["id"], r["name"], r["product_qty"]) for r in site.rows("mrp_production", "id")}
    assert after["WO-2"] == (2, "WH/MO/00011", Decimal("9.000"))
    assert after["WO-4"][0] > 3 and after["WO-4"][1:] == ("WH/MO/00013", Decimal("2.000"))
    assert site.scalar("SELECT number_next FROM ir_sequence WHERE code = 'mrp.production'") == 14


def test_a_crash_before_commit_gives_the_numbers_back(site: Site) -> None:
    site.create(site.target, ODOO)
    site.add(odoo_order_flow())
    write_orders(site, [("WO-1", "M-1", "5")])

    def crash(step: str) -> None:
        if step == "write_state":
            raise RuntimeError("injected crash after the merge")

    with pytest.raises(StepFailed):
        site.run("odoo_orders", hook=crash)
    assert site.rows("mrp_production", "id") == []
    assert site.scalar("SELECT number_next FROM ir_sequence WHERE code = 'mrp.production'") == 10
    site.run("odoo_orders")
    assert [r["name"] for r in site.rows("mrp_production", "id")] == ["WH/MO/00010"]


def test_without_match_natural_key_the_missing_unique_index_is_refused(site: Site) -> None:
    site.create(site.target, ODOO)
    flow = odoo_order_flow()
    flow["load"] = {}
    flow["target"].pop("document_number")
    site.add(flow)
    with pytest.raises(StepFailed) as failed:
        site.run("odoo_orders")
    assert isinstance(failed.value.__cause__, SchemaDriftError)
    assert "load.match: natural_key" in str(failed.value.__cause__)


def test_a_counter_row_that_is_not_unique_stops_the_run(site: Site) -> None:
    site.create(site.target, ODOO)
    site.execute(site.target, ["INSERT INTO ir_sequence (code, number_next) VALUES ('mrp.production', 1)"])
    site.add(odoo_order_flow())
    write_orders(site, [("WO-1", "M-1", "5")])
    with pytest.raises(StepFailed) as failed:
        site.run("odoo_orders")
    assert isinstance(failed.value.__cause__, SchemaDriftError)  # a configuration to fix: CLI exit 2
    assert "2 rows of ir_sequence match {'code': 'mrp.production'}; exactly one must" in str(failed.value.__cause__)
    assert site.rows("mrp_production", "id") == []


@pytest.mark.parametrize("site", ["mariadb"], indirect=True)
def test_erpnext_document_number_is_the_primary_key_and_the_counter_holds_the_last(site: Site) -> None:
    site.create(site.target, ERPNEXT)
    site.add(erpnext_receipt_flow())
    write_orders(site, [("WO-1", "M-1", "5"), ("WO-2", "M-2", "7")])
    assert site.run("erpnext_receipts").record.counts.rows_loaded == 2
    assert [(r["name"], r["custom_mes_ref"]) for r in site.rows("tabStock Entry", "name")] == [
        ("MAT-STE-2026-00042", "WO-1"), ("MAT-STE-2026-00043", "WO-2"),
    ]
    assert site.scalar('SELECT current FROM "tabSeries"') == 43
    assert site.run("erpnext_receipts", full_refresh=True).record.counts.rows_loaded == 0
    assert site.scalar('SELECT current FROM "tabSeries"') == 43


@pytest.mark.parametrize("site", ["postgresql", "mariadb"], indirect=True)
def test_a_database_sequence_numbers_new_rows_once(site: Site) -> None:
    # Odoo's "standard" series draw from a sequence object, not from ir_sequence.number_next.
    site.create(site.target, ODOO)
    site.execute(site.target, ["CREATE SEQUENCE ir_sequence_001 START WITH 20"])
    flow = odoo_order_flow()
    flow["target"]["document_number"] = {"column": "name", "database_sequence": "ir_sequence_001", "format": "WH/MO/{n:05d}"}
    site.add(flow)
    write_orders(site, [("WO-1", "M-1", "5"), ("WO-2", "M-2", "7")])
    site.run("odoo_orders")
    site.run("odoo_orders", full_refresh=True)
    write_orders(site, [("WO-3", "M-3", "1")], at=datetime(2026, 11, 20, 9, 0))
    site.run("odoo_orders")
    assert [(r["origin"], r["name"]) for r in site.rows("mrp_production", "id")] == [
        ("WO-1", "WH/MO/00020"), ("WO-2", "WH/MO/00021"), ("WO-3", "WH/MO/00022"),
    ]


@pytest.mark.parametrize("site", ["sqlite"], indirect=True)
def test_a_database_sequence_where_the_database_has_none_stops_the_run(site: Site) -> None:
    site.create(site.target, ODOO)
    flow = odoo_order_flow()
    flow["target"]["document_number"] = {"column": "name", "database_sequence": "ir_sequence_001"}
    site.add(flow)
    write_orders(site, [("WO-1", "M-1", "5")])
    with pytest.raises(StepFailed) as failed:
        site.run("odoo_orders")
    assert isinstance(failed.value.__cause__, SchemaDriftError)
    assert "database sequences are not available on sqlite" in str(failed.value)
    assert site.rows("mrp_production", "id") == []
