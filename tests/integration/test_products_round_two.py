"""Issue 19 on the products' own servers (ERPNext on MariaDB, Odoo on PostgreSQL): what the
ERPNext <-> Odoo round trip needed beyond issue 9, each point by configuration alone.

- expressions with comparisons, and/or/not, if() and now(): an order's status from what Odoo
  produced, and a ``modified`` stamp of the run's start on the target's clock, on both paths.
- a dry run, even one that fails, does not count toward a flow's status in the report.
- a document number series that is not there stops the run at the schema check, exit 2, naming
  the file and the key.
- a lookup's warning of ambiguous codes only where rows with them wait; the NULL cursor warning
  acknowledged in the flow (``cursor.allows_null``); ``-v`` logging each step.
- the report lists the keys waiting under each reason (``report.keys_per_reason``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from sqlalchemy import text
from sqlalchemy.engine import URL

from etl.config.crosswalks import Crosswalk, load_crosswalks
from etl.config.flows import Defaults, Flow, Project
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.core.errors import StepFailed
from etl.reporting.report import Window, build_report, collect
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, run_flow
from tests.integration.test_products import MAPPINGS, Plant, seed

pytestmark = pytest.mark.slow

SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.fixture
def plant(mariadb_database: Callable[[str], URL], pg_database: Callable[[str], URL]) -> Iterator[Plant]:
    urls = {"erpnext_db": mariadb_database("erpnext"), "odoo_db": pg_database("odoo")}
    with Connections(urls) as connections:
        erpnext, odoo = connections.engine("erpnext_db"), connections.engine("odoo_db")
        seed.build_erpnext(erpnext, extra_orders=2)
        seed.build_odoo(odoo)
        yield Plant(load_project(MAPPINGS), connections, erpnext, odoo)


def _project(flow: Flow) -> Project:
    return Project(flows={flow.flow: flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))


#: Status and stamp of each Odoo order, as ERPNext's Work Order keeps them: "Completed when
#: produced >= qty", no table of factors, no CSV.
STATUS_COLUMNS: list[dict[str, Any]] = [
    {"target": "name", "source": "origin"},
    {"target": "status", "expr": (
        "if(qty_producing >= product_qty, 'Completed', "
        "if(qty_producing > 0 and not (state = 'cancel'), 'In Process', 'Not Started'))"
    )},
    {"target": "late", "expr": "date_finished > date_deadline or (date_finished = date_deadline) <> (1 = 1)"},
    {"target": "share", "expr": "if(product_qty = 0, 0, qty_producing / product_qty)"},
    {"target": "modified", "expr": "now()", "timezone": {"from": "UTC", "to": "Asia/Shanghai"}},
]


def _status_flow(target: str, connection: str, path: str) -> Flow:
    return Flow.model_validate({
        "flow": "work_order_status", "direction": "mes_to_erp",
        "source": {"connection": "odoo_db", "table": "mrp_production", "where_not": {"state": ["draft"]}},
        "target": {"connection": connection, "table": target}, "key": ["name"],
        "load": {"transform": path}, "columns": STATUS_COLUMNS,
    })


def _target_clock(plant: Plant, connection: str) -> datetime:
    sql = "SELECT UTC_TIMESTAMP(6)" if connection == "erpnext_db" else "SELECT now() AT TIME ZONE 'UTC'"
    engine = plant.erpnext if connection == "erpnext_db" else plant.odoo
    with engine.connect() as conn:
        moment: datetime = conn.execute(text(sql)).scalar_one()
    return moment.replace(tzinfo=UTC)


@pytest.mark.parametrize(("connection", "path"), [("erpnext_db", "python"), ("odoo_db", "sql"), ("odoo_db", "python")])
def test_status_by_comparison_and_a_stamp_of_the_runs_start(plant: Plant, connection: str, path: str) -> None:
    """MariaDB takes the Python path; PostgreSQL to PostgreSQL the SQL path too. Both give the
    same statuses, and one ``modified`` for every row: the run's start on the target's clock."""
    engine = plant.erpnext if connection == "erpnext_db" else plant.odoo
    quote = "`" if connection == "erpnext_db" else '"'
    table = "tabWork Order Status"
    with engine.begin() as conn:
        conn.execute(text(
            f"CREATE TABLE {quote}{table}{quote} (name varchar(140) PRIMARY KEY, status varchar(40), late boolean, "
            "share numeric(21, 9), modified " + ("datetime(6)" if connection == "erpnext_db" else "timestamp") + ")"
        ))
    flow = _status_flow(table, connection, path)
    before = _target_clock(plant, connection)
    run = run_flow(_project(flow), flow.flow, plant.connections)
    after = _target_clock(plant, connection)
    assert run.record.options["transform"] == path
    rows = plant.rows(engine, table, "name")
    assert {k: (r["status"], r["share"]) for k, r in rows.items()} == {
        "MFG-WO-2026-00001": ("Completed", Decimal("1.000000000")),
        "MFG-WO-2026-00002": ("Not Started", Decimal("0E-9")),
        "MFG-WO-2026-00006": ("In Process", Decimal("0.375000000")),
        "MFG-WO-2026-00005": ("Completed", Decimal("1.000000000")),
    }
    # No deadline: the comparison is NULL, and NULL <> true is NULL, not false.
    assert {r["late"] for r in rows.values()} == {None}
    stamps = {r["modified"] for r in rows.values()}
    assert len(stamps) == 1
    (stamp,) = stamps
    local = stamp.replace(tzinfo=SHANGHAI).astimezone(UTC)
    assert before - timedelta(seconds=1) <= local <= after, (before, local, after)


def test_the_guide_shows_the_status_columns_as_tested() -> None:
    guide = (MAPPINGS.parent.parent.parent / "docs" / "connecting-a-system.md").read_text(encoding="utf-8")
    block = next(b for b in guide.split("```yaml\n")[1:] if "now()" in b.split("```")[0]).split("```")[0]
    assert yaml.safe_load(block)["columns"] == STATUS_COLUMNS


def test_a_dry_run_of_a_broken_copy_does_not_make_the_flow_fail(plant: Plant) -> None:
    """Issue 19, point 9: the dry run's ledger row keeps its error, but the report's status and
    counts are the real runs' alone."""
    assert plant.run("odoo_production_reports").record.outcome == "success"
    real = plant.project.flow("odoo_production_reports")
    broken = real.model_copy(update={"columns": [*real.columns[:-1], real.columns[-1].model_copy(update={"source": "stat"})]})
    with pytest.raises(StepFailed):
        run_flow(_project(broken), broken.flow, plant.connections, RunOptions(dry_run=True))
    with plant.erpnext.connect() as conn:
        outcome, error = conn.execute(text(
            "SELECT outcome, error FROM etl_ledger WHERE flow = 'odoo_production_reports' ORDER BY started_at DESC LIMIT 1"
        )).one()
    assert outcome == "dry_run" and "stat" in error
    now = datetime.now(UTC).replace(tzinfo=None)
    report = collect(plant.project, plant.connections, Window(now - timedelta(days=1), now + timedelta(minutes=1)))
    (section,) = [f for f in report.flows if f.flow == "odoo_production_reports"]
    assert not section.failing
    assert section.last_run is not None and section.last_run["outcome"] == "success"
    assert (section.runs["success"], section.runs["failed"]) == (1, 0)
    assert section.rows_loaded == 2


