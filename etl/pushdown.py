"""The SQL path: transform inside the target database instead of in Python.

When the target is PostgreSQL, the source's rows travel as COPY data straight into a temporary
``raw`` table on the target (PostgreSQL writes its own COPY, binary where the types allow; any
other source writes COPY text, MariaDB formatting it on its server), and one INSERT ... SELECT
applies the flow's column rules there, so no value passes through Python's transform. The result
lands in the same staging table the Python path fills, with the same rows rejected for the same
reasons; duplicate resolution, merge, quarantine release and delete detection are shared.

Crosswalks keep one implementation: their entries, or the distinct codes a column holds, are
translated by etl.crosswalk and joined as a temporary table. A flow whose rules this module cannot
express exactly (``cast``, text arithmetic, types without an exact SQL twin) is reported as
unsupported and runs on the Python path; :func:`unsupported_reason` says why.
"""

from __future__ import annotations

import ast
import fcntl
import io
import os
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    Numeric,
    SmallInteger,
    Table,
    Text,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    null,
    or_,
    select,
    text,
    union_all,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import CompileError
from sqlalchemy.sql import sqltypes
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.util import ClauseAdapter

from etl.config import ColumnSpec, Flow
from etl.crosswalk import Crosswalk
from etl.dialects import Dialect, dialect_for
from etl.dialects.base import RETRY, SEQ, SOURCE_KEY, copy_text, driver_cursor
from etl.dialects.postgresql import COPY_BLOCK, render
from etl.expressions import TRIM_CHARS
from etl.pipeline_tables import SOURCE_KEY_LENGTH, lookback_loaded
from etl.schema import ColumnType, column_type
from etl.transform import Reject

REASON = "_reason"


class Unsupported(Exception):
    """A rule the SQL path cannot express exactly; the flow runs on the Python path."""


@dataclass
class Value:
    """A compiled SQL value, its kind, and the row failures it carries (condition, reason)."""

    sql: ColumnElement[Any]
    kind: str
    failures: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = field(default_factory=list)
    #: The most characters a string value can hold, where the source types and crosswalks tell:
    #: a length check it cannot fail is left out (each costs a tenth of a second a million rows).
    longest: int | None = None


def _kind(ct: ColumnType) -> str:
    if ct.kind == "timestamp":
        return "timestamptz" if ct.tz_aware else "timestamp"
    return ct.kind


def _text_of(value: Value) -> ColumnElement[Any]:
    if value.kind == "string":
        return value.sql
    if value.kind in ("integer", "decimal"):
        return cast(value.sql, Text)
    raise Unsupported(f"text of a {value.kind} value differs between Python and SQL")


def _longest_of(values: list[Value], combine: Any) -> int | None:
    """``combine`` (sum for a concatenation, max for a choice) of the values' longest, if each
    is a string whose longest is known."""
    if any(v.kind != "string" or v.longest is None for v in values):
        return None
    return int(combine(v.longest for v in values))


def _lit_text(s: str) -> ColumnElement[Any]:
    return literal(s, Text)


