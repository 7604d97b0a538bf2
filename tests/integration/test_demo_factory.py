"""The synthetic factory: deterministic, consistent with the crosswalks, dirty where it should be."""

from __future__ import annotations

import csv
import re
import sqlite3
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml

from demo.factory import DIRTY_MATERIAL_NO, FactoryStats, generate
from demo.schema import REPO_ROOT, create_demo_schema, schema_tables

AS_OF = datetime(2026, 11, 20, 8, 0)
ORDERS = 300
CROSSWALKS = REPO_ROOT / "mappings" / "crosswalks"
PG_ADMIN_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
MES_STATUSES = {"REL", "TECO", "CLSD"}
CJK = re.compile(r"[\u4e00-\u9fff]")


@dataclass(frozen=True)
class Factory:
    erp: sa.Engine
    mes: sa.Engine
    stats: FactoryStats
    erp_file: Path


def build_factory(directory: Path, *, orders: int, seed: int) -> Factory:
    directory.mkdir(parents=True, exist_ok=True)
    erp = sa.create_engine(f"sqlite:///{directory / 'erp.db'}")
    mes = sa.create_engine(f"sqlite:///{directory / 'mes.db'}")
    create_demo_schema(erp, "erp")
    create_demo_schema(mes, "mes")
    stats = generate(erp, mes, orders=orders, seed=seed, as_of=AS_OF)
    return Factory(erp, mes, stats, directory / "erp.db")


@pytest.fixture(scope="module")
def factories(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Factory]]:
    """Two runs with seed 42 and one with seed 7, each in its own pair of SQLite files."""
    root = tmp_path_factory.mktemp("demo_factory")
    built = {
        "first": build_factory(root / "first", orders=ORDERS, seed=42),
        "again": build_factory(root / "again", orders=ORDERS, seed=42),
        "other": build_factory(root / "other", orders=ORDERS, seed=7),
    }
    yield built
    for factory in built.values():
        factory.erp.dispose()
        factory.mes.dispose()


@pytest.fixture(scope="module")
def factory(factories: dict[str, Factory]) -> Factory:
    return factories["first"]


