"""Tests for etl.sync.quarantine encode_payload/decode_payload: a quarantined row comes back exactly."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from etl.sync.quarantine import decode_payload, encode_payload


def round_trip(row: dict[str, Any]) -> dict[str, Any]:
    return decode_payload(encode_payload(row))


@pytest.mark.parametrize(
    "value",
    [
        Decimal("12.3450"),
        Decimal("-0.001"),
        Decimal("12345678901234567890.123456789"),
        datetime(2026, 3, 1, 8, 0, 0, 123456),
        date(2026, 3, 1),
        time(8, 30, 15),
        b"\x00\xff\x10binary",
        None,
        "物料 生产订单 工单 — 质检",
        "",
        0,
        -7,
        1.5,
        True,
        False,
    ],
    ids=repr,
)
def test_value_round_trips_exactly(value: Any) -> None:
    back = round_trip({"v": value})["v"]
    assert back == value
    assert type(back) is type(value)


def test_decimal_keeps_trailing_zeros() -> None:
    assert str(round_trip({"v": Decimal("1.500")})["v"]) == "1.500"


def test_naive_datetime_stays_naive() -> None:
    back = round_trip({"v": datetime(2026, 3, 1, 8, 0, 0, 1)})["v"]
    assert back.tzinfo is None
    assert back.microsecond == 1


@pytest.mark.parametrize("zone", [UTC, ZoneInfo("Asia/Shanghai"), timezone(timedelta(hours=-5, minutes=-30))])
def test_aware_datetime_keeps_instant_and_offset(zone: Any) -> None:
    value = datetime(2026, 3, 1, 8, 0, 0, 250000, tzinfo=zone)
    back = round_trip({"v": value})["v"]
    assert back == value
    assert back.utcoffset() == value.utcoffset()


def test_date_is_not_turned_into_datetime() -> None:
    back = round_trip({"v": date(2026, 3, 1)})["v"]
    assert type(back) is date


def test_bytearray_and_memoryview_come_back_as_bytes() -> None:
    back = round_trip({"a": bytearray(b"ab"), "m": memoryview(b"cd")})
    assert back == {"a": b"ab", "m": b"cd"}


def test_chinese_text_stored_readable() -> None:
    text = encode_payload({"name_zh": "不锈钢板"})
    assert "不锈钢板" in text  # not \u escapes: readable in the quarantine table
    assert round_trip({"name_zh": "不锈钢板"}) == {"name_zh": "不锈钢板"}


def test_whole_row_round_trips() -> None:
    row = {
        "order_no": "1000456",
        "quantity": Decimal("12.345"),
        "planned_start": datetime(2026, 3, 1, 8, 0),
        "posted_on": date(2026, 3, 2),
        "lot": None,
        "description_zh": "成品入库",
        "raw": b"\x01\x02",
    }
    assert round_trip(row) == row


def test_payload_is_valid_json_with_sorted_keys() -> None:
    text = encode_payload({"b": 1, "a": Decimal("2")})
    assert list(json.loads(text)) == ["a", "b"]


def test_float_nan_stored_as_null() -> None:
    assert round_trip({"v": float("nan")}) == {"v": None}


def test_numpy_scalars_become_python_values() -> None:
    back = round_trip({"i": np.int64(5), "f": np.float64(2.5)})
    assert back == {"i": 5, "f": 2.5}
    assert type(back["i"]) is int