class _Compiler:
    """Turns one flow's column rules into SQL over the raw table and the crosswalk joins."""

    def __init__(
        self, flow: Flow, raw: Table, source_types: dict[str, ColumnType], target_types: dict[str, ColumnType],
        crosswalks: dict[str, Crosswalk], joined: Any = None,
    ):
        self.flow = flow
        self.crosswalks = crosswalks
        self.raw = raw
        #: Second pass: the raw rows beside their crosswalk lookups (see :func:`_with_lookups`).
        self.joined = joined
        self.resolved: list[tuple[ColumnElement[Any], ColumnElement[Any]]] = []
        self.source_types = source_types
        self.target_types = target_types
        #: (crosswalk name, side, cleaned code expression, has a rule) per join, in order.
        self.lookups: list[tuple[str, str, ColumnElement[Any], bool]] = []
        self.lookup_tables: list[Table] = []
        #: (crosswalk, side, code as SQL) -> position in lookups / resolved.
        self.lookup_index: dict[tuple[str, str, str], int] = {}
        #: (target column, source column, zone) of naive local times to check for DST gaps.
        self.local_times: list[tuple[str, str, str]] = []

    def source(self, name: str) -> Value:
        rows = self.joined if self.joined is not None else self.raw
        source_type = self.source_types[name]
        return Value(rows.c[name], _kind(source_type), longest=source_type.length if source_type.kind == "string" else None)

    def lookup(self, name: str, side: str, code: ColumnElement[Any]) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """(mapped code, factor) of ``code`` through crosswalk ``name`` towards ``side``, from a
        joined temp table that etl.crosswalk filled (see :func:`_fill_lookups`).

        One join per distinct lookup: two quantities converted by the same unit column share
        it (each join costs about a second a million rows)."""
        try:
            key = (name, side, str(code.compile(dialect=postgresql.dialect(), compile_kwargs={"literal_binds": True})))
        except CompileError:  # a value without a literal form: its own join
            key = (name, side, f"#{len(self.lookup_index)}")
        index = self.lookup_index.get(key)
        if index is not None:
            return self.resolved[index]
        index = self.lookup_index[key] = len(self.lookup_index)
        if self.joined is not None:
            self.resolved.append((self.joined.c[f"_m{index}"], self.joined.c[f"_f{index}"]))
            return self.resolved[index]
        table = Table(
            f"etl_xw_{index}", MetaData(),
            # No key index: codes arrive unique (dictionary keys) and are only ever hash-joined.
            Column("code", Text, nullable=False), Column("mapped", Text), Column("factor", Numeric),
            prefixes=["TEMPORARY"], postgresql_on_commit="DROP",
        )
        self.lookups.append((name, side, code, self.crosswalks[name].rule is not None))
        self.lookup_tables.append(table)
        self.resolved.append((table.c.mapped, table.c.factor))
        return self.resolved[index]

    def expression(self, node: ast.AST, spec: ColumnSpec) -> Value:
        if isinstance(node, ast.Name):
            return self.source(node.id)
        if isinstance(node, ast.Constant):
            if isinstance(node.value, str):
                return Value(_lit_text(node.value), "string", longest=len(node.value))
            if isinstance(node.value, int):
                return Value(literal(node.value, Numeric), "integer")
            return Value(literal(Decimal(repr(node.value)), Numeric), "decimal")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.expression(node.operand, spec)
            self._numeric(inner)
            return Value(-inner.sql, inner.kind, inner.failures)
        if isinstance(node, ast.BinOp):
            return self._arithmetic(node, spec)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self._call(node.func.id, node.args, spec)
        raise Unsupported(f"expression node {type(node).__name__}")

    def _numeric(self, value: Value) -> None:
        if value.kind not in ("integer", "decimal"):
            raise Unsupported(f"arithmetic on a {value.kind} value")

    def _arithmetic(self, node: ast.BinOp, spec: ColumnSpec) -> Value:
        left, right = self.expression(node.left, spec), self.expression(node.right, spec)
        self._numeric(left)
        self._numeric(right)
        failures = left.failures + right.failures
        a, b = cast(left.sql, Numeric), cast(right.sql, Numeric)
        both_int = left.kind == right.kind == "integer"
        if isinstance(node.op, ast.Add):
            return Value(a + b, "integer" if both_int else "decimal", failures)
        if isinstance(node.op, ast.Sub):
            return Value(a - b, "integer" if both_int else "decimal", failures)
        if isinstance(node.op, ast.Mult):
            return Value(a * b, "integer" if both_int else "decimal", failures)
        if isinstance(node.op, ast.Div):
            zero = b == 0
            reason = _lit_text(f"column {spec.target}: division by zero in expr {spec.expr!r}")
            return Value(a / func.nullif(b, 0), "decimal", failures + [(zero, reason)])
        raise Unsupported(f"operator {type(node.op).__name__}")

    def _call(self, name: str, nodes: list[ast.expr], spec: ColumnSpec) -> Value:
        literal_args = [n.value for n in nodes[1:] if isinstance(n, ast.Constant)]
        if name in ("lpad", "rpad", "substr", "round"):
            head = self.expression(nodes[0], spec)
            if name == "round":
                self._numeric(head)
                return Value(func.round(cast(head.sql, Numeric), literal_args[0]), "decimal", head.failures)
            body = _text_of(head)
            if name == "substr":
                return Value(func.substr(body, literal_args[0], literal_args[1]), "string", head.failures)
            width, fill = literal_args
            padded = func.lpad(body, width, fill) if name == "lpad" else func.rpad(body, width, fill)
            # SQL's lpad cuts longer text to the width; ours never cuts.
            return Value(case((func.char_length(body) >= width, body), else_=padded), "string", head.failures)
        if name == "json_get":
            return self._json_get(self.expression(nodes[0], spec), [str(k) for k in literal_args], spec)
        args = [self.expression(n, spec) for n in nodes]
        failures = [f for a in args for f in a.failures]
        if name == "concat":
            joined = _text_of(args[0])
            for arg in args[1:]:
                joined = joined.op("||")(_text_of(arg))
            return Value(joined, "string", failures, _longest_of(args, sum))
        if name in ("upper", "lower", "trim", "str", "string"):
            body = _text_of(args[0])
            rules: dict[str, Callable[[ColumnElement[Any]], ColumnElement[Any]]] = {
                "upper": func.upper, "lower": func.lower, "trim": lambda t: func.btrim(t, TRIM_CHARS),
                "str": lambda t: t, "string": lambda t: t,
            }
            sql = rules[name](body)
            # upper('ß') may be 'SS': only trimming and taking a string as it is keep the bound.
            kept = args[0].longest if name in ("trim", "str", "string") else None
            return Value(sql, "string", failures, kept)
        if name == "coalesce":
            kinds = {a.kind for a in args}
            if len(kinds) != 1:
                raise Unsupported("coalesce of values of different kinds")
            return Value(func.coalesce(*[a.sql for a in args]), kinds.pop(), failures, _longest_of(args, max))
        raise Unsupported(f"function {name}")

    def _json_get(self, document: Value, keys: list[str], spec: ColumnSpec) -> Value:
        """``#>>`` on a json/jsonb column; JSON held in a text column is parsed in Python only."""
        if document.kind != "json":
            raise Unsupported(f"json_get on a {document.kind} value (only json/jsonb columns have a SQL twin)")
        binary = isinstance(document.sql.type, postgresql.JSONB)
        path = [_lit_text(k) for k in keys]
        extract, extract_text, typeof = (
            (func.jsonb_extract_path, func.jsonb_extract_path_text, func.jsonb_typeof) if binary
            else (func.json_extract_path, func.json_extract_path_text, func.json_typeof)
        )
        nested = typeof(extract(document.sql, *path)).in_(["object", "array"])
        reason = _lit_text(
            f"column {spec.target}: json_get(): the path leads to an object or array, not a value in expr {spec.expr!r}"
        )
        return Value(extract_text(document.sql, *path), "string", document.failures + [(nested, reason)])

    def column(self, spec: ColumnSpec) -> Value:
        """The target value of one column and its failures, mirroring etl.transform step by step."""
        return self.finish(spec, self.before_coercion(spec))

    def before_coercion(self, spec: ColumnSpec) -> Value:
        """The column's value up to (not including) the conversion into the target's type."""
        target = self.target_types[spec.target]
        if spec.cast is not None:
            raise Unsupported("cast")
        if spec.source is not None:
            value = self.source(spec.source)
        elif spec.expr is not None:
            value = self.expression(ast.parse(spec.expr.strip(), mode="eval").body, spec)
        else:
            value = self._constant(spec.value, target)
        for step in spec.clean:
            if value.kind == "string":
                value = Value(
                    func.btrim(value.sql, TRIM_CHARS) if step == "trim" else getattr(func, step)(value.sql),
                    "string", value.failures, value.longest if step == "trim" else None,
                )
        if spec.crosswalk is not None:
            value = self._crosswalk(spec, value)
        if spec.convert_unit is not None:
            value = self._convert_unit(spec, value)
        if spec.timezone is not None:
            value = self._timezone(spec, value, target)
        if spec.default is not None:
            default = self._constant(spec.default, target)
            value = Value(func.coalesce(value.sql, default.sql), value.kind, value.failures, _longest_of([value, default], max))
        return value

    def finish(self, spec: ColumnSpec, value: Value) -> Value:
        """Convert into the target's type and check that a required value is there."""
        target = self.target_types[spec.target]
        value = self._coerce(spec, value, target)
        if spec.required or spec.target in self.flow.key or not target.nullable:
            label = "natural key column" if spec.target in self.flow.key else "required column"
            earlier = or_(*[c for c, _ in value.failures]) if value.failures else None
            is_null = value.sql.is_(None) if earlier is None else and_(value.sql.is_(None), ~func.coalesce(earlier, False))
            value.failures.append((is_null, _lit_text(f"{label} {spec.target} is NULL")))
        return value

    def _constant(self, constant: Any, target: ColumnType) -> Value:
        if constant is None:
            return Value(null(), target.kind)
        if isinstance(constant, bool):
            return Value(literal(constant), "boolean")
        if isinstance(constant, int):
            return Value(literal(constant, Numeric), "integer")
        if isinstance(constant, float):
            return Value(literal(Decimal(repr(constant)), Numeric), "decimal")
        return Value(_lit_text(str(constant)), "string", longest=len(str(constant)))

    def _crosswalk(self, spec: ColumnSpec, value: Value) -> Value:
        used = self.flow.crosswalk_side(spec)
        assert used is not None  # called only for a column with a crosswalk
        name, side = used
        code = _text_of(value)
        mapped, _ = self.lookup(name, side, code)
        missing = and_(code.isnot(None), mapped.is_(None))
        # As etl.transform shows it: text quoted, a number (an id) as written.
        shown = func.quote_literal(code) if value.kind == "string" else code
        reason = (
            _lit_text(f"crosswalk {name!r} has no {side.upper()} code for ")
            + shown + _lit_text(f" (column {spec.target})")
        )
        crosswalk = self.crosswalks[name]
        if side in crosswalk.whole_number_sides:
            # Surrogate ids from a lookup: every mapped code is an integer's text.
            return Value(cast(mapped, BigInteger), "integer", value.failures + [(missing, reason)])
        # A table-only crosswalk's codes are all known here; a rule's or a lookup's are not.
        fixed = crosswalk.rule is None and crosswalk.lookup_spec is None
        longest = max((len(code) for code, _ in crosswalk.entries(side).values()), default=0) if fixed else None
        return Value(mapped, "string", value.failures + [(missing, reason)], longest)

    def _convert_unit(self, spec: ColumnSpec, value: Value) -> Value:
        conv = spec.convert_unit
        assert conv is not None
        self._numeric(value)
        unit = self.source(conv.unit_column)
        unit_code = _text_of(unit)
        for step in conv.clean:
            unit_code = func.btrim(unit_code, TRIM_CHARS) if step == "trim" else getattr(func, step)(unit_code)
        _, factor = self.lookup(conv.crosswalk, self.flow.unit_side(), unit_code)
        missing = and_(value.sql.isnot(None), factor.is_(None))
        reason = (
            _lit_text(f"crosswalk {conv.crosswalk!r} has no factor for unit ")
            + func.quote_literal(unit_code) + _lit_text(f" (column {spec.target})")
        )
        number = cast(value.sql, Numeric)
        converted = number / factor if conv.inverse else number * factor
        return Value(converted, "decimal", value.failures + [(missing, reason)])

    def _timezone(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        rule = spec.timezone
        assert rule is not None
        instant: ColumnElement[Any]
        if value.kind == "timestamp":
            if spec.source is None:
                raise Unsupported("time zone rule on a computed timestamp")
            instant = func.timezone(rule.from_, value.sql)
            self.local_times.append((spec.target, spec.source, rule.from_))
        elif value.kind == "timestamptz":
            instant = value.sql
        else:
            raise Unsupported(f"time zone rule on a {value.kind} value")
        if target.tz_aware:
            return Value(instant, "timestamptz", value.failures)
        return Value(func.timezone(rule.to, instant), "timestamp", value.failures)

    def _coerce(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        kind, sql = target.kind, value.sql
        label = f"column {spec.target}: value "
        if kind == "string":
            body = _text_of(value)
            # Only string values carry a bound (Value.longest).
            if target.length is None or (value.longest is not None and value.longest <= target.length):
                return Value(body, "string", value.failures, value.longest)
            too_long = func.char_length(body) > target.length
            reason = _lit_text(label) + func.quote_literal(func.left(body, 57)) + _lit_text(": ") + \
                cast(func.char_length(body), Text) + _lit_text(f" characters, column holds {target.length}")
            return Value(body, "string", value.failures + [(too_long, reason)])
        if kind == "decimal":
            self._numeric(value)
            rounded = func.round(cast(sql, Numeric), target.scale) if target.scale is not None else cast(sql, Numeric)
            # Compared as numbers: casting every value to text to spot these costs a second a million rows.
            infinite = cast(sql, Numeric).in_([literal_column(f"'{v}'::numeric") for v in ("Infinity", "-Infinity", "NaN")])
            failures = list(value.failures) + [(infinite, _lit_text(label) + cast(sql, Text) + _lit_text(": is not a finite number"))]
            if target.precision is not None:
                limit = Decimal(10) ** (target.precision - (target.scale or 0))
                over = and_(~infinite, func.abs(rounded) >= limit)
                reason = _lit_text(label) + cast(sql, Text) + _lit_text(f": overflows NUMERIC({target.precision},{target.scale or 0})")
                failures.append((over, reason))
            return Value(rounded, "decimal", failures)
        if kind == "integer":
            self._numeric(value)
            if value.kind == "integer":
                return Value(cast(sql, BigInteger), "integer", value.failures)
            fraction = cast(sql, Numeric) != func.trunc(cast(sql, Numeric))
            reason = _lit_text(label) + cast(sql, Text) + _lit_text(": is not a whole number")
            return Value(cast(sql, BigInteger), "integer", value.failures + [(fraction, reason)])
        if kind == "timestamp":
            if value.kind == "timestamp" and not target.tz_aware:
                return value
            if value.kind == "timestamptz" and target.tz_aware:
                return value
            if value.kind == "timestamptz":
                return Value(func.timezone("UTC", sql), "timestamp", value.failures)
            reason = _lit_text(label + "has no time zone; add a timezone rule to the column")
            return Value(sql, "timestamp", value.failures + [(sql.isnot(None), reason)])
        if kind in ("boolean", "date") and value.kind == kind:
            return value
        raise Unsupported(f"a {value.kind} value into a {kind} column")


def _transitions(zone_name: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime, str]]:
    """Wall-clock intervals of the zone between start and end that do not exist (a DST gap) or
    exist twice (an overlap), as (from, to, what)."""
    zone = ZoneInfo(zone_name)
    found = []
    hour = timedelta(hours=1)
    t = start.replace(minute=0, second=0, microsecond=0)
    while t <= end:
        before = t.replace(tzinfo=zone).utcoffset()
        after = (t + hour).replace(tzinfo=zone).utcoffset()
        if before is not None and after is not None and before != after:
            utc_change = next(
                (t + timedelta(minutes=m)).replace(tzinfo=zone).astimezone(ZoneInfo("UTC"))
                for m in range(1, 61)
                if (t + timedelta(minutes=m)).replace(tzinfo=zone).utcoffset() == after
            )
            wall_after = utc_change.astimezone(zone).replace(tzinfo=None)
            shift = after - before
            # Either way the odd wall-clock hour is the one just before the new offset starts.
            what = "does not exist" if shift > timedelta(0) else "is ambiguous"
            what += " in {zone} (clocks skip it)" if shift > timedelta(0) else " in {zone} (clocks repeat it)"
            found.append((wall_after - abs(shift), wall_after, what))
        t += hour
    return found


def unsupported_reason(
    flow: Flow, source: Table, target: Table, source_dialect: str, target_dialect: str,
    crosswalks: dict[str, Crosswalk],
) -> str | None:
    """Why ``flow`` cannot take the SQL path, or None if it can."""
    if flow.load.transform == "python":
        return "the flow asks for the Python path"
    if flow.lines is not None:
        return "a flow with lines stages each document together with its lines, in Python"
    if target_dialect != "postgresql":
        return "the SQL path needs PostgreSQL as the target"
    try:
        raw = raw_table(flow, source, source_dialect)
        compiler = _Compiler(flow, raw, _types(source), _types(target), crosswalks)
        for spec in flow.columns:
            compiler.column(spec)
    except Unsupported as exc:
        return str(exc)
    return None


def _types(table: Table) -> dict[str, ColumnType]:
    return {c.name: column_type(c.type, bool(c.nullable)) for c in table.columns}


def raw_table(flow: Flow, source: Table, source_dialect: str) -> Table:
    """The temporary table source rows are copied into: a PostgreSQL source's own column types,
    another's as their PostgreSQL twins (Unsupported for a type without one)."""
    columns = flow.source_columns()
    same = source_dialect == "postgresql"
    return Table(
        f"etl_raw_{flow.flow}", MetaData(),
        *[Column(c, source.c[c].type if same else _twin(source.c[c]), nullable=True) for c in columns],
        # Numbered by the source query (row_number), not by an identity column: drawing a
        # sequence value for every row costs a second a million rows.
        Column(SEQ, BigInteger, nullable=False),
        Column(RETRY, SmallInteger, nullable=False, server_default=text("0")),
        prefixes=["TEMPORARY"], postgresql_on_commit="DROP",
    )


def _twin(column: Column[Any]) -> sqltypes.TypeEngine[Any]:
    """The PostgreSQL type that holds every value of another database's ``column`` exactly, and
    reads the COPY text that database writes of it."""
    kind = column_type(column.type)
    if kind.kind == "string":
        return Text()
    if kind.kind == "integer":
        return BigInteger()
    if kind.kind == "decimal":
        return Numeric(kind.precision, kind.scale) if kind.precision else Numeric()
    if kind.kind == "timestamp":
        return sqltypes.DateTime(timezone=kind.tz_aware)
    if kind.kind == "date":
        return sqltypes.Date()
    raise Unsupported(f"source column {column.name} is {column.type}, which is copied into PostgreSQL only from PostgreSQL")


#: Types whose binary COPY form is the same built-in type on both servers (raw columns take the
#: source's own types). Anything else (enums, domains, arrays, extension types) travels as text.
_BINARY_SAFE = (
    sqltypes.Integer, sqltypes.Numeric, sqltypes.String, sqltypes.DateTime, sqltypes.Date,
    sqltypes.Time, sqltypes.Boolean, sqltypes.JSON, sqltypes.Uuid, postgresql.UUID,
)


def binary_copy_safe(table: Table, columns: list[str]) -> bool:
    """Whether ``columns`` can travel in COPY's binary format: parsing text costs more than
    the data's transport (about a third of the copy for timestamps and decimals)."""
    return all(
        isinstance(table.c[c].type, _BINARY_SAFE) and not isinstance(table.c[c].type, (sqltypes.Enum, sqltypes.ARRAY))
        for c in columns
    )


_F_SETPIPE_SZ = 1031  # Linux: a pipe of a megabyte hands over blocks, not 64 KiB slices


def copy_between(
    sconn: Connection, tconn: Connection, statement: Any, table_sql: str, columns_sql: str, binary: bool = False,
    source_dialect: Dialect | None = None,
) -> int:
    """Stream the rows of ``statement`` on the source, numbered (see Dialect.copy_out), into
    ``COPY table FROM STDIN`` on the target through an OS pipe; returns the rows copied.
    ``binary`` needs a PostgreSQL source and the same column types on both sides (see
    :func:`binary_copy_safe`).

    The source writes in blocks from its own thread; the pipe's buffered file objects take
    those calls in C, and the pipe's size bounds the memory in flight."""
    source_dialect = source_dialect or dialect_for(sconn)
    read_fd, write_fd = os.pipe()
    try:
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, COPY_BLOCK)
    except OSError:  # not Linux, or above the system's limit: the default size works, slower
        pass
    reader, writer = os.fdopen(read_fd, "rb", buffering=COPY_BLOCK), os.fdopen(write_fd, "wb", buffering=COPY_BLOCK)
    options = " (FORMAT binary)" if binary else ""
    failed: list[BaseException] = []

    def produce() -> None:
        try:
            source_dialect.copy_out(sconn, statement, writer, binary)
        except BrokenPipeError:  # the target side stopped reading: its own error is raised
            pass
        except BaseException as exc:  # raised in the caller's thread once the target side ends
            failed.append(exc)
        finally:
            try:
                writer.close()  # end of data for the target side
            except BrokenPipeError:  # the target side stopped reading: its error is raised
                pass

    thread = threading.Thread(target=produce, name="etl-copy-source", daemon=True)
    thread.start()
    target_cursor = driver_cursor(tconn)
    target_error: Exception | None = None
    try:
        target_cursor.copy_expert(f"COPY {table_sql} ({columns_sql}) FROM STDIN{options}", reader, size=COPY_BLOCK)
        rows = int(target_cursor.rowcount)
    except Exception as exc:
        target_error = exc
    finally:
        reader.close()  # a source still writing gets a broken pipe and stops
        thread.join()
        target_cursor.close()
    if failed:  # a source that failed is the cause (the target then saw the data end early)
        raise failed[0] from target_error
    if target_error is not None:
        raise target_error
    return rows


