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
import yaml
from sqlalchemy import delete, text
from sqlalchemy.engine import URL

from etl.config.project import load_project
from etl.core.errors import StepFailed
from etl.reporting.report import build_report
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import watermark
from etl.sync.runner import run_flow
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


def _order_details(plant: Plant, origin: str) -> tuple[Any, ...]:
    (row,) = _query(plant.odoo, (
        "SELECT product_tmpl_id, product_uom_qty, qty_producing, location_src_id, location_dest_id, create_date, write_date "
        "FROM mrp_production WHERE origin = :origin"
    ), origin=origin)
    return row


def _moves(plant: Plant) -> list[tuple[Any, ...]]:
    return _query(plant.odoo, (
        "SELECT id, raw_material_production_id, sequence, origin, name, product_id, product_uom_qty, product_uom, "
        "product_qty, state, date, company_id, location_id, location_dest_id FROM stock_move ORDER BY id"
    ))


def _sequence(plant: Plant) -> int:
    (value,), = _query(plant.odoo, "SELECT last_value FROM ir_sequence_001")
    return value


def test_work_orders_become_odoo_manufacturing_orders_with_their_raw_moves(plant: Plant) -> None:
    """Ids from Odoo's serial, names from its sequence, lines pointing at the new id, product and
    units looked up, grams converted to kg, Shanghai times in UTC; a rerun writes and draws nothing."""
    first = plant.run(ORDERS)

    assert _orders(plant) == [
        (4, "WH/MO/00004", None, 13, Decimal("8"), 3, "draft", datetime(2026, 11, 24, 1, 0), None, 1),  # Odoo's own
        # 08:00 in Shanghai is 00:00 UTC; planned end eight hours later.
        (5, "WH/MO/00006", "MFG-WO-2026-00001", 11, Decimal("100.000000000"), 1, "confirmed",
         datetime(2026, 11, 20, 0, 0), datetime(2026, 11, 20, 8, 0), 1),
        # 07:30 on 21 November in Shanghai is 23:30 UTC on the 20th.
        (6, "WH/MO/00007", "MFG-WO-2026-00002", 12, Decimal("250.500000000"), 1, "confirmed",
         datetime(2026, 11, 20, 23, 30), datetime(2026, 11, 21, 7, 30), 1),
        # FG-DUP: the active product (16), not the archived one sharing its code.
        (7, "WH/MO/00008", "MFG-WO-2026-00006", 16, Decimal("40.000000000"), 1, "confirmed",
         datetime(2026, 11, 23, 5, 0), datetime(2026, 11, 23, 13, 0), 1),
        # ERPNext "Kg" is Odoo's "kg" (3), not the archived "KG" (6).
        (8, "WH/MO/00009", "MFG-WO-2026-00007", 17, Decimal("12.345000000"), 3, "confirmed",
         datetime(2026, 11, 21, 16, 15), datetime(2026, 11, 22, 0, 15), 1),
        # The generated orders: 11:15 on 21 December in Shanghai is 03:15 UTC.
        (9, "WH/MO/00010", "MFG-WO-2026-10000", 16, Decimal("334.000000000"), 1, "confirmed",
         datetime(2026, 12, 21, 3, 15), datetime(2026, 12, 21, 11, 15), 1),
        (10, "WH/MO/00011", "MFG-WO-2026-10001", 11, Decimal("188.000000000"), 1, "confirmed",
         datetime(2026, 12, 18, 10, 15), datetime(2026, 12, 18, 18, 15), 1),
    ]
    at = datetime(2026, 11, 19, 1, 0)  # the last change in ERPNext, 09:00 in Shanghai
    assert _order_details(plant, "MFG-WO-2026-00001") == (1, Decimal("100.000000000"), Decimal("0"), 8, 8, at, at)
    assert _order_details(plant, "MFG-WO-2026-00006")[0] == 6  # the active template, not the archived 5
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
        "name=MFG-WO-2026-00005":
            "crosswalk 'odoo_product' has no MES code for 'FG-OLD-1' (column product_id); "
            "crosswalk 'odoo_product_template' has no MES code for 'FG-OLD-1' (column product_tmpl_id)",
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


