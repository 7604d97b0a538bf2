"""One run of one flow, start to finish.

Order of a run, all on the target inside ONE transaction (the source is read in its own
read-only transaction):
  lock -> check schemas -> read watermark -> ceiling -> stage fresh rows (transform, parents,
  quarantine rejects) -> stage quarantine retries -> resolve duplicate keys -> validate with the
  flow's expectation suite (quarantine failing rows, or block the batch) -> delta postings (the
  difference from the target's own total) -> merge -> reconcile counts and target against the
  batch -> document lines -> release loaded quarantine entries -> delete detection -> new
  watermark -> ledger row -> commit.
A crash anywhere before the commit leaves the old state; nothing is half-loaded. A failed run
writes its ledger row in a transaction of its own.

The steps and their order are ``_STEPS``; each takes the run's context (``_Run``) alone.
Staging takes one of three paths with the same result: the SQL path (etl.sync.stage_sql) when the
target is PostgreSQL and every rule has an exact SQL twin; else the in-process path (the same
rules compiled for DuckDB, etl.sync.stage_in_process) when every rule has an exact DuckDB twin;
else the Python path (etl.rules.transform). The last two read and stage chunk by chunk alike.
Everything after staging is shared.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack, closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, Table, func, select
from sqlalchemy.exc import DBAPIError, OperationalError

from etl.config.crosswalks import Crosswalk, load_crosswalks
from etl.config.flows import Flow, Project
from etl.config.suites import load_suite
from etl.core import watermark as wm
from etl.core.clock import utcnow
from etl.core.errors import (
    ConfigError,
    EtlError,
    FlowBusy,
    NotCopyable,
    ReconciliationFailed,
    SchemaDriftError,
    SourceUnavailable,
    StepFailed,
    ValidationFailed,
)
from etl.core.printable import get_logger
from etl.core.rows import SOURCE_KEY, Reject, frame_from_rows, is_null
from etl.core.types import ColumnType, column_type
from etl.dialects import Dialect, dialect_for
from etl.dialects.base import scope_filter
from etl.rules.transform import TransformResult, transform
from etl.sync import (
    document_numbers,
    ledger,
    postings,
    quarantine,
    reconciliation,
    stage_in_process,
    stage_sql,
    state,
    validation,
)
from etl.sync.api_sink import ApiSink, post_batch
from etl.sync.connections import Connections
from etl.sync.documents import DocumentLines
from etl.sync.extract import OpenedSource, Source, open_source
from etl.sync.file_sink import write_file
from etl.sync.http_api import ApiClient, api_connection
from etl.sync.load import ParentCheck, insert_only_columns, merge_rows, resolve_duplicates
from etl.sync.lookups import ambiguity_waiting, resolve_lookups
from etl.sync.pipeline_tables import ensure_pipeline_tables
from etl.sync.schema import check_flow_schema, has_unique_key, reflect_table
from etl.sync.stage_in_process import InProcessRules

log = get_logger("etl.sync.runner")


@dataclass(frozen=True)
class RunOptions:
    """What a person can ask of one run (the CLI flags and the Airflow trigger form)."""

    full_refresh: bool = False
    since: datetime | None = None
    dry_run: bool = False
    plants: list[str] | None = None
    #: Compare source and target keys for deletions: True always, False never, None when due.
    keyset: bool | None = None
    #: What woke an event-driven run (``postgres_notify``, ``mqtt``, ``sweep``, ``start``), when
    #: the first of the events it answers was received (naive UTC) and how many it answers. They
    #: change nothing the run reads; the ledger keeps them for the report's latency.
    woken_by: str | None = None
    event_at: datetime | None = None
    events: int = 0

    def as_dict(self) -> dict[str, Any]:
        options: dict[str, Any] = {
            "full_refresh": self.full_refresh,
            "since": self.since.isoformat() if self.since else None,
            "dry_run": self.dry_run,
            "plants": self.plants,
            "keyset": self.keyset,
        }
        if self.woken_by is not None:
            options |= {
                "woken_by": self.woken_by, "events": self.events,
                "event_at": self.event_at.isoformat() if self.event_at else None,
            }
        return options


@dataclass
class RunResult:
    record: ledger.RunRecord
    warnings: list[str] = field(default_factory=list)
    new_source_columns: list[str] = field(default_factory=list)


class _Step:
    """Remembers which step a run is in, for the error message, logs it (``-v`` shows each step)
    and tells the hook."""

    def __init__(self, hook: Callable[[str], None] | None, flow: str) -> None:
        self.name = "start"
        self.hook = hook
        self.flow = flow

    def __call__(self, name: str) -> None:
        self.name = name
        log.info("flow %s: step %s", self.flow, name)
        if self.hook is not None:
            self.hook(name)


def _is_transient(exc: BaseException) -> bool:
    if isinstance(exc, EtlError):
        return exc.retryable
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        text = str(exc.orig).lower()
        # A wrong password or database name also arrives as a connection error: no retry fixes it.
        if any(s in text for s in ("authentication failed", "access denied", "does not exist", "unknown database")):
            return False
        return any(s in text for s in ("connection", "deadlock", "could not serialize", "terminat", "timeout", "locked"))
    return False


def run_flow(
    project: Project,
    name: str,
    connections: Connections,
    options: RunOptions = RunOptions(),
    *,
    crosswalks: dict[str, Crosswalk] | None = None,
    clock: Callable[[], datetime] = utcnow,
    hook: Callable[[str], None] | None = None,
) -> RunResult:
    """Run flow ``name`` once. Returns its ledger record; raises StepFailed if it fails.

    ``hook`` is called with each step's name before the step runs (tests use it to inject
    failures at every stage boundary).
    """
    flow = project.flow(name)
    if crosswalks is None:
        crosswalks = load_crosswalks(Path(project.mappings_dir) / "crosswalks")
    run = ledger.RunRecord(
        run_id=str(uuid.uuid4()), flow=flow.flow, direction=flow.direction,
        started_at=clock(), options=options.as_dict(),
    )
    result = RunResult(run)
    enter = _Step(hook, flow.flow)
    t0 = time.monotonic()
    try:
        crosswalks, opened, target_engine = _connect(flow, connections, crosswalks, result, enter)
        with closing(opened), target_engine.connect() as tconn:
            opened.open()
            ttx = tconn.begin()
            try:
                _run(flow, project, opened, tconn, crosswalks, options, run, result, clock, enter)
                enter("commit")
                if options.dry_run:
                    ttx.rollback()
                else:
                    ttx.commit()
            finally:
                if ttx.is_active:
                    ttx.rollback()
                _release_lock(tconn, flow.flow)
            if not options.dry_run:
                opened.after_commit(enter)
        run.outcome = ledger.DRY_RUN if options.dry_run else ledger.SUCCESS
        if options.dry_run:
            run.finished_at = clock()
            _write_ledger_alone(connections, flow, run)
        enter("done")
    except Exception as exc:
        run.finished_at = clock()
        # A dry run that fails is still a dry run: its error is kept, but it says nothing of
        # how the flow's real runs stand (the report's status reads real runs only).
        run.outcome = ledger.BUSY if isinstance(exc, FlowBusy) else ledger.DRY_RUN if options.dry_run else ledger.FAILED
        run.error = f"{enter.name}: {type(exc).__name__}: {_one_line(exc)}"
        _write_ledger_alone(connections, flow, run)
        failure = StepFailed(flow.flow, enter.name, run.run_id, exc)
        failure.retryable = _is_transient(exc)
        if failure.retryable and not isinstance(exc, EtlError):
            raise failure from SourceUnavailable(_one_line(exc))
        raise failure from exc
    finally:
        log.info("flow %s run %s finished in %.2fs: %s", flow.flow, run.run_id, time.monotonic() - t0, run.outcome)
    return result


def _connect(
    flow: Flow, connections: Connections, crosswalks: dict[str, Crosswalk], result: RunResult, enter: _Step,
) -> tuple[dict[str, Crosswalk], OpenedSource, Engine]:
    """Find the source (not yet open) and the target's engine, read the lookup crosswalks the
    flow uses, and make sure the pipeline's own tables exist on the target; returns the
    crosswalks with their lookups read, the source and the target's engine."""
    enter("connect")
    target_engine = connections.engine(flow.target.connection)
    source = open_source(flow, connections)
    if any(not crosswalks[n].loaded for n in flow.crosswalks_used() if n in crosswalks):
        enter("read_lookups")  # once per run, fresh: the lookup's table may have changed
        # What the lookups found ambiguous is told after staging, if rows with those codes wait.
        crosswalks, _ = resolve_lookups(crosswalks, flow.crosswalks_used(), connections.engine)
    with target_engine.begin() as conn:
        ensure_pipeline_tables(
            conn, lookback=flow.skips_loaded, files=flow.source.files is not None, api=flow.target.api is not None,
            export=flow.target.files is not None,
        )
    return crosswalks, source, target_engine


