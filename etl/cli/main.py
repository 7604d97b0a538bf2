"""Command line: ``python -m etl check | run | watch | runs | quarantine | report | pools | demo``.

Exit codes: 0 done; 1 a run failed; 2 the configuration or a schema is wrong (fix, then rerun);
75 a transient failure (another run holds the lock, a database went away): retry later.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO, cast

from sqlalchemy.exc import OperationalError

from etl.cli.output import EXIT_CONFIG, EXIT_FAILED, EXIT_RETRY, SUMMARY_COLUMNS, format_table, summary_row
from etl.config import suites
from etl.config.crosswalks import load_crosswalks
from etl.config.flows import Project
from etl.config.paths import EXPECTATIONS_ENV, MAPPINGS_ENV, REPO_ROOT, configured_expectations, configured_mappings
from etl.config.project import load_project
from etl.core.errors import ConfigError, ConfigProblem, ConnectionNotFound, EtlError, SchemaDriftError, StepFailed
from etl.core.printable import EscapingStream
from etl.core.watermark import parse_since
from etl.sync import ledger, quarantine, validation
from etl.sync.connections import CONNECTIONS_FILE_ENV, DEFAULT_CONNECTIONS_FILE, Connections, masked
from etl.sync.pipeline_tables import ensure_pipeline_tables
from etl.sync.runner import RunOptions, RunResult, run_flow

if TYPE_CHECKING:
    from etl.reporting.report import Window


def _project(args: argparse.Namespace) -> Project:
    return load_project(args.mappings, args.expectations)


def cmd_check(args: argparse.Namespace) -> int:
    project = _project(args)
    crosswalks = load_crosswalks(Path(args.mappings) / "crosswalks")
    problems, notes = _check_regexes(project)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    if problems:
        raise ConfigError(problems)
    lookups = sum(1 for c in crosswalks.values() if c.lookup_spec is not None)
    read_later = f" ({lookups} lookups, read from their databases when a flow runs)" if lookups else ""
    print(f"OK: {len(project.flows)} flows, {len(crosswalks)} crosswalks{read_later}, "
          f"{len(project.reconciliations)} reconciliations in {args.mappings}")
    for flow in project.flows.values():
        print(f"  {flow.flow:<20} {flow.direction:<11} {project.schedule_of(flow) or '-':<14} {flow.source.label} -> {flow.target.table}")
    return 0


def _check_regexes(project: Project) -> tuple[list[ConfigProblem], list[str]]:
    """Compile every suite regex in the database that will run it: the flow's target (one
    SELECT each, nothing written; a SQLite target's regexes with Python's re, as SQLite runs
    them). A target not defined or not reachable gets a note, and its regexes Python's re."""
    problems: list[ConfigProblem] = []
    notes: list[str] = []
    unreached: dict[str, str] = {}
    now = datetime.now(UTC).replace(tzinfo=None)
    with Connections() as connections:
        for flow in project.flows.values():
            if flow.expectations is None:
                continue
            suite = suites.load_suite(Path(project.expectations_dir), flow)
            params = validation.parameters(flow.expectations, now)
            if not any(e.type in validation.REGEX_RULES for e in suite.expectations):
                continue
            try:
                if connections.url(flow.target.connection).get_backend_name() == "sqlite":
                    problems += validation.regex_problems(None, suite, params)
                    continue
                with connections.engine(flow.target.connection).connect() as conn, conn.begin():
                    problems += validation.regex_problems(conn, suite, params)
                    conn.rollback()
            except (ConnectionNotFound, OperationalError) as exc:
                unreached[flow.target.connection] = type(exc).__name__
                problems += validation.regex_problems(None, suite, params)
    if unreached:
        notes.append(
            "suite regexes for " + ", ".join(f"{c} ({why})" for c, why in sorted(unreached.items()))
            + " compiled with Python's re, not in their database; a run compiles them there before validating"
        )
    return list(dict.fromkeys(problems)), notes


