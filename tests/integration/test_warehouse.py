"""The warehouse on a tiny hand-made factory (tests/integration/warehouse_factory.py): every KPI
view against numbers worked out by hand, reruns, a late report, the type-2 material history,
quarantine. On SQLite and on the real PostgreSQL server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from warehouse_factory import (
    ASM,
    PKG,
    TinyFactory,
    factory_urls,
    insert,
    make_tiny_factory,
    postgres_urls,
    refreshed_twice,
    report,
    sqlite_urls,
)

from etl.warehouse import refresh as warehouse
from etl.warehouse.refresh import MATERIAL_HISTORY

pytestmark = pytest.mark.slow

KINDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module", params=KINDS)
def shared(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TinyFactory]:
    """The tiny factory after two refreshes (see refreshed_twice), shared by the tests that only
    read it."""
    if request.param == "sqlite":
        factory = refreshed_twice(make_tiny_factory(sqlite_urls(tmp_path_factory.mktemp("tiny"))))
        yield factory
        factory.connections.dispose()
        return
    with postgres_urls(request.getfixturevalue("pg_server")) as urls:
        factory = refreshed_twice(make_tiny_factory(urls))
        yield factory
        factory.connections.dispose()


@pytest.fixture(params=KINDS)
def tiny(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[TinyFactory]:
    """A tiny factory of the test's own, after the same two refreshes, for tests that change it."""
    factory = refreshed_twice(make_tiny_factory(factory_urls(request.param, tmp_path, request)))
    yield factory
    factory.connections.dispose()


def test_order_progress_and_lateness(shared: TinyFactory) -> None:
    rows = {r["order_no"]: r for r in shared.query("SELECT * FROM kpi_order_progress")}
    assert sorted(rows) == ["1000001", "1000002", "1000003", "1000004", "1000005"]
    # 1000001: 100 planned; the final operation 0020 reported 97 good; 2 + 1 scrapped on the way.
    # Received 12:00, planned end 16:00: four hours early.
    assert {k: rows["1000001"][k] for k in (
        "material_no", "status", "planned_qty", "reported_good_qty", "reported_scrap_qty", "received_qty", "progress",
        "actual_start", "actual_end", "delivered_at", "finished_at", "is_complete", "lateness_hours", "is_late",
    )} == {
        "material_no": "MAT-000001", "status": "TECO", "planned_qty": 100, "reported_good_qty": 97,
        "reported_scrap_qty": 3, "received_qty": 97, "progress": round(97 / 100, 4),
        "actual_start": "2026-03-02 08:00", "actual_end": "2026-03-02 11:30", "delivered_at": "2026-03-02 12:00",
        "finished_at": "2026-03-02 12:00", "is_complete": 1, "lateness_hours": -4.0, "is_late": 0,
    }
    # 1000002: 45 of 50; received 13:30 for a 12:00 plan: 1.5 hours late.
    assert (rows["1000002"]["progress"], rows["1000002"]["lateness_hours"], rows["1000002"]["is_late"]) == (
        round(45 / 50, 4), 1.5, 1,
    )
    # 1000003, released: 20 through the final operation of 80; its planned end has passed.
    assert (rows["1000003"]["reported_good_qty"], rows["1000003"]["progress"]) == (20, round(20 / 80, 4))
    assert (rows["1000003"]["is_complete"], rows["1000003"]["lateness_hours"], rows["1000003"]["is_late"]) == (0, None, 1)
    # 1000004 (created, due in 2099, material cleaned) and 1000005 (cancelled): nothing reported, not late.
    assert (rows["1000004"]["material_no"], rows["1000004"]["progress"], rows["1000004"]["is_late"]) == ("MAT-000001", 0, 0)
    assert (rows["1000005"]["progress"], rows["1000005"]["is_late"]) == (0, 0)
    assert rows["1000001"]["planned_end_date"] == "2026-03-02"


def test_on_time_delivery(shared: TinyFactory) -> None:
    # Two orders completed for 2 March: 1000001 early, 1000002 late.
    assert shared.query("SELECT * FROM kpi_on_time_delivery") == [{
        "plant_code": "1000", "planned_end_date": "2026-03-02", "delivered_orders": 2, "on_time_orders": 1,
        "on_time_rate": round(1 / 2, 4),
    }]