def refuse_run(
    project: Project, name: str, connections: Connections, given: dict[str, Any], cause: EtlError,
) -> StepFailed:
    """Record a run refused before it started (e.g. bad trigger parameters) as a failed run at
    step ``parameters`` in the ledger, so the report counts it; returns the StepFailed to raise.
    Nothing is read or written besides the ledger row."""
    flow = project.flow(name)
    now = utcnow()
    run = ledger.RunRecord(
        run_id=str(uuid.uuid4()), flow=flow.flow, direction=flow.direction, started_at=now,
        options=given, finished_at=now, outcome=ledger.FAILED,
        error=f"parameters: {type(cause).__name__}: {_one_line(cause)}",
    )
    _write_ledger_alone(connections, flow, run)
    return StepFailed(flow.flow, "parameters", run.run_id, cause)


def _release_lock(conn: Connection, flow: str) -> None:
    try:
        dialect_for(conn).release_lock(conn, flow)
    except DBAPIError as exc:  # a dead session has released its locks already
        log.warning("could not release the lock of flow %s: %s", flow, _one_line(exc))


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, DBAPIError):
        # The driver's message, without SQLAlchemy's echo of the statement and its parameters.
        return str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
    return str(exc)


def _write_ledger_alone(connections: Connections, flow: Flow, run: ledger.RunRecord) -> None:
    """Record a failed or dry run in its own transaction; never hide the original error."""
    try:
        with connections.engine(flow.target.connection).begin() as conn:
            ensure_pipeline_tables(conn)
            run.counts.quarantine_backlog = quarantine.backlog(conn, flow.flow)
            ledger.write_run(conn, run)
    except Exception as exc:  # the database may be the very thing that failed
        log.error("could not write the ledger row of run %s: %s", run.run_id, _one_line(exc))


def _column_types(table: Table) -> dict[str, ColumnType]:
    """What each column of a reflected table holds (the source's, for the in-process path)."""
    return {c.name: column_type(c.type, bool(c.nullable)) for c in table.columns}


