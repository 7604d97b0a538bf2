"""Airflow DAGs built from the flow YAML: one DAG per flow, one task per DAG.

Why a DAG per flow rather than one DAG per schedule group with a task per flow:
- a person triggers, pauses, reruns and reads the history of one flow, with its own trigger
  form (full_refresh, since, dry_run, plants), without touching its neighbours;
- ``max_active_runs=1`` per DAG matches the runner's one-run-per-flow lock, so a slow nightly
  BOM sync never holds back the 15-minute shop-floor feedback;
- a flow's own ``schedule:`` in its YAML overrides the group default without splitting a DAG.
What a group DAG would add, ordering by ``depends_on``, the pipeline already guarantees on its
own: a row whose parent has not arrived waits in quarantine and loads in a later run. So
``depends_on`` orders ``python -m etl run all`` and the demo, not the schedules.

Every task reads its source through a pool named after the source connection
(``erp_db_pool``, ``mes_db_pool``), which caps how many syncs hit one production database at
once; the pools must exist before the scheduler runs the tasks (``make airflow`` creates them,
see ``source_pools``). A task retries with exponential backoff only for transient failures (a
database went away, a deadlock, another run holds the lock); configuration, schema and data
errors fail at once. A run that changed its target table adds an event to the table's Asset
(``x-erpmes://mes_db/work_order``) through the task's outlet alias, so the warehouse DAG runs
after changes only; each task returns only the run's counts through XCom, never rows: any
executor can run it. Unknown trigger parameters, which Airflow accepts, fail the task at once. When a task
fails for good, its ``on_failure_callback`` mails an alert with the error and the next step to
``report.recipients`` (etl.reporting.alerts); ``data_quality_report`` mails the daily report at 06:00.

A flow with a ``trigger:`` block is also scheduled on an asset whose watcher runs
etl.airflow.triggers.FlowEventTrigger in the triggerer (its cron schedule, if any, stays beside
it as the sweep). Its task runs the flow, then again while the last pass loaded rows (at most
DRAIN_PASSES times): Airflow holds back asset events that arrive while the DAG is at
max_active_runs and may strand them until the next event (apache/airflow#56050), so the rows
those events announced are read by the run that is already going, and a held-back event that
does wake a run later finds nothing left to load.

Nothing here touches a database at parse time: building the DAGs only reads the YAML.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.python import PythonOperator
from airflow.sdk import DAG, Asset, AssetAlias, AssetAny, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable, Param
from airflow.sdk.exceptions import AirflowFailException

from etl.config.flows import ColumnSpec, Flow, Project
from etl.config.paths import configured_expectations, configured_mappings
from etl.config.project import load_project
from etl.core.errors import ParameterProblem, TriggerParametersInvalid
from etl.core.printable import get_logger
from etl.reporting.alerts import FailureAlert

if TYPE_CHECKING:
    from etl.sync.runner import RunOptions, RunResult

log = get_logger("etl.airflow.dag_factory")

DAG_ID_PREFIX = "sync_"
TASK_ID = "sync"
#: Tag on every DAG of this project, to filter them in a shared Airflow.
PROJECT_TAG = "erp_mes_sync"
#: Concurrent syncs reading one source database, unless a plant sets its pools otherwise.
DEFAULT_POOL_SLOTS = 2
ASSET_SCHEME = "x-erpmes"

# A timeout catches a hung database call, not a long first load: generous for the slow groups.
EXECUTION_TIMEOUTS = {
    "master_data": timedelta(hours=3),
    "erp_to_mes": timedelta(hours=1),
    "mes_to_erp": timedelta(minutes=30),
    "warehouse": timedelta(hours=2),
}
RETRIES = 4
RETRY_DELAY = timedelta(minutes=1)
RETRY_BACKOFF = 2.0
MAX_RETRY_DELAY = timedelta(minutes=30)
# A fixed date in the past: with catchup off, only the next interval runs.
START_DATE = datetime(2026, 1, 1)

#: Passes of an event-driven task at most: the flow runs again while its last pass loaded rows.
DRAIN_PASSES = 3

PLANT_CODE = r"^[0-9A-Za-z]{1,10}$"
# pattern makes the check unconditional. `format` still gives the UI its date-time picker.
ISO_TIMESTAMP = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?)?(Z|[+-]\d{2}:?\d{2})?$"


def dag_id_of(flow_name: str) -> str:
    """The DAG id of a flow: ``sync_<flow>``."""
    return f"{DAG_ID_PREFIX}{flow_name}"


def pool_of(flow: Flow) -> str:
    """The pool a flow's task runs in: one per source connection, e.g. ``erp_db_pool`` (a source
    without a connection: one per kind, e.g. ``files_pool``)."""
    return f"{flow.source.connection or flow.source.kind}_pool"


def source_pools(project: Project, slots: int = DEFAULT_POOL_SLOTS) -> dict[str, dict[str, Any]]:
    """Every pool the DAGs use, in the JSON shape ``airflow pools import`` reads."""
    return {
        pool_of(flow): {
            "slots": slots,
            "description": f"concurrent erp-mes-sync runs reading {flow.source.connection or flow.source.kind}",
            "include_deferred": False,
        }
        for flow in project.flows.values()
    }


def table_asset(connection: str, table: str) -> Asset:
    """The Asset of a table the pipeline writes; consumers schedule on the same call.

    The ``x-`` scheme tells Airflow the URI carries no semantics it should check: the
    connection id stands where a host would, so the URI holds no server name or password.
    """
    return Asset(name=f"{connection}.{table}", uri=f"{ASSET_SCHEME}://{connection}/{table}")


def target_asset(flow: Flow) -> Asset:
    """The Asset of the table a flow writes."""
    return table_asset(flow.target.connection, flow.target.table)


def changes_alias(flow: Flow) -> AssetAlias:
    """The task's outlet: an alias through which the task adds an event to ``target_asset`` only
    when the run changed the table. A plain Asset outlet would get an event on every success,
    dry runs and runs that loaded nothing included, and wake every consumer each time."""
    return AssetAlias(name=f"{target_asset(flow).name}.changes")


def event_asset(flow: Flow) -> Asset | None:
    """The asset an event-driven flow's DAG is scheduled on, watched by the flow's trigger; None
    for a flow without ``trigger:``. Its URI names the connection and the channel or topic."""
    connection = flow.trigger_connection()
    if flow.trigger is None or connection is None:
        return None
    from etl.airflow.triggers import FlowEventTrigger  # the listeners' drivers: only for such flows

    on = flow.trigger.on
    if on.postgres_notify is not None:
        trigger = FlowEventTrigger(flow.flow, on.kind, connection, on.postgres_notify.channel)
    else:
        assert on.mqtt is not None
        trigger = FlowEventTrigger(flow.flow, on.kind, connection, on.mqtt.topic, on.mqtt.qos, on.mqtt.client_id)
    return Asset(
        name=f"{flow.flow}.events", uri=f"{ASSET_SCHEME}://{connection}/{flow.flow}/events",
        watchers=[AssetWatcher(name=f"{flow.flow}_events", trigger=trigger)],
    )


def dag_schedule(project: Project, flow: Flow) -> Any:
    """The DAG's schedule: the flow's cron schedule, its event asset, or both (either wakes it)."""
    schedule = project.schedule_of(flow)
    asset = event_asset(flow)
    if asset is None:
        return schedule
    if schedule is None:
        return asset
    return AssetOrTimeSchedule(timetable=CronTriggerTimetable(schedule, timezone="UTC"), assets=asset)


def tags_of(flow: Flow) -> list[str]:
    """The flow's direction, ``master_data`` if it is master data, its own tags, the project's."""
    return sorted({flow.direction, *flow.tags, PROJECT_TAG})


#: Each run parameter's accepted form, in words: the form's help text and every refusal say it.
ACCEPTED_FORMS = {
    "full_refresh": "true or false",
    "since": "a timestamp on the source's clock, YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS], e.g. 2026-11-20 08:00 "
    "(ERP: plant local time, MES: UTC; an offset, if given, is dropped), or empty",
    "dry_run": "true or false",
    "plants": "a list of distinct ERP plant codes of 1 to 10 letters or digits, e.g. [\"1000\", \"2000\"]; "
    "empty means every plant",
}


def _in_refusals(name: str) -> dict[str, Any]:
    """The accepted form as a JSON-schema comment: validators ignore it, but Airflow's refusal
    of a run (400) prints the failing (sub)schema, so the refusal says the form in words."""
    return {"$comment": f"{name} accepts {ACCEPTED_FORMS[name]}"}


def trigger_params() -> dict[str, Param]:
    """The trigger form: each value is checked against its JSON schema when a run is created.
    Each description ends with the accepted form; no field is marked required (none is)."""
    return {
        "full_refresh": Param(
            False, type="boolean", title="Full refresh",
            description="Read the whole source again, ignoring the watermark. "
            f"Accepts {ACCEPTED_FORMS['full_refresh']}.",
        ),
        # No `format: date-time`: the UI's picker for it is labelled UTC, but the value is read
        # on the source's clock. The pattern checks the form whatever jsonschema has installed.
        "since": Param(
            None, type=["null", "string"], pattern=ISO_TIMESTAMP, title="Since (source's clock)",
            description="Read from this source timestamp, ignoring the watermark. "
            f"Accepts {ACCEPTED_FORMS['since']}.",
            **_in_refusals("since"),
        ),
        "dry_run": Param(
            False, type="boolean", title="Dry run",
            description="Do everything, then roll back; the ledger says what would have changed. "
            f"Accepts {ACCEPTED_FORMS['dry_run']}.",
        ),
        "plants": Param(
            [], type=["array", "null"], items={"type": "string", "pattern": PLANT_CODE, **_in_refusals("plants")},
            uniqueItems=True, title="Plants", **_in_refusals("plants"),
            description=f"ERP plant codes to limit the run to, one per line. Accepts {ACCEPTED_FORMS['plants']}.",
        ),
    }


def trigger_problems(conf: Mapping[str, Any] | None) -> list[ParameterProblem]:
    """Every problem of a run's ``conf``, not just the first: unknown keys (with the nearest
    known one) and values outside their accepted form. ``[]`` when the conf is good."""
    import difflib

    from airflow.sdk.exceptions import ParamValidationError

    params = trigger_params()
    problems = []
    for key, value in (conf or {}).items():
        if key not in params:
            near = difflib.get_close_matches(key, list(params), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            problems.append(ParameterProblem(
                key, f"unknown parameter{hint} (the form takes {', '.join(params)})",
            ))
            continue
        try:
            params[key].resolve(value)
        except ParamValidationError:
            problems.append(ParameterProblem(key, f"got {json.dumps(value)}; accepts {ACCEPTED_FORMS[key]}"))
    return problems


def _markdown_cell(value: object) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _column_input(spec: ColumnSpec) -> str:
    if spec.source is not None:
        return f"`{spec.source}`"
    if spec.expr is not None:
        return f"expr `{spec.expr}`"
    return f"value `{spec.value!r}`"


def _column_steps(flow: Flow, spec: ColumnSpec) -> str:
    steps = []
    if spec.clean:
        steps.append("clean " + ", ".join(spec.clean))
    crosswalk = flow.crosswalk_side(spec)
    if crosswalk:
        steps.append(f"crosswalk {crosswalk[0]} → {crosswalk[1]}")
    if spec.convert_unit:
        inverse = " (divide)" if spec.convert_unit.inverse else ""
        steps.append(f"unit by `{spec.convert_unit.unit_column}`{inverse}")
    if spec.cast:
        steps.append(f"cast {spec.cast}")
    if spec.timezone:
        steps.append(f"time zone {spec.timezone.from_} → {spec.timezone.to}")
    if spec.default is not None:
        steps.append(f"default {spec.default!r}")
    if spec.required:
        steps.append("required")
    if spec.delta:
        steps.append(f"delta: posts the difference from the target's total per {', '.join(spec.delta.group_by)}")
    return "; ".join(steps)


def _load_option_lines(flow: Flow) -> list[str]:
    """Doc lines for the options that write into a product's own tables (docs/connecting-a-system.md,
    section "Writing into a product's own tables")."""
    out = []
    if flow.load.match == "natural_key":
        out.append("- **Matched on**: the natural key, without a unique index (load.match natural_key)")
    if flow.target.generated_key:
        out.append(f"- **Generated by the target**: `{flow.target.generated_key}`")
    number = flow.target.document_number
    if number:
        series = f"`{number.database_sequence}`" if number.database_sequence else (
            f"`{number.sequence.table}.{number.sequence.counter}`" if number.sequence else ""
        )
        out.append(f"- **Document number**: `{number.column}` = `{number.format}` from {series}, new rows only")
    if flow.lines:
        out.append(
            f"- **Lines**: `{flow.lines.source.table}` → `{flow.lines.target.table}` "
            f"(`{flow.lines.target.header_id_column}` = header `{flow.target.generated_key}`), "
            f"key {', '.join(f'`{k}`' for k in flow.lines.key)}; a failing line quarantines its document"
        )
    return out


def _duration_text(duration: timedelta) -> str:
    seconds = int(duration.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds and seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def _filter_text(where: Mapping[str, Any]) -> str:
    def listed(values: Any) -> str:
        return ", ".join(str(v) for v in values) if isinstance(values, list) else str(values)

    return "; ".join(f"`{col}` in {listed(values)}" for col, values in where.items())


def flow_doc(flow: Flow, schedule: str | None) -> str:
    """The DAG's documentation in Markdown: source, target, key, cursor, and the column mapping."""
    source = f"`{flow.source.connection}` · `{flow.source.table}`" if flow.source.kind == "table" else f"`{flow.source.label}`"
    if flow.source.where:
        source += f" where {_filter_text(flow.source.where)}"
    if flow.source.where_not:
        source += f" except {_filter_text(flow.source.where_not)}"
    if flow.source.plant_column:
        source += f" (plant column `{flow.source.plant_column}`)"
    lines = [
        f"### {flow.flow}",
        "",
        flow.description,
        "",
        f"- **Defined in**: `{flow.file}`",
        f"- **Direction**: {flow.direction}",
        f"- **Schedule**: `{schedule or 'manual only'}`",
        *([f"- **Woken by**: {flow.trigger.on.kind} on `{flow.trigger_connection()}` (the schedule is the sweep)"]
          if flow.trigger is not None else []),
        f"- **Source**: {source}",
        f"- **Target**: `{flow.target.connection}` · `{flow.target.table}` (load mode {flow.load.mode})",
        f"- **Key**: {', '.join(f'`{k}`' for k in flow.key)}",
    ]
    if flow.cursor:
        lines.append(
            f"- **Cursor**: `{flow.cursor.column}`, lookback {_duration_text(flow.cursor.lookback)}"
            + ("; rows the last run loaded are set aside when read again (a full refresh compares them)"
               if flow.skips_loaded else "")
        )
    lines += _load_option_lines(flow)
    if flow.parents:
        waits = ", ".join(f"`{p.column}` in `{p.table}.{p.key}`" for p in flow.parents)
        lines.append(f"- **Waits in quarantine until**: {waits}")
    if flow.deletes.detect != "none":
        lines.append(f"- **Deletes**: {flow.deletes.detect} compare, action {flow.deletes.action}")
    if flow.depends_on:
        lines.append(f"- **After**: {', '.join(flow.depends_on)}")
    lines += ["", "| target column | from | steps |", "|---|---|---|"]
    for spec in flow.columns:
        key = " (key)" if spec.target in flow.key else ""
        lines.append(
            f"| `{spec.target}`{key} | {_markdown_cell(_column_input(spec))} | {_markdown_cell(_column_steps(flow, spec))} |"
        )
    return "\n".join(lines)