def test_a_line_that_cannot_be_translated_holds_back_its_whole_order(plant: Plant) -> None:
    at = datetime(2026, 11, 19, 10, 0)
    seed._insert(plant.erpnext, "tabWork Order", [seed._work_order(
        "MFG-WO-2026-00008", "FG-BOLT-M8", "10", "Units", datetime(2026, 11, 24, 8, 0), 1, "Not Started", at,
    )])
    seed._insert(plant.erpnext, "tabWork Order Item", [
        seed._required_item("f1c0ffee01", "MFG-WO-2026-00008", 1, "RM-STEEL-ROD", "1", "Kg", 1, at),
        # Nobody told the sync how a box of zinc primer converts to Odoo's kg.
        seed._required_item("f1c0ffee02", "MFG-WO-2026-00008", 2, "RM-ZINC-PRIMER", "3", "Box", 1, at),
    ])
    first = plant.run(ORDERS)
    waiting = plant.waiting(plant.odoo, ORDERS)
    assert waiting["name=MFG-WO-2026-00008"] == (
        "document not loaded: line idx=2: crosswalk 'erpnext_uom' has no MES code for 'Box' (column product_uom); "
        "crosswalk 'erpnext_uom' has no factor for unit 'Box' (column product_uom_qty); "
        "crosswalk 'erpnext_uom' has no factor for unit 'Box' (column product_qty)"
    )
    assert _query(plant.odoo, "SELECT count(*) FROM mrp_production WHERE origin = 'MFG-WO-2026-00008'") == [(0,)]
    assert _query(plant.odoo, "SELECT count(*) FROM stock_move WHERE origin = 'MFG-WO-2026-00008'") == [(0,)]
    assert _sequence(plant) == 11 and first.record.counts.rows_new_in_quarantine == 2
    assert plant.run(ORDERS).record.counts.rows_new_in_quarantine == 0

    # The planner corrects the line in ERPNext (which touches the work order): the order arrives whole.
    with plant.erpnext.begin() as conn:
        conn.execute(text("UPDATE `tabWork Order Item` SET stock_uom = 'Gram', required_qty = 3000 WHERE name = 'f1c0ffee02'"))
        conn.execute(text("UPDATE `tabWork Order` SET modified = '2026-11-19 10:30' WHERE name = 'MFG-WO-2026-00008'"))
    fixed = plant.run(ORDERS)
    assert (fixed.record.counts.rows_loaded, fixed.record.counts.rows_released) == (3, 1)
    (order_id, name), = _query(plant.odoo, "SELECT id, name FROM mrp_production WHERE origin = 'MFG-WO-2026-00008'")
    assert (order_id, name) == (11, "WH/MO/00012")
    assert _query(plant.odoo, (
        "SELECT sequence, product_id, product_uom_qty, product_uom FROM stock_move "
        "WHERE raw_material_production_id = :id ORDER BY sequence"
    ), id=order_id) == [(1, 13, Decimal("1.000000000"), 3), (2, 18, Decimal("3.000000000000"), 3)]


def _produce(plant: Plant, origin: str, state: str, qty: str, at: datetime) -> None:
    """What Odoo's shop floor does to an order: record production, move its state on."""
    with plant.odoo.begin() as conn:
        conn.execute(
            text("UPDATE mrp_production SET state = :state, qty_producing = :qty, write_date = :at WHERE origin = :origin"),
            {"state": state, "qty": Decimal(qty), "at": at, "origin": origin},
        )


def _entries(plant: Plant) -> list[tuple[Any, ...]]:
    return _query(plant.erpnext, (
        "SELECT name, work_order, purpose, docstatus, fg_completed_qty, custom_odoo_ref, company, creation, remarks "
        "FROM `tabStock Entry` WHERE custom_odoo_ref IS NOT NULL ORDER BY name"
    ))


def _posted(plant: Plant, work_order: str) -> Decimal:
    (total,), = _query(plant.erpnext, (
        "SELECT sum(fg_completed_qty) FROM `tabStock Entry` "
        "WHERE work_order = :wo AND purpose = 'Manufacture' AND docstatus IN (0, 1)"
    ), wo=work_order)
    return total