def _etl(plant: Plant, mappings: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "AIRFLOW_CONN_ERPNEXT_DB": plant.connections.url("erpnext_db").render_as_string(hide_password=False),
        "AIRFLOW_CONN_ODOO_DB": plant.connections.url("odoo_db").render_as_string(hide_password=False),
        "ETL_CONNECTIONS_FILE": "/nonexistent",
    }
    return subprocess.run([sys.executable, "-m", "etl", "--mappings", str(mappings), *args],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)


def _copy_mappings(tmp_path: Path, flow: str, edit: Callable[[str], str]) -> Path:
    copy = tmp_path / "mappings"
    shutil.copytree(MAPPINGS, copy)
    path = copy / "flows" / f"{flow}.yaml"
    path.write_text(edit(path.read_text(encoding="utf-8")), encoding="utf-8")
    return copy


def test_a_missing_database_sequence_stops_the_run_before_any_write(plant: Plant, tmp_path: Path) -> None:
    """Issue 19, point 7: exit 2 naming the file and the key, not a driver's error at merge."""
    mappings = _copy_mappings(
        tmp_path, "erpnext_manufacturing_orders", lambda t: t.replace("ir_sequence_001", "ir_sequence_009"),
    )
    assert _etl(plant, mappings, "check").returncode == 0
    with plant.odoo.connect() as conn:
        orders = conn.execute(text("SELECT count(*) FROM mrp_production")).scalar_one()
    run = _etl(plant, mappings, "run", "erpnext_manufacturing_orders")
    assert run.returncode == 2, run.stderr
    assert "erpnext_manufacturing_orders.yaml: flow 'erpnext_manufacturing_orders': target.document_number." \
           "database_sequence: the target database has no sequence 'ir_sequence_009' (its sequences: " in run.stderr
    assert "ir_sequence_001" in run.stderr and "sqlalchemy" not in run.stderr.lower()
    assert "check_schema" in run.stderr
    with plant.odoo.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM mrp_production")).scalar_one() == orders