def build_dag(project: Project, flow: Flow) -> DAG:
    """The DAG of one flow: schedule, tags, docs, trigger form, one pooled and retried task."""
    schedule = project.schedule_of(flow)
    with DAG(
        dag_id=dag_id_of(flow.flow),
        description=flow.description or None,
        doc_md=flow_doc(flow, schedule),
        schedule=dag_schedule(project, flow),
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,
        tags=tags_of(flow),
        params=trigger_params(),
        is_paused_upon_creation=project.paused_on_create(flow),
    ) as dag:
        PythonOperator(
            task_id=TASK_ID,
            python_callable=sync_flow,
            op_kwargs={"flow_name": flow.flow, "mappings_dir": project.mappings_dir},
            pool=pool_of(flow),
            retries=RETRIES,
            retry_delay=RETRY_DELAY,
            retry_exponential_backoff=RETRY_BACKOFF,
            max_retry_delay=MAX_RETRY_DELAY,
            execution_timeout=EXECUTION_TIMEOUTS.get(flow.schedule_group, timedelta(hours=1)),
            outlets=[changes_alias(flow)],
            # Called once the task has failed for good (retries used up), never on a retry.
            on_failure_callback=FailureAlert(flow.flow, project.defaults.report),
            doc_md=f"Runs flow `{flow.flow}` once (`python -m etl run {flow.flow}` does the same).",
        )
    return dag