@dataclass
class _Run:
    """One run of one flow as its steps see it: the flow, both connections, the ledger record,
    and what each step found for the steps after it. Steps read it and add to it; no step
    takes or returns anything else."""

    flow: Flow
    project: Project
    opened: OpenedSource
    tconn: Connection
    crosswalks: dict[str, Crosswalk]
    options: RunOptions
    run: ledger.RunRecord
    result: RunResult
    clock: Callable[[], datetime]
    enter: Callable[[str], None]
    #: Connections a step opens beside the source's and tconn (a flow's lines reader) close however the run ends.
    cleanup: ExitStack
    dialect: Dialect = field(init=False)
    source_table: Table = field(init=False)
    target_table: Table = field(init=False)
    parent_tables: dict[str, Table] = field(init=False)
    lines: DocumentLines | None = field(init=False)
    types: dict[str, ColumnType] = field(init=False)
    columns: list[str] = field(init=False)
    flow_state: state.FlowState = field(init=False)
    source: Source = field(init=False)
    full_read: bool = field(init=False)
    window: wm.Window | None = field(init=False)
    staging: Table = field(init=False)
    now: datetime = field(init=False)
    #: The run's start on the target's clock, aware: what an expression's now() gives.
    target_now: datetime = field(init=False)
    #: Whether this run sets aside the re-read rows the last run loaded (cursor.skip_loaded).
    set_aside: bool = field(init=False)
    #: Rows staged (fresh and retried), the next staging sequence number on the Python path.
    seq: int = 0
    set_aside_rows: int = 0
    rejected_while_staging: int = 0
    key_conflicts: int = 0
    after_duplicates: int = 0
    failed_expectations: int = 0
    negative_deltas: int = 0
    refused_by_api: int = 0
    unchanged_in_batch: int = 0
    new_mark: wm.CursorValue | None = None
    keyset_checked_at: datetime | None = None
    #: The column rules of the Python path's chunks: etl.rules.transform, or DuckDB's twin.
    rules: Callable[[pd.DataFrame, Flow, dict[str, Crosswalk], dict[str, ColumnType], datetime | None], TransformResult] = (
        transform
    )

    def quarantine(self, rejects: list[Reject], payload_kind: str = quarantine.SOURCE_PAYLOAD) -> None:
        """Put rows in quarantine and count them in the ledger: the one place a run does either."""
        counts = quarantine.record(self.tconn, self.flow.flow, self.run.run_id, rejects, self.now, payload_kind)
        self.run.counts.rows_quarantined += counts.touched
        self.run.counts.rows_new_in_quarantine += counts.new


def _run(
    flow: Flow, project: Project, opened: OpenedSource, tconn: Connection, crosswalks: dict[str, Crosswalk],
    options: RunOptions, run: ledger.RunRecord, result: RunResult, clock: Callable[[], datetime],
    enter: Callable[[str], None],
) -> None:
    with ExitStack() as cleanup:
        ctx = _Run(flow, project, opened, tconn, crosswalks, options, run, result, clock, enter, cleanup)
        for step in _STEPS:
            step(ctx)


def _lock(ctx: _Run) -> None:
    ctx.dialect = dialect_for(ctx.tconn)
    ctx.enter("lock")
    ctx.target_now = ctx.dialect.clock(ctx.tconn)
    if not ctx.dialect.try_lock(ctx.tconn, ctx.flow.flow):
        holder = ctx.dialect.lock_holder(ctx.tconn, ctx.flow.flow)
        held_by = f" ({holder})" if holder else ""
        raise FlowBusy(f"flow {ctx.flow.flow!r}: another run holds its lock{held_by}; this run read and wrote nothing")
    # From here until the commit no other run of the flow runs: the ledger's started_at is
    # earlier, before connecting, so this is what shows that two runs never overlapped.
    ctx.run.options["locked_at"] = ctx.clock().isoformat()
    ctx.dialect.tune(ctx.tconn, ctx.flow.load.work_mem_mb)


def _check_schema(ctx: _Run) -> None:
    flow = ctx.flow
    ctx.enter("check_schema")
    ctx.source_table = ctx.opened.describe(ctx.tconn)
    ctx.result.warnings += ctx.opened.warnings
    ctx.target_table = reflect_table(ctx.tconn, flow.target.table, role="target", flow=flow)
    report = check_flow_schema(flow, ctx.source_table, ctx.target_table)
    ctx.result.warnings += report.warnings
    ctx.result.new_source_columns = report.new_source_columns
    if report.new_source_columns:
        log.info("flow %s: source columns not mapped: %s", flow.flow, ", ".join(report.new_source_columns))
    if flow.load.match == "unique_key" and not has_unique_key(ctx.tconn, ctx.target_table, flow.key):
        raise SchemaDriftError(
            f"{flow.file}: flow {flow.flow!r}: target {flow.target.table} has no primary key or unique "
            f"index on ({', '.join(flow.key)}); upserts by natural key need one, or set "
            "load.match: natural_key"
        )
    document_numbers.check_series(ctx.tconn, flow)
    ctx.parent_tables = {p.table: reflect_table(ctx.tconn, p.table, role="parent", flow=flow) for p in flow.parents}
    ctx.lines = None
    if flow.lines is not None:
        ctx.lines = DocumentLines(
            flow, _source_connection(ctx, "lines"), ctx.tconn, ctx.dialect, ctx.target_table, ctx.crosswalks, ctx.target_now,
        )
        ctx.cleanup.callback(ctx.lines.close_reader)
    ctx.types = ctx.dialect.target_types(ctx.tconn, ctx.target_table)
    ctx.columns = [c.target for c in flow.columns]


