"""The bad-input catalogue, end to end: through run_flow and the CLI against real PostgreSQL.

Row-level dirt (wrong types, NULL or duplicate keys, strings too long, local times that do not
exist, numbers too big, codes without a crosswalk entry) sends that row, and only that row, to
quarantine with a reason a plant engineer can act on; every other row loads whole. File-level
and schema-level problems (malformed YAML, unknown keys, identifiers that try SQL, a crosswalk
that is not UTF-8, a column dropped or renamed upstream) stop the run before it writes
anything, with file, key and both names in the message. The pure versions of many of these
cases are unit tests (tests/unit/test_transform.py, test_config.py, test_crosswalk.py,
test_expressions.py); here they go through the whole pipeline.
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sync_harness import TRANSFORM_PATHS, Postgres

from etl.cli import main as cli
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.core.errors import SchemaDriftError, StepFailed
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, RunResult, run_flow

pytestmark = pytest.mark.slow

SOURCE_DDL = """
CREATE TABLE erp_order (
    id          integer PRIMARY KEY,
    order_no    text,
    material_no text,
    qty         text,          -- an interface table that keeps everything as text
    unit        text,
    descr       text,
    due         text,
    start_local timestamp,     -- wall-clock time in Europe/Berlin, which has DST
    status      text NOT NULL,
    updated_at  timestamp NOT NULL
);
-- The same orders as a typed source keeps them: a flow from it runs in the target database
-- (the SQL path), whose rules must reject the same rows for the same reasons.
CREATE TABLE erp_order_typed (
    id          integer PRIMARY KEY,
    order_no    varchar(20),
    material_no varchar(18),
    qty         numeric(30,6),
    unit        varchar(3),
    descr       varchar(60),
    due         date,
    start_local timestamp,
    status      varchar(40) NOT NULL,
    updated_at  timestamp NOT NULL
);
CREATE TABLE canary (x integer);
"""
TARGET_DDL = """
CREATE TABLE mes_order (
    wo_no     varchar(20) PRIMARY KEY,
    item_code varchar(12) NOT NULL,
    qty       numeric(9,3),
    unit      varchar(4),
    descr     varchar(40),
    due_date  date,
    start_utc timestamp,
    status    varchar(40)
);
CREATE TABLE canary (x integer);
"""
INJECTION = "x'; DROP TABLE canary; --"
FLOW = f"""\
flow: bad_orders
description: the bad-input catalogue's flow
direction: erp_to_mes
source:
  connection: erp_db
  table: erp_order
  where: {{status: [REL, "{INJECTION}"]}}
target: {{connection: mes_db, table: mes_order}}
key: [wo_no]
cursor: {{column: updated_at}}
columns:
  - {{target: wo_no, source: order_no, clean: [trim]}}
  - {{target: item_code, source: material_no, clean: [trim, upper], crosswalk: material}}
  - {{target: qty, source: qty, convert_unit: {{unit_column: unit}}}}
  - {{target: unit, source: unit, clean: [trim, upper], crosswalk: unit}}
  - {{target: descr, source: descr}}
  - {{target: due_date, source: due, cast: date}}
  - {{target: start_utc, source: start_local, timezone: {{from: Europe/Berlin, to: UTC}}}}
  - {{target: status, source: status}}
