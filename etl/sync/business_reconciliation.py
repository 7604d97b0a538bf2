"""Business reconciliation: ERP figures against MES figures, key by key, within a tolerance.

Each check (mappings/reconciliations.yaml) is two read-only queries, one per side, each
returning the check's key columns and a numeric ``value``. ``compare`` is pure: rows in,
lines out; ``reconcile`` runs the queries. A query that fails is reported as the check's
error instead of stopping the report: one broken query must not hide the other checks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from etl.config.flows import RECONCILIATIONS_FILE, BusinessReconciliation, Project, Tolerance
from etl.config.user_sql import read_only_problem
from etl.dialects import dialect_for
from etl.sync.connections import Connections

Key = tuple[str, ...]


@dataclass(frozen=True)
class Line:
    """One key of one check: both values (0 where a side has no row), the difference, the verdict."""

    key: Key
    erp: Decimal
    mes: Decimal
    erp_missing: bool
    mes_missing: bool
    within: bool

    @property
    def difference(self) -> Decimal:
        """MES minus ERP: positive when the shop floor reported more than the ERP expects."""
        return self.mes - self.erp


@dataclass
class ReconciliationResult:
    check: BusinessReconciliation
    lines: list[Line] = field(default_factory=list)
    #: Why the check could not run (a query failed), else None.
    error: str | None = None

    @property
    def mismatches(self) -> list[Line]:
        return [line for line in self.lines if not line.within]

    @property
    def ok(self) -> bool:
        return self.error is None and not self.mismatches


def _key_part(value: Any) -> str:
    """Keys as text, so both sides match whatever the driver returns (PostgreSQL dates, SQLite text)."""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return "" if value is None else str(value).strip()


def _number(value: Any, name: str, side: str, key: Key) -> Decimal:
    if value is None:
        return Decimal(0)
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"reconciliation {name!r}, {side} side: value {value!r} for key {key} is not a number") from None


def side_values(
    check: BusinessReconciliation, side: str, rows: Iterable[Mapping[str, Any]],
) -> dict[Key, Decimal]:
    """One side's rows as {key: value}; rows with the same key add up. Raises ValueError naming
    the check and side when a key column or ``value`` is missing or a value is not a number."""
    values: dict[Key, Decimal] = {}
    for row in rows:
        missing = [c for c in (*check.key, "value") if c not in row]
        if missing:
            raise ValueError(
                f"reconciliation {check.name!r}, {side} side: the query returns no column(s) "
                f"{', '.join(missing)} (it must return {', '.join(check.key)} and value)"
            )
        key = tuple(_key_part(row[c]) for c in check.key)
        values[key] = values.get(key, Decimal(0)) + _number(row["value"], check.name, side, key)
    return values


def within_tolerance(erp: Decimal, mes: Decimal, tolerance: Tolerance) -> bool:
    """``|erp - mes| <= max(absolute, relative * |erp|)``."""
    allowed = max(Decimal(str(tolerance.absolute)), Decimal(str(tolerance.relative)) * abs(erp))
    return abs(erp - mes) <= allowed


def compare(
    check: BusinessReconciliation, erp_rows: Iterable[Mapping[str, Any]], mes_rows: Iterable[Mapping[str, Any]],
) -> ReconciliationResult:
    """Every key of either side as a line, sorted by key; a key missing on one side counts as 0 there."""
    erp = side_values(check, "erp", erp_rows)
    mes = side_values(check, "mes", mes_rows)
    lines = []
    for key in sorted(erp.keys() | mes.keys()):
        erp_value, mes_value = erp.get(key, Decimal(0)), mes.get(key, Decimal(0))
        lines.append(Line(
            key, erp_value, mes_value, key not in erp, key not in mes,
            within_tolerance(erp_value, mes_value, check.tolerance),
        ))
    return ReconciliationResult(check, lines)


class RefusedQuery(ValueError):
    """A reconciliation query that is not one statement that only reads, in its database's dialect."""


def _query(connections: Connections, connection: str, sql: str) -> list[dict[str, Any]]:
    """The rows of ``sql`` on ``connection``, read in a transaction that cannot write. Raises
    RefusedQuery when ``sql`` is not one statement that only reads (see config.user_sql)."""
    engine = connections.engine(connection)
    problem = read_only_problem(sql, engine.dialect.name)
    if problem is not None:
        raise RefusedQuery(f"refused on {engine.dialect.name}: {problem}")
    with engine.connect() as conn, dialect_for(conn).read_only(conn):
        return [dict(row._mapping) for row in conn.execute(text(sql))]


def reconcile(check: BusinessReconciliation, connections: Connections) -> ReconciliationResult:
    """Run both queries of ``check`` and compare; a failing query becomes the result's error."""
    rows: dict[str, list[dict[str, Any]]] = {}
    for side in ("erp", "mes"):
        query = getattr(check, side)
        try:
            rows[side] = _query(connections, query.connection, query.sql)
        except RefusedQuery as exc:
            return ReconciliationResult(check, error=f"{RECONCILIATIONS_FILE}: {check.name}.{side}.sql {exc}")
        except SQLAlchemyError as exc:
            first_line = str(getattr(exc, "orig", exc) or exc).strip().splitlines()[0]
            return ReconciliationResult(check, error=f"{side} query on {query.connection} failed: {first_line}")
    try:
        return compare(check, rows["erp"], rows["mes"])
    except ValueError as exc:
        return ReconciliationResult(check, error=str(exc))


def reconcile_all(project: Project, connections: Connections) -> list[ReconciliationResult]:
    """Every reconciliation of the project, in the order of mappings/reconciliations.yaml."""
    return [reconcile(check, connections) for check in project.reconciliations]


def summary(results: Sequence[ReconciliationResult]) -> tuple[int, int]:
    """(lines beyond tolerance, checks that could not run)."""
    return sum(len(r.mismatches) for r in results), sum(1 for r in results if r.error)
