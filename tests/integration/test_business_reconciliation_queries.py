"""The business reconciliations of mappings/reconciliations.yaml on a hand-made ERP with known
gaps (report_factory.business_fixture), on SQLite and on the real PostgreSQL server: the same
queries, the same lines, exact numbers."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from report_factory import business_fixture
from sqlalchemy.engine import URL, make_url

from etl.config.flows import BusinessReconciliation, ReconciliationQuery
from etl.config.project import load_project
from etl.sync.business_reconciliation import reconcile, reconcile_all
from etl.sync.connections import Connections, create_db_engine

D = Decimal


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def erp_url(request: pytest.FixtureRequest, tmp_path: Path) -> URL:
    if request.param == "sqlite":
        url = make_url(f"sqlite:///{tmp_path / 'erp.db'}")
    else:
        url = request.getfixturevalue("pg_database")("erp")
    engine = create_db_engine(url)
    business_fixture(engine)
    engine.dispose()
    return url


def lines(result) -> list[tuple]:
    return [(line.key, line.erp, line.mes, line.difference, line.within) for line in result.lines]


def test_the_three_reconciliations_find_exactly_the_planted_gaps(erp_url: URL) -> None:
    project = load_project()
    with Connections({"erp_db": erp_url}) as connections:
        results = {r.check.name: r for r in reconcile_all(project, connections)}
    assert list(results) == ["order_output", "material_issue", "finished_goods_receipt"]
    assert all(r.error is None for r in results.values())

    # Good + scrap at the last operation against the order quantity; 1000004 is still running.
    assert lines(results["order_output"]) == [
        (("1000001",), D("100"), D("102"), D("2"), True),        # 2 % over plan: within 5 %
        (("1000002",), D("50"), D("40.5"), D("-9.5"), False),
        (("1000003",), D("200"), D("0"), D("-200"), False),       # no confirmation at all
    ]
    assert results["order_output"].lines[2].mes_missing and not results["order_output"].lines[2].erp_missing

    assert lines(results["material_issue"]) == [
        (("1000001", "MAT-000010"), D("200"), D("204"), D("4"), True),
        (("1000001", "MAT-000011"), D("10"), D("12"), D("2"), False),  # 1 KG allowed
        (("1000002", "MAT-000012"), D("25"), D("25.5"), D("0.5"), True),
        (("1000002", "MAT-000099"), D("0"), D("3"), D("3"), False),    # issued, never required
    ]

    # The receipt of 1000002 posted after midnight counts for the day its last operation ended.
    assert lines(results["finished_goods_receipt"]) == [
        (("1000", "2026-03-02"), D("137"), D("138"), D("1"), False),
        (("2000", "2026-03-05"), D("5"), D("0"), D("-5"), False),
    ]
    assert sum(len(r.mismatches) for r in results.values()) == 6


def test_a_query_that_fails_or_misses_a_column_is_reported_not_raised(erp_url: URL) -> None:
    broken = BusinessReconciliation(
        name="broken", key=["order_no"],
        erp=ReconciliationQuery(connection="erp_db", sql="SELECT order_no, quantity AS value FROM no_such_table"),
        mes=ReconciliationQuery(connection="erp_db", sql="SELECT order_no FROM production_order"),
    )
    with Connections({"erp_db": erp_url}) as connections:
        failed = reconcile(broken, connections)
        assert failed.error is not None and failed.error.startswith("erp query on erp_db failed: ")
        assert "no_such_table" in failed.error and not failed.ok

        no_value = reconcile(broken.model_copy(update={"erp": broken.mes}), connections)
    assert no_value.error == (
        "reconciliation 'broken', erp side: the query returns no column(s) value "
        "(it must return order_no and value)"
    )
