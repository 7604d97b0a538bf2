"""The SQL path (rules compiled to PostgreSQL), the in-process path (the same rules compiled to
DuckDB over Arrow chunks) and the Python path (rules run on pandas chunks) load exactly the
same rows and quarantine exactly the same rows for the same reasons, whatever
the flow and the rows: every expression function with an SQL twin, every column step, every
target column type, on hostile values (NULL, empty and Chinese text, 18-digit decimals, numeric
overflow, text longer than its column, crosswalk misses, unit factors, DST gaps and overlaps,
division by zero, NULL natural keys), read from PostgreSQL, MariaDB and SQLite.

Each example generates a batch of rows and the target columns' types and parameters, runs each
flow twice into two fresh PostgreSQL databases (``load.transform: python`` and ``sql``) and
compares every loaded value (type and exact text), the quarantine (source key, reason) and the
ledger counts. The in-process path is held to the Python path the same way, into a MariaDB and
a SQLite target. Rules without an SQL twin (``cast``, ``json_get`` on text, boolean columns from
a source other than PostgreSQL) must be reported by unsupported_reason and still run in Python.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import JSON, BigInteger, Boolean, Column, Date, Integer, MetaData, Numeric, String, Table, select
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import URL

from etl.config.crosswalks import load_crosswalks
from etl.config.flows import Defaults, Flow, Project
from etl.config.paths import REPO_ROOT
from etl.sync import stage_in_process
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import quarantine
from etl.sync.runner import run_flow
from etl.sync.schema import reflect_table
from etl.sync.stage_sql import column_types, unsupported_reason

pytestmark = pytest.mark.slow
#: What an MES on MariaDB declares to keep microseconds (plain DATETIME keeps whole seconds).
DateTime = _DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")
#: A JSON document; NULL is SQL NULL, not JSON null.
Document = JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")
MAPPINGS = REPO_ROOT / "mappings"
CROSSWALKS = load_crosswalks(MAPPINGS / "crosswalks")
SOURCES = ("postgresql", "mariadb", "sqlite")


def _source_table(metadata: MetaData) -> Table:
    return Table(
        "reading", metadata,
        Column("seq", Integer, primary_key=True, autoincrement=False),
        Column("rid", Integer),  # the natural key, NULL in some rows
        Column("code", String(24)), Column("txt", String(60)),
        Column("qty", Numeric(18, 3)), Column("unit", String(8)), Column("minutes", Integer),
        Column("started", DateTime), Column("day", Date), Column("flag", Boolean), Column("attrs", Document),
    )


# -- the rows --------------------------------------------------------------------------------

HOSTILE_TEXT = [
    "齿轮箱 – Gearbox ✓", "  padded  ", "\u3000全角空格\u3000", "it's", "a\\b", "tab\there", "line\nbreak",
    "Ärger über Öl", "x" * 59, "物料编码长长长长长长长长长长长长长长长长长长长长", "NULL", "0",
]


def _same_case_rules(c: str) -> bool:
    """Left out: characters whose upper or lower case the backends disagree on. Python's
    str.upper applies Unicode's full case mapping ('ß' -> 'SS', 'ﬁ' -> 'FI'), PostgreSQL's
    upper() the C library's one character for one ('ß' stays 'ß'); code points that are
    unassigned or private have no case the two can be held to."""
    return len(c.upper()) == 1 and len(c.lower()) == 1


text_values = st.one_of(
    st.none(), st.just(""), st.sampled_from(HOSTILE_TEXT),
    st.text(
        alphabet=st.characters(blacklist_categories=("Cs", "Cn", "Co"), blacklist_characters="\x00").filter(_same_case_rules),
        max_size=60,
    ),
)
CODES = [
    "EQ-SH01-CUT-01", " EQ-SH01-ASM-01 ", "EQ-SZ01-PKG-01", "EQ-XX", "eq-sh01-cut-01", "WO-2026-000123",
    "WO-2026-1234567", "WO-2025-000001", "", "齿轮箱",
]
UNITS = ["g", "kg", "pcs", "m", " g ", "G", "oz", ""]
#: Wall-clock hours around Berlin's clock changes of 2026 (the gap 02:00-03:00 on 29 March, the
#: overlap 02:00-03:00 on 25 October), to the microsecond.
DST_TIMES = st.builds(
    lambda day, minutes, micros: day + timedelta(minutes=minutes, microseconds=micros),
    st.sampled_from([datetime(2026, 3, 29, 1, 0), datetime(2026, 10, 25, 1, 0)]),
    st.integers(0, 179), st.sampled_from([0, 1, 500_000, 999_999]),
)
#: Placeholders sources use for "never" and "always": converted across zones they fall outside
#: the years 1 to 9999 that Python holds (both paths quarantine them alike).
EDGE_TIMES = st.sampled_from([datetime(1, 1, 1), datetime(1, 1, 1, 3, 30), datetime(9999, 12, 31, 23, 30), datetime(9999, 12, 31, 12)])


json_values = st.one_of(
    st.none(), st.booleans(), st.integers(-(10**12), 10**12), st.sampled_from(["齿轮", "", "a\\b", "it's"]),
    # Left out: numbers written with a zero fraction (3.0, -0.0). PostgreSQL gives them as
    # written ('3.0', '0.0'); the driver hands the Python path a float, which it prints '3', '0'.
    st.sampled_from([12.5, 0.1, 1e20, 1.5e-7]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cn", "Co"), blacklist_characters="\x00"), max_size=12),
)
#: Left out: a document that is a JSON string ('"text"'). The driver hands it to the Python path
#: as the str 'text', which json_get then takes for JSON text and rejects as not JSON; the SQL
#: path finds no key in it and loads NULL.
documents = st.one_of(
    st.none(), st.sampled_from([[], 1, True]),
    st.fixed_dictionaries({}, optional={
        "zh_CN": st.one_of(json_values, st.just({"nested": 1}), st.just([1, 2])),
        "size": st.lists(json_values, max_size=3),
    }),
)


def quantities(digits: int) -> st.SearchStrategy[Decimal]:
    """NUMERIC(18,3) values with up to ``digits`` significant digits (SQLite keeps 15)."""
    top = Decimal(10) ** (digits - 3) - Decimal("0.001")
    return st.decimals(min_value=-top, max_value=top, places=3, allow_nan=False, allow_infinity=False)


def rows(digits: int) -> st.SearchStrategy[list[dict[str, Any]]]:
    row = st.fixed_dictionaries({
        "code": st.one_of(st.none(), st.sampled_from(CODES)),
        "txt": text_values,
        "qty": st.one_of(st.none(), st.sampled_from([Decimal(0), Decimal("0.5"), Decimal("2.0005")]), quantities(digits)),
        "unit": st.one_of(st.none(), st.sampled_from(UNITS)),
        "minutes": st.one_of(st.none(), st.integers(-5, 5), st.integers(-(10**6), 10**6)),
        "started": st.one_of(
            st.none(), DST_TIMES, EDGE_TIMES, st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31))),
        "day": st.one_of(st.none(), st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31))),
        "flag": st.one_of(st.none(), st.booleans()),
        "attrs": documents,
        "null_key": st.integers(0, 9).map(lambda n: n == 0),
    })

    def numbered(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for i, r in enumerate(batch, start=1):
            null_key = r.pop("null_key")
            out.append({"seq": i, "rid": None if null_key else i * 7, **r})
        return out

    return st.lists(row, min_size=20, max_size=50).map(numbered)


# -- the flows -------------------------------------------------------------------------------


def _flow(name: str, columns: list[dict[str, Any]], transform: str) -> Flow:
    return Flow.model_validate({
        "flow": name, "direction": "mes_to_erp",
        "source": {"connection": "src", "table": "reading"},
        "target": {"connection": "dst", "table": f"{name}_in"},
        "key": ["k"], "load": {"transform": transform},
        "columns": [{"target": "k", "source": "rid"}, *columns],
    })


@st.composite
def shapes(draw: st.DrawFn) -> dict[str, Any]:
    """The generated parameters of the flows: target column types and expression literals."""
    return {
        "length": draw(st.sampled_from([1, 4, 8, 12, 40, 60])),
        "short": draw(st.integers(1, 10)),
        "width": draw(st.integers(0, 30)),
        "fill": draw(st.sampled_from(["0", "*", " ", "中", "'"])),
        "start": draw(st.integers(1, 8)),
        "count": draw(st.integers(0, 12)),
        "ndigits": draw(st.integers(0, 8)),
        "decimal": draw(st.sampled_from([(9, 3), (12, 0), (18, 3), (20, 6), (38, 10), (6, 2)])),
        "default": draw(st.sampled_from(["n/a", "", "缺省"])),
        "factor": draw(st.sampled_from(["1.5", "0.001", "1000", "-2"])),
    }


def text_columns(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Column[Any]]]:
    w, f = s["width"], s["fill"].replace("'", "\\'")
    columns = [
        {"target": "t_clean", "source": "txt", "clean": ["trim", "upper"]},
        {"target": "t_lower", "expr": "lower(txt)"},
        {"target": "t_concat", "expr": f"concat('R-', lpad(rid, {w}, '{f}'), '/', coalesce(txt, ''))"},
        {"target": "t_rpad", "expr": f"rpad(trim(txt), {w}, '{f}')"},
        {"target": "t_sub", "expr": f"substr(upper(txt), {s['start']}, {s['count']})"},
        {"target": "t_str", "expr": "concat(str(qty), '|', string(minutes))"},
        {"target": "t_default", "source": "txt", "clean": ["trim"], "default": s["default"]},
        {"target": "t_number", "source": "qty"},
        {"target": "wc", "source": "code", "clean": ["trim"], "crosswalk": "work_center"},
        {"target": "order_no", "source": "code", "crosswalk": "order_number"},
    ]
    types = {"t_clean": s["length"], "t_lower": s["short"], "t_concat": 80, "t_rpad": s["length"],
             "t_sub": s["short"], "t_str": s["length"], "t_default": s["short"], "t_number": s["short"], "wc": 8, "order_no": 12}
    return columns, [Column(name, String(n)) for name, n in types.items()]


def number_columns(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Column[Any]]]:
    p, sc = s["decimal"]
    columns = [
        {"target": "q", "source": "qty", "convert_unit": {"unit_column": "unit"}},
        {"target": "q_inv", "source": "qty", "convert_unit": {"unit_column": "unit", "inverse": True, "clean": ["trim", "lower"]}},
        {"target": "rate", "expr": "qty / minutes"},
        {"target": "rounded", "expr": f"round(qty * {s['factor']} - minutes, {s['ndigits']})"},
        {"target": "negated", "expr": "-qty + 1.5"},
        {"target": "whole", "expr": "minutes * 3 - 7"},
        {"target": "whole_qty", "expr": "qty"},
        {"target": "quotient", "expr": "minutes / 4"},
        {"target": "defaulted", "source": "minutes", "default": 0},
    ]
    target = [
        Column("q", Numeric(p, sc)), Column("q_inv", Numeric(p, sc)), Column("rate", Numeric(12, 4)),
        Column("rounded", Numeric(p, sc)), Column("negated", Numeric(p, sc)), Column("whole", BigInteger),
        Column("whole_qty", BigInteger), Column("quotient", Numeric(p, sc)), Column("defaulted", Integer, nullable=False),
    ]
    return columns, target


def time_columns(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Column[Any]]]:
    columns = [
        {"target": "utc", "source": "started", "timezone": {"from": "Europe/Berlin", "to": "UTC"}},
        {"target": "aware", "source": "started", "timezone": {"from": "Europe/Berlin", "to": "UTC"}},
        {"target": "shanghai", "source": "started", "timezone": {"from": "UTC", "to": "Asia/Shanghai"}},
        {"target": "as_is", "source": "started"},
        {"target": "day", "source": "day"},
    ]
    target = [
        Column("utc", DateTime), Column("aware", _DateTime(timezone=True)), Column("shanghai", DateTime),
        Column("as_is", DateTime), Column("day", Date),
    ]
    return columns, target


def document_columns(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Column[Any]]]:
    columns = [
        {"target": "name_zh", "expr": "json_get(attrs, 'zh_CN')"},
        {"target": "first_size", "expr": "concat('#', json_get(attrs, 'size', '0'))"},
    ]
    return columns, [Column("name_zh", String(s["length"])), Column("first_size", String(40))]


def flag_columns(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Column[Any]]]:
    columns = [
        {"target": "flag", "source": "flag"},
        {"target": "flag_logic", "expr": f"not flag or (flag = (minutes > {s['short']}) and flag <> (qty < 0))"},
        {"target": "flag_pick", "expr": "if(flag, concat('Y', coalesce(txt, '')), if(not flag, 'N', '?'))"},
    ]
    return columns, [Column("flag", Boolean), Column("flag_logic", Boolean), Column("flag_pick", String(s["length"]))]


def logic_columns(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Column[Any]]]:
    """Comparisons, and/or/not and if(): each branch counts its failures on its own rows only."""
    p, sc = s["decimal"]
    w, f = s["width"], s["fill"].replace("'", "\\'")
    columns = [
        {"target": "status", "expr": f"if(qty >= minutes, 'Completed', concat('Open ', lpad(rid, {w}, '{f}')))"},
        {"target": "ordered", "expr": "txt < 'M' or txt = '' or txt >= code"},
        {"target": "both", "expr": f"not (minutes > {s['short']} and qty <> 0) or code <> 'EQ-XX'"},
        {"target": "safe_rate", "expr": "if(minutes = 0, 0, qty / minutes)"},
        {"target": "risky_rate", "expr": f"if(minutes <= {s['short']}, qty / minutes, -1)"},
        {"target": "mixed", "expr": f"if(code = 'EQ-XX', minutes, round(qty * {s['factor']}, {s['ndigits']}))"},
        {"target": "nested", "expr": "if(unit = 'g', 'gram', if(unit = 'kg' or unit = 'KG', 'kilo', coalesce(unit, 'none')))"},
        {"target": "dated", "expr": "if(day >= day, 'y', 'n')"},
    ]
    target = [
        Column("status", String(s["length"])), Column("ordered", Boolean), Column("both", Boolean),
        # Quotients as the numbers flow's rate: PostgreSQL divides to fewer digits than Python's 38.
        Column("safe_rate", Numeric(12, 4)), Column("risky_rate", Numeric(12, 4)), Column("mixed", Numeric(p, sc)),
        Column("nested", String(s["short"])), Column("dated", String(1)),
    ]
    return columns, target


def stamp_columns(s: dict[str, Any]) -> tuple[list[dict[str, Any]], list[Column[Any]]]:
    """now() is the run's start on the target's clock: one value per run, so the two paths'
    runs are compared in how they use it (see STAMPED), not in the value itself."""
    columns = [
        {"target": "stamped", "expr": "now()"},
        {"target": "stamped_local", "expr": "now()", "timezone": {"from": "UTC", "to": "Asia/Shanghai"}},
    ]
    return columns, [Column("stamped", _DateTime(timezone=True)), Column("stamped_local", DateTime)]


#: Flows both paths must agree on (flags and documents only from PostgreSQL: see FROM_PG_ONLY).
PARITY_FLOWS: dict[str, Callable[[dict[str, Any]], tuple[list[dict[str, Any]], list[Column[Any]]]]] = {
    "texts": text_columns, "numbers": number_columns, "times": time_columns, "flags": flag_columns,
    "documents": document_columns, "logic": logic_columns, "stamps": stamp_columns,
}
#: Flows whose loaded values hold now(): compared once each run's one value is checked and set aside.
STAMPED = ("stamps",)
#: Rules with no SQL twin, each with a word its unsupported_reason must name.
PYTHON_ONLY: dict[str, tuple[dict[str, Any], Callable[[], Column[Any]], str]] = {
    "casts": ({"target": "v", "source": "minutes", "cast": "string"}, lambda: Column("v", String(20)), "cast"),
    "json": ({"target": "v", "expr": "json_get(txt, 'zh_CN')"}, lambda: Column("v", String(60)), "json_get"),
}
#: The SQL path copies boolean and JSON columns into PostgreSQL only from PostgreSQL (json_get
#: has an SQL twin on json/jsonb alone): from another source these flows run in Python.
FROM_PG_ONLY = ("flags", "documents")


def _target(name: str, extra: list[Column[Any]]) -> Table:
    return Table(f"{name}_in", MetaData(), Column("k", BigInteger, primary_key=True, autoincrement=False), *extra)


def _exact(value: Any) -> tuple[str, str]:
    """A value as its type and exact text: Decimal('1.50') is not Decimal('1.5') here."""
    return type(value).__name__, repr(value)


def _outcome(connections: Connections, flow: str, target: Table, record: Any) -> tuple[Any, ...]:
    with connections.engine("dst").connect() as conn:
        loaded = [tuple(_exact(v) for v in r) for r in conn.execute(select(target).order_by(target.c.k))]
        waiting = sorted(
            conn.execute(select(quarantine.c.source_key, quarantine.c.reason).where(quarantine.c.flow == flow)).all()
        )
    return loaded, waiting, asdict(record.counts)


class Databases:
    """Fresh databases for one example: the source of the given kind, two PostgreSQL targets."""

    def __init__(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        self.pg: Callable[[str], URL] = request.getfixturevalue("pg_database")
        self.mariadb: Callable[[str], URL] | None = None
        self.request = request
        self.tmp_path = tmp_path

    def source(self, kind: str) -> URL:
        if kind == "postgresql":
            return self.pg("src")
        if kind == "mariadb":
            if self.mariadb is None:
                self.mariadb = self.request.getfixturevalue("mariadb_database")
            return self.mariadb("src")
        return URL.create("sqlite", database=str(self.tmp_path / f"src_{uuid.uuid4().hex[:8]}.db"))

    def target(self, kind: str, label: str) -> URL:
        if kind == "postgresql":
            return self.pg(label)
        if kind == "mariadb":
            if self.mariadb is None:
                self.mariadb = self.request.getfixturevalue("mariadb_database")
            return self.mariadb(label)
        return URL.create("sqlite", database=str(self.tmp_path / f"{label}_{uuid.uuid4().hex[:8]}.db"))


def check_parity(
    kind: str, dbs: Databases, batch: list[dict[str, Any]], shape: dict[str, Any],
    target_kind: str = "postgresql", fast: str = "sql",
) -> None:
    """Run every flow on the Python path and on the ``fast`` path (sql or in_process), each into
    a fresh database of ``target_kind``, and require the same outcome."""
    urls = {"src": dbs.source(kind), "python": dbs.target(target_kind, "python"), fast: dbs.target(target_kind, fast)}
    source = _source_table(MetaData())
    with Connections({"src": urls["src"]}) as connections:
        source.create(connections.engine("src"))
        with connections.engine("src").begin() as conn:
            conn.execute(source.insert(), batch)

    results: dict[str, dict[str, Any]] = {"python": {}, fast: {}}
    for path in ("python", fast):
        with Connections({"src": urls["src"], "dst": urls[path]}) as connections:
            flows: dict[str, Flow] = {}
            targets: dict[str, Table] = {}
            for name, build in PARITY_FLOWS.items():
                columns, extra = build(shape)
                forced = path == "sql" and (kind == "postgresql" or name not in FROM_PG_ONLY)
                flows[name] = _flow(name, columns, path if path == "python" or forced else "auto")
                targets[name] = _target(name, extra)
            for name, (column, extra_column, _) in PYTHON_ONLY.items():
                flows[name] = _flow(name, [column], "auto")
                targets[name] = _target(name, [extra_column()])
            for table in targets.values():
                table.create(connections.engine("dst"))
            project = Project(flows=flows, defaults=Defaults(), mappings_dir=str(MAPPINGS))
            with connections.engine("src").connect() as sconn, connections.engine("dst").connect() as tconn:
                reflected = {name: reflect_table(tconn, t.name, role="target", flow=flows[name]) for name, t in targets.items()}
                reflected_source = reflect_table(sconn, "reading", role="source", flow=flows["texts"])
                if fast == "sql":
                    why = {
                        name: unsupported_reason(flow, reflected_source, reflected[name], sconn.dialect.name, "postgresql", CROSSWALKS)
                        for name, flow in flows.items()
                    }
                else:
                    why = {
                        name: stage_in_process.unsupported_reason(
                            flow, column_types(reflected_source), column_types(reflected[name]), CROSSWALKS,
                        )
                        for name, flow in flows.items()
                    }
            for name, (_, _, word) in PYTHON_ONLY.items():
                assert why[name] is not None and word in why[name], (name, why[name])
            if kind != "postgresql" and fast == "sql":
                assert all(why[name] is not None for name in FROM_PG_ONLY)
            for name in flows:
                run = run_flow(project, name, connections)
                expected = "python" if path == "python" or why[name] is not None else fast
                assert run.record.options["transform"] == expected, (name, why[name])
                assert run.record.outcome == "success"
                results[path][name] = _outcome(connections, name, targets[name], run.record)
    if fast == "in_process":
        # The flows whose every rule has a DuckDB twin must have taken it: a parity that holds
        # only because everything ran in Python proves nothing.
        assert {"texts", "times"} <= {n for n, reason in why.items() if reason is None}, why

    for name in STAMPED:
        for path in ("python", fast):
            loaded, *rest = results[path][name]
            stamps = {row[1:] for row in loaded}
            assert len(stamps) <= 1, f"flow {name} on the {path} path: now() differs between rows: {stamps}"
            results[path][name] = ([row[:1] for row in loaded], *rest)
    for name in PARITY_FLOWS:
        python, other = results["python"][name], results[fast][name]
        assert python[0] == other[0], f"flow {name}: loaded rows differ"
        assert python[1] == other[1], f"flow {name}: quarantine differs"
        assert python[2] == other[2], f"flow {name}: ledger counts differ"


def _parity_test(kind: str, digits: int, target_kind: str = "postgresql", fast: str = "sql") -> Callable[..., None]:
    @settings(
        max_examples=15, deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(batch=rows(digits), shape=shapes())
    def test(batch: list[dict[str, Any]], shape: dict[str, Any], request: pytest.FixtureRequest, tmp_path: Path) -> None:
        check_parity(kind, Databases(request, tmp_path), batch, shape, target_kind, fast)

    return test


test_parity_from_postgresql = _parity_test("postgresql", 18)
test_parity_from_mariadb = _parity_test("mariadb", 18)
#: SQLite stores NUMERIC as a double: exact to 15 significant digits.
test_parity_from_sqlite = _parity_test("sqlite", 15)

#: The in-process path (DuckDB) into the targets that have no SQL path, against the Python path.
test_in_process_from_postgresql_into_mariadb = _parity_test("postgresql", 18, "mariadb", "in_process")
test_in_process_from_mariadb_into_mariadb = _parity_test("mariadb", 18, "mariadb", "in_process")
test_in_process_from_postgresql_into_sqlite = _parity_test("postgresql", 18, "sqlite", "in_process")
test_in_process_from_sqlite_into_sqlite = _parity_test("sqlite", 15, "sqlite", "in_process")
