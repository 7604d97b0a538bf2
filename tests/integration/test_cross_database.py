"""Flows across databases keep their values: exact decimals, microsecond timestamps and their
zone rules, UTF-8 text, and the difference between an empty string and NULL."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Boolean, Column, Integer, MetaData, Numeric, String, Table, func, select
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import URL

from etl.config.flows import Defaults, Flow, Project
from etl.config.paths import REPO_ROOT
from etl.core.errors import FlowBusy, StepFailed
from etl.dialects.mysql import lock_name
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, run_flow

pytestmark = pytest.mark.slow
#: What an ERP on MariaDB declares to keep microseconds (plain DATETIME keeps whole seconds).
DateTime = _DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: SQLite stores NUMERIC as a double: exact to 15 significant digits, so it gets smaller values.
WIDE = Decimal("123456789012345.678")
NARROW = Decimal("123456789012.345")

FLOW = {
    "flow": "fidelity",
    "direction": "mes_to_erp",
    "source": {"connection": "src", "table": "reading"},
    "target": {"connection": "dst", "table": "reading_copy"},
    "key": ["reading_id"],
    "cursor": {"column": "updated_at"},
    "columns": [
        {"target": "reading_id", "source": "reading_id"},
        {"target": "amount", "source": "amount"},
        {"target": "measured_local", "source": "measured_utc", "timezone": {"from": "UTC", "to": "Asia/Shanghai"}},
        {"target": "measured_utc", "source": "measured_utc"},
        {"target": "note", "source": "note"},
        {"target": "flag", "source": "flag"},
    ],
}


def _tables(metadata: MetaData) -> tuple[Table, Table]:
    source = Table(
        "reading", metadata,
        Column("reading_id", Integer, primary_key=True, autoincrement=False),
        Column("amount", Numeric(18, 3)),
        Column("measured_utc", DateTime),
        Column("note", String(40)),
        Column("flag", Boolean),
        Column("updated_at", DateTime, nullable=False),
    )
    target = Table(
        "reading_copy", metadata,
        Column("reading_id", Integer, primary_key=True, autoincrement=False),
        Column("amount", Numeric(18, 3)),
        Column("measured_local", DateTime),
        Column("measured_utc", DateTime),
        Column("note", String(40)),
        Column("flag", Boolean),
    )
    return source, target


def _url(kind: str, request: pytest.FixtureRequest, tmp_path: Path, label: str) -> URL:
    if kind == "sqlite":
        return URL.create("sqlite", database=str(tmp_path / f"{label}.db"))
    fixture = "pg_database" if kind == "postgresql" else "mariadb_database"
    make: Callable[[str], URL] = request.getfixturevalue(fixture)
    return make(label)


PAIRS = [
    ("mariadb", "postgresql"),
    ("postgresql", "mariadb"),
    ("postgresql", "sqlite"),
    ("sqlite", "mariadb"),
]


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS, ids=[f"{s}-to-{t}" for s, t in PAIRS])
def test_values_survive_the_trip(source_kind: str, target_kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    big = NARROW if "sqlite" in (source_kind, target_kind) else WIDE
    rows = [
        {"reading_id": 1, "amount": big, "measured_utc": datetime(2026, 11, 20, 23, 59, 59, 123456),
         "note": "齿轮箱 – Gearbox ✓", "flag": True, "updated_at": datetime(2026, 11, 21, 0, 0, 0, 1)},
        {"reading_id": 2, "amount": Decimal("-0.001"), "measured_utc": datetime(2026, 1, 1, 0, 0),
         "note": "", "flag": False, "updated_at": datetime(2026, 11, 21, 0, 0, 0, 1)},
        {"reading_id": 3, "amount": None, "measured_utc": None, "note": None, "flag": None,
         "updated_at": datetime(2026, 11, 21, 0, 0, 0, 2)},
    ]
    urls = {"src": _url(source_kind, request, tmp_path, "src"), "dst": _url(target_kind, request, tmp_path, "dst")}
    with Connections(urls) as connections:
        source, _ = _tables(MetaData())
        _, target = _tables(MetaData())
        source.create(connections.engine("src"))
        target.create(connections.engine("dst"))
        with connections.engine("src").begin() as conn:
            conn.execute(source.insert(), rows)
        project = Project(flows={"fidelity": Flow.model_validate(FLOW)}, defaults=Defaults(), mappings_dir=str(REPO_ROOT / "mappings"))

        first = run_flow(project, "fidelity", connections)
        assert first.record.counts.rows_loaded == 3
        with connections.engine("dst").connect() as conn:
            copied = {r.reading_id: r for r in conn.execute(select(target))}
        assert copied[1].amount == big
        assert copied[1].measured_utc == datetime(2026, 11, 20, 23, 59, 59, 123456)
        assert copied[1].measured_local == datetime(2026, 11, 21, 7, 59, 59, 123456)
        assert copied[1].note == "齿轮箱 – Gearbox ✓"
        assert copied[2].amount == Decimal("-0.001")
        assert copied[2].note == ""  # an empty string stays empty ...
        assert copied[3].note is None and copied[3].amount is None  # ... and NULL stays NULL
        assert bool(copied[1].flag) is True and bool(copied[2].flag) is False and copied[3].flag is None

        assert run_flow(project, "fidelity", connections).record.counts.rows_loaded == 0


def test_second_run_on_mariadb_exits_while_the_first_holds_the_lock(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    urls = {"src": _url("sqlite", request, tmp_path, "src"), "dst": _url("mariadb", request, tmp_path, "dst")}
    with Connections(urls) as connections:
        source, _ = _tables(MetaData())
        _, target = _tables(MetaData())
        source.create(connections.engine("src"))
        target.create(connections.engine("dst"))
        project = Project(flows={"fidelity": Flow.model_validate(FLOW)}, defaults=Defaults(), mappings_dir=str(REPO_ROOT / "mappings"))
        name = lock_name(connections.engine("dst").url.database, "fidelity")
        with connections.engine("dst").connect() as holder:
            assert holder.execute(select(func.get_lock(name, 0))).scalar_one() == 1
            with pytest.raises(StepFailed) as failure:
                run_flow(project, "fidelity", connections, RunOptions())
            holder.execute(select(func.release_lock(name)))
        assert isinstance(failure.value.cause, FlowBusy)
        # The busy run released nothing it did not hold, and the next run proceeds.
        assert run_flow(project, "fidelity", connections).record.outcome == "success"
