"""What a failing expectation does to its batch: quarantine, block, or only report."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine

from etl.config.suites import CRITICAL, QUARANTINE, WARNING, Expectation, Suite
from etl.core.rows import SEQ, SOURCE_KEY
from etl.sync.validation import Outcome, check_batch

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


def test_uniqueness_of_the_flow_key_is_not_scanned_for_again() -> None:
    """Duplicate resolution leaves one staged row per key, so the run skips the grouping that
    would check it; other columns are still checked. (Staged here with a duplicate on purpose,
    to see which check looked.)"""
    staging = Table("stg", MetaData(), Column("posting_key", String), Column("batch_no", String),
                    Column(SEQ, Integer), Column(SOURCE_KEY, String))
    unique = "expect_column_values_to_be_unique"
    suite = Suite("s", "s.json", (
        Expectation("key_unique", unique, {"column": "posting_key"}, QUARANTINE, None),
        Expectation("batch_unique", unique, {"column": "batch_no"}, QUARANTINE, None),
        Expectation("pair_unique", "expect_compound_columns_to_be_unique", {"column_list": ["batch_no", "posting_key"]}, QUARANTINE, None),
    ))
    engine = create_engine("sqlite://")
    with engine.begin() as conn:
        staging.create(conn)
        conn.execute(staging.insert(), [
            {"posting_key": "A", "batch_no": "1", SEQ: 1, SOURCE_KEY: "a"},
            {"posting_key": "A", "batch_no": "1", SEQ: 2, SOURCE_KEY: "b"},
        ])
        scanned = {o.expectation.name: o.rows_failed for o in check_batch(conn, staging, suite, {}).outcomes}
        assert scanned == {"key_unique": 2, "batch_unique": 2, "pair_unique": 2}
        trusted = check_batch(conn, staging, suite, {}, unique_key=["posting_key"])
        assert {o.expectation.name: o.rows_failed for o in trusted.outcomes} == {"key_unique": 0, "batch_unique": 2, "pair_unique": 2}
        compound = check_batch(conn, staging, suite, {}, unique_key=["posting_key", "batch_no"])
        assert {o.expectation.name: o.rows_failed for o in compound.outcomes} == {"key_unique": 2, "batch_unique": 2, "pair_unique": 0}
