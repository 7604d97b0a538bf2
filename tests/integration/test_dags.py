"""The Airflow DAGs: integrity of dags/, the trigger form, and real runs with dag.test() against
the demo factory on SQLite and on the real PostgreSQL server.

Airflow reads its configuration once, when first imported, so every Airflow import here
happens inside a test, after the session fixture ``airflow_home`` (conftest.py) has set the
environment.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL

from demo.setup import init_demo
from etl.config.flows import Project
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.sync.connections import CONNECTIONS_FILE_ENV, Connections, create_db_engine
from etl.sync.ledger import RunCounts

ORDERS = 120
# The demo factory's clock for this file: the rows its tests write by hand are dated against it.
DEMO_AS_OF = datetime(2026, 11, 20, 8, 0)
LEDGER_COUNTS = {f.name for f in fields(RunCounts)}


@dataclass
class Demo:
    project: Project
    erp: Engine
    mes: Engine
    urls: dict[str, URL]

    def dag(self, flow: str) -> Any:
        """A freshly built DAG: dag.test() runs the task in this process, and the run's params
        stay on the DAG object it was given (a worker parses the DAG file anew for each task)."""
        from etl.airflow.dag_factory import build_dag

        return build_dag(self.project, self.project.flow(flow))

    def dispose(self) -> None:
        self.erp.dispose()
        self.mes.dispose()


def make_demo(urls: dict[str, URL], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Demo:
    """Fill the demo databases at ``urls``; Airflow knows them only through AIRFLOW_CONN_* variables."""
    rendered = {n: u.render_as_string(hide_password=False) for n, u in urls.items()}
    init_demo(
        erp_url=rendered["erp"], mes_url=rendered["mes"], warehouse_url=rendered["warehouse"],
        orders=ORDERS, seed=11, connections_file=tmp_path / "connections.json", as_of=DEMO_AS_OF,
    )
    monkeypatch.setenv(CONNECTIONS_FILE_ENV, str(tmp_path / "absent.json"))
    for name, url in rendered.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{name.upper()}_DB", url)
    return Demo(load_project(), create_db_engine(urls["erp"]), create_db_engine(urls["mes"]), urls)


def sqlite_urls_in(folder: Path) -> dict[str, URL]:
    return {n: URL.create("sqlite", database=str(folder / f"{n}.db")) for n in ("erp", "mes", "warehouse")}


@pytest.fixture(params=["sqlite", "postgresql"])
def demo(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_home: Path,
) -> Iterator[Demo]:
    """A fresh demo factory, on SQLite files and on the real PostgreSQL server."""
    if request.param == "sqlite":
        urls = sqlite_urls_in(tmp_path)
    else:
        make: Callable[[str], URL] = request.getfixturevalue("pg_database")
        urls = {n: make(n) for n in ("erp", "mes", "warehouse")}
    demo = make_demo(urls, tmp_path, monkeypatch)
    yield demo
    demo.dispose()


@pytest.fixture
def sqlite_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, airflow_home: Path) -> Iterator[Demo]:
    """A fresh demo factory on SQLite only, for failure paths one database shows well enough."""
    demo = make_demo(sqlite_urls_in(tmp_path), tmp_path, monkeypatch)
    yield demo
    demo.dispose()


def run_dag(dag: Any, conf: dict[str, Any] | None = None) -> tuple[Any, Any, dict[str, Any] | None]:
    """Run a DAG once with dag.test(); returns the DAG run, its task instance and the XCom."""
    from etl.airflow.dag_factory import TASK_ID

    started = time.perf_counter()
    dag_run = dag.test(run_conf=conf)
    print(f"dag.test({dag.dag_id}, {conf or {}}): {time.perf_counter() - started:.2f}s")
    task = dag_run.get_task_instance(TASK_ID)
    return dag_run, task, task.xcom_pull(task_ids=TASK_ID)


def with_recipients(project: Project, recipients: list[str]) -> Project:
    """``project`` with the report and alert mails going to ``recipients``."""
    from etl.config.flows import ReportSettings

    defaults = project.defaults.model_copy(update={"report": ReportSettings(recipients=recipients)})
    return project.model_copy(update={"defaults": defaults})


def build_dag_of(project: Project, flow: str) -> Any:
    from etl.airflow.dag_factory import build_dag

    return build_dag(project, project.flow(flow))


def count(engine: Engine, table: str, where: str = "") -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(f"SELECT count(*) FROM {table} {where}")).scalar_one())


def ledger_row(engine: Engine, run_id: str) -> dict[str, Any]:
    with engine.connect() as conn:
        row = conn.execute(text("SELECT * FROM etl_ledger WHERE run_id = :id"), {"id": run_id}).mappings().one()
    return dict(row)


def validated_form(dag: Any, conf: dict[str, Any]) -> dict[str, Any]:
    """The run's params as Airflow checks them when a run is triggered with ``conf``."""
    params = copy.deepcopy(dag.params)
    params.update(conf)
    return params.validate()


