"""An event-driven flow under real Airflow processes (api-server, scheduler, dag-processor,
triggerer): each MES commit's NOTIFY fires the asset watcher's trigger in the triggerer, the
asset event starts the flow's DAG, its task loads the row. The triggerer is killed in the middle
of the stream and started again: every row still arrives exactly once, and no two runs overlap."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from event_site import EventSite
from sqlalchemy.engine import URL
from test_airflow_services import STARTUP_TIMEOUT, AirflowServices, base_environment, free_port, services

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

FLOW = "confirmations_notify"
DAG = f"sync_{FLOW}"
__all__ = ["services"]


def start_airflow(site: EventSite, make: Callable[[dict[str, str]], AirflowServices], home: Path) -> AirflowServices:
    """Airflow whose only DAGs are those of the site's mappings; returns it with the flow's DAG
    parsed and unpaused."""
    dags = home / "dags"
    dags.mkdir(parents=True)
    (dags / "latency_flows.py").write_text(
        "from etl.airflow.dag_factory import build_dags\n"
        f"globals().update(build_dags({str(site.mappings)!r}))\n", encoding="utf-8",
    )
    port = free_port()
    env = base_environment(home, port, {
        "mes": site.mes_url.render_as_string(hide_password=False),
        "erp": site.erp_url.render_as_string(hide_password=False),
    })
    env["AIRFLOW__CORE__DAGS_FOLDER"] = str(dags)
    env["AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL"] = "5"
    airflow = make(env)
    for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
        airflow.start(name, name)
    airflow.wait_for("the api-server", airflow.healthy, STARTUP_TIMEOUT)
    airflow.wait_for(f"DAG {DAG} to be parsed", lambda: airflow.request("GET", f"/api/v2/dags/{DAG}")[0] == 200, STARTUP_TIMEOUT)
    status, body = airflow.request("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    assert status == 200, body
    return airflow


def test_notify_wakes_the_dag_and_a_killed_triggerer_loses_nothing(
    pg_database: Callable[[str], URL], mqtt_broker: str, tmp_path: Path,
    services: Callable[[dict[str, str]], AirflowServices],
) -> None:
    site = EventSite(pg_database("afe_mes"), pg_database("afe_erp"), tmp_path / "site")
    try:
        airflow = start_airflow(site, services, tmp_path / "airflow")
        # The trigger fires once when it connects: the first run catches up (nothing yet).
        airflow.wait_for("the first event-driven run", lambda: site.ledger(FLOW), 180)
        site.commit_report()
        assert site.wait_loaded(1, timeout=60) == site.committed, airflow.logs()
        for i in range(12):
            site.commit_report()
            if i == 4:
                trigger = airflow.processes["triggerer"]
                trigger.send_signal(signal.SIGKILL)
                trigger.wait()
            if i == 7:
                airflow.start("triggerer", "triggerer")
            time.sleep(0.5)
        assert site.wait_loaded(len(site.committed), timeout=120) == sorted(site.committed), airflow.logs()
        runs = site.ledger(FLOW)
        assert sum(r["rows_loaded"] for r in runs if r["outcome"] == "success") == len(site.committed)
        assert site.overlapping_runs(FLOW) == []
        woken = [r for r in runs if '"woken_by": "postgres_notify"' in r["options"]]
        assert woken, "runs record the NOTIFY that woke them"
    finally:
        site.close()
