"""Event-driven runs (``python -m etl watch``) under faults: the watcher killed mid-stream and
started again, the MQTT connection dropped, 5,000 events in a second, events for a row that is
then rolled back, two watchers of one flow at once. Every committed row arrives exactly once
(loaded once, never twice, never lost), no successful run overlaps another (the flow lock),
and each run is one line of the watch's log."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from event_site import MQTT_HOST, MQTT_PORT, EventSite
from sqlalchemy import text
from sqlalchemy.engine import URL

from etl.config.project import load_project
from etl.reporting.report import Window, event_latency, latency_section
from etl.sync.connections import Connections

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

NOTIFY, MQTT = "confirmations_notify", "confirmations_mqtt"


@pytest.fixture
def site(pg_database: Callable[[str], URL], mqtt_broker: str, tmp_path: Path) -> Iterator[EventSite]:
    built = EventSite(pg_database("ev_mes"), pg_database("ev_erp"), tmp_path)
    yield built
    built.close()


def assert_exactly_once(site: EventSite, flow: str) -> None:
    """Every committed report is in the ERP once (its key is the primary key), no other row is,
    each was loaded by exactly one run, and no two successful runs overlapped."""
    assert site.wait_loaded(len(site.committed)) == sorted(site.committed), site.logs()
    runs = site.ledger(flow)
    assert sum(r["rows_loaded"] for r in runs if r["outcome"] == "success") == len(site.committed)
    assert site.overlapping_runs(flow) == []


@pytest.mark.parametrize("flow", [NOTIFY, MQTT])
def test_each_commit_wakes_a_run_and_sigterm_stops_cleanly(site: EventSite, flow: str) -> None:
    watcher = site.start_watch(flow)
    assert site.watch_ready(flow), site.logs()
    for _ in range(5):
        site.commit_report(publish=flow == MQTT)
        time.sleep(0.3)
    assert_exactly_once(site, flow)
    assert site.stop(watcher) == 0
    log = site.logs()
    woken = [line for line in log.splitlines() if f"flow {flow} woken by" in line]
    assert len(woken) == len(site.ledger(flow)), log  # one line per run
    assert sum(f"woken by {'postgres_notify' if flow == NOTIFY else 'mqtt'}" in line for line in woken) >= 3, log
    assert "stopping on SIGTERM" in log and "stopped:" in log
    event_runs = [r for r in site.ledger(flow) if '"event_at": "' in r["options"]]
    assert event_runs, "the ledger keeps when the event arrived"
    # The report shows the flow's event-to-commit latency over those runs.
    project = load_project(site.mappings)
    with Connections({"mes_db": site.mes_url, "erp_db": site.erp_url}) as connections:
        now = datetime.now(UTC).replace(tzinfo=None)
        (latency,) = event_latency(project, connections, Window(now - timedelta(hours=1), now + timedelta(minutes=1)))
    assert (latency.flow, latency.runs) == (flow, len(event_runs))
    assert 0 < latency.p50 <= latency.p95 <= latency.worst < 10
    assert latency.events == sum(json.loads(r["options"])["events"] for r in event_runs) >= 5
    assert f"<td>{flow}</td>" in latency_section([latency])


@pytest.mark.parametrize("flow", [NOTIFY, MQTT])
def test_a_watcher_killed_mid_stream_and_started_again_loses_and_doubles_nothing(site: EventSite, flow: str) -> None:
    watcher = site.start_watch(flow)
    assert site.watch_ready(flow), site.logs()
    for i in range(30):
        site.commit_report(publish=flow == MQTT)
        if i == 12:
            watcher.send_signal(signal.SIGKILL)  # wherever it is, a run's transaction included
            watcher.wait()
        if i == 20:
            watcher = site.start_watch(flow)
        time.sleep(0.05)
    assert_exactly_once(site, flow)
    assert any("woken by start" in line for line in site.logs().splitlines()[1:])


def test_a_dropped_mqtt_connection_reconnects_and_the_rows_still_arrive(site: EventSite) -> None:
    site.start_watch(MQTT)
    assert site.watch_ready(MQTT), site.logs()
    site.commit_report(publish=True)
    assert site.wait_loaded(1) == site.committed
    # Another client taking the session's client id makes the broker drop the watcher's connection.
    session = f"ems-test-{site.tag}"
    thief = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=session, clean_session=False)
    thief.connect(MQTT_HOST, MQTT_PORT)
    thief.loop_start()
    for _ in range(5):
        site.commit_report(publish=True)
    time.sleep(0.5)
    thief.loop_stop()
    thief.disconnect()
    assert site.wait_for(lambda: "reconnecting" in site.logs()), site.logs()
    for _ in range(3):
        site.commit_report(publish=True)
    assert_exactly_once(site, MQTT)
    assert any("woken by reconnect" in line for line in site.logs().splitlines())


def test_a_flood_of_5000_events_in_a_second_is_answered_by_a_few_runs(site: EventSite) -> None:
    site.start_watch(NOTIFY)
    site.start_watch(NOTIFY)  # two watchers of one flow: the lock lets one run at a time
    assert site.watch_ready(NOTIFY, runs=2), site.logs()
    before = len(site.ledger(NOTIFY))
    started = time.monotonic()
    with site.mes.begin() as conn:
        for _ in range(20):
            site.commit_report()
        # Distinct payloads, so PostgreSQL folds none of the 5,000 notifications.
        conn.execute(text("SELECT pg_notify('operation_report_changed', g::text) FROM generate_series(1, 5000) g"))
    assert time.monotonic() - started < 1.5
    assert_exactly_once(site, NOTIFY)
    time.sleep(1.0)
    runs = site.ledger(NOTIFY)[before:]
    answered = sum(int(r["options"].split('"events": ')[1].split(",")[0]) for r in runs if '"events": ' in r["options"])
    assert answered >= 5000 - 100  # both watchers heard them; each answers what it heard
    assert len(runs) <= 40, f"{len(runs)} runs for a flood: events were not coalesced"


@pytest.mark.parametrize("flow", [NOTIFY, MQTT])
def test_an_event_for_a_row_rolled_back_loads_nothing(site: EventSite, flow: str) -> None:
    site.start_watch(flow)
    assert site.watch_ready(flow), site.logs()
    ghost = site.roll_back_report(publish=flow == MQTT)
    site.commit_report(publish=flow == MQTT)
    assert_exactly_once(site, flow)
    assert ghost not in site.loaded()
    with site.erp.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM etl_quarantine")).scalar() == 0