def _read_state(ctx: _Run) -> None:
    flow, options = ctx.flow, ctx.options
    ctx.enter("read_state")
    ctx.flow_state = state.read_state(ctx.tconn, flow.flow)
    plants = _source_plants(flow, options.plants, ctx.crosswalks, ctx.result)
    ctx.source = ctx.opened.reader(ctx.source_table, plants)
    ctx.full_read = options.full_refresh or flow.load.mode == "snapshot_replace" or flow.cursor is None
    ctx.window = None
    if flow.cursor is not None:
        ceiling, beyond = _ceiling(flow, ctx.source, ctx.flow_state.watermark, ctx.run, ctx.result)
        ctx.window = wm.plan_window(
            ctx.flow_state.watermark, ceiling, flow.cursor.lookback, since=options.since, full_refresh=ctx.full_read,
            beyond=beyond,
        )
    if ctx.window is not None:
        ctx.run.window_from = None if ctx.window.lower is None else str(ctx.window.lower)
        ctx.run.window_to = None if ctx.window.upper is None else str(ctx.window.upper)


def _ceiling(
    flow: Flow, source: Source, watermark: wm.CursorValue | None, run: ledger.RunRecord, result: RunResult,
) -> tuple[wm.CursorValue | None, wm.CursorValue | None]:
    """The window's ceiling, and the clock's limit when rows lie past it (else None).

    A row dated past the source's clock plus ``cursor.future_tolerance`` is read and loaded,
    but never becomes the watermark: it would hide every later change. Each run reports it.
    """
    assert flow.cursor is not None
    highest = source.ceiling()
    if highest is None:
        return None, None
    limit = wm.clock_limit(source.clock(), flow.cursor.future_tolerance, highest)
    frozen = watermark is not None and limit is not None and wm.is_after(watermark, limit)
    if limit is None or (not wm.is_after(highest, limit) and not frozen):
        return highest, None
    count, keys = source.beyond(limit, 5)
    if count:
        run.options["rows_beyond_clock"] = count
        warning = (
            f"flow {flow.flow!r}: {count} source row(s) have {flow.cursor.column} past the source's clock plus "
            f"cursor.future_tolerance ({limit}), e.g. {'; '.join(keys)}: they are loaded, but the watermark "
            "stays at the latest time not past the clock; correct them at the source"
        )
        result.warnings.append(warning)
        log.warning("%s", warning)
    if frozen:
        warning = (
            f"flow {flow.flow!r}: the stored watermark {watermark} is past the source's clock plus "
            f"cursor.future_tolerance ({limit}); this run reads every row up to {limit} once"
        )
        result.warnings.append(warning)
        log.warning("%s", warning)
    return source.ceiling(limit), limit


def _stage(ctx: _Run) -> None:
    """Fill staging on the SQL path where the flow can take it, else on the Python path."""
    flow = ctx.flow
    ctx.enter("stage")
    ctx.staging = ctx.dialect.create_staging(ctx.tconn, ctx.target_table, ctx.columns + insert_only_columns(flow), flow.flow)
    ctx.now = ctx.clock()
    sql_path, in_process = _stage_path(ctx)
    # Only a run that starts at the watermark's lookback sets rows aside and remembers its own: a
    # full refresh or an explicit --since compares every row again, so that it repairs what was
    # changed on the target, and clears the memory (the next incremental run starts it again).
    window = ctx.window
    ctx.set_aside = (
        flow.skips_loaded and not ctx.full_read and ctx.options.since is None and window is not None
        and window.lower is not None
    )
    if sql_path is None:
        try:
            with ctx.tconn.begin_nested():
                ctx.run.options["transform"] = "sql"
                _stage_through_sql(ctx)
        except NotCopyable as exc:
            # A value COPY cannot carry (a NUL): this run's rows go through Python, which
            # quarantines that row with its reason and loads the rest.
            if flow.load.transform == "sql":
                raise EtlError(f"{flow.file}: flow {flow.flow!r} asks for load.transform: sql, but {exc}") from None
            ctx.run.options["transform"] = "python"
            log.info("flow %s: this run transforms in Python: %s", flow.flow, exc)
            _stage_through_python(ctx)
    else:
        if in_process is None:
            ctx.run.options["transform"] = "in_process"
            rules = InProcessRules(flow, ctx.crosswalks, _column_types(ctx.source_table), ctx.types)
            ctx.cleanup.callback(rules.close)
            ctx.rules = rules
        else:
            ctx.run.options["transform"] = "python"
            log.info("flow %s: Python transform: %s", flow.flow, in_process)
        _stage_through_python(ctx)
    _warn_of_ambiguous_codes(ctx)


def _stage_path(ctx: _Run) -> tuple[str | None, str | None]:
    """Why the flow cannot take the SQL path, and why not the in-process path (None: it can).

    auto takes the SQL path on a PostgreSQL target (else Python), and the in-process path on any
    other target (else Python); load.transform: in_process forces it on either."""
    flow = ctx.flow
    forced = flow.load.transform
    sql_path: str | None = "the flow asks for the in-process path" if forced == "in_process" else stage_sql.unsupported_reason(
        flow, ctx.source_table, ctx.target_table, ctx.source.dialect_name, ctx.tconn.dialect.name, ctx.crosswalks,
    )
    if forced == "sql" and sql_path is not None:
        raise EtlError(f"{flow.file}: flow {flow.flow!r} asks for load.transform: sql, but {sql_path}")
    if flow.skips_loaded:
        cannot = sql_path or stage_sql.skip_loaded_reason(flow, ctx.source_table)
        if cannot is not None:
            raise EtlError(
                f"{flow.file}: flow {flow.flow!r} sets cursor.skip_loaded, which the SQL path keeps, but {cannot}"
            )
    in_process = None if sql_path is None else stage_in_process.unsupported_reason(
        flow, _column_types(ctx.source_table), ctx.types, ctx.crosswalks,
    )
    if in_process is None and forced == "auto" and ctx.tconn.dialect.name == "postgresql":
        # A PostgreSQL target runs the rules itself; what it cannot express stays in Python.
        in_process = f"on a PostgreSQL target auto takes the SQL path or Python, and {sql_path}"
    if forced == "in_process" and in_process is not None:
        raise EtlError(f"{flow.file}: flow {flow.flow!r} asks for load.transform: in_process, but {in_process}")
    return sql_path, in_process


