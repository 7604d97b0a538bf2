"""The in-process path (etl.sync.stage_in_process: the rules compiled for DuckDB, run on Arrow
chunks) against the Python path's transform on the same frame, in process: the same staged
values (type and exact text), the same rejects with the same reasons."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from etl.config.crosswalks import Crosswalk, load_crosswalks
from etl.config.flows import Flow
from etl.config.paths import DEFAULT_MAPPINGS, REPO_ROOT
from etl.core.types import ColumnType
from etl.rules.transform import TransformResult, transform
from etl.sync.stage_in_process import InProcessRules, unsupported_reason

SOURCE = {
    "code": ColumnType("string", length=24), "wo": ColumnType("string", length=24), "txt": ColumnType("string", length=60),
    "qty": ColumnType("decimal", precision=18, scale=3), "unit": ColumnType("string", length=8),
    "minutes": ColumnType("integer"), "started": ColumnType("timestamp"),
    "stamped": ColumnType("timestamp", tz_aware=True), "rid": ColumnType("integer"),
}
COLUMNS: list[dict[str, Any]] = [
    {"target": "k", "source": "rid"},
    {"target": "label", "expr": "concat('R-', lpad(rid, 6, '0'), '/', coalesce(txt, ''))"},
    {"target": "cleaned", "source": "txt", "clean": ["trim", "upper"]},
    {"target": "short", "source": "txt"},
    {"target": "wc", "source": "code", "clean": ["trim"], "crosswalk": "work_center"},
    {"target": "order_no", "source": "wo", "crosswalk": "order_number"},
    {"target": "q", "source": "qty", "convert_unit": {"unit_column": "unit"}},
    {"target": "rounded", "expr": "round(qty * 1.5 - minutes, 2)"},
    {"target": "whole", "expr": "minutes * 3 - 7"},
    {"target": "utc", "source": "started", "timezone": {"from": "Europe/Berlin", "to": "UTC"}},
    {"target": "aware", "source": "stamped"},
    {"target": "defaulted", "source": "txt", "clean": ["trim"], "default": "缺省"},
]
TARGET = {
    "k": ColumnType("integer", nullable=False), "label": ColumnType("string", length=80),
    "cleaned": ColumnType("string", length=40), "short": ColumnType("string", length=4),
    "wc": ColumnType("string", length=8), "order_no": ColumnType("string", length=12),
    "q": ColumnType("decimal", precision=18, scale=3), "rounded": ColumnType("decimal", precision=20, scale=6),
    "whole": ColumnType("integer"), "utc": ColumnType("timestamp"),
    "aware": ColumnType("timestamp", tz_aware=True), "defaulted": ColumnType("string", length=4),
}
ROWS: list[dict[str, Any]] = [
    {"code": "EQ-SH01-CUT-01", "wo": "WO-2026-000123", "txt": "齿轮箱 – Gearbox", "qty": Decimal("999999999999999.999"),
     "unit": "kg", "minutes": 5, "started": datetime(2026, 3, 29, 2, 30, 0, 1),
     "stamped": datetime(2026, 1, 1, 0, 0, 0, 999_999, tzinfo=UTC), "rid": 1},
    {"code": " EQ-SH01-ASM-01 ", "wo": None, "txt": "", "qty": Decimal("0.001"), "unit": "g", "minutes": None,
     "started": datetime(2026, 10, 25, 2, 30), "stamped": None, "rid": 2},
    {"code": None, "wo": "WO-2026-1234567", "txt": None, "qty": None, "unit": None, "minutes": -(10**6),
     "started": datetime(2026, 7, 1, 12, 0, 0, 500_000), "stamped": datetime(2026, 7, 1, 12, 0, 0, 1, tzinfo=UTC), "rid": 3},
    {"code": "it's a\\b", "wo": "WO-XX", "txt": "  padded  ", "qty": Decimal("-2.005"), "unit": "oz", "minutes": 0,
     "started": None, "stamped": None, "rid": None},
    {"code": "", "wo": "", "txt": "it's", "qty": Decimal("12.5"), "unit": "pcs", "minutes": 1,
     "started": datetime(1990, 1, 1), "stamped": None, "rid": 5},
    {"code": "EQ-SZ01-PKG-01", "wo": None, "txt": "ab", "qty": Decimal("-0.500"), "unit": "m", "minutes": 2,
     "started": datetime(2060, 12, 31, 23, 59, 59, 999_999), "stamped": None, "rid": 6},
]


@pytest.fixture(scope="module")
def crosswalks() -> dict[str, Crosswalk]:
    return load_crosswalks(Path(DEFAULT_MAPPINGS / "crosswalks"))


def _flow(columns: list[dict[str, Any]]) -> Flow:
    return Flow.model_validate({
        "flow": "readings", "direction": "mes_to_erp", "source": {"connection": "mes", "table": "reading"},
        "target": {"connection": "erp", "table": "reading_in"}, "key": ["k"], "columns": columns,
    })


def _exact(result: TransformResult) -> tuple[Any, ...]:
    rows = [tuple((type(v).__name__, repr(v)) for v in row) for row in result.rows.itertuples(index=False, name=None)]
    return rows, [(r.source_key, r.reason) for r in result.rejects], list(result.rows.index)


def _frame() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([r[c] for r in ROWS], dtype=object) for c in SOURCE})


def test_the_in_process_path_stages_and_rejects_as_the_python_path(crosswalks: dict[str, Crosswalk]) -> None:
    flow = _flow(COLUMNS)
    assert unsupported_reason(flow, SOURCE, TARGET, crosswalks) is None
    rules = InProcessRules(flow, crosswalks, SOURCE, TARGET)
    try:
        fast = rules(_frame(), flow, crosswalks, TARGET)
    finally:
        rules.close()
    python = transform(_frame(), flow, crosswalks, TARGET)
    assert python.rejects and len(python.rows) >= 1  # the rows exercise both outcomes
    assert _exact(fast) == _exact(python)


@pytest.mark.parametrize("case", ["overflow", "more digits than the scale"])
def test_a_chunk_duckdb_cannot_take_whole_runs_on_the_python_path(crosswalks: dict[str, Crosswalk], case: str) -> None:
    """A product past 38 digits stops DuckDB's whole query, and a decimal with more fraction
    digits than its column declares has no exact Arrow value: the chunk runs on the Python path,
    which rejects the one row with its own reason (overflow) or converts it."""
    flow = _flow([{"target": "k", "source": "rid"}, {"target": "q", "expr": "qty * 100000000000000000000000"}])
    target = {"k": ColumnType("integer", nullable=False), "q": ColumnType("decimal", precision=38, scale=3)}
    frame = _frame()
    if case != "overflow":
        frame.loc[5, "qty"] = Decimal("-0.0005")
        frame.loc[0, "qty"] = Decimal(1)
    assert unsupported_reason(flow, SOURCE, target, crosswalks) is None
    rules = InProcessRules(flow, crosswalks, SOURCE, target)
    try:
        fast = rules(frame.copy(), flow, crosswalks, target)
    finally:
        rules.close()
    python = transform(frame.copy(), flow, crosswalks, target)
    if case == "overflow":
        assert any("overflow" in r.reason for r in python.rejects), python.rejects
    assert _exact(fast) == _exact(python)


@pytest.mark.parametrize(("column", "word"), [
    ({"target": "rounded", "expr": "qty / minutes"}, "division"),
    ({"target": "rounded", "source": "minutes", "cast": "string"}, "cast"),
    ({"target": "rounded", "expr": "qty * 1.00000000001"}, "fraction digits"),
])
def test_a_rule_without_an_exact_duckdb_twin_keeps_the_python_path(
    crosswalks: dict[str, Crosswalk], column: dict[str, Any], word: str,
) -> None:
    why = unsupported_reason(_flow([{"target": "k", "source": "rid"}, column]), SOURCE, TARGET, crosswalks)
    assert why is not None and word in why


def test_the_documented_flow_takes_the_in_process_path(crosswalks: dict[str, Crosswalk]) -> None:
    page = (REPO_ROOT / "docs" / "in-process-path.md").read_text(encoding="utf-8")
    (snippet,) = re.findall(r"```yaml\n(.*?)```", page, re.S)
    flow = Flow.model_validate(yaml.safe_load(snippet))
    assert flow.load.transform == "in_process"
    source = {"confirmation_no": ColumnType("string", length=20), "yield_qty": ColumnType("decimal", precision=18, scale=3)}
    target = {"posting_key": ColumnType("string", length=40, nullable=False), "good_qty": ColumnType("decimal", precision=18, scale=3)}
    assert unsupported_reason(flow, source, target, crosswalks) is None
