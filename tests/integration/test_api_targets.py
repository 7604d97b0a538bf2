"""Flows whose target is a product's web API, each against a local server speaking that product's
documented protocol over real HTTP (tests/products/api_servers.py): ERPNext REST on the ERPNext
tables (MariaDB), Odoo JSON-2 on the Odoo tables (PostgreSQL), SAP OData V2 confirmations with
the CSRF token. Reruns post nothing twice; a crash between a successful POST and the commit does
not double the posting (exactly once where the API allows a lookup, detected where it does not);
refusals wait in quarantine with the HTTP status and the API's own words; no secret reaches the
ledger or the quarantine."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, select, text
from sqlalchemy.engine import URL

from etl.config.flows import Project
from etl.config.project import load_project
from etl.core.errors import StepFailed
from etl.sync.api_sink import count_postings
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import api_posting, ledger, quarantine
from etl.sync.runner import RunOptions, RunResult, run_flow
from tests.integration.test_products import PRODUCTS, seed
from tests.products.api_servers import CONFIRMATION_SERVICE, ErpnextServer, OdooServer, SapServer, sap_order

pytestmark = pytest.mark.slow

ERP_KEY, ERP_SECRET = "erp-key-1234", "erp-secret-98765"
ODOO_KEY = "odoo-api-key-abcdef0123"
SAP_USER, SAP_PASSWORD = "COMM_USER", "sap-Passw0rd-xyz"


def _http(url: str, login: str | None, password: str, auth: str) -> str:
    return json.dumps({"conn_type": "http", "host": url, "login": login, "password": password,
                       "extra": {"auth": auth, "backoff": 0.05}})


@dataclass
class Site:
    project: Project
    connections: Connections
    erpnext: Engine
    odoo: Engine
    pipeline: Engine
    mes: Engine
    erp_api: ErpnextServer
    odoo_api: OdooServer
    sap_api: SapServer

    def run(self, flow: str, hook: Callable[[str], None] | None = None, **options: Any) -> RunResult:
        return run_flow(self.project, flow, self.connections, RunOptions(**options), hook=hook)

    def rows(self, engine: Engine, table: str, key: str) -> dict[Any, dict[str, Any]]:
        with engine.connect() as conn:
            found = Table(table, MetaData(), autoload_with=conn)
            return {r[key]: dict(r) for r in conn.execute(select(found)).mappings()}

    def waiting(self, flow: str) -> dict[str, str]:
        with self.pipeline.connect() as conn:
            q = quarantine.c
            return {r.source_key: r.reason for r in conn.execute(
                select(q.source_key, q.reason).where(q.flow == flow, q.status == "waiting"))}


@pytest.fixture
def site(
    mariadb_database: Callable[[str], URL], pg_database: Callable[[str], URL], monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Site]:
    urls = {"erpnext_db": mariadb_database("erpnext"), "odoo_db": pg_database("odoo"),
            "pipeline_db": pg_database("pipeline"), "mes_db": pg_database("mes")}
    with Connections(urls) as connections:
        erpnext, odoo = connections.engine("erpnext_db"), connections.engine("odoo_db")
        pipeline, mes = connections.engine("pipeline_db"), connections.engine("mes_db")
        seed.build_erpnext(erpnext)
        seed.build_odoo(odoo)
        seed.apply_sql(pipeline, PRODUCTS / "pipeline" / "api_posted.sql")
        with mes.begin() as conn:
            conn.execute(text(
                "CREATE TABLE mes_confirmation (confirmation_id varchar PRIMARY KEY, order_number varchar NOT NULL, "
                "operation varchar NOT NULL, yield_qty numeric NOT NULL, scrap_qty numeric NOT NULL, unit varchar NOT NULL, "
                "confirmed_at timestamp NOT NULL)"
            ))
        erp_api, odoo_api = ErpnextServer(erpnext, ERP_KEY, ERP_SECRET), OdooServer(odoo, ODOO_KEY)
        sap_api = SapServer(SAP_USER, SAP_PASSWORD)
        sap_api.orders += [sap_order("1000456", "MAT-000123", "100", "PC", datetime(2026, 11, 20, 8, 0)),
                           sap_order("1000457", "MAT-000124", "40", "PC", datetime(2026, 11, 20, 9, 0))]
        with erp_api, odoo_api, sap_api:
            monkeypatch.setenv("AIRFLOW_CONN_ERPNEXT_API", _http(erp_api.url, ERP_KEY, ERP_SECRET, "token"))
            monkeypatch.setenv("AIRFLOW_CONN_ODOO_API", _http(odoo_api.url, None, ODOO_KEY, "bearer"))
            monkeypatch.setenv("AIRFLOW_CONN_SAP_API", _http(sap_api.url, SAP_USER, SAP_PASSWORD, "basic"))
            yield Site(load_project(PRODUCTS / "api_mappings"), connections, erpnext, odoo, pipeline, mes, erp_api, odoo_api, sap_api)


class Crash(Exception):
    pass


def _crash_at(step: str) -> Callable[[str], None]:
    def hook(name: str) -> None:
        if name == step:
            raise Crash(f"killed at {step}")
    return hook


def test_production_reports_post_through_the_erpnext_api_once(site: Site) -> None:
    first = site.run("erpnext_api_production_reports")
    reports = site.rows(site.erpnext, "tabMES Production Report", "name")
    assert set(reports) == {"WH/MO/00001", "WH/MO/00003"}
    done = reports["WH/MO/00001"]
    assert (done["work_order"], done["item_code"], done["odoo_state"]) == ("MFG-WO-2026-00001", "FG-BOLT-M8", "done")
    assert done["produced_qty"] == Decimal("100") and done["completed_on"] == datetime(2026, 11, 20, 18, 0)
    assert first.record.counts.rows_loaded == 2 and first.record.options["api_posted"] == 2
    assert len(site.erp_api.requests_to("/api/resource/MES Production Report", "POST")) == 2
    assert site.waiting("erpnext_api_production_reports") == {
        "name=WH/MO/00005": "crosswalk 'odoo_product' has no ERP code for 14 (column item_code)",
    }
    again = site.run("erpnext_api_production_reports", full_refresh=True)
    assert again.record.counts.rows_loaded == 0 and again.record.options["api_posted"] == 0
    assert len(site.erp_api.requests_to("/api/resource/MES Production Report", "POST")) == 2
    assert not site.erp_api.requests_to("/api/resource/MES Production Report", "PUT")

    with site.odoo.begin() as conn:
        conn.execute(text("UPDATE mrp_production SET qty_producing = 25, write_date = write_date + interval '1 hour' WHERE id = 3"))
    changed = site.run("erpnext_api_production_reports")
    assert changed.record.options["api_posted"] == 1
    assert len(site.erp_api.requests_to("/api/resource/MES Production Report/WH/MO/00003", "PUT")) == 1
    assert site.rows(site.erpnext, "tabMES Production Report", "name")["WH/MO/00003"]["produced_qty"] == Decimal("25")


def test_a_crash_after_the_erpnext_post_does_not_post_twice(site: Site) -> None:
    with pytest.raises(StepFailed):
        site.run("erpnext_api_production_reports", hook=_crash_at("posted_to_api"))
    posts = site.erp_api.requests_to("/api/resource/MES Production Report", "POST")
    assert len(posts) == 2  # the API has them; the run's commit was lost
    with site.pipeline.connect() as conn:
        assert count_postings(conn, "erpnext_api_production_reports") == 0
    rerun = site.run("erpnext_api_production_reports")
    assert len(site.erp_api.requests_to("/api/resource/MES Production Report", "POST")) == 2
    assert rerun.record.options["api_found_posted_before"] == 2 and rerun.record.counts.rows_loaded == 2
    with site.pipeline.connect() as conn:
        hows = {r.posting_key: (r.how, r.remote_id) for r in conn.execute(select(api_posting))}
    assert hows == {"WH/MO/00001": ("found", "WH/MO/00001"), "WH/MO/00003": ("found", "WH/MO/00003")}
    assert site.run("erpnext_api_production_reports").record.options["api_posted"] == 0


def test_work_orders_reach_odoo_through_json2_exactly_once(site: Site) -> None:
    first = site.run("odoo_api_work_orders")
    orders = site.rows(site.odoo, "x_erpnext_work_order", "erp_name")
    assert set(orders) == {"MFG-WO-2026-00001", "MFG-WO-2026-00002", "MFG-WO-2026-00006", "MFG-WO-2026-00007"}
    bolt = orders["MFG-WO-2026-00001"]
    assert (bolt["product_id"], bolt["product_qty"], bolt["product_uom_id"]) == (11, Decimal("100"), 1)
    assert bolt["date_start"] == datetime(2026, 11, 20, 0, 0)
    assert first.record.options["api_posted"] == 4
    creates = site.odoo_api.requests_to("/json/2/x_erpnext_work_order/create")
    assert len(creates) == 4 and all(r.headers["Authorization"] == f"bearer {ODOO_KEY}" for r in creates)
    with site.pipeline.connect() as conn:
        remote = {r.posting_key: r.remote_id for r in conn.execute(select(api_posting))}
    assert remote["MFG-WO-2026-00001"] == str(bolt["id"])

    with site.erpnext.begin() as conn:
        conn.execute(text("UPDATE `tabWork Order` SET qty = 120, modified = modified + INTERVAL 1 HOUR "
                          "WHERE name = 'MFG-WO-2026-00001'"))
    with pytest.raises(StepFailed):
        site.run("odoo_api_work_orders", hook=_crash_at("posted_to_api"))
    assert len(site.odoo_api.requests_to("/write")) == 1
    rerun = site.run("odoo_api_work_orders")
    # Odoo has the new quantity already; the lookup finds the order, and nothing is created.
    assert len(site.odoo_api.requests_to("/create")) == 4
    assert site.rows(site.odoo, "x_erpnext_work_order", "erp_name")["MFG-WO-2026-00001"]["product_qty"] == Decimal("120")
    assert rerun.record.counts.rows_loaded == 1


def _confirm(site: Site, rows: list[tuple[str, str, str, str]]) -> None:
    with site.mes.begin() as conn:
        for conf, order, qty, scrap in rows:
            conn.execute(text(
                "INSERT INTO mes_confirmation VALUES (:c, :o, '0010', :q, :s, 'PC', :t)"
            ), {"c": conf, "o": order, "q": Decimal(qty), "s": Decimal(scrap), "t": datetime(2026, 11, 20, 10, 0)})


def test_confirmations_post_to_sap_with_the_csrf_token_and_refusals_wait(site: Site) -> None:
    _confirm(site, [("MES-C-1", "1000456", "60", "2"), ("MES-C-2", "1000457", "40", "0"), ("MES-C-3", "9999999", "1", "0")])
    run = site.run("sap_confirmations")
    assert run.record.options["api_posted"] == 2
    posted = {c["ConfirmationText"]: c for c in site.sap_api.confirmations}
    assert set(posted) == {"MES-C-1", "MES-C-2"}
    assert posted["MES-C-1"]["ConfirmationYieldQuantity"] == Decimal("60") and posted["MES-C-1"]["OrderID"] == "1000456"
    posts = site.sap_api.requests_to("/ProdnOrdConf2", "POST")
    assert all(r.headers.get("X-CSRF-Token") == site.sap_api.csrf for r in posts)
    assert isinstance(posts[0].body["ConfirmationYieldQuantity"], str)  # Edm.Decimal as text
    assert site.waiting("sap_confirmations") == {
        "confirmation_id=MES-C-3": "the API refused the posting: HTTP 400: Order 9999999 does not exist",
    }
    assert site.run("sap_confirmations", full_refresh=True).record.options["api_posted"] == 0
    assert len(site.sap_api.confirmations) == 2


def test_a_crash_after_the_sap_post_is_found_by_the_lookup(site: Site) -> None:
    _confirm(site, [("MES-C-1", "1000456", "60", "2")])
    with pytest.raises(StepFailed):
        site.run("sap_confirmations", hook=_crash_at("merge"))
    assert len(site.sap_api.confirmations) == 1
    rerun = site.run("sap_confirmations")
    assert len(site.sap_api.confirmations) == 1
    assert rerun.record.options["api_found_posted_before"] == 1


def test_without_a_lookup_a_lost_answer_is_detected_not_posted_twice(site: Site) -> None:
    """An API with neither a lookup nor an idempotency key: at least once, detected."""
    flow = site.project.flow("sap_confirmations")
    assert flow.target.api is not None
    blind = flow.model_copy(update={"flow": "sap_blind", "target": flow.target.model_copy(
        update={"api": flow.target.api.model_copy(update={"lookup": None})})})
    assert blind.target.api is not None and blind.target.api.guarantee == "at least once, detected"
    site.project = site.project.model_copy(update={"flows": {**site.project.flows, "sap_blind": blind}})
    _confirm(site, [("MES-C-1", "1000456", "60", "2")])
    with pytest.raises(StepFailed):
        site.run("sap_blind", hook=_crash_at("posted_to_api"))
    assert len(site.sap_api.confirmations) == 1
    rerun = site.run("sap_blind")
    assert len(site.sap_api.confirmations) == 1  # not sent again
    reason = site.waiting("sap_blind")["confirmation_id=MES-C-1"]
    assert "may be in the API already" in reason and rerun.record.counts.rows_quarantined == 1


def test_a_wrong_secret_fails_the_run_and_no_secret_reaches_ledger_or_quarantine(
    site: Site, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ERPNEXT_API", _http(site.erp_api.url, ERP_KEY, "wrong-secret-4711", "token"))
    with pytest.raises(StepFailed) as caught:
        site.run("erpnext_api_production_reports")
    assert "answered 401" in str(caught.value)
    with site.pipeline.connect() as conn:
        errors = " ".join(str(r.error) for r in conn.execute(select(ledger.c.error)))
        reasons = " ".join(str(r.reason) + str(r.payload) for r in conn.execute(select(quarantine.c.reason, quarantine.c.payload)))
    assert "answered 401" in errors
    for secret in ("wrong-secret-4711", ERP_SECRET, ERP_KEY):
        assert secret not in errors + reasons + str(caught.value)


def test_a_429_and_a_502_on_the_lookup_are_retried(site: Site) -> None:
    site.erp_api.fail("/api/resource/MES Production Report/WH/MO/00001", "429", times=1, arg=1)
    site.erp_api.fail("/api/resource/MES Production Report/WH/MO/00003", "502", times=2)
    assert site.run("erpnext_api_production_reports").record.options["api_posted"] == 2
    assert len(site.erp_api.requests_to("/api/resource/MES Production Report", "POST")) == 2


def test_a_confirmation_service_root_is_what_the_csrf_fetch_reads(site: Site) -> None:
    _confirm(site, [("MES-C-1", "1000456", "60", "2")])
    site.run("sap_confirmations")
    fetches = [r for r in site.sap_api.log if r.headers.get("X-CSRF-Token") == "Fetch"]
    assert len(fetches) == 1 and fetches[0].path == f"{CONFIRMATION_SERVICE}/"


def test_api_to_api_odoo_json2_reports_reach_erpnext_rest(site: Site) -> None:
    first = site.run("odoo_api_production_reports")
    reports = site.rows(site.erpnext, "tabMES Production Report", "name")
    assert set(reports) == {"WH/MO/00001", "WH/MO/00003"}
    assert reports["WH/MO/00001"]["item_code"] == "FG-BOLT-M8"
    assert reports["WH/MO/00001"]["completed_on"] == datetime(2026, 11, 20, 18, 0)
    assert first.record.options["api_posted"] == 2
    reads = site.odoo_api.requests_to("/json/2/mrp.production/search_read")
    assert all(r.body.get("load", "absent") is None for r in reads)  # many2one as plain ids
    assert any(r.body.get("limit") == 200 and r.body.get("offset") == 0 for r in reads)
    site.odoo_api.log.clear()
    again = site.run("odoo_api_production_reports")
    assert again.record.options["api_posted"] == 0
    asked = [r.body for r in site.odoo_api.requests_to("/search_read") if "offset" in r.body]
    assert asked[0]["domain"][1][:2] == ["write_date", ">="]
    assert len(site.erp_api.requests_to("/api/resource/MES Production Report", "POST")) == 2


def test_a_crash_after_the_odoo_creates_does_not_create_twice(site: Site) -> None:
    with pytest.raises(StepFailed):
        site.run("odoo_api_work_orders", hook=_crash_at("posted_to_api"))
    assert len(site.odoo_api.requests_to("/create")) == 4
    rerun = site.run("odoo_api_work_orders")
    assert len(site.odoo_api.requests_to("/create")) == 4
    assert rerun.record.options["api_found_posted_before"] == 4
    with site.odoo.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM x_erpnext_work_order")).scalar_one() == 4