def words(text: object) -> str:
    """``text`` without quotes, on one line: Airflow's refusal wraps and quotes the schema it prints."""
    return " ".join(str(text).replace("'", "").replace('"', "").split())


def fresh_parse_seconds() -> float:
    """Seconds a new Python process with Airflow loaded takes to parse dags/ (our imports included)."""
    script = (
        "import time, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "started = time.perf_counter()\n"
        f"bag = DagBag(dag_folder={str(REPO_ROOT / 'dags')!r})\n"
        "assert not bag.import_errors, bag.import_errors\n"
        "print(time.perf_counter() - started)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def test_every_flow_file_yields_a_dag_as_declared(airflow_home: Path) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from etl.airflow.dag_factory import (
        REPORT_DAG_ID,
        RETRIES,
        TASK_ID,
        WAREHOUSE_DAG_ID,
        WAREHOUSE_REBUILD_DAG_ID,
        changes_alias,
        dag_id_of,
        pool_of,
        target_asset,
    )
    from etl.reporting.alerts import FailureAlert

    started = time.perf_counter()
    bag = DagBag(dag_folder=str(REPO_ROOT / "dags"))
    print(f"\nDagBag parse of dags/ in this process: {time.perf_counter() - started:.2f}s for {len(bag.dags)} DAGs")
    print(f"DagBag parse of dags/ in a fresh process, as the dag-processor does: {fresh_parse_seconds():.2f}s")

    assert bag.import_errors == {}
    project = load_project()
    sync = {name: flow for name, flow in project.flows.items() if flow.direction != "warehouse"}
    assert set(bag.dags) == {dag_id_of(name) for name in sync} | {WAREHOUSE_DAG_ID, WAREHOUSE_REBUILD_DAG_ID, REPORT_DAG_ID}
    for name, flow in sync.items():
        dag = bag.dags[dag_id_of(name)]
        dag.check_cycle()
        assert dag.schedule == project.schedule_of(flow), name
        assert dag.catchup is False and dag.max_active_runs == 1
        assert flow.direction in dag.tags
        assert ("master_data" in dag.tags) == ("master_data" in flow.tags)
        assert set(dag.params) == {"full_refresh", "since", "dry_run", "plants"}
        assert dag.params["full_refresh"] is False and dag.params["plants"] == []
        # The UI marks a field required unless its type allows null: an empty `plants` means all.
        assert "null" in dag.params.get_param("plants").schema["type"]
        assert "format" not in dag.params.get_param("since").schema  # no picker labelled UTC
        assert all("Accepts " in dag.params.get_param(p).description for p in dag.params)
        assert dag.is_paused_upon_creation is project.paused_on_create(flow) is True
        assert flow.source.table in dag.doc_md and flow.target.table in dag.doc_md
        assert all(f"`{c.target}`" in dag.doc_md for c in flow.columns)
        (task,) = dag.tasks
        assert task.task_id == TASK_ID
        assert task.pool == pool_of(flow) == f"{flow.source.connection}_pool"
        assert task.retries == RETRIES and task.retry_exponential_backoff > 1
        assert task.execution_timeout is not None and task.execution_timeout <= timedelta(hours=3)
        # Events reach the table's asset through the alias, only from runs that changed it.
        assert task.outlets == [changes_alias(flow)]
        assert target_asset(flow).uri == f"x-erpmes://{flow.target.connection}/{flow.target.table}"
        (alert,) = task.on_failure_callback
        assert isinstance(alert, FailureAlert) and alert.flow == name
    schedules = {bag.dags[dag_id_of(n)].schedule for n in ("materials", "production_orders", "confirmations")}
    assert schedules == {"0 1 * * *", "@hourly", "*/15 * * * *"}

    # The warehouse runs when any sync flow has written its table, and rebuilds nightly.
    warehouse = bag.dags[WAREHOUSE_DAG_ID]
    watched = {asset.uri for asset in warehouse.timetable.asset_condition.objects}
    assert watched == {target_asset(flow).uri for flow in sync.values()}
    assert [t.task_id for t in warehouse.topological_sort()] == ["refresh", "dashboard"]
    rebuild = bag.dags[WAREHOUSE_REBUILD_DAG_ID]
    assert rebuild.schedule == "0 3 * * *" and rebuild.params["full_rebuild"] is True
    assert warehouse.params["full_rebuild"] is False

    # The data-quality report every morning at 06:00.
    report = bag.dags[REPORT_DAG_ID]
    assert report.schedule == "0 6 * * *" and [t.task_id for t in report.tasks] == ["report"]