def test_yield_and_first_pass_yield(shared: TinyFactory) -> None:
    rows = shared.query(
        "SELECT production_date, work_center, material_no, unit, good_qty, scrap_qty, yield_rate, operation_lots, "
        "lots_with_scrap, first_pass_yield FROM kpi_yield_daily ORDER BY production_date, work_center"
    )
    expected = [
        # WC-ASM1 on 2 March: R1 98 good + 2 scrap (1000001), R3 50 + 0 (1000002); one of two lots scrapped.
        ("2026-03-02", "WC-ASM1", 148, 2, 148 / 150, 2, 1, 1 - 1 / 2),
        # WC-PKG1 on 2 March: R2 97 + 1, R4 45 + 5; both lots scrapped (the re-sent R2 counts once).
        ("2026-03-02", "WC-PKG1", 142, 6, 142 / 148, 2, 2, 1 - 2 / 2),
        ("2026-03-03", "WC-ASM1", 40, 0, 40 / 40, 1, 0, 1.0),
        ("2026-03-03", "WC-PKG1", 20, 0, 20 / 20, 1, 0, 1.0),
    ]
    assert rows == [{
        "production_date": day, "work_center": wc, "material_no": "MAT-000001", "unit": "PC", "good_qty": good,
        "scrap_qty": scrap, "yield_rate": round(rate, 4), "operation_lots": lots, "lots_with_scrap": scrapped,
        "first_pass_yield": round(fpy, 4),
    } for day, wc, good, scrap, rate, lots, scrapped, fpy in expected]


def test_scrap_pareto_costs_scrap_at_the_standard_cost_valid_when_reported(shared: TinyFactory) -> None:
    # MAT-000001 cost 100 until 12:15 on 2 March, 120 after.
    # S01: R1 2 pcs at 10:00 x 100 + R4 5 pcs at 13:00 x 120 = 800; S02: R2 1 pc at 11:30 x 100 = 100.
    assert shared.query("SELECT * FROM kpi_scrap_pareto ORDER BY pareto_rank") == [
        {"scrap_reason": "S01", "scrap_reports": 2, "scrap_cost": 800, "pareto_rank": 1,
         "share": round(800 / 900, 4), "cumulative_share": round(800 / 900, 4)},
        {"scrap_reason": "S02", "scrap_reports": 1, "scrap_cost": 100, "pareto_rank": 2,
         "share": round(100 / 900, 4), "cumulative_share": 1.0},
    ]


def test_oee_per_equipment_and_day(shared: TinyFactory) -> None:
    rows = {(r["work_center"], r["production_date"]): r for r in shared.query("SELECT * FROM kpi_oee_daily")}
    # WC-ASM1, 2 March. RUN 08-10, 11-12 and 23-24 (the 23:00-01:00 run is cut at midnight): 240 min.
    # Planned: run 240 + unplanned DOWN 30 (BRK-MECH) + SETUP 30 = 300; planned maintenance (PM, 30)
    # and IDLE leave planned time. Output at 1.5 standard minutes a piece: R1 100 pcs (98 good),
    # R3 50 pcs (50 good): 225 standard minutes, 222 of them good.
    assert {k: rows[("WC-ASM1", "2026-03-02")][k] for k in (
        "equipment_code", "planned_minutes", "run_minutes", "standard_minutes", "good_standard_minutes",
        "availability", "performance", "quality", "oee",
    )} == {
        "equipment_code": ASM, "planned_minutes": 300, "run_minutes": 240, "standard_minutes": 225,
        "good_standard_minutes": 222, "availability": round(240 / 300, 4), "performance": round(225 / 240, 4),
        "quality": round(222 / 225, 4), "oee": round(240 / 300 * 225 / 240 * 222 / 225, 4),
    }
    # WC-ASM1, 3 March: the hour after midnight ran, R5 made 40 pcs in exactly their 60 standard minutes.
    assert [rows[("WC-ASM1", "2026-03-03")][k] for k in ("availability", "performance", "quality", "oee")] == [1, 1, 1, 1]
    # WC-PKG1, 2 March: RUN 240, DOWN (no material) 60; R2 98 pcs (97 good) + R4 50 (45 good) at 0.5 min.
    pkg = rows[("WC-PKG1", "2026-03-02")]
    assert pkg["equipment_code"] == PKG
    assert [pkg[k] for k in ("availability", "performance", "quality", "oee")] == [
        round(240 / 300, 4), round(74 / 240, 4), round(71 / 74, 4), round(71 / 300, 4),
    ]
    # Its IDLE interval ends exactly at midnight: no minute of 3 March, so no row; open intervals wait.
    assert sorted(rows) == [("WC-ASM1", "2026-03-02"), ("WC-ASM1", "2026-03-03"), ("WC-PKG1", "2026-03-02")]


