"""The column rules compiled to PostgreSQL SQL over the raw rows and their crosswalk joins."""

from __future__ import annotations

import ast
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    MetaData,
    Numeric,
    Table,
    Text,
    and_,
    bindparam,
    case,
    cast,
    func,
    literal,
    literal_column,
    not_,
    null,
    or_,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.exc import CompileError
from sqlalchemy.sql.elements import ColumnElement, Grouping
from sqlalchemy.sql.util import ClauseAdapter

from etl.config.crosswalks import Crosswalk
from etl.config.flows import ColumnSpec, Flow
from etl.core.expressions import CONDITIONAL, TRIM_CHARS, syntax_tree
from etl.core.reasons import (
    CONVERSION,
    CROSSWALK_MISS,
    DIVISION_BY_ZERO,
    IN_COLUMN,
    IN_EXPRESSION,
    JSON_NOT_A_VALUE,
    LOCAL_TIME_REPEATED,
    LOCAL_TIME_SKIPPED,
    NO_TIME_ZONE,
    NOT_FINITE,
    NOT_WHOLE,
    OVERFLOW,
    REQUIRED_NULL,
    SHOWN_CHARACTERS,
    TIME_OUT_OF_RANGE,
    TOO_LONG,
    UNIT_MISS,
    Reason,
)
from etl.core.rows import SEQ
from etl.core.types import ColumnType, column_type

REASON = "_reason"


class Unsupported(Exception):
    """A rule the SQL path cannot express exactly; the flow runs on the Python path."""


@dataclass(frozen=True)
class Rendering:
    """What the engine that runs the compiled rules can do exactly: the same rules compile to
    PostgreSQL (the SQL path) and to DuckDB (the in-process path, etl.sync.stage_in_process).

    DuckDB reads PostgreSQL's syntax; where it lacks a function (btrim, quote_literal) the
    in-process path defines it as a macro of the same meaning, and its plain DECIMAL is
    DECIMAL(18,3), so an unbounded NUMERIC renders as DECIMAL(38, WORK_SCALE) there."""

    name: str
    #: NUMERIC holds Infinity and NaN (a check for them is needed).
    has_infinity: bool
    #: Decimal division stays exact (DuckDB's gives a DOUBLE).
    divides_exactly: bool
    #: json_get has a twin on json/jsonb columns.
    reads_json: bool


POSTGRESQL = Rendering("postgresql", has_infinity=True, divides_exactly=True, reads_json=True)
DUCKDB = Rendering("duckdb", has_infinity=False, divides_exactly=False, reads_json=False)
#: Fraction digits of an unbounded NUMERIC in DuckDB: a source or literal with more takes the
#: Python path.
WORK_SCALE = 10


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


def lit_text(s: str) -> ColumnElement[Any]:
    return literal(s, Text)


def reason_sql(reason: Reason, **fields: Any) -> ColumnElement[Any]:
    """``reason`` as SQL text: fields given as SQL expressions (text) are filled in per row."""
    pieces = [lit_text(p) if isinstance(p, str) else p for p in reason.pieces(**fields)]
    joined = pieces[0]
    for piece in pieces[1:]:
        joined = joined + piece
    return joined


