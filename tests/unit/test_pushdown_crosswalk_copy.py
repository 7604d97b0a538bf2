"""The COPY text a crosswalk's entries are loaded with: plain when no value needs escaping,
escaped exactly as COPY's text format wants when one does."""

from __future__ import annotations

from decimal import Decimal

import pytest

from etl.sync.stage_sql import _copy_lines

ONE = Decimal(1)


def test_plain_codes_are_written_as_they_are() -> None:
    entries = {"WO-2026-000456": ("1000456", ONE), "g": ("KG", Decimal("0.001")), "王": ("", ONE)}
    assert _copy_lines(entries) == "WO-2026-000456\t1000456\t1\ng\tKG\t0.001\n王\t\t1\n"


@pytest.mark.parametrize(
    ("code", "mapped", "line"),
    [
        ("A\tB", "X", "A\\tB\tX\t1\n"),
        ("A", "X\nY", "A\tX\\nY\t1\n"),
        ("A\\B", "X", "A\\\\B\tX\t1\n"),
        ("A", "X\rY", "A\tX\\rY\t1\n"),
    ],
)
def test_a_value_with_a_tab_break_or_backslash_is_escaped(code: str, mapped: str, line: str) -> None:
    # Beside a plain entry: one value that needs escaping makes the whole text escaped.
    assert _copy_lines({"P": ("Q", ONE), code: (mapped, ONE)}) == "P\tQ\t1\n" + line


def test_codes_that_are_not_text_go_through_copy_text() -> None:
    # A rule crosswalk's codes come from the source column as they are: an integer column
    # gives integers, a boolean would be written t/f.
    assert _copy_lines({1000456: ("WO-2026-000456", ONE)}) == "1000456\tWO-2026-000456\t1\n"
    assert _copy_lines({True: ("Y", ONE)}) == "t\tY\t1\n"
    assert _copy_lines({"A": ("X", None)}) == "A\tX\t\\N\n"
