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

Staging takes one of two paths with the same result: the SQL path (etl.sync.stage_sql) when source and
target are PostgreSQL and every rule has an exact SQL twin, else the Python path (etl.rules.transform,
chunk by chunk). Everything after staging is shared.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Table, false, func, select
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
    ReconciliationFailed,
    SchemaDriftError,
    SourceUnavailable,
    StepFailed,
    ValidationFailed,
)
from etl.core.printable import get_logger
from etl.core.rows import SOURCE_KEY, Reject, is_null
from etl.core.types import ColumnType, column_type
from etl.dialects import Dialect, dialect_for
from etl.dialects.base import scope_filter
from etl.rules.transform import transform
from etl.sync import ledger, postings, quarantine, reconciliation, stage_sql, state, validation
from etl.sync.connections import Connections
from etl.sync.documents import DocumentLines
from etl.sync.extract import TableSource, frame_from_rows
from etl.sync.load import ParentCheck, insert_only_columns, merge_rows, resolve_duplicates
from etl.sync.lookups import resolve_lookups
from etl.sync.pipeline_tables import ensure_pipeline_tables
from etl.sync.schema import check_flow_schema, has_unique_key, reflect_table

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

    def as_dict(self) -> dict[str, Any]:
        return {
            "full_refresh": self.full_refresh,
            "since": self.since.isoformat() if self.since else None,
            "dry_run": self.dry_run,
            "plants": self.plants,
            "keyset": self.keyset,
        }


@dataclass
class RunResult:
    record: ledger.RunRecord
    warnings: list[str] = field(default_factory=list)
    new_source_columns: list[str] = field(default_factory=list)


class _Step:
    """Remembers which step a run is in, for the error message."""

    def __init__(self) -> None:
        self.name = "start"

    def __call__(self, name: str) -> None:
        self.name = name
        log.debug("step %s", name)


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
    step = _Step()

    def enter(name: str) -> None:
        step(name)
        if hook is not None:
            hook(name)

    t0 = time.monotonic()
    try:
        enter("connect")
        target_engine = connections.engine(flow.target.connection)
        source_engine = connections.engine(flow.source.connection)
        if any(not crosswalks[n].loaded for n in flow.crosswalks_used() if n in crosswalks):
            enter("read_lookups")  # once per run, fresh: the lookup's table may have changed
            crosswalks, found = resolve_lookups(crosswalks, flow.crosswalks_used(), connections.engine)
            result.warnings += found
        with target_engine.begin() as conn:
            ensure_pipeline_tables(conn, lookback=flow.skips_loaded)
        with source_engine.connect() as sconn, target_engine.connect() as tconn:
            sconn.begin()
            dialect_for(sconn).begin_read(sconn)
            ttx = tconn.begin()
            try:
                _run(flow, project, sconn, tconn, crosswalks, options, run, result, clock, enter)
                enter("commit")
                if options.dry_run:
                    ttx.rollback()
                else:
                    ttx.commit()
            finally:
                if ttx.is_active:
                    ttx.rollback()
                _release_lock(tconn, flow.flow)
            sconn.rollback()
        run.outcome = ledger.DRY_RUN if options.dry_run else ledger.SUCCESS
        if options.dry_run:
            run.finished_at = clock()
            _write_ledger_alone(connections, flow, run)
        enter("done")
    except Exception as exc:
        run.finished_at = clock()
        run.outcome = ledger.BUSY if isinstance(exc, FlowBusy) else ledger.FAILED
        run.error = f"{step.name}: {type(exc).__name__}: {_one_line(exc)}"
        _write_ledger_alone(connections, flow, run)
        failure = StepFailed(flow.flow, step.name, run.run_id, exc)
        failure.retryable = _is_transient(exc)
        if failure.retryable and not isinstance(exc, EtlError):
            raise failure from SourceUnavailable(_one_line(exc))
        raise failure from exc
    finally:
        log.info("flow %s run %s finished in %.2fs: %s", flow.flow, run.run_id, time.monotonic() - t0, run.outcome)
    return result


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


