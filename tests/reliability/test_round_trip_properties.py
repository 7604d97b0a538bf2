"""Property-based tests (hypothesis) of transforms and crosswalks: what goes ERP -> MES -> ERP
comes back as it was, and no row is ever silently dropped or altered.

Rounding rules these tests hold the pipeline to:
- Codes translate exactly both ways: a table entry maps back to its counterpart, a rule
  (``1000456`` <-> ``WO-2026-000456``, ``MAT-000123`` <-> ``100123``) rebuilds the original.
- A quantity is multiplied by the unit factor exactly (decimal arithmetic, never float), then
  rounded half-up to the target column's scale. Going back divides by the factor (multiplies by
  1/factor, 28 significant digits), then rounds to the ERP column's scale.
- So with power-of-ten factors (KG -> g is 1000, PC -> pcs and M -> m are 1) and the demo's
  NUMERIC(18,3) on both sides, ERP -> MES -> ERP returns every quantity exactly. With any other
  factor f the quantity comes back within half a unit of the ERP column's last digit plus the MES
  rounding carried back (0.5e-3 + 0.5e-3 / f for scale 3).
- A value that would not fit the target column (too many integer digits after conversion) is
  rejected to quarantine with its reason, never truncated.
- Naive local times convert to UTC and back exactly in a zone without DST (Asia/Shanghai); in a
  zone with DST a wall-clock time that does not exist or exists twice is rejected, every other
  one comes back exactly.
"""

from __future__ import annotations

import csv
import io
import os
import tempfile
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from etl.config.crosswalks import load_crosswalks
from etl.config.flows import Flow
from etl.config.paths import DEFAULT_MAPPINGS
from etl.core.types import ColumnType
from etl.rules.transform import transform
from etl.sync.quarantine import decode_payload, encode_payload

settings.register_profile("ci", derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")

CROSSWALKS = load_crosswalks(DEFAULT_MAPPINGS / "crosswalks")


def varchar(n: int) -> ColumnType:
    return ColumnType("string", length=n)


NUMERIC_18_3 = ColumnType("decimal", precision=18, scale=3)
TS = ColumnType("timestamp")

# ERP production orders down to the MES (the shipped flow's rules) ...
DOWN = Flow.model_validate({
    "flow": "orders_down", "direction": "erp_to_mes",
    "source": {"connection": "erp_db", "table": "production_order"},
    "target": {"connection": "mes_db", "table": "work_order"},
    "key": ["wo_no"],
    "columns": [
        {"target": "wo_no", "source": "order_no", "clean": ["trim"], "crosswalk": "order_number"},
        {"target": "item_code", "source": "material_no", "clean": ["trim", "upper"], "crosswalk": "material"},
        {"target": "plant_code", "source": "plant", "crosswalk": "plant"},
        {"target": "planned_qty", "source": "quantity", "convert_unit": {"unit_column": "unit"}},
        {"target": "unit", "source": "unit", "clean": ["trim", "upper"], "crosswalk": "unit"},
        {"target": "planned_start_utc", "source": "planned_start", "timezone": {"from": "Asia/Shanghai", "to": "UTC"}},
        {"target": "status", "source": "status", "crosswalk": "order_status"},
    ],
})
DOWN_TYPES = {"wo_no": varchar(20), "item_code": varchar(12), "plant_code": varchar(4), "planned_qty": NUMERIC_18_3,
              "unit": varchar(4), "planned_start_utc": TS, "status": varchar(10)}

# ... and the same rules read backwards, as a feedback flow would post them to the ERP.
UP = Flow.model_validate({
    "flow": "orders_up", "direction": "mes_to_erp",
    "source": {"connection": "mes_db", "table": "work_order"},
    "target": {"connection": "erp_db", "table": "production_order"},
    "key": ["order_no"],
    "columns": [
        {"target": "order_no", "source": "wo_no", "crosswalk": "order_number"},
        {"target": "material_no", "source": "item_code", "crosswalk": "material"},
        {"target": "plant", "source": "plant_code", "crosswalk": "plant"},
        {"target": "quantity", "source": "planned_qty", "convert_unit": {"unit_column": "unit"}},
        {"target": "unit", "source": "unit", "crosswalk": "unit"},
        {"target": "planned_start", "source": "planned_start_utc", "timezone": {"from": "UTC", "to": "Asia/Shanghai"}},
        {"target": "status", "source": "status", "crosswalk": "order_status"},
    ],
})
UP_TYPES = {"order_no": varchar(12), "material_no": varchar(18), "plant": varchar(4), "quantity": NUMERIC_18_3,
            "unit": varchar(3), "planned_start": TS, "status": varchar(4)}

ERP_COLUMNS = ["order_no", "material_no", "plant", "quantity", "unit", "planned_start", "status"]


def frame(rows: list[dict[str, Any]], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([r[c] for r in rows], dtype=object) for c in columns})


