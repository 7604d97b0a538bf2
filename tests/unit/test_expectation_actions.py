"""What a failing expectation does to its batch: quarantine, block, or only report."""

from __future__ import annotations

import pytest

from etl.validation import CRITICAL, QUARANTINE, WARNING, Expectation, Outcome

ROW_RULE = "expect_column_values_to_be_between"


def _outcome(action: str, failed: int, mostly: float | None = None, kind: str = ROW_RULE) -> Outcome:
    expectation = Expectation("qty_positive", kind, {"column": "qty", "min_value": 0}, action, mostly)
    return Outcome(expectation, rows_checked=100, rows_failed=failed, predicate=None)


@pytest.mark.parametrize("failed", [1, 50, 100])
def test_without_mostly_a_quarantining_expectation_never_blocks(failed: int) -> None:
    outcome = _outcome(QUARANTINE, failed)
    assert outcome.quarantines and not outcome.blocks


def test_with_mostly_a_larger_share_failing_blocks_the_batch_instead() -> None:
    assert _outcome(QUARANTINE, 10, mostly=0.9).quarantines
    blocked = _outcome(QUARANTINE, 11, mostly=0.9)
    assert blocked.blocks and not blocked.quarantines


def test_critical_blocks_on_any_failure_and_warning_never() -> None:
    assert _outcome(CRITICAL, 1).blocks and not _outcome(CRITICAL, 0).blocks
    warning = _outcome(WARNING, 100)
    assert not warning.blocks and not warning.quarantines and not warning.success


def test_a_passing_expectation_neither_blocks_nor_quarantines() -> None:
    outcome = _outcome(QUARANTINE, 0, mostly=0.5)
    assert outcome.success and not outcome.blocks and not outcome.quarantines
