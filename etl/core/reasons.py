"""Every reason a row can be rejected for, each written once.

A reason is a template: ``{fields}`` that the rule knows when it is compiled (the column, the
crosswalk, the column's precision) and fields that vary per row (the value, the code). The
Python backend fills every field with text (:meth:`Reason.text`); the SQL backend fills the
per-row fields with SQL expressions and concatenates the pieces (:meth:`Reason.pieces`). So the
two backends can only differ in how they show a value, never in what they say.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Any

_FORMATTER = string.Formatter()


@dataclass(frozen=True)
class Reason:
    template: str

    def text(self, **fields: Any) -> str:
        """The reason with every field filled in."""
        return self.template.format(**fields)

    def pattern(self) -> str:
        """A regular expression for this reason with any values filled in (a value holding no ";",
        the separator of a row's several reasons)."""
        return "".join(
            re.escape(literal) + ("" if name is None else "[^;]*?")
            for literal, name, _, _ in _FORMATTER.parse(self.template)
        )

    def pieces(self, **fields: Any) -> list[Any]:
        """The reason as literal text and the field values that are not text (a backend's
        per-row expressions), in order; adjacent text is joined."""
        out: list[Any] = []
        for literal, name, spec, conversion in _FORMATTER.parse(self.template):
            if literal:
                _append_text(out, literal)
            if name is None:
                continue
            value = fields[name]
            if isinstance(value, (str, int)) or value is None:
                shown = _FORMATTER.convert_field(value, conversion) if conversion else value
                _append_text(out, format(shown, spec or ""))
            else:
                out.append(value)
        return out


def _append_text(out: list[Any], text: str) -> None:
    if out and isinstance(out[-1], str):
        out[-1] += text
    else:
        out.append(text)


#: A text value longer than this shows its first characters and ``...`` in a reason.
SHOWN_CHARACTERS = 57


def quoted(text: str) -> str:
    """``text`` in a reason, as PostgreSQL's ``quote_literal`` writes it (so that both backends
    show it alike): in single quotes, a quote doubled, and where it holds a backslash that
    doubled too and ``E`` before the opening quote."""
    body = text.replace("'", "''")
    if "\\" in text:
        return "E'" + body.replace("\\", "\\\\") + "'"
    return "'" + body + "'"


def shown_text(text: str) -> str:
    """A text value in a reason: quoted, its first :data:`SHOWN_CHARACTERS` characters only."""
    more = "..." if len(text) > SHOWN_CHARACTERS else ""
    return quoted(text[:SHOWN_CHARACTERS]) + more


#: A failure inside an ``expr``; ``problem`` is one of the expression problems below.
IN_EXPRESSION = Reason("column {column}: {problem} in expr {expr!r}")
DIVISION_BY_ZERO = "division by zero"
JSON_NOT_A_VALUE = "json_get(): the path leads to an object or array, not a value"

CROSSWALK_MISS = Reason("crosswalk {crosswalk!r} has no {side} code for {code} (column {column})")
UNIT_MISS = Reason("crosswalk {crosswalk!r} has no factor for unit {unit} (column {column})")

#: A column's value that one of its steps cannot take; ``problem`` is one of these:
IN_COLUMN = Reason("column {column}: {problem}")
NOT_A = Reason("{value} is not a {kind}")
LOCAL_TIME_SKIPPED = Reason("{local_time} does not exist in {zone} (clocks skip it)")
LOCAL_TIME_REPEATED = Reason("{local_time} is ambiguous in {zone} (clocks repeat it)")
#: A wall-clock time whose instant, or whose time in the target zone, falls outside what Python
#: and the drivers represent (PostgreSQL itself would hold it).
TIME_OUT_OF_RANGE = Reason("{local_time} in {source_zone} falls outside the years 1 to 9999 in {zone}")

#: A value that does not fit the column's type: ``what`` is ``value`` (into the target column) or
#: ``cannot cast`` (a cast step); ``problem`` is one of these:
CONVERSION = Reason("column {column}: {what} {value}: {problem}")
TOO_LONG = Reason("{length} characters, column holds {limit}")
NOT_WHOLE = Reason("is not a whole number")
NOT_FINITE = Reason("is not a finite number")
OVERFLOW = Reason("overflows NUMERIC({precision},{scale})")
NOT_UTF8 = Reason("is not valid UTF-8 text (mixed encodings in the source?)")
NUL_IN_TEXT = Reason("holds a NUL character (\\x00), which a PostgreSQL text column cannot store")
NOT_IN_CHARSET = Reason("holds {character}, which a {charset} column cannot store")
NO_TIME_ZONE = Reason("has no time zone; add a timezone rule to the column")

REQUIRED_NULL = Reason("{label} {column} is NULL")
PARENT_MISSING = Reason(
    "parent {table}.{key} = {value} not on the target yet (column {column}); retried when it arrives"
)

#: A web API target refused a record: its HTTP status and the API's own words.
API_REFUSED = Reason("the API refused the posting: HTTP {status}: {text}")
API_MAYBE_POSTED = Reason(
    "run {run_id} began sending this record and lost the answer: it may be in the API already; check the API, "
    "then delete the flow's etl_api_posting row of this key with how 'sending' to let it be sent"
)
API_NO_UPDATE = Reason("posted before with other values, and the API target has no update (target.api.update_path)")