def quantities(max_integer_digits: int) -> st.SearchStrategy[Decimal]:
    """Decimals as an ERP NUMERIC(18,3) column holds them."""
    return st.decimals(min_value=0, max_value=Decimal(10) ** max_integer_digits - Decimal("0.001"), places=3,
                       allow_nan=False, allow_infinity=False)


orders = st.fixed_dictionaries({
    "order_no": st.integers(min_value=0, max_value=10**11 - 1).map(lambda n: f"1{n:06d}"),
    "material_no": st.integers(min_value=0, max_value=99_999).map(lambda n: f"MAT-0{n:05d}"),
    "plant": st.sampled_from(["1000", "2000"]),
    "quantity": quantities(15),
    "unit": st.sampled_from(["KG", "PC", "M"]),
    "planned_start": st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)),
    "status": st.sampled_from(["REL", "TECO", "CLSD", "CNCL"]),
})


@settings(max_examples=150)
@given(rows=st.lists(orders, min_size=1, max_size=25, unique_by=lambda r: r["order_no"]))
def test_orders_go_to_the_mes_and_come_back_unchanged(rows: list[dict[str, Any]], figures: Any) -> None:
    figures.add("property examples", 1)
    figures.add("property rows round-tripped", len(rows))
    down = transform(frame(rows, ERP_COLUMNS), DOWN, CROSSWALKS, DOWN_TYPES)
    # KG -> g multiplies by 1000: an ERP quantity of 10^15 KG or more no longer fits NUMERIC(18,3).
    too_big = {f"order_no={r['order_no']}" for r in rows if r["unit"] == "KG" and r["quantity"] * 1000 >= Decimal(10) ** 15}
    assert {r.source_key for r in down.rejects} == too_big
    assert all("overflows NUMERIC(18,3)" in r.reason for r in down.rejects)
    mes = down.rows.drop(columns="_source_key")
    up = transform(mes.reset_index(drop=True), UP, CROSSWALKS, UP_TYPES)
    assert up.rejects == []
    back = up.rows.drop(columns="_source_key").to_dict("records")
    kept = [r for r in rows if f"order_no={r['order_no']}" not in too_big]
    assert len(back) == len(kept)
    for original, returned in zip(kept, back, strict=True):
        assert {k: returned[k] for k in ERP_COLUMNS} == original  # Decimal compares by value


@settings(max_examples=150)
@given(
    quantity=st.decimals(min_value=Decimal("0.001"), max_value=Decimal("999999999.999"), places=3),
    factor=st.decimals(min_value=Decimal("0.0001"), max_value=Decimal("10000"), places=4).filter(lambda f: f > 0),
)
def test_any_factor_comes_back_within_the_stated_rounding(quantity: Decimal, factor: Decimal, figures: Any) -> None:
    figures.add("property examples", 1)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "unit.csv").write_text(f"erp,mes,factor\nLB,oz,{factor}\n", encoding="utf-8")
        crosswalks = {**CROSSWALKS, "unit": load_crosswalks(Path(folder))["unit"]}
    qty_down = Flow.model_validate({
        "flow": "q", "direction": "erp_to_mes", "source": {"connection": "a", "table": "s"},
        "target": {"connection": "b", "table": "t"}, "key": ["k"],
        "columns": [{"target": "k", "source": "k"}, {"target": "q", "source": "q", "convert_unit": {"unit_column": "u"}}],
    })
    qty_up = qty_down.model_copy(update={"direction": "mes_to_erp"})
    wide = ColumnType("decimal", precision=38, scale=3)
    types = {"k": ColumnType("integer"), "q": wide}
    down = transform(pd.DataFrame({"k": [1], "q": pd.Series([quantity], dtype=object), "u": ["LB"]}), qty_down, crosswalks, types)
    mes_q = down.rows["q"].iloc[0]
    up = transform(pd.DataFrame({"k": [1], "q": pd.Series([mes_q], dtype=object), "u": ["oz"]}), qty_up, crosswalks, types)
    back = up.rows["q"].iloc[0]
    assert abs(back - quantity) <= Decimal("0.0005") + Decimal("0.0005") / factor + Decimal("1e-20")
    if factor == factor.to_integral_value() and factor in (1, 10, 100, 1000, 10000):
        assert back == quantity


