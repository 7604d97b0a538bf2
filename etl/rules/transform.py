"""Map one chunk of source rows onto the target's columns.

Pure: a DataFrame of source rows in, a DataFrame of target rows plus the rejected rows out,
no database. Every value a row cannot get right (a code with no crosswalk entry, a NULL key, a
number too big for its column, a local time that does not exist) rejects that row with a
reason; the rest of the chunk goes on. Columns hold plain Python values (object dtype) so
decimals stay exact and integers stay integers.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd

from etl.config.crosswalks import Crosswalk
from etl.config.flows import ColumnSpec, Flow
from etl.core import reasons as reason
from etl.core.expressions import TRIM_CHARS, parse_expression
from etl.core.rows import SOURCE_KEY, SOURCE_KEY_LENGTH, Reject, is_null
from etl.core.types import ColumnType


@dataclass
class TransformResult:
    rows: pd.DataFrame
    rejects: list[Reject] = field(default_factory=list)


def source_keys(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Readable, stable key of each source row, e.g. ``order_no=1000456, item_no=10``."""
    if not columns:
        return [str(i) for i in range(len(frame))]
    parts = [[f"{c}={'NULL' if is_null(v) else v}" for v in frame[c]] for c in columns]
    return [", ".join(p)[:SOURCE_KEY_LENGTH] for p in zip(*parts, strict=True)]


class _Reasons:
    """Collects reject reasons per row position."""

    def __init__(self) -> None:
        self.by_row: dict[int, list[str]] = defaultdict(list)

    def add(self, mask: Any, reason: Callable[[int], str] | str) -> None:
        for pos in [i for i, bad in enumerate(mask) if bad]:
            self.by_row[pos].append(reason(pos) if callable(reason) else reason)

    def add_each(self, reasons: list[str | None]) -> None:
        """Add one reason per row position; None where that row has none."""
        for pos, text in enumerate(reasons):
            if text is not None:
                self.by_row[pos].append(text)


def _map_values(values: pd.Series, fn: Callable[[Any], Any]) -> pd.Series:
    return pd.Series([None if is_null(v) else fn(v) for v in values], index=values.index, dtype=object)


_CLEANERS: dict[str, Callable[[Any], Any]] = {
    "trim": lambda v: v.strip(TRIM_CHARS) if isinstance(v, str) else v,
    "upper": lambda v: v.upper() if isinstance(v, str) else v,
    "lower": lambda v: v.lower() if isinstance(v, str) else v,
}


def _input(spec: ColumnSpec, frame: pd.DataFrame, reasons: _Reasons, now: datetime | None) -> pd.Series:
    if spec.source is not None:
        return frame[spec.source].astype(object)
    if spec.expr is not None:
        result = parse_expression(spec.expr).evaluate(frame, now)
        errors = list(result.errors)
        reasons.add(
            [e is not None for e in errors],
            lambda i: reason.IN_EXPRESSION.text(column=spec.target, problem=errors[i], expr=spec.expr),
        )
        return result.values.astype(object)
    return pd.Series([spec.value] * len(frame), index=frame.index, dtype=object)


def _crosswalk(
    spec: ColumnSpec, flow: Flow, values: pd.Series, crosswalks: dict[str, Crosswalk], reasons: _Reasons
) -> pd.Series:
    used = flow.crosswalk_side(spec)
    assert used is not None  # called only for a column with a crosswalk
    name, side = used
    codes, _ = crosswalks[name].translate(values, side)
    missing = values.notna() & codes.isna()
    vals = list(values)
    reasons.add(
        missing,
        lambda i: reason.CROSSWALK_MISS.text(
            crosswalk=name, side=side.upper(), code=_code_shown(vals[i]), column=spec.target,
        ),
    )
    return codes


def _code_shown(code: Any) -> str:
    """A code in a message: text quoted (as etl.core.reasons.quoted), a number (an id) as
    written, NULL as ``NULL``."""
    if isinstance(code, (int, Decimal)) and not isinstance(code, bool):
        return format(code, "f") if isinstance(code, Decimal) else str(code)
    if code is None:
        return "NULL"
    return reason.quoted(code) if isinstance(code, str) else repr(code)


