"""The SQL path leaves out a length check only where the value cannot be longer than its target
column: source column widths, literals and a table crosswalk's codes bound it. Compiled, not run."""

from __future__ import annotations

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, String, Table
from sqlalchemy.dialects import postgresql

from etl.config.crosswalks import load_crosswalks
from etl.config.flows import Flow
from etl.config.paths import DEFAULT_MAPPINGS
from etl.rules.sql import Compiler, column_types
from etl.sync.stage_sql import raw_table

SOURCE = Table(
    "op_confirmation", MetaData(),
    Column("report_no", String(20)), Column("wo_no", String(20)), Column("equipment_code", String(16)),
    Column("step_no", Integer), Column("remark", String(40)), Column("updated_at", DateTime(timezone=True)),
)


def _length_checks(target: str, spec: dict[str, object], width: int) -> int:
    """How many 'too long' tests the compiled column carries."""
    flow = Flow.model_validate({
        "flow": "lengths", "direction": "mes_to_erp",
        "source": {"connection": "src", "table": "op_confirmation"},
        "target": {"connection": "dst", "table": "confirmation_in"},
        "key": ["posting_key"], "columns": [{"target": "posting_key", "source": "report_no"}, {"target": target, **spec}],
    })
    target_table = Table("confirmation_in", MetaData(), Column("posting_key", String(20)), Column(target, String(width)))
    compiler = Compiler(flow, raw_table(flow, SOURCE, "postgresql"), column_types(SOURCE), column_types(target_table),
                         load_crosswalks(DEFAULT_MAPPINGS / "crosswalks"))
    value = compiler.column(flow.columns[1])
    reasons = [str(r.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})) for _, r in value.failures]
    return sum("characters, column holds" in r for r in reasons)


@pytest.mark.parametrize(("spec", "fits", "too_narrow"), [
    ({"source": "remark"}, 40, 39),  # varchar(40)
    ({"source": "remark", "clean": ["trim"]}, 40, 39),  # trimming never lengthens
    ({"expr": "concat('MES-OPR-', report_no)"}, 28, 27),  # 8 characters + varchar(20)
    ({"expr": "coalesce(remark, 'none')"}, 40, 39),
    ({"source": "remark", "default": "-"}, 40, 39),
    ({"source": "equipment_code", "crosswalk": "work_center"}, 7, 6),  # the table's codes: WC-CUT1 ...
])
def test_a_bounded_value_needs_no_length_check(spec: dict[str, object], fits: int, too_narrow: int) -> None:
    assert _length_checks("out", spec, fits) == 0
    assert _length_checks("out", spec, too_narrow) == 1


@pytest.mark.parametrize("spec", [
    {"source": "remark", "clean": ["upper"]},  # upper('ß') may be 'SS'
    {"expr": "upper(remark)"},
    {"expr": "lpad(step_no, 4, '0')"},  # a number's text: no width known
    {"source": "wo_no", "crosswalk": "order_number"},  # a rule makes codes of any length
])
def test_an_unbounded_value_keeps_its_length_check(spec: dict[str, object]) -> None:
    assert _length_checks("out", spec, 400) == 1
