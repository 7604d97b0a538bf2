"""SQL Server via pymssql: batched executemany into a #temp staging table, one
``MERGE ... WITH (HOLDLOCK)``, a transaction-owned application lock per flow.

SQL Server does not run where the tests run: the statements here are checked by compiling
them with SQLAlchemy's mssql dialect (tests/unit/test_dialect_mssql.py), not against a server.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Connection, DateTime, Table, func, select, text
from sqlalchemy.engine import Dialect as SADialect
from sqlalchemy.schema import CreateTable

from etl.core.rows import SEQ
from etl.dialects.base import Dialect, LoadMode, lock_key, quoted_name


def merge_statement(
    dialect: SADialect, target: str, staging: str, key: list[str], columns: list[str], mode: LoadMode,
    target_schema: str | None = None,
) -> str:
    """The MERGE that writes staging into target by natural key.

    HOLDLOCK makes the match-then-insert atomic against concurrent writers; the INTERSECT
    test compares NULLs as equal, so unchanged rows are not written (older servers lack
    IS DISTINCT FROM). Identifiers are quoted here; there are no values, only column names.
    """
    q = dialect.identifier_preparer.quote
    target_name = f"{q(target_schema)}.{q(target)}" if target_schema else q(target)
    nonkey = [c for c in columns if c not in key]
    cols = ", ".join(q(c) for c in columns)
    keys = ", ".join(q(k) for k in key)
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
    lines = [
        f"MERGE INTO {target_name} WITH (HOLDLOCK) AS t",
        f"USING (SELECT {cols} FROM {q(staging)} WHERE {q(SEQ)} IN "
        f"(SELECT max({q(SEQ)}) FROM {q(staging)} GROUP BY {keys})) AS s",
        f"ON {on}",
    ]
    if mode != "append" and nonkey:
        differs = f"NOT EXISTS (SELECT {', '.join('s.' + q(c) for c in nonkey)} INTERSECT SELECT {', '.join('t.' + q(c) for c in nonkey)})"
        sets = ", ".join(f"t.{q(c)} = s.{q(c)}" for c in nonkey)
        lines.append(f"WHEN MATCHED AND {differs} THEN UPDATE SET {sets}")
    lines.append(f"WHEN NOT MATCHED BY TARGET THEN INSERT ({cols}) VALUES ({', '.join('s.' + q(c) for c in columns)});")
    return "\n".join(lines)


class MSSQLDialect(Dialect):
    name = "mssql"

    def clock(self, conn: Connection) -> datetime:
        now: datetime = conn.execute(select(func.sysutcdatetime(type_=DateTime()))).scalar_one()
        return now.replace(tzinfo=UTC)

    def try_lock(self, conn: Connection, flow: str) -> bool:
        # Owned by the transaction: released by commit or rollback, or when the session dies.
        result = conn.execute(
            text(
                "DECLARE @result int; "
                "EXEC @result = sp_getapplock @Resource = :resource, @LockMode = 'Exclusive', "
                "@LockOwner = 'Transaction', @LockTimeout = 0; "
                "SELECT @result"
            ),
            {"resource": f"erp-mes-sync:{lock_key(flow)}"},
        ).scalar_one()
        return int(result) >= 0

    def staging_name(self, label: str) -> str:
        # A name starting with # is a session-local temporary table.
        return f"#etl_stg_{label}"

    def staging_prefixes(self) -> list[str]:
        return []  # the '#' makes it temporary; CREATE TEMPORARY is not T-SQL

    def create_staging(self, conn: Connection, target: Table, columns: list[str], label: str) -> Table:
        staging = self.staging_table(target, columns, label)
        self.drop_staging(conn, staging)
        conn.execute(CreateTable(staging))
        return staging

    def drop_staging(self, conn: Connection, staging: Table) -> None:
        quoted = conn.dialect.identifier_preparer.quote(staging.name)
        conn.execute(text(f"IF OBJECT_ID('tempdb..{staging.name}') IS NOT NULL DROP TABLE {quoted}"))

    def next_values(self, conn: Connection, sequence: str, count: int) -> list[int]:
        statement = text(f"SELECT NEXT VALUE FOR {quoted_name(conn, sequence)}")
        return [int(conn.execute(statement).scalar_one()) for _ in range(count)]

    def merge(self, conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str], mode: LoadMode) -> int:
        sql = merge_statement(conn.dialect, target.name, staging.name, key, columns, mode, target.schema)
        return conn.execute(text(sql)).rowcount or 0