@dataclass
class StageOutcome:
    rows_read: int = 0
    rows_retried: int = 0
    #: Re-read rows set aside because the last run loaded them at the same cursor value.
    set_aside: int = 0
    staged: int = 0
    rejects: list[Reject] = field(default_factory=list)


def stage(
    flow: Flow, sconn: Connection, tconn: Connection, query: Any, source: Table, target: Table,
    staging: Table, crosswalks: dict[str, Crosswalk], retries: Iterator[list[dict[str, Any]]],
    parent_tables: dict[str, Table], set_aside_loaded: bool = False,
) -> StageOutcome:
    """Fill ``staging`` from the source through SQL; return counts and the rejected rows.

    ``set_aside_loaded``: fresh rows the last run loaded at the same cursor value (the lookback's
    re-reads, see :func:`remember_loaded`) leave the batch before the transform."""
    outcome = StageOutcome()
    source_dialect = dialect_for(sconn)
    raw = raw_table(flow, source, sconn.dialect.name)
    raw.create(tconn)
    prep = tconn.dialect.identifier_preparer
    columns = flow.source_columns()
    outcome.rows_read = copy_between(
        sconn, tconn, query, prep.format_table(raw), ", ".join(prep.quote(c) for c in [*columns, SEQ]),
        binary=source_dialect.copies_binary and binary_copy_safe(raw, columns), source_dialect=source_dialect,
    )
    for batch in retries:
        first = outcome.rows_read + outcome.rows_retried + 1
        tconn.execute(raw.insert(), [
            {**{c: p.get(c) for c in columns}, SEQ: first + i, RETRY: 1} for i, p in enumerate(batch)
        ])
        outcome.rows_retried += len(batch)
    if set_aside_loaded:
        outcome.set_aside = _set_aside_loaded(tconn, flow, raw)
    # No ANALYZE of the raw rows (half a second a million rows): every plan over them is a scan
    # hash-joined to small crosswalk tables, which the planner picks from the table's size alone.

    source_types, target_types = _types(source), _types(target)
    collector = _Compiler(flow, raw, source_types, target_types, crosswalks)
    for spec in flow.columns:
        collector.column(spec)
    _fill_lookups(tconn, collector, raw, crosswalks)
    rows = _with_lookups(raw, collector)
    compiler = _Compiler(flow, raw, source_types, target_types, crosswalks, joined=rows)
    local_failures = _local_time_failures(tconn, collector, raw, rows)
    before, values = _two_layers(flow, compiler, rows, local_failures)

    checked, outputs, reason = _checked_rows(flow, before, values)
    select_rows = select(
        *outputs, checked.c[SEQ], func.left(_source_key(flow, checked), SOURCE_KEY_LENGTH).label(SOURCE_KEY),
        checked.c[RETRY], reason.label(REASON),
    ).select_from(checked)
    tconn.execute(text(f"ALTER TABLE {prep.format_table(staging)} ADD COLUMN {prep.quote(REASON)} TEXT"))
    staging.append_column(Column(REASON, Text))
    insert_columns = [spec.target for spec in flow.columns] + [SEQ, SOURCE_KEY, RETRY, REASON]
    tconn.execute(staging.insert().from_select(insert_columns, select_rows))

    for parent in flow.parents:
        table = parent_tables[parent.table]
        child = staging.c[parent.column]
        missing = ~select(1).select_from(table).where(table.c[parent.key] == child).exists()
        tconn.execute(
            staging.update()
            .where(staging.c[REASON].is_(None), child.isnot(None), missing)
            .values({REASON: _lit_text(f"parent {parent.table}.{parent.key} = ") + func.quote_literal(child)
                     + _lit_text(f" not on the target yet (column {parent.column}); retried when it arrives")})
        )

    rejected = tconn.execute(
        select(raw, staging.c[SOURCE_KEY], staging.c[REASON])
        .select_from(staging.join(raw, raw.c[SEQ] == staging.c[SEQ]))
        .where(staging.c[REASON].isnot(None))
        .order_by(raw.c[SEQ])
    ).mappings().all()
    for row in rejected:
        payload = {c: row[c] for c in columns}
        outcome.rejects.append(Reject(row[SOURCE_KEY], payload, row[REASON]))
    if rejected:
        tconn.execute(staging.delete().where(staging.c[REASON].isnot(None)))
    outcome.staged = outcome.rows_read + outcome.rows_retried - outcome.set_aside - len(rejected)
    return outcome