def _target_types(target: Table) -> dict[str, ColumnType]:
    return {c.name: column_type(c.type, bool(c.nullable)) for c in target.columns}


def _run(
    flow: Flow, project: Project, sconn: Connection, tconn: Connection, crosswalks: dict[str, Crosswalk],
    options: RunOptions, run: ledger.RunRecord, result: RunResult, clock: Callable[[], datetime],
    enter: Callable[[str], None],
) -> None:
    # Connections a step opens beside sconn/tconn (a flow's lines reader) close however the run ends.
    with ExitStack() as cleanup:
        _run_steps(flow, project, sconn, tconn, crosswalks, options, run, result, clock, enter, cleanup)


def _run_steps(
    flow: Flow, project: Project, sconn: Connection, tconn: Connection, crosswalks: dict[str, Crosswalk],
    options: RunOptions, run: ledger.RunRecord, result: RunResult, clock: Callable[[], datetime],
    enter: Callable[[str], None], cleanup: ExitStack,
) -> None:
    dialect = dialect_for(tconn)
    enter("lock")
    if not dialect.try_lock(tconn, flow.flow):
        raise FlowBusy(f"flow {flow.flow!r}: another run holds its lock; this run read and wrote nothing")
    dialect.tune(tconn, flow.load.work_mem_mb)

    enter("check_schema")
    source_table = reflect_table(sconn, flow.source.table, role="source", flow=flow)
    target_table = reflect_table(tconn, flow.target.table, role="target", flow=flow)
    report = check_flow_schema(flow, source_table, target_table)
    result.warnings += report.warnings
    result.new_source_columns = report.new_source_columns
    if report.new_source_columns:
        log.info("flow %s: source columns not mapped: %s", flow.flow, ", ".join(report.new_source_columns))
    if flow.load.match == "unique_key" and not has_unique_key(tconn, target_table, flow.key):
        raise SchemaDriftError(
            f"{flow.file}: flow {flow.flow!r}: target {flow.target.table} has no primary key or unique "
            f"index on ({', '.join(flow.key)}); upserts by natural key need one, or set "
            "load.match: natural_key"
        )
    parent_tables = {p.table: reflect_table(tconn, p.table, role="parent", flow=flow) for p in flow.parents}
    lines = None
    if flow.lines is not None:
        lines = DocumentLines(flow, sconn, tconn, dialect, target_table, crosswalks)
        cleanup.callback(lines.close_reader)
    types = _target_types(target_table)
    columns = [c.target for c in flow.columns]

    enter("read_state")
    flow_state = state.read_state(tconn, flow.flow)
    plants = _source_plants(flow, options.plants, crosswalks, result)
    source = TableSource(sconn, source_table, flow, plants)
    full_read = options.full_refresh or flow.load.mode == "snapshot_replace" or flow.cursor is None
    window = None
    if flow.cursor is not None:
        ceiling, beyond = _ceiling(flow, source, flow_state.watermark, run, result)
        window = wm.plan_window(
            flow_state.watermark, ceiling, flow.cursor.lookback, since=options.since, full_refresh=full_read,
            beyond=beyond,
        )
    if window is not None:
        run.window_from = None if window.lower is None else str(window.lower)
        run.window_to = None if window.upper is None else str(window.upper)

    enter("stage")
    staging = dialect.create_staging(tconn, target_table, columns + insert_only_columns(flow), flow.flow)
    now = clock()
    empty_source = window is not None and window.upper is None and not window.include_null and window.beyond is None
    sql_path = stage_sql.unsupported_reason(
        flow, source_table, target_table, sconn.dialect.name, tconn.dialect.name, crosswalks,
    )
    if flow.load.transform == "sql" and sql_path is not None:
        raise EtlError(f"{flow.file}: flow {flow.flow!r} asks for load.transform: sql, but {sql_path}")
    skip_loaded = flow.skips_loaded
    if skip_loaded:
        cannot = sql_path or stage_sql.skip_loaded_reason(flow, source_table)
        if cannot is not None:
            raise EtlError(
                f"{flow.file}: flow {flow.flow!r} sets cursor.skip_loaded, which the SQL path keeps, but {cannot}"
            )
    # Only a run that starts at the watermark's lookback sets rows aside and remembers its own: a
    # full refresh or an explicit --since compares every row again, so that it repairs what was
    # changed on the target, and clears the memory (the next incremental run starts it again).
    set_aside = (
        skip_loaded and not full_read and options.since is None and window is not None and window.lower is not None
    )
    run.options["transform"] = "python" if sql_path else "sql"
    if sql_path is None:
        query = source.query(window)
        if empty_source:
            query = query.where(false())
        retries = (
            [w.payload for w in batch]
            for batch in quarantine.waiting_for_retry(tconn, flow.flow, run.run_id, flow.load.chunk_size)
        )
        enter("stage_first_chunk")
        outcome = stage_sql.stage(
            flow, sconn, tconn, query, source_table, target_table, staging, crosswalks, retries, parent_tables,
            set_aside_loaded=set_aside,
        )
        run.counts.rows_read = outcome.rows_read
        run.counts.rows_retried = outcome.rows_retried
        set_aside_rows = outcome.set_aside
        if skip_loaded:  # counted among the unchanged rows; the ledger's options say how many
            run.options["rows_set_aside"] = set_aside_rows
        rejected_while_staging = len(outcome.rejects)
        enter("retry_quarantine")
        counts = quarantine.record(tconn, flow.flow, run.run_id, outcome.rejects, now)
        run.counts.rows_quarantined += counts.touched
        run.counts.rows_new_in_quarantine += counts.new
        seq = outcome.staged
    else:
        log.debug("flow %s: Python transform: %s", flow.flow, sql_path)
        parents = ParentCheck(tconn, flow, parent_tables)
        seq = 0
        set_aside_rows = 0
        rejected_while_staging = 0
        chunks = iter(()) if empty_source else source.chunks(window, flow.load.chunk_size)
        for number, frame in enumerate(chunks):
            enter("stage_chunk" if number else "stage_first_chunk")
            run.counts.rows_read += len(frame)
            seq, rejected = _stage_frame(
                frame, flow, crosswalks, types, parents, dialect, tconn, staging, seq, False, run, now, lines,
            )
            rejected_while_staging += rejected

        enter("retry_quarantine")
        for batch in quarantine.waiting_for_retry(tconn, flow.flow, run.run_id, flow.load.chunk_size):
            payloads = [w.payload for w in batch]
            cols = flow.source_columns()
            frame = frame_from_rows([[p.get(c) for c in cols] for p in payloads], cols)
            run.counts.rows_retried += len(frame)
            seq, rejected = _stage_frame(
                frame, flow, crosswalks, types, parents, dialect, tconn, staging, seq, True, run, now, lines,
            )
            rejected_while_staging += rejected

    enter("resolve_duplicates")
    conflicts = resolve_duplicates(tconn, staging, flow.key, columns, retried=run.counts.rows_retried > 0)
    if conflicts:
        rejects = [Reject(c.source_key, c.target_row, c.reason) for c in conflicts]
        counts = quarantine.record(tconn, flow.flow, run.run_id, rejects, now, quarantine.TARGET_PAYLOAD)
        run.counts.rows_quarantined += counts.touched
        run.counts.rows_new_in_quarantine += counts.new

    after_duplicates = int(tconn.execute(select(func.count()).select_from(staging)).scalar_one())

    enter("validate")
    failed_expectations = 0
    if flow.expectations is not None:
        failed_expectations = _validate(flow, project, tconn, staging, columns, run, now)

    deltas = postings.apply_deltas(tconn, flow, staging, target_table)
    if deltas.rejects:
        counts = quarantine.record(tconn, flow.flow, run.run_id, deltas.rejects, now, quarantine.TARGET_PAYLOAD)
        run.counts.rows_quarantined += counts.touched
        run.counts.rows_new_in_quarantine += counts.new

    enter("merge")
    loaded = merge_rows(tconn, dialect, flow, staging, target_table, columns)
    run.counts.rows_loaded = loaded
    # Staged rows not written were equal to the target's (or, for delta postings, posted before).
    unchanged_in_batch = after_duplicates - failed_expectations - len(deltas.rejects) - loaded
    # Rows set aside count as unchanged: the last run loaded them as they are.
    run.counts.rows_unchanged = unchanged_in_batch + set_aside_rows

    enter("reconcile")
    tally = reconciliation.RowTally(
        read=run.counts.rows_read, retried=run.counts.rows_retried,
        quarantined_while_staging=rejected_while_staging, staged=seq, key_conflicts=len(conflicts),
        quarantined_by_expectations=failed_expectations, quarantined_as_negative_deltas=len(deltas.rejects),
        skipped_copies=seq - len(conflicts) - after_duplicates, loaded=loaded, unchanged=unchanged_in_batch,
        set_aside=set_aside_rows,
    )
    checks = [
        reconciliation.rows_balance(tally),
        reconciliation.target_matches_batch(
            tconn, staging, target_table, flow.key, columns, compare_values=flow.load.mode != "append",
        ),
    ]
    run.checks += checks
    mismatches = [c for c in checks if not c.success]
    if mismatches:
        raise ReconciliationFailed(
            f"flow {flow.flow!r}: reconciliation failed, nothing was committed: "
            + "; ".join(f"{c.name}: {c.detail}" + (f" (e.g. {', '.join(c.sample_keys[:3])})" if c.sample_keys else "") for c in mismatches)
        )
    if lines is not None:
        # Lines written count as loaded rows; unchanged counts documents.
        written, removed = lines.merge(tconn, staging)
        run.counts.rows_loaded += written
        run.counts.rows_deleted += removed
        lines.drop_staging(tconn)
    run.counts.rows_released = quarantine.release_loaded(tconn, flow.flow, run.run_id, staging, now)
    new_mark = wm.next_watermark(flow_state.watermark, window) if window is not None else None
    if skip_loaded:
        enter("remember_loaded")
        assert flow.cursor is not None
        # Where the next run's lookback starts; None clears the memory (a run not incremental).
        next_lower = wm.plan_window(new_mark, None, flow.cursor.lookback).lower if set_aside and new_mark is not None else None
        stage_sql.remember_loaded(tconn, flow, source_table, sconn.dialect.name, staging, next_lower)

    enter("deletes")
    keyset_checked_at = flow_state.keyset_checked_at
    if flow.load.mode == "snapshot_replace":
        run.counts.rows_deleted += dialect.delete_missing(
            tconn, target_table, staging, flow.key, dict(flow.deletes.scope),
            "delete" if flow.deletes.detect == "none" else flow.deletes.action,
            flow.deletes.column, flow.deletes.value,
        )
    elif _keyset_due(flow, options, keyset_checked_at, now):
        deleted, warning, compared = _detect_deletes(
            flow, source, tconn, dialect, target_table, crosswalks, types, run, now, parent_tables,
        )
        run.counts.rows_deleted += deleted
        if warning:
            result.warnings.append(warning)
        if compared:
            keyset_checked_at = now
    dialect.drop_staging(tconn, staging)

    enter("write_state")
    state.write_state(tconn, flow.flow, new_mark, run.run_id, now, keyset_checked_at)

    enter("write_ledger")
    run.counts.quarantine_backlog = quarantine.backlog(tconn, flow.flow)
    run.finished_at = clock()
    if not options.dry_run:
        run.outcome = ledger.SUCCESS
        ledger.write_run(tconn, run)


