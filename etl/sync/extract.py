"""Read a flow's source: its ceiling, then the window's rows in chunks, or just its keys.

The seam between a flow's source and everything after it (transform, crosswalks, validation,
quarantine, merge, reconciliation, ledger) is two small protocols here, and one factory:

- ``open_source(flow, connections)`` is the one place that turns a flow's ``source:`` kind
  (``etl.config.flows.SOURCE_KINDS``: ``table``, ``files`` (etl.sync.files), ``api``
  (etl.sync.api_source)) into an :class:`OpenedSource`. A new kind
  is a key in ``SourceSpec`` plus a branch here; the runner never asks which kind it has.
- :class:`OpenedSource` is the source for one run, opened by the runner before the target's
  transaction begins and closed after it ends: ``describe`` offers its columns (names and
  types, as a SQLAlchemy ``Table``: the schema check and the SQL path's raw table read them;
  it gets the run's target connection, where a source keeps its exactly-once record, and
  leaves what the run should report about the source in ``warnings``),
  ``reader`` gives the :class:`Source` that reads them, ``record`` writes the source's own
  exactly-once record inside the run's transaction (a table source has none: its watermark
  is enough; it may add figures to the run's ledger options), ``after_commit`` finishes once
  the target committed (nothing for a table; it announces each step it takes to ``enter``, the
  crash tests' hook, and must leave a state the next run recovers from wherever it stops), and
  ``connection`` is a database source's read-only connection (None for any other kind: a
  flow with ``lines`` or ``cursor.skip_loaded`` needs one).
- :class:`Source` yields batches and the cursor they reached: ``chunks`` (DataFrames of plain
  Python values, the Python path), ``copy_out`` (the same rows as numbered PostgreSQL COPY
  data, the SQL path; ``dialect_name`` says whose column types they carry: ``postgresql`` keeps
  them, any other name gets each type's PostgreSQL twin, text for untyped values), and, for a
  flow with a cursor, ``ceiling``, ``clock`` and ``beyond``; ``keys`` and ``rows_with_keys``
  serve delete detection. A source without a cursor is read whole each run (``window`` None).
  A source may also offer ``fill_raw`` (:class:`FillsRaw`), filling the raw table its own way.

``TableSource`` reads a database table; etl.sync.files reads a drop folder of CSV and Excel
files. Sources are only read: every statement of a table source is a SELECT with bound values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol, runtime_checkable

import pandas as pd
from sqlalchemy import Connection, DateTime, Engine, Select, Table, and_, exists, false, func, or_, select, tuple_

from etl.config.flows import Flow
from etl.core.rows import frame_from_rows
from etl.core.watermark import CursorValue, Window, empty_window, window_filter
from etl.dialects import dialect_for
from etl.dialects.base import exclude_filter, scope_filter
from etl.sync.api_source import OpenedApi
from etl.sync.connections import Connections
from etl.sync.files import OpenedFolder
from etl.sync.ledger import RunRecord
from etl.sync.schema import reflect_table


class Source(Protocol):
    """One run's reader of a flow's source (see the module's docstring)."""

    @property
    def table(self) -> Table: ...

    @property
    def dialect_name(self) -> str: ...

    @property
    def copies_binary(self) -> bool: ...

    def ceiling(self, limit: CursorValue | None = None) -> CursorValue | None: ...

    def clock(self) -> datetime: ...

    def beyond(self, limit: CursorValue, sample: int) -> tuple[int, list[str]]: ...

    def chunks(self, window: Window | None, chunk_size: int) -> Iterator[pd.DataFrame]: ...

    def copy_out(self, window: Window | None, out: BinaryIO, binary: bool) -> None: ...

    def rows_with_keys(self, columns: list[str], keys: list[tuple[Any, ...]], chunk_size: int) -> Iterator[pd.DataFrame]: ...

    def keys(self, chunk_size: int) -> Iterator[pd.DataFrame]: ...


@runtime_checkable
class FillsRaw(Protocol):
    """A Source that can fill the SQL path's raw table itself, faster than by ``copy_out``
    (a CSV file PostgreSQL parses). Optional: ``fill_raw`` returns None where it cannot, and
    the rows then go through ``copy_out``."""

    def fill_raw(self, tconn: Connection, raw: Table) -> int | None: ...


class OpenedSource(Protocol):
    """A flow's source opened for one run (see the module's docstring)."""

    @property
    def connection(self) -> Connection | None: ...

    def open(self) -> None: ...

    @property
    def warnings(self) -> list[str]: ...

    def describe(self, tconn: Connection) -> Table: ...

    def reader(self, table: Table, plants: list[str] | None) -> Source: ...

    def record(self, tconn: Connection, run: RunRecord, now: datetime) -> None: ...

    def after_commit(self, enter: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...


def open_source(flow: Flow, connections: Connections) -> OpenedSource:
    """The source of ``flow`` for one run, not yet opened: the one place a source's kind
    chooses its implementation."""
    if flow.source.kind == "table":
        assert flow.source.connection is not None
        return OpenedTable(flow, connections.engine(flow.source.connection))
    if flow.source.files is not None:
        return OpenedFolder(flow, flow.source.files)
    if flow.source.kind == "api":
        assert flow.source.api is not None
        return OpenedApi(flow, flow.source.api)
    raise NotImplementedError(f"{flow.file}: flow {flow.flow!r}: source kind {flow.source.kind!r} has no reader")


class OpenedTable:
    """A table source for one run: a read-only connection in its own read transaction."""

    def __init__(self, flow: Flow, engine: Engine) -> None:
        self.flow = flow
        self.engine = engine
        self._conn: Connection | None = None

    @property
    def connection(self) -> Connection | None:
        return self._conn

    @property
    def warnings(self) -> list[str]:
        return []

    def open(self) -> None:
        self._conn = self.engine.connect()
        self._conn.begin()
        dialect_for(self._conn).begin_read(self._conn)

    def _open(self) -> Connection:
        if self._conn is None:
            raise RuntimeError("the source is not open")
        return self._conn

    def describe(self, tconn: Connection) -> Table:
        assert self.flow.source.table is not None
        return reflect_table(self._open(), self.flow.source.table, role="source", flow=self.flow)

    def reader(self, table: Table, plants: list[str] | None) -> Source:
        return TableSource(self._open(), table, self.flow, plants)

    def record(self, tconn: Connection, run: RunRecord, now: datetime) -> None:
        """A table's rows are found again by the watermark: nothing else to record."""

    def after_commit(self, enter: Callable[[str], None]) -> None:
        """Nothing to finish: the read transaction is only read."""

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.rollback()
            finally:
                self._conn.close()
                self._conn = None


@dataclass
class TableSource:
    """A flow's source table on an open read-only connection."""

    conn: Connection
    table: Table
    flow: Flow
    plants: list[str] | None = None

    def _filters(self, table: Any = None) -> list[Any]:
        table = self.table if table is None else table
        clauses = []
        scoped = scope_filter(table, dict(self.flow.source.where))
        if scoped is not None:
            clauses.append(scoped)
        excluded = exclude_filter(table, dict(self.flow.source.where_not))
        if excluded is not None:
            clauses.append(excluded)
        if self.plants and self.flow.source.plant_column:
            clauses.append(table.c[self.flow.source.plant_column].in_(self.plants))
        return clauses

    def _cleaned_alike(self, window: Window) -> Any:
        """Rows outside ``window`` whose natural key cleans (trim, upper, lower) to the key of a
        row inside it, from another source key: read together, the batch's rule for one key
        from two rows (identical: one loads; differing: both wait in quarantine) holds across
        runs too, and the newer row never silently overwrites the older. None when no key
        column is cleaned."""
        specs = [c for c in self.flow.columns if c.target in self.flow.key]
        if not any(s.clean for s in specs) or any(s.source is None for s in specs) or self.flow.cursor is None:
            return None
        steps = {"trim": func.trim, "upper": func.upper, "lower": func.lower}

        def cleaned(table: Any, spec: Any) -> Any:
            value = table.c[spec.source]
            for step in spec.clean:
                value = steps[step](value)
            return value

        twin = self.table.alias("cleaned_alike")
        in_window = window_filter(twin.c[self.flow.cursor.column], window)
        if in_window is None:
            return None
        match = [cleaned(twin, s) == cleaned(self.table, s) for s in specs]
        other = or_(*[twin.c[str(s.source)] != self.table.c[str(s.source)] for s in specs])
        return exists(select(1).select_from(twin).where(and_(*self._filters(twin), in_window, *match, other)))

    def ceiling(self, limit: CursorValue | None = None) -> CursorValue | None:
        """The source's own latest cursor value now, not past ``limit``; a run reads nothing
        past it (but rows dated past the limit, see ``Window.beyond``)."""
        if self.flow.cursor is None:
            return None
        column = self.table.c[self.flow.cursor.column]
        stmt = select(func.max(column)).select_from(self.table)
        filters = self._filters()
        if limit is not None:
            filters.append(column <= limit)
        if filters:
            stmt = stmt.where(and_(*filters))
        ceiling: CursorValue | None = self.conn.execute(stmt).scalar_one()
        return ceiling

    def clock(self) -> datetime:
        """The source database's own time now (naive in its session's zone, or aware)."""
        now: datetime = self.conn.execute(select(func.current_timestamp(type_=DateTime()))).scalar_one()
        return now

    def beyond(self, limit: CursorValue, sample: int) -> tuple[int, list[str]]:
        """How many rows have a cursor past ``limit``, and the keys of the first ``sample``."""
        assert self.flow.cursor is not None
        column = self.table.c[self.flow.cursor.column]
        clauses = [*self._filters(), column > limit]
        count = int(self.conn.execute(select(func.count()).select_from(self.table).where(and_(*clauses))).scalar_one())
        keys = self.flow.source_key_columns()
        rows = self.conn.execute(
            select(column, *[self.table.c[k] for k in keys]).where(and_(*clauses))
            .order_by(*[self.table.c[k] for k in keys]).limit(sample)
        ).all()
        described = [
            ", ".join(f"{k}={v}" for k, v in zip(keys, row[1:], strict=True)) + f" ({self.flow.cursor.column} {row[0]})"
            for row in rows
        ]
        return count, described

    def query(self, window: Window | None) -> Select[Any]:
        columns = self.flow.source_columns()
        stmt = select(*[self.table.c[c] for c in columns])
        clauses = self._filters()
        order = []
        if self.flow.cursor is not None and window is not None:
            cursor = self.table.c[self.flow.cursor.column]
            bounded = window_filter(cursor, window)
            if bounded is not None:
                alike = self._cleaned_alike(window) if window.lower is not None else None
                clauses.append(bounded if alike is None else or_(bounded, alike))
            order.append(cursor)
        if clauses:
            stmt = stmt.where(and_(*clauses))
        # Cursor order makes the newest version of a key the last one staged.
        order += [self.table.c[c] for c in self.flow.source_key_columns()]
        return stmt.order_by(*order)

    @property
    def dialect_name(self) -> str:
        return self.conn.dialect.name

    @property
    def copies_binary(self) -> bool:
        return dialect_for(self.conn).copies_binary

    def chunks(self, window: Window | None, chunk_size: int) -> Iterator[pd.DataFrame]:
        if empty_window(window):
            return
        yield from self._stream(self.query(window), chunk_size)

    def copy_out(self, window: Window | None, out: BinaryIO, binary: bool) -> None:
        """The window's rows as numbered COPY data (see Dialect.copy_out)."""
        query = self.query(window)
        if empty_window(window):
            query = query.where(false())
        dialect_for(self.conn).copy_out(self.conn, query, out, binary)

    def rows_with_keys(self, columns: list[str], keys: list[tuple[Any, ...]], chunk_size: int) -> Iterator[pd.DataFrame]:
        """The flow's rows whose ``columns`` hold one of ``keys`` (as :meth:`keys` read them)."""
        for start in range(0, len(keys), chunk_size):
            part = keys[start:start + chunk_size]
            match = tuple_(*[self.table.c[c] for c in columns]).in_(part)
            yield from self._stream(self.query(None).where(match), chunk_size)

    def keys(self, chunk_size: int) -> Iterator[pd.DataFrame]:
        """Every source row's key columns within the flow's filters (for delete detection)."""
        columns = sorted({c for spec in self.flow.columns if spec.target in self.flow.key for c in spec.source_columns()})
        stmt = select(*[self.table.c[c] for c in columns])
        filters = self._filters()
        if filters:
            stmt = stmt.where(and_(*filters))
        yield from self._stream(stmt, chunk_size)

    def _stream(self, stmt: Select[Any], chunk_size: int) -> Iterator[pd.DataFrame]:
        result = self.conn.execution_options(stream_results=True, yield_per=chunk_size).execute(stmt)
        columns = list(result.keys())
        for part in result.partitions(chunk_size):
            yield frame_from_rows(part, columns)