def _convert_unit(
    spec: ColumnSpec, flow: Flow, values: pd.Series, frame: pd.DataFrame,
    crosswalks: dict[str, Crosswalk], reasons: _Reasons,
) -> pd.Series:
    conv = spec.convert_unit
    assert conv is not None
    units = frame[conv.unit_column].astype(object)
    for step in conv.clean:
        units = _map_values(units, _CLEANERS[step])
    _, factors = crosswalks[conv.crosswalk].translate(units, flow.unit_side())
    unit_list = list(units)
    reasons.add(
        values.notna() & factors.isna(),
        lambda i: reason.UNIT_MISS.text(crosswalk=conv.crosswalk, unit=_code_shown(unit_list[i]), column=spec.target),
    )
    out: list[Any] = []
    bad: list[str | None] = []
    for value, factor in zip(values, factors, strict=True):
        if is_null(value) or is_null(factor):
            out.append(None)
            bad.append(None)
            continue
        try:
            number = _to_decimal(value)
            out.append(number / factor if conv.inverse else number * factor)
            bad.append(None)
        except (InvalidOperation, ArithmeticError, ValueError):
            out.append(None)
            bad.append(reason.IN_COLUMN.text(column=spec.target, problem=reason.NOT_A.text(value=_short(value), kind="number")))
    reasons.add_each(bad)
    return pd.Series(out, index=values.index, dtype=object)


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value).strip())


def _timezone(spec: ColumnSpec, values: pd.Series, target: ColumnType, reasons: _Reasons) -> pd.Series:
    rule = spec.timezone
    assert rule is not None
    src, dst = ZoneInfo(rule.from_), ZoneInfo(rule.to)
    out: list[Any] = []
    bad: list[str | None] = []
    for value in values:
        if is_null(value):
            out.append(None)
            bad.append(None)
            continue
        if isinstance(value, pd.Timestamp):
            value = value.to_pydatetime()
        if not isinstance(value, datetime):
            out.append(None)
            bad.append(reason.IN_COLUMN.text(column=spec.target, problem=reason.NOT_A.text(value=repr(value), kind="timestamp")))
            continue
        try:
            problem = _check_local_time(value, src) if value.tzinfo is None else None
            if problem:
                out.append(None)
                bad.append(reason.IN_COLUMN.text(column=spec.target, problem=problem))
                continue
            aware = value if value.tzinfo is not None else value.replace(tzinfo=src)
            converted = aware.astimezone(dst)
        except OverflowError:  # its instant or its time in the target zone is before year 1 or after 9999
            out.append(None)
            local_time = value.replace(tzinfo=None).isoformat(timespec="seconds")
            problem = reason.TIME_OUT_OF_RANGE.text(local_time=local_time, source_zone=src.key, zone=dst.key)
            bad.append(reason.IN_COLUMN.text(column=spec.target, problem=problem))
            continue
        out.append(converted if target.tz_aware else converted.replace(tzinfo=None))
        bad.append(None)
    reasons.add_each(bad)
    return pd.Series(out, index=values.index, dtype=object)


def _check_local_time(value: datetime, zone: ZoneInfo) -> str | None:
    """Reject wall-clock times that do not exist (DST gap) or exist twice (DST overlap)."""
    fold0 = value.replace(tzinfo=zone, fold=0)
    fold1 = value.replace(tzinfo=zone, fold=1)
    if fold0.utcoffset() != fold1.utcoffset():
        roundtrip = fold0.astimezone(UTC).astimezone(zone).replace(tzinfo=None)
        which = reason.LOCAL_TIME_SKIPPED if roundtrip != value else reason.LOCAL_TIME_REPEATED
        # To the second, as the SQL path writes it (to_char ... HH24:MI:SS).
        return which.text(local_time=value.isoformat(timespec="seconds"), zone=zone.key)
    return None


#: Enough digits to round any value a PostgreSQL NUMERIC(p,s) column holds (p is at most 1000).
_NUMERIC_DIGITS = Context(prec=1000)


class _Overflow(ValueError):
    """A number too large for its column, shown rounded to the column's scale: the digits
    beyond it depend on how a backend divides (Python keeps 38 digits, PostgreSQL fewer)."""

    def __init__(self, problem: str, rounded: Decimal):
        super().__init__(problem)
        self.shown = format(rounded, "f")