"""
T = datetime(2026, 11, 20, 8, 0)
UPDATED = datetime(2026, 11, 20, 9, 0)
OK = {"material_no": "MAT-000001", "qty": "12.5", "unit": "KG", "descr": "plain", "due": "2026-12-01",
      "start_local": T, "status": "REL"}
TRICKY_TEXT = "tab\tnew\nline back\\slash \\N 中文 ü"


@dataclass(frozen=True)
class Case:
    name: str
    rows: list[dict[str, Any]]
    #: Source key -> the reason it must wait with (a substring of it).
    reasons: dict[str, str]
    #: Whether a typed source column can hold the value at all.
    typed: bool = True


# Each case: source rows and the message each must wait in quarantine with.
CASES = [
    Case("wrong type: text where a number belongs", [{"order_no": "B-01", "qty": "12,5"}],
         {"order_no=B-01": "column qty: '12,5' is not a number"}, typed=False),
    Case("wrong type: text where a date belongs", [{"order_no": "B-02", "due": "tomorrow"}],
         {"order_no=B-02": "column due_date: cannot cast 'tomorrow'"}, typed=False),
    Case("number that is not finite", [{"order_no": "B-03", "qty": "Infinity"}],
         {"order_no=B-03": "is not a finite number"}),
    Case("NULL natural key", [{"order_no": None}], {"order_no=NULL": "natural key column wo_no is NULL"}),
    Case("duplicate natural key with different values in one batch",
         [{"order_no": "B-06", "qty": "1"}, {"order_no": "B-06 ", "qty": "2"}],
         {"order_no=B-06": "duplicate natural key (wo_no=B-06) in one batch with differing values",
          "order_no=B-06 ": "duplicate natural key (wo_no=B-06) in one batch with differing values"}),
    Case("string longer than the target column", [{"order_no": "B-07", "descr": "x" * 41}],
         {"order_no=B-07": "column descr: value 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx': 41 characters, column holds 40"}),
    Case("local time in the DST gap", [{"order_no": "B-08", "start_local": datetime(2026, 3, 29, 2, 30)}],
         {"order_no=B-08": "column start_utc: 2026-03-29T02:30:00 does not exist in Europe/Berlin (clocks skip it)"}),
    Case("local time in the DST overlap", [{"order_no": "B-09", "start_local": datetime(2026, 10, 25, 2, 30)}],
         {"order_no=B-09": "column start_utc: 2026-10-25T02:30:00 is ambiguous in Europe/Berlin (clocks repeat it)"}),
    Case("number that overflows the target precision", [{"order_no": "B-10", "qty": "123456.789"}],
         {"order_no=B-10": "overflows NUMERIC(9,3)"}),
    Case("code without a crosswalk entry", [{"order_no": "B-11", "material_no": "MAT-X0001"}],
         {"order_no=B-11": "crosswalk 'material' has no MES code for 'MAT-X0001' (column item_code)"}),
    Case("unit without a conversion factor", [{"order_no": "B-12", "unit": "LB"}],
         {"order_no=B-12": "crosswalk 'unit' has no factor for unit 'LB' (column qty)"}),
]

# Rows that must load, exactly as given (the expected target row follows each).
GOOD = [
    ({"order_no": "G-01"}, ("G-01", "100001", Decimal("12500.000"), "g", "plain", date(2026, 12, 1), datetime(2026, 11, 20, 7, 0), "REL")),
    ({"order_no": "G-02", "descr": TRICKY_TEXT, "qty": "3", "unit": "PC"},
     ("G-02", "100001", Decimal("3.000"), "pcs", TRICKY_TEXT, date(2026, 12, 1), datetime(2026, 11, 20, 7, 0), "REL")),
    ({"order_no": "G-03", "descr": "'); DROP TABLE canary; --"},
     ("G-03", "100001", Decimal("12500.000"), "g", "'); DROP TABLE canary; --", date(2026, 12, 1), datetime(2026, 11, 20, 7, 0), "REL")),
    # The where: value that looks like SQL is a bound value: it selects this row, nothing more.
    ({"order_no": "G-04", "status": INJECTION},
     ("G-04", "100001", Decimal("12500.000"), "g", "plain", date(2026, 12, 1), datetime(2026, 11, 20, 7, 0), INJECTION)),
    # Identical copies of one key (after trim) are one row, not a conflict.
    ({"order_no": "G-05"}, ("G-05", "100001", Decimal("12500.000"), "g", "plain", date(2026, 12, 1), datetime(2026, 11, 20, 7, 0), "REL")),
    ({"order_no": " G-05 "}, None),
    # Next to the DST change but valid: 01:59 CET is 00:59 UTC.
    ({"order_no": "G-06", "start_local": datetime(2026, 3, 29, 1, 59)},
     ("G-06", "100001", Decimal("12500.000"), "g", "plain", date(2026, 12, 1), datetime(2026, 3, 29, 0, 59), "REL")),
    # Filtered out by where: never read.
    ({"order_no": "G-07", "status": "CRTD"}, None),
]


def _source_rows(typed: bool = False) -> list[dict[str, Any]]:
    rows = [spec for spec, _ in GOOD] + [row for case in CASES if case.typed or not typed for row in case.rows]
    out = [{**OK, "id": i, "updated_at": UPDATED, **row} for i, row in enumerate(rows, start=1)]
    if typed:
        for row in out:
            row["qty"] = Decimal(row["qty"])
            row["due"] = date.fromisoformat(row["due"])
    return out


@dataclass
class Lab:
    """A source and a target database for the catalogue's flow, with their own mappings."""

    pg: Postgres
    templates: dict[str, str]
    tmp: Path

    def clone(self, source: str = "text") -> BadSite:
        databases = {side: self.pg.create(f"bad_{side}", template) for side, template in self.templates.items()}
        urls = {side: self.pg.url(db) for side, db in databases.items()}
        mappings = self.tmp / uuid.uuid4().hex[:8] / "mappings"
        shutil.copytree(REPO_ROOT / "mappings" / "crosswalks", mappings / "crosswalks")
        (mappings / "flows").mkdir()
        if source == "typed":  # every rule has an SQL twin: on PostgreSQL it runs in the target
            flow = FLOW.replace("table: erp_order", "table: erp_order_typed").replace("source: due, cast: date}", "source: due}")
        else:
            flow = FLOW
        (mappings / "flows" / "bad_orders.yaml").write_text(flow, encoding="utf-8")
        return BadSite(self.pg, databases, urls, mappings)