codes = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"), blacklist_characters="\ufeff\x85"),
    min_size=1, max_size=20,
).map(str.strip).filter(bool)


@settings(max_examples=100)
@given(pairs=st.lists(st.tuples(codes, codes, st.sampled_from(["1", "1000", "0.001", "2.54"])), min_size=1, max_size=15,
                unique_by=(lambda p: p[0], lambda p: p[1])))
def test_any_crosswalk_table_translates_both_ways(pairs: list[tuple[str, str, str]], figures: Any) -> None:
    """Codes with commas, quotes, spaces inside, Chinese: written as CSV, read back, translated
    there and back to the same code, the factor and its inverse multiplying to one (up to 28 digits)."""
    figures.add("property examples", 1)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["erp", "mes", "factor"])
    writer.writerows(pairs)
    with tempfile.TemporaryDirectory() as folder:
        Path(folder, "codes.csv").write_text(buffer.getvalue(), encoding="utf-8")
        crosswalk = load_crosswalks(Path(folder))["codes"]
    for erp, mes, factor in pairs:
        assert crosswalk.lookup(erp, "mes") == (mes, Decimal(factor))
        back, inverse = crosswalk.lookup(mes, "erp")  # type: ignore[misc]
        assert back == erp
        assert abs(Decimal(factor) * inverse - 1) < Decimal("1e-25")


@settings(max_examples=200)
@given(seq=st.integers(min_value=0, max_value=10**12 - 1), material=st.integers(min_value=0, max_value=99_999))
def test_rule_crosswalks_rebuild_the_original_code(seq: int, material: int, figures: Any) -> None:
    figures.add("property examples", 1)
    order = f"1{seq:06d}"
    wo, factor = CROSSWALKS["order_number"].lookup(order, "mes")  # type: ignore[misc]
    assert wo.startswith("WO-2026-") and factor == 1
    assert CROSSWALKS["order_number"].lookup(wo, "erp") == (order, Decimal(1))
    code = f"MAT-0{material:05d}"
    item, _ = CROSSWALKS["material"].lookup(code, "mes")  # type: ignore[misc]
    assert CROSSWALKS["material"].lookup(item, "erp") == (code, Decimal(1))


BERLIN_DOWN = Flow.model_validate({
    "flow": "t", "direction": "erp_to_mes", "source": {"connection": "a", "table": "s"},
    "target": {"connection": "b", "table": "t"}, "key": ["k"],
    "columns": [{"target": "k", "source": "k"}, {"target": "t", "source": "t", "timezone": {"from": "Europe/Berlin", "to": "UTC"}}],
})
BERLIN_UP = Flow.model_validate({
    "flow": "t", "direction": "mes_to_erp", "source": {"connection": "a", "table": "s"},
    "target": {"connection": "b", "table": "t"}, "key": ["k"],
    "columns": [{"target": "k", "source": "k"}, {"target": "t", "source": "t", "timezone": {"from": "UTC", "to": "Europe/Berlin"}}],
})


