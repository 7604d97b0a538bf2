"""SQLite (the embedded demo): executemany into a temporary staging table, then one
INSERT ... ON CONFLICT merge. The database-wide write lock serialises concurrent runs."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from etl.dialects.base import OnConflictDialect


class SqliteDialect(OnConflictDialect):
    name = "sqlite"

    def insert(self, table: Table) -> Any:
        return sqlite_insert(table)