def dump(engine: sa.Engine) -> dict[str, list[tuple]]:
    """Every table's rows in primary-key order."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    with engine.connect() as conn:
        return {
            name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for name, t in metadata.tables.items()
        }


def rows(engine: sa.Engine, sql: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)))


def crosswalk(name: str) -> dict[str, str]:
    with (CROSSWALKS / name).open(encoding="utf-8", newline="") as f:
        return {r["erp"]: r["mes"] for r in csv.DictReader(f)}


def rule(name: str, side: str) -> re.Pattern[str]:
    spec = yaml.safe_load((CROSSWALKS / name).read_text(encoding="utf-8"))
    return re.compile(spec["rule"][side]["pattern"])


def erp_order_no(wo_no: str) -> str:
    match = rule("order_number.yaml", "mes").match(wo_no)
    assert match, wo_no
    return "1" + match.group("seq")


def normalized(material_no: str) -> str:
    return material_no.strip().upper()


def test_same_seed_gives_identical_tables(factories: dict[str, Factory]) -> None:
    first, again = factories["first"], factories["again"]
    assert dump(first.erp) == dump(again.erp)
    assert dump(first.mes) == dump(again.mes)


def test_other_seed_gives_other_data(factories: dict[str, Factory]) -> None:
    first, other = dump(factories["first"].erp), dump(factories["other"].erp)
    assert first["production_order"] != other["production_order"]
    assert first["material"] != other["material"]
    assert dump(factories["first"].mes)["operation_report"] != dump(factories["other"].mes)["operation_report"]


def test_stats_count_the_rows_written(factory: Factory) -> None:
    for engine, counts, name in ((factory.erp, factory.stats.erp, "erp"), (factory.mes, factory.stats.mes, "mes")):
        assert set(counts) == set(schema_tables(name))
        for table, expected in counts.items():
            assert rows(engine, f"SELECT COUNT(*) FROM {table}")[0][0] == expected, table
    assert factory.stats.erp["production_order"] == ORDERS
    assert factory.stats.erp["material"] == 60 + 1
    assert factory.stats.erp["work_center"] == 8
    assert factory.stats.erp["employee"] == 40
    assert factory.stats.mes["operation_report"] > 0


def test_sync_targets_stay_empty(factory: Factory) -> None:
    for table in ("if_confirmation", "if_goods_movement", "if_quality_result"):
        assert factory.stats.erp[table] == 0
    for table in ("item", "item_bom", "equipment", "route_step", "operator", "work_order", "work_order_component"):
        assert factory.stats.mes[table] == 0


def test_order_components_are_the_bom_explosion(factory: Factory) -> None:
    bom: dict[str, list[sa.Row]] = {}
    for line in rows(factory.erp, "SELECT * FROM bom_item ORDER BY parent_material_no, item_no"):
        bom.setdefault(line.parent_material_no, []).append(line)
    orders = rows(factory.erp, "SELECT order_no, material_no, quantity FROM production_order")
    components = {(c.order_no, c.item_no): c for c in rows(factory.erp, "SELECT * FROM order_component")}
    assert len(components) == sum(len(bom[normalized(o.material_no)]) for o in orders)
    for order in orders:
        for line in bom[normalized(order.material_no)]:
            component = components[(order.order_no, line.item_no)]
            quantity = Decimal(str(order.quantity)) / Decimal(str(line.base_quantity)) * Decimal(str(line.quantity))
            assert Decimal(str(component.required_qty)) == quantity.quantize(Decimal("0.001"), ROUND_HALF_UP)
            assert component.component_material_no == line.component_material_no
            assert component.unit == line.unit


def test_master_data_follows_the_crosswalks(factory: Factory) -> None:
    material_rule = rule("material.yaml", "erp")
    materials = rows(factory.erp, "SELECT material_no, material_type, base_unit FROM material")
    irregular = [m.material_no for m in materials if not material_rule.match(m.material_no)]
    assert irregular == [DIRTY_MATERIAL_NO]
    allowed_units = {"FERT": {"PC"}, "HALB": {"PC", "KG"}, "ROH": {"KG", "M", "PC"}}
    assert all(m.base_unit in allowed_units[m.material_type] for m in materials)
    plants = crosswalk("plant.csv")
    for wc in rows(factory.erp, "SELECT work_center, plant FROM work_center"):
        assert wc.work_center in crosswalk("work_center.csv")
        assert plants[wc.plant] in crosswalk("work_center.csv")[wc.work_center]
    routing_centers = {r[0] for r in rows(factory.erp, "SELECT DISTINCT work_center FROM routing_operation")}
    assert routing_centers <= {wc for wc in crosswalk("work_center.csv") if wc.endswith("1")}


def test_mes_rows_belong_to_released_orders(factory: Factory) -> None:
    orders = {o.order_no: o for o in rows(factory.erp, "SELECT order_no, material_no, status FROM production_order")}
    equipment = set(crosswalk("work_center.csv").values())
    item_rule = rule("material.yaml", "mes")
    for table in ("operation_report", "quality_inspection", "material_issue", "fg_receipt"):
        for (wo_no,) in rows(factory.mes, f"SELECT DISTINCT wo_no FROM {table}"):
            order = orders[erp_order_no(wo_no)]
            assert order.status in MES_STATUSES, (table, wo_no)
            assert order.material_no == normalized(order.material_no), (table, wo_no)
    for table in ("quality_inspection", "material_issue", "fg_receipt"):
        assert all(item_rule.match(r[0]) for r in rows(factory.mes, f"SELECT item_code FROM {table}"))
    assert {r[0] for r in rows(factory.mes, "SELECT DISTINCT equipment_code FROM operation_report")} <= equipment
    assert {r[0] for r in rows(factory.mes, "SELECT DISTINCT equipment_code FROM equipment_state_log")} == equipment
    assert {r[0] for r in rows(factory.mes, "SELECT DISTINCT unit FROM material_issue")} <= {"g", "kg", "pcs", "m"}
    assert {r[0] for r in rows(factory.mes, "SELECT DISTINCT plant_code FROM material_issue")} <= set(
        crosswalk("plant.csv").values()
    )


def test_completed_orders_report_their_quantity(factory: Factory) -> None:
    last_step = rows(factory.mes, """
        SELECT r.wo_no, SUM(r.good_qty + r.scrap_qty) AS total, MAX(r.unit) AS unit
        FROM operation_report r
        WHERE r.step_no = (SELECT MAX(x.step_no) FROM operation_report x WHERE x.wo_no = r.wo_no)
          AND r.report_id NOT IN (SELECT MAX(report_id) FROM operation_report GROUP BY report_no HAVING COUNT(*) > 1)
        GROUP BY r.wo_no
    """)
    orders = {o.order_no: o for o in rows(factory.erp, "SELECT order_no, quantity, unit, status FROM production_order")}
    receipts = {r.wo_no: r.qty for r in rows(factory.mes, "SELECT wo_no, qty FROM fg_receipt")}
    routing_end = dict(rows(factory.erp, "SELECT material_no, MAX(operation_no) FROM routing_operation GROUP BY material_no"))
    materials = dict(rows(factory.erp, "SELECT order_no, material_no FROM production_order"))
    reached = dict(rows(factory.mes, "SELECT wo_no, MAX(step_no) FROM operation_report GROUP BY wo_no"))
    completed = 0
    for wo_no, total, unit in last_step:
        order = orders[erp_order_no(wo_no)]
        planned = order.quantity * (1000 if order.unit == "KG" else 1)
        assert unit == {"KG": "g", "PC": "pcs"}[order.unit]
        if order.status in ("TECO", "CLSD"):
            completed += 1
            assert abs(total - planned) <= planned * 0.031 + 1, wo_no
            assert wo_no in receipts
        elif reached[wo_no] == int(routing_end[materials[erp_order_no(wo_no)]]):
            # Still running at its last operation: short of the planned quantity. (An earlier
            # operation may well have made more: it makes up for the scrap of the later ones.)
            assert total < planned, wo_no
    assert completed > 0


def test_dirty_material_is_in_a_released_order(factory: Factory) -> None:
    assert rows(factory.erp, f"SELECT COUNT(*) FROM bom_item WHERE component_material_no = '{DIRTY_MATERIAL_NO}'")[0][0]
    released = rows(factory.erp, f"""
        SELECT o.order_no FROM order_component c JOIN production_order o ON o.order_no = c.order_no
        WHERE c.component_material_no = '{DIRTY_MATERIAL_NO}' AND o.status = 'REL'
    """)
    assert released
    issued_items = {r[0] for r in rows(factory.mes, "SELECT DISTINCT item_code FROM material_issue")}
    assert all(re.fullmatch(r"1\d{5}", code) for code in issued_items)


def test_careless_material_numbers_are_present(factory: Factory) -> None:
    known = {r[0] for r in rows(factory.erp, "SELECT material_no FROM material")}
    careless = [
        o.material_no for o in rows(factory.erp, "SELECT material_no FROM production_order")
        if o.material_no != normalized(o.material_no)
    ]
    assert any(m != m.rstrip() for m in careless)
    assert any(m.rstrip() != m.rstrip().upper() for m in careless)
    assert all(normalized(m) in known for m in careless)


def test_exactly_one_operation_report_is_duplicated(factory: Factory) -> None:
    duplicated = rows(factory.mes, "SELECT report_no FROM operation_report GROUP BY report_no HAVING COUNT(*) > 1")
    assert len(duplicated) == 1
    copies = rows(factory.mes, f"SELECT * FROM operation_report WHERE report_no = '{duplicated[0][0]}'")
    assert len(copies) == 2
    assert copies[0].report_id != copies[1].report_id
    assert dict(copies[0]._mapping, report_id=0) == dict(copies[1]._mapping, report_id=0)


def test_nulls_where_the_schema_allows_them(factory: Factory) -> None:
    checks = {
        factory.erp: (
            "material WHERE description_en IS NULL", "material WHERE description_zh IS NULL",
            "material WHERE material_group IS NULL", "material WHERE standard_cost IS NULL",
            "employee WHERE work_center IS NULL",
        ),
        factory.mes: (
            "operation_report WHERE operator_badge IS NULL", "operation_report WHERE scrap_reason IS NULL",
            "equipment_state_log WHERE end_utc IS NULL",
        ),
    }
    for engine, conditions in checks.items():
        for condition in conditions:
            assert rows(engine, f"SELECT COUNT(*) FROM {condition}")[0][0] > 0, condition
    assert rows(factory.mes, "SELECT COUNT(*) FROM operation_report WHERE (scrap_qty = 0) != (scrap_reason IS NULL)")[0][0] == 0


def test_nothing_is_updated_after_as_of(factory: Factory) -> None:
    for table in ("material", "bom_item", "work_center", "routing_operation", "employee",
                  "production_order", "order_component", "stock_level"):
        latest = rows(factory.erp, f"SELECT MAX(updated_at) FROM {table}")[0][0]
        assert datetime.fromisoformat(latest) <= AS_OF, table
    for table in ("operation_report", "quality_inspection", "material_issue", "fg_receipt", "equipment_state_log"):
        latest = rows(factory.mes, f"SELECT MAX(updated_at) FROM {table}")[0][0]
        assert datetime.fromisoformat(latest) <= AS_OF - timedelta(hours=8), table
    disordered = rows(factory.mes, """
        SELECT COUNT(*) FROM operation_report
        WHERE NOT (start_time_utc < end_time_utc AND end_time_utc <= updated_at)
    """)
    assert disordered[0][0] == 0
    orders = rows(factory.erp, "SELECT * FROM production_order")
    assert all(o.created_at <= o.updated_at for o in orders)
    start = [datetime.fromisoformat(o.planned_start) for o in orders]
    assert min(start) >= AS_OF - timedelta(days=30)
    assert max(start) <= AS_OF + timedelta(days=10)
    assert all(o.updated_at.endswith(".000000") for o in orders)


def test_many_orders_share_an_updated_at(factory: Factory) -> None:
    counts = Counter(r[0] for r in rows(factory.erp, "SELECT updated_at FROM production_order"))
    assert counts.most_common(1)[0][1] >= 10
    assert sum(n for n in counts.values() if n > 1) >= ORDERS // 4


def test_status_mix(factory: Factory) -> None:
    statuses = Counter(r[0] for r in rows(factory.erp, "SELECT status FROM production_order"))
    assert set(statuses) == {"CRTD", "REL", "TECO", "CLSD", "CNCL"}
    # Released over the last 14 days, planned for the next 7: about a third not released yet.
    assert 0.2 < statuses["CRTD"] / ORDERS < 0.45
    assert statuses["TECO"] + statuses["CLSD"] > statuses["REL"] > statuses["CNCL"]


def test_the_state_log_is_the_schedule(factory: Factory) -> None:
    """Each machine's log is one unbroken timeline, and every confirmation covers RUN time of its machine."""
    log: dict[str, list[sa.Row]] = {}
    for r in rows(factory.mes, "SELECT * FROM equipment_state_log ORDER BY equipment_code, start_utc"):
        log.setdefault(r.equipment_code, []).append(r)
    for equipment, states in log.items():
        assert [s.end_utc for s in states[:-1]] == [s.start_utc for s in states[1:]], equipment
        assert states[-1].end_utc is None and all(s.end_utc for s in states[:-1]), equipment
        assert all((s.reason_code is not None) == (s.state == "DOWN") for s in states), equipment
        assert {s.state for s in states} >= {"RUN", "SETUP", "IDLE", "DOWN"}, equipment
    assert {r[0] for r in rows(factory.mes, "SELECT DISTINCT reason_code FROM equipment_state_log")} >= {"PM", "BRK-MECH"}
    outside = rows(factory.mes, """
        SELECT r.report_no FROM operation_report r
        WHERE NOT EXISTS (
            SELECT 1 FROM equipment_state_log s
            WHERE s.equipment_code = r.equipment_code AND s.state = 'RUN'
              AND s.start_utc < r.end_time_utc AND r.start_time_utc < s.end_utc
        )
    """)
    assert outside == []
    scrapped = rows(factory.mes, "SELECT SUM(scrap_qty) * 1.0 / SUM(good_qty + scrap_qty) FROM operation_report WHERE scrap_qty > 0")
    assert 0.004 < scrapped[0][0] < 0.06


