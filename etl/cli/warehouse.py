"""Command line of the warehouse: ``python -m etl warehouse build | refresh`` and
``python -m etl dashboard``. Registered by etl.cli; exit codes as there."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from etl.cli.output import EXIT_CONFIG, EXIT_FAILED, EXIT_RETRY, SUMMARY_COLUMNS, format_table, summary_row
from etl.config.project import load_project
from etl.core.errors import ConfigError, SchemaDriftError
from etl.reporting.dashboard import DEFAULT_DASHBOARD, write_dashboard
from etl.sync.connections import Connections, masked
from etl.warehouse.refresh import RefreshFailed, RefreshResult, build, refresh, warehouse_connection


def cmd_build(args: argparse.Namespace) -> int:
    project = load_project(args.mappings, args.expectations)
    conn_id = warehouse_connection(project)
    with Connections() as connections:
        report = build(connections.engine(conn_id))
        where = masked(connections.url(conn_id))
    print(f"warehouse {conn_id} ({where}): {len(report.tables)} tables, {len(report.views)} views, "
          f"{report.dates_added} days added to dim_date")
    return 0


def _print_refresh(outcome: RefreshResult) -> None:
    if outcome.results:
        print(format_table([summary_row(r) for r in outcome.results], SUMMARY_COLUMNS))
    history = outcome.history
    if history is not None:
        print(f"dim_material history: {history.opened} version(s) opened, {history.closed} closed, "
              f"{history.corrected} corrected, {history.overwritten} overwritten")
    for result in outcome.results:
        for warning in result.warnings:
            print(f"warning: {result.record.flow}: {warning}", file=sys.stderr)


def cmd_refresh(args: argparse.Namespace) -> int:
    project = load_project(args.mappings, args.expectations)
    with Connections() as connections:
        try:
            outcome = refresh(connections, project, full=args.full)
        except RefreshFailed as exc:
            _print_refresh(exc.outcome)
            for failure in exc.outcome.failures:
                print(f"FAILED {failure}", file=sys.stderr)
            print(f"error: {exc}", file=sys.stderr)
            if exc.retryable:
                return EXIT_RETRY
            if any(isinstance(f.cause, (ConfigError, SchemaDriftError)) for f in exc.outcome.failures):
                return EXIT_CONFIG
            return EXIT_FAILED
    _print_refresh(outcome)
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:

    project = load_project(args.mappings, args.expectations)
    with Connections() as connections:
        path = write_dashboard(connections.engine(warehouse_connection(project)), Path(args.out))
    print(f"dashboard written to {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``warehouse build``, ``warehouse refresh`` and ``dashboard`` to the CLI."""
    warehouse = sub.add_parser("warehouse", help="the reporting warehouse: schema, KPI views, refresh")
    commands = warehouse.add_subparsers(dest="warehouse_command", required=True)
    commands.add_parser(
        "build", help="create the warehouse tables where missing and (re)create the KPI views (idempotent)",
    ).set_defaults(func=cmd_build)
    run = commands.add_parser("refresh", help="run every warehouse flow, then the type-2 material history")
    run.add_argument("--full", action="store_true", help="rebuild the schema and views, read every source in full")
    run.set_defaults(func=cmd_refresh)

    dashboard = sub.add_parser("dashboard", help="write the static HTML dashboard from the KPI views")
    dashboard.add_argument("--out", default=str(DEFAULT_DASHBOARD), help="file to write (default: %(default)s)")
    dashboard.set_defaults(func=cmd_dashboard)