# The lookback's memory (cursor.skip_loaded). A flow's window starts a lookback before its
# watermark, so an incremental run reads again every row of the last few minutes, most of them
# loaded by the run before at the same cursor value. By the cursor's contract (a change moves
# the cursor) such a row has not changed, and comparing it with the target again costs as much
# as loading it. The memory holds, per flow, the source key and cursor value of the rows the
# last run loaded within the next run's lookback; rows it matches exactly are set aside.

#: Key and cursor types whose text no session setting can change (TimeZone, DateStyle,
#: extra_float_digits), so that the memory's text reads back as the very same value.
_KEY_TYPES = (sqltypes.Integer, sqltypes.String, sqltypes.Numeric, sqltypes.Uuid)
_CURSOR_TYPES = (sqltypes.DateTime, sqltypes.Date, sqltypes.Integer, sqltypes.Numeric, sqltypes.String)
_INEXACT = (sqltypes.Enum, sqltypes.Float, sqltypes.Interval)


def skip_loaded_reason(flow: Flow, source: Table) -> str | None:
    """Why ``flow`` cannot set aside the rows its last run loaded, or None if it can."""
    assert flow.cursor is not None
    if any(c.delta is not None for c in flow.columns):
        return "a flow with delta postings compares every re-read row with what it posted"
    keys = flow.source_key_columns()
    if not keys:
        return "the flow's key is not made of source columns"
    for name in [*keys, flow.cursor.column]:
        allowed = _CURSOR_TYPES if name == flow.cursor.column else _KEY_TYPES
        kind = source.c[name].type
        if not isinstance(kind, allowed) or isinstance(kind, _INEXACT):
            return f"source column {name} is {kind}, whose text does not read back exactly in every session"
    return None