def test_a_missing_counter_row_stops_the_run_before_any_write(plant: Plant, tmp_path: Path) -> None:
    with plant.erpnext.begin() as conn:
        conn.execute(text("DELETE FROM tabSeries WHERE name = 'MAT-STE-2026-'"))
        entries = conn.execute(text("SELECT count(*) FROM `tabStock Entry`")).scalar_one()
    run = _etl(plant, MAPPINGS, "run", "odoo_completions")
    assert run.returncode == 2, run.stderr
    assert "odoo_completions.yaml: flow 'odoo_completions': target.document_number.sequence.key: 0 rows of " \
           "tabSeries match {'name': 'MAT-STE-2026-'}; exactly one must" in run.stderr
    mappings = _copy_mappings(tmp_path, "odoo_completions", lambda t: t.replace("counter: current", "counter: curent"))
    run = _etl(plant, mappings, "run", "odoo_completions")
    assert run.returncode == 2, run.stderr
    assert "target.document_number.sequence: tabSeries has no column curent (its columns: name, current)" in run.stderr
    with plant.erpnext.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM `tabStock Entry`")).scalar_one() == entries


def _loose_product_lookup() -> dict[str, Crosswalk]:
    """The products' crosswalks with odoo_product read without its `active` filter: FG-DUP then
    names two Odoo products (15 archived, 16 active)."""
    crosswalks = load_crosswalks(MAPPINGS / "crosswalks")
    definition = crosswalks["odoo_product"]
    assert definition.lookup_spec is not None
    loose = definition.lookup_spec.model_copy(update={"where": {}})
    return {**crosswalks, "odoo_product": replace(definition, lookup_spec=loose)}


AMBIGUOUS = "crosswalk 'odoo_product': 1 ERP code(s) match more than one row of product_product"


def test_an_ambiguous_lookup_warns_only_where_rows_with_its_codes_wait(plant: Plant) -> None:
    """Issue 19, point 8: the warning says rows wait in quarantine; it is shown only when they do,
    in the direction they wait in."""
    with plant.erpnext.begin() as conn:
        conn.execute(text("UPDATE `tabWork Order` SET docstatus = 0 WHERE production_item = 'FG-DUP'"))
    crosswalks = _loose_product_lookup()
    forward = run_flow(plant.project, "erpnext_work_orders", plant.connections, crosswalks=crosswalks)
    assert not [w for w in forward.warnings if AMBIGUOUS in w]
    assert not [k for k, r in plant.waiting(plant.odoo, "erpnext_work_orders").items() if "FG-DUP" in r]

    with plant.erpnext.begin() as conn:
        conn.execute(text("UPDATE `tabWork Order` SET docstatus = 1, modified = NOW(6) WHERE name = 'MFG-WO-2026-00006'"))
    forward = run_flow(plant.project, "erpnext_work_orders", plant.connections, crosswalks=crosswalks)
    assert [w for w in forward.warnings if AMBIGUOUS in w] == [
        f"{AMBIGUOUS} ('FG-DUP' with '15' and '16'); rows with them wait in quarantine (narrow the lookup's where)"
    ]
    assert plant.waiting(plant.odoo, "erpnext_work_orders")["name=MFG-WO-2026-00006"] == (
        "crosswalk 'odoo_product' has no MES code for 'FG-DUP' (column product_id)"
    )
    # The way back: Odoo's order on product 16 waits, its id taken out with the ambiguous code.
    back = run_flow(plant.project, "odoo_production_reports", plant.connections, crosswalks=crosswalks)
    assert [w for w in back.warnings if AMBIGUOUS in w]
    assert "has no ERP code for 16" in plant.waiting(plant.erpnext, "odoo_production_reports")["name=WH/MO/00003"]
    # With the shipped filter nothing is ambiguous and nothing is said.
    assert not [w for w in plant.run("erpnext_work_orders").warnings if "match more than one row" in w]