def _load(mappings_dir: Path | str) -> Project:
    """The project as the DAGs and their tasks read it: the suites from ETL_EXPECTATIONS_DIR
    where the scheduler's and the workers' environment names it."""
    return load_project(mappings_dir, configured_expectations())


def build_dags(mappings_dir: Path | str | None = None) -> dict[str, DAG]:
    """Every sync flow's DAG, the warehouse DAGs and the data-quality report DAG, by DAG id.
    Reads the YAML only (``mappings_dir``, by default ETL_MAPPINGS_DIR or the clone's
    mappings/); raises ConfigError on a bad file. Warehouse flows run inside the warehouse DAGs,
    not on their own."""
    project = _load(mappings_dir if mappings_dir is not None else configured_mappings())
    dags = {
        dag_id_of(name): build_dag(project, flow)
        for name, flow in project.flows.items() if flow.direction != "warehouse"
    }
    if any(flow.direction == "warehouse" for flow in project.flows.values()):
        dags.update(build_warehouse_dags(project))
    dags[REPORT_DAG_ID] = build_report_dag(project)
    return dags


REPORT_DAG_ID = "data_quality_report"
REPORT_TASK_ID = "report"
REPORT_SCHEDULE = "0 6 * * *"
REPORT_PATH_ENV = "ETL_REPORT_PATH"