def test_trigger_form_accepts_good_values_and_refuses_bad_ones(airflow_home: Path) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    from etl.airflow.dag_factory import build_dags, dag_id_of

    dag = build_dags()[dag_id_of("production_orders")]
    good = [
        {},
        {"full_refresh": True, "dry_run": True},
        {"since": "2026-11-20T08:00"},
        {"since": "2026-11-20T08:00:00+08:00"},
        {"since": None, "plants": ["1000", "2000"]},
        {"plants": None},
    ]
    for conf in good:
        validated_form(dag, conf)
    bad = [
        {"plants": ["1000;DROP"]},
        {"plants": "1000"},
        {"plants": ["1000", "1000"]},
        {"since": "yesterday"},
        {"since": "2026-11-20; DROP TABLE x"},
        {"full_refresh": "yes"},
        {"dry_run": 1},
    ]
    for conf in bad:
        with pytest.raises(ParamValidationError):
            validated_form(dag, conf)
    # The same check refuses the run before anything is created or executed, in words too.
    with pytest.raises(ParamValidationError, match="1000;DROP") as refused:
        dag.test(run_conf={"plants": ["1000;DROP"]})
    assert "plants accepts a list of distinct ERP plant codes of 1 to 10 letters or digits" in words(refused.value)
    with pytest.raises(ParamValidationError) as refused:
        dag.test(run_conf={"since": "yesterday"})
    assert "since accepts a timestamp on the sources clock, YYYY-MM-DD or YYYY-MM-DD HH:MM[:SS]" in words(refused.value)


def test_the_task_names_every_bad_parameter_with_its_accepted_form(airflow_home: Path) -> None:
    from etl.airflow.dag_factory import ACCEPTED_FORMS, trigger_problems

    assert trigger_problems({"full_refresh": True, "since": "2026-11-20 08:00", "plants": ["1000"]}) == []
    problems = {p.name: p.message for p in trigger_problems(
        {"full_refesh": True, "since": "yesterday", "plants": ["1000;DROP"], "dry_run": "yes"}
    )}
    assert set(problems) == {"full_refesh", "since", "plants", "dry_run"}
    assert problems["full_refesh"].startswith("unknown parameter; did you mean 'full_refresh'?")
    assert problems["since"] == f'got "yesterday"; accepts {ACCEPTED_FORMS["since"]}'
    assert "YYYY-MM-DD HH:MM" in problems["since"] and "1 to 10 letters or digits" in problems["plants"]
    assert all("schema" not in m and "^" not in m for m in problems.values())


