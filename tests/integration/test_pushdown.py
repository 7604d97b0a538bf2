"""The SQL path (transform inside PostgreSQL) rejects and loads exactly what the Python path does,
on rows built to fail every rule: DST gaps and overlaps, long text, numeric overflow, NULL keys,
crosswalk misses, division by zero; from a PostgreSQL source and from a MariaDB one, whose rows
reach PostgreSQL as COPY text its server wrote."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal

import pytest
from sqlalchemy import Column, Integer, MetaData, Numeric, String, Table, select
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL

from etl.config.flows import Defaults, Flow, Project
from etl.config.paths import REPO_ROOT
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import quarantine
from etl.sync.runner import run_flow

pytestmark = pytest.mark.slow
#: What an MES on MariaDB declares to keep microseconds (plain DATETIME keeps whole seconds).
DateTime = _DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")


def _flow(transform: str) -> Flow:
    return Flow.model_validate({
        "flow": "shifts",
        "direction": "mes_to_erp",
        "source": {"connection": "src", "table": "shift_report"},
        "target": {"connection": "dst", "table": "shift_in"},
        "key": ["posting_key"],
        "cursor": {"column": "updated_at"},
        "load": {"transform": transform},
        "columns": [
            {"target": "posting_key", "expr": "concat('S-', lpad(report_id, 6, '0'))"},
            {"target": "order_no", "source": "wo_no", "clean": ["trim"], "crosswalk": "order_number"},
            {"target": "work_center", "source": "equipment_code", "crosswalk": "work_center"},
            {"target": "qty", "source": "qty", "convert_unit": {"unit_column": "unit"}},
            {"target": "rate", "expr": "qty / minutes"},
            {"target": "note", "source": "note", "clean": ["trim", "upper"]},
            {"target": "started_utc", "source": "started_local", "timezone": {"from": "Europe/Berlin", "to": "UTC"}},
        ],
    })


def _tables() -> tuple[Table, Table]:
    source = Table(
        "shift_report", MetaData(),
        Column("report_id", Integer, primary_key=True, autoincrement=False),
        Column("wo_no", String(24)), Column("equipment_code", String(16)),
        Column("qty", Numeric(18, 3)), Column("unit", String(4)), Column("minutes", Integer),
        Column("note", String(40)), Column("started_local", DateTime), Column("updated_at", DateTime, nullable=False),
    )
    target = Table(
        "shift_in", MetaData(),
        Column("posting_key", String(10), primary_key=True),
        Column("order_no", String(12), nullable=False), Column("work_center", String(8)),
        Column("qty", Numeric(9, 3)), Column("rate", Numeric(12, 4)), Column("note", String(8)),
        Column("started_utc", DateTime),
    )
    return source, target


T = datetime(2026, 11, 20, 8, 0)
ROWS = [
    # fine
    dict(report_id=1, wo_no=" WO-2026-000001 ", equipment_code="EQ-SH01-CUT-01", qty=Decimal("1500"),
         unit="g", minutes=30, note=" ok ", started_local=datetime(2026, 6, 1, 8, 0)),
    # spring-forward gap and autumn overlap in Berlin
    dict(report_id=2, wo_no="WO-2026-000002", equipment_code="EQ-SH01-CUT-01", qty=Decimal("1"),
         unit="pcs", minutes=1, note="gap", started_local=datetime(2026, 3, 29, 2, 30)),
    dict(report_id=3, wo_no="WO-2026-000003", equipment_code="EQ-SH01-CUT-01", qty=Decimal("1"),
         unit="pcs", minutes=1, note="overlap", started_local=datetime(2026, 10, 25, 2, 30)),
    # order number outside the rule, unknown equipment, unknown unit
    dict(report_id=4, wo_no="WO-2025-000004", equipment_code="EQ-XX", qty=Decimal("1"),
         unit="oz", minutes=1, note="miss", started_local=None),
    # NULL order number (a NOT NULL target column), note too long, quantity overflow
    dict(report_id=5, wo_no=None, equipment_code="EQ-SH01-ASM-01", qty=Decimal("123456789"),
         unit="pcs", minutes=2, note="far too long", started_local=None),
    # division by zero, grams to kilograms with rounding half up
    dict(report_id=6, wo_no="WO-2026-000006", equipment_code="EQ-SH01-ASM-01", qty=Decimal("0.5"),
         unit="g", minutes=0, note=None, started_local=None),
    dict(report_id=7, wo_no="WO-2026-000007", equipment_code="EQ-SH01-ASM-01", qty=Decimal("2.0005"),
         unit="kg", minutes=3, note="", started_local=datetime(2026, 10, 25, 3, 30)),
]


@pytest.fixture(params=["postgresql", "mariadb"])
def urls(request: pytest.FixtureRequest, pg_database: Callable[[str], URL]) -> dict[str, URL]:
    source: Callable[[str], URL] = request.getfixturevalue("pg_database" if request.param == "postgresql" else "mariadb_database")
    return {"src": source("src"), **{name: pg_database(name) for name in ("python", "sql")}}


def test_both_paths_agree_on_every_row(urls: dict[str, URL]) -> None:
    results = {}
    for path in ("python", "sql"):
        with Connections({"src": urls["src"], "dst": urls[path]}) as connections:
            source, target = _tables()
            if path == "python":
                source.create(connections.engine("src"))
                with connections.engine("src").begin() as conn:
                    conn.execute(source.insert(), [{**r, "updated_at": T} for r in ROWS])
            target.create(connections.engine("dst"))
            project = Project(flows={"shifts": _flow(path)}, defaults=Defaults(), mappings_dir=str(REPO_ROOT / "mappings"))
            run = run_flow(project, "shifts", connections)
            assert run.record.options["transform"] == path
            with connections.engine("dst").connect() as conn:
                loaded = [dict(r._mapping) for r in conn.execute(select(target).order_by(target.c.posting_key))]
                waiting = conn.execute(select(quarantine.c.source_key, quarantine.c.reason).order_by(quarantine.c.source_key)).all()
            results[path] = (loaded, waiting, run.record.counts.rows_loaded)

    assert results["python"] == results["sql"]
    loaded, waiting, count = results["sql"]
    assert [r["posting_key"] for r in loaded] == ["S-000001", "S-000007"]
    first, seventh = loaded
    assert (first["order_no"], first["qty"], first["note"], first["started_utc"]) == (
        "1000001", Decimal("1.500"), "OK", datetime(2026, 6, 1, 6, 0),
    )
    assert seventh["qty"] == Decimal("2.001") and seventh["rate"] == Decimal("0.6670")  # 2.001 / 3, half up
    assert seventh["started_utc"] == datetime(2026, 10, 25, 2, 30)  # 03:30 CET, just after the overlap
    reasons = dict(waiting)
    assert "does not exist in Europe/Berlin" in reasons["report_id=2"]
    assert "is ambiguous in Europe/Berlin" in reasons["report_id=3"]
    assert all(s in reasons["report_id=4"] for s in ("'WO-2025-000004'", "'EQ-XX'", "'oz'"))
    assert all(s in reasons["report_id=5"] for s in ("order_no is NULL", "12 characters, column holds 8", "overflows NUMERIC(9,3)"))
    assert "division by zero" in reasons["report_id=6"]
    assert count == 2