def build_report_dag(project: Project) -> DAG:
    """The daily data-quality report: written to a file, then mailed to ``report.recipients``."""
    settings = project.defaults.report
    to = ", ".join(settings.recipients) or "nobody (report.recipients is empty: the file only)"
    doc = (
        "### Data-quality report\n\nEvery morning: runs, quarantine, expectations, freshness and the business "
        f"reconciliations of every flow over the last 24 hours, written to `{REPORT_PATH_ENV}` (default "
        f"`.demo/data_quality_report.html`) and mailed to {to} through the Airflow connection "
        f"`{settings.smtp_connection}`. `python -m etl report --send` does the same."
    )
    with DAG(
        dag_id=REPORT_DAG_ID, doc_md=doc, schedule=REPORT_SCHEDULE, start_date=START_DATE, catchup=False,
        max_active_runs=1, tags=sorted({"data_quality", PROJECT_TAG}),
    ) as dag:
        PythonOperator(
            task_id=REPORT_TASK_ID, python_callable=send_data_quality_report,
            op_kwargs={"mappings_dir": project.mappings_dir},
            retries=2, retry_delay=timedelta(minutes=5), execution_timeout=timedelta(minutes=30),
        )
    return dag


def send_data_quality_report(mappings_dir: str) -> dict[str, Any]:
    """The report task: write the report of the last 24 hours and mail it; returns its path,
    subject and recipients (XCom). A mail that cannot be sent fails the task (and retries)."""
    import os

    from etl.reporting.mail import send_html
    from etl.reporting.report import DEFAULT_REPORT, build_report
    from etl.sync.connections import Connections

    project = _load(mappings_dir)
    with Connections() as connections:
        _refresh_data_docs(project, connections)
        written = build_report(project, connections, Path(os.environ.get(REPORT_PATH_ENV) or DEFAULT_REPORT))
    log.info("%s: report written to %s", written.subject, written.path)
    sent = send_html(project.defaults.report, written.subject, written.mail_html, text=written.text)
    if not sent:
        log.info("report not mailed: no recipients under report.recipients")
    return {"path": str(written.path), "subject": written.subject, "needs_action": written.needs_action, "sent_to": sent}


