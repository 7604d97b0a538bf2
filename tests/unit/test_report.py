"""Tests for the pure parts of etl.reporting.report: reason groups, freshness, check summaries, subject, HTML escaping."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta

from etl.config.flows import ReportSettings
from etl.reporting.report import (
    FlowReport,
    Freshness,
    Report,
    Window,
    daily_trend,
    freshness,
    group_reasons,
    reason_pattern,
    render_html,
    schedule_interval,
    subject,
    summarize_checks,
)

NOW = datetime(2026, 11, 25, 6, 0)


def test_reasons_that_differ_only_in_their_values_are_grouped() -> None:
    groups = group_reasons([
        ("crosswalk 'material' has no MES code for 'MAT-000123' (column item_code)", 3),
        ("crosswalk 'material' has no MES code for 'MAT-000124' (column item_code)", 2),
        ("crosswalk 'unit' has no factor for unit 'LB' (column quantity)", 1),
        ("column quantity: 12,5 is not a number; crosswalk 'plant' has no MES code for '9999' (column plant_code)", 1),
    ])
    assert [(g.pattern, g.rows) for g in groups] == [
        ("crosswalk 'material' has no MES code for '…' (column item_code)", 5),
        ("column quantity: … is not a number; crosswalk 'plant' has no MES code for '…' (column plant_code)", 1),
        ("crosswalk 'unit' has no factor for unit '…' (column quantity)", 1),
    ]
    assert groups[0].example.endswith("'MAT-000123' (column item_code)")
    assert len(group_reasons([(f"reason {chr(65 + i)}", 1) for i in range(9)], limit=5)) == 5


def test_reason_patterns_keep_names_and_drop_values() -> None:
    assert reason_pattern("parent work_order.wo_no = 'WO-2026-000025' not on the target yet (column wo_no)") == (
        "parent work_order.wo_no = '…' not on the target yet (column wo_no)"
    )
    assert reason_pattern("column step_no: -3.5 below 0") == "column step_no: … below …"


def test_schedule_intervals_from_cron_and_presets() -> None:
    assert schedule_interval("*/15 * * * *", NOW) == timedelta(minutes=15)
    assert schedule_interval("@hourly", NOW) == timedelta(hours=1)
    assert schedule_interval("0 1 * * *", NOW) == timedelta(days=1)
    assert schedule_interval(None, NOW) is None and schedule_interval("@once", NOW) is None


def test_a_flow_is_stale_after_two_schedule_intervals_or_when_it_never_succeeded() -> None:
    assert not freshness(NOW - timedelta(minutes=29), "*/15 * * * *", NOW, 2).stale
    assert freshness(NOW - timedelta(minutes=31), "*/15 * * * *", NOW, 2).stale
    assert not freshness(NOW - timedelta(hours=47), "0 1 * * *", NOW, 2).stale
    assert freshness(None, "@hourly", NOW, 2) == Freshness(None, timedelta(hours=1), True)
    assert not freshness(None, None, NOW, 2).stale  # manual-only flows are never stale


def test_checks_are_folded_per_check_with_the_latest_failing_sample() -> None:
    def row(name: str, action: str, failed: int, keys: str | None = None) -> dict:
        return {"kind": "expectation", "name": name, "action": action, "expectation_type": "t", "suite": "s",
                "rows_checked": 10, "rows_failed": failed, "success": failed == 0, "sample_keys": keys, "detail": None}

    checks = summarize_checks([
        row("a", "quarantine", 2, '["k1", "k2"]'), row("a", "quarantine", 1, '["k9"]'), row("a", "quarantine", 0),
        row("w", "warning", 4, '["w1"]'), row("ok", "critical", 0),
    ])
    a, w, ok = checks
    assert (a.name, a.runs, a.failed_runs, a.rows_checked, a.rows_failed, a.sample_keys) == ("a", 3, 2, 30, 3, ["k9"])
    assert a.pass_rate == 0.9 and a.needs_action
    assert w.name == "w" and not w.needs_action  # a warning is shown, not counted
    assert ok.name == "ok" and ok.pass_rate == 1.0


def test_the_trend_counts_successful_runs_per_day() -> None:
    runs = [
        {"started_at": NOW - timedelta(days=1), "outcome": "success", "rows_loaded": 5, "rows_new_in_quarantine": 1},
        {"started_at": NOW - timedelta(days=1, hours=1), "outcome": "success", "rows_loaded": 2, "rows_new_in_quarantine": 0},
        {"started_at": NOW, "outcome": "failed", "rows_loaded": 9, "rows_new_in_quarantine": 9},
        {"started_at": NOW - timedelta(days=30), "outcome": "success", "rows_loaded": 100, "rows_new_in_quarantine": 0},
    ]
    trend = daily_trend(runs, NOW, 3)
    assert trend == [("11-23", 0, 0), ("11-24", 7, 1), ("11-25", 0, 0)]


def _report(flows: list[FlowReport]) -> Report:
    return Report(Window(NOW - timedelta(days=1), NOW), NOW, flows, [], ReportSettings())


def test_the_subject_says_ok_or_what_needs_action() -> None:
    fine = FlowReport("materials", "erp_to_mes", "mes_db", "0 1 * * *",
                      freshness=Freshness(NOW - timedelta(hours=3), timedelta(days=1), False))
    assert subject(_report([fine])) == "[erp-mes-sync] OK — data quality 2026-11-25"

    failing = FlowReport("confirmations", "mes_to_erp", "erp_db", "*/15 * * * *", Counter(failed=1),
                         last_run={"run_id": "r1", "started_at": NOW, "outcome": "failed", "error": "boom"},
                         freshness=Freshness(NOW, timedelta(minutes=15), False), backlog=135)
    other = FlowReport("boms", "erp_to_mes", "mes_db", "0 1 * * *",
                       last_run={"run_id": "r2", "started_at": NOW, "outcome": "failed", "error": "x"},
                       freshness=Freshness(None, timedelta(days=1), True))
    assert subject(_report([fine, failing, other])) == (
        "[erp-mes-sync] ACTION NEEDED: 2 flows failing, 1 flow stale, 135 rows in quarantine — data quality 2026-11-25"
    )


def test_every_value_in_the_page_is_escaped() -> None:
    evil = FlowReport("production_orders", "erp_to_mes", "mes_db", "@hourly",
                      last_run={"run_id": "<r>", "started_at": NOW, "outcome": "failed",
                                "error": "<img src=x onerror=alert(1)> 物料 '1000'"},
                      freshness=Freshness(NOW, timedelta(hours=1), False))
    html = render_html(_report([evil]))
    assert "<img" not in html and "&lt;img src=x onerror=alert(1)&gt; 物料 &#x27;1000&#x27;" in html
    assert "&lt;r&gt;" in html and "<meta charset='utf-8'>" in html


def test_the_data_docs_are_linked_locally_only_when_their_index_exists(tmp_path) -> None:
    from etl.reporting.report import data_docs_link

    settings = ReportSettings(data_docs=str(tmp_path / "data_docs"))
    assert data_docs_link(settings) is None and data_docs_link(ReportSettings()) is None
    (tmp_path / "data_docs").mkdir()
    (tmp_path / "data_docs" / "index.html").write_text("<html></html>", encoding="utf-8")
    link = data_docs_link(settings)
    assert link == (tmp_path / "data_docs" / "index.html").as_uri()
    report = _report([])
    report.data_docs = link
    assert f"<a href='{link}'>Great Expectations Data Docs</a>" in render_html(report)
    # A mail gets no file link: only a configured URL.
    assert data_docs_link(settings, local=False) is None
    published = settings.model_copy(update={"data_docs_url": "https://dq.plant.example/gx/"})
    assert data_docs_link(published, local=False) == "https://dq.plant.example/gx/index.html"


def test_the_plain_text_part_says_what_needs_action() -> None:
    from etl.reporting.report import render_text

    failing = FlowReport("production_orders", "erp_to_mes", "mes_db", "@hourly",
                         last_run={"run_id": "r", "started_at": NOW, "outcome": "failed",
                                   "error": "parameters: TriggerParametersInvalid: bad trigger parameters"},
                         freshness=Freshness(NOW, timedelta(hours=1), False))
    text = render_text(_report([failing]))
    assert text.startswith("[erp-mes-sync] ACTION NEEDED: 1 flow failing")
    assert "- production_orders: last run failed: parameters: TriggerParametersInvalid" in text
    assert "<" not in text


def test_a_row_waiting_only_for_its_parent_is_an_expected_wait() -> None:
    from etl.core.reasons import PARENT_MISSING
    from etl.reporting.report import waits_for_parent

    parent = PARENT_MISSING.text(table="work_order", key="wo_no", value="'WO-2026-000025'", column="wo_no")
    assert waits_for_parent(parent)
    assert waits_for_parent(f"{parent}; {parent.replace('wo_no', 'item_code')}")
    assert not waits_for_parent(f"{parent}; crosswalk 'material' has no MES code for 'MAT-A00001' (column item_code)")
    assert not waits_for_parent("crosswalk 'material' has no MES code for 'MAT-A00001' (column item_code)")


def test_expected_waits_are_shown_but_need_no_action() -> None:
    from etl.reporting.report import render_text

    waiting = FlowReport("order_components", "erp_to_mes", "mes_db", "*/15 * * * *",
                         freshness=Freshness(NOW, timedelta(minutes=15), False), backlog=311, expected_wait=311,
                         expected_since=NOW - timedelta(hours=5))
    report = _report([waiting])
    assert waiting.problems == [] and not report.needs_action
    assert subject(report) == "[erp-mes-sync] OK — data quality 2026-11-25"
    text = render_text(report)
    assert "Nothing needs action." in text
    assert "- order_components: 311 rows wait for a parent the source has not released yet, oldest 5 h ago" in text
    html = render_html(report)
    assert "Waiting (expected)" in html and "311 rows wait for a parent" in html

    waiting.backlog = 313
    assert subject(report) == "[erp-mes-sync] ACTION NEEDED: 2 rows in quarantine — data quality 2026-11-25"
    assert waiting.problems == ["2 row(s) waiting in quarantine"]
