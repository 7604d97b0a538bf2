"""A reason is written once and filled in by each backend: with text, or with per-row pieces."""

from __future__ import annotations

from etl.core.reasons import CONVERSION, CROSSWALK_MISS, OVERFLOW, Reason, shown_text


class RowValue:
    """Stands for a backend's per-row expression (a SQL column, say)."""


def test_text_fills_every_field() -> None:
    text = CROSSWALK_MISS.text(crosswalk="material", side="MES", code="'MAT-X1'", column="item_code")
    assert text == "crosswalk 'material' has no MES code for 'MAT-X1' (column item_code)"


def test_pieces_keep_per_row_values_apart_and_join_the_text_around_them() -> None:
    code = RowValue()
    pieces = CROSSWALK_MISS.pieces(crosswalk="material", side="MES", code=code, column="item_code")
    assert pieces == ["crosswalk 'material' has no MES code for ", code, " (column item_code)"]


def test_pieces_and_text_say_the_same_where_every_field_is_text() -> None:
    fields = {"column": "qty", "what": "value", "value": "123456789.5", "problem": OVERFLOW.text(precision=9, scale=3)}
    assert CONVERSION.pieces(**fields) == [CONVERSION.text(**fields)]


def test_a_template_without_fields_is_one_piece() -> None:
    assert Reason("is not a whole number").pieces() == ["is not a whole number"]


def test_long_text_is_shown_cut_and_quoted_as_postgresql_quotes_it() -> None:
    assert shown_text("it's") == "'it''s'"
    assert shown_text("a\\b") == "E'a\\\\b'"
    assert shown_text("x" * 60) == "'" + "x" * 57 + "'..."