def test_the_default_as_of_is_today(tmp_path: Path) -> None:
    erp = sa.create_engine(f"sqlite:///{tmp_path / 'erp.db'}")
    mes = sa.create_engine(f"sqlite:///{tmp_path / 'mes.db'}")
    create_demo_schema(erp, "erp")
    create_demo_schema(mes, "mes")
    generate(erp, mes, orders=60, seed=3)
    today = datetime.combine(datetime.now().date(), datetime.min.time())
    latest = datetime.fromisoformat(rows(erp, "SELECT MAX(updated_at) FROM production_order")[0][0])
    first, last = (datetime.fromisoformat(v) for v in rows(erp, "SELECT MIN(planned_start), MAX(planned_start) FROM production_order")[0])
    erp.dispose()
    mes.dispose()
    assert today - timedelta(days=3) < latest <= today
    assert today - timedelta(days=15) <= first and last <= today + timedelta(days=8)


def test_chinese_text_round_trips(factory: Factory) -> None:
    names = [r[0] for r in rows(factory.erp, "SELECT name FROM employee")]
    assert len(names) == 40 and all(CJK.search(n) for n in names)
    assert rows(factory.erp, f"SELECT description_zh FROM material WHERE material_no = '{DIRTY_MATERIAL_NO}'")[0][0] == "进口特种润滑脂"
    with sqlite3.connect(factory.erp_file) as raw:
        stored = raw.execute("SELECT CAST(description_zh AS BLOB) FROM material WHERE material_no = ?",
                             (DIRTY_MATERIAL_NO,)).fetchone()[0]
    assert stored.decode("utf-8") == "进口特种润滑脂"


