"""Tests for etl.rules.transform: source rows mapped onto target columns, bad rows rejected with reasons."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from etl.config.crosswalks import Crosswalk, load_crosswalks
from etl.config.flows import Flow
from etl.config.paths import DEFAULT_MAPPINGS
from etl.core.rows import SOURCE_KEY
from etl.core.types import ColumnType
from etl.rules.transform import TransformResult, coerce_value, transform

ANY = ColumnType("other")
TEXT = ColumnType("string")
TS = ColumnType("timestamp")


@pytest.fixture(scope="module")
def crosswalks() -> dict[str, Crosswalk]:
    return load_crosswalks(Path(DEFAULT_MAPPINGS / "crosswalks"))


def make_flow(columns: list[dict[str, Any]], *, key: list[str] | None = None, direction: str = "erp_to_mes") -> Flow:
    return Flow.model_validate(
        {
            "flow": "t",
            "direction": direction,
            "source": {"connection": "src_db", "table": "src"},
            "target": {"connection": "tgt_db", "table": "tgt"},
            "key": key or [columns[0]["target"]],
            "columns": columns,
        }
    )


def frame(**columns: list[Any]) -> pd.DataFrame:
    """Source rows as the extractor yields them: plain Python values, object dtype."""
    return pd.DataFrame({name: pd.Series(values, dtype=object) for name, values in columns.items()})


def run(
    crosswalks: dict[str, Crosswalk],
    source: pd.DataFrame,
    columns: list[dict[str, Any]],
    types: dict[str, ColumnType] | None = None,
    **flow_kw: Any,
) -> TransformResult:
    flow = make_flow(columns, **flow_kw)
    types = types or {}
    return transform(source, flow, crosswalks, {c["target"]: types.get(c["target"], ANY) for c in columns})


def single(crosswalks: dict[str, Crosswalk], value: Any, column: dict[str, Any], target: ColumnType = ANY) -> TransformResult:
    """One row: key column k plus the column under test, named v."""
    return run(
        crosswalks,
        frame(k=[1], src=[value]),
        [{"target": "k", "source": "k"}, {"target": "v", "source": "src", **column}],
        {"v": target},
    )


def value_of(result: TransformResult) -> Any:
    assert not result.rejects, [r.reason for r in result.rejects]
    return result.rows["v"].iloc[0]


def reason_of(result: TransformResult) -> str:
    assert result.rows.empty
    (reject,) = result.rejects
    return reject.reason


ORDER_COLUMNS = [
    {"target": "wo_no", "source": "order_no", "clean": ["trim"], "crosswalk": "order_number"},
    {"target": "item_code", "source": "material_no", "clean": ["trim", "upper"], "crosswalk": "material"},
]


# --- clean and crosswalk ----------------------------------------------------------------------


def test_clean_trim_upper_before_crosswalk(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(order_no=[" 1000456"], material_no=["mat-000012 "]), ORDER_COLUMNS)
    assert result.rejects == []
    assert result.rows[["wo_no", "item_code"]].iloc[0].tolist() == ["WO-2026-000456", "100012"]


def test_crosswalk_miss_rejects_only_that_row(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(
        crosswalks,
        frame(order_no=["1000456", "1000457", "1000458"], material_no=["MAT-000012", "XYZ", "MAT-000013"]),
        ORDER_COLUMNS,
    )
    assert result.rows["wo_no"].tolist() == ["WO-2026-000456", "WO-2026-000458"]
    (reject,) = result.rejects
    assert reject.reason == "crosswalk 'material' has no MES code for 'XYZ' (column item_code)"


def test_crosswalk_miss_mes_to_erp_names_erp_side(crosswalks: dict[str, Crosswalk]) -> None:
    columns = [{"target": "k", "source": "k"}, {"target": "plant", "source": "p", "crosswalk": "plant"}]
    result = run(crosswalks, frame(k=[1], p=["ZZ01"]), columns, direction="mes_to_erp")
    assert reason_of(result) == "crosswalk 'plant' has no ERP code for 'ZZ01' (column plant)"


def test_null_code_is_not_a_crosswalk_miss(crosswalks: dict[str, Crosswalk]) -> None:
    assert value_of(single(crosswalks, None, {"crosswalk": "plant"})) is None


def test_null_natural_key_rejected_once(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(order_no=[None], material_no=["MAT-000012"]), ORDER_COLUMNS)
    assert reason_of(result) == "natural key column wo_no is NULL"


def test_key_crosswalk_miss_gives_one_reason_not_two(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(order_no=["9"], material_no=["MAT-000012"]), ORDER_COLUMNS)
    assert reason_of(result) == "crosswalk 'order_number' has no MES code for '9' (column wo_no)"


def test_required_column_null_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    assert reason_of(single(crosswalks, None, {"required": True})) == "required column v is NULL"


def test_not_nullable_target_rejects_null(crosswalks: dict[str, Crosswalk]) -> None:
    assert reason_of(single(crosswalks, None, {}, ColumnType("string", nullable=False))) == "required column v is NULL"


def test_every_reason_of_a_row_is_kept(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(order_no=["9"], material_no=["XYZ"]), ORDER_COLUMNS)
    reason = reason_of(result)
    assert "'order_number' has no MES code for '9'" in reason
    assert "'material' has no MES code for 'XYZ'" in reason


# --- units ------------------------------------------------------------------------------------


QTY_COLUMNS = [
    {"target": "k", "source": "k"},
    {"target": "qty", "source": "quantity", "convert_unit": {"unit_column": "unit"}},
]


def test_unit_conversion_kg_to_g_is_exact(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(k=[1], quantity=[Decimal("12.345")], unit=["KG"]), QTY_COLUMNS)
    qty = result.rows["qty"].iloc[0]
    assert isinstance(qty, Decimal)
    assert str(qty) == "12345.000"


def test_unit_conversion_g_to_kg_divides(crosswalks: dict[str, Crosswalk]) -> None:
    grams = frame(k=[1, 2], quantity=[Decimal("12345"), Decimal("2")], unit=["g", "kg"])
    result = run(crosswalks, grams, QTY_COLUMNS, direction="mes_to_erp")
    assert result.rows["qty"].tolist() == [Decimal("12.345"), Decimal("2")]


def test_unit_factor_one_keeps_value(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(k=[1], quantity=[7], unit=["PC"]), QTY_COLUMNS)
    assert result.rows["qty"].iloc[0] == Decimal(7)


def test_unknown_unit_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(k=[1], quantity=[1], unit=["LB"]), QTY_COLUMNS)
    assert reason_of(result) == "crosswalk 'unit' has no factor for unit 'LB' (column qty)"


def test_inverse_conversion_for_cycle_time(crosswalks: dict[str, Crosswalk]) -> None:
    columns = [
        {"target": "k", "source": "k"},
        {"target": "cycle_time_sec", "expr": "std_minutes_per_unit * 60", "convert_unit": {"unit_column": "unit", "inverse": True}},
    ]
    result = run(crosswalks, frame(k=[1, 2], std_minutes_per_unit=[Decimal("1.5"), Decimal("2")], unit=["KG", "PC"]), columns)
    assert result.rows["cycle_time_sec"].tolist() == [Decimal("0.09"), Decimal("120")]


def test_non_numeric_quantity_with_unit_conversion_rejects_only_its_row(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(k=[1, 2], quantity=["12,5", "3"], unit=["KG", "KG"]), QTY_COLUMNS)
    assert result.rows["qty"].tolist() == [Decimal("3000")]
    (reject,) = result.rejects
    assert "column qty" in reject.reason


def test_unit_conversion_uses_unit_as_cleaned_by_the_flow(crosswalks: dict[str, Crosswalk]) -> None:
    columns = [
        {"target": "k", "source": "k"},
        {"target": "qty", "source": "quantity", "convert_unit": {"unit_column": "unit"}},
        {"target": "unit", "source": "unit", "clean": ["trim", "upper"], "crosswalk": "unit"},
    ]
    result = run(crosswalks, frame(k=[1], quantity=[Decimal("2")], unit=["KG "]), columns)
    assert result.rejects == []
    assert result.rows[["qty", "unit"]].iloc[0].tolist() == [Decimal("2000"), "g"]


# --- time zones -------------------------------------------------------------------------------


def test_shanghai_naive_to_utc_naive(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "Asia/Shanghai", "to": "UTC"}}
    assert value_of(single(crosswalks, datetime(2026, 3, 1, 8, 30), rule, TS)) == datetime(2026, 3, 1, 0, 30)


def test_utc_to_shanghai(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "UTC", "to": "Asia/Shanghai"}}
    assert value_of(single(crosswalks, datetime(2026, 3, 1, 20, 0), rule, TS)) == datetime(2026, 3, 2, 4, 0)


def test_aware_source_value_converted_by_its_own_zone(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "Asia/Shanghai", "to": "UTC"}}
    value = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
    assert value_of(single(crosswalks, value, rule, TS)) == datetime(2026, 3, 1, 8, 0)


def test_aware_target_keeps_zone(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "Asia/Shanghai", "to": "UTC"}}
    out = value_of(single(crosswalks, datetime(2026, 3, 1, 8), rule, ColumnType("timestamp", tz_aware=True)))
    assert out == datetime(2026, 3, 1, 0, tzinfo=UTC)
    assert out.utcoffset() is not None


def test_dst_gap_time_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "Europe/Berlin", "to": "UTC"}}
    reason = reason_of(single(crosswalks, datetime(2026, 3, 29, 2, 30), rule, TS))
    assert reason == "column v: 2026-03-29T02:30:00 does not exist in Europe/Berlin (clocks skip it)"


def test_ambiguous_time_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "Europe/Berlin", "to": "UTC"}}
    reason = reason_of(single(crosswalks, datetime(2026, 10, 25, 2, 30), rule, TS))
    assert reason == "column v: 2026-10-25T02:30:00 is ambiguous in Europe/Berlin (clocks repeat it)"


def test_time_next_to_dst_change_accepted(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "Europe/Berlin", "to": "UTC"}}
    assert value_of(single(crosswalks, datetime(2026, 3, 29, 3, 30), rule, TS)) == datetime(2026, 3, 29, 1, 30)


def test_timezone_on_non_timestamp_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"timezone": {"from": "UTC", "to": "Asia/Shanghai"}}
    assert "'yesterday' is not a timestamp" in reason_of(single(crosswalks, "yesterday", rule, TS))


def test_cast_then_timezone(crosswalks: dict[str, Crosswalk]) -> None:
    rule = {"cast": "timestamp", "timezone": {"from": "Asia/Shanghai", "to": "UTC"}}
    assert value_of(single(crosswalks, "2026-03-01 08:00:00", rule, TS)) == datetime(2026, 3, 1, 0, 0)


# --- target types -----------------------------------------------------------------------------


def test_string_too_long_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    reason = reason_of(single(crosswalks, "ABCDEFGHIJK", {}, ColumnType("string", length=10)))
    assert reason == "column v: value 'ABCDEFGHIJK': 11 characters, column holds 10"


def test_string_at_length_accepted(crosswalks: dict[str, Crosswalk]) -> None:
    assert value_of(single(crosswalks, "物料名称物料", {}, ColumnType("string", length=6))) == "物料名称物料"


NUMERIC_5_2 = ColumnType("decimal", precision=5, scale=2)


@pytest.mark.parametrize("value", [Decimal("1234.5"), Decimal("999.995"), "-1000"])
def test_decimal_overflow_rejected(crosswalks: dict[str, Crosswalk], value: Any) -> None:
    assert "overflows NUMERIC(5,2)" in reason_of(single(crosswalks, value, {}, NUMERIC_5_2))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (Decimal("1.005"), "1.01"),
        (Decimal("2.345"), "2.35"),
        (Decimal("-2.345"), "-2.35"),
        (Decimal("999.994"), "999.99"),
        ("12", "12.00"),
        (0.1, "0.10"),
    ],
)
def test_decimal_quantized_half_up(crosswalks: dict[str, Crosswalk], value: Any, expected: str) -> None:
    out = value_of(single(crosswalks, value, {}, NUMERIC_5_2))
    assert isinstance(out, Decimal)
    assert str(out) == expected


def test_decimal_not_a_number_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    assert "not a finite number" in reason_of(single(crosswalks, "NaN", {}, NUMERIC_5_2))


@pytest.mark.parametrize(("value", "expected"), [("0010", 10), (" 42 ", 42), ("1.0", 1), (Decimal("-3"), -3), (7.0, 7)])
def test_integer_cast(crosswalks: dict[str, Crosswalk], value: Any, expected: int) -> None:
    out = value_of(single(crosswalks, value, {"cast": "integer"}))
    assert out == expected and type(out) is int


def test_integer_cast_of_fraction_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    assert reason_of(single(crosswalks, "1.5", {"cast": "integer"})) == "column v: cannot cast '1.5': is not a whole number"


def test_integer_cast_of_text_rejected(crosswalks: dict[str, Crosswalk]) -> None:
    assert reason_of(single(crosswalks, "ten", {"cast": "integer"})).startswith("column v: cannot cast 'ten'")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Y", True), ("x", True), ("true", True), (1, True), (True, True),
        ("N", False), ("0", False), ("", False), (0, False), (False, False),
    ],
)
def test_boolean_coercion(crosswalks: dict[str, Crosswalk], value: Any, expected: bool) -> None:
    out = value_of(single(crosswalks, value, {}, ColumnType("boolean")))
    assert out is expected


@pytest.mark.parametrize("value", ["maybe", 2])
def test_boolean_coercion_rejects(crosswalks: dict[str, Crosswalk], value: Any) -> None:
    assert "is not a boolean" in reason_of(single(crosswalks, value, {}, ColumnType("boolean")))


def test_coerce_value_naive_timestamp_into_aware_column_refused() -> None:
    with pytest.raises(ValueError, match="add a timezone rule"):
        coerce_value(datetime(2026, 1, 1), ColumnType("timestamp", tz_aware=True))


# --- default, value, expr ---------------------------------------------------------------------


def test_default_fills_null(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(
        crosswalks,
        frame(k=[1, 2], src=[None, "B"]),
        [{"target": "k", "source": "k"}, {"target": "v", "source": "src", "default": "A", "required": True}],
    )
    assert result.rejects == []
    assert result.rows["v"].tolist() == ["A", "B"]


def test_constant_value(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(
        crosswalks,
        frame(k=[1, 2]),
        [{"target": "k", "source": "k"}, {"target": "is_deleted", "value": False}],
        {"is_deleted": ColumnType("boolean")},
    )
    assert result.rows["is_deleted"].tolist() == [False, False]


def test_expr_builds_posting_key(crosswalks: dict[str, Crosswalk]) -> None:
    columns = [
        {"target": "posting_key", "expr": "concat('MES-RCV-', receipt_id)"},
        {"target": "movement_type", "value": "101"},
    ]
    result = run(crosswalks, frame(receipt_id=[42, 7]), columns, {"posting_key": TEXT}, direction="mes_to_erp")
    assert result.rows["posting_key"].tolist() == ["MES-RCV-42", "MES-RCV-7"]
    assert result.rows[SOURCE_KEY].tolist() == ["receipt_id=42", "receipt_id=7"]


# --- rejects and output -----------------------------------------------------------------------


def test_reject_carries_original_source_row_and_key(crosswalks: dict[str, Crosswalk]) -> None:
    source = frame(order_no=[" 1000456"], material_no=["mat-999"], quantity=[Decimal("1.5")], note=[None])
    result = run(crosswalks, source, ORDER_COLUMNS)
    (reject,) = result.rejects
    assert reject.source_key == "order_no= 1000456"
    assert reject.payload == {"order_no": " 1000456", "material_no": "mat-999", "quantity": Decimal("1.5"), "note": None}


def test_source_key_names_key_source_columns(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(order_no=["1000456", "1000457"], material_no=["MAT-000012", "bad"]), ORDER_COLUMNS)
    assert result.rows[SOURCE_KEY].tolist() == ["order_no=1000456"]
    assert [r.source_key for r in result.rejects] == ["order_no=1000457"]


def test_output_keeps_plain_python_types(crosswalks: dict[str, Crosswalk]) -> None:
    columns = [
        {"target": "k", "source": "k", "cast": "integer"},
        {"target": "qty", "source": "qty"},
        {"target": "at", "source": "at"},
    ]
    types = {"k": ColumnType("integer"), "qty": ColumnType("decimal", precision=12, scale=3), "at": TS}
    result = run(crosswalks, frame(k=["1", "2"], qty=["1.5", None], at=[datetime(2026, 1, 1, 8), None]), columns, types)
    rows = result.rows
    assert all(rows[c].dtype == object for c in rows.columns)
    assert [type(v) for v in rows["k"]] == [int, int]
    assert type(rows["qty"].iloc[0]) is Decimal and rows["qty"].iloc[1] is None
    assert type(rows["at"].iloc[0]) is datetime and rows["at"].iloc[1] is None


def test_output_keeps_input_order_and_fresh_index(crosswalks: dict[str, Crosswalk]) -> None:
    source = frame(order_no=["1000003", "1000001", "1000002"], material_no=["MAT-000001"] * 3)
    source.index = [7, 3, 5]
    result = run(crosswalks, source, ORDER_COLUMNS)
    assert result.rows["wo_no"].tolist() == ["WO-2026-000003", "WO-2026-000001", "WO-2026-000002"]


def test_empty_frame_gives_empty_result(crosswalks: dict[str, Crosswalk]) -> None:
    result = run(crosswalks, frame(order_no=[], material_no=[]), ORDER_COLUMNS)
    assert result.rejects == []
    assert result.rows.empty
    assert list(result.rows.columns) == ["wo_no", "item_code", SOURCE_KEY]


def test_real_flow_production_orders(crosswalks: dict[str, Crosswalk]) -> None:
    from etl.config.project import load_project

    flow = load_project().flows["production_orders"]
    types = {c.target: ANY for c in flow.columns}
    types.update(planned_qty=ColumnType("decimal", precision=15, scale=3), planned_start_utc=TS, planned_end_utc=TS)
    source = frame(
        order_no=["1000456"], material_no=["MAT-000012"], plant=["1000"], quantity=[Decimal("2.5")],
        unit=["KG"], planned_start=[datetime(2026, 3, 1, 8)], planned_end=[datetime(2026, 3, 1, 16)], status=["REL"],
    )
    result = transform(source, flow, crosswalks, types)
    assert result.rejects == []
    row = result.rows.iloc[0].to_dict()
    assert row == {
        "wo_no": "WO-2026-000456", "item_code": "100012", "plant_code": "SH01", "planned_qty": Decimal("2500.000"),
        "unit": "g", "planned_start_utc": datetime(2026, 3, 1, 0), "planned_end_utc": datetime(2026, 3, 1, 8),
        "status": "READY", "is_deleted": False, SOURCE_KEY: "order_no=1000456",
    }


def test_lookup_ids_arrive_as_integers_and_a_miss_names_the_lookup() -> None:
    lookups = {"odoo_product": Crosswalk(
        "odoo_product", to_mes={"FG-1": ("11", Decimal(1))}, to_erp={"11": ("FG-1", Decimal(1))},
        whole_number_sides=frozenset({"mes"}),
    )}
    result = run(
        lookups, frame(k=[1, 2], item=["FG-1", "FG-OLD"]),
        [{"target": "k", "source": "k"}, {"target": "product_id", "source": "item", "crosswalk": "odoo_product"}],
        {"product_id": ColumnType("integer")},
    )
    assert result.rows["product_id"].tolist() == [11] and type(result.rows["product_id"].iloc[0]) is int
    (reject,) = result.rejects
    assert reject.reason == "crosswalk 'odoo_product' has no MES code for 'FG-OLD' (column product_id)"
    back = run(
        lookups, frame(k=[1], product_id=[11]),
        [{"target": "k", "source": "k"}, {"target": "item", "source": "product_id", "crosswalk": "odoo_product"}],
        {"item": ColumnType("string", length=20)}, direction="mes_to_erp",
    )
    assert back.rows["item"].tolist() == ["FG-1"]


def test_json_value_into_a_text_column_is_json_text() -> None:
    assert coerce_value({"en_US": "Bolt", "zh_CN": "螺栓"}, ColumnType("string")) == '{"en_US": "Bolt", "zh_CN": "螺栓"}'