@dataclass
class BadSite:
    pg: Postgres
    databases: dict[str, str]
    urls: dict[str, URL]
    mappings: Path
    typed: bool = False

    def connections(self) -> Connections:
        return Connections({"erp_db": self.urls["erp"], "mes_db": self.urls["mes"]})

    def run(self, **options: Any) -> RunResult:
        with self.connections() as connections:
            return run_flow(load_project(self.mappings), "bad_orders", connections, RunOptions(**options))

    def sql(self, side: str, statement: str) -> list[Any]:
        return self.pg.execute(self.databases[side], statement)

    def target_rows(self) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.sql("mes", "SELECT * FROM mes_order ORDER BY wo_no")]

    def has_canaries(self) -> bool:
        return all(self.sql(side, "SELECT to_regclass('canary') IS NOT NULL")[0][0] for side in ("erp", "mes"))

    def cli(self, *args: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
        file = self.mappings.parent / "connections.json"
        file.write_text(json.dumps({f"{s}_db": u.render_as_string(hide_password=False) for s, u in self.urls.items()}))
        monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(file))
        for name in ("AIRFLOW_CONN_ERP_DB", "AIRFLOW_CONN_MES_DB"):
            monkeypatch.delenv(name, raising=False)
        capsys.readouterr()
        code = cli.main(["--mappings", str(self.mappings), *args])
        out, err = capsys.readouterr()
        return code, out, err


@pytest.fixture(scope="module")
def lab(pg: Postgres, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    templates = {"erp": pg.create("badtpl_erp"), "mes": pg.create("badtpl_mes")}
    for side, ddl in (("erp", SOURCE_DDL), ("mes", TARGET_DDL)):
        engine = create_engine(pg.url(templates[side]))
        with engine.begin() as conn:
            conn.exec_driver_sql(ddl)
            if side == "erp":
                for table, rows in (("erp_order", _source_rows()), ("erp_order_typed", _source_rows(typed=True))):
                    columns = list(rows[0])
                    conn.execute(
                        text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})"), rows,
                    )
        engine.dispose()
    yield Lab(pg, templates, tmp_path_factory.mktemp("bad"))
    pg.drop_soon(templates.values())


#: The typed source runs on the SQL path, where the engine has one (TRANSFORM_PATHS says).
SOURCES = ["text", "typed"] if len(TRANSFORM_PATHS) > 1 else ["text"]
#: Cases where the SQL path still says something else than the Python path (none today).
SQL_PATH_BUGS: dict[str, str] = {}


