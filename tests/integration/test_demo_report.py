"""A fresh demo, every flow run once: its data-quality report names only the dirt the factory
planted (the material MAT-A00001 outside the crosswalk's range), and shows the components of
orders not yet released to the MES as waiting (expected), not as an action.

The same demo's dashboard and report are rendered in headless Chromium; with
UPDATE_DOC_IMAGES=1 the screenshots are written to docs/images/ (the README shows them),
otherwise to .pytest_cache/artifacts/, and the checked-in ones must exist.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from test_dashboard import ARTIFACTS, DevTools, browser  # noqa: F401  (the fixture)

from demo.factory import DIRTY_MATERIAL_NO
from demo.setup import init_demo
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.reporting.dashboard import write_dashboard
from etl.reporting.report import Report, Window, collect, generated_now, render_html, subject
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, run_flow
from etl.warehouse.refresh import refresh

pytestmark = pytest.mark.slow

DOC_IMAGES = REPO_ROOT / "docs" / "images"
PLANTED = DIRTY_MATERIAL_NO


@dataclass(frozen=True)
class FreshDemo:
    report: Report
    report_page: Path
    dashboard_page: Path


@pytest.fixture(scope="module")
def fresh_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FreshDemo]:
    folder = tmp_path_factory.mktemp("fresh_demo")
    urls = {n: f"sqlite:///{folder / (n + '.db')}" for n in ("erp", "mes", "warehouse")}
    init_demo(erp_url=urls["erp"], mes_url=urls["mes"], warehouse_url=urls["warehouse"], orders=300, seed=42,
              connections_file=folder / "connections.json")
    project = load_project(REPO_ROOT / "mappings")
    with Connections({f"{n}_db": url for n, url in urls.items()}) as connections:
        for name, flow in project.flows.items():
            if flow.direction != "warehouse":
                run_flow(project, name, connections, RunOptions())
        refresh(connections, project)
        # The window ends on a whole second: one past the runs just made.
        now = generated_now() + timedelta(seconds=1)
        report = collect(project, connections, Window(now - timedelta(days=1), now), generated_at=now)
        page = folder / "data_quality_report.html"
        page.write_text(render_html(report), encoding="utf-8")
        dashboard = write_dashboard(connections.engine("warehouse_db"), folder / "dashboard.html")
    yield FreshDemo(report, page, dashboard)


def test_the_subject_names_only_the_planted_dirt(fresh_demo: FreshDemo) -> None:
    report = fresh_demo.report
    title = subject(report)
    assert "flow" not in title and "failed check" not in title and "could not run" not in title, title
    for flow in report.flows:
        assert not flow.failing and not flow.freshness.stale, flow.flow
        assert all(not c.needs_action for c in flow.checks), (flow.flow, [c.name for c in flow.checks if c.needs_action])
        if flow.action_backlog:
            assert flow.reasons and all(PLANTED in g.example for g in flow.reasons if "parent" not in g.pattern), flow.flow
    # What needs action is the planted material and nothing else: its rows, and the issues that
    # cannot match requirements the MES never heard of.
    assert 0 < report.action_backlog <= 20, report.action_backlog
    assert {line.key[-1] for r in report.reconciliations for line in r.mismatches} <= {PLANTED}


def test_components_of_unreleased_orders_wait_as_expected(fresh_demo: FreshDemo) -> None:
    waiting = {f.flow: f for f in fresh_demo.report.flows if f.expected_wait}
    assert "order_components" in waiting, sorted(waiting)
    components = waiting["order_components"]
    assert components.expected_wait >= 100 and components.expected_since is not None
    assert fresh_demo.report.expected_wait == sum(f.expected_wait for f in waiting.values())
    html = fresh_demo.report_page.read_text(encoding="utf-8")
    assert "Waiting (expected)" in html and "wait for a parent the source has not released yet" in html


def _shot(browser: DevTools, page: Path, name: str) -> Path:  # noqa: F811
    """The top of ``page`` (1300 × 1100 CSS pixels) as a PNG, where the README can show it."""
    session = browser.open(page)
    size = browser.call("Page.getLayoutMetrics", session)["cssContentSize"]
    shot = browser.call(
        "Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
        clip={"x": 0, "y": 0, "width": 1300, "height": min(1100, size["height"]), "scale": 1},
    )
    folder = DOC_IMAGES if os.environ.get("UPDATE_DOC_IMAGES") == "1" else ARTIFACTS
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"{name} screenshot: {path}")
    return path


@pytest.mark.parametrize("name", ["dashboard", "data_quality_report"])
def test_the_readme_screenshots_are_made_from_a_fresh_demo(fresh_demo: FreshDemo, browser: DevTools, name: str) -> None:  # noqa: F811
    page = fresh_demo.dashboard_page if name == "dashboard" else fresh_demo.report_page
    shot = _shot(browser, page, name)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    assert browser.problems() == []
    checked_in = DOC_IMAGES / f"{name}.png"
    assert checked_in.is_file() and checked_in.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", checked_in
