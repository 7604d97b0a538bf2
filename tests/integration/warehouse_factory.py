"""A tiny hand-made factory for the warehouse tests: five orders, seven reports, two machines'
state logs, a few movements and stock rows, small enough to compute every KPI by hand.

Codes follow the shipped crosswalks: ERP material MAT-000001 is MES item 100001, order 1000001
is work order WO-2026-000001, plant 1000 is SH01, WC-ASM1 is EQ-SH01-ASM-01. ERP rows carry
plant local time; MES rows UTC, written here from the local time (``mes_time``) so every number
in the tests reads in plant time.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, create_engine, select, text, update
from sqlalchemy.engine import URL, make_url

from demo.schema import create_demo_schema
from etl.config.flows import Project
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.sync.connections import Connections
from etl.warehouse import refresh as warehouse
from etl.warehouse.refresh import RefreshResult

WAREHOUSE_TABLES = [obj.name for obj in warehouse.table_objects()]


def local(moment: str) -> datetime:
    return datetime.fromisoformat(moment)


def mes_time(local_moment: str) -> datetime:
    """The UTC the MES stores for a plant-local moment (Asia/Shanghai is UTC+8, no DST)."""
    return local(local_moment) - timedelta(hours=8)


MASTER_TIME = local("2026-01-01 08:00")


def _order(order_no: str, qty: int, start: str, end: str, status: str, material: str = "MAT-000001") -> dict[str, Any]:
    return {
        "order_no": order_no, "material_no": material, "plant": "1000", "quantity": Decimal(qty), "unit": "PC",
        "planned_start": local(start), "planned_end": local(end), "status": status,
        "created_at": local("2026-02-20 08:00"), "updated_at": local("2026-02-25 08:00"),
    }


def _component(order_no: str, item_no: int, material: str, qty: str, unit: str) -> dict[str, Any]:
    return {
        "order_no": order_no, "item_no": item_no, "component_material_no": material,
        "required_qty": Decimal(qty), "unit": unit, "updated_at": local("2026-02-25 08:00"),
    }


def _material(no: str, kind: str, unit: str, zh: str, en: str, group: str, cost: str) -> dict[str, Any]:
    return {
        "material_no": no, "material_type": kind, "base_unit": unit, "description_zh": zh, "description_en": en,
        "material_group": group, "standard_cost": Decimal(cost), "is_deleted": False, "updated_at": MASTER_TIME,
    }


ERP_ROWS: dict[str, list[dict[str, Any]]] = {
    "work_center": [
        {"work_center": "WC-ASM1", "plant": "1000", "description": "总装线", "capacity_hours": Decimal("16.00"), "updated_at": MASTER_TIME},
        {"work_center": "WC-PKG1", "plant": "1000", "description": "包装线", "capacity_hours": Decimal("8.00"), "updated_at": MASTER_TIME},
    ],
    "material": [
        _material("MAT-000001", "FERT", "PC", "齿轮箱", "Gearbox", "FG-GEAR", "100.0000"),
        _material("MAT-000002", "ROH", "KG", "冷轧钢板", "Steel sheet", "RM-STEEL", "2.5000"),
        _material("MAT-000003", "ROH", "PC", "六角螺栓", "Hex bolt", "RM-FAST", "0.5000"),
    ],
    "routing_operation": [
        {"material_no": "MAT-000001", "operation_no": "0010", "work_center": "WC-ASM1", "description": "总装",
         "std_minutes_per_unit": Decimal("1.5"), "unit": "PC", "setup_minutes": Decimal("30"), "updated_at": MASTER_TIME},
        {"material_no": "MAT-000001", "operation_no": "0020", "work_center": "WC-PKG1", "description": "包装",
         "std_minutes_per_unit": Decimal("0.5"), "unit": "PC", "setup_minutes": Decimal("10"), "updated_at": MASTER_TIME},
    ],
    "production_order": [
        _order("1000001", 100, "2026-03-02 08:00", "2026-03-02 16:00", "TECO"),
        _order("1000002", 50, "2026-03-02 08:00", "2026-03-02 12:00", "TECO"),
        _order("1000003", 80, "2026-03-03 08:00", "2026-03-03 18:00", "REL"),
        # Keyed in carelessly: the flow cleans it to MAT-000001.
        _order("1000004", 60, "2099-01-05 08:00", "2099-01-05 18:00", "CRTD", material="mat-000001 "),
        _order("1000005", 10, "2026-03-04 08:00", "2026-03-04 12:00", "CNCL"),
    ],
    "order_component": [
        _component("1000001", 10, "MAT-000002", "50.000", "KG"),
        _component("1000003", 10, "MAT-000002", "40.000", "KG"),
        _component("1000003", 20, "MAT-000003", "320", "PC"),
        _component("1000004", 10, "MAT-000002", "30.000", "KG"),
        _component("1000004", 20, "MAT-000003", "240", "PC"),
        _component("1000005", 10, "MAT-000002", "100.000", "KG"),
    ],
    "stock_level": [
        {"material_no": "MAT-000002", "plant": "1000", "storage_loc": "0001", "quantity": Decimal("45.000"),
         "unit": "KG", "updated_at": local("2026-03-01 10:00")},
        {"material_no": "MAT-000002", "plant": "1000", "storage_loc": "0002", "quantity": Decimal("2.000"),
         "unit": "KG", "updated_at": local("2026-03-02 09:00")},
        {"material_no": "MAT-000003", "plant": "1000", "storage_loc": "0001", "quantity": Decimal("1000"),
         "unit": "PC", "updated_at": local("2026-03-02 09:30")},
    ],
}

ASM = "EQ-SH01-ASM-01"
PKG = "EQ-SH01-PKG-01"


def report(report_id: int, wo: str, step: int, equipment: str, good: int, scrap: int, reason: str | None,
           start: str, end: str, report_no: str | None = None, recorded: str | None = None) -> dict[str, Any]:
    """An MES operation report, times given in plant local time."""
    return {
        "report_id": report_id, "report_no": report_no or f"R{report_id:09d}", "wo_no": wo, "step_no": step,
        "equipment_code": equipment, "good_qty": Decimal(good), "scrap_qty": Decimal(scrap), "unit": "pcs",
        "scrap_reason": reason, "operator_badge": "00001001",
        "start_time_utc": mes_time(start), "end_time_utc": mes_time(end),
        "updated_at": mes_time(recorded) if recorded else mes_time(end) + timedelta(minutes=1),
    }


def _state(log_id: int, equipment: str, state: str, start: str, end: str | None, reason: str | None = None) -> dict[str, Any]:
    return {
        "log_id": log_id, "equipment_code": equipment, "state": state, "reason_code": reason,
        "start_utc": mes_time(start), "end_utc": mes_time(end) if end else None,
        "updated_at": mes_time(end or start),
    }


MES_ROWS: dict[str, list[dict[str, Any]]] = {
    "operation_report": [
        report(1, "WO-2026-000001", 10, ASM, 98, 2, "S01", "2026-03-02 08:00", "2026-03-02 10:00"),
        report(2, "WO-2026-000001", 20, PKG, 97, 1, "S02", "2026-03-02 10:30", "2026-03-02 11:30"),
        report(3, "WO-2026-000002", 10, ASM, 50, 0, None, "2026-03-02 11:00", "2026-03-02 12:00"),
        report(4, "WO-2026-000002", 20, PKG, 45, 5, "S01", "2026-03-02 12:30", "2026-03-02 13:00"),
        report(5, "WO-2026-000003", 10, ASM, 40, 0, None, "2026-03-03 08:00", "2026-03-03 09:00"),
        report(6, "WO-2026-000003", 20, PKG, 20, 0, None, "2026-03-03 09:30", "2026-03-03 10:00"),
        # A terminal no crosswalk knows: waits in quarantine, counts nowhere.
        report(7, "WO-2026-000003", 10, "EQ-SH01-XXX-09", 5, 0, None, "2026-03-03 09:00", "2026-03-03 09:30"),
        # Report R000000002 sent twice: the same fact.
        report(8, "WO-2026-000001", 20, PKG, 97, 1, "S02", "2026-03-02 10:30", "2026-03-02 11:30", report_no="R000000002"),
    ],
    "quality_inspection": [
        {"inspection_id": 1, "lot_no": "QL000000001", "wo_no": "WO-2026-000001", "item_code": "100001", "sample_size": 13,
         "defect_qty": 0, "defect_code": None, "result": "PASS", "inspected_at_utc": mes_time("2026-03-02 12:30"),
         "updated_at": mes_time("2026-03-02 12:31")},
        {"inspection_id": 2, "lot_no": "QL000000002", "wo_no": "WO-2026-000002", "item_code": "100001", "sample_size": 8,
         "defect_qty": 1, "defect_code": "D01", "result": "FAIL", "inspected_at_utc": mes_time("2026-03-02 13:45"),
         "updated_at": mes_time("2026-03-02 13:46")},
    ],
    "material_issue": [
        {"issue_id": 1, "wo_no": "WO-2026-000003", "item_code": "100002", "plant_code": "SH01", "qty": Decimal("15000"),
         "unit": "g", "lot_no": "L1", "issued_at_utc": mes_time("2026-03-03 07:00"), "updated_at": mes_time("2026-03-03 07:01")},
        {"issue_id": 2, "wo_no": "WO-2026-000003", "item_code": "100002", "plant_code": "SH01", "qty": Decimal("5"),
         "unit": "kg", "lot_no": "L2", "issued_at_utc": mes_time("2026-03-03 07:10"), "updated_at": mes_time("2026-03-03 07:11")},
    ],
    "fg_receipt": [
        {"receipt_id": 1, "wo_no": "WO-2026-000001", "item_code": "100001", "plant_code": "SH01", "qty": Decimal("97"),
         "unit": "pcs", "lot_no": "FG1", "received_at_utc": mes_time("2026-03-02 12:00"), "updated_at": mes_time("2026-03-02 12:01")},
        {"receipt_id": 2, "wo_no": "WO-2026-000002", "item_code": "100001", "plant_code": "SH01", "qty": Decimal("45"),
         "unit": "pcs", "lot_no": "FG2", "received_at_utc": mes_time("2026-03-02 13:30"), "updated_at": mes_time("2026-03-02 13:31")},
    ],
    "equipment_state_log": [
        _state(1, ASM, "RUN", "2026-03-02 08:00", "2026-03-02 10:00"),
        _state(2, ASM, "DOWN", "2026-03-02 10:00", "2026-03-02 10:30", "BRK-MECH"),
        _state(3, ASM, "DOWN", "2026-03-02 10:30", "2026-03-02 11:00", "PM"),
        _state(4, ASM, "RUN", "2026-03-02 11:00", "2026-03-02 12:00"),
        _state(5, ASM, "SETUP", "2026-03-02 12:00", "2026-03-02 12:30"),
        _state(6, ASM, "IDLE", "2026-03-02 12:30", "2026-03-02 23:00"),
        _state(7, ASM, "RUN", "2026-03-02 23:00", "2026-03-03 01:00"),
        _state(8, ASM, "IDLE", "2026-03-03 01:00", None),
        _state(9, PKG, "RUN", "2026-03-02 10:00", "2026-03-02 14:00"),
        _state(10, PKG, "DOWN", "2026-03-02 14:00", "2026-03-02 15:00", "NO-MAT"),
        _state(11, PKG, "IDLE", "2026-03-02 15:00", "2026-03-03 00:00"),
    ],
}


def _plain(value: Any) -> Any:
    """One value as the tests compare it on every database: numbers as floats rounded to 4
    places, timestamps as 'YYYY-MM-DD HH:MM', dates as 'YYYY-MM-DD'."""
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, (Decimal, float, int)):
        return round(float(value), 4)
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="minutes")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and len(value) > 10 and value[4] == "-" and value[10] == " ":
        return datetime.fromisoformat(value).isoformat(sep=" ", timespec="minutes")
    return value


@dataclass
class TinyFactory:
    connections: Connections
    project: Project
    erp: Engine
    mes: Engine
    warehouse: Engine

    def refresh(self, full: bool = False) -> RefreshResult:
        return warehouse.refresh(self.connections, self.project, full=full)

    def query(self, sql: str, **params: Any) -> list[dict[str, Any]]:
        """Rows of a query on the warehouse, values made comparable (``_plain``)."""
        with self.warehouse.connect() as conn:
            return [{k: _plain(v) for k, v in row._mapping.items()} for row in conn.execute(text(sql), params)]

    def snapshot(self) -> dict[str, list[tuple[Any, ...]]]:
        """Every warehouse table's rows, sorted: what a rerun must leave exactly as it was."""
        with self.warehouse.connect() as conn:
            return {
                name: sorted(tuple(row) for row in conn.execute(select(Table(name, MetaData(), autoload_with=conn))))
                for name in WAREHOUSE_TABLES
            }