@pytest.fixture(scope="module", params=SOURCES)
def loaded(lab: Lab, request: pytest.FixtureRequest) -> Iterator[tuple[BadSite, RunResult, dict[str, str]]]:
    """The catalogue's source run once: the result and what waits in quarantine, by source key.
    ``text``: an all-text interface table, transformed in Python. ``typed``: the same rows in
    typed columns, transformed by SQL inside the target (PostgreSQL to PostgreSQL)."""
    site = lab.clone(request.param)
    site.typed = request.param == "typed"
    result = site.run()
    used = json.loads(site.sql("mes", "SELECT options FROM etl_ledger")[0][0]).get("transform", "python")
    assert used == ("sql" if site.typed else "python"), used
    waiting = {key: reason for key, reason in site.sql(
        "mes", "SELECT source_key, reason FROM etl_quarantine WHERE status = 'waiting'")}
    yield site, result, waiting
    site.pg.drop_soon(site.databases.values())


@pytest.fixture
def site(lab: Lab) -> Iterator[BadSite]:
    fresh = lab.clone()
    yield fresh
    fresh.pg.drop_soon(fresh.databases.values())


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_row_waits_in_quarantine_with_its_reason(
    loaded: tuple[BadSite, RunResult, dict[str, str]], case: Case, figures: Any, request: pytest.FixtureRequest,
) -> None:
    site, _, waiting = loaded
    if site.typed and not case.typed:
        pytest.skip("a typed source column cannot hold this value")
    if site.typed and case.name in SQL_PATH_BUGS:
        request.applymarker(pytest.mark.xfail(strict=True, reason=SQL_PATH_BUGS[case.name]))
    for key, reason in case.reasons.items():
        assert key in waiting, f"{case.name}: {key} is not in quarantine; waiting: {sorted(waiting)}"
        assert reason in waiting[key], f"{case.name}: {waiting[key]!r} does not say {reason!r}"
    figures.inputs.add(case.name)


def test_every_other_row_loads_whole_and_nothing_half(loaded: tuple[BadSite, RunResult, dict[str, str]], figures: Any) -> None:
    site, result, waiting = loaded
    assert site.target_rows() == [row for _, row in GOOD if row is not None]
    assert sorted(waiting) == sorted(k for case in CASES if case.typed or not site.typed for k in case.reasons)
    counts = result.record.counts
    assert counts.rows_read == len(_source_rows(site.typed)) - 1  # the CRTD row is not read
    assert counts.rows_loaded == len([r for _, r in GOOD if r is not None])
    assert counts.rows_new_in_quarantine == len(waiting)
    assert site.has_canaries(), "a value that looks like SQL was executed"
    again = site.run()
    assert (again.record.counts.rows_loaded, again.record.counts.rows_new_in_quarantine) == (0, 0)
    assert again.record.counts.quarantine_backlog == len(waiting)
    figures.inputs.update({"text with tab, newline, backslash, \\N, Chinese", "SQL in a value", "SQL in a where: value",
                           "identical duplicate key", "time next to the DST change"})


