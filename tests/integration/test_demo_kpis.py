"""The demo factory's KPIs are ones a plant manager would believe: a fresh demo (its warehouse
refreshed straight from ERP and MES, as of today) lands every KPI view in a plausible range.

The ranges are read from the warehouse views, not from the dashboard's text, so a wrong formula
or an incoherent factory fails here whichever page shows it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from demo.setup import init_demo
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.sync.connections import Connections
from etl.warehouse.refresh import refresh

# The orders `make demo` generates.
DEMO_ORDERS = 300


@pytest.fixture(scope="module", params=[42, 7])
def warehouse(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    folder = tmp_path_factory.mktemp(f"demo_kpis_{request.param}")
    urls = {n: f"sqlite:///{folder / (n + '.db')}" for n in ("erp", "mes", "warehouse")}
    init_demo(erp_url=urls["erp"], mes_url=urls["mes"], warehouse_url=urls["warehouse"], orders=DEMO_ORDERS,
              seed=request.param, connections_file=folder / "connections.json")
    with Connections({f"{n}_db": url for n, url in urls.items()}) as connections:
        refresh(connections, load_project(REPO_ROOT / "mappings"))
    engine = sa.create_engine(urls["warehouse"])
    yield engine
    engine.dispose()


def query(engine: sa.Engine, sql: str) -> list[sa.Row]:
    with engine.connect() as conn:
        return list(conn.execute(sa.text(sql)))


def test_every_oee_cell_is_plausible(warehouse: sa.Engine) -> None:
    cells = query(warehouse, "SELECT * FROM kpi_oee_daily")
    machines = {c.work_center for c in cells}
    assert len(machines) == 8 and len(cells) >= 8 * 12
    for c in cells:
        where = f"{c.work_center} {c.production_date}"
        assert c.oee is not None and 0.20 <= c.oee <= 0.95, (where, c.oee)
        for part in ("availability", "performance", "quality"):
            assert 0 < getattr(c, part) <= 1, (where, part, getattr(c, part))


def test_yield_and_first_pass_yield(warehouse: sa.Engine) -> None:
    (lots, scrapped, good, scrap), = query(
        warehouse, "SELECT SUM(operation_lots), SUM(lots_with_scrap), SUM(good_qty), SUM(scrap_qty) FROM kpi_yield_daily"
    )
    first_pass = 1 - scrapped / lots
    assert 0.80 <= first_pass <= 0.99, first_pass
    assert all(0.9 <= r[0] <= 1 for r in query(warehouse, "SELECT yield_rate FROM kpi_yield_daily"))
    assert 0.0005 < scrap / (good + scrap) < 0.05


def test_delivery_and_overdue(warehouse: sa.Engine) -> None:
    (on_time, delivered), = query(warehouse, "SELECT SUM(on_time_orders), SUM(delivered_orders) FROM kpi_on_time_delivery")
    assert delivered >= DEMO_ORDERS // 3
    assert 0.60 <= on_time / delivered <= 0.98, on_time / delivered
    (open_orders, overdue), = query(
        warehouse, "SELECT COUNT(*), SUM(is_late) FROM kpi_order_progress WHERE status IN ('CRTD', 'REL')"
    )
    assert open_orders >= DEMO_ORDERS // 5
    assert overdue < open_orders / 4, (overdue, open_orders)


def test_scrap_cost_against_output(warehouse: sa.Engine) -> None:
    (scrap_cost,), = query(warehouse, "SELECT SUM(scrap_cost) FROM kpi_scrap_pareto")
    (output_value,), = query(warehouse, """
        SELECT SUM(g.quantity * m.standard_cost) FROM fact_goods_movement g
        JOIN stg_material m ON m.material_no = g.material_no
        WHERE g.movement_type = '101'
    """)
    assert 0.0005 < scrap_cost / output_value < 0.05, (scrap_cost, output_value)
    reasons = query(warehouse, "SELECT scrap_reason, share FROM kpi_scrap_pareto")
    assert len(reasons) >= 3 and max(r.share for r in reasons) < 0.8
