"""The demo, run through Airflow: each sync flow's DAG runs once with ``dag.test()``, in dependency
order, then the warehouse DAG (warehouse flows, material history, dashboard).

``dag.test()`` runs a DAG in this process, without a scheduler, but with everything else a real
run has: a DAG run and task instance in Airflow's metadata database, the task runner, params,
XCom, asset events, retries. The runs show in the UI of ``make airflow``, which uses the same
metadata database. Call ``prepare`` before anything else here: Airflow reads its configuration
when it is first imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

from etl.config.flows import Project
from etl.config.paths import REPO_ROOT


def airflow_environment(airflow_home: Path) -> dict[str, str]:
    """The settings of the demo's Airflow: its own home and metadata, our DAGs, no examples."""
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }


def migrate_metadata_db() -> None:
    """Create or upgrade Airflow's metadata database (``airflow db migrate``); raises on failure."""
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True, check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{done.stdout}{done.stderr}")


def run_flow_dag(dag: Any, task_id: str | None = None) -> Any:
    """Run one DAG with ``dag.test()``; returns the XCom of its task ``task_id`` (a flow DAG's
    sync task by default: run id, outcome, counts), or None if the run failed (the task's log,
    printed above, says why)."""
    from etl.airflow.dag_factory import TASK_ID

    task_id = task_id or TASK_ID

    with warnings.catch_warnings():
        # dag.test() talks to an in-process API server through a test client that warns.
        warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
        dag_run = dag.test()
    task = dag_run.get_task_instance(task_id)
    if dag_run.state != "success" or task is None:
        return None
    return task.xcom_pull(task_ids=task_id)


def run_all_through_airflow(project: Project) -> tuple[list[dict[str, Any]], list[str]]:
    """Run every flow's DAG in dependency order; a failed flow skips the flows that depend on it.

    Returns one summary row per successful run (the columns of ``python -m etl run all``) and
    the names of the flows that failed or were skipped.
    """
    from etl.airflow.dag_factory import WAREHOUSE_DAG_ID, build_dags, dag_id_of

    dags = build_dags(project.mappings_dir)
    rows: list[dict[str, Any]] = []
    failed: list[str] = []
    for name, flow in project.flows.items():
        if flow.direction == "warehouse":
            continue
        blocked = [d for d in flow.depends_on if d in failed]
        if blocked:
            failed.append(name)
            print(f"skipped {name}: depends on failed flow(s) {', '.join(blocked)}", file=sys.stderr)
            continue
        summary = run_flow_dag(dags[dag_id_of(name)])
        if summary is None:
            failed.append(name)
            print(f"FAILED {name}: DAG {dag_id_of(name)} failed; its task log above says why", file=sys.stderr)
            continue
        rows.append({"flow": name, "direction": flow.direction, **summary})
    if WAREHOUSE_DAG_ID in dags:
        warehouse = run_flow_dag(dags[WAREHOUSE_DAG_ID], task_id="refresh")
        if warehouse is None:
            failed.append(WAREHOUSE_DAG_ID)
            print(f"FAILED DAG {WAREHOUSE_DAG_ID}; its task log above says why", file=sys.stderr)
        else:
            rows += [{"direction": "warehouse", **summary} for summary in warehouse]
    return rows, failed


def prepare(airflow_home: Path) -> None:
    """Point this process at the demo's Airflow and make its metadata database current."""
    os.environ.update(airflow_environment(airflow_home))
    # Airflow's own chatter would drown the summary; the flows' warnings and errors still show.
    os.environ.setdefault("AIRFLOW__LOGGING__LOGGING_LEVEL", "WARNING")
    airflow_home.mkdir(parents=True, exist_ok=True)
    migrate_metadata_db()