def _as_text(column: ColumnElement[Any]) -> ColumnElement[Any]:
    """A key or cursor value as text that reads back exactly (timestamps in UTC, ISO form)."""
    kind = column.type
    if isinstance(kind, sqltypes.DateTime):
        if kind.timezone:
            return func.to_char(column.op("AT TIME ZONE")(_lit_text("UTC")), _lit_text('YYYY-MM-DD HH24:MI:SS.US"+00"'))
        return func.to_char(column, _lit_text("YYYY-MM-DD HH24:MI:SS.US"))
    if isinstance(kind, sqltypes.Date):
        return func.to_char(column, _lit_text("YYYY-MM-DD"))
    return cast(column, Text)


def _read_back(stored: ColumnElement[Any], like: ColumnElement[Any]) -> ColumnElement[Any]:
    """Stored text as a value comparable with ``like``: its type without length or precision,
    so that nothing is cut or rounded on the way."""
    kind = like.type
    if isinstance(kind, sqltypes.DateTime):
        return cast(stored, sqltypes.DateTime(timezone=bool(kind.timezone)))
    if isinstance(kind, sqltypes.Date):
        return cast(stored, sqltypes.Date())
    if isinstance(kind, sqltypes.Integer):
        return cast(stored, BigInteger)
    if isinstance(kind, sqltypes.Numeric):
        return cast(stored, Numeric())
    if isinstance(kind, sqltypes.Uuid):
        return cast(stored, kind)
    return stored