def coerce_value(value: Any, target: ColumnType) -> Any:
    """Convert ``value`` to what a column of ``target`` type holds; ValueError if impossible."""
    kind = target.kind
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if kind == "string":
        text = value if isinstance(value, str) else _as_text(value)
        if not target.holds_nul and "\x00" in text:
            raise ValueError(reason.NUL_IN_TEXT.text())
        if target.charset is not None:
            _check_charset(text, target.charset)
        if target.length is not None and len(text) > target.length:
            raise ValueError(reason.TOO_LONG.text(length=len(text), limit=target.length))
        return text
    if kind == "integer":
        if isinstance(value, bool):
            return int(value)
        number = _to_decimal(value)
        if number != number.to_integral_value():
            raise ValueError(reason.NOT_WHOLE.text())
        return int(number)
    if kind == "decimal":
        number = _to_decimal(value)
        if not number.is_finite():
            raise ValueError(reason.NOT_FINITE.text())
        if target.scale is not None:
            # Decimal's default 28 digits would refuse a value a NUMERIC(38,10) column holds.
            number = number.quantize(Decimal(1).scaleb(-target.scale), rounding=ROUND_HALF_UP, context=_NUMERIC_DIGITS)
        if target.precision is not None:
            int_digits = max(number.adjusted() + 1, 0)
            if int_digits > target.precision - (target.scale or 0):
                raise _Overflow(reason.OVERFLOW.text(precision=target.precision, scale=target.scale or 0), number)
        return number
    if kind == "float":
        return float(value)
    if kind == "timestamp":
        if isinstance(value, str):
            value = datetime.fromisoformat(value.strip())
        if isinstance(value, date) and not isinstance(value, datetime):
            value = datetime(value.year, value.month, value.day)
        if not isinstance(value, datetime):
            raise ValueError(reason.NOT_A.text(value=repr(value), kind="timestamp"))
        if target.tz_aware and value.tzinfo is None:
            raise ValueError(reason.NO_TIME_ZONE.text())
        if not target.tz_aware and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return value
    if kind == "date":
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, str):
            return date.fromisoformat(value.strip())
        if isinstance(value, date):
            return value
        raise ValueError(reason.NOT_A.text(value=repr(value), kind="date"))
    if kind == "boolean":
        return _as_bool(value)
    return value


#: MariaDB character sets that hold fewer characters than Unicode, as Python codecs; "bmp" for
#: the three-byte UTF-8 (no character above U+FFFF: emoji, rare CJK ideographs).
_CHARSETS = {"utf8mb3": "bmp", "utf8": "bmp", "ucs2": "bmp", "latin1": "cp1252", "ascii": "ascii",
             "gbk": "gbk", "gb2312": "gb2312", "big5": "big5", "sjis": "shift_jis", "ujis": "euc_jp",
             "euckr": "euc_kr", "latin2": "iso8859_2", "cp1250": "cp1250", "cp1251": "cp1251", "greek": "iso8859_7"}


def _check_charset(text: str, charset: str) -> None:
    """_Unstorable naming the first character of ``text`` a ``charset`` column cannot store."""
    if charset not in _CHARSETS or text.isascii():
        return
    bad = next((c for c in text if not _fits(c, charset)), None)
    if bad is not None:
        raise _Unstorable(reason.NOT_IN_CHARSET.text(character=f"U+{ord(bad):04X}", charset=charset), text, charset)


class _Unstorable(ValueError):
    """Text with a character its column's character set lacks, shown with every such character
    escaped: the reason is stored in that database too."""

    def __init__(self, problem: str, text: str, charset: str):
        super().__init__(problem)
        shown = "".join(c if _fits(c, charset) else f"\\U{ord(c):08x}" for c in text)
        self.shown = reason.shown_text(shown)


def _fits(character: str, charset: str) -> bool:
    codec = _CHARSETS[charset]
    if codec == "bmp":
        return ord(character) <= 0xFFFF
    try:
        character.encode(codec)
        return True
    except UnicodeEncodeError:
        return False


def _as_text(value: Any) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        # Bytes in a text column are text in some encoding; only UTF-8 is taken as such.
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError(reason.NOT_UTF8.text()) from None
    if isinstance(value, (dict, list)):
        # A json/jsonb value as JSON text, never Python's repr.
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


_TRUE = {"1", "true", "t", "yes", "y", "x"}
_FALSE = {"0", "false", "f", "no", "n", ""}


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, Decimal)) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(reason.NOT_A.text(value=repr(value), kind="boolean"))


_CASTS: dict[str, ColumnType] = {
    "string": ColumnType("string"),
    "integer": ColumnType("integer"),
    "decimal": ColumnType("decimal"),
    "timestamp": ColumnType("timestamp"),
    "date": ColumnType("date"),
    "boolean": ColumnType("boolean"),
}


