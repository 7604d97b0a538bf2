"""Delta postings: the MES reports cumulative quantities, the ERP's interface table receives only
the difference from what it already holds, exactly once, whatever crashes in between."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select

from etl.core.errors import StepFailed
from etl.sync.pipeline_tables import quarantine, watermark
from tests.integration.product_schemas import GOODS_MOVEMENT, Site, T, make_site

pytestmark = pytest.mark.slow


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def site(request: pytest.FixtureRequest) -> Iterator[Site]:
    for s in make_site(request, request.param):
        s.create(s.target, GOODS_MOVEMENT)
        yield s


def _flow(negative: str = "quarantine") -> dict[str, Any]:
    return {
        "flow": "fg_receipts",
        "source": {"connection": "mes_db", "table": "mes_progress"},
        "target": {"connection": "erp_db", "table": "if_goods_movement"},
        # A report id is unique per report: a rerun of the same report finds its posting.
        "key": ["posting_key"],
        "cursor": {"column": "updated_at"},
        "load": {"mode": "append"},
        "columns": [
            {"target": "posting_key", "expr": "concat('MES-', report_id)"},
            {"target": "order_no", "source": "order_no"},
            {"target": "material_no", "source": "material_no"},
            {"target": "movement_type", "value": "101"},
            {"target": "quantity", "source": "qty_done_cumulative", "delta": {
                "group_by": ["order_no", "material_no"], "posted": {"where": {"movement_type": "101"}}, "negative": negative,
            }},
        ],
    }


def _report(site: Site, report_id: int, order_no: str, cumulative: str, minutes: int) -> None:
    site.write(site.source, "mes_progress", [{
        "report_id": report_id, "order_no": order_no, "material_no": "FG-1",
        "qty_done_cumulative": Decimal(cumulative), "updated_at": T + timedelta(minutes=minutes),
    }])


def _postings(site: Site) -> list[tuple[str, str, str, Decimal]]:
    return [(r["posting_key"], r["order_no"], r["movement_type"], r["quantity"]) for r in site.rows("if_goods_movement", "posting_key")]


def _posted(site: Site, order_no: str) -> Decimal:
    return Decimal(site.scalar(f"SELECT sum(quantity) FROM if_goods_movement WHERE order_no = '{order_no}' AND movement_type = '101'"))


def test_each_report_posts_only_the_difference_and_reruns_post_nothing(site: Site) -> None:
    site.add(_flow())
    # Postings the ERP holds already: a manual receipt of 2 counts, a goods issue (261) does not.
    site.write(site.target, "if_goods_movement", [
        {"posting_key": "MANUAL-1", "order_no": "WO-1", "material_no": "FG-1", "movement_type": "101", "quantity": Decimal("2")},
        {"posting_key": "ISSUE-1", "order_no": "WO-1", "material_no": "FG-1", "movement_type": "261", "quantity": Decimal("50")},
    ])
    _report(site, 1, "WO-1", "5", 0)
    _report(site, 2, "WO-1", "8.5", 1)   # same run, after report 1: posts 3.5
    _report(site, 3, "WO-2", "4", 2)
    first = site.run("fg_receipts")
    assert first.record.counts.rows_loaded == 3
    assert _postings(site) == [
        ("ISSUE-1", "WO-1", "261", Decimal("50.000")),
        ("MANUAL-1", "WO-1", "101", Decimal("2.000")),
        ("MES-1", "WO-1", "101", Decimal("3.000")),
        ("MES-2", "WO-1", "101", Decimal("3.500")),
        ("MES-3", "WO-2", "101", Decimal("4.000")),
    ]
    assert _posted(site, "WO-1") == Decimal("8.5")

    again = site.run("fg_receipts", full_refresh=True)
    assert (again.record.counts.rows_loaded, again.record.counts.rows_unchanged) == (0, 3)

    _report(site, 4, "WO-1", "8.5", 3)   # the same count reported again: nothing to post
    _report(site, 5, "WO-1", "12", 4)
    third = site.run("fg_receipts")
    assert third.record.counts.rows_loaded == 1
    assert _postings(site)[-1] == ("MES-5", "WO-1", "101", Decimal("3.500"))
    assert _posted(site, "WO-1") == Decimal("12")


def test_a_crash_after_commit_then_a_lost_watermark_does_not_post_twice(site: Site) -> None:
    site.add(_flow())
    _report(site, 1, "WO-1", "5", 0)

    def crash_after_commit(step: str) -> None:
        if step == "done":
            raise RuntimeError("injected crash after the commit")

    with pytest.raises(StepFailed):
        site.run("fg_receipts", hook=crash_after_commit)
    assert _posted(site, "WO-1") == Decimal("5")

    # Even with the pipeline's own state gone, the target's postings decide.
    with site.target.begin() as conn:
        conn.execute(delete(watermark))
    _report(site, 2, "WO-1", "7", 1)
    site.run("fg_receipts")
    site.run("fg_receipts", full_refresh=True)
    assert [p[3] for p in _postings(site)] == [Decimal("5.000"), Decimal("2.000")]


def test_a_crash_before_commit_posts_nothing_and_the_next_run_posts_once(site: Site) -> None:
    site.add(_flow())
    _report(site, 1, "WO-1", "5", 0)

    def crash_before_commit(step: str) -> None:
        if step == "commit":
            raise RuntimeError("injected crash just before the commit")

    with pytest.raises(StepFailed):
        site.run("fg_receipts", hook=crash_before_commit)
    assert _postings(site) == []
    site.run("fg_receipts")
    assert [p[3] for p in _postings(site)] == [Decimal("5.000")]


def test_a_count_corrected_down_waits_in_quarantine(site: Site) -> None:
    site.add(_flow())
    _report(site, 1, "WO-1", "10", 0)
    site.run("fg_receipts")
    _report(site, 2, "WO-1", "7", 1)
    result = site.run("fg_receipts")
    assert result.record.counts.rows_loaded == 0 and result.record.counts.rows_new_in_quarantine == 1
    with site.target.connect() as conn:
        (key, reason, kind), = conn.execute(
            select(quarantine.c.source_key, quarantine.c.reason, quarantine.c.payload_kind).where(quarantine.c.status == "waiting")
        ).all()
    assert key == "report_id=2" and kind == "target"
    assert reason == (
        "cumulative quantity went down to 7.000 while the target already holds 10.000 for "
        "(order_no=WO-1, material_no=FG-1): post the correction in the ERP, or set delta.negative: post"
    )
    # The MES counts on from its corrected value: only what exceeds the posted total is posted.
    _report(site, 3, "WO-1", "12", 2)
    site.run("fg_receipts")
    assert [p[3] for p in _postings(site)] == [Decimal("10.000"), Decimal("2.000")]


def test_negative_post_writes_a_reversal(site: Site) -> None:
    site.add(_flow(negative="post"))
    _report(site, 1, "WO-1", "10", 0)
    _report(site, 2, "WO-1", "7", 1)
    _report(site, 3, "WO-1", "9", 2)
    site.run("fg_receipts")
    assert [(p[0], p[3]) for p in _postings(site)] == [
        ("MES-1", Decimal("10.000")), ("MES-2", Decimal("-3.000")), ("MES-3", Decimal("2.000")),
    ]
    assert site.run("fg_receipts", full_refresh=True).record.counts.rows_loaded == 0
    assert _posted(site, "WO-1") == Decimal("9")


@pytest.mark.parametrize("site", ["sqlite"], indirect=True)
def test_the_total_can_come_from_another_table_and_column(site: Site) -> None:
    # The ERP books its own copy of each movement; that ledger holds the total that counts.
    site.execute(site.target, [
        "CREATE TABLE stock_ledger (order_no VARCHAR(20), material_no VARCHAR(20), movement_type VARCHAR(3), booked_qty NUMERIC(12,3))",
        "INSERT INTO stock_ledger VALUES ('WO-1', 'FG-1', '101', 4), ('WO-1', 'FG-1', '102', 1)",
    ])
    flow = _flow()
    flow["columns"][4]["delta"]["posted"] = {"table": "stock_ledger", "sum": "booked_qty", "where": {"movement_type": "101"}}
    site.add(flow)
    _report(site, 1, "WO-1", "10", 0)
    site.run("fg_receipts")
    assert [(p[0], p[3]) for p in _postings(site)] == [("MES-1", Decimal("6.000"))]