def _refresh_data_docs(project: Project, connections: Any) -> None:
    """Rebuild the GX Data Docs the report links; without them the report still goes out."""
    from etl.reporting.data_docs import build_data_docs, data_docs_folder
    from etl.reporting.report import generated_now

    site = data_docs_folder(project)
    if site is None:
        return
    try:
        docs = build_data_docs(project, connections, site, generated_now())
    except Exception:  # GX or a database: the report says less, but it still goes out
        log.exception("Great Expectations Data Docs could not be built; the report goes out without them")
        return
    log.info("Data Docs written to %s", docs.index)


WAREHOUSE_DAG_ID = "warehouse"
WAREHOUSE_REBUILD_DAG_ID = "warehouse_nightly_rebuild"
WAREHOUSE_REBUILD_SCHEDULE = "0 3 * * *"
DASHBOARD_PATH_ENV = "ETL_DASHBOARD_PATH"


def build_warehouse_dags(project: Project) -> dict[str, DAG]:
    """Two DAGs over the same tasks (refresh the warehouse, then write the dashboard):
    ``warehouse`` runs whenever a sync flow has updated its target table (any of their assets),
    ``warehouse_nightly_rebuild`` rebuilds the schema and rereads every source at 03:00."""
    sync_assets = [target_asset(f) for f in project.flows.values() if f.direction != "warehouse"]
    wh_flows = [f.flow for f in project.flows.values() if f.direction == "warehouse"]
    doc = (
        "### Reporting warehouse\n\nRuns the warehouse flows in dependency order "
        f"({', '.join(wh_flows)}), applies the material history (type 2), then writes the dashboard "
        f"(`{DASHBOARD_PATH_ENV}`, default `.demo/dashboard.html`). `python -m etl warehouse refresh` "
        "and `python -m etl dashboard` do the same."
    )
    dags = {}
    for dag_id, schedule, full in (
        (WAREHOUSE_DAG_ID, AssetAny(*sync_assets) if sync_assets else None, False),
        (WAREHOUSE_REBUILD_DAG_ID, WAREHOUSE_REBUILD_SCHEDULE, True),
    ):
        with DAG(
            dag_id=dag_id, doc_md=doc, schedule=schedule, start_date=START_DATE, catchup=False,
            max_active_runs=1, tags=sorted({"warehouse", PROJECT_TAG}),
            params={"full_rebuild": Param(full, type="boolean", title="Full rebuild",
                                          description="Rebuild the schema and views and reread every source.")},
        ) as dag:
            refresh = PythonOperator(
                task_id="refresh", python_callable=refresh_warehouse,
                op_kwargs={"mappings_dir": project.mappings_dir},
                retries=RETRIES, retry_delay=RETRY_DELAY, retry_exponential_backoff=RETRY_BACKOFF,
                max_retry_delay=MAX_RETRY_DELAY, execution_timeout=EXECUTION_TIMEOUTS["warehouse"],
                outlets=[table_asset(f.target.connection, f.target.table) for f in project.flows.values() if f.direction == "warehouse"],
            )
            dashboard = PythonOperator(
                task_id="dashboard", python_callable=write_dashboard_file,
                op_kwargs={"mappings_dir": project.mappings_dir}, execution_timeout=timedelta(minutes=10),
            )
            refresh >> dashboard
        dags[dag_id] = dag
    return dags