def _memory_key(flow: Flow, rows: Any) -> ColumnElement[Any]:
    """The source key as text: one column's own text, several as a JSON array (unlike the
    quarantine's ``a=1, b=2``, no two keys share it)."""
    keys = flow.source_key_columns()
    if len(keys) == 1:
        return _as_text(rows.c[keys[0]])
    return cast(func.json_build_array(*[rows.c[c] for c in keys]), Text)


def _memory_key_matches(flow: Flow, rows: Any, stored: ColumnElement[Any]) -> list[ColumnElement[bool]]:
    """``rows``' key equals the stored one, compared as values: the raw side is left as it is, so
    the join hashes plain columns. A NULL key matches nothing (it goes to quarantine)."""
    keys = flow.source_key_columns()
    if len(keys) == 1:
        return [rows.c[keys[0]] == _read_back(stored, rows.c[keys[0]])]
    return [
        rows.c[c] == _read_back(func.json_array_element_text(cast(stored, postgresql.JSON), i), rows.c[c])
        for i, c in enumerate(keys)
    ]


def _set_aside_table(flow: Flow, raw: Table) -> Table:
    """The rows this run set aside: still within the next lookback, they stay in the memory."""
    assert flow.cursor is not None
    return Table(
        f"etl_set_aside_{flow.flow}", MetaData(),
        Column("source_key", Text), Column("cursor_value", Text),
        Column("cursor", raw.c[flow.cursor.column].type),
        prefixes=["TEMPORARY"], postgresql_on_commit="DROP",
    )