def _coerce(spec: ColumnSpec, values: pd.Series, target: ColumnType, reasons: _Reasons, what: str) -> pd.Series:
    out: list[Any] = []
    bad: list[str | None] = []
    for value in values:
        if is_null(value):
            out.append(None)
            bad.append(None)
            continue
        try:
            out.append(coerce_value(value, target))
            bad.append(None)
        except (ValueError, TypeError, InvalidOperation, ArithmeticError) as exc:
            out.append(None)
            shown = exc.shown if isinstance(exc, (_Overflow, _Unstorable)) else _short(value)
            bad.append(reason.CONVERSION.text(column=spec.target, what=what, value=shown, problem=exc))
    reasons.add_each(bad)
    return pd.Series(out, index=values.index, dtype=object)


def _short(value: Any) -> str:
    if isinstance(value, str):
        # A reason is stored as text too, where PostgreSQL cannot hold NUL.
        return reason.shown_text(value.replace("\x00", "\\x00"))
    text = format(value, "f") if isinstance(value, Decimal) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


@dataclass
class _Column:
    """One column's steps over a chunk, each named as in etl.config.flows.COLUMN_STEPS."""

    spec: ColumnSpec
    flow: Flow
    frame: pd.DataFrame
    crosswalks: dict[str, Crosswalk]
    target: ColumnType
    reasons: _Reasons

    def clean(self, values: pd.Series) -> pd.Series:
        for step in self.spec.clean:
            values = _map_values(values, _CLEANERS[step])
        return values

    def crosswalk(self, values: pd.Series) -> pd.Series:
        return _crosswalk(self.spec, self.flow, values, self.crosswalks, self.reasons)

    def convert_unit(self, values: pd.Series) -> pd.Series:
        return _convert_unit(self.spec, self.flow, values, self.frame, self.crosswalks, self.reasons)

    def cast(self, values: pd.Series) -> pd.Series:
        assert self.spec.cast is not None
        return _coerce(self.spec, values, _CASTS[self.spec.cast], self.reasons, "cannot cast")

    def timezone(self, values: pd.Series) -> pd.Series:
        return _timezone(self.spec, values, self.target, self.reasons)

    def default(self, values: pd.Series) -> pd.Series:
        return pd.Series([self.spec.default if is_null(v) else v for v in values], index=values.index, dtype=object)


def transform(
    frame: pd.DataFrame,
    flow: Flow,
    crosswalks: dict[str, Crosswalk],
    target_types: dict[str, ColumnType],
    now: datetime | None = None,
) -> TransformResult:
    """Apply the flow's column rules to ``frame`` (source rows, source column names); ``now`` is
    what an expression's now() gives (the run's start on the target's clock).

    Returns the target rows (target column names plus ``_source_key``) and the rejects, each
    with the source row as payload and every reason it failed. The result keeps the input order.
    """
    reasons = _Reasons()
    frame = frame.reset_index(drop=True)
    out: dict[str, pd.Series] = {}
    for spec in flow.columns:
        target = target_types[spec.target]
        before = {pos: len(found) for pos, found in reasons.by_row.items()}
        column = _Column(spec, flow, frame, crosswalks, target, reasons)
        values = _input(spec, frame, reasons, now)
        for step in spec.steps():
            values = getattr(column, step)(values)
        values = _coerce(spec, values, target, reasons, "value")
        if spec.required or spec.target in flow.key or not target.nullable:
            # A value already rejected above (say, a crosswalk miss) is NULL for that reason.
            label = "natural key column" if spec.target in flow.key else "required column"
            grew = [len(reasons.by_row.get(i, ())) > before.get(i, 0) for i in range(len(values))]
            reasons.add(
                [n and not g for n, g in zip(values.isna(), grew, strict=True)],
                reason.REQUIRED_NULL.text(label=label, column=spec.target),
            )
        out[spec.target] = values

    keys = source_keys(frame, flow.source_key_columns())
    rows = pd.DataFrame(out, index=frame.index)
    rows[SOURCE_KEY] = pd.Series(keys, index=frame.index, dtype=object)
    if not reasons.by_row:
        return TransformResult(rows)

    bad_positions = sorted(reasons.by_row)
    records = frame.iloc[bad_positions].to_dict("records")
    rejects = [
        Reject(keys[pos], {str(k): (None if is_null(v) else v) for k, v in record.items()}, "; ".join(_unique(reasons.by_row[pos])))
        for pos, record in zip(bad_positions, records, strict=True)
    ]
    good = rows.drop(index=frame.index[bad_positions])
    return TransformResult(good, rejects)


def _unique(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))
