"""Two real products connected by configuration alone: ERPNext on MariaDB and Odoo MRP on
PostgreSQL (schemas and data in tests/products/, flows and crosswalks in
tests/products/mappings/). Lookup crosswalks read Odoo's ids, source filters keep drafts and
cancelled documents out, JSONB names are read by path, times change zone, child rows wait for
their parent by name; every value is checked exactly."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, select, text
from sqlalchemy.engine import URL

from etl.config.crosswalks import load_crosswalks
from etl.config.flows import Defaults, Flow, Project
from etl.config.project import load_project
from etl.core.errors import SchemaDriftError, StepFailed
from etl.sync.connections import Connections
from etl.sync.lookups import resolve_lookups
from etl.sync.pipeline_tables import quarantine
from etl.sync.runner import RunOptions, RunResult, run_flow

pytestmark = pytest.mark.slow

PRODUCTS = Path(__file__).resolve().parent.parent / "products"
MAPPINGS = PRODUCTS / "mappings"
EXTRA_ORDERS = 30


def _seed_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("product_seed", PRODUCTS / "seed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seed = _seed_module()


@dataclass
class Plant:
    project: Project
    connections: Connections
    erpnext: Engine
    odoo: Engine

    def run(self, flow: str, **options: Any) -> RunResult:
        return run_flow(self.project, flow, self.connections, RunOptions(**options))

    def rows(self, engine: Engine, table: str, key: str) -> dict[Any, dict[str, Any]]:
        with engine.connect() as conn:
            found = Table(table, MetaData(), autoload_with=conn)
            return {r[key]: dict(r) for r in conn.execute(select(found)).mappings()}

    def waiting(self, engine: Engine, flow: str) -> dict[str, str]:
        with engine.connect() as conn:
            q = quarantine.c
            stmt = select(q.source_key, q.reason).where(q.flow == flow, q.status == "waiting")
            return {r.source_key: r.reason for r in conn.execute(stmt)}


@pytest.fixture
def plant(mariadb_database: Callable[[str], URL], pg_database: Callable[[str], URL]) -> Iterator[Plant]:
    urls = {"erpnext_db": mariadb_database("erpnext"), "odoo_db": pg_database("odoo")}
    with Connections(urls) as connections:
        erpnext, odoo = connections.engine("erpnext_db"), connections.engine("odoo_db")
        seed.build_erpnext(erpnext, extra_orders=EXTRA_ORDERS)
        seed.build_odoo(odoo)
        yield Plant(load_project(MAPPINGS), connections, erpnext, odoo)


def _submitted_orders(erpnext: Engine) -> int:
    with erpnext.connect() as conn:
        return conn.execute(text(
            "SELECT count(*) FROM `tabWork Order` WHERE docstatus = 1 AND status <> 'Cancelled'"
        )).scalar_one()


def test_submitted_work_orders_reach_odoo_with_odoo_ids_and_utc_times(plant: Plant) -> None:
    first = plant.run("erpnext_work_orders")
    submitted = _submitted_orders(plant.erpnext)
    # Every submitted order but MFG-WO-2026-00005, whose item has only an archived Odoo product.
    assert first.record.counts.rows_read == submitted
    assert first.record.counts.rows_loaded == submitted - 1
    assert first.record.options["transform"] == "sql"  # MariaDB into PostgreSQL: the SQL path

    orders = plant.rows(plant.odoo, "x_erpnext_work_order", "erp_name")
    assert "MFG-WO-2026-00003" not in orders  # a draft (docstatus 0)
    assert "MFG-WO-2026-00004" not in orders  # cancelled (docstatus 2)
    assert "MFG-WO-2026-00005" not in orders
    bolt = orders["MFG-WO-2026-00001"]
    assert bolt["product_id"] == 11 and isinstance(bolt["product_id"], int)
    assert bolt["product_name"] == "Bolt M8"
    assert bolt["product_qty"] == Decimal("100")
    assert bolt["product_uom_id"] == 1  # ERPNext "Units" is Odoo uom_uom 1
    assert bolt["date_start"] == datetime(2026, 11, 20, 0, 0)  # 08:00 in Shanghai
    assert bolt["date_deadline"] == date(2026, 11, 27)
    assert bolt["erp_status"] == "Not Started"
    assert bolt["company_name"] == "Shanghai Precision Co."
    nut = orders["MFG-WO-2026-00002"]
    assert (nut["product_id"], nut["product_qty"], nut["erp_status"]) == (12, Decimal("250.5"), "In Process")
    assert nut["date_start"] == datetime(2026, 11, 20, 23, 30)  # the day before in UTC
    # FG-DUP: an archived and an active product share the code; only the active one is looked up.
    assert orders["MFG-WO-2026-00006"]["product_id"] == 16
    shaft = orders["MFG-WO-2026-00007"]
    # ERPNext "Kg" is Odoo "kg" (id 3); the archived "KG" (id 6) would make it ambiguous.
    assert (shaft["product_id"], shaft["product_uom_id"], shaft["product_qty"]) == (17, 3, Decimal("12.345"))
    assert shaft["date_start"] == datetime(2026, 11, 21, 16, 15)

    waiting = plant.waiting(plant.odoo, "erpnext_work_orders")
    assert waiting == {
        "name=MFG-WO-2026-00005":
            "crosswalk 'odoo_product' has no MES code for 'FG-OLD-1' (column product_id)",
    }

    again = plant.run("erpnext_work_orders")
    assert again.record.counts.rows_loaded == 0
    assert again.record.counts.rows_new_in_quarantine == 0
    assert len(plant.rows(plant.odoo, "x_erpnext_work_order", "erp_name")) == submitted - 1

    # The plant reactivates the Odoo product: the next run reads the lookup afresh and the order loads.
    with plant.odoo.begin() as conn:
        conn.execute(text("UPDATE product_product SET active = true WHERE id = 14"))
    fixed = plant.run("erpnext_work_orders")
    assert (fixed.record.counts.rows_loaded, fixed.record.counts.rows_released) == (1, 1)
    assert plant.rows(plant.odoo, "x_erpnext_work_order", "erp_name")["MFG-WO-2026-00005"]["product_id"] == 14
    assert plant.waiting(plant.odoo, "erpnext_work_orders") == {}


def test_required_items_follow_their_work_order_by_parent_name(plant: Plant) -> None:
    plant.run("erpnext_work_orders")
    run = plant.run("erpnext_work_order_items")
    lines = plant.rows(plant.odoo, "x_erpnext_work_order_line", "id")
    by_key = {(r["erp_work_order"], r["line_no"]): r for r in lines.values()}
    rod = by_key[("MFG-WO-2026-00001", 1)]
    assert (rod["product_id"], rod["product_uom_qty"], rod["product_uom"], rod["quantity"]) == (13, Decimal("5.2"), 3, Decimal("0"))
    nuts = by_key[("MFG-WO-2026-00001", 2)]
    assert (nuts["product_id"], nuts["product_uom_qty"], nuts["product_uom"]) == (12, Decimal("100"), 1)
    assert by_key[("MFG-WO-2026-00002", 1)]["product_uom_qty"] == Decimal("12.525")
    assert ("MFG-WO-2026-00003", 1) not in by_key  # the line of a draft
    # The line of the order still in quarantine waits for its parent, named by `parent`. The zinc
    # primer line waits too: ERPNext's "Gram" is no Odoo unit name, and this flow has no factor
    # to write it in kg (erpnext_manufacturing_orders converts it through erpnext_uom.csv).
    gram = {
        "idx=3, parent=MFG-WO-2026-00001": "crosswalk 'odoo_uom' has no MES code for 'gram' (column product_uom)",
    }
    assert plant.waiting(plant.odoo, "erpnext_work_order_items") == {
        "idx=1, parent=MFG-WO-2026-00005":
            "parent x_erpnext_work_order.erp_name = 'MFG-WO-2026-00005' not on the target yet "
            "(column erp_work_order); retried when it arrives",
        **gram,
    }
    assert run.record.counts.rows_loaded == len(by_key)
    assert plant.run("erpnext_work_order_items").record.counts.rows_loaded == 0

    with plant.odoo.begin() as conn:
        conn.execute(text("UPDATE product_product SET active = true WHERE id = 14"))
    plant.run("erpnext_work_orders")
    assert plant.run("erpnext_work_order_items").record.counts.rows_released == 1
    assert plant.waiting(plant.odoo, "erpnext_work_order_items") == gram


def test_odoo_production_comes_back_to_erpnext_through_the_same_lookup(plant: Plant) -> None:
    run = plant.run("odoo_production_reports")
    reports = plant.rows(plant.erpnext, "tabMES Production Report", "name")
    assert set(reports) == {"WH/MO/00001", "WH/MO/00003"}  # cancel and draft are left out
    done = reports["WH/MO/00001"]
    assert (done["work_order"], done["item_code"], done["odoo_state"]) == ("MFG-WO-2026-00001", "FG-BOLT-M8", "done")
    assert done["produced_qty"] == Decimal("100")
    assert done["completed_on"] == datetime(2026, 11, 20, 18, 0)  # 10:00 UTC in Shanghai
    running = reports["WH/MO/00003"]
    assert (running["item_code"], running["produced_qty"], running["completed_on"]) == ("FG-DUP", Decimal("15"), None)
    # Product 14 is archived: the lookup has no ERP code for that id.
    assert plant.waiting(plant.erpnext, "odoo_production_reports") == {
        "name=WH/MO/00005": "crosswalk 'odoo_product' has no ERP code for 14 (column item_code)",
    }
    assert run.record.counts.rows_loaded == 2
    assert plant.run("odoo_production_reports").record.counts.rows_loaded == 0


def test_translated_names_are_read_from_jsonb_by_path(plant: Plant) -> None:
    plant.run("odoo_item_names")
    names = plant.rows(plant.erpnext, "tabOdoo Item Name", "name")
    assert names["FG-BOLT-M8"] == {"name": "FG-BOLT-M8", "item_name_en": "Bolt M8", "item_name_zh": "螺栓 M8"}
    assert names["RM-STEEL-ROD"]["item_name_zh"] == "钢棒 Ø10"
    assert names["SA-SHAFT"]["item_name_zh"] is None  # no Chinese translation yet
    assert names["FG-DUP"]["item_name_en"] == "Hinge"  # the archived "Hinge (old)" is not read
    assert "FG-OLD-1" not in names
    assert plant.run("odoo_item_names").record.counts.rows_loaded == 0


def _pg_flow(name: str, source: str, target: str, columns: list[dict[str, Any]], key: list[str], **extra: Any) -> Flow:
    return Flow.model_validate({
        "flow": name, "direction": "erp_to_mes", "source": {"connection": "odoo_db", "table": source, **extra},
        "target": {"connection": "odoo_db", "table": target}, "key": key, "columns": columns,
    })


@pytest.mark.parametrize("path", ["sql", "python"])
def test_both_transform_paths_agree_on_lookups_and_json(plant: Plant, path: str) -> None:
    """PostgreSQL to PostgreSQL: the SQL path joins the lookup's pairs and reads jsonb with
    jsonb_extract_path_text; the Python path must give the same rows and the same reasons."""
    with plant.odoo.begin() as conn:
        conn.execute(text(
            "CREATE TABLE x_template_check (template_id integer PRIMARY KEY, variant_id integer, "
            "name_zh varchar(40), uom_name varchar(20))"
        ))
    flow = _pg_flow(
        "template_check", "product_template", "x_template_check",
        [
            {"target": "template_id", "source": "id"},
            {"target": "variant_id", "source": "default_code", "crosswalk": "odoo_product"},
            {"target": "name_zh", "expr": "json_get(name, 'zh_CN')"},
            {"target": "uom_name", "expr": "json_get(name, 'en_US')"},
        ],
        ["template_id"],
    )
    flow = flow.model_copy(update={"load": flow.load.model_copy(update={"transform": path})})
    project = Project(flows={flow.flow: flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))
    run = run_flow(project, flow.flow, plant.connections)
    assert run.record.options["transform"] == path
    rows = plant.rows(plant.odoo, "x_template_check", "template_id")
    assert rows[1] == {"template_id": 1, "variant_id": 11, "name_zh": "螺栓 M8", "uom_name": "Bolt M8"}
    assert rows[5]["variant_id"] == 16 and rows[6]["variant_id"] == 16
    assert rows[7]["name_zh"] is None
    assert set(rows) == {1, 2, 3, 5, 6, 7, 8}
    assert rows[8] == {"template_id": 8, "variant_id": 18, "name_zh": "锌底漆", "uom_name": "Zinc primer"}
    assert plant.waiting(plant.odoo, "template_check") == {
        "id=4": "crosswalk 'odoo_product' has no MES code for 'FG-OLD-1' (column variant_id)",
    }
    assert run_flow(project, flow.flow, plant.connections).record.counts.rows_loaded == 0


@pytest.mark.parametrize("path", ["sql", "python"])
def test_names_with_spaces_and_capitals_on_postgresql(plant: Plant, path: str) -> None:
    """Tables and columns named as a product names them ("Work Order", "Item Code") are quoted
    everywhere: reflection, extraction, both transform paths, the merge and the parents check."""
    with plant.odoo.begin() as conn:
        conn.execute(text(
            'CREATE TABLE "Work Order" ("Order No" varchar(20) PRIMARY KEY, "Item Code" varchar(20), '
            '"Qty" numeric(12,3), "Doc Status" integer, "Last Change" timestamp NOT NULL)'
        ))
        conn.execute(text('CREATE TABLE "MES Order" ("Order No" varchar(20) PRIMARY KEY, "Product Id" integer, "Qty" numeric(12,3))'))
        conn.execute(text('CREATE TABLE "MES Order Check" ("Order No" varchar(20) PRIMARY KEY)'))
        conn.execute(text(
            """INSERT INTO "Work Order" VALUES ('WO 1', 'FG-NUT-M8', 3.5, 1, '2026-11-20 08:00'),
               ('WO 2', 'FG-BOLT-M8', 1, 2, '2026-11-20 08:00'), ('WO 3', 'FG-OLD-1', 2, 1, '2026-11-20 08:00'),
               ('WO 4', 'FG-BOLT-M8', 7, 1, '2026-11-20 08:01')"""
        ))
        conn.execute(text("""INSERT INTO "MES Order Check" VALUES ('WO 1')"""))
    flow = Flow.model_validate({
        "flow": "spaced", "direction": "erp_to_mes",
        "source": {"connection": "odoo_db", "table": "Work Order", "where_not": {"Doc Status": [2]}},
        "target": {"connection": "odoo_db", "table": "MES Order"}, "key": ["Order No"],
        "cursor": {"column": "Last Change"}, "load": {"transform": path},
        "parents": [{"column": "Order No", "table": "MES Order Check", "key": "Order No"}],
        "columns": [
            {"target": "Order No", "source": "Order No"},
            {"target": "Product Id", "source": "Item Code", "crosswalk": "odoo_product"},
            {"target": "Qty", "source": "Qty"},
        ],
    })
    project = Project(flows={"spaced": flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))
    run = run_flow(project, "spaced", plant.connections)
    assert run.record.options["transform"] == path
    assert plant.rows(plant.odoo, "MES Order", "Order No") == {"WO 1": {"Order No": "WO 1", "Product Id": 12, "Qty": Decimal("3.500")}}
    assert plant.waiting(plant.odoo, "spaced") == {
        "Order No=WO 3": "crosswalk 'odoo_product' has no MES code for 'FG-OLD-1' (column Product Id)",
        "Order No=WO 4": "parent MES Order Check.Order No = 'WO 4' not on the target yet (column Order No); retried when it arrives",
    }


def test_where_not_keeps_rows_whose_value_is_null(plant: Plant) -> None:
    with plant.odoo.begin() as conn:
        conn.execute(text("CREATE TABLE x_doc (doc varchar(10) PRIMARY KEY, state varchar(10))"))
        conn.execute(text("CREATE TABLE x_doc_copy (doc varchar(10) PRIMARY KEY, state varchar(10))"))
        conn.execute(text("INSERT INTO x_doc VALUES ('a', 'done'), ('b', 'cancel'), ('c', NULL), ('d', 'draft')"))
    flow = _pg_flow("docs", "x_doc", "x_doc_copy", [{"target": "doc", "source": "doc"}, {"target": "state", "source": "state"}],
                    ["doc"], where_not={"state": ["cancel", "draft"]})
    project = Project(flows={"docs": flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))
    run_flow(project, "docs", plant.connections)
    assert set(plant.rows(plant.odoo, "x_doc_copy", "doc")) == {"a", "c"}


def test_a_lookup_is_read_once_per_run_and_flags_ambiguous_codes(plant: Plant) -> None:
    crosswalks = load_crosswalks(MAPPINGS / "crosswalks")
    assert not crosswalks["odoo_product"].loaded  # checking the YAML connected to nothing
    calls: list[str] = []

    def engine_for(conn_id: str) -> Engine:
        calls.append(conn_id)
        return plant.connections.engine(conn_id)

    resolved, warnings = resolve_lookups(crosswalks, ["odoo_product", "odoo_uom"], engine_for)
    assert calls == ["odoo_db", "odoo_db"] and warnings == []
    product = resolved["odoo_product"]
    assert product.lookup("FG-BOLT-M8", "mes") == ("11", Decimal(1))
    assert product.lookup(11, "erp") == ("FG-BOLT-M8", Decimal(1))
    assert product.whole_number_sides == frozenset({"mes"})
    assert resolved["odoo_uom"].lookup("kg", "mes") == ("3", Decimal(1))
    assert not crosswalks["odoo_product"].loaded  # the caller's definitions stay as they were

    # Without the `active` filter, FG-DUP names two products: neither is guessed.
    definition = crosswalks["odoo_product"]
    assert definition.lookup_spec is not None
    unfiltered = {"odoo_product": replace(definition, lookup_spec=definition.lookup_spec.model_copy(update={"where": {}}))}
    loose, warnings = resolve_lookups(unfiltered, ["odoo_product"], plant.connections.engine)
    assert loose["odoo_product"].lookup("FG-DUP", "mes") is None
    assert warnings == [
        "crosswalk 'odoo_product': 1 ERP code(s) match more than one row of product_product ('FG-DUP' with '15' and '16'); "
        "rows with them wait in quarantine (narrow the lookup's where)"
    ]


def test_a_lookup_on_a_missing_column_stops_the_run_naming_the_crosswalk(plant: Plant, tmp_path: Path) -> None:
    crosswalks = tmp_path / "crosswalks"
    crosswalks.mkdir()
    (crosswalks / "odoo_product.yaml").write_text(
        "crosswalk: odoo_product\nlookup: {connection: odoo_db, table: product_product, erp: internal_ref, mes: id}\n"
    )
    (crosswalks / "odoo_uom.yaml").write_text((MAPPINGS / "crosswalks" / "odoo_uom.yaml").read_text())
    project = plant.project.model_copy(update={"mappings_dir": str(tmp_path)})
    with pytest.raises(StepFailed) as failure:
        run_flow(project, "erpnext_work_orders", plant.connections)
    assert failure.value.step == "read_lookups"
    assert isinstance(failure.value.cause, SchemaDriftError)
    assert ("odoo_product.yaml: lookup of crosswalk 'odoo_product' on odoo_db: column product_product.internal_ref not found"
            in str(failure.value.cause))


def test_names_with_spaces_and_capitals_on_mariadb_and_a_dst_zone(plant: Plant) -> None:
    """The same on MariaDB, source and target, with a plant in a zone that has summer time:
    naive Berlin times become naive UTC with the offset of their date; a time the clocks skip
    waits in quarantine. MariaDB's JSON type (text underneath) is read by path too."""
    with plant.erpnext.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE `Work Order` (`Order No` varchar(20) PRIMARY KEY, `Item Code` varchar(20), "
            "`Planned Start` datetime(6), `Last Change` datetime(6) NOT NULL, `item_names` JSON)"
        )
        conn.exec_driver_sql(
            "CREATE TABLE `MES Order` (`Order No` varchar(20) PRIMARY KEY, `Product Id` int, `Start UTC` datetime(6), "
            "`Name ZH` varchar(40))"
        )
        conn.exec_driver_sql(
            "INSERT INTO `Work Order` VALUES "
            "('WO 1', 'FG-NUT-M8', '2026-07-01 08:00', '2026-11-20 08:00', '{\"en_US\": \"Nut\", \"zh_CN\": \"螺母\"}'), "
            "('WO 2', 'FG-BOLT-M8', '2026-01-15 08:00', '2026-11-20 08:00', NULL), "
            "('WO 3', 'FG-BOLT-M8', '2026-03-29 02:30', '2026-11-20 08:00', '{}')"
        )
    flow = Flow.model_validate({
        "flow": "spaced_mariadb", "direction": "erp_to_mes",
        "source": {"connection": "erpnext_db", "table": "Work Order"},
        "target": {"connection": "erpnext_db", "table": "MES Order"}, "key": ["Order No"],
        "cursor": {"column": "Last Change"},
        "columns": [
            {"target": "Order No", "source": "Order No"},
            {"target": "Product Id", "source": "Item Code", "crosswalk": "odoo_product"},
            {"target": "Start UTC", "source": "Planned Start", "timezone": {"from": "Europe/Berlin", "to": "UTC"}},
            {"target": "Name ZH", "expr": "json_get(item_names, 'zh_CN')"},
        ],
    })
    project = Project(flows={flow.flow: flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))
    run_flow(project, flow.flow, plant.connections)
    assert plant.rows(plant.erpnext, "MES Order", "Order No") == {
        "WO 1": {"Order No": "WO 1", "Product Id": 12, "Start UTC": datetime(2026, 7, 1, 6, 0), "Name ZH": "螺母"},  # CEST, +2
        "WO 2": {"Order No": "WO 2", "Product Id": 11, "Start UTC": datetime(2026, 1, 15, 7, 0), "Name ZH": None},  # CET, +1
    }
    assert plant.waiting(plant.erpnext, "spaced_mariadb") == {
        "Order No=WO 3": "column Start UTC: 2026-03-29T02:30:00 does not exist in Europe/Berlin (clocks skip it)",
    }
    assert run_flow(project, flow.flow, plant.connections).record.counts.rows_loaded == 0


