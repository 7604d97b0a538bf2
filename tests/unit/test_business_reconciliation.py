"""Tests for the pure comparison of etl.business_reconciliation."""

from __future__ import annotations

from decimal import Decimal

import pytest

from etl.config.flows import BusinessReconciliation, ReconciliationQuery, Tolerance
from etl.sync.business_reconciliation import compare, side_values, within_tolerance

D = Decimal
QUERY = ReconciliationQuery(connection="erp_db", sql="SELECT 1")


def check(**tolerance: float) -> BusinessReconciliation:
    return BusinessReconciliation(name="c", key=["order_no", "day"], erp=QUERY, mes=QUERY, tolerance=Tolerance(**tolerance))


def test_tolerance_is_the_larger_of_absolute_and_relative() -> None:
    assert within_tolerance(D(100), D(105), Tolerance(relative=0.05))
    assert not within_tolerance(D(100), D("105.001"), Tolerance(relative=0.05))
    assert within_tolerance(D(10), D(11), Tolerance(absolute=1, relative=0.05))
    assert not within_tolerance(D(0), D("0.01"), Tolerance(relative=0.5))  # relative to 0 is 0
    assert within_tolerance(D("1.5"), D("1.5"), Tolerance())


def test_keys_on_one_side_count_as_zero_on_the_other_and_lines_are_sorted() -> None:
    from datetime import date

    result = compare(
        check(absolute=1),
        [{"order_no": "1000002", "day": date(2026, 3, 2), "value": 5}, {"order_no": "1000001", "day": "2026-03-02", "value": D("2.5")}],
        [{"order_no": "1000001", "day": "2026-03-02", "value": 3}, {"order_no": "1000001", "day": "2026-03-02", "value": D("0.25")},
         {"order_no": "1000003", "day": "2026-03-03", "value": None}],
    )
    assert [(line.key, line.erp, line.mes, line.difference, line.within) for line in result.lines] == [
        (("1000001", "2026-03-02"), D("2.5"), D("3.25"), D("0.75"), True),   # two MES rows add up
        (("1000002", "2026-03-02"), D(5), D(0), D(-5), False),              # PostgreSQL date = SQLite text
        (("1000003", "2026-03-03"), D(0), D(0), D(0), True),                 # NULL counts as 0
    ]
    assert result.lines[1].mes_missing and result.lines[2].erp_missing
    assert len(result.mismatches) == 1 and not result.ok


def test_a_value_that_is_not_a_number_names_check_side_and_key() -> None:
    with pytest.raises(ValueError, match=r"reconciliation 'c', mes side: value 'abc' for key \('1', 'd'\) is not a number"):
        side_values(check(), "mes", [{"order_no": "1", "day": "d", "value": "abc"}])