def _set_aside_loaded(conn: Connection, flow: Flow, raw: Table) -> int:
    """Move the fresh raw rows the memory matches into the set-aside table; returns how many.
    Rows retried from quarantine always go through."""
    assert flow.cursor is not None
    aside = _set_aside_table(flow, raw)
    aside.create(conn)
    memory, cursor = lookback_loaded.c, raw.c[flow.cursor.column]
    moved = (
        delete(raw)
        .where(
            raw.c[RETRY] == 0, memory.flow == flow.flow,
            *_memory_key_matches(flow, raw, memory.source_key), cursor == _read_back(memory.cursor_value, cursor),
        )
        .returning(memory.source_key, memory.cursor_value, cursor.label("cursor"))
        .cte("etl_moved")
    )
    result = conn.execute(insert(aside).from_select(["source_key", "cursor_value", "cursor"], select(moved)))
    return int(result.rowcount or 0)


def remember_loaded(
    conn: Connection, flow: Flow, source: Table, source_dialect: str, staging: Table, lower: Any,
) -> int:
    """Replace the flow's memory with the rows of this incremental run that are on the target
    now (staged and merged, or set aside) and whose cursor the next run's lookback reaches
    (``lower`` on); returns how many. ``lower`` None (any other run) only clears the memory.
    Keys longer than the memory's key column never enter it."""
    assert flow.cursor is not None
    conn.execute(delete(lookback_loaded).where(lookback_loaded.c.flow == flow.flow))
    if lower is None:
        return 0
    raw = raw_table(flow, source, source_dialect)
    aside, cursor = _set_aside_table(flow, raw), raw.c[flow.cursor.column]
    rows = union_all(
        select(_memory_key(flow, raw).label("k"), _as_text(cursor).label("v"))
        .select_from(raw.join(staging, raw.c[SEQ] == staging.c[SEQ]))
        .where(cursor >= lower),
        select(aside.c.source_key, aside.c.cursor_value).where(aside.c.cursor >= lower),
    ).subquery("etl_loaded")
    result = conn.execute(insert(lookback_loaded).from_select(
        ["flow", "source_key", "cursor_value"],
        select(literal(flow.flow), rows.c.k, rows.c.v).where(func.length(rows.c.k) <= SOURCE_KEY_LENGTH),
    ))
    return int(result.rowcount or 0)


def _two_layers(
    flow: Flow, compiler: _Compiler, rows: Any,
    local_failures: dict[str, list[tuple[ColumnElement[bool], ColumnElement[Any]]]],
) -> tuple[Any, dict[str, Value]]:
    """Each column's value before type conversion, with its failure tests, computed once in a
    fenced layer; the conversion and the required check then work on those results.

    Without the layer every test that looks at a value (its length, its range, whether it is
    NULL) evaluates the whole expression again: five times over for a converted quantity."""
    computed: list[ColumnElement[Any]] = []
    plan: list[tuple[ColumnSpec, Value, list[tuple[str, ColumnElement[Any]]]]] = []
    for i, spec in enumerate(flow.columns):
        value = compiler.before_coercion(spec)
        computed.append(value.sql.label(f"_p{i}"))
        tests = []
        for j, (condition, reason) in enumerate(value.failures + local_failures.get(spec.target, [])):
            computed.append(func.coalesce(condition, False).label(f"_a{i}_{j}"))
            tests.append((f"_a{i}_{j}", reason))
        plan.append((spec, value, tests))
    before = select(*rows.c, *computed).select_from(rows).offset(0).subquery("etl_before")
    adapt = ClauseAdapter(before).traverse
    values = {}
    for i, (spec, value, tests) in enumerate(plan):
        failures: list[tuple[ColumnElement[bool], ColumnElement[Any]]] = [(before.c[name], adapt(reason)) for name, reason in tests]
        values[spec.target] = compiler.finish(spec, Value(before.c[f"_p{i}"], value.kind, failures, value.longest))
    return before, values


