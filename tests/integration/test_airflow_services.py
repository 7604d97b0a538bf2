"""Airflow as it runs in a plant: api-server, scheduler, dag-processor (and a Celery worker) as
processes of their own, a run triggered through the REST API v2 with a conf, rows checked.

Once with LocalExecutor and SQLite metadata (the demo's setup), once with CeleryExecutor, the
Redis broker on 127.0.0.1:6379 and PostgreSQL as the metadata database (the scale-out setup).
Every Airflow process gets its settings from the environment built here; this test process
never imports Airflow.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from demo.setup import init_demo
from etl.config.paths import REPO_ROOT
from etl.sync.connections import CONNECTIONS_FILE_ENV, create_db_engine

pytestmark = pytest.mark.slow

ORDERS = 60
# The demo factory's clock for this file: the rows its tests write by hand are dated against it.
DEMO_AS_OF = datetime(2026, 11, 20, 8, 0)
FLOW_DAG = "sync_work_centers"
WAREHOUSE_DAG = "warehouse"
# Several scheduler loops (a few seconds each): long enough for a run to start if it could.
PAUSED_WAIT = 15
REDIS = ("127.0.0.1", 6379)
STARTUP_TIMEOUT = 120
RUN_TIMEOUT = 240


class AirflowServices:
    """Airflow processes started by a test, each in its own process group, stopped together."""

    def __init__(self, home: Path, env: dict[str, str], port: int):
        self.home = home
        self.env = env
        self.base_url = f"http://127.0.0.1:{port}"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self._token: str | None = None

    def airflow(self, *args: str, timeout: int = 300) -> str:
        """Run one Airflow CLI command to completion; returns its output, raises on failure."""
        done = subprocess.run(
            [sys.executable, "-m", "airflow", *args], env=self.env, cwd=REPO_ROOT,
            capture_output=True, text=True, timeout=timeout,
        )
        assert done.returncode == 0, f"airflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def start(self, name: str, *args: str) -> None:
        log = open(self.home / f"{name}.log", "wb")
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", "airflow", *args], env=self.env, cwd=REPO_ROOT,
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for process in self.processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def logs(self) -> str:
        """The last lines of every process's log, for a failure message."""
        out = []
        for name in self.processes:
            lines = (self.home / f"{name}.log").read_text(errors="replace").splitlines()
            out.append(f"--- {name} ---\n" + "\n".join(lines[-40:]))
        return "\n".join(out)

    def wait_for(self, what: str, check: Callable[[], Any], timeout: float) -> Any:
        """Poll ``check`` until it returns something truthy; fail with the logs after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    pytest.fail(f"airflow {name} exited with {process.returncode}\n{self.logs()}")
            result = check()
            if result:
                return result
            time.sleep(1)
        pytest.fail(f"timed out after {timeout}s waiting for {what}\n{self.logs()}")

    def request(self, method: str, path: str, body: Any = None, auth: bool = True) -> tuple[int, Any]:
        """One REST call; returns the status and the decoded JSON body."""
        headers = {"Content-Type": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self.token()}"
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as response:
                return response.status, json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def token(self) -> str:
        """A JWT from the SimpleAuthManager, for the user whose password the api-server generated."""
        if self._token is None:
            password_file = self.home / "simple_auth_manager_passwords.json.generated"
            password = json.loads(password_file.read_text())["admin"]
            status, body = self.request(
                "POST", "/auth/token", {"username": "admin", "password": password}, auth=False,
            )
            assert status == 201, body
            self._token = body["access_token"]
        return self._token

    def healthy(self) -> bool:
        try:
            status, _ = self.request("GET", "/api/v2/monitor/health", auth=False)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False
        return status == 200 and (self.home / "simple_auth_manager_passwords.json.generated").exists()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def base_environment(home: Path, port: int, demo_urls: dict[str, str]) -> dict[str, str]:
    """The settings every Airflow process of a test shares, the demo databases as connections."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update({
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHONPATH": str(REPO_ROOT),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        CONNECTIONS_FILE_ENV: str(home / "absent.json"),
    })
    for name, url in demo_urls.items():
        env[f"AIRFLOW_CONN_{name.upper()}_DB"] = url
    return env


