"""A small, whitelisted expression language for computed columns in flow YAML.

A column mapping may derive its value from source columns::

    expr: "concat('MES-OPR-', report_no)"
    expr: "std_minutes_per_unit * 60"
    expr: "lpad(step_no, 4, '0')"
    expr: "upper(trim(batch))"
    expr: "coalesce(lot_no, '')"
    expr: "json_get(name, 'zh_CN')"

The text is parsed with :mod:`ast` and only these forms are accepted: column
names (plain identifiers), text and number literals, ``+ - * /``, unary ``-``
and calls of the functions in :data:`FUNCTIONS` with positional arguments.
Nothing is ever handed to ``eval`` or ``exec``. Anything else is rejected by
:func:`parse_expression` with an :class:`ExpressionError`, so a bad mapping
fails when the flow is loaded, not half-way through a run.

Semantics, the same for every function and operator:

NULL
    ``None``, ``NaN``, ``pd.NA``, ``NaT`` and ``Decimal('NaN')`` are all NULL.
    NULL in gives NULL out (SQL semantics); only ``coalesce`` looks past it.
    Results use ``None`` for NULL.

Numbers
    Values are Python ``int``, ``float`` or ``decimal.Decimal``. Number
    literals with a fraction or exponent (``1.5``, ``2e3``) become ``Decimal``
    read from the literal's own text, so ``0.1`` is exactly one tenth.
    ``int`` op ``int`` stays ``int`` for ``+ - *``; ``int / int`` is a
    ``Decimal`` (``7 / 2`` is ``3.5``, never a float). When a ``Decimal`` meets
    a ``float``, the float becomes ``Decimal(repr(float))``, so ``0.1`` stays
    ``0.1``. Other mixes with ``float`` give ``float``. ``Decimal`` arithmetic
    is exact: ``+ - *`` that would need more than 38 significant digits are
    flagged rather than rounded; division rounds half-up at 38 digits.

Text
    String functions first convert their arguments to text: whole numbers
    print without decimals (``10.0`` read from a float column with NULLs prints
    as ``10``), ``Decimal`` prints in plain notation keeping its scale
    (``12.50``), other values use ``str()``.

Row errors
    A row whose computation fails (division by zero, ``'abc' * 2``) gets a
    short message in :attr:`EvalResult.errors` and a NULL value, even if an
    enclosing ``coalesce`` would have supplied a fallback. Evaluation never
    raises for bad data; it raises :class:`ExpressionError` only when a
    referenced column is missing from the frame.
"""

from __future__ import annotations

import ast
import io
import json
import tokenize
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import (
    ROUND_HALF_UP,
    Context,
    Decimal,
    DivisionByZero,
    Inexact,
    InvalidOperation,
    Overflow,
)
from itertools import repeat
from typing import Any, TypeAlias, TypeGuard, cast

import numpy as np
import pandas as pd

from etl.core.errors import EtlError
from etl.core.reasons import DIVISION_BY_ZERO, JSON_NOT_A_VALUE

MAX_LENGTH = 500
#: whitespace and the ideographic space common in Chinese data entry.
TRIM_CHARS = " \t\n\r\f\v\u3000"
MAX_DEPTH = 32
DECIMAL_DIGITS = 38
# data problem to report, not something to round away silently.
_EXACT = Context(prec=DECIMAL_DIGITS, traps=[Inexact, InvalidOperation, Overflow, DivisionByZero])
_ROUNDING = Context(
    prec=DECIMAL_DIGITS,
    rounding=ROUND_HALF_UP,
    traps=[InvalidOperation, Overflow, DivisionByZero],
)
_INT64_LIMIT = 2**63

Value: TypeAlias = "np.ndarray | str | int | float | Decimal | datetime | None"
"""An intermediate result: one scalar for every row, or one cell per row.

Arrays are int64/float64 (NaN is NULL) or object arrays holding ``None`` for NULL.
"""


class ExpressionError(EtlError, ValueError):
    """An expression is not allowed, or references a column the data lacks."""


def _quote(text: str) -> str:
    shown = text if len(text) <= 80 else text[:77] + "..."
    return f'"{shown}"'


def _problem(text: str, message: str) -> ExpressionError:
    return ExpressionError(f"expression {_quote(text)}: {message}")


class _RowError(Exception):
    """One row's computation failed; the message goes into EvalResult.errors."""


@dataclass
class EvalResult:
    """Per-row outcome of :meth:`Expression.evaluate`, both Series on the frame's index.

    ``values`` is object dtype holding ``str``, ``int``, ``float``, ``Decimal``
    (or whatever a column passed through unchanged) and ``None`` for NULL.
    ``errors`` is object dtype holding ``None`` or a short message; a row with a
    message always has a ``None`` value.
    """

    values: pd.Series
    errors: pd.Series


