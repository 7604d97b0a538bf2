"""The in-process path: the column rules run in DuckDB over each chunk of source rows as Arrow.

For a target other than PostgreSQL (which runs the rules itself, etl.sync.stage_sql), each chunk
the source reads goes into an embedded DuckDB as an Arrow table, and the rules compiled by the
one compiler (etl.rules.sql, rendered for DuckDB) give the staged rows and each row's reasons in
one SELECT. What follows is the Python path's own: parent checks, quarantine, the dialect's bulk
load into staging, duplicates, validation, merge.

Exactness: decimals travel as Arrow decimal128 and are computed as DECIMAL(38, s) (never a
float); timestamps keep microseconds; empty text stays empty, NULL stays NULL. A rule without an
exact DuckDB twin (decimal division, json_get, ``cast``) keeps the flow on the Python path, and
:func:`unsupported_reason` says why. A value that overflows DuckDB's 38 digits stops its whole
query, not one row: that chunk then runs on the Python path, which rejects the row with the
reason every backend gives it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa
from sqlalchemy import BigInteger, Column, MetaData, Numeric, Table, Text, func, select
from sqlalchemy.dialects.postgresql.psycopg2 import PGDialect_psycopg2
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement

from etl.config.crosswalks import Crosswalk
from etl.config.flows import Flow
from etl.core.rows import SEQ, SOURCE_KEY, SOURCE_KEY_LENGTH, Reject, is_null
from etl.core.types import ColumnType
from etl.rules.sql import (
    DUCKDB,
    REASON,
    WORK_SCALE,
    Compiler,
    Unsupported,
    checked_rows,
    source_key_sql,
    two_layers,
    with_lookups,
)
from etl.rules.transform import TransformResult, transform
from etl.sync.stage_sql import local_time_failures, python_only_reason

log = logging.getLogger(__name__)


class _DuckDBRendering(PGDialect_psycopg2):
    """PostgreSQL's SQL as DuckDB reads it: positional ``?`` parameters, DuckDB's decimal."""

    name = "duckdb"

    def __init__(self) -> None:
        super().__init__(paramstyle="qmark")


@compiles(Numeric, "duckdb")
def _numeric(element: Numeric[Any], compiler: Any, **kw: Any) -> str:
    if element.precision is None:
        return f"DECIMAL(38, {WORK_SCALE})"
    return f"DECIMAL({element.precision}, {element.scale or 0})"


_RENDERING = _DuckDBRendering()

#: PostgreSQL functions the compiled rules call that DuckDB names otherwise, with the meaning the
#: Python path gives them (quote_literal as etl.core.reasons.quoted writes it).
_MACROS = (
    "CREATE MACRO btrim(s, chars) AS trim(s, chars)",
    "CREATE MACRO quote_literal(s) AS CASE WHEN contains(CAST(s AS VARCHAR), '\\') "
    "THEN 'E''' || replace(replace(CAST(s AS VARCHAR), '\\', '\\\\'), '''', '''''') || '''' "
    "ELSE '''' || replace(CAST(s AS VARCHAR), '''', '''''') || '''' END",
)


def _arrow_type(name: str, kind: ColumnType) -> pa.DataType:
    if kind.kind == "string":
        return pa.string()
    if kind.kind == "integer":
        return pa.int64()
    if kind.kind == "decimal":
        if kind.precision is None:
            raise Unsupported(f"source column {name} is a decimal without a declared precision")
        return pa.decimal128(kind.precision, kind.scale or 0)
    if kind.kind == "timestamp":
        return pa.timestamp("us", tz="UTC" if kind.tz_aware else None)
    if kind.kind == "date":
        return pa.date32()
    if kind.kind == "boolean":
        return pa.bool_()
    raise Unsupported(f"source column {name} is {kind.kind}, which has no exact Arrow twin here")


def _sql_type(kind: ColumnType) -> sqltypes.TypeEngine[Any]:
    if kind.kind == "integer":
        return BigInteger()
    if kind.kind == "decimal":
        return Numeric(kind.precision, kind.scale)
    if kind.kind == "timestamp":
        return sqltypes.DateTime(timezone=kind.tz_aware)
    if kind.kind == "date":
        return sqltypes.Date()
    if kind.kind == "boolean":
        return sqltypes.Boolean()
    return Text()


def _raw_table(flow: Flow, source_types: dict[str, ColumnType]) -> Table:
    """The chunk as DuckDB sees it (an Arrow table registered under this name)."""
    return Table(
        "etl_raw", MetaData(),
        *[Column(c, _sql_type(source_types[c])) for c in flow.source_columns()],
        Column(SEQ, BigInteger),
    )


def unsupported_reason(
    flow: Flow, source_types: dict[str, ColumnType], target_types: dict[str, ColumnType],
    crosswalks: dict[str, Crosswalk],
) -> str | None:
    """Why ``flow`` cannot take the in-process path, or None if it can."""
    python_only = python_only_reason(flow)
    if python_only is not None:
        return python_only
    try:
        for name in flow.source_columns():
            _arrow_type(name, source_types[name])
        compiler = Compiler(flow, _raw_table(flow, source_types), source_types, target_types, crosswalks, rendering=DUCKDB)
        for spec in flow.columns:
            compiler.column(spec)
    except Unsupported as exc:
        return str(exc)
    return None


class InProcessRules:
    """The flow's rules on DuckDB, one chunk at a time (the Python path's ``transform``)."""

    def __init__(
        self, flow: Flow, crosswalks: dict[str, Crosswalk], source_types: dict[str, ColumnType],
        target_types: dict[str, ColumnType],
    ) -> None:
        self.flow = flow
        self.crosswalks = crosswalks
        self.source_types = source_types
        self.target_types = target_types
        self.columns = flow.source_columns()
        self.schema = pa.schema(
            [pa.field(c, _arrow_type(c, source_types[c])) for c in self.columns] + [pa.field(SEQ, pa.int64())]
        )
        self.db = duckdb.connect(config={"threads": 2})
        #: The Arrow tables of the chunk in hand (its rows, its lookups), released after it.
        self.registered: list[str] = []
        #: What now() gives in the chunk in hand: the run's start on the target's clock.
        self.now: datetime | None = None
        # Times come out as UTC instants; a session zone would shift a TIMESTAMPTZ's fields.
        self.db.execute("SET TimeZone = 'UTC'").fetchall()
        for macro in _MACROS:
            self.db.execute(macro).fetchall()

    def close(self) -> None:
        self.db.close()

    def __call__(
        self, frame: pd.DataFrame, flow: Flow, crosswalks: dict[str, Crosswalk], target_types: dict[str, ColumnType],
        now: datetime | None = None,
    ) -> TransformResult:
        self.now = now
        frame = frame.reset_index(drop=True)
        data = {c: frame[c] for c in self.columns}
        data[SEQ] = pd.Series(range(len(frame)), dtype="int64")
        try:
            # A value the source type does not hold exactly (more fraction digits than the
            # declared scale, as SQLite may keep) is the Python path's to convert or reject.
            batch = pa.Table.from_pandas(pd.DataFrame(data), schema=self.schema, preserve_index=False)
            staged = self._apply(batch)
        except (duckdb.Error, pa.ArrowException) as exc:
            # An overflow or a failed cast stops the whole query: the Python path rejects the row.
            if isinstance(exc, duckdb.Error):
                self.db.abort()
            log.warning("flow %s: a chunk of %d rows runs on the Python path: %s", self.flow.flow, len(frame), exc)
            return transform(frame, flow, crosswalks, target_types, now)
        finally:
            for name in self.registered:
                self.db.unregister(name)
            self.registered.clear()
        targets = [spec.target for spec in self.flow.columns]
        reasons = staged.column(REASON).to_pylist()
        bad = [i for i, r in enumerate(reasons) if r is not None]
        keys = staged.column(SOURCE_KEY).to_pylist()
        good_mask = pa.array([r is None for r in reasons])
        good = staged.filter(good_mask)
        rows = pd.DataFrame(
            {name: pd.Series(_python_values(good.column(name)), dtype=object) for name in [*targets, SOURCE_KEY]},
        )
        seqs = staged.column(SEQ).to_pylist()
        rows.index = pd.Index([seqs[i] for i in range(len(seqs)) if reasons[i] is None])
        rejects = []
        if bad:
            records = frame.iloc[[seqs[i] for i in bad]].to_dict("records")
            rejects = [
                Reject(keys[i], {str(k): (None if is_null(v) else v) for k, v in record.items()}, reasons[i])
                for i, record in zip(bad, records, strict=True)
            ]
        return TransformResult(rows, rejects)

    def _apply(self, batch: pa.Table) -> pa.Table:
        self._register("etl_raw", batch)
        raw = _raw_table(self.flow, self.source_types)
        flow = self.flow
        collector = Compiler(flow, raw, self.source_types, self.target_types, self.crosswalks, now=self.now, rendering=DUCKDB)
        for spec in flow.columns:
            collector.column(spec)
        self._fill_lookups(collector, raw)
        rows = with_lookups(raw, collector)
        compiler = Compiler(
            flow, raw, self.source_types, self.target_types, self.crosswalks, joined=rows, now=self.now, rendering=DUCKDB,
        )
        before, values = two_layers(flow, compiler, rows, self._local_time_failures(collector, raw, rows))
        checked, outputs, reason = checked_rows(flow, before, values)
        query = select(
            *outputs, checked.c[SEQ], func.left(source_key_sql(flow, checked), SOURCE_KEY_LENGTH).label(SOURCE_KEY),
            reason.label(REASON),
        ).select_from(checked).order_by(checked.c[SEQ])
        return self._run(query).to_arrow_table()

    def _register(self, name: str, table: pa.Table) -> None:
        self.db.register(name, table)
        self.registered.append(name)

    def _run(self, statement: Any) -> Any:
        compiled = statement.compile(dialect=_RENDERING)
        params = [compiled.params[name] for name in compiled.positiontup or []]
        return self.db.sql(str(compiled), params=params)

    def _fill_lookups(self, collector: Compiler, raw: Table) -> None:
        """Each lookup's codes translated by etl.config.crosswalks itself, as on the SQL path."""
        for table, (name, side, code, has_rule) in zip(collector.lookup_tables, collector.lookups, strict=True):
            crosswalk = self.crosswalks[name]
            if has_rule:
                found = self._run(select(code).select_from(raw).where(code.isnot(None)).distinct()).fetchall()
                entries = {c: hit for (c,) in found if (hit := crosswalk.lookup(c, side)) is not None}
            else:
                entries = dict(crosswalk.entries(side))
            factors = [f for _, f in entries.values()]
            self._register(str(table.name), pa.table({
                "code": pa.array(list(entries), pa.string()),
                "mapped": pa.array([m for m, _ in entries.values()], pa.string()),
                "factor": pa.array(factors, _factor_type(factors)),
            }))

    def _local_time_failures(
        self, compiler: Compiler, raw: Table, rows: Any,
    ) -> dict[str, list[tuple[ColumnElement[bool], ColumnElement[Any]]]]:
        """Naive local times in a DST gap or overlap of their zone, as on the SQL path."""
        return local_time_failures(lambda statement: [r[0] for r in self._run(statement).fetchall()], compiler, raw, rows)


def _python_values(column: pa.ChunkedArray) -> list[Any]:
    """A result column as the Python values the Python path stages (None for NULL): naive
    times and decimals through numpy and pandas, several times quicker than value by value."""
    kind = column.type
    if pa.types.is_timestamp(kind):
        # datetime64[us] to objects: datetime.datetime, exact to the microsecond; NaT is None.
        # An instant comes out in UTC (the session's zone), as datetime.timezone.utc.
        naive = list(column.to_numpy(zero_copy_only=False).astype(object))
        return naive if kind.tz is None else [None if v is None else v.replace(tzinfo=UTC) for v in naive]
    if pa.types.is_decimal(kind):
        return list(column.to_pandas())
    return list(column.to_pylist())


def _factor_type(factors: Sequence[Decimal | None]) -> pa.DataType:
    """The narrowest exact decimal for a crosswalk's unit factors: a wider one only costs digits
    a product of a quantity and a factor may need."""
    scale = max((max(0, -int(f.as_tuple().exponent)) for f in factors if f is not None), default=0)
    digits = max((len(f.as_tuple().digits) for f in factors if f is not None), default=1)
    return pa.decimal128(min(38, max(digits, scale) + 1), scale)