@settings(max_examples=300)
@given(local=st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2060, 12, 31)))
def test_local_times_in_a_dst_zone_come_back_or_are_rejected(local: datetime, figures: Any) -> None:
    figures.add("property examples", 1)
    types = {"k": ColumnType("integer"), "t": TS}
    down = transform(pd.DataFrame({"k": [1], "t": pd.Series([local], dtype=object)}), BERLIN_DOWN, CROSSWALKS, types)
    if down.rejects:
        assert "does not exist in Europe/Berlin" in down.rejects[0].reason or "is ambiguous in Europe/Berlin" in down.rejects[0].reason
        assert local.month in (3, 10, 4, 9) and local.hour in (1, 2, 3)  # only around a change of the clocks
        return
    utc = down.rows["t"].iloc[0]
    up = transform(pd.DataFrame({"k": [1], "t": pd.Series([utc], dtype=object)}), BERLIN_UP, CROSSWALKS, types)
    assert up.rows["t"].iloc[0] == local


dirty_orders = st.fixed_dictionaries({
    "material_no": st.one_of(st.just("MAT-000001"), st.just(" mat-000002 "), st.just("MAT-A00001"), st.none(), codes),
    "plant": st.one_of(st.sampled_from(["1000", "2000", "3000"]), st.none()),
    "quantity": st.one_of(quantities(16), st.none(), st.just("abc"), st.just("1e400"), st.floats(allow_nan=True)),
    "unit": st.one_of(st.sampled_from(["KG", "PC", "M", " kg", "LB"]), st.none()),
    "planned_start": st.one_of(st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 1, 1)), st.none(), st.just("x")),
    "status": st.one_of(st.sampled_from(["REL", "CNCL", "CRTD"]), st.none()),
})


@settings(max_examples=120)
@given(rows=st.lists(dirty_orders, min_size=1, max_size=30))
def test_every_row_is_either_transformed_or_rejected_never_both_never_lost(rows: list[dict[str, Any]], figures: Any) -> None:
    figures.add("property examples", 1)
    keyed = [{**row, "order_no": f"1{i:06d}"} for i, row in enumerate(rows)]
    out = transform(frame(keyed, ERP_COLUMNS), DOWN, CROSSWALKS, DOWN_TYPES)
    loaded = list(out.rows["_source_key"])
    rejected = [r.source_key for r in out.rejects]
    assert sorted(loaded + rejected) == sorted(f"order_no={r['order_no']}" for r in keyed)
    assert all(r.reason for r in out.rejects)
    for reject in out.rejects:  # the payload is the source row as read, for the retry
        original = next(r for r in keyed if f"order_no={r['order_no']}" == reject.source_key)
        assert {k: reject.payload[k] for k in ERP_COLUMNS} == {
            k: (None if isinstance(v, float) and v != v else v) for k, v in original.items()
        }


payload_values = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1), st.text(),
    st.decimals(allow_nan=False, allow_infinity=False), st.datetimes(), st.dates(), st.binary(max_size=20),
    st.floats(allow_nan=False, allow_infinity=False),
)


@settings(max_examples=200)
@given(row=st.dictionaries(st.text(min_size=1, max_size=10), payload_values, max_size=8))
def test_a_quarantined_row_is_retried_exactly_as_it_was_read(row: dict[str, Any], figures: Any) -> None:
    figures.add("property examples", 1)
    back = decode_payload(encode_payload(row))
    assert back == row
    assert {k: type(v) for k, v in back.items()} == {k: type(v) for k, v in row.items()}


def test_the_stated_examples() -> None:
    """docs/reliability.md's worked example, as a fixed point of the properties above."""
    rows = [{"order_no": "1900001", "material_no": "MAT-000123", "plant": "1000", "quantity": Decimal("12.5"),
             "unit": "KG", "planned_start": datetime(2026, 12, 1, 8, 0), "status": "REL"}]
    down = transform(frame(rows, ERP_COLUMNS), DOWN, CROSSWALKS, DOWN_TYPES)
    mes = down.rows.iloc[0]
    assert (mes["wo_no"], mes["item_code"], mes["planned_qty"], mes["unit"]) == ("WO-2026-900001", "100123", Decimal("12500.000"), "g")
    assert mes["planned_start_utc"] == datetime(2026, 12, 1, 0, 0)
    up = transform(down.rows.drop(columns="_source_key"), UP, CROSSWALKS, UP_TYPES)
    assert up.rows.drop(columns="_source_key").to_dict("records") == rows
