"""Flows whose source is a product's web API, each against a local server speaking that
product's documented protocol over real HTTP (tests/products/api_servers.py): ERPNext REST paged
by limit_start / limit_page_length over the ERPNext tables (MariaDB) into the Odoo tables
(PostgreSQL), lines read per work order, and SAP OData V2 production orders paged by __next and
$skiptoken. The cursor keeps a table cursor's rules; faults on the wire are retried or fail the
run with nothing committed."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus, urlsplit

import pytest
from sqlalchemy import Engine, MetaData, Table, select, text
from sqlalchemy.engine import URL

from etl.config.flows import Project
from etl.config.project import load_project
from etl.core.errors import StepFailed
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import watermark
from etl.sync.runner import RunOptions, RunResult, run_flow
from tests.integration.test_products import PRODUCTS, seed
from tests.products.api_servers import ORDER_SERVICE, ErpnextServer, SapServer, sap_order

pytestmark = pytest.mark.slow

ERP_KEY, ERP_SECRET = "erp-key-1234", "erp-secret-98765"
SAP_USER, SAP_PASSWORD = "COMM_USER", "sap-Passw0rd-xyz"
EXTRA_ORDERS = 150


def _http(url: str, login: str, password: str, auth: str) -> str:
    return json.dumps({"conn_type": "http", "host": url, "login": login, "password": password,
                       "extra": {"auth": auth, "backoff": 0.05}})


@dataclass
class Site:
    project: Project
    connections: Connections
    erpnext: Engine
    odoo: Engine
    mes: Engine
    erp_api: ErpnextServer
    sap_api: SapServer

    def run(self, flow: str, **options: Any) -> RunResult:
        return run_flow(self.project, flow, self.connections, RunOptions(**options))

    def rows(self, engine: Engine, table: str, key: str) -> dict[Any, dict[str, Any]]:
        with engine.connect() as conn:
            found = Table(table, MetaData(), autoload_with=conn)
            return {r[key]: dict(r) for r in conn.execute(select(found)).mappings()}


@pytest.fixture
def site(
    mariadb_database: Callable[[str], URL], pg_database: Callable[[str], URL], monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Site]:
    urls = {"erpnext_db": mariadb_database("erpnext"), "odoo_db": pg_database("odoo"), "mes_db": pg_database("mes")}
    with Connections(urls) as connections:
        erpnext, odoo, mes = (connections.engine(c) for c in ("erpnext_db", "odoo_db", "mes_db"))
        seed.build_erpnext(erpnext, extra_orders=EXTRA_ORDERS)
        seed.build_odoo(odoo)
        with mes.begin() as conn:
            conn.execute(text(
                "CREATE TABLE mes_work_order (work_order varchar PRIMARY KEY, material varchar NOT NULL, plant varchar, "
                "quantity numeric NOT NULL, unit varchar, planned_start timestamp)"
            ))
        erp_api = ErpnextServer(erpnext, ERP_KEY, ERP_SECRET)
        sap_api = SapServer(SAP_USER, SAP_PASSWORD, page_size=2)
        sap_api.orders += [
            sap_order(f"10004{n:02d}", f"MAT-0001{n:02d}", str(10 * n + 5), "PC", datetime(2026, 11, 20, 8, n))
            for n in range(7)
        ]
        with erp_api, sap_api:
            monkeypatch.setenv("AIRFLOW_CONN_ERPNEXT_API", _http(erp_api.url, ERP_KEY, ERP_SECRET, "token"))
            monkeypatch.setenv("AIRFLOW_CONN_SAP_API", _http(sap_api.url, SAP_USER, SAP_PASSWORD, "basic"))
            yield Site(load_project(PRODUCTS / "api_mappings"), connections, erpnext, odoo, mes, erp_api, sap_api)


def _submitted(erpnext: Engine) -> int:
    with erpnext.connect() as conn:
        return int(conn.execute(text(
            "SELECT count(*) FROM `tabWork Order` WHERE docstatus = 1 AND status <> 'Cancelled'")).scalar_one())


def _params(path: str) -> dict[str, str]:
    return {k: v[-1] for k, v in parse_qs(urlsplit(path).query).items()}


def test_work_orders_come_down_the_erpnext_api_into_odoo(site: Site) -> None:
    first = site.run("erpnext_api_work_orders")
    submitted = _submitted(site.erpnext)
    assert first.record.counts.rows_read == submitted
    assert first.record.counts.rows_loaded == submitted - 1  # MFG-WO-2026-00005: archived product
    orders = site.rows(site.odoo, "x_erpnext_work_order", "erp_name")
    assert "MFG-WO-2026-00003" not in orders and "MFG-WO-2026-00004" not in orders
    bolt = orders["MFG-WO-2026-00001"]
    assert (bolt["product_id"], bolt["product_qty"], bolt["product_uom_id"]) == (11, Decimal("100"), 1)
    assert bolt["date_start"] == datetime(2026, 11, 20, 0, 0)  # 08:00 in Shanghai
    assert bolt["date_deadline"] == date(2026, 11, 27)
    assert orders["MFG-WO-2026-00002"]["product_qty"] == Decimal("250.5")
    assert orders["MFG-WO-2026-00007"]["product_qty"] == Decimal("12.345")

    pages = [_params(r.path) for r in site.erp_api.requests_to("/api/resource/Work Order", "GET")
             if "limit_start" in r.path]
    assert [p["limit_start"] for p in pages] == [str(100 * n) for n in range(len(pages))]
    assert len(pages) == -(-(EXTRA_ORDERS + 7) // 100) + (1 if (EXTRA_ORDERS + 7) % 100 == 0 else 0)
    assert all(p["limit_page_length"] == "100" for p in pages)
    assert all(r.headers["Authorization"] == f"token {ERP_KEY}:{ERP_SECRET}" for r in site.erp_api.log)

    with site.odoo.connect() as conn:
        stored = conn.execute(select(watermark.c.cursor_value).where(watermark.c.flow == "erpnext_api_work_orders")).scalar_one()
    assert stored is not None
    site.erp_api.log.clear()
    again = site.run("erpnext_api_work_orders")
    assert again.record.counts.rows_loaded == 0
    asked = [_params(r.path) for r in site.erp_api.requests_to("/api/resource/Work Order", "GET") if "limit_start" in r.path]
    filters = json.loads(asked[0]["filters"])
    assert filters[1][:2] == ["modified", ">="]  # only what changed since the watermark's lookback
    assert again.record.counts.rows_read < first.record.counts.rows_read

    with site.erpnext.begin() as conn:
        conn.execute(text("UPDATE `tabWork Order` SET qty = 130, modified = modified + INTERVAL 1 DAY "
                          "WHERE name = 'MFG-WO-2026-00001'"))
    changed = site.run("erpnext_api_work_orders")
    assert changed.record.counts.rows_loaded == 1
    assert site.rows(site.odoo, "x_erpnext_work_order", "erp_name")["MFG-WO-2026-00001"]["product_qty"] == Decimal("130")


def test_the_default_page_is_twenty(site: Site) -> None:
    import httpx

    response = httpx.get(f"{site.erp_api.url}/api/resource/Work Order", headers={"Authorization": f"token {ERP_KEY}:{ERP_SECRET}"})
    assert len(response.json()["data"]) == 20


def test_wire_faults_are_retried_and_a_broken_answer_commits_nothing(site: Site) -> None:
    site.erp_api.fail("limit_start=100", "429", times=1, arg=1)
    site.erp_api.fail("limit_start=0", "503", times=2)
    site.erp_api.fail("limit_start=0", "slow", times=1, arg=0.3)
    site.erp_api.fail("limit_start=100", "malformed", times=1)
    with pytest.raises(StepFailed, match="not JSON") as caught:
        site.run("erpnext_api_work_orders")
    assert caught.value.retryable
    assert site.rows(site.odoo, "x_erpnext_work_order", "erp_name") == {}
    with site.odoo.connect() as conn:
        assert conn.execute(select(watermark.c.cursor_value).where(watermark.c.flow == "erpnext_api_work_orders")).first() is None
    run = site.run("erpnext_api_work_orders")
    assert run.record.counts.rows_loaded == _submitted(site.erpnext) - 1
    starts = [_params(r.path).get("limit_start") for r in site.erp_api.requests_to("/api/resource/Work Order", "GET")]
    assert starts.count("0") >= 4  # three answers refused or slow, then read


def test_a_500_fails_the_run_naming_the_status_and_the_apis_text(site: Site) -> None:
    site.erp_api.fail("limit_start=0", "500", times=1)
    with pytest.raises(StepFailed) as caught:
        site.run("erpnext_api_work_orders")
    assert "answered 500: injected 500" in str(caught.value.__cause__)
    assert ERP_SECRET not in str(caught.value)


def test_required_items_are_read_per_work_order(site: Site) -> None:
    site.run("erpnext_api_work_orders")
    run = site.run("erpnext_api_work_order_items")
    lines = {(r["erp_work_order"], r["line_no"]): r
             for r in site.rows(site.odoo, "x_erpnext_work_order_line", "id").values()}
    rod = lines[("MFG-WO-2026-00001", 1)]
    assert (rod["product_id"], rod["product_uom_qty"], rod["product_uom"]) == (13, Decimal("5.2"), 3)
    assert lines[("MFG-WO-2026-00002", 1)]["product_uom_qty"] == Decimal("12.525")
    assert ("MFG-WO-2026-00003", 1) not in lines  # a draft's line
    singles = site.erp_api.requests_to("/api/resource/Work Order/MFG-WO-2026-0000", "GET")
    assert {unquote(urlsplit(r.path).path).rsplit("/", 1)[1] for r in singles} >= {"MFG-WO-2026-00001", "MFG-WO-2026-00002"}
    assert run.record.counts.rows_loaded == len(lines)
    assert site.run("erpnext_api_work_order_items").record.counts.rows_loaded == 0


def test_sap_production_orders_come_through_odata_paged_by_skiptoken(site: Site) -> None:
    first = site.run("sap_production_orders")
    orders = site.rows(site.mes, "mes_work_order", "work_order")
    assert len(orders) == 7 and first.record.counts.rows_loaded == 7
    three = orders["1000403"]
    assert (three["material"], three["plant"], three["quantity"], three["unit"]) == ("MAT-000103", "1010", Decimal("35"), "PC")
    assert three["planned_start"] == datetime(2026, 11, 21, 0, 0)
    reads = site.sap_api.requests_to("/A_ProductionOrder_2", "GET")
    assert sum("$skiptoken" in unquote(r.path) for r in reads) == 3  # pages of 2: 2, 2, 2, 1
    assert all(r.headers["Authorization"].startswith("Basic ") for r in reads)

    site.sap_api.log.clear()
    site.sap_api.orders[0]["TotalQuantity"] = Decimal("99")
    site.sap_api.orders[0]["LastChangeDateTime"] = datetime(2026, 11, 21, 9, 0)
    again = site.run("sap_production_orders")
    assert again.record.counts.rows_loaded == 1
    assert site.rows(site.mes, "mes_work_order", "work_order")["1000400"]["quantity"] == Decimal("99")
    listed = [unquote_plus(r.path) for r in site.sap_api.requests_to(f"{ORDER_SERVICE}/A_ProductionOrder_2", "GET")
              if "$top" not in unquote_plus(r.path)]
    assert "LastChangeDateTime ge datetimeoffset'2026-11-20T07:56:00.000Z'" in listed[0]
    assert site.run("sap_production_orders").record.counts.rows_loaded == 0