def _options(args: argparse.Namespace) -> RunOptions:
    plants = [p.strip() for p in args.plants.split(",") if p.strip()] if args.plants else None
    return RunOptions(
        full_refresh=args.full_refresh,
        since=parse_since(args.since) if args.since else None,
        dry_run=args.dry_run,
        plants=plants,
        keyset=args.keyset,
    )


def run_flows(
    project: Project, names: list[str], options: RunOptions, connections: Connections,
) -> tuple[list[RunResult], list[StepFailed]]:
    """Run flows in order; a failed flow does not stop the flows that do not depend on it."""
    crosswalks = load_crosswalks(Path(project.mappings_dir) / "crosswalks")
    results: list[RunResult] = []
    failures: list[StepFailed] = []
    failed: set[str] = set()
    for name in names:
        flow = project.flow(name)
        blocked = [d for d in flow.depends_on if d in failed]
        if blocked:
            failed.add(name)
            print(f"skipped {name}: depends on failed flow(s) {', '.join(blocked)}", file=sys.stderr)
            continue
        try:
            result = run_flow(project, name, connections, options, crosswalks=crosswalks)
        except StepFailed as exc:
            failed.add(name)
            failures.append(exc)
            print(f"FAILED {exc}", file=sys.stderr)
            continue
        results.append(result)
        for warning in result.warnings:
            print(f"warning: {name}: {warning}", file=sys.stderr)
    return results, failures


def cmd_run(args: argparse.Namespace) -> int:
    project = _project(args)
    names = list(project.flows) if args.flow == "all" else [project.flow(args.flow).flow]
    options = _options(args)
    with Connections() as connections:
        # A missing connection is a setup problem: say it once, before any flow starts.
        used = {c for n in names for c in (project.flow(n).source.connection, project.flow(n).target.connection)}
        for conn_id in sorted(c for c in used if c is not None):
            connections.url(conn_id)
        results, failures = run_flows(project, names, options, connections)
    if results:
        print(format_table([summary_row(r) for r in results], SUMMARY_COLUMNS))
    if failures:
        if all(f.retryable for f in failures):
            return EXIT_RETRY
        if any(isinstance(f.cause, (ConfigError, SchemaDriftError)) for f in failures):
            return EXIT_CONFIG
        return EXIT_FAILED
    return 0


def cmd_watch(args: argparse.Namespace) -> int:
    """Answer the flows' events until SIGTERM or Ctrl-C (etl.events.watch)."""
    import signal
    import threading

    from etl.events.watch import first_sweep, watch

    project = _project(args)
    names = list(dict.fromkeys(project.flow(n).flow for n in args.flows))
    stop = threading.Event()

    def say(line: str) -> None:
        print(line, flush=True)

    def on_signal(signum: int, _frame: Any) -> None:
        say(f"stopping on {signal.Signals(signum).name}: the run under way finishes first")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with Connections() as connections:
        now = datetime.now(UTC).replace(tzinfo=None)
        for name in names:
            flow = project.flow(name)
            on = flow.trigger.on.kind if flow.trigger is not None else "nothing"
            sweep = first_sweep(project, flow, now) if flow.trigger is not None else None
            say(f"watching flow {name}: {on} on {flow.trigger_connection() or '-'}, sweep "
                + (f"in {int(sweep.total_seconds())}s ({project.schedule_of(flow)})" if sweep is not None else "never (no schedule)"))
        watches = watch(project, names, connections, stop, say)
    failed = sum(1 for w in watches for a in w.answered if a.failure is not None)
    say(f"stopped: {sum(len(w.answered) for w in watches)} run(s), {failed} failed")
    return 0


def _target_connections(project: Project, flow: str | None) -> list[str]:
    flows = [project.flow(flow)] if flow else list(project.flows.values())
    return sorted({f.target.connection for f in flows})


