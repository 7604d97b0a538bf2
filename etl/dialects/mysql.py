"""MariaDB / MySQL via PyMySQL: multi-row INSERTs of literal text into a temporary staging table, one
INSERT ... SELECT ... ON DUPLICATE KEY UPDATE merge, a named lock per flow.

Tested on MariaDB 10.11. MySQL 8 refuses to open a temporary table twice in one statement,
which the duplicate-key resolution does; it is not supported until that is rewritten.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, BinaryIO

import pandas as pd
from sqlalchemy import Connection, DateTime, Select, String, Table, and_, func, literal, or_, select, text, types
from sqlalchemy.dialects.mysql import insert as mysql_insert
from sqlalchemy.sql.elements import ColumnElement

from etl.core.rows import RETRY, SEQ, SOURCE_KEY
from etl.core.types import ColumnType
from etl.dialects.base import COPY_ROWS, Dialect, LoadMode, copyable, driver_cursor, holder_statement, lock_key, quoted_name

_TIMESTAMP = re.compile(r"\bTIMESTAMP\b", re.IGNORECASE)


class MySQLDialect(Dialect):
    name = "mysql"

    def try_lock(self, conn: Connection, flow: str) -> bool:
        # GET_LOCK is held by the session, not the transaction: release_lock frees it, and the
        # server frees it if the process dies.
        got = conn.execute(select(func.get_lock(lock_name(conn.engine.url.database, flow), 0))).scalar_one()
        return bool(got == 1)

    def lock_holder(self, conn: Connection, flow: str) -> str | None:
        row = conn.execute(
            text(
                "SELECT p.ID, p.USER, p.HOST, p.COMMAND, p.TIME, p.STATE, p.INFO FROM information_schema.PROCESSLIST p "
                "WHERE p.ID = IS_USED_LOCK(:name)"
            ),
            {"name": lock_name(conn.engine.url.database, flow)},
        ).first()
        if row is None:
            return None
        seconds = int(row.TIME or 0)
        held = f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"
        return (
            f"MariaDB connection {row.ID} ({row.USER}@{row.HOST}), {row.COMMAND.lower()} for {held}, "
            f"state {row.STATE or 'none'!r}, statement: {holder_statement(row.INFO)}; a run killed mid-statement "
            f"keeps its connection until that statement ends: if its run is gone, KILL {row.ID} frees the lock"
        )

    def release_lock(self, conn: Connection, flow: str) -> None:
        conn.execute(select(func.release_lock(lock_name(conn.engine.url.database, flow))))

    def clock(self, conn: Connection) -> datetime:
        # CURRENT_TIMESTAMP is in the session's time zone; UTC_TIMESTAMP is not.
        now: datetime = conn.execute(select(func.utc_timestamp(6, type_=DateTime()))).scalar_one()
        return now.replace(tzinfo=UTC)

    def begin_read(self, conn: Connection) -> None:
        # Applies to the transaction the next statement opens: one consistent, read-only snapshot.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))

    def target_types(self, conn: Connection, table: Table) -> dict[str, ColumnType]:
        # Reflection names a column's character set only where it differs from the table's.
        types = super().target_types(conn, table)
        charsets: dict[str, str | None] = {str(name): charset for name, charset in conn.execute(
            text(
                "SELECT COLUMN_NAME, CHARACTER_SET_NAME FROM information_schema.COLUMNS "
                "WHERE TABLE_SCHEMA = COALESCE(:schema, DATABASE()) AND TABLE_NAME = :table"
            ),
            {"schema": table.schema, "table": table.name},
        )}
        return {
            name: replace(t, charset=(charsets.get(name) or "").lower() or None) if t.kind == "string" else t
            for name, t in types.items()
        }

    def tune(self, conn: Connection, work_mem_mb: int) -> None:
        # A non-strict session stores '?' for a character the column's character set lacks,
        # and truncates, and reports success: every load runs strict. (The session keeps it.)
        conn.execute(text("SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), 'STRICT_ALL_TABLES')"))

    @contextmanager
    def read_only(self, conn: Connection) -> Iterator[None]:
        if conn.in_transaction():
            # MariaDB cannot turn a begun transaction read-only: a savepoint rolled back undoes
            # what a stored function wrote to InnoDB tables; the parse refuses the rest.
            with super().read_only(conn):
                yield
            return
        # A connection of its own (a reconciliation): the next transaction is read-only.
        conn.execute(text("SET TRANSACTION READ ONLY"))
        try:
            yield
        finally:
            conn.rollback()

    def adapt_ddl(self, statement: str) -> str:
        # TIMESTAMP here converts through the session time zone, ends in 2038 and may update
        # itself; DATETIME(6) stores the wall-clock value with microseconds, as the others do.
        return _TIMESTAMP.sub("DATETIME(6)", statement)

    def copy_out(self, conn: Connection, statement: Select[Any], out: BinaryIO, binary: bool = False) -> None:
        # The server writes each row as one line of COPY text: formatting fourteen values a row
        # in Python costs twice the read itself (PyMySQL: 14 s against 6.5 s a million rows).
        if binary:
            raise ValueError("MariaDB cannot write PostgreSQL's binary COPY format")
        line = func.concat_ws(literal("\t", String), *[_copy_field(c) for c in statement.selected_columns])
        statement = statement.with_only_columns(line, maintain_column_froms=True)
        result = conn.execution_options(stream_results=True, yield_per=COPY_ROWS).execute(statement)
        written = 0
        with result:
            for part in result.partitions(COPY_ROWS):
                out.write(copyable("".join([f"{line}\t{n}\n" for n, (line,) in enumerate(part, start=written + 1)]), self.name).encode())
                written += len(part)

    def merge(self, conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str], mode: LoadMode) -> int:
        stg = staging.c
        nonkey = [c for c in columns if c not in key]
        # The server reports 1 per insert, 2 per update (0 when unchanged, or 1 under
        # CLIENT_FOUND_ROWS): count what will change first instead of decoding that.
        match = and_(*[target.c[k] == stg[k] for k in key])
        existing = select(1).select_from(target).where(match)
        new_rows = select(func.count()).select_from(staging).where(~existing.exists())
        written = int(conn.execute(new_rows).scalar_one())
        if mode != "append" and nonkey:
            changed = (
                select(func.count())
                .select_from(staging.join(target, match))
                .where(or_(*[target.c[c].is_distinct_from(stg[c]) for c in nonkey]))
            )
            written += int(conn.execute(changed).scalar_one())
        stmt = mysql_insert(target).from_select(columns, select(*[stg[c] for c in columns]))
        if mode == "append" or not nonkey:
            # A no-op update, not INSERT IGNORE, which would also swallow data errors.
            stmt = stmt.on_duplicate_key_update({key[0]: target.c[key[0]]})
        else:
            stmt = stmt.on_duplicate_key_update({c: stmt.inserted[c] for c in nonkey})
        conn.execute(stmt)
        return written

    def next_values(self, conn: Connection, sequence: str, count: int) -> list[int]:
        # MariaDB 10.3+ sequences; one value per statement, as NEXTVAL has no set-returning form.
        statement = text(f"SELECT NEXTVAL({quoted_name(conn, sequence)})")
        return [int(conn.execute(statement).scalar_one()) for _ in range(count)]

    def staging_table_options(self) -> dict[str, Any]:
        return {"mysql_engine": "InnoDB"}

    def drop_staging(self, conn: Connection, staging: Table) -> None:
        # Plain DROP TABLE commits the open transaction, even for a temporary table.
        name = conn.dialect.identifier_preparer.format_table(staging)
        conn.execute(text(f"DROP TEMPORARY TABLE IF EXISTS {name}"))

    def stage(self, conn: Connection, staging: Table, rows: pd.DataFrame, first_seq: int, retry: bool) -> int:
        """Append ``rows`` as multi-row INSERTs of literal text, each column formatted at once.

        Measured at a million rows of the benchmark's 13 columns: PyMySQL's executemany spends
        most of its time escaping value by value; LOAD DATA LOCAL INFILE would be quicker still,
        but lets the server ask the client for any file it can read."""
        if rows.empty:
            return 0
        columns = [c for c in rows.columns if c != SOURCE_KEY]
        prep = conn.dialect.identifier_preparer
        names = ", ".join(prep.quote(c) for c in [*columns, SEQ, SOURCE_KEY, RETRY])
        head = f"INSERT INTO {prep.format_table(staging)} ({names}) VALUES "
        flag = "1" if retry else "0"
        cursor = driver_cursor(conn)
        escape = cursor.connection.escape
        texts = [_literals(rows[c], escape) for c in columns]
        keys = _literals(rows[SOURCE_KEY], escape)
        try:
            batch: list[str] = []
            size = 0
            for i, values in enumerate(zip(*texts, keys, strict=True)):
                *own, key = values
                row = f"({','.join(own)},{first_seq + i},{key},{flag})" if own else f"({first_seq + i},{key},{flag})"
                batch.append(row)
                size += len(row)
                if size >= _INSERT_BYTES:
                    cursor.execute(head + ",".join(batch))
                    batch, size = [], 0
            if batch:
                cursor.execute(head + ",".join(batch))
        finally:
            cursor.close()
        return len(rows)

    def create_staging(self, conn: Connection, target: Table, columns: list[str], label: str) -> Table:
        staging = self.staging_table(target, columns, label)
        self.drop_staging(conn, staging)
        staging.create(conn)
        return staging


#: Bytes of one staging INSERT: well under MariaDB's max_allowed_packet (16 MiB by default).
_INSERT_BYTES = 4 << 20
#: What MariaDB's string literals escape (as PyMySQL's escape_string does).
_ESCAPES = str.maketrans({"\\": "\\\\", "'": "\\'", "\0": "\\0", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z"})


def _literal_of(sample: Any, escape: Callable[[Any], str]) -> Callable[[Any], str]:
    """A column's values as SQL literals, chosen once by its first non-NULL value (``escape``,
    the driver's own, for any other): the driver's escaping value by value costs four fifths of
    staging a million rows."""
    escape_item = escape
    if isinstance(sample, str):
        return lambda v: "'" + v.translate(_ESCAPES) + "'" if type(v) is str else escape_item(v)
    if isinstance(sample, bool):
        return lambda v: ("1" if v else "0") if type(v) is bool else escape_item(v)
    if isinstance(sample, int):
        return lambda v: str(v) if type(v) is int else escape_item(v)
    if isinstance(sample, Decimal):
        # Quoted, in positional form: MariaDB reads 1E+3 unquoted as a DOUBLE.
        return lambda v: "'" + format(v, "f") + "'" if type(v) is Decimal else escape_item(v)
    if isinstance(sample, datetime):
        # MariaDB's DATETIME keeps no zone: the fields as they are, as the driver writes them.
        return lambda v: (
            "'" + v.isoformat(" ") + "'" if type(v) is datetime and v.tzinfo is None
            else "'" + v.replace(tzinfo=None).isoformat(" ") + "'" if type(v) is datetime else escape_item(v)
        )
    if isinstance(sample, date):
        return lambda v: f"'{v.year:04}-{v.month:02}-{v.day:02}'" if type(v) is date else escape_item(v)
    return lambda v: str(escape_item(v))


def _literals(values: pd.Series, escape: Callable[[Any], str]) -> list[str]:
    """One column as SQL literal text, NULL for a missing value."""
    missing = values.isna().tolist()
    sample = next((v for v, m in zip(values, missing, strict=True) if not m), None)
    if sample is None:
        return ["NULL"] * len(values)
    literal_of = _literal_of(sample, escape)
    return ["NULL" if m else literal_of(v) for v, m in zip(values, missing, strict=True)]


def lock_name(database: str | None, flow: str) -> str:
    """The flow's lock on this database. GET_LOCK's names are the server's, not a database's:
    the database is in the name, so two databases on one server (two plants, two test runs)
    each keep their own flow of the same name."""
    return f"erp-mes-sync:{lock_key((database or '') + '/' + flow)}"


def _copy_field(column: Any) -> ColumnElement[Any]:
    """One value as COPY text in SQL: NULL as \\N; in text, backslash, tab and line breaks escaped.
    Numbers, dates and times print as their exact text, which PostgreSQL reads back as it was."""
    value: ColumnElement[Any] = column
    if not isinstance(column.type, (types.Integer, types.Numeric, types.DateTime, types.Date)):
        for char, escaped in (("\\", "\\\\"), ("\t", "\\t"), ("\n", "\\n"), ("\r", "\\r")):
            value = func.replace(value, literal(char, String), literal(escaped, String))
    return func.coalesce(value, literal("\\N", String))