def insert(engine: Engine, rows: dict[str, list[dict[str, Any]]]) -> None:
    with engine.begin() as conn:
        for name, values in rows.items():
            conn.execute(Table(name, MetaData(), autoload_with=conn).insert(), values)


def change_master_data(factory: TinyFactory) -> None:
    """At 12:15 on 2 March the ERP raises MAT-000001's standard cost to 120 and renames it;
    on 4 March stock of MAT-000002 in location 0001 drops to 40 KG."""
    with factory.erp.begin() as conn:
        material = Table("material", MetaData(), autoload_with=conn)
        conn.execute(update(material).where(material.c.material_no == "MAT-000001").values(
            standard_cost=Decimal("120.0000"), description_en="Gearbox GB-100", updated_at=local("2026-03-02 12:15"),
        ))
        stock = Table("stock_level", MetaData(), autoload_with=conn)
        conn.execute(update(stock).where(stock.c.material_no == "MAT-000002", stock.c.storage_loc == "0001").values(
            quantity=Decimal("40.000"), updated_at=local("2026-03-04 07:00"),
        ))


SIDES = ("erp", "mes", "warehouse")


def sqlite_urls(folder: Path) -> dict[str, URL]:
    return {n: URL.create("sqlite", database=str(folder / f"{n}.db")) for n in SIDES}