def test_the_cli_prints_each_reason(loaded: tuple[BadSite, RunResult, dict[str, str]], monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    site, _, waiting = loaded
    code, out, _ = site.cli("quarantine", "bad_orders", "--limit", "100", monkeypatch=monkeypatch, capsys=capsys)
    assert code == 0
    for case in CASES:
        for reason in case.reasons.values():
            assert reason in out or (site.typed and (not case.typed or case.name in SQL_PATH_BUGS)), reason
    assert f"{len(waiting)} row(s) waiting" in out


# --- problems that stop the run before it writes anything ---------------------------------------

FILE_PROBLEMS = [
    ("malformed YAML", "flows/bad_orders.yaml", FLOW.replace("key: [wo_no]", "key: [wo_no"),
     "flows/bad_orders.yaml: line 10, column 7: malformed YAML: expected ',' or ']', but got ':'"),
    ("unknown key", "flows/bad_orders.yaml", FLOW.replace("{target: descr, source: descr}", "{target: descr, souce: descr}"),
     "flows/bad_orders.yaml: columns[4].souce: unknown key (did you mean 'source'?"),
    ("SQL in a table name", "flows/bad_orders.yaml", FLOW.replace("table: erp_order", "table: 'erp_order; DROP TABLE canary'"),
     "flows/bad_orders.yaml: source.table: 'erp_order; DROP TABLE canary' is not a valid identifier"),
    ("SQL in a column name", "flows/bad_orders.yaml", FLOW.replace("source: descr}", "source: 'descr; DROP TABLE canary'}"),
     "flows/bad_orders.yaml: columns[4].source: 'descr; DROP TABLE canary' is not a valid identifier"),
    ("SQL in a where: column", "flows/bad_orders.yaml", FLOW.replace("where: {status:", "where: {'status = status OR 1=1 --':"),
     "is not a valid identifier"),
    ("Python in an expression", "flows/bad_orders.yaml",
     FLOW.replace("{target: descr, source: descr}", "{target: descr, expr: \"__import__('os').system('echo pwned')\"}"),
     "flows/bad_orders.yaml: columns[4]"),
    ("crosswalk that is not UTF-8", "crosswalks/material.csv", "erp,mes\nMAT-\xc4001,190001\n".encode("latin-1"),
     "crosswalks/material.csv: cannot read: 'utf-8' codec can't decode byte 0xc4"),
    ("flow file that is not UTF-8", "flows/bad_orders.yaml", FLOW.replace("the bad-input", "die Fehlerkatalog-Ä").encode("latin-1"),
     "flows/bad_orders.yaml: not UTF-8 text"),
]


@pytest.mark.parametrize(("name", "file", "content", "message"), FILE_PROBLEMS, ids=[p[0] for p in FILE_PROBLEMS])
def test_a_broken_file_stops_the_run_before_any_write(
    site: BadSite, name: str, file: str, content: str | bytes, message: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    path = site.mappings / file
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    code, out, err = site.cli("run", "bad_orders", monkeypatch=monkeypatch, capsys=capsys)
    assert code == cli.EXIT_CONFIG == 2, (out, err)
    assert message in err, err
    assert site.target_rows() == []
    assert site.sql("mes", "SELECT to_regclass('etl_ledger') IS NULL")[0][0], "the run should not even connect"
    assert site.has_canaries()
    figures.inputs.add(name)


DRIFTS = [
    ("source column renamed", "erp", "ALTER TABLE erp_order RENAME COLUMN descr TO description",
     "source column erp_order.descr not found (did you mean 'description'?)"),
    ("source column dropped", "erp", "ALTER TABLE erp_order DROP COLUMN due", "source column erp_order.due not found"),
    ("source table renamed", "erp", "ALTER TABLE erp_order RENAME TO erp_orders",
     "source table 'erp_order' does not exist (did you mean 'erp_orders'?)"),
    ("target column renamed", "mes", "ALTER TABLE mes_order RENAME COLUMN descr TO description",
     "target column mes_order.descr not found (did you mean 'description'?)"),
    ("target key dropped", "mes", "ALTER TABLE mes_order DROP CONSTRAINT mes_order_pkey",
     "target mes_order has no primary key or unique index on (wo_no)"),
    ("cursor column renamed", "erp", "ALTER TABLE erp_order RENAME COLUMN updated_at TO changed_at",
     "source column erp_order.updated_at not found (did you mean 'changed_at'?)"),
]


@pytest.mark.parametrize(("name", "side", "ddl", "message"), DRIFTS, ids=[d[0] for d in DRIFTS])
def test_schema_drift_stops_the_run_before_any_write(
    site: BadSite, name: str, side: str, ddl: str, message: str,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    first = site.run()
    before = (site.target_rows(), site.sql("mes", "SELECT cursor_value FROM etl_watermark"))
    # A change the failed run would load, were it allowed to write.
    site.sql("erp", "UPDATE erp_order SET qty = '99', updated_at = updated_at + interval '1 hour' WHERE order_no = 'G-01'")
    site.sql(side, ddl)
    with pytest.raises(StepFailed) as failure:
        site.run()
    assert failure.value.step == "check_schema"
    assert isinstance(failure.value.cause, SchemaDriftError) and not failure.value.retryable
    assert message in str(failure.value)
    assert "flows/bad_orders.yaml" in str(failure.value)
    assert (site.target_rows(), site.sql("mes", "SELECT cursor_value FROM etl_watermark")) == before
    code, _, err = site.cli("run", "bad_orders", monkeypatch=monkeypatch, capsys=capsys)
    assert code == cli.EXIT_CONFIG and message in err, err
    outcomes = [r[0] for r in site.sql("mes", "SELECT outcome FROM etl_ledger ORDER BY started_at")]
    assert outcomes == ["success", "failed", "failed"] and first.record.counts.rows_loaded > 0
    figures.inputs.add(f"schema drift: {name}")


def test_a_new_upstream_column_is_reported_not_fatal(site: BadSite, caplog: pytest.LogCaptureFixture, figures: Any) -> None:
    site.sql("erp", "ALTER TABLE erp_order ADD COLUMN priority integer")
    with caplog.at_level(logging.INFO, logger="etl.sync.runner"):
        result = site.run()
    assert result.record.outcome == "success" and result.record.counts.rows_loaded == 6
    assert "priority" in result.new_source_columns
    assert "source columns not mapped: id, priority" in caplog.text
    figures.inputs.add("new upstream column")


# --- bytes and encodings ------------------------------------------------------------------------


def _sqlite_source(path: Path, descr: Any, raw_sql: str | None = None) -> URL:
    conn = sqlite3.connect(path)
    conn.executescript(SOURCE_DDL.replace("timestamp", "TIMESTAMP"))
    rows = [
        {**OK, "id": 1, "order_no": "S-01", "updated_at": UPDATED},
        {**OK, "id": 2, "order_no": "S-02", "descr": descr, "updated_at": UPDATED},
    ]
    columns = list(rows[0])
    for row in rows:
        conn.execute(
            f"INSERT INTO erp_order ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})",
            [row[c].isoformat(sep=" ") if isinstance(row[c], datetime) else row[c] for c in columns],
        )
    if raw_sql:
        conn.execute(raw_sql)
    conn.commit()
    conn.close()
    return make_url(f"sqlite:///{path}")


def test_invalid_utf8_text_in_a_sqlite_source_stops_the_run_naming_the_column(site: BadSite, tmp_path: Path, figures: Any) -> None:
    """SQLite stores whatever bytes it is given as TEXT; the driver cannot decode them, so the
    run stops at the first chunk with the column in the message, and writes nothing."""
    source = _sqlite_source(tmp_path / "erp.db", "fine",
                            "UPDATE erp_order SET descr = CAST(X'4DFC6C6C6572' AS TEXT) WHERE id = 2")
    with Connections({"erp_db": source, "mes_db": site.urls["mes"]}) as connections:
        with pytest.raises(StepFailed) as failure:
            run_flow(load_project(site.mappings), "bad_orders", connections)
    assert failure.value.step in ("stage", "stage_first_chunk") and not failure.value.retryable
    assert "Could not decode to UTF-8 column 'descr'" in str(failure.value)
    assert site.target_rows() == []
    assert site.sql("mes", "SELECT outcome FROM etl_ledger")[0][0] == "failed"
    figures.inputs.add("invalid UTF-8 stored as TEXT (SQLite source)")


def test_latin1_bytes_in_a_text_column_are_never_loaded_as_garbage(site: BadSite, tmp_path: Path, figures: Any) -> None:
    """A SQLite column declared TEXT holding a BLOB of Latin-1 bytes (mixed encodings)."""
    figures.inputs.add("Latin-1 bytes in a text column (SQLite source)")
    source = _sqlite_source(tmp_path / "erp.db", "M\u00fcller".encode("latin-1"))
    with Connections({"erp_db": source, "mes_db": site.urls["mes"]}) as connections:
        run_flow(load_project(site.mappings), "bad_orders", connections)
    loaded = {row[0]: row[4] for row in site.target_rows()}
    assert loaded.get("S-01") == "plain"
    assert "S-02" not in loaded, f"loaded as {loaded.get('S-02')!r}"
    reason = site.sql("mes", "SELECT reason FROM etl_quarantine WHERE source_key = 'order_no=S-02'")
    assert reason and "UTF-8" in reason[0][0]


def test_bytea_mapped_to_a_text_column_is_never_loaded_as_garbage(site: BadSite, figures: Any) -> None:
    figures.inputs.add("bytea mapped to a text column (PostgreSQL source)")
    site.sql("erp", "ALTER TABLE erp_order ALTER COLUMN descr TYPE bytea USING convert_to(descr, 'UTF8')")
    site.run()
    loaded = {row[0]: row[4] for row in site.target_rows()}
    assert not any(str(v).startswith(("<memory at", "b'")) for v in loaded.values()), loaded