@pytest.mark.slow
def test_a_flow_dag_loads_rows_writes_the_ledger_and_updates_its_asset(demo: Demo) -> None:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    from etl.airflow.dag_factory import target_asset

    _, _, dry = run_dag(demo.dag("materials"), {"dry_run": True})
    assert dry is not None and dry["outcome"] == "dry_run" and dry["rows_loaded"] > 0 == count(demo.mes, "item")
    dag_run, task, summary = run_dag(demo.dag("materials"))
    assert dag_run.state == "success" and task.try_number == 1
    assert summary is not None and set(summary) == {"run_id", "outcome", "seconds"} | LEDGER_COUNTS
    assert len(json.dumps(summary)) < 1000  # counts, never rows
    assert summary["outcome"] == "success"
    assert summary["rows_loaded"] == count(demo.mes, "item") > 0
    assert summary["rows_new_in_quarantine"] == 1  # MAT-A00001 has no crosswalk entry
    ledger = ledger_row(demo.mes, summary["run_id"])
    assert ledger["outcome"] == "success" and ledger["rows_loaded"] == summary["rows_loaded"]

    asset = target_asset(demo.project.flow("materials"))
    with create_session() as session:
        events = (
            session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == asset.uri).all()
        )
        assert any(e.extra.get("run_id") == summary["run_id"] and e.extra.get("rows_loaded") == summary["rows_loaded"] for e in events)

    _, _, again = run_dag(demo.dag("materials"))
    assert again is not None and again["outcome"] == "success"
    assert again["rows_loaded"] == 0 and again["rows_new_in_quarantine"] == 0
    # Neither the run that changed nothing nor the dry run woke the table's consumers.
    with create_session() as session:
        runs = [
            e.extra.get("run_id") for e in session.query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == asset.uri).all()
        ]
    assert summary["run_id"] in runs and again["run_id"] not in runs and dry["run_id"] not in runs


@pytest.mark.slow
def test_dry_run_loads_nothing_and_plants_limit_the_run(demo: Demo) -> None:
    _, _, dry = run_dag(demo.dag("work_centers"), {"dry_run": True})
    assert dry is not None and dry["outcome"] == "dry_run" and dry["rows_loaded"] > 0
    assert count(demo.mes, "equipment") == 0
    assert ledger_row(demo.mes, dry["run_id"])["outcome"] == "dry_run"

    _, _, one_plant = run_dag(demo.dag("work_centers"), {"plants": ["1000"]})
    assert one_plant is not None and one_plant["outcome"] == "success"
    assert 0 < one_plant["rows_loaded"] < dry["rows_loaded"]
    assert count(demo.mes, "equipment") == one_plant["rows_loaded"]


@pytest.mark.slow
def test_full_refresh_reloads_what_an_incremental_run_skips(demo: Demo) -> None:
    # Three work centers last changed long ago: outside every incremental window from now on.
    with demo.erp.begin() as conn:
        conn.execute(text(
            "UPDATE work_center SET updated_at = '2020-01-01 00:00:00' WHERE work_center IN "
            "(SELECT work_center FROM work_center ORDER BY work_center LIMIT 3)"
        ))
    _, _, first = run_dag(demo.dag("work_centers"))
    assert first is not None and first["rows_loaded"] == count(demo.mes, "equipment") > 3
    with demo.mes.begin() as conn:
        conn.execute(text("DELETE FROM equipment"))

    _, _, incremental = run_dag(demo.dag("work_centers"))
    assert incremental is not None and incremental["rows_loaded"] == first["rows_loaded"] - 3

    _, _, full = run_dag(demo.dag("work_centers"), {"full_refresh": True})
    assert full is not None and full["rows_read"] == first["rows_read"] and full["rows_loaded"] == 3
    assert count(demo.mes, "equipment") == first["rows_loaded"]


