"""The one interface behind which databases differ: staging, merge, locks.

Every method takes an open Connection inside the run's transaction; nothing here commits.
A database gets its own subclass; nothing else in the package branches on the dialect.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from decimal import Decimal
from typing import Any, BinaryIO, Literal

import pandas as pd
from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    DateTime,
    Delete,
    MetaData,
    Select,
    SmallInteger,
    Table,
    Unicode,
    Update,
    and_,
    delete,
    exists,
    func,
    not_,
    or_,
    select,
    true,
    update,
)

from etl.core.errors import NotCopyable, SchemaDriftError
from etl.core.rows import RETRY, SEQ, SOURCE_KEY, SOURCE_KEY_LENGTH
from etl.core.types import ColumnType, Scalar, column_type

LoadMode = Literal["upsert", "append", "snapshot_replace"]
#: Rows a source hands over at a time when it streams a batch into PostgreSQL's COPY.
COPY_ROWS = 10_000

COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"})


def copy_text(value: Any) -> str:
    """One value in PostgreSQL's COPY text format. NULL is ``\\N``, so an empty string stays empty."""
    if type(value) is str:  # the common case first: crosswalk tables hold hundreds of thousands
        return value.translate(COPY_ESCAPES)
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, (date, time, Decimal, int, float)):
        return str(value)
    return str(value).translate(COPY_ESCAPES)


def copyable(data: str, source: str) -> str:
    """``data`` if PostgreSQL's COPY can carry it; NotCopyable if it holds a NUL character."""
    if "\x00" in data:
        raise NotCopyable(f"a text value read from {source} holds a NUL character, which PostgreSQL's COPY cannot carry")
    return data


#: The most of a lock holder's statement a busy message shows.
HOLDER_STATEMENT_CHARACTERS = 120


def holder_statement(statement: Any) -> str:
    """A lock holder's statement on one line, shortened: enough to recognise the step it is in."""
    text = " ".join(str(statement or "").split())
    if not text:
        return "none"
    return text if len(text) <= HOLDER_STATEMENT_CHARACTERS else text[: HOLDER_STATEMENT_CHARACTERS - 3] + "..."