def test_inventory_shortfall(shared: TinyFactory) -> None:
    rows = {r["material_no"]: r for r in shared.query("SELECT * FROM kpi_inventory_shortfall")}
    # MAT-000002 (KG) for the open orders only: 1000003 needs 40, got 15 000 g + 5 kg = 20 -> 20 open;
    # 1000004 needs 30 -> 30 open. Stock: 40 (location 0001, changed 4 March) + 2 (0002) = 42.
    assert rows["MAT-000002"] == {
        "plant_code": "1000", "material_no": "MAT-000002", "unit": "KG", "open_orders": 2,
        "open_requirement_qty": 50, "stock_qty": 42, "stock_as_of": "2026-03-04", "shortfall_qty": 8,
        "coverage": round(42 / 50, 4), "is_short": 1,
    }
    # MAT-000003 (PC): 320 + 240 open against 1000 in stock.
    assert [rows["MAT-000003"][k] for k in ("open_requirement_qty", "stock_qty", "shortfall_qty", "coverage", "is_short")] == [
        560, 1000, 0, round(1000 / 560, 4), 0,
    ]
    # The stock history keeps the 1 March row of location 0001.
    history = shared.query("SELECT snapshot_date, quantity FROM fact_inventory_snapshot "
                         "WHERE material_no = 'MAT-000002' AND storage_loc = '0001' ORDER BY snapshot_date")
    assert history == [{"snapshot_date": "2026-03-01", "quantity": 45}, {"snapshot_date": "2026-03-04", "quantity": 40}]


def test_material_history_keeps_the_old_cost_and_overwrites_descriptions(shared: TinyFactory) -> None:
    versions = shared.query(
        "SELECT valid_from, valid_to, is_current, standard_cost, description_en FROM dim_material "
        "WHERE material_no = 'MAT-000001' ORDER BY valid_from"
    )
    assert versions == [
        {"valid_from": "1900-01-01 00:00", "valid_to": "2026-03-02 12:15", "is_current": False,
         "standard_cost": 100, "description_en": "Gearbox GB-100"},
        {"valid_from": "2026-03-02 12:15", "valid_to": "9999-12-31 00:00", "is_current": True,
         "standard_cost": 120, "description_en": "Gearbox GB-100"},
    ]
    assert shared.query("SELECT COUNT(*) AS n FROM dim_material WHERE is_current = :yes", yes=True) == [{"n": 3}]
    runs = shared.query("SELECT rows_read, rows_loaded FROM etl_ledger WHERE flow = :f ORDER BY started_at", f=MATERIAL_HISTORY)
    # First refresh opened three versions; the second closed one, opened one, overwrote one description.
    assert runs == [{"rows_read": 3, "rows_loaded": 3}, {"rows_read": 3, "rows_loaded": 3}]


def test_dimensions_carry_mes_codes_through_the_crosswalks(shared: TinyFactory) -> None:
    assert shared.query("SELECT plant_code, mes_plant_code FROM dim_plant") == [{"plant_code": "1000", "mes_plant_code": "SH01"}]
    assert shared.query("SELECT work_center, equipment_code FROM dim_work_center ORDER BY work_center") == [
        {"work_center": "WC-ASM1", "equipment_code": ASM}, {"work_center": "WC-PKG1", "equipment_code": PKG},
    ]
    assert shared.query("SELECT inspection_id, order_no, material_no, result FROM fact_quality_inspection ORDER BY 1") == [
        {"inspection_id": 1, "order_no": "1000001", "material_no": "MAT-000001", "result": "A"},
        {"inspection_id": 2, "order_no": "1000002", "material_no": "MAT-000001", "result": "R"},
    ]
    # 15 000 g and 5 kg both arrive as KG, at plant time.
    assert shared.query("SELECT movement_key, quantity, unit, posted_at FROM fact_goods_movement "
                      "WHERE movement_type = '261' ORDER BY movement_key") == [
        {"movement_key": "MES-ISS-1", "quantity": 15, "unit": "KG", "posted_at": "2026-03-03 07:00"},
        {"movement_key": "MES-ISS-2", "quantity": 5, "unit": "KG", "posted_at": "2026-03-03 07:10"},
    ]
    assert shared.query("SELECT shift_code FROM int_confirmation WHERE report_no = 'R000000001'") == [{"shift_code": "A"}]