@pytest.mark.slow
def test_a_schema_error_fails_at_once_and_the_log_names_flow_file_and_column(
    sqlite_demo: Demo, capfd: pytest.CaptureFixture[str],
) -> None:
    with sqlite_demo.erp.begin() as conn:
        conn.execute(text("ALTER TABLE work_center RENAME COLUMN description TO descr"))

    dag_run, task, summary = run_dag(sqlite_demo.dag("work_centers"))
    assert dag_run.state == "failed" and task.state == "failed"
    assert task.try_number == 1, "a configuration error must not be retried"
    assert summary is None
    log = capfd.readouterr()
    output = log.out + log.err
    assert "mappings/flows/work_centers.yaml" in output
    assert "work_center.description" in output and "did you mean 'descr'" in output


@pytest.mark.slow
def test_a_conf_typo_is_refused_as_bad_trigger_parameters_alerted_and_counted_in_the_report(
    sqlite_demo: Demo, smtp_server: Any, tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    from etl.reporting.report import Window, build_report, generated_now

    project = with_recipients(sqlite_demo.project, ["qa-lead@plant.example", "it-oncall@plant.example"])
    dag_run, task, _ = run_dag(build_dag_of(project, "work_centers"), {"full_refesh": True, "plant": ["1000"]})
    assert dag_run.state == "failed" and task.try_number == 1, "bad parameters must not be retried"
    assert "did you mean 'full_refresh'?" in "".join(capfd.readouterr())
    assert count(sqlite_demo.mes, "equipment") == 0

    (mail,) = smtp_server.wait_for(1)
    assert mail.subject.startswith("[erp-mes-sync] REFUSED: sync_work_centers — bad trigger parameters: "
                                   "full_refesh: unknown parameter; did you mean 'full_refresh'?")
    assert "FAILED" not in mail.subject and "Not an outage" in mail.text
    assert "plant: unknown parameter; did you mean 'plants'?" in mail.text  # every problem, not the first

    with sqlite_demo.mes.connect() as conn:
        (row,) = conn.execute(text("SELECT run_id, outcome, error FROM etl_ledger WHERE flow = 'work_centers'")).all()
    assert row.outcome == "failed" and row.error.startswith("parameters: TriggerParametersInvalid: ")
    assert row.run_id in mail.text
    now = generated_now() + timedelta(seconds=1)  # the report's clock has whole seconds
    written = build_report(project, Connections(), tmp_path / "dq.html", Window(now - timedelta(hours=1), now))
    assert "1 flow failing" in written.subject
    assert "- work_centers: last run failed: parameters: TriggerParametersInvalid" in written.text


@pytest.mark.slow
def test_a_database_that_refuses_connections_is_retried(
    sqlite_demo: Demo, monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Nothing listens on port 1: the connection is refused, a transient error.
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DB", "postgres://sync_user@127.0.0.1:1/erp")
    from etl.airflow.dag_factory import TASK_ID

    dag = sqlite_demo.dag("work_centers")
    task = dag.get_task(TASK_ID)
    # One quick retry instead of minutes of backoff, to see it happen.
    task.retries, task.retry_delay, task.retry_exponential_backoff = 1, timedelta(0), 0

    dag_run, instance, _ = run_dag(dag)
    assert dag_run.state == "failed"
    assert instance.try_number == 2, "a refused connection must be retried"
    with sqlite_demo.mes.connect() as conn:
        outcomes = conn.execute(text("SELECT outcome, error FROM etl_ledger WHERE flow = 'work_centers'")).all()
    assert len(outcomes) == 2 and all(o.outcome == "failed" and "connect" in o.error for o in outcomes)


@pytest.mark.slow
@pytest.mark.postgres
def test_a_connection_kept_in_airflow_is_used_and_its_password_never_logged(
    airflow_home: Path, pg_database: Callable[[str], URL], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    demo = make_demo({n: pg_database(n) for n in ("erp", "mes", "warehouse")}, tmp_path, monkeypatch)
    monkeypatch.delenv("AIRFLOW_CONN_MES_DB")
    # The test server trusts local connections, so any password works, and this one must not leak.
    secret = "Pl4nt-S3cret-do-not-log"
    mes = demo.urls["mes"]
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "mes_db").delete()
        session.add(Connection(
            conn_id="mes_db", conn_type="postgres", host=mes.host, port=mes.port,
            login=mes.username, password=secret, schema=mes.database,
        ))
    try:
        dag_run, _, summary = run_dag(demo.dag("work_centers"))
        assert dag_run.state == "success" and summary is not None and summary["rows_loaded"] > 0
        assert count(demo.mes, "equipment") == summary["rows_loaded"]
        assert secret not in "".join(capfd.readouterr())
    finally:
        demo.dispose()
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "mes_db").delete()


@pytest.mark.slow
def test_a_sqlite_connection_kept_in_airflow_is_found(sqlite_demo: Demo, monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow.models.connection import Connection
    from airflow.utils.session import create_session

    monkeypatch.delenv("AIRFLOW_CONN_MES_DB")
    # As the UI stores a SQLite connection: the file path in the host field.
    with create_session() as session:
        session.query(Connection).filter(Connection.conn_id == "mes_db").delete()
        session.add(Connection(conn_id="mes_db", conn_type="sqlite", host=sqlite_demo.urls["mes"].database))
    try:
        dag_run, _, summary = run_dag(sqlite_demo.dag("work_centers"))
    finally:
        with create_session() as session:
            session.query(Connection).filter(Connection.conn_id == "mes_db").delete()
    assert dag_run.state == "success" and summary is not None
    assert count(sqlite_demo.mes, "equipment") == summary["rows_loaded"] > 0


@pytest.mark.slow
def test_the_demo_runs_through_airflow_and_a_rerun_loads_nothing(tmp_path: Path) -> None:
    demo_dir = tmp_path / "demo"
    env = {**os.environ, CONNECTIONS_FILE_ENV: str(demo_dir / "connections.json")}
    for name in ("ERP", "MES", "WAREHOUSE"):
        env.pop(f"AIRFLOW_CONN_{name}_DB", None)
    urls = [f"--{n}-url=sqlite:///{demo_dir / (n + '.db')}" for n in ("erp", "mes", "warehouse")]
    init = subprocess.run(
        [sys.executable, "-m", "etl", "demo", "init", *urls, "--orders", str(ORDERS), "--as-of", DEMO_AS_OF.isoformat(),
         "--connections-file", env[CONNECTIONS_FILE_ENV]],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert init.returncode == 0, init.stderr

    def demo_through_airflow() -> dict[str, list[str]]:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "etl", "demo", "airflow", "--airflow-home", str(tmp_path / "airflow")],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600,
        )
        print(f"python -m etl demo airflow: {time.perf_counter() - started:.1f}s")
        assert done.returncode == 0, done.stdout + done.stderr
        lines = done.stdout.strip().splitlines()
        header = lines.index(next(line for line in lines if line.startswith("flow ")))
        return {line.split()[0]: line.split() for line in lines[header + 2:]}

    first = demo_through_airflow()
    assert list(first) == list(load_project().flows)
    assert all(row[-1] == "success" for row in first.values())
    assert int(first["production_orders"][4]) > 0  # loaded
    second = demo_through_airflow()
    assert all(row[4] == "0" and row[6] == "0" for row in second.values())  # loaded, new quarantined


@pytest.mark.slow
def test_a_failed_sync_mails_an_alert_with_the_flow_the_error_and_what_to_do(
    sqlite_demo: Demo, smtp_server: Any, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str],
) -> None:
    # The ERP renamed a mapped column: the run fails for real, at once, and the alert goes out.
    with sqlite_demo.erp.begin() as conn:
        conn.execute(text("ALTER TABLE work_center RENAME COLUMN description TO descr"))
    recipients = ["it-oncall@plant.example"]
    project = with_recipients(sqlite_demo.project, recipients)
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.plant.example")
    # The masker warns once per process; as in a fresh task process, it has not warned yet.
    from airflow.sdk._shared.secrets_masker.secrets_masker import SecretsMasker
    monkeypatch.setattr(SecretsMasker, "_has_warned_short_secret", False)

    dag_run, task, _ = run_dag(build_dag_of(project, "work_centers"))
    assert dag_run.state == "failed" and task.try_number == 1
    assert "Skipping masking for a secret" not in "".join(capfd.readouterr())

    (mail,) = smtp_server.wait_for(1)
    assert mail.rcpt_tos == recipients
    # The subject keeps the cause: the missing column, not the file or the run id.
    assert mail.subject.startswith("[erp-mes-sync] FAILED: sync_work_centers — SchemaDriftError: ")
    assert "work_center.description not found" in mail.subject, mail.subject
    assert dag_run.run_id not in mail.subject and ".yaml" not in mail.subject
    body = mail.html
    assert "Sync of flow work_centers failed" in body
    assert "work_center.description" in body and "did you mean &#x27;descr&#x27;" in body  # the task's error
    assert body.count("mappings/flows/work_centers.yaml") == 1  # the full error, once
    log_link = f"https://airflow.plant.example/dags/sync_work_centers/runs/{quote(dag_run.run_id)}/tasks/sync"
    assert log_link in body and log_link in mail.text  # the task log, from [api] base_url
    assert dag_run.run_id in body  # the Airflow run
    with sqlite_demo.mes.connect() as conn:
        ledger_run = conn.execute(text("SELECT run_id FROM etl_ledger WHERE flow = 'work_centers'")).scalar_one()
    assert ledger_run in body  # the pipeline's own run, as in etl_ledger
    assert "A mapped table or column changed in the database" in body  # what to do next


