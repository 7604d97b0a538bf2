"""Tests for etl.core.watermark: windows, their SQL, watermark moves and storage."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import column

from etl.core.watermark import Window, decode, encode, next_watermark, parse_since, plan_window, window_filter

LOOKBACK = timedelta(minutes=10)
T0 = datetime(2026, 3, 1, 8, 0, 0)
CEILING = datetime(2026, 3, 1, 9, 0, 0)
EPOCH = datetime(1970, 1, 1)


def sql(window: Window) -> str | None:
    clause = window_filter(column("updated_at"), window)
    if clause is None:
        return None
    return str(clause.compile(compile_kwargs={"literal_binds": True}))


# --- plan_window ------------------------------------------------------------------------------


def test_first_run_reads_everything_up_to_ceiling_with_nulls() -> None:
    assert plan_window(None, CEILING, LOOKBACK) == Window(None, CEILING, include_null=True)


def test_incremental_run_starts_lookback_before_watermark() -> None:
    assert plan_window(T0, CEILING, LOOKBACK) == Window(T0 - LOOKBACK, CEILING, include_null=False)


@pytest.mark.parametrize(
    ("watermark", "ceiling", "lower"),
    [
        (0, 100, 0),
        (EPOCH, CEILING, EPOCH - LOOKBACK),
        (EPOCH.replace(tzinfo=UTC), CEILING, EPOCH.replace(tzinfo=UTC) - LOOKBACK),
    ],
    ids=["int-0", "epoch", "aware-epoch"],
)
def test_zero_and_epoch_watermarks_are_not_never_read(watermark: Any, ceiling: Any, lower: Any) -> None:
    assert plan_window(watermark, ceiling, LOOKBACK) == Window(lower, ceiling, include_null=False)


def test_integer_cursor_has_no_time_lookback() -> None:
    assert plan_window(0, 100, LOOKBACK) == Window(0, 100)
    assert plan_window(42, 100, LOOKBACK).lower == 42


def test_date_cursor_lookback_in_whole_days() -> None:
    assert plan_window(date(2026, 1, 10), date(2026, 1, 12), timedelta(days=2)).lower == date(2026, 1, 8)
    assert plan_window(date(2026, 1, 10), date(2026, 1, 12), LOOKBACK).lower == date(2026, 1, 10)


def test_since_overrides_watermark() -> None:
    since = datetime(2026, 1, 1)
    assert plan_window(T0, CEILING, LOOKBACK, since=since) == Window(since, CEILING)


def test_since_on_first_run() -> None:
    since = datetime(2026, 1, 1)
    assert plan_window(None, CEILING, LOOKBACK, since=since) == Window(since, CEILING, include_null=False)


def test_full_refresh_ignores_watermark_and_reads_nulls() -> None:
    assert plan_window(T0, CEILING, LOOKBACK, full_refresh=True) == Window(None, CEILING, include_null=True)


# --- window_filter ----------------------------------------------------------------------------


def test_filter_bounds_are_inclusive() -> None:
    text = sql(Window(T0, CEILING))
    assert text == "updated_at >= '2026-03-01 08:00:00' AND updated_at <= '2026-03-01 09:00:00'"


def test_filter_first_run_includes_null_cursors() -> None:
    text = sql(Window(None, CEILING, include_null=True))
    assert text == "updated_at <= '2026-03-01 09:00:00' OR updated_at IS NULL"


def test_filter_without_include_null_has_no_null_branch() -> None:
    assert "IS NULL" not in sql(Window(T0, None))
    assert sql(Window(T0, None)) == "updated_at >= '2026-03-01 08:00:00'"


def test_filter_integer_bounds() -> None:
    assert sql(Window(0, 10)) == "updated_at >= 0 AND updated_at <= 10"


def test_unbounded_window_has_no_filter() -> None:
    assert sql(Window(None, None, include_null=True)) is None


def test_filter_values_are_bound_parameters() -> None:
    clause = window_filter(column("updated_at"), Window("x'; DROP TABLE t; --", None))
    compiled = clause.compile()
    assert "DROP" not in str(compiled)
    assert list(compiled.params.values()) == ["x'; DROP TABLE t; --"]


# --- next_watermark ---------------------------------------------------------------------------


def test_first_watermark_is_the_ceiling() -> None:
    assert next_watermark(None, Window(None, CEILING, True)) == CEILING


def test_watermark_moves_forward_to_ceiling() -> None:
    assert next_watermark(T0, Window(T0 - LOOKBACK, CEILING)) == CEILING


def test_watermark_never_moves_backwards() -> None:
    assert next_watermark(CEILING, Window(None, T0)) == CEILING
    assert next_watermark(10, Window(0, 5)) == 10


def test_watermark_kept_when_ceiling_is_none() -> None:
    assert next_watermark(T0, Window(T0, None)) == T0
    assert next_watermark(0, Window(0, None)) == 0
    assert next_watermark(None, Window(None, None, True)) is None


def test_zero_watermark_is_kept_as_a_value() -> None:
    assert next_watermark(0, Window(0, 0)) == 0
    assert next_watermark(0, Window(0, 3)) == 3


def test_aware_watermarks_compare_by_instant() -> None:
    utc_10 = datetime(2026, 1, 1, 10, tzinfo=UTC)
    shanghai_17 = datetime(2026, 1, 1, 17, tzinfo=ZoneInfo("Asia/Shanghai"))  # 09:00 UTC
    assert next_watermark(utc_10, Window(None, shanghai_17)) == utc_10
    shanghai_19 = datetime(2026, 1, 1, 19, tzinfo=ZoneInfo("Asia/Shanghai"))  # 11:00 UTC
    assert next_watermark(utc_10, Window(None, shanghai_19)) == shanghai_19


# --- encode / decode --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        datetime(2026, 3, 1, 8, 0, 0, 123456),
        datetime(2026, 3, 1, 8, 0, 0, 1, tzinfo=ZoneInfo("Asia/Shanghai")),
        datetime(2026, 3, 1, 0, 0, tzinfo=UTC),
        date(2026, 3, 1),
        0,
        123456789012345,
        Decimal("0"),
        Decimal("12.3400"),
        "v-0001",
        "",
    ],
    ids=repr,
)
def test_encode_decode_round_trip(value: Any) -> None:
    text, kind = encode(value)
    assert isinstance(text, str)
    back = decode(text, kind)
    assert back == value
    assert type(back) is type(value)
    if isinstance(value, datetime):
        assert back.utcoffset() == value.utcoffset()
        assert back.microsecond == value.microsecond
    if isinstance(value, Decimal):
        assert str(back) == str(value)  # trailing zeros kept


def test_encode_kinds() -> None:
    assert encode(datetime(2026, 1, 1))[1] == "timestamp"
    assert encode(date(2026, 1, 1)) == ("2026-01-01", "date")
    assert encode(0) == ("0", "integer")
    assert encode(Decimal("1.50")) == ("1.50", "decimal")
    assert encode("abc") == ("abc", "string")
    assert encode(None) == (None, None)
    assert decode(None, None) is None


def test_encode_refuses_boolean_and_unknown_types() -> None:
    with pytest.raises(TypeError, match="boolean"):
        encode(True)
    with pytest.raises(TypeError, match="float"):
        encode(1.5)


def test_decode_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown cursor type 'blob'"):
        decode("x", "blob")


# --- parse_since ------------------------------------------------------------------------------


def test_parse_since_date_and_timestamp() -> None:
    assert parse_since("2026-11-20") == datetime(2026, 11, 20)
    assert parse_since("2026-11-20T08:00") == datetime(2026, 11, 20, 8, 0)


def test_parse_since_error_message() -> None:
    with pytest.raises(ValueError) as info:
        parse_since("yesterday")
    assert str(info.value) == "--since 'yesterday' is not an ISO date or timestamp (e.g. 2026-11-20T08:00)"


@pytest.mark.parametrize("window", [
    Window(None, None, include_null=True),
    Window(None, 5, include_null=True),
    Window(2, 5),
    Window(2, 5, beyond=7),
    Window(2, None),
    Window(None, 5, include_null=True, beyond=7),
])
def test_in_window_agrees_with_the_sql_filter(window: Window) -> None:
    """The web API's check of a record against the window and the table's WHERE clause: one rule."""
    import sqlite3

    from sqlalchemy import Column as SqlColumn
    from sqlalchemy import Integer, MetaData, Table, create_engine, select

    from etl.core.watermark import in_window

    values = [None, 0, 1, 2, 3, 5, 6, 7, 8, 100]
    engine = create_engine("sqlite://", creator=lambda: sqlite3.connect(":memory:"))
    table = Table("t", MetaData(), SqlColumn("c", Integer))
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), [{"c": v} for v in values])
        clause = window_filter(table.c.c, window)
        stmt = select(table.c.c) if clause is None else select(table.c.c).where(clause)
        in_sql = sorted((v for (v,) in conn.execute(stmt)), key=lambda v: (v is not None, v or 0))
    in_python = sorted((v for v in values if in_window(v, window)), key=lambda v: (v is not None, v or 0))
    assert in_python == in_sql
