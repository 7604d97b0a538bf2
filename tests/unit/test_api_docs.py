"""docs/api-mode.md and the web API part of docs/connecting-a-system.md show the flows and
connections as shipped and as the code reads them."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

from etl.config.flows import Flow
from etl.sync.http_api import api_connection

REPO = Path(__file__).resolve().parents[2]
FLOWS = REPO / "tests" / "products" / "api_mappings" / "flows"
GUIDE = (REPO / "docs" / "connecting-a-system.md").read_text(encoding="utf-8")
API_MODE = (REPO / "docs" / "api-mode.md").read_text(encoding="utf-8")


def _blocks(text: str, lang: str) -> list[str]:
    return [b.split("```")[0] for b in text.split(f"```{lang}\n")[1:]]


def _shipped(flow: str) -> dict[str, object]:
    data = yaml.safe_load((FLOWS / f"{flow}.yaml").read_text(encoding="utf-8"))
    data.pop("description")
    return dict(data)


@pytest.mark.parametrize("flow", [
    "erpnext_api_production_reports", "odoo_api_work_orders", "odoo_api_production_reports",
    "sap_production_orders", "sap_confirmations",
])
def test_the_guide_prints_each_api_flow_as_shipped(flow: str) -> None:
    block = next(b for b in _blocks(GUIDE, "yaml") if b.startswith(f"flow: {flow}\n"))
    assert yaml.safe_load(block) == _shipped(flow)
    Flow.model_validate(yaml.safe_load(block))


def test_api_mode_prints_the_erpnext_source_as_shipped() -> None:
    block = next(b for b in _blocks(API_MODE, "yaml") if b.startswith("source:\n"))
    assert yaml.safe_load(block)["source"] == _shipped("erpnext_api_work_orders")["source"]


def test_the_connections_shown_are_read_as_documented(monkeypatch: pytest.MonkeyPatch) -> None:
    lines = [line for b in _blocks(GUIDE, "") for line in b.splitlines() if line.startswith("AIRFLOW_CONN_")]
    seen = {}
    for line in lines:
        name, _, value = line.partition("=")
        monkeypatch.setenv(name, shlex.split(value)[0])
        if name.endswith("_API"):
            seen[name] = api_connection(name.removeprefix("AIRFLOW_CONN_").lower())
    assert (seen["AIRFLOW_CONN_ERPNEXT_API"].auth, seen["AIRFLOW_CONN_ERPNEXT_API"].base_url) == ("token", "https://erp.example.com")
    assert seen["AIRFLOW_CONN_ODOO_API"].headers == {"X-Odoo-Database": "prod"}
    assert seen["AIRFLOW_CONN_SAP_API"].auth == "basic"
    spec = json.loads(_blocks(API_MODE, "json")[0])
    monkeypatch.setenv("AIRFLOW_CONN_ERP_API", json.dumps(spec))
    conn = api_connection("erp_api")
    assert (conn.auth, conn.rate_per_second, conn.timeout, conn.verify) == ("token", 5.0, 30.0, True)
