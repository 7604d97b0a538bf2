"""The data-quality report on the real PostgreSQL server: what it says about a hand-made history
(runs, checks, quarantine, freshness, business reconciliations), `python -m etl report --send`
mailing it through a real SMTP server via an Airflow SMTP connection, and the page rendered in
headless Chromium (screenshot: .pytest_cache/artifacts/data_quality_report.png).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from report_factory import History, business_fixture, engines_of, pipeline_history, trimmed_mappings
from sqlalchemy.engine import URL
from test_dashboard import DevTools, browser  # noqa: F401  (the fixture)

from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.reporting.report import Window, build_report, collect, generated_now, render_html, subject
from etl.sync.connections import CONNECTIONS_FILE_ENV, Connections

pytestmark = [pytest.mark.postgres]

RECIPIENTS = ["qa-lead@plant.example", "it-oncall@plant.example"]
EXPECTED_ITEMS = "1 flow failing, 2 flows stale, 3 rows in quarantine, 2 failed checks, 6 reconciliation mismatches"


def _history(pg_database: Callable[[str], URL]) -> tuple[dict[str, URL], History]:
    urls = {n: pg_database(n) for n in ("erp", "mes", "warehouse")}
    engines = engines_of(urls)
    business_fixture(engines["erp_db"])
    history = pipeline_history(engines, generated_now())
    for engine in engines.values():
        engine.dispose()
    return urls, history


def test_the_report_shows_runs_quarantine_checks_freshness_and_reconciliations(
    pg_database: Callable[[str], URL], tmp_path: Path,
) -> None:
    urls, history = _history(pg_database)
    project = load_project(trimmed_mappings(tmp_path / "mappings"))
    now = history.now
    with Connections({f"{n}_db": u for n, u in urls.items()}) as connections:
        report = collect(project, connections, Window(now - timedelta(days=1), now), generated_at=now)
    flows = {f.flow: f for f in report.flows}

    assert [f.flow for f in report.flows_needing_action] == ["work_centers", "production_orders", "confirmations"]
    orders = flows["production_orders"]
    assert (orders.runs["success"], orders.runs["busy"], orders.runs["failed"]) == (1, 1, 0)
    assert (orders.rows_read, orders.rows_loaded, orders.rows_quarantined, orders.backlog) == (10, 7, 3, 3)
    assert [(g.pattern, g.rows) for g in orders.reasons] == [
        ("crosswalk 'material' has no MES code for '…' (column item_code)", 2),
        ("column quantity: <script>alert(…)</script> is not a number", 1),
    ]
    quantity = next(c for c in orders.checks if c.name == "quantity_positive")
    assert quantity.needs_action and quantity.pass_rate == pytest.approx(0.8)
    assert quantity.sample_keys == ["order_no=1000456", "order_no=1000457"]
    assert not next(c for c in orders.checks if c.name == "planned_end_after_start").needs_action  # a warning
    assert sum(x for _, x, _ in orders.trend) == 47 and len(orders.trend) == 14  # 40 two days ago, 7 today
    assert flows["confirmations"].failing and flows["confirmations"].freshness.stale  # 50 min > 2 × 15 min
    assert flows["work_centers"].freshness.stale and not flows["work_centers"].failing
    assert flows["materials"].problems == []
    assert report.mismatches == 6 and report.broken_reconciliations == 0
    assert subject(report) == f"[erp-mes-sync] ACTION NEEDED: {EXPECTED_ITEMS} — data quality {now:%Y-%m-%d}"

    html = render_html(report)
    assert "<meta charset='utf-8'>" in html and "数据质量报告" in html and "报工数量为负" in html
    assert "Flows needing action</div><div class='tile-value'>3 of 4" in html
    for section in ("Summary: Action needed", "Flows", "Business reconciliation", "Rows per day, last 14 days",
                    "Quarantine backlog: 3 rows, commonest reasons", "Expectations and run reconciliations"):
        assert section in html, section
    assert "last run failed: flow &#x27;confirmations&#x27; failed at step &#x27;validate&#x27;" in html
    assert f"Last run {history.failed_run_id} at" in html
    assert "R000000007, R000000008, R000000009" in html and "80.0 %" in html
    assert "1000002" in html and "-9.5" in html and "(no MES row)" in html  # order_output beyond tolerance
    # Every value is escaped: the quarantined row's text stays text.
    assert "<script" not in html and "&lt;script&gt;alert(…)&lt;/script&gt;" in html
    assert not re.search(r"""(src|href)=['"](https?:)?//""", html)


def test_python_m_etl_report_send_mails_it_through_the_airflow_smtp_connection(
    airflow_home: Path, smtp_server, pg_database: Callable[[str], URL], tmp_path: Path,
) -> None:
    urls, _ = _history(pg_database)
    mappings = trimmed_mappings(tmp_path / "mappings", recipients=RECIPIENTS)
    env = {**os.environ, CONNECTIONS_FILE_ENV: str(tmp_path / "absent.json")}
    env.update({f"AIRFLOW_CONN_{n.upper()}_DB": u.render_as_string(hide_password=False) for n, u in urls.items()})
    out = tmp_path / "report.html"
    done = subprocess.run(
        [sys.executable, "-m", "etl", "--mappings", str(mappings), "report", "--out", str(out), "--send"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"sent to {', '.join(RECIPIENTS)}" in done.stdout

    (mail,) = smtp_server.wait_for(1)
    assert mail.subject.startswith(f"[erp-mes-sync] ACTION NEEDED: {EXPECTED_ITEMS} — data quality ")
    assert mail.rcpt_tos == RECIPIENTS and mail.mail_from == "erp-mes-sync@plant.example"
    assert mail.message["To"] == ", ".join(RECIPIENTS)
    body = mail.html
    # The page written here, without a link to Data Docs on this machine: dead for a recipient.
    page = out.read_text(encoding="utf-8")
    assert body.rstrip("\n") == re.sub(r"<p>Expectation suites in detail: .*?</p>", "", page)
    assert "file://" not in body + mail.text
    assert "<a href='#flow-confirmations'>confirmations</a>: last run failed" in body
    assert "报工数量为负" in body
    assert "- confirmations: last run failed" in mail.text and "报工数量为负" not in mail.subject


def test_the_report_renders_in_chromium_without_console_errors(
    browser: DevTools, pg_database: Callable[[str], URL], tmp_path: Path,  # noqa: F811
) -> None:
    urls, history = _history(pg_database)
    project = load_project(trimmed_mappings(tmp_path / "mappings"))
    with Connections({f"{n}_db": u for n, u in urls.items()}) as connections:
        page = build_report(project, connections, tmp_path / "data_quality_report.html", generated_at=history.now).path

    session = browser.open(page)
    title = browser.call("Runtime.evaluate", session, expression="document.querySelector('h1').textContent")
    assert title["result"]["value"] == "Data-quality report · 数据质量报告"  # decoded as UTF-8

    screenshot, size = browser.screenshot(session, "data_quality_report")

    assert browser.problems() == []
    requested = browser.requested()
    assert requested and all(url.startswith(("file:", "data:")) for url in requested), requested
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and size["height"] > 1000