def _checked_rows(flow: Flow, rows: Any, values: dict[str, Value]) -> tuple[Any, list[ColumnElement[Any]], ColumnElement[Any]]:
    """Compute every column value and every failure test once (a fenced layer), then build the
    output columns (NULL where the column failed) and the row's reasons from those results."""
    computed: list[ColumnElement[Any]] = []
    plan: list[tuple[str, list[tuple[str, ColumnElement[Any]]]]] = []
    for i, spec in enumerate(flow.columns):
        value = values[spec.target]
        computed.append(value.sql.label(f"_v{i}"))
        tests = []
        for j, (condition, reason) in enumerate(value.failures):
            computed.append(func.coalesce(condition, False).label(f"_c{i}_{j}"))
            tests.append((f"_c{i}_{j}", reason))
        plan.append((spec.target, tests))
    checked = select(*rows.c, *computed).select_from(rows).offset(0).subquery("etl_checked")
    adapt = ClauseAdapter(checked).traverse
    outputs: list[ColumnElement[Any]] = []
    reasons: list[ColumnElement[Any]] = []
    for i, (target, tests) in enumerate(plan):
        output: ColumnElement[Any] = checked.c[f"_v{i}"]
        if tests:
            output = case((or_(*[checked.c[name] for name, _ in tests]), null()), else_=output)
        outputs.append(output.label(target))
        reasons += [case((checked.c[name], adapt(reason))) for name, reason in tests]
    reason = func.nullif(func.concat_ws("; ", *reasons), "") if reasons else null()
    return checked, outputs, reason


def _source_key(flow: Flow, rows: Any) -> ColumnElement[Any]:
    """``order_no=1000456, item_no=10``: the same text the Python path builds."""
    parts = [_lit_text(f"{c}=") + func.coalesce(cast(rows.c[c], Text), _lit_text("NULL")) for c in flow.source_key_columns()]
    if not parts:
        return cast(rows.c[SEQ], Text)
    key = parts[0]
    for part in parts[1:]:
        key = key + _lit_text(", ") + part
    return key


def _with_lookups(raw: Table, collector: _Compiler) -> Any:
    """The raw rows outer-joined to the crosswalk tables, each lookup's code and factor as a column.

    Not fenced: the lookups are plain columns of tables _fill_lookups filled, nothing is computed
    twice, and PostgreSQL folding this into the next layer saves a projection of every row
    (0.2 s a million rows)."""
    joined: Any = raw
    for table, (_, _, code, _) in zip(collector.lookup_tables, collector.lookups, strict=True):
        joined = joined.outerjoin(table, table.c.code == code)
    lookups = []
    for i, (mapped, factor) in enumerate(collector.resolved):
        lookups += [mapped.label(f"_m{i}"), factor.label(f"_f{i}")]
    return select(*raw.c, *lookups).select_from(joined).subquery("etl_rows")


def _fill_lookups(conn: Connection, collector: _Compiler, raw: Table, crosswalks: dict[str, Crosswalk]) -> None:
    """Fill each lookup's temp table through etl.crosswalk itself, so both paths translate alike:
    a table-only crosswalk loads its entries for the direction; one with a rule translates the
    distinct codes the rows actually hold."""
    prep = conn.dialect.identifier_preparer
    for table, (name, side, code, has_rule) in zip(collector.lookup_tables, collector.lookups, strict=True):
        table.create(conn)
        crosswalk = crosswalks[name]
        cursor = driver_cursor(conn)
        try:
            if has_rule:
                # Fetched by the driver alone: a batch may hold 250,000 distinct order numbers.
                cursor.execute(render(conn, select(code).select_from(raw).where(code.isnot(None)).distinct()))
                hits = ((c, crosswalk.lookup(c, side)) for (c,) in cursor.fetchall())
                entries: Mapping[str, tuple[str, Decimal | None]] = {c: hit for c, hit in hits if hit is not None}
            else:
                entries = crosswalk.entries(side)
            quoted = prep.format_table(table)
            cursor.copy_expert(f"COPY {quoted} (code, mapped, factor) FROM STDIN", io.StringIO(_copy_lines(entries)))
            # Without statistics the planner takes codes for repeated and sorts the batch for a
            # merge join. A small sample of the join column alone tells it they are unique, at a
            # fifth of a full ANALYZE (100 ms for 250,000 codes).
            cursor.execute(f"ALTER TABLE {quoted} ALTER COLUMN code SET STATISTICS 10; ANALYZE {quoted} (code)")
        finally:
            cursor.close()


def _copy_lines(entries: Mapping[str, tuple[str, Decimal | None]]) -> str:
    """A crosswalk's entries as COPY text."""
    # Codes almost never hold a tab, a line break or a backslash: build the lines as they are and
    # escape each value only when the text shows one. For 250,000 order numbers that is a third
    # of the time of escaping every value.
    if all(type(c) is str and type(m) is str and type(f) is Decimal for c, (m, f) in entries.items()):
        plain = "".join(f"{code}\t{mapped}\t{factor}\n" for code, (mapped, factor) in entries.items())
        if (plain.count("\t") == 2 * len(entries) and plain.count("\n") == len(entries)
                and "\\" not in plain and "\r" not in plain):
            return plain
    return "".join(
        f"{copy_text(code)}\t{copy_text(mapped)}\t{copy_text(factor)}\n"
        for code, (mapped, factor) in entries.items()
    )


def _local_time_failures(
    conn: Connection, compiler: _Compiler, raw: Table, rows: Any,
) -> dict[str, list[tuple[ColumnElement[bool], ColumnElement[Any]]]]:
    """Reject naive local times inside a DST gap or overlap of their zone, within the data's range;
    keyed by target column."""
    failures: dict[str, list[tuple[ColumnElement[bool], ColumnElement[Any]]]] = {}
    for target, column, zone in compiler.local_times:
        low, high = conn.execute(select(func.min(raw.c[column]), func.max(raw.c[column]))).one()
        if low is None:
            continue
        for start, end, what in _transitions(zone, low - timedelta(days=1), high + timedelta(days=1)):
            inside = and_(rows.c[column] >= start, rows.c[column] < end)
            reason = _lit_text(f"column {target}: ") + func.to_char(rows.c[column], 'YYYY-MM-DD"T"HH24:MI:SS') + \
                _lit_text(" " + what.format(zone=zone))
            failures.setdefault(target, []).append((inside, reason))
    return failures
