"""PostgreSQL: COPY into a temporary staging table; a plain INSERT into an empty target, one
MERGE for a large batch (INSERT ... ON CONFLICT for a small one, and before PostgreSQL 15);
transaction-scoped advisory locks."""

from __future__ import annotations

import fcntl
import io
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, BinaryIO

import pandas as pd
from sqlalchemy import Connection, Select, Table, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert

from etl.core.rows import SEQ
from etl.core.types import ColumnType
from etl.dialects.base import (
    LoadMode,
    OnConflictDialect,
    copy_text,
    driver_cursor,
    holder_statement,
    iter_records,
    lock_key,
    quoted_name,
)

#: A batch at least 1/MERGE_SHARE the size of its target is merged in one join; a smaller one
#: probes the key index row by row.
MERGE_SHARE = 10
#: How much COPY data the driver hands over per call: a megabyte moves blocks, not rows.
COPY_BLOCK = 1 << 20


def render(conn: Connection, statement: Any) -> str:
    """A statement with its bound values inlined by the driver's own quoting (COPY takes none)."""
    compiled = statement.compile(dialect=conn.dialect, compile_kwargs={"render_postcompile": True})
    cursor = driver_cursor(conn)
    try:
        return str(cursor.mogrify(str(compiled), compiled.params).decode())
    finally:
        cursor.close()


def _seconds(held: Any) -> str:
    seconds = int(held.total_seconds()) if held is not None else 0
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


def merge_statement(conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str], mode: LoadMode) -> str:
    """One MERGE of staging into target by natural key (PostgreSQL 15+).

    A batch is merged with one join, where INSERT ... ON CONFLICT probes the key index row by
    row; unchanged rows match no WHEN clause and are neither written nor locked, so a rerun
    writes nothing. Keys are unique in staging by now (load.resolve_duplicates). A writer
    outside the pipeline inserting the same key mid-run makes the MERGE fail on the unique
    index rather than overwrite it; the run then leaves the target as it was. Identifiers are
    quoted here; there are no values.
    """
    q = conn.dialect.identifier_preparer.quote
    target_name = conn.dialect.identifier_preparer.format_table(target)
    nonkey = [c for c in columns if c not in key]
    on = " AND ".join(f"t.{q(k)} = s.{q(k)}" for k in key)
    lines = [f"MERGE INTO {target_name} AS t USING {q(staging.name)} AS s ON {on}"]
    if mode != "append" and nonkey:
        differs = " OR ".join(f"t.{q(c)} IS DISTINCT FROM s.{q(c)}" for c in nonkey)
        sets = ", ".join(f"{q(c)} = s.{q(c)}" for c in nonkey)
        lines.append(f"WHEN MATCHED AND ({differs}) THEN UPDATE SET {sets}")
    lines.append(
        f"WHEN NOT MATCHED THEN INSERT ({', '.join(q(c) for c in columns)}) "
        f"VALUES ({', '.join('s.' + q(c) for c in columns)})"
    )
    return "\n".join(lines)