class Compiler:
    """Turns one flow's column rules into SQL over the raw table and the crosswalk joins."""

    def __init__(
        self, flow: Flow, raw: Table, source_types: dict[str, ColumnType], target_types: dict[str, ColumnType],
        crosswalks: dict[str, Crosswalk], joined: Any = None, now: datetime | None = None,
        rendering: Rendering = POSTGRESQL,
    ):
        self.flow = flow
        #: What now() is: the run's start on the target's clock (None when only checking).
        self.now = now
        self.rendering = rendering
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
        if self.rendering is DUCKDB and source_type.kind == "decimal" and (source_type.scale or 0) > WORK_SCALE:
            raise Unsupported(f"source column {name} has more than {WORK_SCALE} fraction digits")
        return Value(rows.c[name], _kind(source_type), longest=source_type.length if source_type.kind == "string" else None)

    def lookup(self, name: str, side: str, code: ColumnElement[Any]) -> tuple[ColumnElement[Any], ColumnElement[Any]]:
        """(mapped code, factor) of ``code`` through crosswalk ``name`` towards ``side``, from a
        joined temp table that etl.config.crosswalks filled (see :func:`_fill_lookups`).

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
                return Value(lit_text(node.value), "string", longest=len(node.value))
            if isinstance(node.value, int):
                return Value(literal(node.value, Numeric), "integer")
            return Value(self._decimal_literal(Decimal(repr(node.value))), "decimal")
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            inner = self.expression(node.operand, spec)
            self._numeric(inner)
            return Value(-inner.sql, inner.kind, inner.failures)
        if isinstance(node, ast.BinOp):
            return self._arithmetic(node, spec)
        if isinstance(node, ast.Compare) and len(node.ops) == 1:
            return self._comparison(node.ops[0], self.expression(node.left, spec), self.expression(node.comparators[0], spec))
        if isinstance(node, ast.BoolOp):
            operands = [self._boolean(self.expression(v, spec)) for v in node.values]
            combine = and_ if isinstance(node.op, ast.And) else or_
            return Value(combine(*[o.sql for o in operands]), "boolean", [f for o in operands for f in o.failures])
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self._boolean(self.expression(node.operand, spec))
            return Value(not_(inner.sql), "boolean", inner.failures)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == CONDITIONAL:
            return self._if([self.expression(n, spec) for n in node.args])
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "now":
            return Value(bindparam(None, self.now, type_=DateTime(timezone=True)), "timestamptz")
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            return self._call(node.func.id, node.args, spec)
        raise Unsupported(f"expression node {type(node).__name__}")

    def _boolean(self, value: Value) -> Value:
        if value.kind != "boolean":
            raise Unsupported(f"true or false expected, got a {value.kind} value")
        return value

    def _comparison(self, op: ast.cmpop, left: Value, right: Value) -> Value:
        numbers = ("integer", "decimal")
        a, b = left.sql, right.sql
        if left.kind in numbers and right.kind in numbers:
            a, b = cast(a, Numeric), cast(b, Numeric)
        elif left.kind == right.kind == "string":
            # Code point order, as Python compares text; the database's collation would not.
            a, b = a.collate("C"), b.collate("C")
        elif left.kind != right.kind or left.kind not in ("boolean", "timestamp", "timestamptz", "date"):
            raise Unsupported(f"comparison of a {left.kind} value with a {right.kind} value")
        elif left.kind == "boolean":
            # In brackets: SQLAlchemy writes not_(a) == b as NOT a = b, which is NOT (a = b).
            a, b = Grouping(a), Grouping(b)
        compared = {
            ast.Eq: a == b, ast.NotEq: a != b, ast.Lt: a < b, ast.LtE: a <= b, ast.Gt: a > b, ast.GtE: a >= b,
        }.get(type(op))
        if compared is None:
            raise Unsupported(f"comparison {type(op).__name__}")
        return Value(compared, "boolean", left.failures + right.failures)

    def _if(self, args: list[Value]) -> Value:
        condition, then, otherwise = args
        self._boolean(condition)
        numbers = ("integer", "decimal")
        if then.kind == otherwise.kind:
            kind = then.kind
        elif then.kind in numbers and otherwise.kind in numbers:
            kind = "decimal"
        else:
            raise Unsupported(f"if() of a {then.kind} value and a {otherwise.kind} value")
        # coalesce, not IS TRUE: SQLAlchemy writes NOT x IS TRUE for not_(x).is_(true()), which
        # PostgreSQL reads as NOT (x IS TRUE).
        taken = func.coalesce(condition.sql, False)
        not_taken = not_(taken)
        # A branch's failures count only on the rows that take it, as the Python path computes them.
        failures = (
            condition.failures + [(and_(taken, c), r) for c, r in then.failures]
            + [(and_(not_taken, c), r) for c, r in otherwise.failures]
        )
        value = case((taken, then.sql), else_=otherwise.sql)
        return Value(value, kind, failures, _longest_of([then, otherwise], max))

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
            if not self.rendering.divides_exactly:
                raise Unsupported(f"division: {self.rendering.name} divides decimals in floating point")
            # NULL / 0 is NULL, as in Python and in SQL itself, not a division by zero.
            zero = and_(b == 0, a.isnot(None))
            reason = reason_sql(IN_EXPRESSION, column=spec.target, problem=DIVISION_BY_ZERO, expr=spec.expr)
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
        if not self.rendering.reads_json:
            raise Unsupported(f"json_get on {self.rendering.name}")
        if document.kind != "json":
            raise Unsupported(f"json_get on a {document.kind} value (only json/jsonb columns have a SQL twin)")
        binary = isinstance(document.sql.type, postgresql.JSONB)
        path = [lit_text(k) for k in keys]
        extract, extract_text, typeof = (
            (func.jsonb_extract_path, func.jsonb_extract_path_text, func.jsonb_typeof) if binary
            else (func.json_extract_path, func.json_extract_path_text, func.json_typeof)
        )
        nested = typeof(extract(document.sql, *path)).in_(["object", "array"])
        reason = reason_sql(IN_EXPRESSION, column=spec.target, problem=JSON_NOT_A_VALUE, expr=spec.expr)
        # NULL where the path fails, as on the Python path: no later check sees the object's text.
        value = case((nested, null()), else_=extract_text(document.sql, *path))
        return Value(value, "string", document.failures + [(nested, reason)])

    def column(self, spec: ColumnSpec) -> Value:
        """The target value of one column and its failures, mirroring etl.rules.transform step by step."""
        return self.finish(spec, self.before_coercion(spec))

    def before_coercion(self, spec: ColumnSpec) -> Value:
        """The column's value up to (not including) the conversion into the target's type."""
        target = self.target_types[spec.target]
        if spec.source is not None:
            value = self.source(spec.source)
        elif spec.expr is not None:
            value = self.expression(syntax_tree(spec.expr), spec)
        else:
            value = self._constant(spec.value, target)
        for step in spec.steps():
            value = getattr(self, f"_{step}")(spec, value, target)
        return value

    def _clean(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        for step in spec.clean:
            if value.kind == "string":
                value = Value(
                    func.btrim(value.sql, TRIM_CHARS) if step == "trim" else getattr(func, step)(value.sql),
                    "string", value.failures, value.longest if step == "trim" else None,
                )
        return value

    def _cast(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        raise Unsupported("cast")

    def _default(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        default = self._constant(spec.default, target)
        return Value(func.coalesce(value.sql, default.sql), value.kind, value.failures, _longest_of([value, default], max))

    def finish(self, spec: ColumnSpec, value: Value) -> Value:
        """Convert into the target's type and check that a required value is there."""
        target = self.target_types[spec.target]
        value = self._coerce(spec, value, target)
        if spec.required or spec.target in self.flow.key or not target.nullable:
            label = "natural key column" if spec.target in self.flow.key else "required column"
            earlier = or_(*[c for c, _ in value.failures]) if value.failures else None
            is_null = value.sql.is_(None) if earlier is None else and_(value.sql.is_(None), ~func.coalesce(earlier, False))
            value.failures.append((is_null, reason_sql(REQUIRED_NULL, label=label, column=spec.target)))
        return value

    def _constant(self, constant: Any, target: ColumnType) -> Value:
        if constant is None:
            return Value(null(), target.kind)
        if isinstance(constant, bool):
            return Value(literal(constant), "boolean")
        if isinstance(constant, int):
            return Value(literal(constant, Numeric), "integer")
        if isinstance(constant, float):
            return Value(self._decimal_literal(Decimal(repr(constant))), "decimal")
        return Value(lit_text(str(constant)), "string", longest=len(str(constant)))

    def _decimal_literal(self, number: Decimal) -> ColumnElement[Any]:
        exponent = number.as_tuple().exponent
        if self.rendering is DUCKDB and isinstance(exponent, int) and -exponent > WORK_SCALE:
            raise Unsupported(f"the literal {number} has more than {WORK_SCALE} fraction digits")
        return literal(number, Numeric)

    def local_time_text(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        """A naive local time as the Python path shows it in a reason (ISO, whole seconds)."""
        if self.rendering is DUCKDB:
            return func.strftime(column, lit_text("%Y-%m-%dT%H:%M:%S"))
        return func.to_char(column, lit_text('YYYY-MM-DD"T"HH24:MI:SS'))

    def _crosswalk(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        used = self.flow.crosswalk_side(spec)
        assert used is not None  # called only for a column with a crosswalk
        name, side = used
        code = _text_of(value)
        mapped, _ = self.lookup(name, side, code)
        missing = and_(code.isnot(None), mapped.is_(None))
        # As etl.rules.transform shows it: text quoted, a number (an id) as written.
        shown = func.quote_literal(code) if value.kind == "string" else code
        reason = reason_sql(CROSSWALK_MISS, crosswalk=name, side=side.upper(), code=shown, column=spec.target)
        crosswalk = self.crosswalks[name]
        if side in crosswalk.whole_number_sides:
            # Surrogate ids from a lookup: every mapped code is an integer's text.
            return Value(cast(mapped, BigInteger), "integer", value.failures + [(missing, reason)])
        # A table-only crosswalk's codes are all known here; a rule's or a lookup's are not.
        fixed = crosswalk.rule is None and crosswalk.lookup_spec is None
        longest = max((len(code) for code, _ in crosswalk.entries(side).values()), default=0) if fixed else None
        return Value(mapped, "string", value.failures + [(missing, reason)], longest)

    def _convert_unit(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        conv = spec.convert_unit
        assert conv is not None
        self._numeric(value)
        unit = self.source(conv.unit_column)
        unit_code = _text_of(unit)
        for step in conv.clean:
            unit_code = func.btrim(unit_code, TRIM_CHARS) if step == "trim" else getattr(func, step)(unit_code)
        _, factor = self.lookup(conv.crosswalk, self.flow.unit_side(), unit_code)
        missing = and_(value.sql.isnot(None), factor.is_(None))
        # quote_literal of NULL is NULL: a NULL unit is shown as the Python path shows it.
        shown = func.coalesce(func.quote_literal(unit_code), lit_text("NULL"))
        reason = reason_sql(UNIT_MISS, crosswalk=conv.crosswalk, unit=shown, column=spec.target)
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
        # Python (and the drivers) hold the years 1 to 9999 only: the Python path cannot convert
        # a time whose instant or whose time in the target zone falls outside, so neither may this.
        utc, local = func.timezone("UTC", instant), func.timezone(rule.to, instant)
        outside = or_(utc < _FIRST_TIME, utc > _LAST_TIME, local < _FIRST_TIME, local > _LAST_TIME)
        shown = func.to_char(value.sql, 'YYYY-MM-DD"T"HH24:MI:SS')
        problem = reason_sql(TIME_OUT_OF_RANGE, local_time=shown, source_zone=rule.from_, zone=rule.to)
        failures = value.failures + [(outside, reason_sql(IN_COLUMN, column=spec.target, problem=problem))]
        if target.tz_aware:
            return Value(instant, "timestamptz", failures)
        return Value(local, "timestamp", failures)

    def _coerce(self, spec: ColumnSpec, value: Value, target: ColumnType) -> Value:
        kind, sql = target.kind, value.sql

        def conversion(shown: ColumnElement[Any], problem: ColumnElement[Any] | str) -> ColumnElement[Any]:
            return reason_sql(CONVERSION, column=spec.target, what="value", value=shown, problem=problem)

        if kind == "string":
            body = _text_of(value)
            # Only string values carry a bound (Value.longest).
            if target.length is None or (value.longest is not None and value.longest <= target.length):
                return Value(body, "string", value.failures, value.longest)
            too_long = func.char_length(body) > target.length
            length = reason_sql(TOO_LONG, length=cast(func.char_length(body), Text), limit=target.length)
            reason = conversion(shown_text_sql(body) if value.kind == "string" else body, length)
            return Value(body, "string", value.failures + [(too_long, reason)])
        if kind == "decimal":
            self._numeric(value)
            rounded = func.round(cast(sql, Numeric), target.scale) if target.scale is not None else cast(sql, Numeric)
            failures = list(value.failures)
            finite: ColumnElement[bool] | None = None
            if self.rendering.has_infinity:
                # Compared as numbers: casting every value to text to spot these costs a second a million rows.
                infinite = cast(sql, Numeric).in_([literal_column(f"'{v}'::numeric") for v in ("Infinity", "-Infinity", "NaN")])
                failures.append((infinite, conversion(cast(sql, Text), NOT_FINITE.text())))
                finite = ~infinite
            if target.precision is not None:
                limit = Decimal(10) ** (target.precision - (target.scale or 0))
                too_big = func.abs(rounded) >= limit
                over = too_big if finite is None else and_(finite, too_big)
                # Shown rounded, as the Python path shows it: the digits beyond the scale depend
                # on how a backend divides.
                reason = conversion(cast(rounded, Text), OVERFLOW.text(precision=target.precision, scale=target.scale or 0))
                failures.append((over, reason))
            return Value(rounded, "decimal", failures)
        if kind == "integer":
            self._numeric(value)
            if value.kind == "integer":
                return Value(cast(sql, BigInteger), "integer", value.failures)
            fraction = cast(sql, Numeric) != func.trunc(cast(sql, Numeric))
            reason = conversion(cast(sql, Text), NOT_WHOLE.text())
            return Value(cast(sql, BigInteger), "integer", value.failures + [(fraction, reason)])
        if kind == "timestamp":
            if value.kind == "timestamp" and not target.tz_aware:
                return value
            if value.kind == "timestamptz" and target.tz_aware:
                return value
            if value.kind == "timestamptz":
                return Value(func.timezone("UTC", sql), "timestamp", value.failures)
            reason = conversion(cast(sql, Text), NO_TIME_ZONE.text())
            return Value(sql, "timestamp", value.failures + [(sql.isnot(None), reason)])
        if kind in ("boolean", "date") and value.kind == kind:
            return value
        raise Unsupported(f"a {value.kind} value into a {kind} column")


_FIRST_TIME: ColumnElement[Any] = literal_column("'0001-01-01 00:00:00'::timestamp")
_LAST_TIME: ColumnElement[Any] = literal_column("'9999-12-31 23:59:59.999999'::timestamp")


def shown_text_sql(text: ColumnElement[Any]) -> ColumnElement[Any]:
    """etl.core.reasons.shown_text in SQL: quoted, the first SHOWN_CHARACTERS characters only."""
    more = case((func.char_length(text) > SHOWN_CHARACTERS, lit_text("...")), else_=lit_text(""))
    return func.quote_literal(func.left(text, SHOWN_CHARACTERS)) + more


def clock_changes(zone_name: str, start: datetime, end: datetime) -> list[tuple[datetime, datetime, Reason]]:
    """Wall-clock intervals of the zone between start and end that do not exist (a DST gap) or
    exist twice (an overlap), as (from, to, the reason a time inside gets)."""
    zone = ZoneInfo(zone_name)
    found = []
    hour, day = timedelta(hours=1), timedelta(days=1)
    t = start.replace(minute=0, second=0, microsecond=0)
    while t <= end:
        # A day whose offset is the same at both ends holds no change (zones change at most
        # once a day): decades of data take seconds to walk hour by hour, milliseconds by day.
        if t + day <= end and t.replace(tzinfo=zone).utcoffset() == (t + day).replace(tzinfo=zone).utcoffset():
            t += day
            continue
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
            which = LOCAL_TIME_SKIPPED if shift > timedelta(0) else LOCAL_TIME_REPEATED
            found.append((wall_after - abs(shift), wall_after, which))
        t += hour
    return found


def column_types(table: Table) -> dict[str, ColumnType]:
    return {c.name: column_type(c.type, bool(c.nullable)) for c in table.columns}


def two_layers(
    flow: Flow, compiler: Compiler, rows: Any,
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


def checked_rows(flow: Flow, rows: Any, values: dict[str, Value]) -> tuple[Any, list[ColumnElement[Any]], ColumnElement[Any]]:
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
    return checked, outputs, joined_reasons(reasons)


#: PostgreSQL passes at most 100 arguments to a function (concat_ws takes the separator too).
_MOST_ARGUMENTS = 99


def joined_reasons(reasons: list[ColumnElement[Any]]) -> ColumnElement[Any]:
    """The non-NULL ``reasons`` joined by ``; ``, NULL if there are none. Many reasons (a local
    time over decades of clock changes has two a year) are joined in groups, each NULL when
    empty, so that no call passes more than PostgreSQL's 100 arguments."""
    if not reasons:
        return null()
    while len(reasons) > _MOST_ARGUMENTS:
        reasons = [
            func.nullif(func.concat_ws("; ", *reasons[i:i + _MOST_ARGUMENTS]), "")
            for i in range(0, len(reasons), _MOST_ARGUMENTS)
        ]
    return func.nullif(func.concat_ws("; ", *reasons), "")


def source_key_sql(flow: Flow, rows: Any) -> ColumnElement[Any]:
    """``order_no=1000456, item_no=10``: the same text the Python path builds."""
    parts = [lit_text(f"{c}=") + func.coalesce(cast(rows.c[c], Text), lit_text("NULL")) for c in flow.source_key_columns()]
    if not parts:
        return cast(rows.c[SEQ], Text)
    key = parts[0]
    for part in parts[1:]:
        key = key + lit_text(", ") + part
    return key


def with_lookups(raw: Table, collector: Compiler) -> Any:
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