def test_refuses_to_write_into_filled_tables(factory: Factory) -> None:
    with pytest.raises(ValueError, match="already holds rows"):
        generate(factory.erp, factory.mes, orders=ORDERS, as_of=AS_OF)


def test_reflected_types_come_back_as_python_types(factory: Factory) -> None:
    material = sa.Table("material", sa.MetaData(), autoload_with=factory.erp)
    with factory.erp.connect() as conn:
        row = conn.execute(sa.select(material).where(material.c.standard_cost.is_not(None)).limit(1)).one()
    assert isinstance(row.standard_cost, Decimal)
    assert isinstance(row.updated_at, datetime)
    assert isinstance(row.is_deleted, bool)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A throwaway PostgreSQL database, dropped afterwards; skips loudly when there is no server."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"demo_factory_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        admin.dispose()
        where = f"{admin.url.host}:{admin.url.port} as {admin.url.username}"
        pytest.skip(f"POSTGRESQL TEST NOT RUN: no server reachable at {where} ({exc.orig})")
    try:
        yield admin.url.set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if conn.dialect.server_version_info >= (13,) else ""
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"{force}')
        admin.dispose()


def test_postgres_factory(postgres_url: str, tmp_path: Path) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        create_demo_schema(engine, "erp")
        create_demo_schema(engine, "mes")
        stats = generate(engine, engine, orders=200, as_of=AS_OF)
        assert rows(engine, "SELECT COUNT(*) FROM production_order")[0][0] == 200
        bom_lines = rows(engine, """
            SELECT COUNT(*) FROM production_order o
            JOIN bom_item b ON b.parent_material_no = UPPER(TRIM(o.material_no))
        """)[0][0]
        assert rows(engine, "SELECT COUNT(*) FROM order_component")[0][0] == bom_lines == stats.erp["order_component"]
        assert rows(engine, "SELECT COUNT(*) FROM operation_report")[0][0] == stats.mes["operation_report"] > 0
        assert rows(engine, f"SELECT description_zh FROM material WHERE material_no = '{DIRTY_MATERIAL_NO}'")[0][0] == "进口特种润滑脂"

        sqlite = build_factory(tmp_path, orders=200, seed=42)
        on_postgres, on_sqlite = dump(engine), dump(sqlite.erp) | dump(sqlite.mes)
        sqlite.erp.dispose()
        sqlite.mes.dispose()
        for table in ("material", "production_order", "order_component", "operation_report", "material_issue"):
            assert on_postgres[table] == on_sqlite[table], table
    finally:
        engine.dispose()