class _Context:
    """State of one evaluation: the frame's columns as arrays and the row errors."""

    def __init__(self, frame: pd.DataFrame, text: str, now: datetime | None, parent: _Context | None = None,
                 rows: np.ndarray | None = None):
        self.frame = frame
        self.text = text
        self.now = now
        self.n = len(frame) if rows is None else len(rows)
        self.errors = np.full(self.n, None, dtype=object)
        self.failed = np.zeros(self.n, dtype=bool)
        self._columns: dict[str, np.ndarray] = {}
        self._parent = parent
        self._rows = rows

    def subset(self, rows: np.ndarray) -> _Context:
        """A context for the rows at positions ``rows`` alone (a branch of if()): its errors
        go back to this context with :meth:`merge`."""
        return _Context(self.frame, self.text, self.now, self, rows)

    def merge(self, child: _Context) -> None:
        assert child._rows is not None
        self.flag_rows({int(child._rows[i]): str(child.errors[i]) for i in np.flatnonzero(child.failed)})

    def column(self, name: str) -> np.ndarray:
        """Return the column as loaded by _load, reading the frame once per name."""
        if name not in self._columns and self._parent is not None:
            assert self._rows is not None
            self._columns[name] = self._parent.column(name)[self._rows]
        if name not in self._columns:
            series = self.frame[name]
            if isinstance(series, pd.DataFrame):
                raise _problem(self.text, f"column {name!r} appears more than once in the data")
            self._columns[name] = _load(series)
        return self._columns[name]

    def flag(self, mask: np.ndarray, message: str) -> None:
        """Record ``message`` for the rows in ``mask``; a row keeps its first message."""
        new = mask & ~self.failed
        self.errors[new] = message
        self.failed |= new

    def flag_all(self, message: str) -> None:
        self.flag(np.ones(self.n, dtype=bool), message)

    def flag_rows(self, messages: dict[int, str]) -> None:
        for row, message in messages.items():
            if not self.failed[row]:
                self.errors[row] = message
                self.failed[row] = True


def _load(series: pd.Series) -> np.ndarray:
    """Return an int64 or float64 array (NaN is NULL), or a private object array with None for NULL."""
    dtype = series.dtype
    # Widening narrow dtypes keeps numpy arithmetic from wrapping at int32 and
    # lets the int64 overflow guard in _fits_int64 hold.
    if isinstance(dtype, np.dtype) and dtype.kind == "i":
        return series.to_numpy(dtype=np.int64)
    if isinstance(dtype, np.dtype) and dtype.kind == "f":
        return series.to_numpy(dtype=np.float64)
    cells = series.to_numpy(dtype=object, copy=True)
    missing = _missing(cells)
    if missing.any():
        cells[missing] = None
    return cells


def _missing(cells: np.ndarray) -> np.ndarray:
    """``pd.isna`` of object cells, except that a Decimal NaN is a value, as NUMERIC 'NaN' is in
    SQL: it must reach the column's type check (not a finite number), not a ``coalesce``."""
    missing = np.asarray(pd.isna(cells))
    if cells.dtype == object and missing.any():
        for i in np.flatnonzero(missing):
            if isinstance(cells[i], Decimal):
                missing[i] = False
    return missing


def _object_array(cells: list[object]) -> np.ndarray:
    # Assigning into a preallocated array keeps numpy from reading tuples or
    # lists in the cells as extra dimensions.
    array = np.empty(len(cells), dtype=object)
    array[:] = cells
    return array


def _as_objects(value: Value, n: int) -> np.ndarray:
    """Return one Python object per row (None for NULL) in a fresh or private object array."""
    if not isinstance(value, np.ndarray):
        return np.full(n, value, dtype=object)
    if value.dtype.kind == "f":
        cells = value.astype(object)
        cells[np.isnan(value)] = None
        return cells
    if value.dtype.kind == "i":
        return value.astype(object)
    return value


def _cells(value: Value, n: int) -> Iterable[object]:
    """Iterate one Python object per row, None for NULL."""
    if not isinstance(value, np.ndarray):
        return repeat(value, n)
    if value.dtype.kind == "f":
        return [None if x != x else x for x in value.tolist()]
    cells: list[object] = value.tolist()
    return cells


def _as_number(value: object) -> int | float | Decimal | None:
    """Return the value as int, float or Decimal, or None when it is not a number (bool is not)."""
    kind = type(value)
    if kind is int or kind is float or kind is Decimal:
        # The exact-type test is the fast path; mypy does not narrow through ``kind``.
        return cast("int | float | Decimal", value)
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if isinstance(value, Decimal):
        return value
    return None


def _kind(value: object) -> str:
    """Name a value's type the way a plant engineer would."""
    if isinstance(value, str):
        return "text"
    if isinstance(value, (bool, np.bool_)):
        return "boolean"
    if _as_number(value) is not None:
        return "number"
    return type(value).__name__


def _float_text(number: float) -> str:
    if number.is_integer():
        return str(int(number))
    return format(Decimal(repr(number)), "f")


def _to_text(value: object) -> str:
    """Convert a non-NULL value to text by the module's text rule."""
    if isinstance(value, str):
        return str(value)
    number = _as_number(value)
    if number is None:
        return str(value)
    if isinstance(number, int):
        return str(number)
    if isinstance(number, float):
        return _float_text(number)
    return format(number, "f")


def _texts(value: Value) -> np.ndarray | str | None:
    """Convert every cell to text (None stays None): a str/None scalar or an object array."""
    if not isinstance(value, np.ndarray):
        return None if value is None else _to_text(value)
    if value.dtype.kind == "i":
        return value.astype(str).astype(object)
    if value.dtype.kind == "f":
        return _object_array([None if x != x else _float_text(x) for x in value.tolist()])
    return _object_array(
        [x if type(x) is str else (None if x is None else _to_text(x)) for x in value.tolist()]
    )


def _map_text(value: Value, transform: Callable[[str], str]) -> Value:
    """Apply ``transform`` to the text of every non-NULL cell."""
    texts = _texts(value)
    if not isinstance(texts, np.ndarray):
        return None if texts is None else transform(texts)
    return _object_array([None if t is None else transform(t) for t in texts.tolist()])


def _elementwise(ctx: _Context, function: Callable[..., Value], *operands: Value) -> Value:
    """Apply ``function`` cell by cell; a _RowError flags that row and leaves it NULL."""
    if not any(isinstance(operand, np.ndarray) for operand in operands):
        try:
            return function(*operands)
        except _RowError as exc:
            ctx.flag_all(str(exc))
            return None
    results: list[object] = []
    failures: dict[int, str] = {}
    append = results.append
    for row, cells in enumerate(zip(*(_cells(operand, ctx.n) for operand in operands), strict=True)):
        try:
            append(function(*cells))
        except _RowError as exc:
            append(None)
            failures[row] = str(exc)
    ctx.flag_rows(failures)
    return _object_array(results)


