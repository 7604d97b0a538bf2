"""`python -m etl` as a person uses it: check, demo init, run, runs, quarantine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from etl.config.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def etl(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl", *args], cwd=REPO_ROOT, env={**os.environ, **(env or {})},
        capture_output=True, text=True, timeout=600,
    )


def _table_rows(output: str) -> dict[str, list[str]]:
    """The summary table's data rows by flow name."""
    lines = output.strip().splitlines()
    header = lines.index(next(row for row in lines if row.startswith("flow ")))
    return {line.split()[0]: line.split() for line in lines[header + 2:] if line.strip()}


def test_check_accepts_the_shipped_mappings() -> None:
    done = etl("check")
    assert done.returncode == 0, done.stderr
    assert f"{len(list((REPO_ROOT / 'mappings' / 'flows').glob('*.yaml')))} flows" in done.stdout


def test_a_typo_gives_one_line_with_file_key_path_and_expectation(tmp_path: Path) -> None:
    mappings = tmp_path / "mappings"
    shutil.copytree(REPO_ROOT / "mappings", mappings)
    shutil.copytree(REPO_ROOT / "expectations", tmp_path / "expectations")
    flow = mappings / "flows" / "work_centers.yaml"
    flow.write_text(flow.read_text().replace("{target: name, source: description}", "{target: name, souce: description}"))
    done = etl("--mappings", str(mappings), "check")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"{flow}: columns[2].souce: unknown key (did you mean 'source'?")


def test_demo_init_run_rerun_runs_and_quarantine(tmp_path: Path) -> None:
    env = {"ETL_CONNECTIONS_FILE": str(tmp_path / "connections.json")}
    urls = [f"--{n}-url=sqlite:///{tmp_path / (n + '.db')}" for n in ("erp", "mes", "warehouse")]
    init = etl("demo", "init", *urls, "--orders", "150", "--as-of", "2026-11-20T08:00",
               "--connections-file", env["ETL_CONNECTIONS_FILE"], env=env)
    assert init.returncode == 0, init.stderr

    first = etl("run", "all", env=env)
    assert first.returncode == 0, first.stderr
    rows = _table_rows(first.stdout)
    assert {"materials", "production_orders", "confirmations", "goods_receipts"} <= set(rows)
    assert int(rows["production_orders"][4]) > 0  # loaded

    second = etl("run", "all", env=env)
    assert second.returncode == 0, second.stderr
    rows = _table_rows(second.stdout)
    assert all(r[4] == "0" and r[6] == "0" for r in rows.values()), second.stdout  # loaded, new quarantined

    runs = etl("runs", "--limit", "5", env=env)
    assert runs.returncode == 0 and runs.stdout.count("success") == 5

    waiting = etl("quarantine", "materials", env=env)
    assert waiting.returncode == 0
    assert "material_no=MAT-A00001" in waiting.stdout and "1 row(s) waiting" in waiting.stdout

    dry = etl("run", "work_centers", "--full-refresh", "--dry-run", env=env)
    assert dry.returncode == 0 and "dry_run" in dry.stdout


def test_run_with_an_undefined_connection_says_which_variable_to_set(tmp_path: Path) -> None:
    done = etl("run", "materials", env={"ETL_CONNECTIONS_FILE": str(tmp_path / "none.json")})
    assert done.returncode == 2
    assert "AIRFLOW_CONN_" in done.stderr and "is not defined" in done.stderr
