"""The whole ERP <-> MES loop on the demo factory, on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, func, select, text, update
from sqlalchemy.engine import URL

from demo.setup import init_demo
from etl.config.flows import LoadSpec, Project
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.core.errors import FlowBusy, SchemaDriftError, StepFailed
from etl.dialects.base import lock_key
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import ledger, quarantine
from etl.sync.runner import RunOptions, RunResult, run_flow

pytestmark = pytest.mark.slow

ORDERS = 240
# The demo factory's clock for this file: the rows its tests write by hand are dated against it.
DEMO_AS_OF = datetime(2026, 11, 20, 8, 0)


@dataclass
class Demo:
    project: Project
    connections: Connections
    erp: Engine
    mes: Engine
    mappings: Path

    def run(self, flow: str, **options: object) -> RunResult:
        return run_flow(self.project, flow, self.connections, RunOptions(**options))  # type: ignore[arg-type]

    def run_all(self, **options: object) -> dict[str, RunResult]:
        """Every ERP <-> MES flow in dependency order (the warehouse has tests of its own)."""
        return {name: self.run(name, **options) for name, flow in self.project.flows.items() if flow.direction != "warehouse"}

    def reload(self) -> None:
        self.project = load_project(self.mappings)


def _table(engine: Engine, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=engine)


def _rows(engine: Engine, name: str, order_by: str | None = None) -> list[dict]:
    table = _table(engine, name)
    stmt = select(table)
    if order_by:
        stmt = stmt.order_by(table.c[order_by])
    with engine.connect() as conn:
        return [dict(r._mapping) for r in conn.execute(stmt)]


def _count(engine: Engine, name: str, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {name} {where}")).scalar_one())


@pytest.fixture(params=["sqlite", "postgresql", "mariadb_erp"])
def demo(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Demo]:
    """A freshly generated demo factory with its own copy of mappings/ (tests edit crosswalks).

    ``mariadb_erp`` puts the ERP on MariaDB and the MES on PostgreSQL, as many plants have it.
    """
    if request.param == "sqlite":
        urls = {n: URL.create("sqlite", database=str(tmp_path / f"{n}.db")) for n in ("erp", "mes", "warehouse")}
    elif request.param == "postgresql":
        make: Callable[[str], URL] = request.getfixturevalue("pg_database")
        urls = {n: make(n) for n in ("erp", "mes", "warehouse")}
    else:
        make_pg: Callable[[str], URL] = request.getfixturevalue("pg_database")
        make_maria: Callable[[str], URL] = request.getfixturevalue("mariadb_database")
        urls = {"erp": make_maria("erp"), "mes": make_pg("mes"), "warehouse": make_pg("warehouse")}
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO_ROOT / "mappings", mappings)
    shutil.copytree(REPO_ROOT / "expectations", tmp_path / "expectations")
    init_demo(
        erp_url=urls["erp"].render_as_string(hide_password=False),
        mes_url=urls["mes"].render_as_string(hide_password=False),
        warehouse_url=urls["warehouse"].render_as_string(hide_password=False),
        orders=ORDERS, seed=7, connections_file=tmp_path / "connections.json", as_of=DEMO_AS_OF,
    )
    connections = Connections({"erp_db": urls["erp"], "mes_db": urls["mes"], "warehouse_db": urls["warehouse"]})
    yield Demo(load_project(mappings), connections, connections.engine("erp_db"), connections.engine("mes_db"), mappings)
    connections.dispose()


def test_full_sync_then_rerun_changes_nothing(demo: Demo) -> None:
    first = demo.run_all()
    assert all(r.record.outcome == "success" for r in first.values())

    shop_floor_orders = _count(demo.erp, "production_order", "WHERE status IN ('REL','TECO','CLSD','CNCL')")
    quarantined_orders = first["production_orders"].record.counts.rows_new_in_quarantine
    assert _count(demo.mes, "work_order") == shop_floor_orders - quarantined_orders > 0
    assert first["confirmations"].record.counts.rows_loaded > 0
    assert first["materials"].record.counts.rows_loaded == _count(demo.erp, "material") - 1  # MAT-A00001 waits

    # Every reading of the source is accounted for: loaded, unchanged or quarantined.
    for name, result in first.items():
        c = result.record.counts
        assert c.rows_read + c.rows_retried >= c.rows_loaded + c.rows_unchanged, name

    snapshot = {t: _rows(demo.mes, t) for t in ("item", "work_order", "work_order_component")}
    erp_snapshot = {t: _rows(demo.erp, t) for t in ("if_confirmation", "if_goods_movement", "if_quality_result")}
    backlog = {n: r.record.counts.quarantine_backlog for n, r in first.items()}

    second = demo.run_all()
    for name, result in second.items():
        assert result.record.counts.rows_loaded == 0, name
        assert result.record.counts.rows_new_in_quarantine == 0, name
        assert result.record.counts.quarantine_backlog == backlog[name], name
    assert snapshot == {t: _rows(demo.mes, t) for t in snapshot}
    assert erp_snapshot == {t: _rows(demo.erp, t) for t in erp_snapshot}

    with demo.erp.connect() as conn:
        runs = conn.execute(select(func.count()).select_from(ledger).where(ledger.c.outcome == "success")).scalar_one()
    assert runs == 2 * len([f for f in demo.project.flows.values() if f.target.connection == "erp_db" and f.direction != "warehouse"])


def test_dirty_material_waits_in_quarantine_and_flows_after_the_crosswalk_fix(demo: Demo) -> None:
    demo.run_all()
    with demo.mes.connect() as conn:
        waiting = conn.execute(
            select(quarantine.c.flow, quarantine.c.source_key, quarantine.c.reason).where(quarantine.c.status == "waiting")
        ).all()
    materials = [w for w in waiting if w.flow == "materials"]
    assert [w.source_key for w in materials] == ["material_no=MAT-A00001"]
    assert "crosswalk 'material' has no MES code for 'MAT-A00001'" in materials[0].reason
    dirty = [w for w in waiting if w.flow == "order_components" and "MAT-A00001" in w.reason]
    assert dirty

    (demo.mappings / "crosswalks" / "material.csv").write_text("erp,mes\nMAT-A00001,200001\n", encoding="utf-8")
    demo.reload()
    results = demo.run_all()
    assert results["materials"].record.counts.rows_released == 1
    assert results["boms"].record.counts.quarantine_backlog == 0
    assert _count(demo.mes, "item", "WHERE item_code = '200001'") == 1
    loaded = _count(demo.mes, "work_order_component", "WHERE component_item_code = '200001'")
    assert 0 < loaded == results["order_components"].record.counts.rows_released
    # What still waits are components of orders not released to the shop floor (CRTD):
    # they wait for their work order, and flow when the ERP releases the order.
    with demo.mes.connect() as conn:
        still = conn.execute(
            select(quarantine.c.source_key, quarantine.c.reason)
            .where(quarantine.c.status == "waiting", quarantine.c.flow == "order_components")
        ).all()
    with demo.erp.connect() as conn:
        unreleased = set(conn.execute(text("SELECT order_no FROM production_order WHERE status = 'CRTD'")).scalars())
    assert all("not on the target yet" in w.reason for w in still)
    assert {w.source_key.split("order_no=")[1] for w in still} <= unreleased


def test_incremental_change_cancellation_and_hard_delete(demo: Demo) -> None:
    demo.run_all()
    orders = _table(demo.erp, "production_order")
    with demo.erp.begin() as conn:
        latest = conn.execute(select(func.max(orders.c.updated_at))).scalar_one()
        picked = conn.execute(
            select(orders.c.order_no, orders.c.quantity, orders.c.unit)
            .where(orders.c.status == "REL", orders.c.unit == "PC").order_by(orders.c.order_no).limit(3)
        ).all()
        changed, cancelled, deleted = (p.order_no for p in picked)
        later = latest + timedelta(minutes=5)
        conn.execute(update(orders).where(orders.c.order_no == changed).values(quantity=Decimal("777"), updated_at=later))
        conn.execute(update(orders).where(orders.c.order_no == cancelled).values(status="CNCL", updated_at=later))
        conn.execute(orders.delete().where(orders.c.order_no == deleted))

    result = demo.run("production_orders", keyset=True)
    assert result.record.counts.rows_loaded == 2
    assert result.record.counts.rows_deleted == 1
    wo = {r["wo_no"]: r for r in _rows(demo.mes, "work_order")}
    as_wo = lambda no: "WO-2026-" + no[1:]  # noqa: E731
    assert wo[as_wo(changed)]["planned_qty"] == Decimal("777.000")
    assert wo[as_wo(cancelled)]["status"] == "CANCELLED"
    assert wo[as_wo(deleted)]["is_deleted"] in (True, 1)
    assert sum(1 for r in wo.values() if r["is_deleted"]) == 1


def test_round_trip_quantities_units_and_times_by_hand(demo: Demo) -> None:
    """ERP order 12.5 KG -> MES 12500 g; MES report 12000 g good + 500 g scrap -> ERP 12 KG + 0.5 KG."""
    demo.run_all()
    materials = _table(demo.erp, "material")
    with demo.erp.connect() as conn:
        kg_material = conn.execute(
            select(materials.c.material_no).where(materials.c.base_unit == "KG", materials.c.material_no != "MAT-A00001")
            .order_by(materials.c.material_no).limit(1)
        ).scalar_one()
    with demo.erp.begin() as conn:
        conn.execute(_table(demo.erp, "production_order").insert().values(
            order_no="1900001", material_no=kg_material, plant="1000", quantity=Decimal("12.5"), unit="KG",
            planned_start=datetime(2026, 11, 21, 8, 0), planned_end=datetime(2026, 11, 21, 16, 30),
            status="REL", created_at=datetime(2026, 11, 20, 9, 0), updated_at=datetime(2026, 11, 20, 9, 0),
        ))
    assert demo.run("production_orders").record.counts.rows_loaded == 1
    wo = next(r for r in _rows(demo.mes, "work_order") if r["wo_no"] == "WO-2026-900001")
    assert wo["item_code"] == "1" + kg_material[5:]
    assert (wo["planned_qty"], wo["unit"], wo["plant_code"], wo["status"]) == (Decimal("12500.000"), "g", "SH01", "READY")
    assert wo["planned_start_utc"] == datetime(2026, 11, 21, 0, 0)
    assert wo["planned_end_utc"] == datetime(2026, 11, 21, 8, 30)

    with demo.mes.begin() as conn:
        conn.execute(_table(demo.mes, "operation_report").insert().values(
            report_id=9_000_001, report_no="R900000001", wo_no="WO-2026-900001", step_no=10,
            equipment_code="EQ-SH01-MIX-01", good_qty=Decimal("12000"), scrap_qty=Decimal("500"), unit="g",
            scrap_reason="S02", operator_badge="00001001",
            start_time_utc=datetime(2026, 11, 21, 0, 15), end_time_utc=datetime(2026, 11, 21, 7, 45),
            updated_at=datetime(2026, 11, 21, 7, 50),
        ))
    assert demo.run("confirmations").record.counts.rows_loaded == 1
    conf = next(r for r in _rows(demo.erp, "if_confirmation") if r["posting_key"] == "MES-OPR-R900000001")
    assert (conf["order_no"], conf["operation_no"], conf["work_center"]) == ("1900001", "0010", "WC-MIX1")
    assert (conf["yield_qty"], conf["scrap_qty"], conf["unit"]) == (Decimal("12.000"), Decimal("0.500"), "KG")
    assert conf["start_time"] == datetime(2026, 11, 21, 8, 15)
    assert conf["end_time"] == datetime(2026, 11, 21, 15, 45)

    # A re-sent report is not posted twice.
    assert demo.run("confirmations", since=datetime(2026, 1, 1)).record.counts.rows_loaded == 0


def test_rows_sharing_the_watermark_are_not_lost_across_chunks_and_runs(demo: Demo) -> None:
    flow = demo.project.flows["production_orders"]
    small = flow.model_copy(update={"load": LoadSpec(chunk_size=7)})
    demo.project = demo.project.model_copy(update={"flows": {**demo.project.flows, "production_orders": small}})
    demo.run_all()
    orders = _table(demo.erp, "production_order")
    with demo.erp.begin() as conn:
        mark = conn.execute(select(func.max(orders.c.updated_at))).scalar_one()
        template = dict(conn.execute(select(orders).where(orders.c.status == "REL").limit(1)).mappings().one())
        # Committed after the run, stamped with the very timestamp the watermark holds, and
        # one stamped a little earlier (a long transaction in the ERP): both must arrive.
        for i in range(20):
            conn.execute(orders.insert().values({**template, "order_no": f"18000{i:02d}", "updated_at": mark}))
        conn.execute(orders.insert().values({**template, "order_no": "1800099", "updated_at": mark - timedelta(minutes=3)}))
    result = demo.run("production_orders")
    assert result.record.counts.rows_loaded == 21
    assert _count(demo.mes, "work_order", "WHERE wo_no LIKE 'WO-2026-8000%'") == 21


def test_report_waits_for_its_order_then_flows(demo: Demo) -> None:
    demo.run_all()
    reports = _table(demo.mes, "operation_report")
    with demo.mes.begin() as conn:
        later = conn.execute(select(func.max(reports.c.updated_at))).scalar_one() + timedelta(minutes=1)
        conn.execute(reports.insert().values(
            report_id=9_100_001, report_no="R910000001", wo_no="WO-2026-910001", step_no=10,
            equipment_code="EQ-SH01-ASM-01", good_qty=Decimal("5"), scrap_qty=Decimal("0"), unit="pcs",
            start_time_utc=datetime(2026, 11, 19, 1, 0), end_time_utc=datetime(2026, 11, 19, 2, 0),
            updated_at=later,
        ))
    waiting = demo.run("confirmations")
    assert waiting.record.counts.rows_new_in_quarantine == 1
    with demo.erp.connect() as conn:
        reason = conn.execute(select(quarantine.c.reason).where(quarantine.c.source_key == "report_no=R910000001")).scalar_one()
    assert "production_order.order_no = '1910001' not on the target yet" in reason

    fg = _rows(demo.erp, "production_order")[0]
    with demo.erp.begin() as conn:
        conn.execute(_table(demo.erp, "production_order").insert().values({**fg, "order_no": "1910001", "status": "REL"}))
    released = demo.run("confirmations")
    assert released.record.counts.rows_released == 1
    assert released.record.counts.quarantine_backlog == waiting.record.counts.quarantine_backlog - 1
    assert _count(demo.erp, "if_confirmation", "WHERE posting_key = 'MES-OPR-R910000001'") == 1


def test_duplicate_report_is_posted_once(demo: Demo) -> None:
    demo.run_all()
    reports = _rows(demo.mes, "operation_report")
    assert len({r["report_no"] for r in reports}) == len(reports) - 1  # the planted duplicate
    posted = _count(demo.erp, "if_confirmation", "WHERE posting_key LIKE 'MES-OPR-%'")
    with demo.erp.connect() as conn:
        waiting = conn.execute(
            select(func.count()).select_from(quarantine).where(quarantine.c.flow == "confirmations", quarantine.c.status == "waiting")
        ).scalar_one()
    assert posted + waiting == len(reports) - 1


def test_dry_run_writes_nothing_but_its_ledger_row(demo: Demo) -> None:
    result = demo.run("materials", dry_run=True)
    assert result.record.outcome == "dry_run"
    assert result.record.counts.rows_loaded > 0
    assert _count(demo.mes, "item") == 0
    assert _count(demo.mes, "etl_quarantine") == 0
    assert _count(demo.mes, "etl_watermark") == 0
    assert _count(demo.mes, "etl_ledger", "WHERE outcome = 'dry_run'") == 1


def test_full_refresh_reads_everything_again(demo: Demo) -> None:
    with demo.erp.begin() as conn:
        conn.execute(text("UPDATE work_center SET updated_at = :t"), {"t": datetime(2025, 1, 1)})
        conn.execute(text("UPDATE work_center SET updated_at = :t WHERE work_center = 'WC-PKG2'"), {"t": datetime(2026, 1, 1)})
    demo.run("work_centers")
    with demo.mes.begin() as conn:
        conn.execute(text("UPDATE equipment SET name = 'changed by hand'"))
    # The lookback re-reads only WC-PKG2 and restores it; the hand edits elsewhere stay ...
    assert demo.run("work_centers").record.counts.rows_loaded == 1
    # ... until a full refresh reads everything again.
    result = demo.run("work_centers", full_refresh=True)
    assert result.record.counts.rows_loaded == _count(demo.erp, "work_center") - 1
    assert _count(demo.mes, "equipment", "WHERE name = 'changed by hand'") == 0


def test_schema_drift_stops_before_any_write(demo: Demo) -> None:
    with demo.erp.begin() as conn:
        conn.execute(text("ALTER TABLE work_center RENAME COLUMN description TO descr"))
    with pytest.raises(StepFailed) as failure:
        demo.run("work_centers")
    message = str(failure.value)
    assert "work_center.description not found" in message and "'descr'" in message
    assert "work_centers.yaml" in message
    assert _count(demo.mes, "equipment") == 0
    assert isinstance(failure.value.cause, SchemaDriftError)
    assert _count(demo.mes, "etl_ledger", "WHERE outcome = 'failed'") == 1


# SQLite serialises writers with its database lock; the flow lock is PostgreSQL's advisory lock.
@pytest.mark.parametrize("demo", ["postgresql"], indirect=True)
def test_second_run_of_a_flow_exits_while_the_first_holds_the_lock(demo: Demo) -> None:
    with demo.mes.connect() as holder:
        holder.execute(select(func.pg_advisory_lock(lock_key("materials"))))
        with pytest.raises(StepFailed) as failure:
            demo.run("materials")
        holder.execute(select(func.pg_advisory_unlock(lock_key("materials"))))
    assert isinstance(failure.value.cause, FlowBusy)
    assert failure.value.retryable
    assert _count(demo.mes, "item") == 0
    assert _count(demo.mes, "etl_ledger", "WHERE outcome = 'busy'") == 1
    assert demo.run("materials").record.outcome == "success"


def test_plants_limit_a_run_in_both_directions(demo: Demo) -> None:
    demo.run_all(plants=["2000"])
    plants = {r["plant_code"] for r in _rows(demo.mes, "work_order")}
    assert plants == {"SZ01"}
    movements = _rows(demo.erp, "if_goods_movement")
    assert movements and {r["plant"] for r in movements} == {"2000"}


STEPS = [
    "lock", "check_schema", "read_state", "stage", "stage_first_chunk", "stage_chunk", "retry_quarantine",
    "resolve_duplicates", "merge", "deletes", "write_state", "write_ledger", "commit",
]


@pytest.mark.parametrize("demo", ["postgresql"], indirect=True)
@pytest.mark.parametrize("transform", ["python", "sql"])
def test_a_failure_at_any_step_leaves_the_old_state(demo: Demo, transform: str) -> None:
    """Fail the production_orders flow at every step boundary, on both transform paths: the
    target keeps its old state, the ledger says where it failed, and the next run loads exactly
    what a clean run would."""
    steps = [s for s in STEPS if transform == "python" or s != "stage_chunk"]  # SQL: one pass
    small = demo.project.flows["production_orders"].model_copy(
        update={"load": LoadSpec(chunk_size=50, transform=transform)}  # type: ignore[arg-type]
    )
    demo.project = demo.project.model_copy(update={"flows": {**demo.project.flows, "production_orders": small}})
    for name in ("materials", "work_centers"):
        demo.run(name)

    class Injected(RuntimeError):
        pass

    for step in steps:
        def hook(current: str, step: str = step) -> None:
            if current == step:
                raise Injected(f"injected at {step}")

        with pytest.raises(StepFailed) as failure:
            run_flow(demo.project, "production_orders", demo.connections, RunOptions(), hook=hook)
        assert failure.value.step == step
        assert _count(demo.mes, "work_order") == 0, step
        assert _count(demo.mes, "etl_watermark", "WHERE flow = 'production_orders'") == 0, step
    assert _count(demo.mes, "etl_ledger", "WHERE flow = 'production_orders' AND outcome = 'failed'") == len(steps)

    result = demo.run("production_orders")
    assert result.record.options["transform"] == transform
    shop_floor = _count(demo.erp, "production_order", "WHERE status IN ('REL','TECO','CLSD','CNCL')")
    assert result.record.counts.rows_loaded == shop_floor - result.record.counts.rows_new_in_quarantine
    assert _count(demo.mes, "work_order") == result.record.counts.rows_loaded


def _force(project: Project, transform: str) -> Project:
    flows = {
        name: flow.model_copy(update={"load": flow.load.model_copy(update={"transform": transform})})
        for name, flow in project.flows.items()
    }
    return project.model_copy(update={"flows": flows})


@pytest.mark.parametrize("demo", ["postgresql"], indirect=True)
def test_sql_and_python_paths_load_and_quarantine_the_same(demo: Demo, pg_database: Callable[[str], URL], tmp_path: Path) -> None:
    """The same dirty factory through both transform paths: identical targets and quarantine."""
    twin_urls = {n: pg_database(f"twin_{n}") for n in ("erp", "mes", "warehouse")}
    init_demo(
        erp_url=twin_urls["erp"].render_as_string(hide_password=False),
        mes_url=twin_urls["mes"].render_as_string(hide_password=False),
        warehouse_url=twin_urls["warehouse"].render_as_string(hide_password=False),
        orders=ORDERS, seed=7, connections_file=tmp_path / "twin.json", as_of=DEMO_AS_OF,
    )
    twin = Connections({"erp_db": twin_urls["erp"], "mes_db": twin_urls["mes"], "warehouse_db": twin_urls["warehouse"]})
    sync = [n for n, f in demo.project.flows.items() if f.direction != "warehouse"]
    python_project, sql_project = _force(demo.project, "python"), _force(demo.project, "auto")
    paths = {}
    for name in sync:
        python_run = run_flow(python_project, name, demo.connections)
        sql_run = run_flow(sql_project, name, twin)
        paths[name] = sql_run.record.options["transform"]
        for field in ("rows_read", "rows_loaded", "rows_new_in_quarantine"):
            assert getattr(python_run.record.counts, field) == getattr(sql_run.record.counts, field), (name, field)
    assert list(paths.values()).count("sql") >= 8, paths  # most demo flows qualify for SQL

    twin_mes, twin_erp = twin.engine("mes_db"), twin.engine("erp_db")
    for engine, other, tables in (
        (demo.mes, twin_mes, ["item", "item_bom", "equipment", "route_step", "operator", "work_order", "work_order_component"]),
        (demo.erp, twin_erp, ["if_confirmation", "if_goods_movement", "if_quality_result"]),
    ):
        for table in tables:
            key = next(iter(_table(engine, table).primary_key.columns)).name
            assert _rows(engine, table, key) == _rows(other, table, key), table
        query = select(quarantine.c.flow, quarantine.c.source_key, quarantine.c.reason).order_by(
            quarantine.c.flow, quarantine.c.source_key
        )
        with engine.connect() as a, other.connect() as b:
            assert a.execute(query).all() == b.execute(query).all()
    twin.dispose()


def test_a_run_limited_to_one_plant_never_deletes_the_other_plants_orders(demo: Demo) -> None:
    demo.run_all()
    before = _count(demo.mes, "work_order", "WHERE is_deleted")
    result = demo.run("production_orders", plants=["2000"], keyset=True)
    assert result.record.counts.rows_deleted == 0
    assert _count(demo.mes, "work_order", "WHERE is_deleted") == before == 0
