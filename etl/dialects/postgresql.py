"""PostgreSQL: COPY into a temporary staging table, one INSERT ... ON CONFLICT merge,
transaction-scoped advisory locks."""

from __future__ import annotations

import io
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Table, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from etl.dialects.base import SEQ, OnConflictDialect, iter_records, lock_key, quoted_name

_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text(value: Any) -> str:
    """One value in COPY's text format. NULL is ``\\N``, so an empty string stays empty."""
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time, Decimal, int, float)):
        return str(value)
    return str(value).translate(_ESCAPES)


class PostgresDialect(OnConflictDialect):
    name = "postgresql"

    def try_lock(self, conn: Connection, flow: str) -> bool:
        return bool(conn.execute(select(func.pg_try_advisory_xact_lock(lock_key(flow)))).scalar_one())

    def begin_read(self, conn: Connection) -> None:
        # One snapshot: the ceiling and every chunk see the same committed rows.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))

    def staging_table_options(self) -> dict[str, Any]:
        return {"postgresql_on_commit": "DROP"}

    def stage(self, conn: Connection, staging: Table, rows: pd.DataFrame, first_seq: int, retry: bool) -> int:
        if rows.empty:
            return 0
        buffer = io.StringIO()
        count = 0
        for record in iter_records(rows, first_seq, retry):
            buffer.write("\t".join(copy_text(v) for v in record))
            buffer.write("\n")
            count += 1
        buffer.seek(0)
        preparer = conn.dialect.identifier_preparer
        names = [c for c in rows.columns if c != "_source_key"] + [SEQ, "_source_key", "_retry"]
        columns = ", ".join(preparer.quote(c) for c in names)
        sql = f"COPY {preparer.format_table(staging)} ({columns}) FROM STDIN"
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.copy_expert(sql, buffer)
        finally:
            cursor.close()
        return count

    def insert(self, table: Table) -> Any:
        return pg_insert(table)

    def next_values(self, conn: Connection, sequence: str, count: int) -> list[int]:
        # nextval takes the name as text; quoting keeps its case and spaces.
        drawn = select(func.nextval(quoted_name(conn, sequence))).select_from(func.generate_series(1, count))
        return [int(v) for v in conn.execute(drawn).scalars()]