@pytest.mark.slow
def test_a_failed_sync_without_recipients_sends_nothing_and_still_fails_cleanly(
    sqlite_demo: Demo, smtp_server: Any,
) -> None:
    with sqlite_demo.erp.begin() as conn:
        conn.execute(text("ALTER TABLE work_center RENAME COLUMN description TO descr"))
    assert sqlite_demo.project.defaults.report.recipients == []  # as mappings/defaults.yaml ships
    dag_run, task, _ = run_dag(sqlite_demo.dag("work_centers"))
    assert dag_run.state == "failed" and task.try_number == 1
    assert smtp_server.wait_for(1, timeout=2) == []


@pytest.mark.slow
def test_the_report_dag_writes_the_report_and_mails_it(
    sqlite_demo: Demo, smtp_server: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from etl.airflow.dag_factory import REPORT_PATH_ENV, REPORT_TASK_ID, build_report_dag

    run_dag(sqlite_demo.dag("work_centers"))
    recipients = ["qa-lead@plant.example"]
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO_ROOT / "mappings", mappings)
    shutil.copytree(REPO_ROOT / "expectations", tmp_path / "expectations")
    defaults = yaml.safe_load((mappings / "defaults.yaml").read_text(encoding="utf-8"))
    defaults["report"]["recipients"] = recipients
    (mappings / "defaults.yaml").write_text(yaml.safe_dump(defaults), encoding="utf-8")
    monkeypatch.setenv(REPORT_PATH_ENV, str(tmp_path / "dq.html"))

    dag_run = build_report_dag(load_project(mappings)).test()
    assert dag_run.state == "success"
    result = dag_run.get_task_instance(REPORT_TASK_ID).xcom_pull(task_ids=REPORT_TASK_ID)
    assert result["sent_to"] == recipients and result["path"] == str(tmp_path / "dq.html")
    (mail,) = smtp_server.wait_for(1)
    assert mail.subject == result["subject"] and mail.subject.startswith("[erp-mes-sync] ACTION NEEDED: ")
    assert "<a href='#flow-work_centers'>work_centers</a>" in mail.html
    # A text part beside the HTML, and no link to a file on the Airflow host.
    assert mail.message.get_content_type() == "multipart/alternative"
    assert mail.text.startswith(mail.subject) and "- work_centers: " in mail.text
    assert "file://" not in mail.html + mail.text
