"""Event-driven flows under Airflow: the DAG factory schedules a flow with ``trigger:`` on an
asset watched by FlowEventTrigger (beside its cron sweep), the trigger fires on a real NOTIFY
and a real MQTT message, and a run woken by the trigger's asset events records what woke it."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from event_site import LATENCY, EventSite
from sqlalchemy.engine import URL

from etl.config.project import load_project

pytestmark = pytest.mark.postgres


@pytest.fixture
def site(pg_database: Callable[[str], URL], mqtt_broker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EventSite]:
    built = EventSite(pg_database("evd_mes"), pg_database("evd_erp"), tmp_path)
    for name, value in built.env().items():
        if name.startswith("AIRFLOW_CONN_"):
            monkeypatch.setenv(name, value)
    yield built
    built.close()


def test_an_event_driven_flow_is_scheduled_on_its_watched_asset_and_its_sweep(airflow_home: Path) -> None:
    from airflow.sdk import AssetOrTimeSchedule
    from airflow.serialization.serialized_objects import DagSerialization

    from etl.airflow.dag_factory import build_dags, dag_id_of, event_asset
    from etl.airflow.triggers import FlowEventTrigger

    dags = build_dags(LATENCY / "mappings")
    project = load_project(LATENCY / "mappings")
    for name, address in (("confirmations_notify", "operation_report_changed"),
                          ("confirmations_mqtt", "spBv1.0/SH01/DDATA/mes/operation_report")):
        dag = dags[dag_id_of(name)]
        assert isinstance(dag.timetable, AssetOrTimeSchedule)
        assert "*/15 * * * *" in repr(dag.timetable.timetable)  # the sweep stays
        asset = event_asset(project.flow(name))
        assert asset is not None and dag.timetable.asset_condition == asset
        (watcher,) = asset.watchers
        assert isinstance(watcher.trigger, FlowEventTrigger)
        classpath, kwargs = watcher.trigger.serialize()
        assert classpath == "etl.airflow.triggers.FlowEventTrigger" and kwargs["address"] == address
        assert "password" not in json.dumps(kwargs)  # the connection is named, never resolved at parse
        # What the dag-processor stores: the watcher survives Airflow's own serialization.
        serialized = json.dumps(DagSerialization.to_dict(dag))
        assert "FlowEventTrigger" in serialized and address in serialized


def _first_events(trigger: Any, act: Callable[[], None], wanted: int, timeout: float = 15.0) -> list[dict[str, Any]]:
    """The trigger's first ``wanted`` event payloads; ``act`` runs once its listener is open."""
    async def collect() -> list[dict[str, Any]]:
        payloads: list[dict[str, Any]] = []
        stream = trigger.run()
        try:
            async with asyncio.timeout(timeout):
                async for event in stream:
                    payloads.append(event.payload)
                    if len(payloads) == 1:
                        await asyncio.to_thread(act)
                    if len(payloads) >= wanted:
                        break
        finally:
            await stream.aclose()
        return payloads

    return asyncio.run(collect())


@pytest.mark.parametrize("flow", ["confirmations_notify", "confirmations_mqtt"])
def test_the_trigger_fires_on_the_mes_commit(site: EventSite, flow: str, airflow_home: Path) -> None:
    from etl.airflow.dag_factory import event_asset

    asset = event_asset(load_project(site.mappings).flow(flow))
    assert asset is not None
    trigger = asset.watchers[0].trigger

    def commit() -> None:
        site.commit_report(publish=flow == "confirmations_mqtt")

    first, fired = _first_events(trigger, commit, wanted=2)
    # On (re)connecting it fires once: what was sent while nobody listened is not sent again.
    assert first["woken_by"] == "reconnect" and first["events"] == 0
    assert fired["flow"] == flow and fired["events"] >= 1
    assert fired["woken_by"] == ("postgres_notify" if flow == "confirmations_notify" else "mqtt")
    assert datetime.fromisoformat(fired["event_at"]) <= datetime.utcnow()


def test_a_run_woken_by_asset_events_records_the_first_event(airflow_home: Path) -> None:
    from etl.airflow.dag_factory import woken_options
    from etl.sync.runner import RunOptions

    def event(payload: Any) -> Any:
        return SimpleNamespace(extra={"from_trigger": True, "payload": payload})

    events = {"asset": [
        event({"woken_by": "postgres_notify", "events": 3, "event_at": "2026-12-06T08:00:02"}),
        event({"woken_by": "postgres_notify", "events": 2, "event_at": "2026-12-06T08:00:01"}),
    ]}
    woken = woken_options(RunOptions(), events)
    assert (woken.woken_by, woken.events, woken.event_at) == ("postgres_notify", 5, datetime(2026, 12, 6, 8, 0, 1))
    # A run of the cron sweep, or one triggered by hand, has no trigger events: nothing changes.
    assert woken_options(RunOptions(), {}) == RunOptions()
    assert woken_options(RunOptions(), {"asset": [SimpleNamespace(extra={"run_id": "x"})]}) == RunOptions()
