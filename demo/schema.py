"""Create the demo ERP and MES schemas from the DDL files in sql/demo."""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa

from etl.dialects import dialect_for

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_DIR = REPO_ROOT / "sql" / "demo"
SCHEMA_NAMES = frozenset({"erp", "mes"})

_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_CREATE_TABLE = re.compile(
    r"^\s*CREATE\s+TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE
)


def schema_statements(name: str) -> list[str]:
    """The statements of sql/demo/{name}.sql, without comments, in file order.

    Statements end with ";" at the end of a line; a ";" inside a line does not split.
    Raises ValueError for a name other than "erp" or "mes".
    """
    if name not in SCHEMA_NAMES:
        raise ValueError(f"unknown demo schema {name!r}; expected one of {sorted(SCHEMA_NAMES)}")
    text = (SCHEMA_DIR / f"{name}.sql").read_text(encoding="utf-8")
    uncommented = "\n".join(_strip_line_comment(line) for line in text.splitlines())
    return [part.strip() for part in _STATEMENT_END.split(uncommented) if part.strip()]


def schema_tables(name: str) -> list[str]:
    """Names of the tables sql/demo/{name}.sql creates, in file order."""
    return _created_tables(schema_statements(name))


def create_demo_schema(engine: sa.Engine, name: str, *, replace: bool = True) -> None:
    """Create the tables of sql/demo/{name}.sql in one transaction.

    With replace, tables of the same names are dropped first (data included); without it,
    an existing table makes the whole call fail and leaves the database unchanged.
    """
    statements = schema_statements(name)
    tables = _created_tables(statements)
    with engine.begin() as conn:
        _open_sqlite_transaction(conn)
        if replace:
            quote = conn.dialect.identifier_preparer.quote
            for table in reversed(tables):
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(table)}")
        dialect = dialect_for(conn)
        for statement in statements:
            conn.exec_driver_sql(dialect.adapt_ddl(statement))


def _strip_line_comment(line: str) -> str:
    """The line up to a "--" that is not inside a single-quoted literal."""
    in_literal = False
    for i, char in enumerate(line):
        if char == "'":
            in_literal = not in_literal
        elif not in_literal and line.startswith("--", i):
            return line[:i].rstrip()
    return line


def _created_tables(statements: list[str]) -> list[str]:
    return [m.group(1) for m in map(_CREATE_TABLE.match, statements) if m is not None]


def _open_sqlite_transaction(conn: sa.Connection) -> None:
    """Make DDL on SQLite transactional.

    The sqlite3 module only opens a transaction before INSERT/UPDATE/DELETE, so CREATE and
    DROP would each commit on their own and a failure would leave half a schema behind.
    An engine that already begins transactions itself is left alone.
    """
    if conn.dialect.name != "sqlite":
        return
    dbapi_conn = conn.connection.dbapi_connection
    if getattr(dbapi_conn, "in_transaction", True):
        return
    conn.exec_driver_sql("BEGIN")
