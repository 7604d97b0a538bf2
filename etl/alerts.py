"""The alert mail when a sync task fails for good (after its retries), with what to do next.

``FailureAlert`` is the ``on_failure_callback`` of every ``sync_<flow>`` task. It sends through
the SMTP provider's hook (etl.mail), not its ``SmtpNotifier``: the notifier renders subject and
body as Jinja templates, and an error message may contain ``{{`` from the data. Nobody in
``report.recipients`` means no alert and no error. A mail that cannot be sent is logged and
never hides the task's own failure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

from etl.config import ReportSettings
from etl.errors import (
    ConfigError,
    ConnectionNotFound,
    ReconciliationFailed,
    SchemaDriftError,
    SourceUnavailable,
    StepFailed,
    ValidationFailed,
)
from etl.printable import get_logger

log = get_logger("etl.alerts")

#: What to do next, by the type of the error that ended the run (first match wins).
NEXT_STEPS: tuple[tuple[type[BaseException], str], ...] = (
    (ValidationFailed, "A critical expectation failed, so the batch was not loaded. Open the data-quality "
     "report (python -m etl report) and the quarantine (python -m etl quarantine FLOW) to see which rows "
     "and keys failed; fix the source data, or the suite under expectations/ if the rule is wrong; then "
     "rerun the DAG."),
    (ReconciliationFailed, "The run's counts or the target's key checksum disagree with the source, so "
     "nothing was committed. The data-quality report (python -m etl report) shows the run's reconciliation "
     "results; look for another writer on the target table, then rerun the DAG."),
    (SchemaDriftError, "A mapped table or column changed in the database (renamed or dropped). Fix the "
     "column mapping in the flow's YAML (python -m etl check validates it) or restore the column, then "
     "rerun the DAG."),
    (ConfigError, "The YAML or a crosswalk under mappings/ is invalid. Run python -m etl check, fix the "
     "file and key it names, then rerun the DAG."),
    (ConnectionNotFound, "A connection the flow names is not defined. Add it as an Airflow connection (or "
     "an AIRFLOW_CONN_* variable), then rerun the DAG."),
    (SourceUnavailable, "A database refused or dropped the connection and the automatic retries are used "
     "up. Check that the database is up and reachable from the workers; the next scheduled run retries."),
)
GENERIC_NEXT_STEP = ("Read the task log in the Airflow UI for the full error, fix the cause, then clear the "
                     "task to rerun it.")


def causes(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and everything it wraps: ``raise ... from``, implicit context, StepFailed.cause."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc] if exc is not None else []
    while todo:
        current = todo.pop(0)
        if current is None or any(current is s for s in seen):
            continue
        seen.append(current)
        todo += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return seen


def next_step(exc: BaseException | None) -> tuple[str, str]:
    """(error type name, what to do) for the most specific known error in the chain."""
    chain = causes(exc)
    for kind, advice in NEXT_STEPS:
        for cause in chain:
            if isinstance(cause, kind):
                return kind.__name__, advice
    return (type(exc).__name__ if exc is not None else "unknown error"), GENERIC_NEXT_STEP


def ledger_run_id(exc: BaseException | None) -> str | None:
    """The pipeline's own run id (the etl_ledger row) when a StepFailed is in the chain."""
    for cause in causes(exc):
        if isinstance(cause, StepFailed):
            return cause.run_id
    return None


@dataclass(frozen=True)
class Alert:
    subject: str
    html: str


def failure_alert(flow: str, error: BaseException | str | None, dag_run_id: str | None = None) -> Alert:
    """The alert for a failed sync of ``flow``: subject with the flow and error type, body with
    the error message, the run ids and the next step. Every value is escaped."""
    exc = error if isinstance(error, BaseException) else None
    message = str(error) if error is not None else "(no error message)"
    kind, advice = next_step(exc)
    pipeline_run = ledger_run_id(exc)
    rows = [("Flow", flow), ("Error type", kind), ("Error", message)]
    if dag_run_id:
        rows.append(("Airflow run", dag_run_id))
    if pipeline_run:
        rows.append(("Pipeline run (etl_ledger.run_id)", pipeline_run))
    table = "".join(
        f"<tr><th style='text-align:left;padding:2px 12px 2px 0;vertical-align:top'>{escape(k)}</th>"
        f"<td style='padding:2px 0;white-space:pre-wrap'>{escape(v)}</td></tr>" for k, v in rows
    )
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='font-family:sans-serif'>"
        f"<h2>Sync of flow {escape(flow)} failed</h2><table>{table}</table>"
        f"<h3>What to do next</h3><p>{escape(advice)}</p>"
        f"<p style='color:#666'>DAG sync_{escape(flow)} · erp-mes-sync</p></body></html>"
    )
    first = message.strip().splitlines()[0] if message.strip() else kind
    short = first if len(first) <= 120 else first[:117] + "..."
    return Alert(f"[erp-mes-sync] FAILED: sync_{flow} — {kind}: {short}", html)


class FailureAlert:
    """``on_failure_callback`` of a sync task: mails the alert to ``settings.recipients``."""

    def __init__(self, flow: str, settings: ReportSettings):
        self.flow = flow
        self.settings = settings

    def __call__(self, context: Mapping[str, Any]) -> None:
        if not self.settings.recipients:
            return
        from etl.mail import send_html

        alert = failure_alert(self.flow, context.get("exception"), _run_id(context))
        try:
            send_html(self.settings, alert.subject, alert.html)
        except Exception as exc:  # the task already failed: its failure must stay the news
            log.error("flow %s: the failure alert could not be sent (%s: %s)", self.flow, type(exc).__name__, exc)


def _run_id(context: Mapping[str, Any]) -> str | None:
    run_id = context.get("run_id")
    if run_id:
        return str(run_id)
    dag_run = context.get("dag_run")
    return str(getattr(dag_run, "run_id", "") or "") or None
