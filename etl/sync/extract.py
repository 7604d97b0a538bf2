"""Read a flow's source: its ceiling, then the window's rows in chunks, or just its keys.

A source is anything with ``ceiling``, ``chunks`` and ``keys``; ``TableSource`` reads a database
table. A file-drop or event source can stand beside it without touching transform, load or
quarantine. Sources are only read: every statement is a SELECT with bound values.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import pandas as pd
from sqlalchemy import Connection, DateTime, Select, Table, and_, exists, func, or_, select, tuple_

from etl.config.flows import Flow
from etl.core.watermark import CursorValue, Window, window_filter
from etl.dialects.base import exclude_filter, scope_filter


class Source(Protocol):
    def ceiling(self, limit: CursorValue | None = None) -> CursorValue | None: ...

    def clock(self) -> datetime: ...

    def beyond(self, limit: CursorValue, sample: int) -> tuple[int, list[str]]: ...

    def chunks(self, window: Window | None, chunk_size: int) -> Iterator[pd.DataFrame]: ...

    def rows_with_keys(self, columns: list[str], keys: list[tuple[Any, ...]], chunk_size: int) -> Iterator[pd.DataFrame]: ...

    def keys(self, chunk_size: int) -> Iterator[pd.DataFrame]: ...


def frame_from_rows(rows: Sequence[Sequence[Any]], columns: list[str]) -> pd.DataFrame:
    """A DataFrame of plain Python values (object dtype): no float NaN for NULL integers,
    no float for decimals, no pandas Timestamp for datetimes."""
    data = {name: pd.Series([row[i] for row in rows], dtype=object) for i, name in enumerate(columns)}
    return pd.DataFrame(data, columns=columns)


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

    def chunks(self, window: Window | None, chunk_size: int) -> Iterator[pd.DataFrame]:
        yield from self._stream(self.query(window), chunk_size)

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