def _to_decimal(number: int | float | Decimal) -> Decimal:
    if isinstance(number, float):
        return Decimal(repr(number))
    return Decimal(number)


def _decimal_arithmetic(op: str, left: Decimal, right: Decimal) -> Decimal:
    if op == "/" and right.is_zero():
        # Checked up front so 0/0 reads the same as 1/0 instead of "invalid operation".
        raise _RowError(DIVISION_BY_ZERO)
    try:
        if op == "+":
            return _EXACT.add(left, right)
        if op == "-":
            return _EXACT.subtract(left, right)
        if op == "*":
            return _EXACT.multiply(left, right)
        return _ROUNDING.divide(left, right)
    except Inexact:
        raise _RowError(f"result needs more than {DECIMAL_DIGITS} significant digits") from None
    except Overflow:
        raise _RowError("result out of range") from None
    except InvalidOperation:
        raise _RowError(f"invalid operation {op!r} on {left} and {right}") from None


def _float_arithmetic(op: str, left: float, right: float) -> float:
    try:
        if op == "+":
            return left + right
        if op == "-":
            return left - right
        if op == "*":
            return left * right
        return left / right
    except ZeroDivisionError:
        raise _RowError(DIVISION_BY_ZERO) from None


def _arithmetic_cell(op: str, left: object, right: object) -> int | float | Decimal | None:
    """Compute one row of ``left op right`` by the module's number rules."""
    if left is None or right is None:
        return None
    x, y = _as_number(left), _as_number(right)
    if x is None or y is None:
        hint = "; use concat() to join text" if op == "+" and isinstance(left, str) else ""
        raise _RowError(f"'{op}' needs numbers, got {_kind(left)} and {_kind(right)}{hint}")
    if isinstance(x, Decimal) or isinstance(y, Decimal):
        return _decimal_arithmetic(op, _to_decimal(x), _to_decimal(y))
    if isinstance(x, float) or isinstance(y, float):
        try:
            return _float_arithmetic(op, float(x), float(y))
        except OverflowError:
            raise _RowError("number too large for float arithmetic") from None
    if op == "/":
        return _decimal_arithmetic(op, Decimal(x), Decimal(y))
    if op == "+":
        return x + y
    if op == "-":
        return x - y
    return x * y


def _is_numpy_number(value: Value) -> TypeGuard[np.ndarray | int]:
    if isinstance(value, np.ndarray):
        return value.dtype.kind in "if"
    return type(value) is int and -_INT64_LIMIT < value < _INT64_LIMIT


def _is_float(value: Value) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _magnitude(value: np.ndarray | int) -> int:
    if isinstance(value, np.ndarray):
        if value.size == 0:
            return 0
        return max(abs(int(value.min())), abs(int(value.max())))
    return abs(value)


def _fits_int64(op: str, left: np.ndarray | int, right: np.ndarray | int) -> bool:
    if op == "*":
        return _magnitude(left) * _magnitude(right) < _INT64_LIMIT
    return _magnitude(left) + _magnitude(right) < _INT64_LIMIT


_NUMPY_OPS = {"+": np.add, "-": np.subtract, "*": np.multiply}


def _numpy_divide(ctx: _Context, left: np.ndarray | int, right: np.ndarray | int) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        result: np.ndarray = np.true_divide(left, right)
    dividend = np.broadcast_to(np.asarray(left, dtype=float), result.shape)
    divisor = np.broadcast_to(np.asarray(right, dtype=float), result.shape)
    by_zero = (divisor == 0) & ~np.isnan(dividend)
    if by_zero.any():
        result[by_zero] = np.nan
        ctx.flag(by_zero, DIVISION_BY_ZERO)
    return result


def _numpy_arithmetic(ctx: _Context, op: str, left: Value, right: Value) -> np.ndarray | None:
    """Compute with numpy when that gives exactly what the cell rules would, else None."""
    if not (isinstance(left, np.ndarray) or isinstance(right, np.ndarray)):
        return None
    if not (_is_numpy_number(left) and _is_numpy_number(right)):
        return None
    floats = _is_float(left) or _is_float(right)
    if op == "/":
        # int / int must be an exact Decimal, which numpy cannot produce.
        return _numpy_divide(ctx, left, right) if floats else None
    if not floats and not _fits_int64(op, left, right):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        result: np.ndarray = _NUMPY_OPS[op](left, right)
    return result


def _arithmetic(ctx: _Context, op: str, left: Value, right: Value) -> Value:
    fast = _numpy_arithmetic(ctx, op, left, right)
    if fast is not None:
        return fast
    return _elementwise(ctx, lambda a, b: _arithmetic_cell(op, a, b), left, right)


def _negate_cell(value: object) -> int | float | Decimal | None:
    if value is None:
        return None
    number = _as_number(value)
    if number is None:
        raise _RowError(f"'-' needs a number, got {_kind(value)}")
    if isinstance(number, Decimal):
        try:
            return _EXACT.minus(number)
        except Inexact:
            raise _RowError(f"value needs more than {DECIMAL_DIGITS} significant digits") from None
    return -number


def _negate(ctx: _Context, value: Value) -> Value:
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "f":
            return -value
        if value.dtype.kind == "i" and (value.size == 0 or int(value.min()) > -_INT64_LIMIT):
            return -value
    return _elementwise(ctx, _negate_cell, value)