def test_a_report_with_an_unknown_terminal_waits_in_quarantine(shared: TinyFactory) -> None:
    waiting = shared.query("SELECT flow, source_key, reason FROM etl_quarantine WHERE status = 'waiting'")
    assert [(w["flow"], w["source_key"]) for w in waiting] == [("wh_fact_operation_confirmation", "report_no=R000000007")]
    assert "crosswalk 'work_center' has no ERP code for 'EQ-SH01-XXX-09'" in waiting[0]["reason"]
    assert shared.query("SELECT COUNT(*) AS n FROM fact_operation_confirmation") == [{"n": 6}]


def test_rerun_changes_nothing(tiny: TinyFactory) -> None:
    before = tiny.snapshot()
    kpis = {view: tiny.query(f"SELECT * FROM {view}") for view in warehouse.VIEWS}
    outcome = tiny.refresh()
    assert [r.record.counts.rows_loaded for r in outcome.results] == [0] * len(warehouse.warehouse_flows(tiny.project))
    assert all(r.record.counts.rows_new_in_quarantine == 0 for r in outcome.results)
    assert outcome.history is not None and outcome.history.written == 0
    full = tiny.refresh(full=True)
    assert sum(r.record.counts.rows_loaded for r in full.results) == 0
    assert tiny.snapshot() == before
    assert {view: tiny.query(f"SELECT * FROM {view}") for view in warehouse.VIEWS} == kpis


def test_a_late_report_updates_only_the_facts_it_touches(tiny: TinyFactory) -> None:
    before = tiny.snapshot()
    progress = {r["order_no"]: r for r in tiny.query("SELECT * FROM kpi_order_progress")}
    # Packing of 1000003 finished at 11:00 on 3 March, but its terminal uploaded only on 5 March.
    insert(tiny.mes, {"operation_report": [
        report(9, "WO-2026-000003", 20, PKG, 30, 0, None, "2026-03-03 10:30", "2026-03-03 11:00", recorded="2026-03-05 08:00"),
    ]})
    outcome = tiny.refresh()
    loaded = {r.record.flow: r.record.counts.rows_loaded for r in outcome.results}
    assert loaded.pop("wh_fact_operation_confirmation") == 1
    assert set(loaded.values()) == {0}
    after = tiny.snapshot()
    assert {name for name in after if after[name] != before[name]} == {"fact_operation_confirmation"}
    assert len(after["fact_operation_confirmation"]) == len(before["fact_operation_confirmation"]) + 1

    now = {r["order_no"]: r for r in tiny.query("SELECT * FROM kpi_order_progress")}
    assert (now["1000003"]["reported_good_qty"], now["1000003"]["progress"]) == (50, round(50 / 80, 4))
    assert {k: v for k, v in now.items() if k != "1000003"} == {k: v for k, v in progress.items() if k != "1000003"}
    assert tiny.query("SELECT good_qty, operation_lots FROM kpi_yield_daily "
                      "WHERE production_date = '2026-03-03' AND work_center = 'WC-PKG1'") == [{"good_qty": 50, "operation_lots": 1}]


def test_build_again_keeps_the_rows_and_recreates_the_views(tiny: TinyFactory) -> None:
    before = tiny.snapshot()
    report = warehouse.build(tiny.warehouse)
    assert report.dates_added == 0 and report.views == list(warehouse.VIEWS)
    assert tiny.snapshot() == before
    assert tiny.query("SELECT COUNT(*) AS n FROM dim_shift") == [{"n": 3}]
    if tiny.warehouse.dialect.name == "postgresql":
        with tiny.warehouse.connect() as conn:
            comment = conn.execute(text("SELECT obj_description('kpi_oee_daily'::regclass)")).scalar_one()
        assert "oee             = availability x performance x quality" in comment