def cmd_runs(args: argparse.Namespace) -> int:
    project = _project(args)
    rows: list[dict[str, Any]] = []
    with Connections() as connections:
        for conn_id in _target_connections(project, args.flow):
            with connections.engine(conn_id).begin() as conn:
                ensure_pipeline_tables(conn)
                rows += ledger.recent_runs(conn, args.flow, args.limit)
    rows.sort(key=lambda r: r["started_at"], reverse=True)
    rows = rows[: args.limit]
    for r in rows:
        r["started"] = r["started_at"].strftime("%Y-%m-%d %H:%M:%S")
        r["seconds"] = float(r["duration_s"]) if r["duration_s"] is not None else None
        r["window"] = f"{r['window_from'] or '…'} .. {r['window_to'] or '…'}" if (r["window_from"] or r["window_to"]) else ""
    columns = [
        ("started (UTC)", "started"), ("flow", "flow"), ("outcome", "outcome"), ("read", "rows_read"),
        ("loaded", "rows_loaded"), ("quarantined", "rows_quarantined"), ("released", "rows_released"),
        ("deleted", "rows_deleted"), ("seconds", "seconds"), ("window", "window"), ("error", "error"),
    ]
    print(format_table(rows, columns) if rows else "no runs recorded yet")
    return 0


def cmd_quarantine(args: argparse.Namespace) -> int:
    project = _project(args)
    if args.purge:
        from etl.sync.retention import purge_released_quarantine, retention_period

        with Connections() as connections:
            for conn_id, purged in purge_released_quarantine(project, connections).items():
                print(f"{conn_id}: purged {purged} released quarantine row(s) older than {retention_period(project).days} days")
        return 0
    rows: list[dict[str, Any]] = []
    total = 0
    with Connections() as connections:
        for conn_id in _target_connections(project, args.flow):
            with connections.engine(conn_id).begin() as conn:
                ensure_pipeline_tables(conn)
                rows += quarantine.list_waiting(conn, args.flow, args.limit)
                total += quarantine.backlog(conn, args.flow)
    if not rows:
        print("quarantine is empty" + (f" for flow {args.flow}" if args.flow else ""))
        return 0
    for r in rows:
        r["since"] = r["first_seen_at"].strftime("%Y-%m-%d %H:%M")
    columns = [
        ("flow", "flow"), ("source key", "source_key"), ("attempts", "attempts"), ("waiting since (UTC)", "since"),
        ("reason", "reason"),
    ]
    print(format_table(rows[: args.limit], columns))
    print(f"{total} row(s) waiting" + (f", first {args.limit} shown" if total > args.limit else ""))
    return 0


def report_window(since: str | None, days: float | None, now: datetime) -> Window:
    """The report's window: from ``since`` (ISO, UTC unless it has an offset) or ``days`` back,
    else the last 24 hours, up to ``now``."""
    from etl.reporting.report import Window

    if since:
        start = datetime.fromisoformat(since)
        if start.tzinfo is not None:
            start = start.astimezone(UTC).replace(tzinfo=None)
    else:
        start = now - timedelta(days=days if days is not None else 1)
    if start >= now:
        raise ValueError(f"the report window starts at {start:%Y-%m-%d %H:%M}, not before now")
    return Window(start, now)


