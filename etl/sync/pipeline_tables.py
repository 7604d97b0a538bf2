"""The pipeline's own tables, kept on every target database so that target rows, the new
watermark, the quarantine and the ledger row commit in one transaction.

Defined once here with SQLAlchemy so the same definition creates them on PostgreSQL, SQLite and
the other supported databases; sql/pipeline/ holds the PostgreSQL DDL for people to read.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Connection, Index, Integer, MetaData, Numeric, String, Table, Text, inspect
from sqlalchemy import DateTime as _DateTime
from sqlalchemy.dialects import mysql
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from etl.core.errors import EtlError, PipelineTablesBusy
from etl.core.rows import SOURCE_KEY_LENGTH

# MySQL's DATETIME keeps whole seconds unless asked for microseconds.
DateTime = _DateTime().with_variant(mysql.DATETIME(fsp=6), "mysql", "mariadb")

metadata = MetaData()

#: How far each flow has read (its watermark), and when it last compared key sets.
watermark = Table(
    "etl_watermark",
    metadata,
    Column("flow", String(63), primary_key=True),
    Column("cursor_value", String(64)),
    Column("cursor_type", String(16)),
    Column("keyset_checked_at", DateTime),
    Column("updated_at", DateTime, nullable=False),
    Column("run_id", String(36), nullable=False),
)

#: One row per run: what it read, loaded, quarantined, and how it ended.
ledger = Table(
    "etl_ledger",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("flow", String(63), nullable=False),
    Column("direction", String(16), nullable=False),
    Column("started_at", DateTime, nullable=False),
    Column("finished_at", DateTime),
    Column("duration_s", Numeric(12, 3)),
    Column("window_from", String(64)),
    Column("window_to", String(64)),
    Column("rows_read", Integer, nullable=False, default=0),
    Column("rows_retried", Integer, nullable=False, default=0),
    Column("rows_loaded", Integer, nullable=False, default=0),
    Column("rows_unchanged", Integer, nullable=False, default=0),
    Column("rows_quarantined", Integer, nullable=False, default=0),
    Column("rows_new_in_quarantine", Integer, nullable=False, default=0),
    Column("rows_released", Integer, nullable=False, default=0),
    Column("rows_deleted", Integer, nullable=False, default=0),
    Column("quarantine_backlog", Integer, nullable=False, default=0),
    Column("outcome", String(16), nullable=False),
    Column("options", Text),
    Column("error", Text),
    Index("ix_etl_ledger_flow_started", "flow", "started_at"),
)

#: Rows that could not be loaded, with the reason; retried by every run of their flow.
quarantine = Table(
    "etl_quarantine",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", String(63), nullable=False),
    Column("source_key", String(SOURCE_KEY_LENGTH), nullable=False),
    Column("payload", Text, nullable=False),
    Column("payload_kind", String(8), nullable=False),
    Column("reason", Text, nullable=False),
    Column("status", String(10), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("first_seen_at", DateTime, nullable=False),
    Column("last_seen_at", DateTime, nullable=False),
    Column("first_run_id", String(36), nullable=False),
    Column("last_run_id", String(36), nullable=False),
    Column("released_at", DateTime),
    Column("released_run_id", String(36)),
    Index("ix_etl_quarantine_flow_status_key", "flow", "status", "source_key"),
)

#: For flows with ``cursor.skip_loaded``: the rows the last incremental run loaded that the next
#: run's lookback reads again, by source key and cursor value (as text no session setting
#: changes). Replaced by every incremental run, cleared by any other, so it holds one
#: lookback's rows per flow at most.
lookback_loaded = Table(
    "etl_lookback_loaded",
    metadata,
    Column("flow", String(63), nullable=False),
    Column("source_key", String(SOURCE_KEY_LENGTH), nullable=False),
    Column("cursor_value", Text, nullable=False),
    Index("ix_etl_lookback_loaded_flow", "flow"),
)

#: One row per check per run: each expectation of the flow's suite and each reconciliation, with
#: how many rows it saw, how many failed, and a few of their source keys. Written with the ledger
#: row, so a run that was blocked still shows why.
check = Table(
    "etl_check",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(36), nullable=False),
    Column("flow", String(63), nullable=False),
    Column("checked_at", DateTime, nullable=False),
    #: ``expectation`` (from the flow's suite) or ``reconciliation`` (counts and key checksums).
    Column("kind", String(16), nullable=False),
    Column("name", String(200), nullable=False),
    Column("expectation_type", String(100)),
    Column("suite", String(100)),
    #: ``quarantine``, ``critical`` or ``warning``: what a failure does.
    Column("action", String(10), nullable=False),
    Column("rows_checked", Integer, nullable=False),
    Column("rows_failed", Integer, nullable=False),
    Column("success", Boolean, nullable=False),
    #: JSON list of up to 10 source keys of failing rows.
    Column("sample_keys", Text),
    Column("detail", Text),
    Index("ix_etl_check_flow_checked", "flow", "checked_at"),
    Index("ix_etl_check_run", "run_id"),
)


#: For flows reading files: every file a run took, with its content's SHA-256, in the run's own
#: transaction. A file loads once: its content recorded as ``loaded`` is a duplicate when seen
#: again; ``rejected`` files were refused whole (``reason``), ``duplicate`` ones loaded nothing.
file_intake = Table(
    "etl_file_intake",
    metadata,
    Column("run_id", String(36), primary_key=True),
    Column("file_name", String(255), primary_key=True),
    Column("flow", String(63), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size_bytes", BigInteger, nullable=False),
    Column("mtime_ns", BigInteger, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("outcome", String(10), nullable=False),
    Column("reason", Text),
    Column("recorded_at", DateTime, nullable=False),
    Index("ix_etl_file_intake_flow_sha256", "flow", "sha256"),
)

#: What a flow with a web API target posted, one row per posting key: the remote record's id and
#: how it got there (created, updated, found: posted before by a run whose commit was lost), in
#: the run's transaction. ``sending`` rows are committed before a send to an API with neither a
#: lookup nor an idempotency key, so a lost answer is detected, never sent twice.
api_posting = Table(
    "etl_api_posting",
    metadata,
    Column("flow", String(63), primary_key=True),
    Column("posting_key", String(255), primary_key=True),
    Column("how", String(10), primary_key=True),
    Column("remote_id", String(200)),
    Column("payload_hash", String(64), nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("posted_at", DateTime, nullable=False),
)

#: What a flow with a file target wrote, one row per file: its name, SHA-256, rows and window,
#: in the transaction of the run whose rows it holds. A file in the folder whose manifest no
#: row here names was written by a run whose commit was lost; the rerun takes it as its own.
file_export = Table(
    "etl_file_export",
    metadata,
    Column("flow", String(63), primary_key=True),
    Column("file_name", String(255), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("run_id", String(36), nullable=False),
    Column("window_from", String(64)),
    Column("window_to", String(64)),
    Column("written_at", DateTime, nullable=False),
)

# On MariaDB the pipeline's tables hold every character whatever the database's default
# (utf8mb3, latin1): a quarantined row keeps the value its target could not, and keys compare
# exactly, as in PostgreSQL.
for _table in metadata.tables.values():
    _table.dialect_kwargs.update({"mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"})


def ensure_pipeline_tables(
    conn: Connection, lookback: bool = False, files: bool = False, api: bool = False, export: bool = False,
) -> None:
    """Create the pipeline tables where missing (idempotent). ``lookback``: etl_lookback_loaded
    as well, which only flows with ``cursor.skip_loaded`` use; ``files``: etl_file_intake, which
    only flows reading files use; ``api``: etl_api_posting, which only flows with a web API
    target use; ``export``: etl_file_export, which only flows with a file target use; a target
    whose sync role may not create tables then runs the other flows
    without them.

    Raises PipelineTablesBusy (retryable) when another run created them at the same moment, as
    the first runs of several flows on a new target do; the retry finds them there. Raises
    EtlError naming the missing tables when the login may not create tables (least privilege).
    """
    present = set(inspect(conn).get_table_names())
    optional = {lookback_loaded: lookback, file_intake: files, api_posting: api, file_export: export}
    missing = [t for t in metadata.sorted_tables if t.name not in present and optional.get(t, True)]
    if not missing:
        return
    try:
        metadata.create_all(conn, tables=missing, checkfirst=True)
    except (IntegrityError, ProgrammingError, OperationalError) as exc:
        if isinstance(exc, IntegrityError) or "already exists" in str(exc.orig).lower():
            raise PipelineTablesBusy("another run is creating the pipeline tables on this target; retry") from exc
        if "permission denied" in str(exc.orig).lower():
            names = ", ".join(t.name for t in missing)
            raise EtlError(
                f"pipeline table(s) {names} missing on this target, and this login may not create tables: "
                "have the tables' owner create them (sql/pipeline/postgresql.sql) and run "
                "sql/roles/postgresql.sql again"
            ) from exc
        raise


def ddl(dialect_name: str = "postgresql") -> str:
    """The CREATE statements of the pipeline tables for one database, as sql/pipeline/ shows them."""
    from sqlalchemy.dialects import registry
    from sqlalchemy.schema import CreateIndex, CreateTable

    dialect = registry.load(dialect_name)()
    parts = []
    for table in metadata.sorted_tables:
        parts.append(str(CreateTable(table).compile(dialect=dialect)).strip() + ";")
        for index in sorted(table.indexes, key=lambda i: i.name or ""):
            parts.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";")
    return "\n\n".join(parts) + "\n"