def _warn_of_ambiguous_codes(ctx: _Run) -> None:
    """A lookup's ambiguous codes, for each side this flow translates to, where rows with them
    wait in quarantine (this run's and earlier ones')."""
    flow = ctx.flow
    columns = [*flow.columns, *(flow.lines.columns if flow.lines is not None else [])]
    used = {side for side in (flow.crosswalk_side(c) for c in columns) if side is not None}
    ambiguous = [(ctx.crosswalks[name], side) for name, side in sorted(used) if ctx.crosswalks[name].ambiguity]
    if not ambiguous:
        return
    reasons = quarantine.waiting_reasons(ctx.tconn, flow.flow)
    for crosswalk, side in ambiguous:
        warning = ambiguity_waiting(crosswalk, side, reasons)
        if warning is not None:
            ctx.result.warnings.append(warning)
            log.warning("flow %s: %s", flow.flow, warning)


def _source_connection(ctx: _Run, needs: str) -> Connection:
    """The source's database connection, for what reads the source database beside its rows."""
    conn = ctx.opened.connection
    if conn is None:
        raise EtlError(f"{ctx.flow.file}: flow {ctx.flow.flow!r}: {needs} need a table source, not {ctx.flow.source.kind}")
    return conn


def _stage_through_sql(ctx: _Run) -> None:
    flow = ctx.flow
    retries = (
        [w.payload for w in batch]
        for batch in quarantine.waiting_for_retry(ctx.tconn, flow.flow, ctx.run.run_id, flow.load.chunk_size)
    )
    ctx.enter("stage_first_chunk")
    outcome = stage_sql.stage(
        flow, ctx.source, ctx.window, ctx.tconn, ctx.target_table, ctx.staging, ctx.crosswalks, retries,
        ctx.parent_tables, set_aside_loaded=ctx.set_aside, now=ctx.target_now,
    )
    ctx.run.counts.rows_read = outcome.rows_read
    ctx.run.counts.rows_retried = outcome.rows_retried
    ctx.set_aside_rows = outcome.set_aside
    if flow.skips_loaded:  # counted among the unchanged rows; the ledger's options say how many
        ctx.run.options["rows_set_aside"] = ctx.set_aside_rows
    ctx.rejected_while_staging = len(outcome.rejects)
    ctx.enter("retry_quarantine")
    ctx.quarantine(outcome.rejects)
    ctx.seq = outcome.staged


def _stage_through_python(ctx: _Run) -> None:
    flow = ctx.flow
    parents = ParentCheck(ctx.tconn, flow, ctx.parent_tables)
    for number, frame in enumerate(ctx.source.chunks(ctx.window, flow.load.chunk_size)):
        ctx.enter("stage_chunk" if number else "stage_first_chunk")
        ctx.run.counts.rows_read += len(frame)
        _stage_chunk(ctx, frame, parents, retry=False)

    ctx.enter("retry_quarantine")
    for batch in quarantine.waiting_for_retry(ctx.tconn, flow.flow, ctx.run.run_id, flow.load.chunk_size):
        cols = flow.source_columns()
        frame = frame_from_rows([[w.payload.get(c) for c in cols] for w in batch], cols)
        ctx.run.counts.rows_retried += len(frame)
        _stage_chunk(ctx, frame, parents, retry=True)


def _stage_chunk(ctx: _Run, frame: pd.DataFrame, parents: ParentCheck, retry: bool) -> None:
    written, rejected = _stage_frame(ctx, frame, parents, retry, ctx.staging, ctx.seq)
    ctx.seq += written
    ctx.rejected_while_staging += rejected


def _stage_frame(
    ctx: _Run, frame: pd.DataFrame, parents: ParentCheck, retry: bool, staging: Table, first_seq: int,
) -> tuple[int, int]:
    """Transform one chunk, quarantine what fails, stage the rest into ``staging`` from sequence
    number ``first_seq``; returns the rows staged and the rows quarantined."""
    frame = frame.reset_index(drop=True)
    out = ctx.rules(frame, ctx.flow, ctx.crosswalks, ctx.types, ctx.target_now)
    rejects = list(out.rejects)
    rows = out.rows
    if ctx.flow.parents and not rows.empty:
        missing = parents.missing(rows)
        rejects += _rejects_of(frame, rows, missing)
        rows = rows.drop(index=list(missing))
    if ctx.lines is not None:
        # A document whose lines fail waits whole, as its header's source row.
        failed = ctx.lines.stage_for(ctx.tconn, frame, rows)
        rejects += _rejects_of(frame, rows, failed)
        rows = rows.drop(index=list(failed))
    ctx.quarantine(rejects)
    return ctx.dialect.stage(ctx.tconn, staging, rows, first_seq, retry), len(rejects)


def _rejects_of(frame: pd.DataFrame, rows: pd.DataFrame, reasons: dict[Any, str]) -> list[Reject]:
    """The source rows behind ``rows``' labels, each with its reason."""
    return [
        Reject(str(rows.at[label, SOURCE_KEY]), {k: (None if is_null(v) else v) for k, v in frame.loc[label].items()}, reason)
        for label, reason in reasons.items()
    ]


