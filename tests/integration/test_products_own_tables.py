"""Issue #9 end to end on the products' own tables: ERPNext work orders (MariaDB) become Odoo
manufacturing orders with their raw-material moves (PostgreSQL), and what Odoo produces comes
back to ERPNext as Manufacture stock entries, by the flows and crosswalks in
tests/products/mappings alone. Exactly once, quantities converted, times in the right zone,
missing master data quarantined whole and shown in the data-quality report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import delete, text
from sqlalchemy.engine import URL

from etl.config import load_project
from etl.connections import Connections
from etl.errors import StepFailed
from etl.pipeline_tables import watermark
from etl.report import build_report
from tests.integration.test_products import MAPPINGS, Plant, seed

pytestmark = pytest.mark.slow

ORDERS = "erpnext_manufacturing_orders"
COMPLETIONS = "odoo_completions"
# Two generated work orders beside the hand-made ones: one submitted (MFG-WO-2026-10000), one draft.
EXTRA_ORDERS = 2


@pytest.fixture
def plant(mariadb_database: Callable[[str], URL], pg_database: Callable[[str], URL]) -> Iterator[Plant]:
    urls = {"erpnext_db": mariadb_database("erpnext"), "odoo_db": pg_database("odoo")}
    with Connections(urls) as connections:
        erpnext, odoo = connections.engine("erpnext_db"), connections.engine("odoo_db")
        seed.build_erpnext(erpnext, extra_orders=EXTRA_ORDERS)
        # Odoo before the first sync: only a draft order of its own (WH/MO/00004, no origin).
        seed.build_odoo(odoo, synced_orders=False)
        yield Plant(load_project(MAPPINGS), connections, erpnext, odoo)


def _query(engine: Any, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(sql), params)]


def _orders(plant: Plant) -> list[tuple[Any, ...]]:
    return _query(plant.odoo, (
        "SELECT id, name, origin, product_id, product_qty, product_uom_id, state, date_start, date_finished, company_id "
        "FROM mrp_production ORDER BY id"
    ))


def _moves(plant: Plant) -> list[tuple[Any, ...]]:
    return _query(plant.odoo, (
        "SELECT id, raw_material_production_id, sequence, origin, name, product_id, product_uom_qty, product_uom, "
        "product_qty, state, date, company_id, location_id, location_dest_id FROM stock_move ORDER BY id"
    ))


def _sequence(plant: Plant) -> int:
    (value,), = _query(plant.odoo, "SELECT last_value FROM ir_sequence_001")
    return value


def test_work_orders_become_odoo_manufacturing_orders_with_their_raw_moves(plant: Plant) -> None:
    first = plant.run(ORDERS)

    utc = datetime
    assert _orders(plant) == [
        (4, "WH/MO/00004", None, 13, Decimal("8"), 3, "draft", utc(2026, 11, 24, 1, 0), None, 1),  # Odoo's own
        # 08:00 in Shanghai is 00:00 UTC; planned end eight hours later.
        (5, "WH/MO/00006", "MFG-WO-2026-00001", 11, Decimal("100.000000000"), 1, "confirmed",
         utc(2026, 11, 20, 0, 0), utc(2026, 11, 20, 8, 0), 1),
        # 07:30 on 21 November in Shanghai is 23:30 UTC on the 20th.
        (6, "WH/MO/00007", "MFG-WO-2026-00002", 12, Decimal("250.500000000"), 1, "confirmed",
         utc(2026, 11, 20, 23, 30), utc(2026, 11, 21, 7, 30), 1),
        # FG-DUP: the active product (16), not the archived one sharing its code.
        (7, "WH/MO/00008", "MFG-WO-2026-00006", 16, Decimal("40.000000000"), 1, "confirmed",
         utc(2026, 11, 23, 5, 0), utc(2026, 11, 23, 13, 0), 1),
        # ERPNext "Kg" is Odoo's "kg" (3), not the archived "KG" (6).
        (8, "WH/MO/00009", "MFG-WO-2026-00007", 17, Decimal("12.345000000"), 3, "confirmed",
         utc(2026, 11, 21, 16, 15), utc(2026, 11, 22, 0, 15), 1),
        # The generated orders: 11:15 on 21 December in Shanghai is 03:15 UTC.
        (9, "WH/MO/00010", "MFG-WO-2026-10000", 16, Decimal("334.000000000"), 1, "confirmed",
         utc(2026, 12, 21, 3, 15), utc(2026, 12, 21, 11, 15), 1),
        (10, "WH/MO/00011", "MFG-WO-2026-10001", 11, Decimal("188.000000000"), 1, "confirmed",
         utc(2026, 12, 18, 10, 15), utc(2026, 12, 18, 18, 15), 1),
    ]
    at = datetime(2026, 11, 19, 1, 0)  # the lines' last change, 09:00 in Shanghai
    assert _moves(plant) == [
        (1, 5, 1, "MFG-WO-2026-00001", "Steel Rod Ø10", 13, Decimal("5.200000000"), 3, Decimal("5.200000000"),
         "confirmed", at, 1, 8, 15),
        (2, 5, 2, "MFG-WO-2026-00001", "Nut M8", 12, Decimal("100.000000000"), 1, Decimal("100.000000000"),
         "confirmed", at, 1, 8, 15),
        # 250 Gram in ERPNext is 0.25 kg in Odoo.
        (3, 5, 3, "MFG-WO-2026-00001", "Zinc primer", 18, Decimal("0.250000000000"), 3, Decimal("0.250000000000"),
         "confirmed", at, 1, 8, 15),
        (4, 6, 1, "MFG-WO-2026-00002", "Steel Rod Ø10", 13, Decimal("12.525000000"), 3, Decimal("12.525000000"),
         "confirmed", at, 1, 8, 15),
        (5, 9, 1, "MFG-WO-2026-10000", "Steel Rod Ø10", 13, Decimal("0.792000000"), 3, Decimal("0.792000000"),
         "confirmed", at, 1, 8, 15),
        (6, 10, 1, "MFG-WO-2026-10001", "Steel Rod Ø10", 13, Decimal("0.951000000"), 3, Decimal("0.951000000"),
         "confirmed", datetime(2026, 11, 19, 1, 1), 1, 8, 15),
    ]
    assert _sequence(plant) == 11
    # MFG-WO-2026-00005's item has only an archived Odoo product: neither it nor its line is written.
    assert plant.waiting(plant.odoo, ORDERS) == {
        "name=MFG-WO-2026-00005": "crosswalk 'odoo_product' has no MES code for 'FG-OLD-1' (column product_id)",
    }
    counts = first.record.counts
    assert (counts.rows_read, counts.rows_loaded, counts.rows_new_in_quarantine) == (7, 6 + 6, 1)

    again = plant.run(ORDERS, full_refresh=True)
    assert (again.record.counts.rows_loaded, again.record.counts.rows_new_in_quarantine) == (0, 0)
    assert len(_orders(plant)) == 7 and len(_moves(plant)) == 6
    assert _sequence(plant) == 11  # no number drawn for orders already in Odoo

    # The plant reactivates the Odoo product: the order and its line arrive together.
    with plant.odoo.begin() as conn:
        conn.execute(text("UPDATE product_product SET active = true WHERE id = 14"))
    fixed = plant.run(ORDERS)
    assert (fixed.record.counts.rows_loaded, fixed.record.counts.rows_released) == (2, 1)
    assert _orders(plant)[-1][:5] == (11, "WH/MO/00012", "MFG-WO-2026-00005", 14, Decimal("5.000000000"))
    assert _moves(plant)[-1][:8] == (7, 11, 1, "MFG-WO-2026-00005", "Steel Rod Ø10", 13, Decimal("1.000000000"), 3)
    assert plant.waiting(plant.odoo, ORDERS) == {}