def _series(plant: Plant) -> int:
    (current,), = _query(plant.erpnext, "SELECT current FROM tabSeries WHERE name = 'MAT-STE-2026-'")
    return current


def test_completions_post_only_what_erpnext_does_not_hold_exactly_once(plant: Plant) -> None:
    """Odoo's cumulative qty_producing against ERPNext's own Manufacture entries, read in the
    posting transaction: reruns, a crash before and after the commit and a lost watermark post
    nothing twice; an increase posts the increment; a decrease waits in quarantine."""
    plant.run(ORDERS)
    _produce(plant, "MFG-WO-2026-00001", "progress", "40", datetime(2026, 11, 20, 4, 0))
    # ERPNext holds 50 for this order already (booked by hand); a cancelled 20 and the material
    # transfer of 250.5 do not count.
    _produce(plant, "MFG-WO-2026-00002", "done", "250.5", datetime(2026, 11, 21, 9, 0))
    with plant.odoo.begin() as conn:  # Odoo's own order, started on the shop floor
        conn.execute(text("UPDATE mrp_production SET state = 'progress', qty_producing = 3, write_date = '2026-11-20 03:00' WHERE id = 4"))

    first = plant.run(COMPLETIONS)
    assert _entries(plant) == [
        # Drafts, for ERPNext to submit; 04:00 UTC is noon in Shanghai.
        ("MAT-STE-2026-00018", "MFG-WO-2026-00001", "Manufacture", 0, Decimal("40.000000000"), "WH/MO/00006/40",
         "Shanghai Precision Co.", datetime(2026, 11, 20, 12, 0), "Odoo WH/MO/00006: 40 produced in total"),
        # 250.5 produced, 50 posted by hand: 200.5 to post.
        ("MAT-STE-2026-00019", "MFG-WO-2026-00002", "Manufacture", 0, Decimal("200.500000000"), "WH/MO/00007/250.5",
         "Shanghai Precision Co.", datetime(2026, 11, 21, 17, 0), "Odoo WH/MO/00007: 250.5 produced in total"),
    ]
    assert (_posted(plant, "MFG-WO-2026-00001"), _posted(plant, "MFG-WO-2026-00002")) == (Decimal("40"), Decimal("250.5"))
    assert _series(plant) == 19
    # Odoo's own order has no ERPNext work order to post to: it waits, visibly.
    assert plant.waiting(plant.erpnext, COMPLETIONS) == {"name=WH/MO/00004, qty_producing=3": "required column work_order is NULL"}
    assert (first.record.counts.rows_read, first.record.counts.rows_loaded) == (3, 2)

    again = plant.run(COMPLETIONS, full_refresh=True)
    assert (again.record.counts.rows_loaded, again.record.counts.rows_new_in_quarantine) == (0, 0)
    assert len(_entries(plant)) == 2 and _series(plant) == 19

    # Odoo counts on to 70. A crash just before the commit posts nothing and gives the number back.
    _produce(plant, "MFG-WO-2026-00001", "progress", "70", datetime(2026, 11, 21, 10, 0))

    def crash_at(step: str) -> Callable[[str], None]:
        def hook(current: str) -> None:
            if current == step:
                raise RuntimeError(f"injected crash at {step}")
        return hook

    with pytest.raises(StepFailed):
        run_flow(plant.project, COMPLETIONS, plant.connections, hook=crash_at("commit"))
    assert len(_entries(plant)) == 2 and _series(plant) == 19 and _posted(plant, "MFG-WO-2026-00001") == Decimal("40")

    # A crash after the commit, then the pipeline's own state lost: ERPNext's entries decide.
    with pytest.raises(StepFailed):
        run_flow(plant.project, COMPLETIONS, plant.connections, hook=crash_at("done"))
    assert _posted(plant, "MFG-WO-2026-00001") == Decimal("70")
    with plant.erpnext.begin() as conn:
        conn.execute(delete(watermark))
    assert plant.run(COMPLETIONS).record.counts.rows_loaded == 0
    assert plant.run(COMPLETIONS, full_refresh=True).record.counts.rows_loaded == 0
    assert _entries(plant)[-1][:6] == (
        "MAT-STE-2026-00020", "MFG-WO-2026-00001", "Manufacture", 0, Decimal("30.000000000"), "WH/MO/00006/70",
    )
    assert _posted(plant, "MFG-WO-2026-00001") == Decimal("70") and _series(plant) == 20

    # The order is finished at 100: only the last 30 are posted.
    _produce(plant, "MFG-WO-2026-00001", "done", "100", datetime(2026, 11, 21, 12, 0))
    finished = plant.run(COMPLETIONS)
    assert finished.record.counts.rows_loaded == 1
    assert _entries(plant)[-1][:6] == (
        "MAT-STE-2026-00021", "MFG-WO-2026-00001", "Manufacture", 0, Decimal("30.000000000"), "WH/MO/00006/100",
    )
    assert _posted(plant, "MFG-WO-2026-00001") == Decimal("100") and _series(plant) == 21

    # Odoo corrects the other order down: nothing is taken back silently, the row waits.
    _produce(plant, "MFG-WO-2026-00002", "done", "240", datetime(2026, 11, 21, 13, 0))
    corrected = plant.run(COMPLETIONS)
    assert (corrected.record.counts.rows_loaded, corrected.record.counts.rows_new_in_quarantine) == (0, 1)
    assert plant.waiting(plant.erpnext, COMPLETIONS)["name=WH/MO/00007, qty_producing=240"] == (
        "cumulative fg_completed_qty went down to 240.000000000 while the target already holds 250.500000000 for "
        "(work_order=MFG-WO-2026-00002): post the correction in the ERP, or set delta.negative: post"
    )
    assert _posted(plant, "MFG-WO-2026-00002") == Decimal("250.5") and len(_entries(plant)) == 4