def lock_key(flow: str) -> int:
    """A stable signed 64-bit number for ``flow``, for database advisory locks."""
    digest = hashlib.sha256(f"erp-mes-sync:{flow}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def quoted_name(conn: Connection, name: str) -> str:
    """``name`` or ``schema.name`` quoted for this database (parts already checked by config)."""
    quote = conn.dialect.identifier_preparer.quote
    return ".".join(quote(part) for part in name.split("."))


def scope_filter(table: Table, scope: dict[str, Scalar | list[Scalar]]) -> Any:
    """``col = value`` / ``col IN (values)`` for each scope entry, with bound values."""
    clauses = []
    for name, value in scope.items():
        column = table.c[name]
        clauses.append(column.in_(value) if isinstance(value, list) else column == value)
    return and_(*clauses) if clauses else None


def exclude_filter(table: Table, excluded: dict[str, Scalar | list[Scalar]]) -> Any:
    """``(col IS NULL OR col NOT IN (values))`` for each entry: rows holding an excluded value
    are left out, rows with NULL are kept (plain NOT IN would drop them too)."""
    clauses = []
    for name, value in excluded.items():
        column = table.c[name]
        values = value if isinstance(value, list) else [value]
        clauses.append(or_(column.is_(None), column.not_in(values)))
    return and_(*clauses) if clauses else None


def driver_cursor(conn: Connection) -> Any:
    """A cursor of the driver itself, for what SQLAlchemy has no construct for (COPY, mogrify)."""
    driver = conn.connection.dbapi_connection
    assert driver is not None  # an open Connection always holds its driver's connection
    return driver.cursor()


class Dialect:
    """Portable implementation; subclasses replace the parts their database does better."""

    name = "generic"

    def try_lock(self, conn: Connection, flow: str) -> bool:
        """Take the flow's lock for the rest of the transaction; False if another run holds it."""
        return True

    def lock_holder(self, conn: Connection, flow: str) -> str | None:
        """Who holds the flow's lock, for the busy message (its connection, client, since when,
        what it runs), or None where the database cannot say."""
        return None

    def begin_read(self, conn: Connection) -> None:
        """Make the just-begun source transaction read-only, on one snapshot where possible."""

    def target_types(self, conn: Connection, table: Table) -> dict[str, ColumnType]:
        """What each column of the reflected ``table`` holds, for the transform to produce only
        values it can store; subclasses add what their text cannot hold."""
        return {c.name: column_type(c.type, bool(c.nullable)) for c in table.columns}

    @contextmanager
    def read_only(self, conn: Connection) -> Iterator[None]:
        """Within: the plant's own SQL (suite and reconciliation queries) runs on ``conn`` where
        it cannot write, even inside a run's transaction that already has; after it, the
        transaction is as it was. Everything read must be fetched inside.

        Portable: a savepoint rolled back afterwards, which undoes what a query wrote to
        transactional tables. It cannot stop DDL or non-transactional side effects, hence the
        parse first (config.user_sql)."""
        savepoint = conn.begin_nested()
        try:
            yield
        finally:
            savepoint.rollback()

    def clock(self, conn: Connection) -> datetime:
        """The database's time now, aware in UTC. CURRENT_TIMESTAMP is aware on PostgreSQL and
        naive UTC on SQLite; databases whose naive time is the session's zone override this."""
        now: datetime = conn.execute(select(func.current_timestamp(type_=DateTime(timezone=True)))).scalar_one()
        return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)

    def tune(self, conn: Connection, work_mem_mb: int) -> None:
        """Settings for the rest of the target transaction, for the run's few big set-based
        statements (staging, checks, merge over a whole batch)."""

    def release_lock(self, conn: Connection, flow: str) -> None:
        """Free the flow's lock where it outlives the transaction (after commit or rollback)."""

    def adapt_ddl(self, statement: str) -> str:
        """Rewrite one statement of the portable demo DDL where this database needs it."""
        return statement

    #: Whether copy_out can write PostgreSQL's binary COPY format (only PostgreSQL itself can).
    copies_binary = False

    def copy_out(self, conn: Connection, statement: Select[Any], out: BinaryIO, binary: bool = False) -> None:
        """Write the rows of ``statement``, a source read, to ``out`` as PostgreSQL COPY data:
        each row's values, then its number (1, 2, ... in the statement's order).

        Portable: the values the Python path reads (the columns' own result processing), as COPY
        text. Subclasses let their server do the formatting."""
        if binary:
            raise ValueError(f"{self.name} cannot write PostgreSQL's binary COPY format")
        result = conn.execution_options(stream_results=True, yield_per=COPY_ROWS).execute(statement)
        written = 0
        with result:
            for part in result.partitions(COPY_ROWS):
                lines = ["\t".join([copy_text(v) for v in row]) + f"\t{n}\n" for n, row in enumerate(part, start=written + 1)]
                out.write(copyable("".join(lines), self.name).encode())
                written += len(part)

    def staging_name(self, label: str) -> str:
        return f"etl_stg_{label}"

    def staging_table(self, target: Table, columns: list[str], label: str) -> Table:
        """The staging table's definition: the target's column types plus bookkeeping columns."""
        return Table(
            self.staging_name(label),
            MetaData(),
            *[Column(c, target.c[c].type, nullable=True) for c in columns],
            Column(SEQ, BigInteger, nullable=False),
            Column(SOURCE_KEY, Unicode(SOURCE_KEY_LENGTH), nullable=False),
            Column(RETRY, SmallInteger, nullable=False),
            prefixes=self.staging_prefixes(),
            **self.staging_table_options(),
        )

    def staging_prefixes(self) -> list[str]:
        return ["TEMPORARY"]

    def create_staging(self, conn: Connection, target: Table, columns: list[str], label: str) -> Table:
        """Create the temporary staging table, replacing one a failed run left on this session."""
        staging = self.staging_table(target, columns, label)
        staging.drop(conn, checkfirst=True)
        staging.create(conn)
        return staging

    def staging_table_options(self) -> dict[str, Any]:
        return {}

    def drop_staging(self, conn: Connection, staging: Table) -> None:
        staging.drop(conn, checkfirst=True)

    def stage(self, conn: Connection, staging: Table, rows: pd.DataFrame, first_seq: int, retry: bool) -> int:
        """Append ``rows`` (target columns + _source_key) to staging; returns rows written."""
        if rows.empty:
            return 0
        records = _records(rows, staging, first_seq, retry)
        conn.execute(staging.insert(), records)
        return len(records)

    def merge(self, conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str], mode: LoadMode) -> int:
        """Write staging into target by natural key; returns rows inserted or changed.

        Rows equal to what the target holds are not written, so a rerun writes nothing.
        """
        stg = staging.c
        nonkey = [c for c in columns if c not in key]
        match = and_(*[target.c[k] == stg[k] for k in key])
        written = 0
        if mode != "append" and nonkey:
            differs = or_(*[target.c[c].is_distinct_from(stg[c]) for c in nonkey])
            # UPDATE ... FROM is not portable; correlated scalar subqueries are.
            changed = (
                update(target)
                .where(exists(select(1).select_from(staging).where(match, differs)))
                .values({c: select(stg[c]).where(match).scalar_subquery() for c in nonkey})
            )
            written += conn.execute(changed).rowcount or 0
        missing = select(*[stg[c] for c in columns]).where(not_(exists(select(1).select_from(target).where(match))))
        written += conn.execute(target.insert().from_select(columns, missing)).rowcount or 0
        return written

    def merge_by_natural_key(
        self, conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str],
        mode: LoadMode, insert_only: list[str] | None = None,
    ) -> int:
        """Write staging into a target that has no unique index on ``key``; returns rows
        inserted or changed.

        One UPDATE ... FROM staging for rows whose key exists and whose values differ, then one
        INSERT ... SELECT for keys the target lacks. Without a unique index nothing in the
        database stops a second writer from inserting the same key in between: the flow's lock,
        held for the whole run, does. ``insert_only`` columns (a document number) are written
        with new rows and never updated. Columns the target generates are simply not listed.
        """
        stg = staging.c
        nonkey = [c for c in columns if c not in key]
        match = and_(*[target.c[k] == stg[k] for k in key])
        written = 0
        if mode != "append" and nonkey:
            written += self.update_changed(conn, staging, target, key, nonkey)
        inserted = columns + list(insert_only or [])
        missing = select(*[stg[c] for c in inserted]).where(not_(exists(select(1).select_from(target).where(match))))
        written += conn.execute(target.insert().from_select(inserted, missing)).rowcount or 0
        return written

    def update_changed(self, conn: Connection, staging: Table, target: Table, key: list[str], nonkey: list[str]) -> int:
        """``UPDATE target ... FROM staging`` on ``key`` where a ``nonkey`` column differs; returns rows changed."""
        stg = staging.c
        match = and_(*[target.c[k] == stg[k] for k in key])
        differs = or_(*[target.c[c].is_distinct_from(stg[c]) for c in nonkey])
        changed = update(target).where(match, differs).values({c: stg[c] for c in nonkey})
        return conn.execute(changed).rowcount or 0

    def next_values(self, conn: Connection, sequence: str, count: int) -> list[int]:
        """Draw ``count`` values from the database sequence ``sequence`` (``name`` or ``schema.name``)."""
        raise SchemaDriftError(f"database sequences are not available on {conn.dialect.name}; use a counter row (sequence:)")

    def delete_missing(
        self, conn: Connection, target: Table, keys: Table, key: list[str],
        scope: dict[str, Any], action: str, column: str | None, value: Any,
    ) -> int:
        """Apply a delete action to target rows within ``scope`` whose key is not in ``keys``."""
        gone = not_(exists(select(1).select_from(keys).where(and_(*[keys.c[k] == target.c[k] for k in key]))))
        where = [gone]
        scoped = scope_filter(target, scope)
        if scoped is not None:
            where.append(scoped)
        stmt: Delete | Update
        if action == "delete":
            stmt = delete(target).where(*where)
        else:
            flag = True if action == "soft_delete" else value
            assert column is not None
            where.append(target.c[column].is_distinct_from(flag))
            stmt = update(target).where(*where).values({column: flag})
        return conn.execute(stmt).rowcount or 0