def _concat(ctx: _Context, args: list[Value]) -> Value:
    texts = [_texts(arg) for arg in args]
    if not any(isinstance(t, np.ndarray) for t in texts):
        strings = [t for t in texts if isinstance(t, str)]
        return None if len(strings) < len(texts) else "".join(strings)
    columns = [t.tolist() if isinstance(t, np.ndarray) else repeat(t, ctx.n) for t in texts]
    return _object_array([None if None in parts else "".join(parts) for parts in zip(*columns, strict=True)])


def _upper(ctx: _Context, args: list[Value]) -> Value:
    return _map_text(args[0], str.upper)


def _lower(ctx: _Context, args: list[Value]) -> Value:
    return _map_text(args[0], str.lower)


def _trim(ctx: _Context, args: list[Value]) -> Value:
    return _map_text(args[0], lambda t: t.strip(TRIM_CHARS))


def _lpad(ctx: _Context, args: list[Value]) -> Value:
    value, width, fill = args
    assert isinstance(width, int) and isinstance(fill, str)  # checked when parsed: _WIDTH, _FILL
    return _map_text(value, lambda t: t.rjust(width, fill))


def _rpad(ctx: _Context, args: list[Value]) -> Value:
    value, width, fill = args
    assert isinstance(width, int) and isinstance(fill, str)  # checked when parsed: _WIDTH, _FILL
    return _map_text(value, lambda t: t.ljust(width, fill))


def _substr(ctx: _Context, args: list[Value]) -> Value:
    value, start, length = args
    assert isinstance(start, int) and isinstance(length, int)  # checked when parsed: whole numbers
    begin = start - 1
    end = begin + length
    return _map_text(value, lambda t: t[begin:end])


def _text(ctx: _Context, args: list[Value]) -> Value:
    return _texts(args[0])


def _coalesce(ctx: _Context, args: list[Value]) -> Value:
    if not any(isinstance(arg, np.ndarray) for arg in args):
        return next((arg for arg in args if arg is not None), None)
    result = _as_objects(args[0], ctx.n).copy()
    missing = _missing(result)
    for arg in args[1:]:
        if not missing.any():
            break
        if isinstance(arg, np.ndarray):
            other = _as_objects(arg, ctx.n)
            result[missing] = other[missing]
            missing &= _missing(other)
        elif arg is not None:
            result[missing] = arg
            missing[:] = False
    return result


def _json_document(value: object) -> object:
    """The parsed document of a JSON cell: drivers hand PostgreSQL json/jsonb over already
    parsed; MariaDB's JSON (a LONGTEXT) and text columns arrive as text."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value).decode("utf-8")
    if not isinstance(value, str):
        return value
    try:
        # Decimal keeps a number's digits as written, as PostgreSQL's ->> prints them.
        return json.loads(value, parse_float=Decimal)
    except ValueError:
        raise _RowError(f"json_get(): {_quote(value[:40])} is not valid JSON") from None


def _json_text(leaf: object) -> str | None:
    """A JSON leaf as text, the way PostgreSQL's ``#>>`` prints it."""
    if leaf is None:
        return None
    if isinstance(leaf, bool):
        return "true" if leaf else "false"
    if isinstance(leaf, (dict, list)):
        raise _RowError(JSON_NOT_A_VALUE)
    return _to_text(leaf)