def _resolve_duplicates(ctx: _Run) -> None:
    ctx.enter("resolve_duplicates")
    conflicts = resolve_duplicates(
        ctx.tconn, ctx.staging, ctx.flow.key, ctx.columns, retried=ctx.run.counts.rows_retried > 0,
    )
    ctx.quarantine([Reject(c.source_key, c.target_row, c.reason) for c in conflicts], quarantine.TARGET_PAYLOAD)
    ctx.key_conflicts = len(conflicts)
    ctx.after_duplicates = int(ctx.tconn.execute(select(func.count()).select_from(ctx.staging)).scalar_one())


def _validate(ctx: _Run) -> None:
    """Check the staged batch against the flow's suite; quarantine the rows that fail, or raise
    ValidationFailed when a critical expectation fails."""
    flow = ctx.flow
    ctx.enter("validate")
    if flow.expectations is None:
        return
    suite = load_suite(Path(ctx.project.expectations_dir), flow)
    params = validation.parameters(flow.expectations, ctx.now)
    bad_regexes = validation.regex_problems(ctx.tconn, suite, params)
    if bad_regexes:
        raise ConfigError(bad_regexes)
    verdict = validation.check_batch(ctx.tconn, ctx.staging, suite, params, unique_key=list(flow.key))
    ctx.run.checks += verdict.checks()
    if verdict.blocking:
        raise ValidationFailed(verdict.message(flow))
    for rejects in verdict.failing_rows(ctx.tconn, ctx.staging, ctx.columns):
        ctx.quarantine(rejects, quarantine.TARGET_PAYLOAD)
    ctx.failed_expectations = verdict.remove_failing(ctx.tconn, ctx.staging)


def _apply_deltas(ctx: _Run) -> None:
    deltas = postings.apply_deltas(ctx.tconn, ctx.flow, ctx.staging, ctx.target_table)
    ctx.quarantine(deltas.rejects, quarantine.TARGET_PAYLOAD)
    ctx.negative_deltas = len(deltas.rejects)


def _post_to_api(ctx: _Run) -> None:
    """For a web API target: post the staged records the posted-record table does not hold as
    they are, quarantine those the API refuses, and leave the posted ones for the merge."""
    spec = ctx.flow.target.api
    if spec is None or ctx.options.dry_run:
        return
    ctx.enter("post_to_api")
    client = ctx.cleanup.enter_context(ApiClient(api_connection(spec.connection)))
    sink = ApiSink(client, ctx.flow, spec, ctx.columns)
    outcome, rejects = post_batch(ctx.tconn, ctx.flow, sink, ctx.staging, ctx.target_table, ctx.run.run_id, ctx.now)
    ctx.quarantine(rejects, quarantine.TARGET_PAYLOAD)
    ctx.refused_by_api = outcome.refused
    ctx.run.options["api_posted"] = outcome.posted
    ctx.run.options["api_found_posted_before"] = outcome.found
    ctx.run.options["api_seconds"] = round(client.seconds, 3)
    ctx.enter("posted_to_api")


def _write_file(ctx: _Run) -> None:
    """For a file target: write the staged rows the exported-record table does not hold as they
    are as one file beside its manifest, before the merge records them (etl.sync.file_sink)."""
    spec = ctx.flow.target.files
    if spec is None or ctx.options.dry_run:
        return
    ctx.enter("write_file")
    written = write_file(
        ctx.tconn, ctx.flow, spec, ctx.staging, ctx.target_table, ctx.columns, ctx.run.run_id, ctx.now,
        ctx.window, renamed=lambda: ctx.enter("file_renamed"),
    )
    if written is not None:
        ctx.run.options["file_written"] = written.name
        ctx.run.options["file_rows"] = written.rows
        ctx.run.options["file_sha256"] = written.sha256
        if written.taken_over:
            ctx.run.options["file_taken_over"] = True


def _merge(ctx: _Run) -> None:
    ctx.enter("merge")
    loaded = merge_rows(ctx.tconn, ctx.dialect, ctx.flow, ctx.staging, ctx.target_table, ctx.columns)
    ctx.run.counts.rows_loaded = loaded
    # Staged rows not written were equal to the target's (or, for delta postings, posted before).
    ctx.unchanged_in_batch = (
        ctx.after_duplicates - ctx.failed_expectations - ctx.negative_deltas - ctx.refused_by_api - loaded
    )
    # Rows set aside count as unchanged: the last run loaded them as they are.
    ctx.run.counts.rows_unchanged = ctx.unchanged_in_batch + ctx.set_aside_rows


def _reconcile(ctx: _Run) -> None:
    ctx.enter("reconcile")
    counts = ctx.run.counts
    tally = reconciliation.RowTally(
        read=counts.rows_read, retried=counts.rows_retried, quarantined_while_staging=ctx.rejected_while_staging,
        staged=ctx.seq, key_conflicts=ctx.key_conflicts, quarantined_by_expectations=ctx.failed_expectations,
        quarantined_as_negative_deltas=ctx.negative_deltas, refused_by_api=ctx.refused_by_api,
        skipped_copies=ctx.seq - ctx.key_conflicts - ctx.after_duplicates, loaded=counts.rows_loaded,
        unchanged=ctx.unchanged_in_batch, set_aside=ctx.set_aside_rows,
    )
    checks = [
        reconciliation.rows_balance(tally),
        reconciliation.target_matches_batch(
            ctx.tconn, ctx.staging, ctx.target_table, ctx.flow.key, ctx.columns,
            compare_values=ctx.flow.load.mode != "append",
        ),
    ]
    ctx.run.checks += checks
    mismatches = [c for c in checks if not c.success]
    if mismatches:
        raise ReconciliationFailed(
            f"flow {ctx.flow.flow!r}: reconciliation failed, nothing was committed: "
            + "; ".join(f"{c.name}: {c.detail}" + (f" (e.g. {', '.join(c.sample_keys[:3])})" if c.sample_keys else "")
                        for c in mismatches)
        )