def cmd_report(args: argparse.Namespace) -> int:
    from etl.reporting.mail import send_html
    from etl.reporting.report import build_report, generated_now

    project = _project(args)
    now = generated_now()
    window = report_window(args.since, args.days, now)
    with Connections() as connections:
        if args.data_docs:
            from etl.reporting.data_docs import build_data_docs, data_docs_folder

            site = data_docs_folder(project)
            if site is None:
                print("error: --data-docs needs report.data_docs in mappings/defaults.yaml", file=sys.stderr)
                return EXIT_CONFIG
            docs = build_data_docs(project, connections, site, now)
            outside = sorted(f for f, ok in docs.success.items() if not ok)
            failed = f"; flows with a failed expectation, warnings included: {', '.join(outside)}" if outside else ""
            print(f"Data Docs written to {docs.index}{failed}")
        written = build_report(project, connections, Path(args.out), window, generated_at=now)
    print(written.subject)
    print(f"report written to {written.path}")
    if args.send:
        try:
            sent = send_html(project.defaults.report, written.subject, written.mail_html, text=written.text)
        except Exception as exc:  # the provider's own errors: connection missing, server refused
            print(f"error: the report was written but not sent: {type(exc).__name__}: {exc}", file=sys.stderr)
            return EXIT_FAILED
        if sent:
            print(f"sent to {', '.join(sent)}")
        else:
            print(f"not sent: no recipients under report.recipients in {Path(args.mappings) / 'defaults.yaml'}",
                  file=sys.stderr)
    return 0


def cmd_demo_init(args: argparse.Namespace) -> int:
    from demo.setup import init_demo

    urls = init_demo(
        erp_url=args.erp_url, mes_url=args.mes_url, warehouse_url=args.warehouse_url,
        orders=args.orders, seed=args.seed, connections_file=Path(args.connections_file), as_of=args.as_of,
    )
    for conn_id, url in urls.items():
        print(f"{conn_id:<14} {masked(url)}")
    print(f"connections written to {args.connections_file} (set ETL_CONNECTIONS_FILE to use another file)")
    return 0


def cmd_demo_airflow(args: argparse.Namespace) -> int:
    from demo.airflow_runs import prepare, run_all_through_airflow

    project = _project(args)
    prepare(Path(args.airflow_home))
    rows, failed = run_all_through_airflow(project)
    if rows:
        print(format_table(rows, SUMMARY_COLUMNS))
    return EXIT_FAILED if failed else 0