def _json_get_cell(value: object, path: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    node = _json_document(value)
    for key in path:
        if isinstance(node, dict):
            node = node.get(key)
        elif isinstance(node, list) and key.isdigit() and int(key) < len(node):
            node = node[int(key)]
        else:
            return None
    return _json_text(node)


def _json_get(ctx: _Context, args: list[Value]) -> Value:
    path = tuple(str(arg) for arg in args[1:])
    return _elementwise(ctx, lambda v: _json_get_cell(v, path), args[0])


def _round_cell(value: object, exponent: Decimal) -> Decimal | None:
    if value is None:
        return None
    number = _as_number(value)
    if number is None:
        raise _RowError(f"round() needs a number, got {_kind(value)}")
    try:
        return _to_decimal(number).quantize(exponent, context=_ROUNDING)
    except (InvalidOperation, Overflow):
        raise _RowError(f"round() cannot round {_to_text(value)} within {DECIMAL_DIGITS} digits") from None


def _round(ctx: _Context, args: list[Value]) -> Value:
    value, ndigits = args
    assert isinstance(ndigits, int)  # checked when parsed: a whole number
    exponent = Decimal((0, (1,), -ndigits))
    return _elementwise(ctx, lambda v: _round_cell(v, exponent), value)


def _is_boolean(value: object) -> bool:
    return isinstance(value, (bool, np.bool_))


def _comparable(left: object, right: object, op: str) -> tuple[Any, Any]:
    """The two cells as values Python orders the way SQL does, or a _RowError naming the kinds."""
    x, y = _as_number(left), _as_number(right)
    if x is not None and y is not None:
        if isinstance(x, Decimal) or isinstance(y, Decimal):
            return _to_decimal(x), _to_decimal(y)
        return x, y
    if isinstance(left, str) and isinstance(right, str):
        return left, right
    if _is_boolean(left) and _is_boolean(right):
        return bool(left), bool(right)
    if isinstance(left, pd.Timestamp):
        left = left.to_pydatetime()
    if isinstance(right, pd.Timestamp):
        right = right.to_pydatetime()
    if isinstance(left, datetime) and isinstance(right, datetime):
        if (left.tzinfo is None) == (right.tzinfo is None):
            return left, right
        raise _RowError(f"'{op}' cannot compare a time with a time zone to one without; use a timezone step")
    if isinstance(left, date) and isinstance(right, date) and not isinstance(left, datetime) and not isinstance(right, datetime):
        return left, right
    raise _RowError(f"'{op}' needs two numbers, two texts, two times or two booleans, got {_kind(left)} and {_kind(right)}")


def _compare_cell(op: str, left: object, right: object) -> bool | None:
    if left is None or right is None:
        return None
    a, b = _comparable(left, right, op)
    if op == "=":
        return bool(a == b)
    if op == "<>":
        return bool(a != b)
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


_NUMPY_COMPARE = {"=": np.equal, "<>": np.not_equal, "<": np.less, "<=": np.less_equal, ">": np.greater, ">=": np.greater_equal}


def _compare(ctx: _Context, op: str, left: Value, right: Value) -> Value:
    arrays = isinstance(left, np.ndarray) or isinstance(right, np.ndarray)
    # An int64 beside a float64 would be compared as two floats, inexactly past 2**53.
    if arrays and _is_numpy_number(left) and _is_numpy_number(right) and _is_float(left) == _is_float(right):
        with np.errstate(invalid="ignore"):
            result = _object_array(_NUMPY_COMPARE[op](left, right).tolist())
        for side in (left, right):
            if _is_float(side):
                assert isinstance(side, np.ndarray)
                result[np.isnan(side)] = None
        return result
    return _elementwise(ctx, lambda a, b: _compare_cell(op, a, b), left, right)


def _truth(op: str, value: object) -> bool | None:
    if value is None:
        return None
    if _is_boolean(value):
        return bool(value)
    raise _RowError(f"'{op}' needs true or false, got {_kind(value)}")


def _logic_cell(op: str, *values: object) -> bool | None:
    # SQL's three values: false decides 'and' and true decides 'or', whatever else is NULL.
    truths = [_truth(op, v) for v in values]
    decisive = op == "or"
    if decisive in truths:
        return decisive
    if None in truths:
        return None
    return not decisive


def _not_cell(value: object) -> bool | None:
    truth = _truth("not", value)
    return None if truth is None else not truth


def _now(ctx: _Context, args: list[Value]) -> Value:
    if ctx.now is None:
        raise _problem(ctx.text, "now() is the start of a run; this expression is not evaluated in one")
    return ctx.now


def _if(ctx: _Context, args: tuple[_Node, ...]) -> Value:
    """Each branch is computed for its own rows only: a division by zero in the branch a row
    does not take is no error of that row."""
    condition, then, otherwise = args
    chosen = np.zeros(ctx.n, dtype=bool)
    failures: dict[int, str] = {}
    for row, cell in enumerate(_cells(condition.evaluate(ctx), ctx.n)):
        if cell is None:
            continue
        if _is_boolean(cell):
            chosen[row] = bool(cell)
        else:
            failures[row] = f"if() condition must be true or false, got {_kind(cell)}"
    ctx.flag_rows(failures)
    result = np.full(ctx.n, None, dtype=object)
    for mask, branch in ((chosen, then), (~chosen, otherwise)):
        rows = np.flatnonzero(mask)
        if rows.size == 0:
            continue
        child = ctx.subset(rows)
        result[rows] = _as_objects(branch.evaluate(child), rows.size)
        ctx.merge(child)
    return result


def _whole_number(low: int, high: int | None) -> Callable[[object], bool]:
    def check(value: object) -> bool:
        if type(value) is not int:
            return False
        return value >= low and (high is None or value <= high)

    return check


def _one_character(value: object) -> bool:
    return isinstance(value, str) and len(value) == 1


def _path_key(value: object) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100


@dataclass(frozen=True)
class _LiteralParam:
    """An argument that must be written as a literal, checked when the expression is parsed."""

    name: str
    description: str
    accepts: Callable[[object], bool]


@dataclass(frozen=True)
class Function:
    """A function callable from expressions."""

    signature: str
    min_args: int
    max_args: int | None
    apply: Callable[[_Context, list[Value]], Value] | None = field(repr=False)
    literals: dict[int, _LiteralParam] = field(default_factory=dict, repr=False)
    #: A function that decides itself which of its arguments to compute for which rows (if()).
    lazy: Callable[[_Context, tuple[_Node, ...]], Value] | None = field(default=None, repr=False)


_WIDTH = _LiteralParam("width", "a whole number from 0 to 1000", _whole_number(0, 1000))
_FILL = _LiteralParam("fill", "a one-character text literal such as '0'", _one_character)

FUNCTIONS: dict[str, Function] = {
    "concat": Function("concat(value, ...)", 1, None, _concat),
    "upper": Function("upper(value)", 1, 1, _upper),
    "lower": Function("lower(value)", 1, 1, _lower),
    "trim": Function("trim(value)", 1, 1, _trim),
    "lpad": Function("lpad(value, width, fill)", 3, 3, _lpad, {1: _WIDTH, 2: _FILL}),
    "rpad": Function("rpad(value, width, fill)", 3, 3, _rpad, {1: _WIDTH, 2: _FILL}),
    "coalesce": Function("coalesce(value, fallback, ...)", 2, None, _coalesce),
    "substr": Function(
        "substr(value, start, length)",
        3,
        3,
        _substr,
        {
            1: _LiteralParam("start", "a whole number of at least 1", _whole_number(1, None)),
            2: _LiteralParam("length", "a whole number of at least 0", _whole_number(0, None)),
        },
    ),
    "round": Function(
        "round(value, ndigits)",
        2,
        2,
        _round,
        {1: _LiteralParam("ndigits", "a whole number from 0 to 20", _whole_number(0, 20))},
    ),
    "str": Function("str(value)", 1, 1, _text),
    "json_get": Function(
        "json_get(value, key, ...)",
        2,
        9,
        _json_get,
        {i: _LiteralParam("key", "a text literal such as 'zh_CN'", _path_key) for i in range(1, 9)},
    ),
    "string": Function("string(value)", 1, 1, _text),
    "if": Function("if(condition, then, otherwise)", 3, 3, None, lazy=_if),
    "now": Function("now()", 0, 0, _now),
}
"""The whitelist. NULL semantics per function:

- ``concat(value, ...)``: text of the arguments joined; NULL if *any* argument
  is NULL (SQL semantics; wrap an argument in ``coalesce(x, '')`` to treat
  NULL as empty).
- ``upper``/``lower``/``trim(value)``: text of the value upper-cased,
  lower-cased, or stripped of leading and trailing whitespace (including the
  ideographic space U+3000); NULL stays NULL.
- ``lpad``/``rpad(value, width, fill)``: text padded on the left/right with the
  one-character ``fill`` to ``width`` characters (code points). Longer text is
  returned whole, not truncated, so no data is lost silently; NULL stays NULL.
- ``coalesce(value, fallback, ...)``: the first non-NULL argument, type kept;
  NULL only if all are NULL.
- ``substr(value, start, length)``: ``length`` characters of the text starting
  at 1-based ``start``; fewer if the text ends first; NULL stays NULL.
- ``round(value, ndigits)``: ``Decimal`` with exactly ``ndigits`` places,
  rounded half away from zero (floats are read through their repr, so
  ``round(2.675, 2)`` is ``2.68``); NULL stays NULL; text is a row error.
- ``str``/``string(value)``: the value's text; NULL stays NULL.
- ``json_get(value, key, ...)``: the text at a path of keys in a JSON document
  (PostgreSQL json/jsonb, MariaDB JSON, or text holding JSON), e.g. a translated
  name ``json_get(name, 'zh_CN')`` or ``json_get(attrs, 'size', 'width')``; a
  digit key indexes an array. Text values come unquoted, numbers as written,
  booleans as ``true``/``false``. NULL when the value is NULL or the path is
  absent or JSON ``null``; a row error when the text is not JSON or the path
  ends at an object or array.

- ``if(condition, then, otherwise)``: ``then`` where the condition is true,
  ``otherwise`` where it is false or NULL (as SQL's ``CASE WHEN``); each branch is
  computed only for its own rows, so ``if(qty = 0, 0, done / qty)`` has no
  division by zero. A condition that is not true, false or NULL is a row error.
- ``now()``: the start of the run on the target database's clock, one value
  (a UTC time with its time zone) for every row of the run; a ``timezone``
  step turns it into the target's local time.

``width``, ``fill``, ``start``, ``length``, ``ndigits`` and the keys of ``json_get`` must be literals.

Comparisons ``= <> < <= > >=`` (``==`` and ``!=`` also) take two numbers, two
texts (compared by code point), two times of the same kind (both with or both
without a time zone), two dates or two booleans, and give true, false or NULL
(NULL when either side is NULL); other pairs are row errors. ``and``, ``or`` and
``not`` take true, false or NULL with SQL's three-valued logic (``false and
NULL`` is false, ``true or NULL`` is true); both sides are always computed.
"""

_ALLOWED_FUNCTIONS = ", ".join(sorted(FUNCTIONS))
_ALLOWED_FORMS = (
    "allowed: column names, text and number literals, + - * /, unary -, comparisons (= <> < <= > >=), "
    f"and, or, not, and calls of {_ALLOWED_FUNCTIONS}"
)

_OPERATORS: dict[type[ast.operator], str] = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.Pow: "**",
    ast.MatMult: "@",
    ast.LShift: "<<",
    ast.RShift: ">>",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.BitAnd: "&",
}
_ALLOWED_OPERATORS = {"+", "-", "*", "/"}