def _merge_lines_and_release(ctx: _Run) -> None:
    if ctx.lines is not None:
        # Lines written count as loaded rows; unchanged counts documents.
        written, removed = ctx.lines.merge(ctx.tconn, ctx.staging)
        ctx.run.counts.rows_loaded += written
        ctx.run.counts.rows_deleted += removed
        ctx.lines.drop_staging(ctx.tconn)
    ctx.run.counts.rows_released = quarantine.release_loaded(ctx.tconn, ctx.flow.flow, ctx.run.run_id, ctx.staging, ctx.now)
    ctx.new_mark = wm.next_watermark(ctx.flow_state.watermark, ctx.window) if ctx.window is not None else None


def _remember_loaded(ctx: _Run) -> None:
    flow = ctx.flow
    if not flow.skips_loaded:
        return
    ctx.enter("remember_loaded")
    assert flow.cursor is not None
    # Where the next run's lookback starts; None clears the memory (a run not incremental).
    next_lower = (
        wm.plan_window(ctx.new_mark, None, flow.cursor.lookback).lower if ctx.set_aside and ctx.new_mark is not None else None
    )
    stage_sql.remember_loaded(ctx.tconn, flow, ctx.source_table, ctx.source.dialect_name, ctx.staging, next_lower)


def _deletes(ctx: _Run) -> None:
    flow = ctx.flow
    ctx.enter("deletes")
    ctx.keyset_checked_at = ctx.flow_state.keyset_checked_at
    if flow.load.mode == "snapshot_replace":
        ctx.run.counts.rows_deleted += ctx.dialect.delete_missing(
            ctx.tconn, ctx.target_table, ctx.staging, flow.key, dict(flow.deletes.scope),
            "delete" if flow.deletes.detect == "none" else flow.deletes.action,
            flow.deletes.column, flow.deletes.value,
        )
    elif _keyset_due(flow, ctx.options, ctx.keyset_checked_at, ctx.now):
        deleted, warning, compared = _detect_deletes(ctx)
        ctx.run.counts.rows_deleted += deleted
        if warning:
            ctx.result.warnings.append(warning)
        if compared:
            ctx.keyset_checked_at = ctx.now
    ctx.dialect.drop_staging(ctx.tconn, ctx.staging)


def _write_state(ctx: _Run) -> None:
    ctx.enter("write_state")
    state.write_state(ctx.tconn, ctx.flow.flow, ctx.new_mark, ctx.run.run_id, ctx.now, ctx.keyset_checked_at)


def _write_ledger(ctx: _Run) -> None:
    ctx.enter("write_ledger")
    if not ctx.options.dry_run:
        ctx.opened.record(ctx.tconn, ctx.run, ctx.now)
    ctx.run.counts.quarantine_backlog = quarantine.backlog(ctx.tconn, ctx.flow.flow)
    ctx.run.finished_at = ctx.clock()
    if not ctx.options.dry_run:
        ctx.run.outcome = ledger.SUCCESS
        ledger.write_run(ctx.tconn, ctx.run)


#: The order of a run's steps inside its transaction (see the module's docstring); each names
#: itself to the hook as it starts.
_STEPS: list[Callable[[_Run], None]] = [
    _lock, _check_schema, _read_state, _stage, _resolve_duplicates, _validate, _apply_deltas, _post_to_api, _write_file, _merge,
    _reconcile, _merge_lines_and_release, _remember_loaded, _deletes, _write_state, _write_ledger,
]


def _source_plants(
    flow: Flow, plants: list[str] | None, crosswalks: dict[str, Crosswalk], result: RunResult
) -> list[str] | None:
    """Plants are given as ERP codes; a flow reading the MES filters on their MES codes."""
    if not plants:
        return None
    if flow.source.plant_column is None:
        result.warnings.append("the flow's source has no plant_column: --plants does not limit it")
        return None
    if flow.direction != "mes_to_erp":
        return plants
    crosswalk = crosswalks.get("plant")
    translated = [crosswalk.lookup(p, "mes") if crosswalk else None for p in plants]
    unknown = [p for p, t in zip(plants, translated, strict=True) if t is None]
    if unknown:
        raise ValueError(f"plants {', '.join(unknown)} have no MES code in the 'plant' crosswalk")
    return [t[0] for t in translated if t is not None]



def _keyset_due(flow: Flow, options: RunOptions, checked_at: datetime | None, now: datetime) -> bool:
    if flow.deletes.detect != "keyset" or options.keyset is False:
        return False
    if options.plants:
        # The source keys would be one plant's, the target's every plant's: never compare them.
        return False
    if options.keyset or options.full_refresh or checked_at is None:
        return True
    return now - checked_at >= flow.deletes.every


