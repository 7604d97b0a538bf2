"""SQLite (the embedded demo): executemany into a temporary staging table, then one
INSERT ... ON CONFLICT merge. The database-wide write lock serialises concurrent runs."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Connection, Table, and_, exists, or_, select, update
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from etl.dialects.base import OnConflictDialect


class SqliteDialect(OnConflictDialect):
    name = "sqlite"

    @contextmanager
    def read_only(self, conn: Connection) -> Iterator[None]:
        # query_only holds for the connection, inside a transaction too, until switched off.
        conn.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield
        finally:
            conn.exec_driver_sql("PRAGMA query_only = OFF")

    def insert(self, table: Table) -> Any:
        return sqlite_insert(table)

    def update_changed(self, conn: Connection, staging: Table, target: Table, key: list[str], nonkey: list[str]) -> int:
        # UPDATE ... FROM needs SQLite 3.33; correlated subqueries work on every version.
        stg = staging.c
        match = and_(*[target.c[k] == stg[k] for k in key])
        differs = or_(*[target.c[c].is_distinct_from(stg[c]) for c in nonkey])
        changed = (
            update(target)
            .where(exists(select(1).select_from(staging).where(match, differs)))
            .values({c: select(stg[c]).where(match).scalar_subquery() for c in nonkey})
        )
        return conn.execute(changed).rowcount or 0