_UNARY_OPERATORS: dict[type[ast.unaryop], str] = {
    ast.USub: "-",
    ast.UAdd: "+",
    ast.Not: "not",
    ast.Invert: "~",
}

_FORBIDDEN_FORMS: dict[type[ast.AST], str] = {
    ast.Attribute: "attribute access",
    ast.Subscript: "indexing",
    ast.Slice: "slicing",
    ast.IfExp: "conditional expression (write if(condition, then, otherwise))",
    ast.Lambda: "lambda",
    ast.JoinedStr: "f-string",
    ast.FormattedValue: "f-string",
    ast.Starred: "starred argument",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "generator expression",
    ast.List: "list",
    ast.Tuple: "tuple",
    ast.Set: "set",
    ast.Dict: "dict",
    ast.NamedExpr: "assignment expression",
}


class _Node:
    """A checked expression tree node."""

    def evaluate(self, ctx: _Context) -> Value:
        raise NotImplementedError


@dataclass(frozen=True)
class _Column(_Node):
    name: str

    def evaluate(self, ctx: _Context) -> Value:
        return ctx.column(self.name)


@dataclass(frozen=True)
class _Literal(_Node):
    value: str | int | Decimal

    def evaluate(self, ctx: _Context) -> Value:
        return self.value


@dataclass(frozen=True)
class _Arithmetic(_Node):
    op: str
    left: _Node
    right: _Node

    def evaluate(self, ctx: _Context) -> Value:
        return _arithmetic(ctx, self.op, self.left.evaluate(ctx), self.right.evaluate(ctx))


@dataclass(frozen=True)
class _Negate(_Node):
    operand: _Node

    def evaluate(self, ctx: _Context) -> Value:
        return _negate(ctx, self.operand.evaluate(ctx))


@dataclass(frozen=True)
class _Call(_Node):
    name: str
    args: tuple[_Node, ...]

    def evaluate(self, ctx: _Context) -> Value:
        function = FUNCTIONS[self.name]
        if function.lazy is not None:
            return function.lazy(ctx, self.args)
        assert function.apply is not None  # a function is either lazy or applied to its values
        return function.apply(ctx, [arg.evaluate(ctx) for arg in self.args])


