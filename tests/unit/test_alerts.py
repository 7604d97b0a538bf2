"""Tests for etl.reporting.alerts: the failure alert names the flow, the error and the next step by error type."""

from __future__ import annotations

import pytest

from etl.config.flows import ReportSettings
from etl.core.errors import (
    ConfigError,
    ConfigProblem,
    ParameterProblem,
    ReconciliationFailed,
    SchemaDriftError,
    SourceUnavailable,
    StepFailed,
    TriggerParametersInvalid,
    ValidationFailed,
)
from etl.reporting.alerts import FailureAlert, failure_alert, next_step


def _failed(cause: BaseException, flow: str = "confirmations") -> Exception:
    """As the sync task raises it: an Airflow-style wrapper around StepFailed around the cause."""
    step = StepFailed(flow, "validate", "run-42", cause)
    try:
        try:
            raise step
        except StepFailed as exc:
            raise RuntimeError(f"mappings/flows/{flow}.yaml: {exc}") from exc
    except RuntimeError as wrapped:
        return wrapped


@pytest.mark.parametrize(("cause", "kind", "advice"), [
    (ValidationFailed("3 rows fail good_qty_not_negative"), "ValidationFailed", "data-quality report"),
    (ReconciliationFailed("read 10, loaded 9"), "ReconciliationFailed", "nothing was committed"),
    (SchemaDriftError("work_center.description is gone"), "SchemaDriftError", "A mapped table or column changed"),
    (ConfigError([ConfigProblem("f.yaml", "columns[0]", "bad")]), "ConfigError", "python -m etl check"),
    (SourceUnavailable("connection refused"), "SourceUnavailable", "automatic retries are used up"),
    (KeyError("boom"), "RuntimeError", "Read the task log"),
])
def test_the_next_step_depends_on_the_error_type(cause: BaseException, kind: str, advice: str) -> None:
    found_kind, found_advice = next_step(_failed(cause))
    assert found_kind == kind and advice in found_advice


def test_the_alert_names_flow_error_and_both_run_ids_escaped() -> None:
    alert = failure_alert("confirmations", _failed(ValidationFailed("{{ 3 }} rows <b>报工</b> fail")), "manual__2026-11-25")
    assert alert.subject == "[erp-mes-sync] FAILED: sync_confirmations — ValidationFailed: {{ 3 }} rows <b>报工</b> fail"
    assert "Sync of flow confirmations failed" in alert.html
    assert "{{ 3 }} rows &lt;b&gt;报工&lt;/b&gt; fail" in alert.html and "<b>" not in alert.html
    assert "manual__2026-11-25" in alert.html and "run-42" in alert.html
    assert len(failure_alert("x", "e" * 500).subject) < 200


def test_without_recipients_the_callback_does_nothing() -> None:
    # No connection exists here: a send attempt would raise inside; nothing is attempted.
    FailureAlert("confirmations", ReportSettings())({"exception": ValueError("x"), "run_id": "r"})


def test_the_subject_keeps_the_cause_and_the_body_says_the_error_once_with_the_log_link() -> None:
    cause = SchemaDriftError(
        "mappings/flows/personnel.yaml: flow 'personnel': schema drift detected before any write:\n  "
        "column employee.dept_code not found (did you mean 'department_code'?); column employee.shift not found"
    )
    log_url = "https://airflow.plant.example/dags/sync_personnel/runs/manual__2026-12-01/tasks/sync?try_number=1"
    alert = failure_alert("personnel", _failed(cause, "personnel"), "manual__2026-12-01T08:00:00+00:00", log_url)
    assert alert.subject.startswith(
        "[erp-mes-sync] FAILED: sync_personnel — SchemaDriftError: schema drift detected before any write: "
        "column employee.dept_code not found"
    )
    assert len(alert.subject) < 160 and "manual__" not in alert.subject and "yaml" not in alert.subject
    for body in (alert.html, alert.text):
        assert body.count("mappings/flows/personnel.yaml: flow") == 1, body
        assert "column employee.shift not found" in body and "run-42" in body
    assert f"<a href='{log_url}'>" in alert.html and f"Task log: {log_url}" in alert.text


def test_bad_trigger_parameters_are_a_refusal_not_an_outage() -> None:
    refused = TriggerParametersInvalid("production_orders", [
        ParameterProblem("full_refesh", "unknown parameter; did you mean 'full_refresh'?"),
    ])
    alert = failure_alert("production_orders", _failed(refused, "production_orders"))
    assert alert.subject == ("[erp-mes-sync] REFUSED: sync_production_orders — bad trigger parameters: "
                             "full_refesh: unknown parameter; did you mean 'full_refresh'?")
    assert "Not an outage" in alert.text and "refused: bad trigger parameters" in alert.html


def test_a_transient_driver_error_is_shown_as_its_one_line_not_the_statement() -> None:
    driver = RuntimeError("(psycopg2.OperationalError) server closed the connection\n[SQL: SELECT * FROM item]")
    step = StepFailed("materials", "extract", "run-7", driver)
    try:
        raise step from SourceUnavailable("server closed the connection")
    except StepFailed as exc:
        alert = failure_alert("materials", exc)
    assert alert.subject == "[erp-mes-sync] FAILED: sync_materials — SourceUnavailable: server closed the connection"
    assert "[SQL" not in alert.html + alert.text and "run-7" in alert.text
