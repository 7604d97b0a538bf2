"""`python -m etl warehouse build | refresh` and `python -m etl dashboard` as a person uses them."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from etl.config.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def etl(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "etl", *args], cwd=REPO_ROOT, env={**os.environ, **env},
        capture_output=True, text=True, timeout=600,
    )


@pytest.fixture
def demo_env(tmp_path: Path) -> dict[str, str]:
    env = {"ETL_CONNECTIONS_FILE": str(tmp_path / "connections.json")}
    urls = [f"--{n}-url=sqlite:///{tmp_path / (n + '.db')}" for n in ("erp", "mes", "warehouse")]
    init = etl("demo", "init", *urls, "--orders", "120", "--as-of", "2026-11-20T08:00",
               "--connections-file", env["ETL_CONNECTIONS_FILE"], env=env)
    assert init.returncode == 0, init.stderr
    return env


def test_build_refresh_rerun_and_dashboard(demo_env: dict[str, str], tmp_path: Path) -> None:
    for _ in range(2):
        built = etl("warehouse", "build", env=demo_env)
        assert built.returncode == 0, built.stderr
        assert "15 tables, 8 views" in built.stdout

    first = etl("warehouse", "refresh", env=demo_env)
    assert first.returncode == 0, first.stderr
    assert "wh_fact_operation_confirmation" in first.stdout
    assert "dim_material history: 61 version(s) opened" in first.stdout  # 60 materials + MAT-A00001

    again = etl("warehouse", "refresh", env=demo_env)
    assert again.returncode == 0, again.stderr
    loaded = [line.split()[4] for line in again.stdout.splitlines() if line.startswith("wh_")]
    assert loaded and set(loaded) == {"0"}, again.stdout
    assert "0 version(s) opened, 0 closed, 0 corrected, 0 overwritten" in again.stdout

    out = tmp_path / "report" / "dashboard.html"
    drawn = etl("dashboard", "--out", str(out), env=demo_env)
    assert drawn.returncode == 0, drawn.stderr
    assert drawn.stdout.strip() == f"dashboard written to {out}"
    assert "<h2>OEE</h2>" in out.read_text(encoding="utf-8")


def test_a_renamed_source_column_fails_its_flows_and_skips_what_depends_on_them(
    demo_env: dict[str, str], tmp_path: Path,
) -> None:
    with sqlite3.connect(tmp_path / "erp.db") as db:
        db.execute("ALTER TABLE work_center RENAME COLUMN plant TO werks")
    done = etl("warehouse", "refresh", env=demo_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "wh_dim_plant.yaml" in done.stderr and "source column work_center.plant not found" in done.stderr
    assert "skipped after them:" in done.stderr and "wh_fact_operation_confirmation" in done.stderr
    # Flows that do not need the plants still ran, and the material history with them.
    assert "wh_stg_material" in done.stdout and "dim_material history" in done.stdout
