"""Types every floor shares: scalar values in YAML, and what a column holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import types
from sqlalchemy.dialects import mssql

Scalar = str | int | float | bool

Kind = Literal["string", "integer", "decimal", "float", "timestamp", "date", "boolean", "json", "other"]


@dataclass(frozen=True)
class ColumnType:
    """The facts about a target column that transforms need to produce a valid value."""

    kind: Kind
    length: int | None = None
    precision: int | None = None
    scale: int | None = None
    tz_aware: bool = False
    nullable: bool = True
    #: The column's character set where it cannot hold every character (MariaDB's utf8mb3,
    #: latin1); None: any character.
    charset: str | None = None
    #: False where text cannot hold U+0000 (PostgreSQL).
    holds_nul: bool = True


def column_type(sqltype: types.TypeEngine, nullable: bool = True) -> ColumnType:
    """Classify a reflected SQLAlchemy type."""
    if isinstance(sqltype, types.JSON):
        return ColumnType("json", nullable=nullable)
    if isinstance(sqltype, types.Boolean):
        return ColumnType("boolean", nullable=nullable)
    if isinstance(sqltype, types.DateTime):
        # SQL Server's datetimeoffset keeps the offset without setting the generic flag.
        aware = bool(sqltype.timezone) or isinstance(sqltype, mssql.DATETIMEOFFSET)
        return ColumnType("timestamp", tz_aware=aware, nullable=nullable)
    if isinstance(sqltype, types.Date):
        return ColumnType("date", nullable=nullable)
    if isinstance(sqltype, types.Integer):
        return ColumnType("integer", nullable=nullable)
    if isinstance(sqltype, types.Float):
        return ColumnType("float", nullable=nullable)
    if isinstance(sqltype, types.Numeric):
        return ColumnType("decimal", precision=sqltype.precision, scale=sqltype.scale, nullable=nullable)
    if isinstance(sqltype, types.String):
        return ColumnType("string", length=sqltype.length, nullable=nullable)
    return ColumnType("other", nullable=nullable)