def _records(rows: pd.DataFrame, staging: Table, first_seq: int, retry: bool) -> list[dict[str, Any]]:
    names = [c for c in rows.columns]
    flag = 1 if retry else 0
    out = []
    for seq, values in enumerate(rows.itertuples(index=False, name=None), start=first_seq):
        record = dict(zip(names, values, strict=True))
        record[SEQ] = seq
        record[RETRY] = flag
        out.append(record)
    return out


def iter_records(rows: pd.DataFrame, first_seq: int, retry: bool) -> Iterable[tuple[Any, ...]]:
    """Row tuples in staging column order: target columns, _seq, _source_key, _retry."""
    columns = [c for c in rows.columns if c != SOURCE_KEY]
    flag = 1 if retry else 0
    for seq, (values, source_key) in enumerate(
        zip(rows[columns].itertuples(index=False, name=None), rows[SOURCE_KEY], strict=True), start=first_seq
    ):
        yield (*values, seq, source_key, flag)


class OnConflictDialect(Dialect):
    """Databases with ``INSERT ... ON CONFLICT (key) DO UPDATE ... WHERE``: one merge statement
    that skips rows equal to the target's (PostgreSQL, SQLite)."""

    def insert(self, table: Table) -> Any:
        raise NotImplementedError

    def merge(self, conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str], mode: LoadMode) -> int:
        stg = staging.c
        # Keys are unique by now (load.resolve_duplicates); the WHERE only settles SQLite's
        # INSERT ... SELECT ... ON CONFLICT parsing ambiguity.
        rows = select(*[stg[c] for c in columns]).where(true())
        stmt = self.insert(target).from_select(columns, rows)
        nonkey = [c for c in columns if c not in key]
        if mode == "append" or not nonkey:
            stmt = stmt.on_conflict_do_nothing(index_elements=key)
        else:
            stmt = stmt.on_conflict_do_update(
                index_elements=key,
                set_={c: stmt.excluded[c] for c in nonkey},
                where=or_(*[target.c[c].is_distinct_from(stmt.excluded[c]) for c in nonkey]),
            )
        return conn.execute(stmt).rowcount or 0