def _detect_deletes(ctx: _Run) -> tuple[int, str | None, bool]:
    """Apply the delete action to target rows (within scope) whose key the source lost, and
    restore those flagged rows (soft_delete, status) whose key the source has again. Returns
    the rows deleted, a warning, and whether the keys were compared.

    Source keys that cannot be translated (a code missing from a crosswalk) protect no target
    row; with the reversible actions (status, soft_delete) the comparison goes on and says how
    many there were. With ``delete`` it is skipped: a row deleted for a crosswalk gap is gone.
    Also skipped when the source returned no keys while the target has rows: more likely an
    outage or a wrong filter than a plant that deleted everything.
    """
    flow, tconn, target = ctx.flow, ctx.tconn, ctx.target_table
    keys = ctx.dialect.create_staging(tconn, target, list(flow.key), f"{flow.flow}_keys")
    try:
        read = _stage_source_keys(ctx, keys)
        if read.skipped is not None:
            return 0, read.skipped, False
        if read.staged == 0 and _target_has_rows(tconn, target, flow):
            return 0, "delete detection skipped: the source returned no keys while the target has rows", False
        deleted = ctx.dialect.delete_missing(
            tconn, target, keys, flow.key, dict(flow.deletes.scope), flow.deletes.action,
            flow.deletes.column, flow.deletes.value,
        )
    finally:
        ctx.dialect.drop_staging(tconn, keys)
    if read.back:
        _restore(ctx, read.columns, read.back)
    warning = None
    if read.example is not None:
        warning = (
            f"delete detection: {read.untranslated} source key(s) cannot be translated and protect no "
            f"target row, e.g. {read.example.source_key}: {read.example.reason}"
        )
    return deleted, warning, True


@dataclass
class _SourceKeys:
    """What reading the source's keys for delete detection found."""

    staged: int = 0
    untranslated: int = 0
    example: Reject | None = None
    #: Why the comparison cannot go on, if it cannot.
    skipped: str | None = None
    #: The source columns of the keys as read, and the keys (as read) of flagged target rows.
    columns: list[str] = field(default_factory=list)
    back: list[tuple[Any, ...]] = field(default_factory=list)


def _stage_source_keys(ctx: _Run, keys: Table) -> _SourceKeys:
    """Stage every source key, translated, into ``keys``; note the flagged target rows it meets."""
    flow = ctx.flow
    key_flow = flow.model_copy(update={"columns": [c for c in flow.columns if c.target in flow.key], "parents": []})
    flagged = _flagged_keys(flow, ctx.tconn, ctx.target_table)
    read = _SourceKeys()
    for frame in ctx.source.keys(flow.load.chunk_size):
        frame = frame.reset_index(drop=True)
        out = transform(frame, key_flow, ctx.crosswalks, ctx.types, ctx.target_now)
        if flagged:
            positions = frame.index.get_indexer(out.rows.index)
            for pos, values in zip(positions, out.rows[list(flow.key)].itertuples(index=False, name=None), strict=True):
                if tuple(values) in flagged:
                    read.back.append(tuple(frame.iloc[int(pos)]))
            read.columns = list(frame.columns)
        read.untranslated += len(out.rejects)
        read.example = read.example or (out.rejects[0] if out.rejects else None)
        if out.rejects and flow.deletes.action == "delete":
            read.skipped = (
                f"delete detection skipped: source key {out.rejects[0].source_key} cannot be "
                f"translated ({out.rejects[0].reason}); action 'delete' needs every key"
            )
            return read
        ctx.dialect.stage(ctx.tconn, keys, out.rows, read.staged, False)
        read.staged += len(out.rows)
    return read


def _flagged_keys(flow: Flow, tconn: Connection, target: Table) -> set[tuple[Any, ...]]:
    """Keys of the target rows (within scope) the delete action has flagged."""
    if flow.deletes.action == "delete" or flow.deletes.column is None:
        return set()
    flag = True if flow.deletes.action == "soft_delete" else flow.deletes.value
    stmt = select(*[target.c[k] for k in flow.key]).where(target.c[flow.deletes.column] == flag)
    scoped = scope_filter(target, dict(flow.deletes.scope))
    if scoped is not None:
        stmt = stmt.where(scoped)
    return {tuple(r) for r in tconn.execute(stmt)}


def _restore(ctx: _Run, columns: list[str], keys: list[tuple[Any, ...]]) -> None:
    """Read again the source rows whose flagged target rows came back (re-inserted with an old
    cursor value, the window would never read them) and merge them as any run does: transform,
    parents and quarantine, then the merge, which writes the flow's own value of the flag."""
    flow, tconn, dialect = ctx.flow, ctx.tconn, ctx.dialect
    staging = dialect.create_staging(tconn, ctx.target_table, ctx.columns + insert_only_columns(flow), f"{flow.flow}_restore")
    parents = ParentCheck(tconn, flow, ctx.parent_tables)
    seq = 0
    for frame in ctx.source.rows_with_keys(columns, keys, flow.load.chunk_size):
        written, _ = _stage_frame(ctx, frame, parents, False, staging, seq)
        seq += written
    restored = merge_rows(tconn, dialect, flow, staging, ctx.target_table, ctx.columns) if seq else 0
    dialect.drop_staging(tconn, staging)
    ctx.run.counts.rows_loaded += restored
    if restored:  # flagged by the source itself (a flow mapping its own is_deleted), nothing changes
        ctx.run.options["rows_restored"] = restored
        log.info("flow %s: %d row(s) back in the source restored on the target", flow.flow, restored)


def _target_has_rows(tconn: Connection, target: Table, flow: Flow) -> bool:
    """Whether the target holds a row within the flow's delete scope."""
    scoped = scope_filter(target, dict(flow.deletes.scope))
    stmt = select(target.c[flow.key[0]]).limit(1)
    if scoped is not None:
        stmt = stmt.where(scoped)
    return tconn.execute(stmt).first() is not None