@contextmanager
def postgres_urls(admin_url: str) -> Iterator[dict[str, URL]]:
    """Three throwaway PostgreSQL databases for as long as the block runs (tests/conftest.py's
    pg_database makes them per test; a module of read-only tests shares these)."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    names = {side: f"ems_test_wh_{side}_{uuid.uuid4().hex[:8]}" for side in SIDES}
    try:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0'))
        yield {side: make_url(admin_url).set(database=name) for side, name in names.items()}
    finally:
        with admin.connect() as conn:
            for name in names.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def refreshed_twice(factory: TinyFactory) -> TinyFactory:
    """The first refresh loads everything; the second picks up the master-data changes."""
    factory.refresh()
    change_master_data(factory)
    factory.refresh()
    return factory


def factory_urls(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> dict[str, URL]:
    if kind == "sqlite":
        return sqlite_urls(tmp_path)
    make: Callable[[str], URL] = request.getfixturevalue("pg_database")
    return {n: make(n) for n in SIDES}


def make_tiny_factory(urls: dict[str, URL]) -> TinyFactory:
    """Empty demo ERP and MES schemas filled with the rows above, and a built warehouse."""
    connections = Connections({"erp_db": urls["erp"], "mes_db": urls["mes"], "warehouse_db": urls["warehouse"]})
    factory = TinyFactory(
        connections, load_project(REPO_ROOT / "mappings"), connections.engine("erp_db"),
        connections.engine("mes_db"), connections.engine("warehouse_db"),
    )
    create_demo_schema(factory.erp, "erp")
    create_demo_schema(factory.mes, "mes")
    warehouse.build(factory.warehouse)
    insert(factory.erp, ERP_ROWS)
    insert(factory.mes, MES_ROWS)
    return factory