_COMPARISONS: dict[type[ast.cmpop], str] = {
    ast.Eq: "=", ast.NotEq: "<>", ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">=",
}


@dataclass(frozen=True)
class _Comparison(_Node):
    op: str
    left: _Node
    right: _Node

    def evaluate(self, ctx: _Context) -> Value:
        return _compare(ctx, self.op, self.left.evaluate(ctx), self.right.evaluate(ctx))


@dataclass(frozen=True)
class _Logic(_Node):
    op: str
    operands: tuple[_Node, ...]

    def evaluate(self, ctx: _Context) -> Value:
        values = [operand.evaluate(ctx) for operand in self.operands]
        return _elementwise(ctx, lambda *cells: _logic_cell(self.op, *cells), *values)


@dataclass(frozen=True)
class _Not(_Node):
    operand: _Node

    def evaluate(self, ctx: _Context) -> Value:
        return _elementwise(ctx, _not_cell, self.operand.evaluate(ctx))


class _Builder:
    """Turns a Python AST into _Node objects, rejecting every form outside the language."""

    def __init__(self, text: str, source: str):
        self.text = text
        self.source = source
        self.columns: set[str] = set()

    def fail(self, message: str) -> ExpressionError:
        return _problem(self.text, message)

    def segment(self, node: ast.AST) -> str:
        shown = ast.get_source_segment(self.source, node) or type(node).__name__
        return shown if len(shown) <= 60 else shown[:57] + "..."

    def build(self, node: ast.expr, depth: int) -> _Node:
        if depth > MAX_DEPTH:
            raise self.fail(f"nests deeper than {MAX_DEPTH} levels")
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.Constant):
            return _Literal(self.constant(node))
        if isinstance(node, ast.BinOp):
            return self.binary(node, depth)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, depth)
        if isinstance(node, ast.Call):
            return self.call(node, depth)
        if isinstance(node, ast.Compare):
            return self.comparison(node, depth)
        if isinstance(node, ast.BoolOp):
            op = "and" if isinstance(node.op, ast.And) else "or"
            return _Logic(op, tuple(self.build(value, depth + 1) for value in node.values))
        form = _FORBIDDEN_FORMS.get(type(node), type(node).__name__)
        raise self.fail(f"{form} {self.segment(node)!r} is not allowed; {_ALLOWED_FORMS}")

    def name(self, node: ast.Name) -> _Column:
        written = ast.get_source_segment(self.source, node)
        if written != node.id:
            # Python NFKC-normalises identifiers, so 'ｑｔｙ' would silently read column 'qty'.
            raise self.fail(
                f"column name {written!r} is not a plain identifier (Python reads it as {node.id!r})"
            )
        self.columns.add(node.id)
        return _Column(node.id)

    def constant(self, node: ast.Constant) -> str | int | Decimal:
        value = node.value
        if isinstance(value, bool) or value is None or value is Ellipsis:
            raise self.fail(f"constant {self.segment(node)} is not allowed; only text and numbers are")
        if isinstance(value, (str, int)):
            return value
        if isinstance(value, float):
            return self.decimal_literal(node, value)
        raise self.fail(f"literal {self.segment(node)} is not allowed; only text and numbers are")

    def decimal_literal(self, node: ast.Constant, value: float) -> Decimal:
        # The literal's own text is exact even beyond float precision; repr is the fallback.
        written = ast.get_source_segment(self.source, node)
        try:
            number = Decimal(written) if written else Decimal(repr(value))
        except InvalidOperation:
            number = Decimal(repr(value))
        if not number.is_finite():
            raise self.fail(f"number {self.segment(node)} is out of range")
        return number

    def binary(self, node: ast.BinOp, depth: int) -> _Arithmetic:
        op = _OPERATORS.get(type(node.op), type(node.op).__name__)
        if op not in _ALLOWED_OPERATORS:
            raise self.fail(f"operator '{op}' in {self.segment(node)!r} is not allowed; allowed: + - * /")
        return _Arithmetic(op, self.build(node.left, depth + 1), self.build(node.right, depth + 1))

    def comparison(self, node: ast.Compare, depth: int) -> _Comparison:
        if len(node.ops) > 1:
            raise self.fail(f"chained comparison {self.segment(node)!r} is not allowed; join two with 'and'")
        op = _COMPARISONS.get(type(node.ops[0]))
        if op is None:
            raise self.fail(f"comparison {self.segment(node)!r} is not allowed; allowed: = <> < <= > >=")
        return _Comparison(op, self.build(node.left, depth + 1), self.build(node.comparators[0], depth + 1))

    def unary(self, node: ast.UnaryOp, depth: int) -> _Node:
        if isinstance(node.op, ast.Not):
            return _Not(self.build(node.operand, depth + 1))
        if not isinstance(node.op, ast.USub):
            op = _UNARY_OPERATORS.get(type(node.op), type(node.op).__name__)
            raise self.fail(f"unary '{op}' in {self.segment(node)!r} is not allowed; only '-' and 'not' are")
        operand = self.build(node.operand, depth + 1)
        if isinstance(operand, _Literal) and isinstance(operand.value, Decimal):
            # copy_negate is exact at any length; zero stays unsigned as in SQL.
            return _Literal(operand.value.copy_negate() if operand.value else operand.value)
        if isinstance(operand, _Literal) and isinstance(operand.value, int):
            return _Literal(-operand.value)
        return _Negate(operand)

    def call(self, node: ast.Call, depth: int) -> _Call:
        if not isinstance(node.func, ast.Name):
            raise self.fail(
                f"only calls of a function by name are allowed, not {self.segment(node.func)!r}; "
                f"allowed functions: {_ALLOWED_FUNCTIONS}"
            )
        name = CONDITIONAL_NAMES.get(node.func.id, node.func.id)
        function = FUNCTIONS.get(name)
        if function is None:
            raise self.fail(f"function {name!r} is not allowed; allowed: {_ALLOWED_FUNCTIONS}")
        if node.keywords:
            raise self.fail(
                f"keyword argument {self.segment(node.keywords[0])!r} is not allowed; "
                f"pass arguments by position: {function.signature}"
            )
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.fail(f"starred argument {self.segment(arg)!r} is not allowed")
        self.check_arity(name, function, len(node.args))
        args = tuple(self.build(arg, depth + 1) for arg in node.args)
        for position, param in function.literals.items():
            if position >= len(args):
                continue
            built = args[position]
            if not (isinstance(built, _Literal) and param.accepts(built.value)):
                raise self.fail(
                    f"{name}() {param.name} must be {param.description}, "
                    f"got {self.segment(node.args[position])!r}"
                )
        return _Call(name, args)

    def check_arity(self, name: str, function: Function, count: int) -> None:
        low, high = function.min_args, function.max_args
        if low <= count and (high is None or count <= high):
            return
        if high is None:
            expected = f"at least {low}"
        elif low == high:
            expected = f"exactly {low}"
        else:
            expected = f"{low} to {high}"
        plural = "" if expected.endswith(" 1") else "s"
        raise self.fail(f"{name}() takes {expected} argument{plural} ({function.signature}), got {count}")


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression. Build it with :func:`parse_expression`."""

    text: str
    columns: frozenset[str]
    _root: _Node = field(repr=False, compare=False)

    def evaluate(self, frame: pd.DataFrame, now: datetime | None = None) -> EvalResult:
        """Compute the expression for every row of ``frame``; ``now`` is what ``now()`` gives
        (the run's start on the target's clock).

        Returns values and per-row errors on ``frame``'s index (see
        :class:`EvalResult`). Raises :class:`ExpressionError` only if a
        referenced column is missing; bad data becomes row errors.
        """
        missing = sorted(self.columns - set(frame.columns))
        if missing:
            names = ", ".join(repr(name) for name in missing)
            noun = "column" if len(missing) == 1 else "columns"
            available = ", ".join(str(c) for c in frame.columns[:30]) or "none"
            if len(frame.columns) > 30:
                available += ", ..."
            raise _problem(self.text, f"{noun} {names} not in the data (columns: {available})")
        ctx = _Context(frame, self.text, now)
        values = _as_objects(self._root.evaluate(ctx), ctx.n)
        # Float arithmetic can still produce NaN (inf - inf); the contract is None.
        values[ctx.failed | _missing(values)] = None
        return EvalResult(
            values=pd.Series(values, index=frame.index, dtype=object),
            errors=pd.Series(ctx.errors, index=frame.index, dtype=object),
        )


#: What ``if`` is called in the Python syntax the text is parsed as (``if`` is a keyword there).
CONDITIONAL = "_if_"
CONDITIONAL_NAMES = {CONDITIONAL: "if"}


def python_syntax(source: str) -> str:
    """``source`` in the Python syntax :mod:`ast` reads: SQL's ``=`` and ``<>`` as ``==`` and
    ``!=``, and the call ``if(`` as :data:`CONDITIONAL`. Text literals are left as written.

    Raises SyntaxError (tokenize's TokenError as one) for text that does not tokenize."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except tokenize.TokenError as exc:
        raise SyntaxError(str(exc.args[0])) from None
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(position: tuple[int, int]) -> int:
        return starts[position[0] - 1] + position[1]

    edits: list[tuple[int, int, str]] = []
    for i, token in enumerate(tokens):
        after = tokens[i + 1] if i + 1 < len(tokens) else None
        if token.type == tokenize.OP and token.string == "=":
            edits.append((offset(token.start), offset(token.end), "=="))
        elif token.type == tokenize.OP and token.string == "<" and after is not None and after.string == ">" and after.start == token.end:
            edits.append((offset(token.start), offset(after.end), "!="))
        elif token.type == tokenize.NAME and token.string == "if" and after is not None and after.string == "(":
            edits.append((offset(token.start), offset(token.end), CONDITIONAL))
    for start, end, replacement in reversed(edits):
        source = source[:start] + replacement + source[end:]
    return source


def syntax_tree(text: str) -> ast.expr:
    """The Python syntax tree of an expression's text (see :func:`python_syntax`); the SQL
    compiler reads the tree of an expression :func:`parse_expression` accepted."""
    return ast.parse(python_syntax(text.strip()), mode="eval").body


def parse_expression(text: str) -> Expression:
    """Parse and check ``text``; the result only ever runs whitelisted operations.

    Raises :class:`ExpressionError`, quoting the expression and naming what is
    not allowed, for anything outside the language, text longer than
    :data:`MAX_LENGTH` characters or nested deeper than :data:`MAX_DEPTH`.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"expression must be text, got {type(text).__name__} {text!r}")
    if len(text) > MAX_LENGTH:
        raise _problem(text, f"is {len(text)} characters long; the limit is {MAX_LENGTH}")
    if not text.strip():
        raise ExpressionError("expression is empty")
    try:
        source = python_syntax(text.strip())
        tree = ast.parse(source, mode="eval")
    except SyntaxError as exc:
        where = f" at column {exc.offset}" if exc.offset else ""
        raise _problem(text, f"invalid syntax{where}: {exc.msg}") from None
    except (ValueError, RecursionError, MemoryError) as exc:
        raise _problem(text, f"cannot be parsed: {exc}") from None
    builder = _Builder(text, source)
    root = builder.build(tree.body, depth=1)
    return Expression(text=text, columns=frozenset(builder.columns), _root=root)