def _ceiling(
    flow: Flow, source: TableSource, watermark: wm.CursorValue | None, run: ledger.RunRecord, result: RunResult,
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


def _validate(
    flow: Flow, project: Project, tconn: Connection, staging: Table, columns: list[str],
    run: ledger.RunRecord, now: datetime,
) -> int:
    """Check the staged batch against the flow's suite; quarantine the rows that fail, or raise
    ValidationFailed when a critical expectation fails. Returns the rows taken out of staging."""
    assert flow.expectations is not None
    suite = load_suite(Path(project.expectations_dir), flow)
    params = validation.parameters(flow.expectations, now)
    bad_regexes = validation.regex_problems(tconn, suite, params)
    if bad_regexes:
        raise ConfigError(bad_regexes)
    verdict = validation.check_batch(tconn, staging, suite, params, unique_key=list(flow.key))
    run.checks += verdict.checks()
    if verdict.blocking:
        raise ValidationFailed(verdict.message(flow))
    for rejects in verdict.failing_rows(tconn, staging, columns):
        counts = quarantine.record(tconn, flow.flow, run.run_id, rejects, now, quarantine.TARGET_PAYLOAD)
        run.counts.rows_quarantined += counts.touched
        run.counts.rows_new_in_quarantine += counts.new
    return verdict.remove_failing(tconn, staging)


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


def _stage_frame(
    frame: pd.DataFrame, flow: Flow, crosswalks: dict[str, Crosswalk], types: dict[str, ColumnType],
    parents: ParentCheck, dialect: Dialect, tconn: Connection, staging: Table, seq: int, retry: bool,
    run: ledger.RunRecord, now: datetime, lines: DocumentLines | None = None,
) -> tuple[int, int]:
    """Transform one chunk, quarantine what fails, stage the rest; returns the next sequence number
    and the number of rows quarantined."""
    frame = frame.reset_index(drop=True)
    out = transform(frame, flow, crosswalks, types)
    rejects = list(out.rejects)
    rows = out.rows
    if flow.parents and not rows.empty:
        missing = parents.missing(rows)
        if missing:
            for label, reason in missing.items():
                payload = {k: (None if is_null(v) else v) for k, v in frame.loc[label].items()}
                rejects.append(Reject(str(rows.at[label, SOURCE_KEY]), payload, reason))
            rows = rows.drop(index=list(missing))
    if lines is not None:
        # A document whose lines fail waits whole, as its header's source row.
        failed = lines.stage_for(tconn, frame, rows)
        for label, reason in failed.items():
            payload = {k: (None if is_null(v) else v) for k, v in frame.loc[label].items()}
            rejects.append(Reject(str(rows.at[label, SOURCE_KEY]), payload, reason))
        rows = rows.drop(index=list(failed))
    if rejects:
        counts = quarantine.record(tconn, flow.flow, run.run_id, rejects, now)
        run.counts.rows_quarantined += counts.touched
        run.counts.rows_new_in_quarantine += counts.new
    written = dialect.stage(tconn, staging, rows, seq, retry)
    return seq + written, len(rejects)


def _keyset_due(flow: Flow, options: RunOptions, checked_at: datetime | None, now: datetime) -> bool:
    if flow.deletes.detect != "keyset" or options.keyset is False:
        return False
    if options.plants:
        # The source keys would be one plant's, the target's every plant's: never compare them.
        return False
    if options.keyset or options.full_refresh or checked_at is None:
        return True
    return now - checked_at >= flow.deletes.every


def _detect_deletes(
    flow: Flow, source: TableSource, tconn: Connection, dialect: Dialect, target: Table,
    crosswalks: dict[str, Crosswalk], types: dict[str, ColumnType], run: ledger.RunRecord, now: datetime,
    parent_tables: dict[str, Table],
) -> tuple[int, str | None, bool]:
    """Apply the delete action to target rows (within scope) whose key the source lost, and
    restore those flagged rows (soft_delete, status) whose key the source has again.

    Source keys that cannot be translated (a code missing from a crosswalk) protect no target
    row; with the reversible actions (status, soft_delete) the comparison goes on and says how
    many there were. With ``delete`` it is skipped: a row deleted for a crosswalk gap is gone.
    Also skipped when the source returned no keys while the target has rows: more likely an
    outage or a wrong filter than a plant that deleted everything.
    """
    key_flow = flow.model_copy(update={"columns": [c for c in flow.columns if c.target in flow.key], "parents": []})
    keys = dialect.create_staging(tconn, target, list(flow.key), f"{flow.flow}_keys")
    flagged = _flagged_keys(flow, tconn, target)
    back: list[tuple[Any, ...]] = []  # source keys (as read) of flagged target rows
    seq = 0
    untranslated = 0
    example: Reject | None = None
    for frame in source.keys(flow.load.chunk_size):
        frame = frame.reset_index(drop=True)
        out = transform(frame, key_flow, crosswalks, types)
        if flagged:
            positions = frame.index.get_indexer(out.rows.index)
            for pos, values in zip(positions, out.rows[list(flow.key)].itertuples(index=False, name=None), strict=True):
                if tuple(values) in flagged:
                    back.append(tuple(frame.iloc[int(pos)]))
            read_as = list(frame.columns)
        untranslated += len(out.rejects)
        example = example or (out.rejects[0] if out.rejects else None)
        if out.rejects and flow.deletes.action == "delete":
            dialect.drop_staging(tconn, keys)
            return 0, (
                f"delete detection skipped: source key {out.rejects[0].source_key} cannot be "
                f"translated ({out.rejects[0].reason}); action 'delete' needs every key"
            ), False
        dialect.stage(tconn, keys, out.rows, seq, False)
        seq += len(out.rows)
    warning = None
    if example is not None:
        warning = (
            f"delete detection: {untranslated} source key(s) cannot be translated and protect no "
            f"target row, e.g. {example.source_key}: {example.reason}"
        )
    if seq == 0:
        scoped = scope_filter(target, dict(flow.deletes.scope))
        stmt = select(target.c[flow.key[0]]).limit(1)
        if scoped is not None:
            stmt = stmt.where(scoped)
        if tconn.execute(stmt).first() is not None:
            dialect.drop_staging(tconn, keys)
            return 0, "delete detection skipped: the source returned no keys while the target has rows", False
    deleted = dialect.delete_missing(
        tconn, target, keys, flow.key, dict(flow.deletes.scope), flow.deletes.action,
        flow.deletes.column, flow.deletes.value,
    )
    dialect.drop_staging(tconn, keys)
    if back:
        _restore(flow, source, tconn, dialect, target, crosswalks, types, run, now, parent_tables, read_as, back)
    return deleted, warning, True


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


def _restore(
    flow: Flow, source: TableSource, tconn: Connection, dialect: Dialect, target: Table,
    crosswalks: dict[str, Crosswalk], types: dict[str, ColumnType], run: ledger.RunRecord, now: datetime,
    parent_tables: dict[str, Table], columns: list[str], keys: list[tuple[Any, ...]],
) -> None:
    """Read again the source rows whose flagged target rows came back (re-inserted with an old
    cursor value, the window would never read them) and merge them as any run does: transform,
    parents and quarantine, then the merge, which writes the flow's own value of the flag."""
    targets = [c.target for c in flow.columns]
    staging = dialect.create_staging(tconn, target, targets + insert_only_columns(flow), f"{flow.flow}_restore")
    parents = ParentCheck(tconn, flow, parent_tables)
    seq = 0
    for frame in source.rows_with_keys(columns, keys, flow.load.chunk_size):
        seq, _ = _stage_frame(frame, flow, crosswalks, types, parents, dialect, tconn, staging, seq, False, run, now)
    restored = merge_rows(tconn, dialect, flow, staging, target, targets) if seq else 0
    dialect.drop_staging(tconn, staging)
    run.counts.rows_loaded += restored
    if restored:  # flagged by the source itself (a flow mapping its own is_deleted), nothing changes
        run.options["rows_restored"] = restored
        log.info("flow %s: %d row(s) back in the source restored on the target", flow.flow, restored)