class PostgresDialect(OnConflictDialect):
    name = "postgresql"

    def try_lock(self, conn: Connection, flow: str) -> bool:
        return bool(conn.execute(select(func.pg_try_advisory_xact_lock(lock_key(flow)))).scalar_one())

    def lock_holder(self, conn: Connection, flow: str) -> str | None:
        # A bigint advisory key shows in pg_locks as its high and low 32 bits.
        key = lock_key(flow) & 0xFFFFFFFFFFFFFFFF
        row = conn.execute(
            text(
                "SELECT a.pid, a.usename, a.client_addr, a.application_name, a.state, a.query, "
                "a.xact_start, now() - a.xact_start AS held_for "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = :high AND l.objid = :low "
                "AND l.objsubid = 1 AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())"
            ),
            {"high": key >> 32, "low": key & 0xFFFFFFFF},
        ).first()
        if row is None:
            return None
        since = f"since {row.xact_start:%Y-%m-%d %H:%M:%S %Z} ({_seconds(row.held_for)})" if row.xact_start else "outside a transaction"
        client = row.client_addr or "a local socket"
        return (
            f"PostgreSQL backend {row.pid} (user {row.usename}, from {client}, application {row.application_name!r}), "
            f"in its transaction {since}, state {row.state!r}, statement: {holder_statement(row.query)}; "
            f"if its run is gone, SELECT pg_terminate_backend({row.pid}) frees the lock"
        )

    def begin_read(self, conn: Connection) -> None:
        # One snapshot: the ceiling and every chunk see the same committed rows.
        conn.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))

    def target_types(self, conn: Connection, table: Table) -> dict[str, ColumnType]:
        types = super().target_types(conn, table)
        return {name: replace(t, holds_nul=False) if t.kind == "string" else t for name, t in types.items()}

    @contextmanager
    def read_only(self, conn: Connection) -> Iterator[None]:
        # A transaction may turn read-only at any point (never back): inside a savepoint, whose
        # rollback restores the setting, so the run's own writes go on after it. Temporary
        # tables stay writable, the target and everything else do not.
        savepoint = conn.begin_nested()
        try:
            conn.execute(text("SET LOCAL transaction_read_only = on"))
            yield
        finally:
            savepoint.rollback()

    def tune(self, conn: Connection, work_mem_mb: int) -> None:
        # JIT compiles the wide staging and check expressions anew in every run, which costs
        # more than it saves on a batch. The default work_mem (4MB) makes the hash joins and
        # aggregates over a batch spill to disk in many passes. SET LOCAL ends with the transaction.
        conn.execute(text("SET LOCAL jit = off"))
        current = conn.execute(text("SELECT setting::bigint FROM pg_settings WHERE name = 'work_mem'")).scalar_one()
        if int(current) < work_mem_mb * 1024:
            conn.execute(text(f"SET LOCAL work_mem = '{int(work_mem_mb)}MB'"))

    def staging_table_options(self) -> dict[str, Any]:
        return {"postgresql_on_commit": "DROP"}

    copies_binary = True

    def copy_out(self, conn: Connection, statement: Select[Any], out: BinaryIO, binary: bool = False) -> None:
        # Numbered by the query (row_number), not by an identity column on the target: drawing a
        # sequence value for every row costs a second a million rows.
        read = statement.subquery("etl_read")
        numbered = select(*read.c, func.row_number().over().label(SEQ))
        options = " (FORMAT binary)" if binary else ""
        cursor = driver_cursor(conn)
        try:
            cursor.copy_expert(f"COPY ({render(conn, numbered)}) TO STDOUT{options}", out, size=COPY_BLOCK)
        finally:
            cursor.close()

    def merge(self, conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str], mode: LoadMode) -> int:
        if self._is_empty(conn, target):
            # The first sync of a table: nothing to match, so a plain INSERT, without the join
            # and per-row matching of MERGE (about 30 % less time on a million rows).
            rows = select(*[staging.c[c] for c in columns])
            return conn.execute(target.insert().from_select(columns, rows)).rowcount or 0
        if (conn.dialect.server_version_info or (0,)) < (15,) or not self._batch_is_large(conn, staging, target):
            return super().merge(conn, staging, target, key, columns, mode)
        sql = merge_statement(conn, staging, target, key, columns, mode)
        return conn.execute(text(sql)).rowcount or 0

    def merge_by_natural_key(
        self, conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str],
        mode: LoadMode, insert_only: list[str] | None = None,
    ) -> int:
        if self._is_empty(conn, target):
            # Planned against an empty table, the NOT EXISTS becomes a nested loop that scans the
            # rows this very INSERT adds, once per staged row: quadratic. Nothing to match anyway.
            inserted = columns + list(insert_only or [])
            rows = select(*[staging.c[c] for c in inserted])
            return conn.execute(target.insert().from_select(inserted, rows)).rowcount or 0
        return super().merge_by_natural_key(conn, staging, target, key, columns, mode, insert_only)

    @staticmethod
    def _is_empty(conn: Connection, target: Table) -> bool:
        """Whether the target holds no committed row. A writer outside the pipeline that adds
        the same key before this run commits makes the INSERT fail on the unique index, as a
        MERGE would; the run then leaves the target as it was."""
        return not conn.execute(select(select(1).select_from(target).exists())).scalar_one()

    def _batch_is_large(self, conn: Connection, staging: Table, target: Table) -> bool:
        """Whether the batch is worth one join over the whole target (MERGE), or is small enough
        that probing the key index row by row (ON CONFLICT) costs less and does not grow with the
        target: 10,000 changed rows into 5 million."""
        prep = conn.dialect.identifier_preparer
        sizes = conn.execute(
            text("SELECT pg_relation_size(CAST(:staging AS regclass)), pg_relation_size(CAST(:target AS regclass))"),
            {"staging": prep.quote(staging.name), "target": prep.format_table(target)},
        ).one()
        return int(sizes[0]) * MERGE_SHARE >= int(sizes[1])

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
        cursor = driver_cursor(conn)
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


_F_SETPIPE_SZ = 1031  # Linux: a pipe of a megabyte hands over blocks, not 64 KiB slices


def copy_from_writer(tconn: Connection, produce: Callable[[BinaryIO], None], table_sql: str, columns_sql: str, options: str = "") -> int:
    """Stream the COPY data ``produce`` writes into ``COPY table (columns) FROM STDIN (options)``
    on the target through an OS pipe; returns the rows copied.

    ``produce`` writes in blocks from its own thread; the pipe's buffered file objects take
    those calls in C, and the pipe's size bounds the memory in flight."""
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, COPY_BLOCK)
    except OSError:  # not Linux, or above the system's limit: the default size works, slower
        pass
    reader, writer = os.fdopen(read_fd, "rb", buffering=COPY_BLOCK), os.fdopen(write_fd, "wb", buffering=COPY_BLOCK)
    options = f" ({options})" if options else ""
    failed: list[BaseException] = []

    def run() -> None:
        try:
            produce(writer)
        except BrokenPipeError:  # the target side stopped reading: its own error is raised
            pass
        except BaseException as exc:  # raised in the caller's thread once the target side ends
            failed.append(exc)
        finally:
            try:
                writer.close()  # end of data for the target side
            except BrokenPipeError:  # the target side stopped reading: its error is raised
                pass

    thread = threading.Thread(target=run, name="etl-copy-source", daemon=True)
    thread.start()
    target_cursor = driver_cursor(tconn)
    target_error: Exception | None = None
    try:
        target_cursor.copy_expert(f"COPY {table_sql} ({columns_sql}) FROM STDIN{options}", reader, size=COPY_BLOCK)
        rows = int(target_cursor.rowcount)
    except Exception as exc:
        target_error = exc
    finally:
        reader.close()  # a source still writing gets a broken pipe and stops
        thread.join()
        target_cursor.close()
    if failed:  # a source that failed is the cause (the target then saw the data end early)
        raise failed[0] from target_error
    if target_error is not None:
        raise target_error
    return rows