def test_the_data_quality_report_lists_what_waits_on_both_products(plant: Plant, tmp_path: Path) -> None:
    plant.run(ORDERS)
    plant.run(ORDERS)
    with plant.odoo.begin() as conn:  # Odoo's own order, started on the shop floor
        conn.execute(text("UPDATE mrp_production SET state = 'progress', qty_producing = 3, write_date = '2026-11-20 03:00' WHERE id = 4"))
    plant.run(COMPLETIONS)

    written = build_report(plant.project, plant.connections, tmp_path / "report.html")
    assert written.needs_action
    assert written.subject.startswith("[erp-mes-sync] ACTION NEEDED: 2 rows in quarantine — data quality ")
    html = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert html == written.html
    for flow in (ORDERS, COMPLETIONS):
        assert f"<li><a href='#flow-{flow}'>{flow}</a>: 1 row(s) waiting in quarantine</li>" in html
    # The reason with its code masked, then the example with the code and the lookup's name.
    assert (
        "<td class=num>1</td><td>crosswalk &#x27;odoo_product&#x27; has no MES code for &#x27;…&#x27; (column product_id); "
        "crosswalk &#x27;odoo_product_template&#x27; has no MES code for &#x27;…&#x27; (column product_tmpl_id)</td>"
        "<td>crosswalk &#x27;odoo_product&#x27; has no MES code for &#x27;FG-OLD-1&#x27; (column product_id); "
        "crosswalk &#x27;odoo_product_template&#x27; has no MES code for &#x27;FG-OLD-1&#x27; (column product_tmpl_id)</td>"
    ) in html
    assert "<td>required column work_order is NULL</td>" in html


@pytest.mark.parametrize("flow", [ORDERS, COMPLETIONS])
def test_the_guide_shows_the_flows_as_shipped(flow: str) -> None:
    """docs/connecting-a-system.md prints both flows in full: the same keys and values as the
    files these tests run (the guide leaves out the description and comments)."""
    guide = (MAPPINGS.parent.parent.parent / "docs" / "connecting-a-system.md").read_text(encoding="utf-8")
    block = next(b for b in guide.split("```yaml\n")[1:] if b.startswith(f"flow: {flow}\n")).split("```")[0]
    shipped = yaml.safe_load((MAPPINGS / "flows" / f"{flow}.yaml").read_text(encoding="utf-8"))
    shipped.pop("description")
    assert yaml.safe_load(block) == shipped
