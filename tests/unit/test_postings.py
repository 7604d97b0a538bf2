"""The arithmetic of delta postings, without a database."""

from __future__ import annotations

from decimal import Decimal

from etl.sync.postings import _minus


def test_decimals_stay_exact() -> None:
    assert _minus(Decimal("8.5"), Decimal("5.000")) == Decimal("3.500")
    assert _minus(Decimal("0.3"), 0) == Decimal("0.3")


def test_a_float_column_on_either_side_gives_a_float() -> None:
    assert _minus(7.5, Decimal("2.5")) == 5.0
    assert _minus(Decimal("7.5"), 2.5) == 5.0
