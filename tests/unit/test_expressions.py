"""Tests for etl.core.expressions: the whitelisted expression language of flow YAML."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from etl.core.errors import EtlError
from etl.core.expressions import MAX_DEPTH, MAX_LENGTH, EvalResult, Expression, ExpressionError, parse_expression
from etl.core.reasons import DIVISION_BY_ZERO

#: The run's start that now() gives in these tests.
NOW = datetime(2026, 12, 6, 8, 30, tzinfo=UTC)


def run(text: str, **columns: list[object]) -> EvalResult:
    frame = pd.DataFrame(columns) if columns else pd.DataFrame(index=range(1))
    return parse_expression(text).evaluate(frame, now=NOW)


def values(text: str, **columns: list[object]) -> list[object]:
    result = run(text, **columns)
    assert result.errors.isna().all(), result.errors.tolist()
    return result.values.tolist()


def decimals(*texts: str | None) -> list[Decimal | None]:
    return [None if t is None else Decimal(t) for t in texts]


class TestParsing:
    def test_columns_are_the_referenced_names(self) -> None:
        expression = parse_expression("coalesce(lot_no, batch) * qty + round(price, 2) - qty")
        assert expression.columns == frozenset({"lot_no", "batch", "qty", "price"})

    def test_function_names_are_not_columns(self) -> None:
        assert parse_expression("concat('MES-OPR-', report_no)").columns == frozenset({"report_no"})

    def test_literal_only_expression_has_no_columns(self) -> None:
        assert parse_expression("concat('A', 1)").columns == frozenset()

    def test_text_is_kept_verbatim(self) -> None:
        text = "  upper(trim(batch))  "
        expression = parse_expression(text)
        assert isinstance(expression, Expression)
        assert expression.text == text

    def test_same_text_gives_equal_expressions(self) -> None:
        assert parse_expression("a * 2") == parse_expression("a * 2")

    def test_error_is_a_value_error_and_an_etl_error(self) -> None:
        with pytest.raises(ExpressionError) as caught:
            parse_expression("a.b")
        assert isinstance(caught.value, ValueError)
        assert isinstance(caught.value, EtlError)

    def test_import_is_rejected_naming_the_function_and_the_whitelist(self) -> None:
        with pytest.raises(ExpressionError) as caught:
            parse_expression("__import__('os')")
        message = str(caught.value)
        assert message.startswith('expression "__import__(\'os\')": ')
        assert "function '__import__' is not allowed" in message
        assert "allowed: coalesce, concat, if, json_get, lower, lpad, now" in message

    @pytest.mark.parametrize(
        ("text", "complaint"),
        [
            ("__import__('os')", "function '__import__' is not allowed"),
            ("open('f')", "function 'open' is not allowed"),
            ("a.b", "attribute access 'a.b' is not allowed"),
            ("a.upper()", "only calls of a function by name are allowed"),
            ("a[0]", "indexing 'a[0]' is not allowed"),
            ("a[1:2]", "indexing"),
            ("x if y else z", "conditional expression"),
            ("lambda: 1", "lambda"),
            ("f(x=1)", "function 'f' is not allowed"),
            ("upper(**a)", "keyword argument"),
            ("upper(*a)", "starred argument '*a' is not allowed"),
            ("a is b", "comparison 'a is b' is not allowed"),
            ("a in b", "comparison"),
            ("1 < a < 3", "chained comparison '1 < a < 3' is not allowed; join two with 'and'"),
            ("~a", "unary '~'"),
            ("+a", "unary '+'"),
            ("f'{a}'", "f-string"),
            ("[a for a in b]", "comprehension"),
            ("(a for a in b)", "generator expression"),
            ("[a, b]", "list"),
            ("(a, b)", "tuple"),
            ("{'a': 1}", "dict"),
            ("(a := 1)", "assignment expression"),
            ("a % 2", "operator '%'"),
            ("a ** 2", "operator '**'"),
            ("a // 2", "operator '//'"),
            ("a | b", "operator '|'"),
            ("True", "constant True is not allowed"),
            ("None", "constant None is not allowed"),
            ("b'x'", "literal b'x' is not allowed"),
            ("1j", "literal 1j is not allowed"),
            ("concat(a,", "invalid syntax"),
            ("a b", "invalid syntax"),
            ("a = = 1", "invalid syntax"),
            ("a <> > 1", "invalid syntax"),
            ("if(a, 1)", "if() takes exactly 3 arguments (if(condition, then, otherwise)), got 2"),
            ("now(a)", "now() takes exactly 0 arguments"),
            ("a\x00", "expression"),
            ("ｑｔｙ", "not a plain identifier"),
        ],
    )
    def test_forms_outside_the_language_are_rejected(self, text: str, complaint: str) -> None:
        with pytest.raises(ExpressionError) as caught:
            parse_expression(text)
        assert complaint in str(caught.value)

    def test_rejection_quotes_the_expression(self) -> None:
        with pytest.raises(ExpressionError, match=r'^expression "upper\(a\) is b": comparison'):
            parse_expression("upper(a) is b")

    @pytest.mark.parametrize(
        ("text", "complaint"),
        [
            ("concat()", "concat() takes at least 1 argument"),
            ("upper(a, b)", "upper() takes exactly 1 argument (upper(value)), got 2"),
            ("coalesce(a)", "coalesce() takes at least 2 arguments"),
            ("lpad(a, 4)", "lpad() takes exactly 3 arguments"),
            ("lpad(a, w, '0')", "lpad() width must be a whole number"),
            ("lpad(a, 4.0, '0')", "lpad() width must be a whole number"),
            ("lpad(a, -1, '0')", "lpad() width must be a whole number"),
            ("lpad(a, 1001, '0')", "lpad() width must be a whole number from 0 to 1000"),
            ("lpad(a, 4, '00')", "lpad() fill must be a one-character text literal"),
            ("rpad(a, 4, b)", "rpad() fill must be"),
            ("substr(a, 0, 2)", "substr() start must be a whole number of at least 1"),
            ("substr(a, 1, -1)", "substr() length must be a whole number of at least 0"),
            ("round(a, -1)", "round() ndigits must be"),
            ("round(a, n)", "round() ndigits must be"),
        ],
    )
    def test_function_arguments_are_checked_at_parse_time(self, text: str, complaint: str) -> None:
        with pytest.raises(ExpressionError) as caught:
            parse_expression(text)
        assert complaint in str(caught.value)

    def test_over_long_text_is_rejected(self) -> None:
        text = "concat(" + ", ".join(["a"] * 200) + ")"
        assert len(text) > MAX_LENGTH
        with pytest.raises(ExpressionError, match=f"the limit is {MAX_LENGTH}"):
            parse_expression(text)

    def test_text_at_the_length_limit_is_accepted(self) -> None:
        text = "'" + "x" * (MAX_LENGTH - 2) + "'"
        assert parse_expression(text).columns == frozenset()

    def test_deep_nesting_is_rejected(self) -> None:
        text = "upper(" * MAX_DEPTH + "a" + ")" * MAX_DEPTH
        with pytest.raises(ExpressionError, match=f"deeper than {MAX_DEPTH} levels"):
            parse_expression(text)

    def test_nesting_at_the_depth_limit_is_accepted(self) -> None:
        text = "upper(" * (MAX_DEPTH - 1) + "a" + ")" * (MAX_DEPTH - 1)
        assert parse_expression(text).columns == frozenset({"a"})

    @pytest.mark.parametrize("text", ["", "   "])
    def test_empty_text_is_rejected(self, text: str) -> None:
        with pytest.raises(ExpressionError, match="empty"):
            parse_expression(text)

    def test_non_text_is_rejected(self) -> None:
        with pytest.raises(ExpressionError, match="must be text, got int"):
            parse_expression(5)  # type: ignore[arg-type]

    def test_column_names_may_be_chinese_identifiers(self) -> None:
        expression = parse_expression("concat(批次, '-', 数量)")
        assert expression.columns == frozenset({"批次", "数量"})
        frame = pd.DataFrame({"批次": ["甲"], "数量": [3]})
        assert expression.evaluate(frame).values.tolist() == ["甲-3"]


class TestEvaluate:
    def test_result_is_on_the_frame_index(self) -> None:
        frame = pd.DataFrame({"a": [1, 2, 3]}, index=["x", "y", "z"])
        result = parse_expression("a * 2").evaluate(frame)
        assert list(result.values.index) == ["x", "y", "z"]
        assert list(result.errors.index) == ["x", "y", "z"]
        assert result.values.tolist() == [2, 4, 6]

    def test_values_and_errors_are_object_series_with_none_for_null(self) -> None:
        result = run("a * 2", a=[1.5, None])
        assert result.values.dtype == object
        assert result.errors.dtype == object
        assert result.values.tolist() == [3.0, None]
        assert result.errors.tolist() == [None, None]

    def test_missing_column_names_the_column_and_the_expression(self) -> None:
        expression = parse_expression("concat(report_no, lot_no)")
        with pytest.raises(ExpressionError) as caught:
            expression.evaluate(pd.DataFrame({"report_no": [1]}))
        message = str(caught.value)
        assert "'lot_no'" in message
        assert '"concat(report_no, lot_no)"' in message

    def test_duplicate_column_is_reported(self) -> None:
        frame = pd.DataFrame([[1, 2]], columns=["a", "a"])
        with pytest.raises(ExpressionError, match="more than once"):
            parse_expression("a + 1").evaluate(frame)

    def test_empty_frame_gives_empty_results(self) -> None:
        result = parse_expression("concat('X', a)").evaluate(pd.DataFrame({"a": pd.Series([], dtype=object)}))
        assert result.values.tolist() == []
        assert result.errors.tolist() == []

    def test_literal_expression_is_broadcast_to_every_row(self) -> None:
        frame = pd.DataFrame({"a": [1, 2, 3]})
        assert parse_expression("'MES'").evaluate(frame).values.tolist() == ["MES"] * 3

    def test_input_frame_is_not_modified(self) -> None:
        frame = pd.DataFrame({"a": ["x", None], "b": [1.0, None]})
        before = frame.copy()
        parse_expression("concat(coalesce(a, 'z'), a, coalesce(b, 0))").evaluate(frame)
        pd.testing.assert_frame_equal(frame, before)

    def test_same_column_used_twice_is_read_consistently(self) -> None:
        assert values("concat(coalesce(a, 'z'), '/', a)", a=["x", None]) == ["x/x", None]

    def test_pandas_null_markers_are_all_null(self) -> None:
        frame = pd.DataFrame(
            {
                "text": pd.Series(["a", None], dtype="str"),
                "nullable": pd.Series([1, None], dtype="Int64"),
                "obj": pd.Series([Decimal("1"), None], dtype=object),
            }
        )
        for name in frame.columns:
            result = parse_expression(f"str({name})").evaluate(frame)
            assert result.values.tolist()[1] is None, name

    def test_a_decimal_nan_is_a_value_not_null(self) -> None:
        # As NUMERIC 'NaN' in SQL: coalesce keeps it, and the column's type check refuses it.
        frame = pd.DataFrame({"q": pd.Series([Decimal("NaN"), None], dtype=object)})
        kept = parse_expression("coalesce(q, 0.000)").evaluate(frame).values.tolist()
        assert kept[0].is_nan() and kept[1] == Decimal("0.000")
        assert parse_expression("q + 1").evaluate(frame).values.tolist()[0].is_nan()


class TestConcat:
    def test_joins_literals_and_columns(self) -> None:
        assert values("concat('MES-OPR-', report_no)", report_no=[1, 22]) == ["MES-OPR-1", "MES-OPR-22"]

    def test_any_null_argument_gives_null(self) -> None:
        assert values("concat(a, '-', b)", a=["x", None, "z"], b=["1", "2", None]) == ["x-1", None, None]

    def test_coalesce_turns_null_into_empty_text(self) -> None:
        assert values("concat(a, coalesce(b, ''))", a=["x", "y"], b=["1", None]) == ["x1", "y"]

    def test_whole_floats_print_without_decimals(self) -> None:
        # An integer column holding NULLs arrives from pandas as float64.
        assert values("concat('S', step_no)", step_no=[10.0, 2.5, None]) == ["S10", "S2.5", None]

    def test_decimals_print_plainly_keeping_scale(self) -> None:
        assert values("concat(a, '')", a=decimals("12.50", "1E+3", "0.00001")) == ["12.50", "1000", "0.00001"]

    def test_chinese_text(self) -> None:
        assert values("concat('工单-', a, '号')", a=["甲乙", "丙"]) == ["工单-甲乙号", "工单-丙号"]

    def test_single_argument_is_its_text(self) -> None:
        assert values("concat(a)", a=[7]) == ["7"]


class TestStringFunctions:
    def test_upper_and_lower(self) -> None:
        assert values("upper(a)", a=["abc", "Mixed", None]) == ["ABC", "MIXED", None]
        assert values("lower(a)", a=["ABC", "Mixed", None]) == ["abc", "mixed", None]

    def test_upper_keeps_chinese_text(self) -> None:
        assert values("upper(a)", a=["批次ab", "中文"]) == ["批次AB", "中文"]

    def test_trim_strips_whitespace_including_ideographic_space(self) -> None:
        assert values("trim(a)", a=["  x ", "\u3000批次\u3000", "\tt\n", None]) == ["x", "批次", "t", None]

    def test_upper_trim_nested(self) -> None:
        assert values("upper(trim(batch))", batch=[" b-01 ", None]) == ["B-01", None]

    def test_string_functions_convert_numbers_to_text(self) -> None:
        assert values("upper(a)", a=[12]) == ["12"]

    def test_lpad(self) -> None:
        assert values("lpad(step_no, 4, '0')", step_no=[7, 1234, 12345]) == ["0007", "1234", "12345"]

    def test_lpad_of_float_column_with_nulls(self) -> None:
        assert values("lpad(step_no, 4, '0')", step_no=[10.0, None]) == ["0010", None]

    def test_lpad_counts_characters_not_bytes(self) -> None:
        assert values("lpad(a, 4, '*')", a=["中文"]) == ["**中文"]

    def test_rpad(self) -> None:
        assert values("rpad(a, 5, '.')", a=["ab", "abcdef", None]) == ["ab...", "abcdef", None]

    def test_substr_is_one_based(self) -> None:
        assert values("substr(a, 2, 3)", a=["ABCDEF", "AB", "", None]) == ["BCD", "B", "", None]

    def test_substr_of_chinese_text(self) -> None:
        assert values("substr(a, 3, 2)", a=["工单编号一"]) == ["编号"]

    def test_substr_of_number(self) -> None:
        assert values("substr(a, 1, 4)", a=[20240615]) == ["2024"]

    @pytest.mark.parametrize("name", ["str", "string"])
    def test_str_and_string(self, name: str) -> None:
        source = [5, Decimal("1.50"), None]
        assert values(f"{name}(a)", a=source) == ["5", "1.50", None]

    def test_str_of_float_column(self) -> None:
        assert values("str(a)", a=[3.0, 0.1, None]) == ["3", "0.1", None]


class TestCoalesce:
    def test_first_non_null_wins(self) -> None:
        result = values("coalesce(a, b, 'none')", a=["x", None, None], b=["1", "2", None])
        assert result == ["x", "2", "none"]

    def test_all_null_gives_null(self) -> None:
        assert values("coalesce(a, b)", a=[None, "x"], b=[None, None]) == [None, "x"]

    def test_types_are_kept(self) -> None:
        assert values("coalesce(a, 0)", a=decimals("1.5", None)) == [Decimal("1.5"), 0]

    def test_nan_counts_as_null(self) -> None:
        assert values("coalesce(a, -1)", a=[2.5, float("nan")]) == [2.5, -1]

    def test_empty_text_is_not_null(self) -> None:
        assert values("coalesce(a, 'x')", a=["", None]) == ["", "x"]


class TestRound:
    def test_rounds_half_up_to_a_decimal_with_exact_scale(self) -> None:
        result = values("round(a, 2)", a=decimals("1.005", "2.345", "-2.345", "7", None))
        assert result == decimals("1.01", "2.35", "-2.35", "7.00", None)
        assert str(result[3]) == "7.00"

    def test_round_to_whole_number(self) -> None:
        assert values("round(a, 0)", a=[2.5, 3.5, -2.5]) == decimals("3", "4", "-3")

    def test_floats_round_by_their_repr(self) -> None:
        assert values("round(a, 2)", a=[2.675]) == decimals("2.68")

    def test_ints_become_decimals(self) -> None:
        assert values("round(a, 1)", a=[3]) == decimals("3.0")

    def test_text_is_a_row_error(self) -> None:
        result = run("round(a, 2)", a=[Decimal("1.234"), "abc"])
        assert result.values.tolist() == [Decimal("1.23"), None]
        assert result.errors.tolist() == [None, "round() needs a number, got text"]


class TestArithmetic:
    def test_int_column_times_int_stays_int(self) -> None:
        result = values("std_minutes_per_unit * 60", std_minutes_per_unit=[1, 2, 3])
        assert result == [60, 120, 180]
        assert all(type(v) is int for v in result)

    def test_float_column(self) -> None:
        assert values("a * 60", a=[1.5, None]) == [90.0, None]

    def test_decimal_multiplication_is_exact(self) -> None:
        assert values("a * 1000", a=decimals("12345678901234.567")) == decimals("12345678901234567")

    def test_decimal_literals_are_exact(self) -> None:
        assert values("a + 0.2", a=decimals("0.1")) == decimals("0.3")
        assert values("0.1 + 0.2") == decimals("0.3")

    def test_decimal_literal_keeps_its_written_digits(self) -> None:
        assert values("a * 1.000000000000000000001", a=[Decimal("1")]) == decimals("1.000000000000000000001")

    def test_int_times_decimal(self) -> None:
        assert values("a * b", a=[3, 4], b=decimals("1.1", "0.25")) == decimals("3.3", "1.00")

    def test_float_meets_decimal_through_its_repr(self) -> None:
        assert values("a * 3.0", a=[0.1]) == decimals("0.30")

    def test_int_division_is_an_exact_decimal(self) -> None:
        assert values("a / 2", a=[7, 8]) == decimals("3.5", "4")

    def test_decimal_division(self) -> None:
        result = values("a / 3", a=decimals("1"))
        assert result == [Decimal("0." + "3" * 38)]

    def test_subtraction_and_negation(self) -> None:
        assert values("-a - 1", a=[1, Decimal("2.5"), 0.5]) == [-2, Decimal("-3.5"), -1.5]

    def test_negative_literal(self) -> None:
        assert values("a + -1.5", a=[Decimal("1")]) == decimals("-0.5")

    def test_precedence_and_parentheses(self) -> None:
        assert values("(a + 1) * 2 - a / 2", a=[4]) == decimals("8")

    def test_null_in_null_out(self) -> None:
        frame = {"a": [None, 1, Decimal("2")], "b": [1, None, None]}
        for op in "+-*/":
            result = run(f"a {op} b", **frame)
            assert result.values.tolist() == [None, None, None], op
            assert result.errors.tolist() == [None, None, None], op

    def test_int64_overflow_falls_back_to_exact_ints(self) -> None:
        assert values("a * 4", a=[2**62]) == [2**64]

    def test_result_beyond_38_digits_is_flagged_not_rounded(self) -> None:
        result = run("a * a", a=[Decimal("1234567890.123456789012345")])
        assert result.values.tolist() == [None]
        assert "38 significant digits" in result.errors.tolist()[0]


class TestRowErrors:
    @pytest.mark.parametrize(
        "column",
        [
            [6, 0, 3, None],
            [6.0, 0.0, 3.0, None],
            decimals("6", "0", "3", None),
        ],
        ids=["int", "float", "decimal"],
    )
    def test_division_by_zero_flags_only_that_row(self, column: list[object]) -> None:
        result = run("12 / d", d=column)
        assert result.values.tolist() == [2, None, 4, None]
        assert result.errors.tolist() == [None, "division by zero", None, None]

    def test_zero_by_zero_is_division_by_zero(self) -> None:
        for column in ([0], [0.0], decimals("0")):
            assert run("a / a", a=column).errors.tolist() == ["division by zero"]

    def test_null_divided_by_zero_is_null_without_error(self) -> None:
        result = run("a / b", a=[None, float("nan")], b=[0, 0])
        assert result.values.tolist() == [None, None]
        assert result.errors.tolist() == [None, None]

    def test_literal_division_by_zero_flags_every_row(self) -> None:
        result = run("a + 1 / 0", a=[1, 2])
        assert result.errors.tolist() == ["division by zero"] * 2

    def test_text_times_number_is_a_row_error(self) -> None:
        result = run("'abc' * 2")
        assert result.values.tolist() == [None]
        assert result.errors.tolist() == ["'*' needs numbers, got text and number"]

    def test_type_errors_are_per_row(self) -> None:
        result = run("a * 2", a=[3, "abc", None])
        assert result.values.tolist() == [6, None, None]
        assert result.errors.tolist() == [None, "'*' needs numbers, got text and number", None]

    def test_adding_text_points_to_concat(self) -> None:
        result = run("a + b", a=["x"], b=["y"])
        assert "use concat()" in result.errors.tolist()[0]

    def test_booleans_are_not_numbers(self) -> None:
        result = run("a + 1", a=[True])
        assert result.errors.tolist() == ["'+' needs numbers, got boolean and number"]

    def test_negating_text_is_a_row_error(self) -> None:
        assert run("-a", a=["x", 1]).errors.tolist() == ["'-' needs a number, got text", None]

    def test_flagged_row_stays_null_inside_coalesce(self) -> None:
        result = run("coalesce(a / b, 0)", a=[1, 1, None], b=[0, 2, 1])
        assert result.values.tolist() == [None, Decimal("0.5"), 0]
        assert result.errors.tolist() == ["division by zero", None, None]

    def test_first_error_of_a_row_is_kept(self) -> None:
        result = run("(a / 0) * b", a=[1], b=["x"])
        assert result.errors.tolist() == ["division by zero"]


SPEED_ROWS = 100_000


@pytest.fixture(scope="module")
def big_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "report_no": np.arange(SPEED_ROWS),
            "batch": [f" b{i} " for i in range(SPEED_ROWS)],
            "minutes": np.linspace(0, 10, SPEED_ROWS),
            "qty": [Decimal(i) / 100 for i in range(SPEED_ROWS)],
        }
    )


class TestSpeed:

    @pytest.mark.parametrize(
        "text",
        [
            "concat('MES-OPR-', report_no)",
            "upper(trim(batch))",
            "minutes * 60",
            "lpad(report_no, 8, '0')",
            "coalesce(batch, '')",
            "qty * 1000",
        ],
    )
    def test_simple_expressions_cover_every_row_of_a_large_frame(self, big_frame: pd.DataFrame, text: str) -> None:
        result = parse_expression(text).evaluate(big_frame)
        assert len(result.values) == SPEED_ROWS
        assert result.errors.isna().all()


class TestJsonGet:
    """json_get reads a value by path from PostgreSQL json/jsonb (a dict from the driver),
    MariaDB JSON and text columns (text), and bytes."""

    @pytest.fixture
    def names(self) -> pd.DataFrame:
        return pd.DataFrame({"name": pd.Series([
            {"en_US": "Bolt", "zh_CN": "螺栓"},
            '{"en_US": "Nut", "zh_CN": "螺母", "size": {"d": 8, "pitch": 1.25, "ok": true, "list": [3, 4]}}',
            '{"zh_CN": "垫圈"}'.encode(),
            None,
            "{not json",
        ], dtype=object)})

    def test_translated_name_by_language(self, names: pd.DataFrame) -> None:
        result = parse_expression("json_get(name, 'zh_CN')").evaluate(names)
        assert list(result.values) == ["螺栓", "螺母", "垫圈", None, None]
        assert list(result.errors)[:4] == [None, None, None, None]
        assert result.errors.iloc[4] == 'json_get(): "{not json" is not valid JSON'

    def test_missing_key_is_null(self, names: pd.DataFrame) -> None:
        assert parse_expression("json_get(name, 'de_DE')").evaluate(names.iloc[:3]).values.tolist() == [None, None, None]

    def test_nested_path_numbers_as_written_booleans_and_array_index(self, names: pd.DataFrame) -> None:
        row = names.iloc[[1]]
        assert parse_expression("json_get(name, 'size', 'd')").evaluate(row).values.iloc[0] == "8"
        assert parse_expression("json_get(name, 'size', 'pitch')").evaluate(row).values.iloc[0] == "1.25"
        assert parse_expression("json_get(name, 'size', 'ok')").evaluate(row).values.iloc[0] == "true"
        assert parse_expression("json_get(name, 'size', 'list', '1')").evaluate(row).values.iloc[0] == "4"

    def test_path_ending_at_an_object_is_a_row_error(self, names: pd.DataFrame) -> None:
        result = parse_expression("json_get(name, 'size')").evaluate(names.iloc[[1]])
        assert result.values.iloc[0] is None
        assert result.errors.iloc[0] == "json_get(): the path leads to an object or array, not a value"

    def test_composes_with_other_functions(self, names: pd.DataFrame) -> None:
        assert parse_expression("upper(json_get(name, 'en_US'))").evaluate(names.iloc[:1]).values.iloc[0] == "BOLT"

    @pytest.mark.parametrize(
        ("text", "complaint"),
        [
            ("json_get(name)", "json_get() takes 2 to 9 arguments"),
            ("json_get(name, lang)", "json_get() key must be a text literal such as 'zh_CN', got 'lang'"),
            ("json_get(name, 1)", "json_get() key must be a text literal"),
        ],
    )
    def test_keys_must_be_text_literals(self, text: str, complaint: str) -> None:
        with pytest.raises(ExpressionError, match=re.escape(complaint)):
            parse_expression(text)


class TestComparisons:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("a = 2", [False, True, None]),
            ("a == 2", [False, True, None]),
            ("a <> 2", [True, False, None]),
            ("a != 2", [True, False, None]),
            ("a < 2", [True, False, None]),
            ("a <= 2", [True, True, None]),
            ("a > 1", [False, True, None]),
            ("a >= 1", [True, True, None]),
        ],
    )
    def test_operators_give_true_false_or_null(self, text: str, expected: list[object]) -> None:
        assert values(text, a=[1, 2, None]) == expected

    def test_sql_and_python_spellings_parse_alike(self) -> None:
        assert parse_expression("a <> 1").columns == parse_expression("a != 1").columns == {"a"}

    def test_equals_sign_inside_text_is_text(self) -> None:
        assert values("t = 'x=y'", t=["x=y", "x"]) == [True, False]
        assert values("concat(t, '<>')", t=["a"]) == ["a<>"]

    def test_numbers_of_every_kind_compare_exactly(self) -> None:
        assert values("q = 0.1", q=[Decimal("0.1"), Decimal("0.10"), 0.1]) == [True, True, True]
        assert values("q > n", q=[Decimal("2.5"), Decimal(2)], n=[2, 2]) == [True, False]

    def test_float_column_with_nulls(self) -> None:
        assert values("a >= 1.5", a=[1.0, 2.0, float("nan")]) == [False, True, None]

    def test_text_compares_by_code_point(self) -> None:
        assert values("t < 'b'", t=["a", "B", "é", "齿轮"]) == [True, True, False, False]

    def test_times_and_dates_compare(self) -> None:
        early, late = datetime(2026, 1, 1), datetime(2026, 6, 1)
        assert values("s < e", s=[early, late], e=[late, early]) == [True, False]
        assert values("d = e", d=[date(2026, 1, 1)], e=[date(2026, 1, 1)]) == [True]

    def test_different_kinds_are_a_row_error(self) -> None:
        result = run("a = t", a=[1, 2], t=["1", None])
        assert list(result.values) == [None, None]
        assert result.errors[0] == "'=' needs two numbers, two texts, two times or two booleans, got number and text"
        assert result.errors[1] is None

    def test_aware_and_naive_times_are_a_row_error(self) -> None:
        result = run("s < now()", s=[datetime(2026, 1, 1)])
        assert "time zone" in str(result.errors[0])


class TestLogic:
    def test_three_valued_and(self) -> None:
        a = [True, True, False, None, None, False]
        b = [True, None, None, None, False, False]
        assert values("a and b", a=a, b=b) == [True, None, False, None, False, False]

    def test_three_valued_or(self) -> None:
        a = [False, True, False, None, None]
        b = [False, None, None, None, True]
        assert values("a or b", a=a, b=b) == [False, True, None, None, True]

    def test_not(self) -> None:
        assert values("not a", a=[True, False, None]) == [False, True, None]

    def test_comparisons_combine(self) -> None:
        got = values("qty >= 10 and not (status = 'X' or status = 'C')", qty=[12, 12, 5, None], status=["R", "C", "R", "R"])
        assert got == [True, False, False, None]

    def test_a_number_is_no_truth_value(self) -> None:
        result = run("a and b", a=[1], b=[True])
        assert result.errors[0] == "'and' needs true or false, got number"


class TestIf:
    def test_picks_a_branch_per_row(self) -> None:
        got = values("if(produced >= qty, 'Completed', 'In Process')", produced=[10, 4, None], qty=[10, 10, 10])
        assert got == ["Completed", "In Process", "In Process"]

    def test_null_condition_takes_the_otherwise_branch(self) -> None:
        assert values("if(a, 1, 2)", a=[True, False, None]) == [1, 2, 2]

    def test_branch_not_taken_raises_no_row_error(self) -> None:
        result = run("if(qty = 0, 0, done / qty)", qty=[0, 4, 0], done=[3, 2, None])
        assert list(result.errors) == [None, None, None]
        assert list(result.values) == [0, Decimal("0.5"), 0]

    def test_error_in_the_branch_taken_is_the_rows(self) -> None:
        result = run("if(qty >= 0, done / qty, 0)", qty=[0, 4], done=[3, 2])
        assert result.errors[0] == DIVISION_BY_ZERO
        assert list(result.values) == [None, Decimal("0.5")]

    def test_condition_that_is_not_a_truth_value_is_a_row_error(self) -> None:
        result = run("if(a, 1, 2)", a=[1, True])
        assert result.errors[0] == "if() condition must be true or false, got number"
        assert list(result.values) == [None, 1]

    def test_nested_branches_see_their_own_rows(self) -> None:
        got = values("if(a > 1, if(a > 2, concat('big ', a), 'two'), 'small')", a=[1, 2, 3, 4])
        assert got == ["small", "two", "big 3", "big 4"]

    def test_written_if_is_no_column(self) -> None:
        assert parse_expression("if(a = 1, b, c)").columns == {"a", "b", "c"}


class TestNow:
    def test_is_one_value_for_every_row(self) -> None:
        result = parse_expression("now()").evaluate(pd.DataFrame({"a": [1, 2, 3]}), now=NOW)
        assert list(result.values) == [NOW, NOW, NOW]

    def test_compares_with_aware_times(self) -> None:
        frame = pd.DataFrame({"due": [NOW - timedelta(days=1), NOW + timedelta(days=1)]}, dtype=object)
        assert list(parse_expression("if(due < now(), 'late', 'on time')").evaluate(frame, now=NOW).values) == ["late", "on time"]

    def test_outside_a_run_it_is_refused(self) -> None:
        with pytest.raises(ExpressionError, match="now\\(\\) is the start of a run"):
            parse_expression("now()").evaluate(pd.DataFrame({"a": [1]}))
