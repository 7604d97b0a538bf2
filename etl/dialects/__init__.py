"""Database-specific SQL, behind one small interface (see base.Dialect)."""

from __future__ import annotations

from sqlalchemy import Connection, Engine

from etl.dialects.base import Dialect
from etl.dialects.mssql import MSSQLDialect
from etl.dialects.mysql import MySQLDialect
from etl.dialects.postgresql import PostgresDialect
from etl.dialects.sqlite import SqliteDialect

_BY_NAME: dict[str, type[Dialect]] = {
    "postgresql": PostgresDialect,
    "sqlite": SqliteDialect,
    "mysql": MySQLDialect,
    "mariadb": MySQLDialect,
    "mssql": MSSQLDialect,
}


def dialect_for(bind: Connection | Engine) -> Dialect:
    """The Dialect for a connection's database; the portable one for databases without their own."""
    return _BY_NAME.get(bind.dialect.name, Dialect)()


__all__ = ["Dialect", "dialect_for"]
