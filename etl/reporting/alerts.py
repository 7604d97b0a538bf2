"""The alert mail when a sync task fails for good (after its retries), with what to do next.

``FailureAlert`` is the ``on_failure_callback`` of every ``sync_<flow>`` task. It sends through
the SMTP provider's hook (etl.reporting.mail), not its ``SmtpNotifier``: the notifier renders subject and
body as Jinja templates, and an error message may contain ``{{`` from the data. Nobody in
``report.recipients`` means no alert and no error. A mail that cannot be sent is logged and
never hides the task's own failure.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from html import escape
from typing import Any

from etl.config.flows import ReportSettings
from etl.core.errors import (
    ConfigError,
    ConnectionNotFound,
    EtlError,
    ReconciliationFailed,
    SchemaDriftError,
    SourceUnavailable,
    StepFailed,
    TriggerParametersInvalid,
    ValidationFailed,
)
from etl.core.printable import get_logger

log = get_logger("etl.reporting.alerts")

#: What to do next, by the type of the error that ended the run (first match wins).
NEXT_STEPS: tuple[tuple[type[BaseException], str], ...] = (
    (TriggerParametersInvalid, "Not an outage: the run was refused before it read or wrote anything, because "
     "a trigger parameter is unknown (a typo such as full_refesh) or not in its accepted form. Trigger the "
     "DAG again with the parameters of its form (full_refresh, since, dry_run, plants); the ledger shows "
     "the refused run as failed at step 'parameters'."),
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


#: Words of the cause a subject keeps, after the flow and the error type.
SUBJECT_CAUSE_CHARS = 90
# which the subject already says with the DAG id.
_WHERE = re.compile(r"^(?:\S+\.ya?ml: )?(?:flow '[^']*'(?:: | ))?")


@dataclass(frozen=True)
class Alert:
    subject: str
    html: str
    text: str


def root_error(exc: BaseException | None) -> BaseException | None:
    """The error that ended the run: the cause a StepFailed wraps, else the most specific
    pipeline error in the chain, else ``exc`` itself."""
    chain = causes(exc)
    for cause in chain:
        if isinstance(cause, StepFailed):
            # A driver error the runner judged transient is raised from its one-line
            # SourceUnavailable, without the statement and parameters the driver's text carries.
            return cause.__cause__ if isinstance(cause.__cause__, SourceUnavailable) else cause.cause
    for cause in chain:
        if isinstance(cause, EtlError):
            return cause
    return exc


def subject_cause(message: str, limit: int = SUBJECT_CAUSE_CHARS) -> str:
    """The cause in a few words: the message on one line, without the file and flow it opens
    with, cut at a word boundary."""
    flat = " ".join(message.split())
    short = _WHERE.sub("", flat, count=1) or flat
    if len(short) <= limit:
        return short
    return short[:limit].rsplit(" ", 1)[0].rstrip(",;:") + " …"


def failure_alert(
    flow: str, error: BaseException | str | None, dag_run_id: str | None = None, log_url: str | None = None,
) -> Alert:
    """The alert for a failed sync of ``flow``. Subject: the flow, the error type and the cause
    in a few words (``REFUSED`` and "bad trigger parameters" when the trigger's parameters were
    the fault). Body (HTML, and the same as plain text): the full error once, the link to the
    task log, the Airflow run, the ledger run id and the next step. Every value is escaped."""
    exc = error if isinstance(error, BaseException) else None
    root = root_error(exc)
    message = str(root if root is not None else error or "").strip() or "(no error message)"
    kind, advice = next_step(exc)
    pipeline_run = ledger_run_id(exc)
    step = next((c.step for c in causes(exc) if isinstance(c, StepFailed)), None)
    rows = [("Flow", flow), ("Error type", kind)]
    if step:
        rows.append(("Step", step))
    rows.append(("Error", message))
    if log_url:
        rows.append(("Task log", log_url))
    if dag_run_id:
        rows.append(("Airflow run", dag_run_id))
    if pipeline_run:
        rows.append(("Pipeline run (etl_ledger.run_id)", pipeline_run))

    def cell(key: str, value: str) -> str:
        if key == "Task log":
            return f"<a href='{escape(value)}'>{escape(value)}</a>"
        return escape(value)

    table = "".join(
        f"<tr><th style='text-align:left;padding:2px 12px 2px 0;vertical-align:top'>{escape(k)}</th>"
        f"<td style='padding:2px 0;white-space:pre-wrap'>{cell(k, v)}</td></tr>" for k, v in rows
    )
    refused = kind == TriggerParametersInvalid.__name__
    headline = f"Run of flow {flow} refused: bad trigger parameters" if refused else f"Sync of flow {flow} failed"
    html = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'></head><body style='font-family:sans-serif'>"
        f"<h2>{escape(headline)}</h2><table>{table}</table>"
        f"<h3>What to do next</h3><p>{escape(advice)}</p>"
        f"<p style='color:#666'>DAG sync_{escape(flow)} · erp-mes-sync</p></body></html>"
    )
    text = "\n".join(
        [headline, "", *(f"{k}: {v}" for k, v in rows), "", "What to do next:", advice, "",
         f"DAG sync_{flow} · erp-mes-sync"]
    )
    cause = subject_cause(message)
    if refused:
        problems = "; ".join(str(p) for p in root.problems) if isinstance(root, TriggerParametersInvalid) else cause
        return Alert(f"[erp-mes-sync] REFUSED: sync_{flow} — bad trigger parameters: {subject_cause(problems)}",
                     html, text)
    return Alert(f"[erp-mes-sync] FAILED: sync_{flow} — {kind}: {cause}", html, text)


class FailureAlert:
    """``on_failure_callback`` of a sync task: mails the alert to ``settings.recipients``."""

    def __init__(self, flow: str, settings: ReportSettings):
        self.flow = flow
        self.settings = settings

    def __call__(self, context: Mapping[str, Any]) -> None:
        if not self.settings.recipients:
            return
        from etl.reporting.mail import send_html

        alert = failure_alert(self.flow, context.get("exception"), _run_id(context), _log_url(context))
        try:
            send_html(self.settings, alert.subject, alert.html, text=alert.text)
        except Exception as exc:  # the task already failed: its failure must stay the news
            log.error("flow %s: the failure alert could not be sent (%s: %s)", self.flow, type(exc).__name__, exc)


def _log_url(context: Mapping[str, Any]) -> str | None:
    """The task try's log in the Airflow UI; its base is Airflow's ``[api] base_url``."""
    try:
        return str(context["ti"].log_url)
    except (KeyError, AttributeError):
        return None


def _run_id(context: Mapping[str, Any]) -> str | None:
    run_id = context.get("run_id")
    if run_id:
        return str(run_id)
    dag_run = context.get("dag_run")
    return str(getattr(dag_run, "run_id", "") or "") or None