def fill_demo(urls: dict[str, URL], folder: Path) -> dict[str, str]:
    rendered = {n: u.render_as_string(hide_password=False) for n, u in urls.items()}
    init_demo(
        erp_url=rendered["erp"], mes_url=rendered["mes"], warehouse_url=rendered["warehouse"],
        orders=ORDERS, seed=5, connections_file=folder / "connections.json", as_of=DEMO_AS_OF,
    )
    return rendered


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], AirflowServices]]:
    """Factory: an Airflow home with a migrated metadata database and the DAGs' pools."""
    started: list[AirflowServices] = []

    def make(env: dict[str, str]) -> AirflowServices:
        home = Path(env["AIRFLOW_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        airflow = AirflowServices(home, env, int(env["AIRFLOW__API__PORT"]))
        started.append(airflow)
        t0 = time.perf_counter()
        airflow.airflow("db", "migrate")
        print(f"\nairflow db migrate: {time.perf_counter() - t0:.1f}s")
        pools = subprocess.run(
            [sys.executable, "-m", "etl", "pools"], env=env, cwd=REPO_ROOT, capture_output=True, text=True, check=True,
        )
        (home / "pools.json").write_text(pools.stdout)
        airflow.airflow("pools", "import", str(home / "pools.json"))
        return airflow

    yield make
    for airflow in started:
        airflow.stop()


def trigger_and_wait(airflow: AirflowServices, conf: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Refuse a bad conf, unpause the flow's DAG, trigger it with ``conf``, wait for the run to
    succeed; returns the task's XCom and its task instance, as the REST API shows them."""
    t0 = time.perf_counter()
    airflow.wait_for("the api-server", airflow.healthy, STARTUP_TIMEOUT)
    airflow.wait_for(
        f"DAG {FLOW_DAG} to be parsed", lambda: airflow.request("GET", f"/api/v2/dags/{FLOW_DAG}")[0] == 200,
        STARTUP_TIMEOUT,
    )
    print(f"services up and DAGs parsed: {time.perf_counter() - t0:.1f}s")

    status, body = airflow.request(
        "POST", f"/api/v2/dags/{FLOW_DAG}/dagRuns", {"logical_date": None, "conf": {"plants": ["1000;DROP"]}},
    )
    assert status == 400 and "plants" in body["detail"], body

    status, body = airflow.request("PATCH", f"/api/v2/dags/{FLOW_DAG}", {"is_paused": False})
    assert status == 200, body
    t0 = time.perf_counter()
    status, body = airflow.request("POST", f"/api/v2/dags/{FLOW_DAG}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200, body
    run_id = body["dag_run_id"]
    assert body["conf"] == conf

    def finished() -> str | None:
        state = airflow.request("GET", f"/api/v2/dags/{FLOW_DAG}/dagRuns/{run_id}")[1]["state"]
        return state if state in ("success", "failed") else None

    state = airflow.wait_for(f"run {run_id}", finished, RUN_TIMEOUT)
    print(f"triggered run {state} after {time.perf_counter() - t0:.1f}s")
    assert state == "success", airflow.logs()
    task_path = f"/api/v2/dags/{FLOW_DAG}/dagRuns/{run_id}/taskInstances/sync"
    status, entry = airflow.request("GET", f"{task_path}/xcomEntries/return_value")
    assert status == 200, entry
    value = entry["value"]
    status, task = airflow.request("GET", task_path)
    assert status == 200, task
    return (json.loads(value) if isinstance(value, str) else value), task


def equipment_rows(mes_url: str) -> int:
    engine = create_db_engine(mes_url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM equipment")).scalar_one())
    finally:
        engine.dispose()


def dag_runs(airflow: AirflowServices, dag_id: str) -> list[dict[str, Any]]:
    status, body = airflow.request("GET", f"/api/v2/dags/{dag_id}/dagRuns")
    assert status == 200, body
    return list(body["dag_runs"])


def run_state(airflow: AirflowServices, dag_id: str, run_id: str) -> str:
    return str(airflow.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")[1]["state"])


def is_paused(airflow: AirflowServices, dag_id: str) -> bool:
    status, body = airflow.request("GET", f"/api/v2/dags/{dag_id}")
    assert status == 200, body
    return bool(body["is_paused"])


def wait_finished(airflow: AirflowServices, dag_id: str, run_id: str) -> str:
    def finished() -> str | None:
        state = run_state(airflow, dag_id, run_id)
        return state if state in ("success", "failed") else None

    return str(airflow.wait_for(f"run {run_id} of {dag_id}", finished, RUN_TIMEOUT))


def sync_summary(airflow: AirflowServices, run_id: str) -> dict[str, Any]:
    status, entry = airflow.request(
        "GET", f"/api/v2/dags/{FLOW_DAG}/dagRuns/{run_id}/taskInstances/sync/xcomEntries/return_value",
    )
    assert status == 200, entry
    value = entry["value"]
    return dict(json.loads(value) if isinstance(value, str) else value)


def test_a_new_dag_waits_paused_runs_as_readme_says_and_only_changes_wake_the_warehouse(
    tmp_path: Path, services: Callable[[dict[str, str]], AirflowServices],
) -> None:
    urls = {n: URL.create("sqlite", database=str(tmp_path / f"{n}.db")) for n in ("erp", "mes", "warehouse")}
    demo = fill_demo(urls, tmp_path)
    env = base_environment(tmp_path / "airflow", free_port(), demo)
    env["AIRFLOW__CORE__EXECUTOR"] = "LocalExecutor"
    airflow = services(env)
    airflow.start("api-server", "api-server")
    airflow.start("scheduler", "scheduler")
    airflow.start("dag-processor", "dag-processor")
    airflow.wait_for("the api-server", airflow.healthy, STARTUP_TIMEOUT)
    airflow.wait_for(
        f"DAG {FLOW_DAG} to be parsed", lambda: airflow.request("GET", f"/api/v2/dags/{FLOW_DAG}")[0] == 200,
        STARTUP_TIMEOUT,
    )
    # A new flow's DAG starts paused (paused_on_create in mappings/defaults.yaml).
    assert is_paused(airflow, FLOW_DAG)

    # A refused trigger creates no run and leaves the DAG paused.
    status, body = airflow.request(
        "POST", f"/api/v2/dags/{FLOW_DAG}/dagRuns", {"logical_date": None, "conf": {"plants": ["1000;DROP"]}},
    )
    assert status == 400 and "plants" in body["detail"], body
    # The accepted form, in words (the refusal prints the schema wrapped and quoted).
    assert "1 to 10 letters or digits" in " ".join(body["detail"].replace("'", "").split()), body
    assert is_paused(airflow, FLOW_DAG) and dag_runs(airflow, FLOW_DAG) == []

    # The warehouse DAG listens to every sync flow's table.
    status, body = airflow.request("PATCH", f"/api/v2/dags/{WAREHOUSE_DAG}", {"is_paused": False})
    assert status == 200, body

    # Triggering does not unpause: the run waits in queued while the scheduler goes round.
    conf = {"full_refresh": True, "plants": ["1000", "2000"]}
    status, body = airflow.request("POST", f"/api/v2/dags/{FLOW_DAG}/dagRuns", {"logical_date": None, "conf": conf})
    assert status == 200 and body["conf"] == conf, body
    waiting = body["dag_run_id"]
    time.sleep(PAUSED_WAIT)
    assert run_state(airflow, FLOW_DAG, waiting) == "queued" and is_paused(airflow, FLOW_DAG)

    # docs/running-under-airflow.md: unpause, then the queued run goes; a trigger of the unpaused DAG runs as well.
    status, body = airflow.request("PATCH", f"/api/v2/dags/{FLOW_DAG}", {"is_paused": False})
    assert status == 200, body
    assert wait_finished(airflow, FLOW_DAG, waiting) == "success", airflow.logs()
    # Unpausing also starts the run of the schedule's latest interval (catchup is off: only that).
    runs = dag_runs(airflow, FLOW_DAG)
    assert {r["run_type"] for r in runs} == {"manual", "scheduled"} and len(runs) == 2, runs
    assert all(wait_finished(airflow, FLOW_DAG, r["dag_run_id"]) == "success" for r in runs), airflow.logs()
    summaries = {r["dag_run_id"]: sync_summary(airflow, r["dag_run_id"]) for r in runs}
    (changed,) = [run_id for run_id, summary in summaries.items() if summary["rows_loaded"] > 0]
    assert equipment_rows(demo["mes"]) == summaries[changed]["rows_loaded"] > 0

    # The run that loaded rows woke the warehouse once; the other loaded nothing and added no event.
    airflow.wait_for("the warehouse run the sync's asset event queues",
                     lambda: dag_runs(airflow, WAREHOUSE_DAG), STARTUP_TIMEOUT)
    (woken,) = dag_runs(airflow, WAREHOUSE_DAG)
    assert woken["run_type"] == "asset_triggered", woken

    status, body = airflow.request("POST", f"/api/v2/dags/{FLOW_DAG}/dagRuns", {"logical_date": None, "conf": {}})
    assert status == 200, body
    noop = body["dag_run_id"]
    assert wait_finished(airflow, FLOW_DAG, noop) == "success", airflow.logs()
    unchanged = sync_summary(airflow, noop)
    assert unchanged["rows_loaded"] == 0 and unchanged["rows_deleted"] == 0, unchanged

    # A run that changed nothing adds no asset event: nothing queued, no second warehouse run.
    status, events = airflow.request("GET", f"/api/v2/assets/events?source_dag_id={FLOW_DAG}")
    assert status == 200, events
    assert [e["source_run_id"] for e in events["asset_events"]] == [changed], events
    time.sleep(PAUSED_WAIT)
    status, queued = airflow.request("GET", f"/api/v2/dags/{WAREHOUSE_DAG}/assets/queuedEvents")
    assert status == 404 or queued["total_entries"] == 0, queued
    assert [r["dag_run_id"] for r in dag_runs(airflow, WAREHOUSE_DAG)] == [woken["dag_run_id"]]


def redis_reachable() -> bool:
    try:
        with socket.create_connection(REDIS, timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture
def redis_broker() -> str:
    """The machine's Redis, started if it is down; skipped loudly (failed under CI) otherwise."""
    if not redis_reachable():
        subprocess.run(
            ["redis-server", "--daemonize", "yes", "--bind", "127.0.0.1", "--port", str(REDIS[1]),
             "--save", "", "--appendonly", "no"],
            capture_output=True, check=False,
        )
        for _ in range(20):
            if redis_reachable():
                break
            time.sleep(0.5)
    if not redis_reachable():
        message = f"Redis at {REDIS[0]}:{REDIS[1]} is not reachable and could not be started"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip("SKIPPED LOUDLY: " + message)
    return f"redis://{REDIS[0]}:{REDIS[1]}/0"


@pytest.mark.postgres
def test_a_flow_dag_on_celery_workers_with_postgres_metadata(
    tmp_path: Path, services: Callable[[dict[str, str]], AirflowServices],
    pg_database: Callable[[str], URL], redis_broker: str,
) -> None:
    demo = fill_demo({n: pg_database(n) for n in ("erp", "mes", "warehouse")}, tmp_path)
    metadata = pg_database("airflow").render_as_string(hide_password=False)
    # A queue of its own, so this test's tasks never meet another Celery worker on the same Redis.
    queue = f"erp_mes_sync_test_{uuid.uuid4().hex[:8]}"
    env = base_environment(tmp_path / "airflow", free_port(), demo)
    env.update({
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
        "AIRFLOW__CELERY__BROKER_URL": redis_broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata,
        "AIRFLOW__OPERATORS__DEFAULT_QUEUE": queue,
    })
    airflow = services(env)
    airflow.start("api-server", "api-server")
    airflow.start("scheduler", "scheduler")
    airflow.start("dag-processor", "dag-processor")
    airflow.start("celery-worker", "celery", "worker", "--concurrency", "1", "--queues", queue)

    summary, task = trigger_and_wait(airflow, {"full_refresh": True})
    assert summary["outcome"] == "success" and summary["rows_read"] > 0
    assert equipment_rows(demo["mes"]) == summary["rows_read"]
    # Only the worker started here listens on this queue: it ran the task.
    assert task["queue"] == queue and task["try_number"] == 1, task
