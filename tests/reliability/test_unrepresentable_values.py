"""One value the target, its driver or a conversion cannot represent waits in quarantine with a
reason naming its column (and its row's key); the rest of the batch loads (issue #25, items 6
and 10). Real sources (SQLite, MariaDB) into real targets (PostgreSQL, MariaDB).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import BigInteger, Column, DateTime, Integer, MetaData, String, Table, create_engine, select, text
from sqlalchemy.engine import URL, make_url
from sync_harness import SiteFactory

from etl.config.flows import Defaults, Flow, Project
from etl.config.paths import REPO_ROOT
from etl.core.errors import StepFailed
from etl.dialects import dialect_for
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import quarantine
from etl.sync.runner import run_flow

pytestmark = pytest.mark.slow

GOOD = {"txt": "fine", "started": datetime(2026, 1, 1, 8)}

CASES: dict[str, dict[str, Any]] = {
    # source, target (and its character set), the bad row's values, words of its reason
    "NUL in text bound for PostgreSQL (the issue's example)": dict(
        source="sqlite", target="postgresql", bad={"txt": "bad\x00value"},
        reason="column txt: value E'bad\\\\x00value': holds a NUL character",
    ),
    "NUL in text read from MariaDB": dict(
        source="mariadb", target="postgresql", bad={"txt": "x\x00"}, reason="column txt: value E'x\\\\x00': holds a NUL character",
    ),
    "an emoji bound for a utf8mb3 MariaDB column (the issue's example)": dict(
        source="sqlite", target="mariadb", charset="utf8mb3", bad={"txt": "ok \U0001F600"},
        reason="column txt: value E'ok \\\\U0001f600': holds U+1F600, which a utf8mb3 column cannot store",
    ),
    "a rare CJK ideograph (above U+FFFF) bound for utf8mb3": dict(
        source="mariadb", target="mariadb", charset="utf8mb3", bad={"txt": "零件\U00020000"},
        reason="holds U+20000, which a utf8mb3 column cannot store",
    ),
    "Chinese bound for a latin1 column": dict(
        source="sqlite", target="mariadb", charset="latin1", bad={"txt": "齿轮箱"},
        reason="holds U+9F7F, which a latin1 column cannot store",
    ),
    "9999-12-31 through a timezone rule (the issue's example)": dict(
        source="sqlite", target="postgresql", bad={"started": datetime(9999, 12, 31, 23, 0)},
        reason="column started: 9999-12-31T23:00:00 in UTC falls outside the years 1 to 9999 in Asia/Shanghai",
    ),
    "0001-01-01 through a timezone rule westwards": dict(
        source="mariadb", target="postgresql", bad={"started": datetime(1, 1, 1, 2)}, zone="America/New_York",
        reason="column started: 0001-01-01T02:00:00 in UTC falls outside the years 1 to 9999 in America/New_York",
    ),
}


@pytest.fixture
def databases(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[str, str], URL]:
    def make(kind: str, charset: str) -> URL:
        if kind == "sqlite":
            return URL.create("sqlite", database=str(tmp_path / f"src_{uuid.uuid4().hex[:8]}.db"))
        if kind == "postgresql":
            url: URL = request.getfixturevalue("pg_database")("bad")
            return url
        server = make_url(request.getfixturevalue("mariadb_server"))
        name = f"ems_test_bad_{uuid.uuid4().hex[:8]}"
        _admin(server, f"CREATE DATABASE `{name}` CHARACTER SET {charset}")
        request.addfinalizer(lambda: _admin(server, f"DROP DATABASE IF EXISTS `{name}`"))
        return server.set(database=name, query={"charset": "utf8mb4"})

    return make


def _admin(server: URL, statement: str) -> None:
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def _sync(source: URL, target: URL, bad: dict[str, Any], transform: str, zone: str = "Asia/Shanghai") -> tuple[Any, list[Any], list[Any]]:
    reading = Table("reading", MetaData(), Column("rid", Integer, primary_key=True), Column("txt", String(60)), Column("started", DateTime))
    landed = Table("landed", MetaData(), Column("k", BigInteger, primary_key=True, autoincrement=False),
                   Column("txt", String(60)), Column("started", DateTime))
    rows = [{"rid": i, **GOOD, **(bad if i == 3 else {})} for i in range(1, 6)]
    flow = Flow.model_validate({
        "flow": "readings", "direction": "mes_to_erp",
        "source": {"connection": "src", "table": "reading"}, "target": {"connection": "dst", "table": "landed"},
        "key": ["k"], "load": {"transform": transform},
        "columns": [{"target": "k", "source": "rid"}, {"target": "txt", "source": "txt"},
                    {"target": "started", "source": "started", "timezone": {"from": "UTC", "to": zone}}],
    })
    with Connections({"src": source, "dst": target}) as connections:
        reading.create(connections.engine("src"))
        with connections.engine("src").begin() as conn:
            conn.execute(reading.insert(), rows)
        landed.create(connections.engine("dst"))
        project = Project(flows={"readings": flow}, defaults=Defaults(), mappings_dir=str(REPO_ROOT / "mappings"))
        result = run_flow(project, "readings", connections)
        with connections.engine("dst").connect() as conn:
            loaded = conn.execute(select(landed.c.k, landed.c.txt).order_by(landed.c.k)).all()
            waiting = conn.execute(select(quarantine.c.source_key, quarantine.c.reason, quarantine.c.payload)).all()
    return result, loaded, waiting


@pytest.mark.parametrize("transform", ["auto", "python"])
@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_a_value_the_target_cannot_hold_waits_in_quarantine_and_the_rest_loads(
    databases: Callable[[str, str], URL], case: str, transform: str, figures: Any,
) -> None:
    spec = CASES[case]
    source = databases(spec["source"], "utf8mb4")
    target = databases(spec["target"], spec.get("charset", "utf8mb4"))
    result, loaded, waiting = _sync(source, target, spec["bad"], transform, spec.get("zone", "Asia/Shanghai"))
    assert result.record.outcome == "success"
    assert [k for k, _ in loaded] == [1, 2, 4, 5], "every other row loads"
    assert all(txt == GOOD["txt"] for _, txt in loaded), loaded  # nothing stored as '?'
    assert [(key, spec["reason"] in reason) for key, reason, _ in waiting] == [("rid=3", True)], waiting
    assert result.record.counts.rows_quarantined == 1
    figures.inputs.add(f"hostile: unrepresentable {case}")


def test_on_the_sql_path_a_nul_sends_the_run_to_python_and_an_explicit_sql_path_says_why(
    databases: Callable[[str, str], URL],
) -> None:
    result, loaded, waiting = _sync(databases("sqlite", ""), databases("postgresql", ""), {"txt": "a\x00"}, "auto")
    assert result.record.options["transform"] == "python" and len(loaded) == 4 and len(waiting) == 1
    with pytest.raises(StepFailed, match="NUL character, which PostgreSQL's COPY cannot carry"):
        _sync(databases("sqlite", ""), databases("postgresql", ""), {"txt": "a\x00"}, "sql")


def test_without_a_bad_value_the_sql_path_still_runs(databases: Callable[[str, str], URL]) -> None:
    result, loaded, waiting = _sync(databases("sqlite", ""), databases("postgresql", ""), {"started": datetime(9999, 12, 31, 23)}, "sql")
    assert result.record.options["transform"] == "sql" and len(loaded) == 4 and len(waiting) == 1


def test_every_load_on_mariadb_runs_strict_even_in_a_lenient_session(databases: Callable[[str, str], URL], figures: Any) -> None:
    """Item 6: a non-strict session stores '?' for a character utf8mb3 lacks, and says nothing."""
    target = databases("mariadb", "utf8mb3")
    lenient = target.update_query_dict({"init_command": "SET SESSION sql_mode = ''"})
    with Connections({"dst": lenient}) as connections, connections.engine("dst").connect() as conn:
        conn.execute(text("CREATE TABLE probe (t VARCHAR(10))"))
        conn.execute(text("INSERT INTO probe VALUES (:t)"), {"t": "\U0001F600"})
        assert conn.execute(text("SELECT t FROM probe")).scalar_one() == "?", "the session really is lenient"
        dialect_for(conn).tune(conn, 64)
        with pytest.raises(Exception, match="Incorrect string value"):
            conn.execute(text("INSERT INTO probe VALUES (:t)"), {"t": "\U0001F600"})
    result, loaded, waiting = _sync(databases("sqlite", ""), lenient, {"txt": "\U0001F600"}, "auto")
    assert [k for k, _ in loaded] == [1, 2, 4, 5] and [w[0] for w in waiting] == ["rid=3"]
    figures.inputs.add("hostile: a lenient MariaDB session")


# Item 5: NaN bound for a NUMERIC column is quarantined alike on both paths, whatever expression
# it passes through (a Decimal NaN is a value, not NULL: coalesce does not replace it).
NAN_EXPRESSIONS = {
    "coalesce (the issue's example)": "coalesce(scrap_qty, 0.000)",
    "arithmetic": "scrap_qty + 0",
    "round": "round(scrap_qty, 3)",
}


@pytest.mark.parametrize("expr", NAN_EXPRESSIONS, ids=list(NAN_EXPRESSIONS))
def test_nan_bound_for_a_numeric_column_waits_in_quarantine_on_both_paths(sites: SiteFactory, expr: str, figures: Any) -> None:
    found: dict[str, tuple[list[str], int]] = {}
    for transform in ("python", "auto"):
        site = sites.new(f"nan_{transform}", transform=None if transform == "auto" else transform)
        flow_file = site.mappings / "flows" / "confirmations.yaml"
        rule = "  - {target: scrap_qty, source: scrap_qty, convert_unit: {unit_column: unit}}\n"
        text_ = flow_file.read_text(encoding="utf-8")
        assert rule in text_
        flow_file.write_text(text_.replace(rule, f'  - {{target: scrap_qty, expr: "{NAN_EXPRESSIONS[expr]}"}}\n'), encoding="utf-8")
        site.reload()
        site.execute("mes", "UPDATE operation_report SET scrap_qty = 'NaN' WHERE report_id = (SELECT min(report_id) FROM operation_report)")
        result = site.run("confirmations")
        with site.engine("erp").connect() as conn:
            reasons = list(conn.execute(text("SELECT reason FROM etl_quarantine WHERE flow = 'confirmations'")).scalars())
        assert any("column scrap_qty: value NaN: is not a finite number" in r for r in reasons), (transform, reasons)
        found[transform] = (sorted(reasons), result.record.counts.rows_loaded)
        if transform == "auto":
            assert result.record.options["transform"] == "sql"
    assert found["python"] == found["auto"], found
    figures.inputs.add(f"hostile: NaN through {expr}")
