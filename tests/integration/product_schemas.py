"""Small hand-made copies of product tables the load options write into.

Odoo-like (``mrp_production``, ``stock_move``, ``ir_sequence``): serial ids, no unique index on
``origin``, a no-gap number series. ERPNext-like (``tabStock Entry``, ``tabStock Entry Detail``,
``tabSeries``): names with spaces, the document number is the primary key, lines point at it
through ``parent``. Plus an SAP-like inbound goods-movement table for delta postings, and the
MES-side source tables the flows read.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, MetaData, Table, select, text
from sqlalchemy.engine import URL

from etl.config.crosswalks import load_crosswalks
from etl.config.flows import Defaults, Flow, Project
from etl.config.paths import REPO_ROOT
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, RunResult, run_flow

_SERIAL = {
    "postgresql": "SERIAL PRIMARY KEY",
    "mariadb": "INTEGER AUTO_INCREMENT PRIMARY KEY",
    "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
}
_TS = {"postgresql": "TIMESTAMP", "mariadb": "DATETIME(6)", "sqlite": "TIMESTAMP"}


def _ddl(kind: str, statements: str) -> list[str]:
    sql = statements.replace("{serial}", _SERIAL[kind]).replace("{ts}", _TS[kind])
    if kind == "mariadb":
        sql = sql.replace('"', "`")
    return [s.strip() for s in sql.split(";") if s.strip()]


SOURCE = """
CREATE TABLE mes_order (
  order_no VARCHAR(20) PRIMARY KEY, material_no VARCHAR(20), quantity NUMERIC(12,3), updated_at {ts} NOT NULL);
CREATE TABLE mes_order_component (
  order_no VARCHAR(20) NOT NULL, item_no INTEGER NOT NULL, material_no VARCHAR(20), quantity NUMERIC(12,3),
  unit VARCHAR(8), PRIMARY KEY (order_no, item_no));
CREATE TABLE mes_progress (
  report_id INTEGER PRIMARY KEY, order_no VARCHAR(20) NOT NULL, material_no VARCHAR(20) NOT NULL,
  qty_done_cumulative NUMERIC(12,3), updated_at {ts} NOT NULL)
"""

ODOO = """
CREATE TABLE ir_sequence (id {serial}, code VARCHAR(64), number_next INTEGER NOT NULL, prefix VARCHAR(32));
CREATE TABLE mrp_production (
  id {serial}, name VARCHAR(32) NOT NULL, origin VARCHAR(32), product_ref VARCHAR(20),
  product_qty NUMERIC(12,3), state VARCHAR(16));
CREATE TABLE stock_move (
  id {serial}, raw_material_production_id INTEGER NOT NULL REFERENCES mrp_production (id),
  product_ref VARCHAR(20) NOT NULL, product_uom_qty NUMERIC(12,3), product_uom VARCHAR(8), line_no INTEGER NOT NULL);
INSERT INTO ir_sequence (code, number_next, prefix) VALUES ('mrp.production', 10, 'WH/MO/');
INSERT INTO ir_sequence (code, number_next, prefix) VALUES ('stock.picking', 500, 'WH/PICK/')
"""

ERPNEXT = """
CREATE TABLE "tabSeries" (name VARCHAR(100) PRIMARY KEY, current INTEGER NOT NULL DEFAULT 0);
CREATE TABLE "tabStock Entry" (
  name VARCHAR(140) PRIMARY KEY, "stock_entry_type" VARCHAR(40), "custom_mes_ref" VARCHAR(40),
  "fg_completed_qty" DECIMAL(21,9), "docstatus" INTEGER NOT NULL DEFAULT 0);
CREATE TABLE "tabStock Entry Detail" (
  name VARCHAR(140) PRIMARY KEY, parent VARCHAR(140) NOT NULL, parenttype VARCHAR(40),
  item_code VARCHAR(140) NOT NULL, qty DECIMAL(21,9), uom VARCHAR(20), idx INTEGER NOT NULL);
INSERT INTO "tabSeries" (name, current) VALUES ('MAT-STE-2026-', 41)
"""

GOODS_MOVEMENT = """
CREATE TABLE if_goods_movement (
  posting_key VARCHAR(80) PRIMARY KEY, order_no VARCHAR(20) NOT NULL, material_no VARCHAR(20) NOT NULL,
  movement_type VARCHAR(3) NOT NULL, quantity NUMERIC(12,3) NOT NULL)