NULL_CURSOR = "cursor column mrp_production.write_date allows NULL: such rows are read only by a full refresh"


def test_the_null_cursor_warning_can_be_acknowledged_in_the_flow(plant: Plant, tmp_path: Path) -> None:
    """Odoo's write_date allows NULL: the warning comes until the flow says it knows."""
    assert [w for w in plant.run("odoo_production_reports").warnings if NULL_CURSOR in w] == [
        f"{NULL_CURSOR} (set cursor.allows_null: true in {plant.project.flow('odoo_production_reports').file} "
        "to acknowledge it)"
    ]
    mappings = _copy_mappings(
        tmp_path, "odoo_production_reports", lambda t: t.replace("lookback: 10m}", "lookback: 10m, allows_null: true}"),
    )
    acknowledged = load_project(mappings)
    assert not [w for w in run_flow(acknowledged, "odoo_production_reports", plant.connections).warnings if "NULL" in w]
    # Once the column is NOT NULL, the acknowledgement is out of date and says so.
    with plant.odoo.begin() as conn:
        conn.execute(text("ALTER TABLE mrp_production ALTER COLUMN write_date SET NOT NULL"))
    stale = run_flow(acknowledged, "odoo_production_reports", plant.connections).warnings
    assert [w for w in stale if "allows_null" in w] == [
        f"{acknowledged.flow('odoo_production_reports').file}: cursor.allows_null: true, but cursor column "
        "mrp_production.write_date is NOT NULL: remove the acknowledgement"
    ]
    typo = _copy_mappings(
        tmp_path / "typo", "odoo_production_reports", lambda t: t.replace("lookback: 10m}", "lookback: 10m, allows_null: sometimes}"),
    )
    check = _etl(plant, typo, "check")
    assert check.returncode == 2
    assert "odoo_production_reports.yaml: cursor.allows_null:" in check.stdout + check.stderr


def test_verbose_logs_each_step(plant: Plant) -> None:
    run = _etl(plant, MAPPINGS, "-v", "run", "odoo_production_reports")
    assert run.returncode == 0, run.stderr
    steps = [line.rsplit("step ", 1)[1] for line in run.stderr.splitlines() if "flow odoo_production_reports: step " in line]
    assert steps[:4] == ["connect", "read_lookups", "lock", "check_schema"]
    assert {"stage", "merge", "write_ledger", "commit", "done"} <= set(steps)


def test_the_report_lists_the_keys_waiting_under_each_reason(plant: Plant, tmp_path: Path) -> None:
    """Issue 19, point 10: which orders wait, not only how many, up to report.keys_per_reason."""
    with plant.erpnext.begin() as conn:
        conn.execute(text(
            "UPDATE `tabWork Order` SET production_item = 'FG-OLD-1' "
            "WHERE name IN ('MFG-WO-2026-00001', 'MFG-WO-2026-00002', 'MFG-WO-2026-00007')"
        ))
    plant.run("erpnext_work_orders")
    waiting = plant.waiting(plant.odoo, "erpnext_work_orders")
    old = sorted(k for k, r in waiting.items() if "'FG-OLD-1'" in r)
    assert len(old) == 4
    settings = plant.project.defaults.report.model_copy(update={"keys_per_reason": 3})
    project = plant.project.model_copy(update={"defaults": plant.project.defaults.model_copy(update={"report": settings})})
    written = build_report(project, plant.connections, tmp_path / "report.html")
    html = written.mail_html
    section = html.split("<section id='flow-erpnext_work_orders'>")[1].split("</section>")[0]
    assert "<h3>Keys waiting in quarantine, by reason</h3>" in section
    (item,) = [li for li in section.split("<li>") if "no MES code for &#x27;…&#x27; (column product_id)" in li and "<code>" in li]
    listed = [k.split("</code>")[0] for k in item.split("<code>")[1:]]
    assert len(listed) == 3 and set(listed) <= set(old)
    assert "and 1 more</li>" in item