def refresh_warehouse(mappings_dir: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The warehouse task: refresh, return each flow's counts (XCom); transient failures retry."""
    from etl.sync.connections import Connections
    from etl.warehouse.refresh import RefreshFailed, refresh

    project = _load(mappings_dir)
    with Connections() as connections:
        try:
            outcome = refresh(connections, project, full=bool(params.get("full_rebuild")))
        except RefreshFailed as exc:
            log.error("%s", exc)
            if not exc.retryable:
                raise AirflowFailException(str(exc)) from exc
            raise
    return [{"flow": r.record.flow, **run_summary(r)} for r in outcome.results]


def write_dashboard_file(mappings_dir: str) -> str:
    """The dashboard task: write the static HTML page from the KPI views; returns its path."""
    import os

    from etl.reporting.dashboard import DEFAULT_DASHBOARD, write_dashboard
    from etl.sync.connections import Connections
    from etl.warehouse.refresh import warehouse_connection

    project = _load(mappings_dir)
    with Connections() as connections:
        path = write_dashboard(
            connections.engine(warehouse_connection(project)),
            Path(os.environ.get(DASHBOARD_PATH_ENV) or DEFAULT_DASHBOARD),
        )
    log.info("dashboard written to %s", path)
    return str(path)


def run_options(params: Mapping[str, Any]) -> RunOptions:
    """The runner's options from a run's validated params (the trigger form)."""
    # The runner pulls in SQLAlchemy and the dialects: imported when a task runs, not at parse.
    from etl.core.watermark import parse_since
    from etl.sync.runner import RunOptions

    since = parse_since(params["since"]) if params.get("since") else None
    return RunOptions(
        full_refresh=bool(params.get("full_refresh")),
        # The form shows the source's wall clock; an offset a date picker adds is not meant.
        since=since.replace(tzinfo=None) if since else None,
        dry_run=bool(params.get("dry_run")),
        plants=list(params.get("plants") or []) or None,
    )


def woken_options(options: RunOptions, triggering_asset_events: Any) -> RunOptions:
    """``options`` with what woke the run, from the asset events of the flow's trigger that
    started it (their ``payload``: kind, count, first arrival); unchanged for any other run."""
    from dataclasses import replace

    payloads = [
        event.extra["payload"]
        for events in (dict(triggering_asset_events or {})).values() for event in events
        if isinstance(getattr(event, "extra", None), dict) and isinstance(event.extra.get("payload"), dict)
    ]
    if not payloads:
        return options
    firsts = [datetime.fromisoformat(p["event_at"]) for p in payloads if p.get("event_at")]
    kinds = sorted({str(p.get("woken_by")) for p in payloads})
    return replace(
        options, woken_by=kinds[-1] if len(kinds) == 1 else "+".join(kinds),
        events=sum(int(p.get("events") or 0) for p in payloads), event_at=min(firsts) if firsts else None,
    )


def changed_target(summary: Mapping[str, Any], dry_run: bool) -> bool:
    """Whether a run changed its target table: rows loaded or deleted, and not a dry run."""
    return not dry_run and (summary["rows_loaded"] > 0 or summary["rows_deleted"] > 0)


def sync_flow(
    flow_name: str,
    mappings_dir: str,
    params: Mapping[str, Any],
    dag_run: Any = None,
    outlet_events: Any = None,
    triggering_asset_events: Any = None,
) -> dict[str, Any]:
    """The task: run one flow with the trigger's parameters; return its counts for XCom.

    Returns ``{"run_id", "outcome", "seconds", <ledger counts>}``, never rows. Raises
    AirflowFailException (no retry) for errors a retry cannot fix, bad trigger parameters
    included (recorded in the ledger as a failed run), and re-raises transient ones (StepFailed
    with ``retryable``) so Airflow retries them with backoff. Adds an event to the target's
    asset only when the run changed the table.
    """
    from dataclasses import replace

    from etl.core.errors import ConfigError, StepFailed
    from etl.sync.connections import Connections
    from etl.sync.runner import refuse_run, run_flow

    try:
        project = _load(mappings_dir)
        flow = project.flow(flow_name)
    except ConfigError as exc:
        # The YAML changed since the DAG was parsed.
        raise AirflowFailException(f"flow {flow_name!r}: {exc}") from exc
    conf = dict(getattr(dag_run, "conf", None) or {})
    problems = trigger_problems(conf)
    if not problems:
        try:
            options = run_options(params)
        except ValueError as exc:  # a value that passed the form but not the parser
            problems = [ParameterProblem("since", f"{exc}; accepts {ACCEPTED_FORMS['since']}")]
    if problems:
        with Connections() as connections:
            refused = refuse_run(project, flow.flow, connections, conf, TriggerParametersInvalid(flow.flow, problems))
        log.error("%s (not retried: trigger the DAG again with good parameters)", refused.cause)
        raise AirflowFailException(str(refused.cause)) from refused
    options = woken_options(options, triggering_asset_events)
    log.info("flow %s (%s): %s", flow.flow, flow.file, options.as_dict())
    with Connections() as connections:
        try:
            results = [run_flow(project, flow.flow, connections, options)]
            # Rows committed during an event-driven run are read now, not when a held-back
            # asset event gets round to it (module docstring).
            while flow.trigger is not None and results[-1].record.counts.rows_loaded and len(results) < DRAIN_PASSES:
                drain = replace(options, woken_by="drain", events=0, event_at=None)
                results.append(run_flow(project, flow.flow, connections, drain))
        except StepFailed as exc:
            message = f"{flow.file}: {exc}"
            if not exc.retryable:
                log.error("%s (not retried: fix the cause, then rerun)", message)
                raise AirflowFailException(message) from exc
            log.error("%s (transient: Airflow retries)", message)
            raise
        except ConfigError as exc:
            raise AirflowFailException(f"flow {flow.flow!r}: {exc}") from exc
    result = results[0]
    for warning in result.warnings:
        log.warning("flow %s: %s", flow.flow, warning)
    summary = run_summary(result)
    if len(results) > 1:
        summary["drain_runs"] = [run_summary(r) for r in results[1:]]
        for counted in ("rows_loaded", "rows_deleted"):
            summary[counted] = sum(getattr(r.record.counts, counted) for r in results)
    if outlet_events is not None and changed_target(summary, options.dry_run):
        outlet_events[changes_alias(flow)].add(target_asset(flow), extra={
            "flow": flow.flow, "run_id": summary["run_id"], "rows_loaded": summary["rows_loaded"],
            "rows_deleted": summary["rows_deleted"],
        })
    return summary


def run_summary(result: RunResult) -> dict[str, Any]:
    """The small, JSON-able record of a run that goes to XCom: run id, outcome, counts."""
    record = result.record
    return {
        "run_id": record.run_id,
        "outcome": record.outcome,
        "seconds": round(record.duration_s or 0.0, 3),
        **vars(record.counts),
    }