"""


T = datetime(2026, 11, 20, 8, 0)


@dataclass
class Site:
    """A source database and a target database of one kind, and a way to run flows on them."""

    kind: str
    connections: Connections
    flows: dict[str, Flow]

    @property
    def source(self) -> Engine:
        return self.connections.engine("mes_db")

    @property
    def target(self) -> Engine:
        return self.connections.engine("erp_db")

    def execute(self, engine: Engine, statements: list[str], params: list[dict[str, Any]] | None = None) -> None:
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement), params or {})

    def write(self, engine: Engine, table: str, rows: list[dict[str, Any]], replace_on: str | None = None) -> None:
        """Insert ``rows`` through the reflected table (typed binds on every database); with
        ``replace_on``, first delete rows sharing that column's value."""
        reflected = Table(table, MetaData(), autoload_with=engine)
        with engine.begin() as conn:
            if replace_on is not None:
                conn.execute(reflected.delete().where(reflected.c[replace_on].in_([r[replace_on] for r in rows])))
            conn.execute(reflected.insert(), rows)

    def create(self, engine: Engine, ddl: str) -> None:
        self.execute(engine, _ddl(self.kind, ddl))

    def add(self, flow: dict[str, Any]) -> Flow:
        parsed = Flow.model_validate({"direction": "mes_to_erp", **flow})
        self.flows[parsed.flow] = parsed
        return parsed

    def run(self, name: str, hook: Callable[[str], None] | None = None, **options: Any) -> RunResult:
        project = Project(flows=self.flows, defaults=Defaults(), mappings_dir=str(REPO_ROOT / "mappings"))
        crosswalks = load_crosswalks(Path(project.mappings_dir) / "crosswalks")
        return run_flow(project, name, self.connections, RunOptions(**options), crosswalks=crosswalks, hook=hook)

    def rows(self, table: str, order_by: str) -> list[dict[str, Any]]:
        reflected = Table(table, MetaData(), autoload_with=self.target)
        with self.target.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(reflected).order_by(reflected.c[order_by]))]

    def scalar(self, sql: str) -> Any:
        if self.kind == "mariadb":
            sql = sql.replace('"', "`")
        with self.target.connect() as conn:
            return conn.execute(text(sql)).scalar_one()


def make_site(request: pytest.FixtureRequest, kind: str) -> Iterator[Site]:
    """Source and target databases of ``kind`` (postgresql, mariadb or sqlite), with the MES tables."""
    if kind == "sqlite":
        urls: dict[str, URL] = request.getfixturevalue("sqlite_urls")
        source, target = urls["mes"], urls["erp"]
    else:
        make: Callable[[str], URL] = request.getfixturevalue("pg_database" if kind == "postgresql" else "mariadb_database")
        source, target = make("mes"), make("erp")
    connections = Connections({"mes_db": source, "erp_db": target})
    site = Site(kind, connections, {})
    site.create(site.source, SOURCE)
    yield site
    connections.dispose()


def write_orders(site: Site, rows: list[tuple[str, str, str]], at: datetime = T) -> None:
    """Write MES orders (order_no, material_no, quantity), replacing rows of the same number."""
    site.write(site.source, "mes_order", [
        {"order_no": o, "material_no": m, "quantity": Decimal(q), "updated_at": at} for o, m, q in rows
    ], replace_on="order_no")


def erpnext_receipt_flow() -> dict[str, Any]:
    """MES orders -> ERPNext ``tabStock Entry``, named from the ``tabSeries`` counter (it holds the last number)."""
    return {
        "flow": "erpnext_receipts",
        "source": {"connection": "mes_db", "table": "mes_order"},
        "target": {
            "connection": "erp_db", "table": "tabStock Entry", "generated_key": "name",
            "document_number": {
                "column": "name", "format": "MAT-STE-2026-{n:05d}",
                "sequence": {"table": "tabSeries", "key": {"name": "MAT-STE-2026-"}, "counter": "current", "holds": "last"},
            },
        },
        "key": ["custom_mes_ref"],
        "cursor": {"column": "updated_at"},
        "load": {"match": "natural_key"},
        "columns": [
            {"target": "custom_mes_ref", "source": "order_no"},
            {"target": "stock_entry_type", "value": "Manufacture"},
            {"target": "fg_completed_qty", "source": "quantity"},
        ],
    }


def odoo_order_with_lines_flow() -> dict[str, Any]:
    """``odoo_order_flow`` with each order's components as ``stock_move`` lines of its production."""
    flow = odoo_order_flow()
    flow["lines"] = {
        "source": {"table": "mes_order_component", "parent_column": "order_no", "header_column": "order_no"},
        "target": {"table": "stock_move", "header_id_column": "raw_material_production_id"},
        "key": ["line_no"],
        "columns": [
            {"target": "line_no", "source": "item_no"},
            {"target": "product_ref", "source": "material_no"},
            {"target": "product_uom_qty", "source": "quantity", "convert_unit": {"unit_column": "unit"}},
            {"target": "product_uom", "source": "unit", "crosswalk": "unit"},
        ],
    }
    return flow


def odoo_order_flow(**load: Any) -> dict[str, Any]:
    """MES orders into Odoo's mrp_production: id generated, named from ir_sequence, keyed on origin."""
    return {
        "flow": "odoo_orders",
        "source": {"connection": "mes_db", "table": "mes_order"},
        "target": {
            "connection": "erp_db", "table": "mrp_production", "generated_key": "id",
            "document_number": {
                "column": "name", "format": "WH/MO/{n:05d}",
                "sequence": {"table": "ir_sequence", "key": {"code": "mrp.production"}, "counter": "number_next"},
            },
        },
        "key": ["origin"],
        "cursor": {"column": "updated_at"},
        "load": {"match": "natural_key", **load},
        "columns": [
            {"target": "origin", "source": "order_no"},
            {"target": "product_ref", "source": "material_no"},
            {"target": "product_qty", "source": "quantity"},
            {"target": "state", "value": "confirmed"},
        ],
    }