def test_the_guide_commands_work_on_the_products(plant: Plant) -> None:
    """docs/connecting-a-system.md, section 6: check, dry run, run, quarantine, from the shell."""
    env = {
        **os.environ,
        "AIRFLOW_CONN_ERPNEXT_DB": plant.connections.url("erpnext_db").render_as_string(hide_password=False),
        "AIRFLOW_CONN_ODOO_DB": plant.connections.url("odoo_db").render_as_string(hide_password=False),
        "ETL_CONNECTIONS_FILE": "/nonexistent",
    }

    def etl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "etl", "--mappings", str(MAPPINGS), *args],
                              cwd=MAPPINGS.parent.parent.parent, env=env, capture_output=True, text=True, timeout=300)

    check = etl("check")
    assert check.returncode == 0 and "6 flows, 6 crosswalks (5 lookups" in check.stdout, check.stderr
    dry = etl("run", "erpnext_work_orders", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry_run" in dry.stdout
    assert plant.rows(plant.odoo, "x_erpnext_work_order", "erp_name") == {}
    real = etl("run", "erpnext_work_orders")
    assert real.returncode == 0, real.stderr
    waiting = etl("quarantine", "erpnext_work_orders")
    assert "crosswalk 'odoo_product' has no MES code for 'FG-OLD-1' (column product_id)" in waiting.stdout
    assert "1 row(s) waiting" in waiting.stdout


@pytest.mark.parametrize("path", ["sql", "python"])
def test_both_paths_translate_ids_back_to_codes_alike(plant: Plant, path: str) -> None:
    with plant.odoo.begin() as conn:
        conn.execute(text("CREATE TABLE x_report_check (mo_name varchar(20) PRIMARY KEY, item_code varchar(20))"))
    flow = Flow.model_validate({
        "flow": "report_check", "direction": "mes_to_erp",
        "source": {"connection": "odoo_db", "table": "mrp_production", "where_not": {"state": ["cancel", "draft"]}},
        "target": {"connection": "odoo_db", "table": "x_report_check"}, "key": ["mo_name"], "load": {"transform": path},
        "columns": [
            {"target": "mo_name", "source": "name"},
            {"target": "item_code", "source": "product_id", "crosswalk": "odoo_product"},
        ],
    })
    project = Project(flows={flow.flow: flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))
    assert run_flow(project, flow.flow, plant.connections).record.options["transform"] == path
    assert plant.rows(plant.odoo, "x_report_check", "mo_name") == {
        "WH/MO/00001": {"mo_name": "WH/MO/00001", "item_code": "FG-BOLT-M8"},
        "WH/MO/00003": {"mo_name": "WH/MO/00003", "item_code": "FG-DUP"},
    }
    assert plant.waiting(plant.odoo, "report_check") == {
        "name=WH/MO/00005": "crosswalk 'odoo_product' has no ERP code for 14 (column item_code)",
    }


def test_a_lookup_on_mariadb_keeps_text_badges_as_text(plant: Plant) -> None:
    """Badge -> employee from ERPNext's tabEmployee: a lookup on the other database, with text
    codes on both sides (a badge '0042' is not the number 42), and former employees left out."""
    resolved, warnings = resolve_lookups(load_crosswalks(MAPPINGS / "crosswalks"), ["erpnext_employee"], plant.connections.engine)
    employee = resolved["erpnext_employee"]
    assert warnings == [] and employee.whole_number_sides == frozenset()
    assert employee.lookup("0042", "erp") == ("HR-EMP-00001", Decimal(1))
    assert employee.lookup("HR-EMP-00002", "mes") == ("0107", Decimal(1))
    assert employee.lookup("0099", "erp") is None  # status Left


def test_json_in_a_text_column_takes_the_python_path_on_postgresql(plant: Plant) -> None:
    with plant.odoo.begin() as conn:
        conn.execute(text("CREATE TABLE x_text_json (id integer PRIMARY KEY, names text)"))
        conn.execute(text("CREATE TABLE x_text_json_copy (id integer PRIMARY KEY, name_zh varchar(20))"))
        conn.execute(text("""INSERT INTO x_text_json VALUES (1, '{"zh_CN": "螺栓"}'), (2, 'not json'), (3, NULL)"""))
    flow = _pg_flow("text_json", "x_text_json", "x_text_json_copy",
                    [{"target": "id", "source": "id"}, {"target": "name_zh", "expr": "json_get(names, 'zh_CN')"}], ["id"])
    project = Project(flows={flow.flow: flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))
    run = run_flow(project, flow.flow, plant.connections)
    assert run.record.options["transform"] == "python"  # no exact SQL twin for JSON held as text
    assert plant.rows(plant.odoo, "x_text_json_copy", "id") == {1: {"id": 1, "name_zh": "螺栓"}, 3: {"id": 3, "name_zh": None}}
    assert plant.waiting(plant.odoo, "text_json") == {
        "id=2": "column name_zh: json_get(): \"not json\" is not valid JSON in expr \"json_get(names, 'zh_CN')\"",
    }


@pytest.mark.parametrize("path", ["sql", "python"])
@pytest.mark.parametrize("json_type", ["jsonb", "json"])
def test_json_paths_read_alike_on_both_paths(plant: Plant, path: str, json_type: str) -> None:
    with plant.odoo.begin() as conn:
        conn.execute(text(f"CREATE TABLE x_attrs (id integer PRIMARY KEY, attrs {json_type})"))
        conn.execute(text("CREATE TABLE x_attrs_copy (id integer PRIMARY KEY, pitch varchar(20), ok varchar(10), second varchar(10))"))
        conn.execute(text(
            """INSERT INTO x_attrs VALUES (1, '{"size": {"pitch": 1.25, "list": [3, 4]}, "ok": true}'),
               (2, '{"size": {"pitch": {"nested": 1}}}'), (3, '{"ok": null}'), (4, NULL)"""
        ))
    flow = _pg_flow("attrs", "x_attrs", "x_attrs_copy", [
        {"target": "id", "source": "id"},
        {"target": "pitch", "expr": "json_get(attrs, 'size', 'pitch')"},
        {"target": "ok", "expr": "json_get(attrs, 'ok')"},
        {"target": "second", "expr": "json_get(attrs, 'size', 'list', '1')"},
    ], ["id"])
    flow = flow.model_copy(update={"load": flow.load.model_copy(update={"transform": path})})
    project = Project(flows={flow.flow: flow}, defaults=Defaults(), mappings_dir=str(MAPPINGS))
    assert run_flow(project, flow.flow, plant.connections).record.options["transform"] == path
    assert plant.rows(plant.odoo, "x_attrs_copy", "id") == {
        1: {"id": 1, "pitch": "1.25", "ok": "true", "second": "4"},
        3: {"id": 3, "pitch": None, "ok": None, "second": None},
        4: {"id": 4, "pitch": None, "ok": None, "second": None},
    }
    assert plant.waiting(plant.odoo, "attrs") == {
        "id=2": "column pitch: json_get(): the path leads to an object or array, not a value "
                "in expr \"json_get(attrs, 'size', 'pitch')\"",
    }