def cmd_pools(args: argparse.Namespace) -> int:
    from etl.airflow.dag_factory import DEFAULT_POOL_SLOTS, source_pools

    print(json.dumps(source_pools(_project(args), args.slots or DEFAULT_POOL_SLOTS), indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="erp-mes-sync", description="erp-mes-sync: ERP <-> MES sync pipeline (also python -m etl)")
    parser.add_argument("--mappings", default=str(configured_mappings()),
                        help=f"folder with flows/ and crosswalks/ (default: ${MAPPINGS_ENV}, else %(default)s)")
    parser.add_argument("--expectations", default=configured_expectations(),
                        help=f"folder with the flows' suites (default: ${EXPECTATIONS_ENV}, else expectations/ beside --mappings)")
    parser.add_argument("--connections", default=None,
                        help=f"connections file, JSON of connection ids and URLs (default: ${CONNECTIONS_FILE_ENV}, "
                             f"else {DEFAULT_CONNECTIONS_FILE})")
    parser.add_argument("-v", "--verbose", action="store_true", help="log each step")
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("check", help="validate every file under mappings/").set_defaults(func=cmd_check)

    run = sub.add_parser("run", help="run one flow, or all flows in dependency order")
    run.add_argument("flow", help="flow name, or 'all'")
    run.add_argument("--full-refresh", action="store_true", help="read the whole source, ignoring the watermark")
    run.add_argument("--since", help="read from this source timestamp (ISO), ignoring the watermark")
    run.add_argument("--dry-run", action="store_true", help="do everything, then roll back; report what would change")
    run.add_argument("--plants", help="comma-separated ERP plant codes to limit the run to")
    keyset = run.add_mutually_exclusive_group()
    keyset.add_argument("--keyset", dest="keyset", action="store_true", default=None,
                        help="compare source and target keys for deletions now")
    keyset.add_argument("--no-keyset", dest="keyset", action="store_false", help="skip the key comparison even if due")
    run.set_defaults(func=cmd_run)

    watch = sub.add_parser("watch", help="run flows whenever their trigger (NOTIFY, MQTT) fires, until SIGTERM")
    watch.add_argument("flows", nargs="+", metavar="FLOW", help="flows with a trigger: block")
    watch.set_defaults(func=cmd_watch)

    runs = sub.add_parser("runs", help="show the run ledger")
    runs.add_argument("--flow")
    runs.add_argument("--limit", type=int, default=30)
    runs.set_defaults(func=cmd_runs)

    quar = sub.add_parser("quarantine", help="list rows waiting in quarantine")
    quar.add_argument("flow", nargs="?")
    quar.add_argument("--limit", type=int, default=50)
    quar.add_argument("--purge", action="store_true",
                      help="delete released entries older than quarantine_retention_days (mappings/defaults.yaml)")
    quar.set_defaults(func=cmd_quarantine)

    report = sub.add_parser("report", help="write the data-quality report (HTML), optionally mail it")
    report.add_argument("--out", default=str(REPO_ROOT / ".demo" / "data_quality_report.html"),
                        help="where to write it (default: %(default)s)")
    window = report.add_mutually_exclusive_group()
    window.add_argument("--since", help="window start, ISO timestamp in UTC (default: 24 hours ago)")
    window.add_argument("--days", type=float, help="window: this many days back from now")
    report.add_argument("--data-docs", action="store_true",
                        help="first run every flow's suite through Great Expectations on its target table and build its "
                             "Data Docs (report.data_docs), which the report links")
    report.add_argument("--send", action="store_true",
                        help="mail it to report.recipients (mappings/defaults.yaml) through the SMTP connection")
    report.set_defaults(func=cmd_report)

    demo = sub.add_parser("demo", help="the demo factory")
    demo_sub = demo.add_subparsers(dest="demo_command", required=True)
    init = demo_sub.add_parser("init", help="build demo ERP, MES and warehouse databases and fill them")
    demo_dir = REPO_ROOT / ".demo"
    init.add_argument("--erp-url", default=f"sqlite:///{demo_dir / 'erp.db'}")
    init.add_argument("--mes-url", default=f"sqlite:///{demo_dir / 'mes.db'}")
    init.add_argument("--warehouse-url", default=f"sqlite:///{demo_dir / 'warehouse.db'}")
    init.add_argument("--orders", type=int, default=300, help="production orders to generate (default: %(default)s)")
    init.add_argument("--seed", type=int, default=42)
    init.add_argument("--as-of", type=datetime.fromisoformat, default=None, metavar="YYYY-MM-DDTHH:MM",
                      help="the factory's 'now', plant local time (default: the start of today)")
    init.add_argument("--connections-file", default=str(demo_dir / "connections.json"))
    init.set_defaults(func=cmd_demo_init)
    through_airflow = demo_sub.add_parser("airflow", help="run every flow once through Airflow (dag.test), print the summary")
    through_airflow.add_argument("--airflow-home", default=str(demo_dir / "airflow"),
                                 help="Airflow's home and SQLite metadata (default: %(default)s)")
    through_airflow.set_defaults(func=cmd_demo_airflow)

    pools = sub.add_parser("pools", help="the Airflow pools the DAGs use, as JSON for `airflow pools import`")
    pools.add_argument("--slots", type=int, help="concurrent runs reading each source database (default: 2)")
    pools.set_defaults(func=cmd_pools)

    from etl.cli.warehouse import add_commands as add_warehouse_commands  # it imports this module

    add_warehouse_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; everything it prints has its control characters escaped."""
    stdout, stderr = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = cast(TextIO, EscapingStream(stdout)), cast(TextIO, EscapingStream(stderr))
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = stdout, stderr


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    if args.connections:
        # Connections() reads the file the environment names, here and in every step it runs.
        os.environ[CONNECTIONS_FILE_ENV] = args.connections
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except (ConnectionNotFound, SchemaDriftError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except OperationalError as exc:
        print(f"error: database unavailable: {str(exc.orig).strip().splitlines()[0]}", file=sys.stderr)
        return EXIT_RETRY
    except (EtlError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
