"""Data quality on every batch: the flow's Great Expectations suite, checked on the staging table
before the merge.

A suite is GX's own JSON (``expectations/<suite>.json``), so it can be edited with GX tools or
by hand. Each run evaluates it here, in the target database, one SQL predicate per expectation:
GX returns only a capped sample of the failing rows in most result formats, and every failing
row must reach quarantine. The tests run the same suites through GX itself and check that both
find the same rows.

What a failing expectation does (its action):
- ``quarantine``: the rows that fail it wait in quarantine, with the names of the expectations
  they failed; the rest loads. The default for expectations about single rows. With GX's
  ``mostly`` below 1, a batch in which a larger share fails is blocked instead: a broken
  crosswalk or a source bug is then more likely than a few bad rows.
- ``critical``: the batch is not loaded and the run fails; target and watermark stay as they
  were. The default for expectations about the whole batch (its row count).
- ``warning``: reported only; the rows load.
Set per expectation in its ``meta`` (``"on_failure": "warning"``) or with GX's ``severity``
(``warning`` and ``info`` mean warning); the flow's YAML (``expectations.on_failure``) wins.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    Column,
    Connection,
    Table,
    and_,
    case,
    column,
    delete,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    text,
    tuple_,
)
from sqlalchemy.exc import CompileError, DBAPIError
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.types import DateTime

from etl.config import ExpectationsSpec, Flow
from etl.dialects.base import SEQ, SOURCE_KEY
from etl.errors import ConfigError, ConfigProblem, display_path
from etl.ledger import CheckResult
from etl.transform import Reject

QUARANTINE = "quarantine"
CRITICAL = "critical"
WARNING = "warning"
_ACTIONS = (QUARANTINE, CRITICAL, WARNING)
SAMPLE_KEYS = 10
_FETCH_BATCH = 10_000
#: Every row-level expectation also accepts these (GX's common keyword arguments).
_COMMON_KWARGS = {"mostly", "result_format", "catch_exceptions", "meta"}


@dataclass(frozen=True)
class Expectation:
    """One expectation of a suite, with the action its failure takes."""

    name: str
    type: str
    kwargs: dict[str, Any]
    action: str
    #: GX's ``mostly``; for a quarantining expectation, the share of rows that must pass for the
    #: batch to load at all. None: any number of rows may fail and wait in quarantine.
    mostly: float | None
    #: Its key path in the suite file (``expectations[3]``), for messages.
    where: str = ""

    @property
    def row_level(self) -> bool:
        return self.type in _ROW_RULES

    def describe(self) -> str:
        cols = [str(self.kwargs[k]) for k in ("column", "column_A", "column_B") if k in self.kwargs]
        cols += [str(c) for c in self.kwargs.get("column_list", [])]
        return f"{self.type}({', '.join(cols)})" if cols else self.type


@dataclass(frozen=True)
class Suite:
    name: str
    file: str
    expectations: tuple[Expectation, ...]


# --- loading and checking a suite file ---------------------------------------------------------

def suite_path(suites_dir: Path, flow: Flow) -> Path:
    assert flow.expectations is not None
    return suites_dir / f"{flow.expectations.suite}.json"


def load_suite(suites_dir: Path, flow: Flow) -> Suite:
    """Read and check the suite a flow names. Raises ConfigError listing every problem, each
    located by file and key path, without connecting to anything (``python -m etl check``)."""
    spec = flow.expectations
    assert spec is not None
    path = suite_path(suites_dir, flow)
    rel = display_path(path)
    if not path.exists():
        raise ConfigError([ConfigProblem(flow.file, "expectations.suite", f"suite file {rel} does not exist")])
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError([ConfigProblem(rel, "", f"not a valid JSON file: {exc}")]) from None
    problems: list[ConfigProblem] = []
    if not isinstance(raw, dict) or not isinstance(raw.get("expectations"), list):
        raise ConfigError([ConfigProblem(rel, "expectations", "a suite needs a list of expectations")])
    targets = [c.target for c in flow.columns]
    expectations: list[Expectation] = []
    for i, item in enumerate(raw["expectations"]):
        found = _read_expectation(item, f"expectations[{i}]", rel, spec, targets, problems)
        if found is not None:
            expectations.append(found)
    names = [e.name for e in expectations]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append(ConfigProblem(rel, "expectations", f"two expectations are named {name!r}; give one a meta.name"))
    for name in spec.on_failure:
        if name not in names:
            problems.append(
                ConfigProblem(flow.file, f"expectations.on_failure.{name}", f"no expectation named {name!r} in {rel}{_hint(name, names)}")
            )
    if problems:
        raise ConfigError(problems)
    return Suite(str(raw.get("name") or spec.suite), rel, tuple(expectations))


def _read_expectation(
    item: Any, where: str, rel: str, spec: ExpectationsSpec, targets: list[str], problems: list[ConfigProblem],
) -> Expectation | None:
    if not isinstance(item, dict) or not isinstance(item.get("type"), str):
        problems.append(ConfigProblem(rel, where, "an expectation needs a 'type'"))
        return None
    kind = item["type"]
    kwargs = item.get("kwargs") or {}
    meta = item.get("meta") or {}
    allowed = _ALLOWED_KWARGS.get(kind)
    if allowed is None:
        problems.append(ConfigProblem(
            rel, f"{where}.type",
            f"{kind!r} cannot be checked on each batch{_hint(kind, list(_ALLOWED_KWARGS))}; "
            f"supported: {', '.join(sorted(_ALLOWED_KWARGS))}",
        ))
        return None
    before = len(problems)
    if not isinstance(kwargs, dict) or not isinstance(meta, dict):
        problems.append(ConfigProblem(rel, where, "kwargs and meta must be mappings"))
        return None
    for key in kwargs:
        if key not in allowed:
            why = (" (conditions are not supported: split the flow or use unexpected_rows_expectation)"
                   if key in ("row_condition", "condition_parser") else "")
            problems.append(ConfigProblem(rel, f"{where}.kwargs.{key}", f"not an argument of {kind} here{why}"))
    for key in allowed - _COMMON_KWARGS - _OPTIONAL_KWARGS.get(kind, set()):
        if key not in kwargs:
            problems.append(ConfigProblem(rel, f"{where}.kwargs", f"{kind} needs {key!r}"))
    for key in ("column", "column_A", "column_B"):
        if isinstance(kwargs.get(key), str) and kwargs[key] not in targets:
            problems.append(ConfigProblem(
                rel, f"{where}.kwargs.{key}", f"{kwargs[key]!r} is not a target column of the flow{_hint(kwargs[key], targets)}",
            ))
    for col in kwargs.get("column_list", []) if isinstance(kwargs.get("column_list"), list) else []:
        if col not in targets:
            problems.append(ConfigProblem(
                rel, f"{where}.kwargs.column_list", f"{col!r} is not a target column of the flow{_hint(col, targets)}",
            ))
    for key, value in kwargs.items():
        if isinstance(value, dict) and "$PARAMETER" in value:
            ref = value["$PARAMETER"]
            if ref != "now" and ref not in spec.parameters:
                problems.append(ConfigProblem(
                    rel, f"{where}.kwargs.{key}", f"$PARAMETER {ref!r} is neither 'now' nor set in the flow's expectations.parameters",
                ))
    mostly = kwargs.get("mostly")
    if mostly is not None and (not isinstance(mostly, (int, float)) or not 0 <= mostly <= 1):
        problems.append(ConfigProblem(rel, f"{where}.kwargs.mostly", "must be a number from 0 to 1"))
    name = meta.get("name") or _default_name(kind, kwargs)
    if not isinstance(name, str):
        problems.append(ConfigProblem(rel, f"{where}.meta.name", "must be text"))
        return None
    action = spec.on_failure.get(name) or meta.get("on_failure")
    if action is None:
        severity = item.get("severity", "critical")
        if severity not in ("critical", "warning", "info"):
            problems.append(ConfigProblem(rel, f"{where}.severity", "must be critical, warning or info"))
        action = WARNING if severity in ("warning", "info") else (QUARANTINE if kind in _ROW_RULES else CRITICAL)
    if action not in _ACTIONS:
        problems.append(ConfigProblem(rel, f"{where}.meta.on_failure", f"must be one of {', '.join(_ACTIONS)}"))
    elif action == QUARANTINE and kind not in _ROW_RULES:
        problems.append(ConfigProblem(rel, f"{where}.meta.on_failure", f"{kind} is about the whole batch: it cannot quarantine rows"))
    if len(problems) > before:
        return None
    return Expectation(name, kind, dict(kwargs), action, None if mostly is None else float(mostly), where)


REGEX_RULES = ("expect_column_values_to_match_regex", "expect_column_values_to_not_match_regex")


def regex_problems(conn: Connection | None, suite: Suite, params: Params) -> list[ConfigProblem]:
    """Every regex of ``suite`` compiled by the database that will run it: on ``conn`` (one
    SELECT each, in a savepoint), or with Python's ``re`` when ``conn`` is None or SQLite (whose
    REGEXP SQLAlchemy implements with ``re``). A problem per regex that does not compile, with
    file, expectation, column and the database's own words."""
    problems = []
    for e in suite.expectations:
        if e.type not in REGEX_RULES:
            continue
        pattern = _value(e.kwargs.get("regex"), params)
        where = f"{e.where}.kwargs.regex" if e.where else "kwargs.regex"
        about = f"{e.name}: regex {pattern!r} on column {e.kwargs.get('column')}"
        if not isinstance(pattern, str):
            problems.append(ConfigProblem(suite.file, where, f"{about} is not text"))
            continue
        if conn is None or conn.dialect.name == "sqlite":
            try:
                re.compile(pattern)
            except re.error as exc:
                problems.append(ConfigProblem(suite.file, where, f"{about} does not compile: {exc}"))
            continue
        try:
            with conn.begin_nested():
                conn.execute(select(literal("").regexp_match(literal(pattern))))
        except CompileError:
            problems.append(ConfigProblem(suite.file, where, f"{about}: {conn.dialect.name} cannot run regexes"))
        except DBAPIError as exc:
            reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
            problems.append(ConfigProblem(suite.file, where, f"{about} does not compile in {conn.dialect.name}: {reason}"))
    return problems


def _default_name(kind: str, kwargs: dict[str, Any]) -> str:
    cols = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    cols += [str(c) for c in kwargs.get("column_list", []) or []]
    short = kind.removeprefix("expect_")
    return f"{short}({', '.join(cols)})" if cols else short


def _hint(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


# --- the predicates: a row FAILS when its predicate is true ------------------------------------

Params = dict[str, Any]


def _value(raw: Any, params: Params, col: ColumnElement[Any] | None = None) -> Any:
    if isinstance(raw, dict) and "$PARAMETER" in raw:
        value = params[raw["$PARAMETER"]]
        # Compare an aware column with an aware instant, a naive one with the flow's local clock.
        if isinstance(value, datetime) and col is not None and isinstance(col.type, DateTime) and col.type.timezone:
            return params["now_utc"] if raw["$PARAMETER"] == "now" else value
        return value
    return raw


def _between(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    c = t.c[kw["column"]]
    lo, hi = _value(kw.get("min_value"), p, c), _value(kw.get("max_value"), p, c)
    ok = []
    if lo is not None:
        ok.append(c > lo if kw.get("strict_min") else c >= lo)
    if hi is not None:
        ok.append(c < hi if kw.get("strict_max") else c <= hi)
    return and_(c.is_not(None), not_(and_(*ok))) if ok else false()


def _in_set(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    c = t.c[kw["column"]]
    values = _value(kw["value_set"], p)
    return and_(c.is_not(None), c.not_in(values) if values else literal(True))


def _not_in_set(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    c = t.c[kw["column"]]
    values = _value(kw["value_set"], p)
    return and_(c.is_not(None), c.in_(values)) if values else false()


def _regex(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    c = t.c[kw["column"]]
    return and_(c.is_not(None), not_(c.regexp_match(_value(kw["regex"], p))))


def _not_regex(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    c = t.c[kw["column"]]
    return and_(c.is_not(None), c.regexp_match(_value(kw["regex"], p)))


def _pair_fails(a: ColumnElement[Any], b: ColumnElement[Any], ok: ColumnElement[bool]) -> ColumnElement[bool]:
    # As GX on SQL: a pair with a value missing is never a failure (ignore_row_if only changes
    # how many rows GX counts as considered).
    return and_(a.is_not(None), b.is_not(None), not_(ok))


def _a_greater_than_b(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    a, b = t.c[kw["column_A"]], t.c[kw["column_B"]]
    return _pair_fails(a, b, a >= b if kw.get("or_equal") else a > b)


def _pair_equal(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    a: Column[Any] = t.c[kw["column_A"]]
    b: Column[Any] = t.c[kw["column_B"]]
    # As GX on SQL: a value against a missing one is unequal; two missing values are skipped
    # unless ignore_row_if says otherwise.
    ignore = kw.get("ignore_row_if", "both_values_are_missing")
    if ignore == "either_value_is_missing":
        return and_(a.is_not(None), b.is_not(None), a != b)
    if ignore == "neither":
        return or_(a.is_distinct_from(b), and_(a.is_(None), b.is_(None)))
    return a.is_distinct_from(b)


def _unique(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    c = t.c[kw["column"]]
    other = t.alias("dup")
    dup = other.c[kw["column"]]
    repeated = select(dup).where(dup.is_not(None)).group_by(dup).having(func.count() > 1)
    return and_(c.is_not(None), c.in_(repeated))


def _compound_unique(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    names = list(kw["column_list"])
    other = t.alias("dup")
    repeated = select(*[other.c[n] for n in names]).group_by(*[other.c[n] for n in names]).having(func.count() > 1)
    # GX skips a row whose listed values are all missing.
    return and_(or_(*[t.c[n].is_not(None) for n in names]), tuple_(*[t.c[n] for n in names]).in_(repeated))


def _not_null(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    col: Column[Any] = t.c[kw["column"]]
    return col.is_(None)


def _null(t: Table, kw: dict[str, Any], p: Params) -> ColumnElement[bool]:
    col: Column[Any] = t.c[kw["column"]]
    return col.is_not(None)


def _unexpected_rows(t: Table, kw: dict[str, Any], p: Params, quoted_batch: str = "") -> ColumnElement[bool]:
    # The query is the plant's own SQL (like a view) and must select the batch's rows, e.g.
    # SELECT * FROM {batch} WHERE order_no NOT IN (...). {batch} becomes a subquery with an
    # alias of its own, as GX substitutes it, so one query serves both. Rows match on _seq.
    query = str(kw["unexpected_rows_query"]).replace("{batch}", f"(SELECT * FROM {quoted_batch}) AS subselect")
    rows = text(query).columns(column(SEQ)).subquery("unexpected")
    return t.c[SEQ].in_(select(rows.c[SEQ]))


_ROW_RULES: dict[str, Callable[..., ColumnElement[bool]]] = {
    "expect_column_values_to_not_be_null": _not_null,
    "expect_column_values_to_be_null": _null,
    "expect_column_values_to_be_between": _between,
    "expect_column_values_to_be_in_set": _in_set,
    "expect_column_values_to_not_be_in_set": _not_in_set,
    "expect_column_values_to_match_regex": _regex,
    "expect_column_values_to_not_match_regex": _not_regex,
    "expect_column_pair_values_a_to_be_greater_than_b": _a_greater_than_b,
    "expect_column_pair_values_to_be_equal": _pair_equal,
    "expect_column_values_to_be_unique": _unique,
    "expect_compound_columns_to_be_unique": _compound_unique,
    "unexpected_rows_expectation": _unexpected_rows,
}

_ALLOWED_KWARGS: dict[str, set[str]] = {
    "expect_column_values_to_not_be_null": {"column"} | _COMMON_KWARGS,
    "expect_column_values_to_be_null": {"column"} | _COMMON_KWARGS,
    "expect_column_values_to_be_between": {"column", "min_value", "max_value", "strict_min", "strict_max"} | _COMMON_KWARGS,
    "expect_column_values_to_be_in_set": {"column", "value_set"} | _COMMON_KWARGS,
    "expect_column_values_to_not_be_in_set": {"column", "value_set"} | _COMMON_KWARGS,
    "expect_column_values_to_match_regex": {"column", "regex"} | _COMMON_KWARGS,
    "expect_column_values_to_not_match_regex": {"column", "regex"} | _COMMON_KWARGS,
    "expect_column_pair_values_a_to_be_greater_than_b": {"column_A", "column_B", "or_equal", "ignore_row_if"} | _COMMON_KWARGS,
    "expect_column_pair_values_to_be_equal": {"column_A", "column_B", "ignore_row_if"} | _COMMON_KWARGS,
    "expect_column_values_to_be_unique": {"column"} | _COMMON_KWARGS,
    "expect_compound_columns_to_be_unique": {"column_list", "ignore_row_if"} | _COMMON_KWARGS,
    "unexpected_rows_expectation": {"unexpected_rows_query", "description"} | _COMMON_KWARGS,
    "expect_table_row_count_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"} | _COMMON_KWARGS,
}
_OPTIONAL_KWARGS: dict[str, set[str]] = {
    "expect_column_values_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
    "expect_column_pair_values_a_to_be_greater_than_b": {"or_equal", "ignore_row_if"},
    "expect_column_pair_values_to_be_equal": {"ignore_row_if"},
    "expect_compound_columns_to_be_unique": {"ignore_row_if"},
    "unexpected_rows_expectation": {"description"},
    "expect_table_row_count_to_be_between": {"min_value", "max_value", "strict_min", "strict_max"},
}


# --- checking a batch ------------------------------------------------------------------------

def parameters(spec: ExpectationsSpec, now_utc: datetime) -> Params:
    """``$PARAMETER`` values for one run: ``now`` on the target's clock, plus the flow's own."""
    aware = now_utc.replace(tzinfo=UTC) + spec.clock_skew
    local = aware.astimezone(ZoneInfo(spec.timezone)).replace(tzinfo=None)
    return {**spec.parameters, "now": local, "now_utc": aware}


@dataclass
class Outcome:
    """One expectation evaluated on one batch."""

    expectation: Expectation
    rows_checked: int
    rows_failed: int
    predicate: ColumnElement[bool] | None
    sample_keys: list[str] = field(default_factory=list)
    observed: str | None = None

    @property
    def success(self) -> bool:
        # For a batch-level expectation rows_failed is 1 when it failed (see observed).
        return self.rows_failed == 0

    @property
    def blocks(self) -> bool:
        """True when this failure stops the batch from loading."""
        if self.success or self.expectation.action == WARNING:
            return False
        if self.expectation.action == CRITICAL:
            return True
        # quarantine: unless more rows fail than `mostly` allows.
        mostly = self.expectation.mostly
        return mostly is not None and self.rows_failed > (1 - mostly) * self.rows_checked + 1e-9

    @property
    def quarantines(self) -> bool:
        return not self.success and self.expectation.action == QUARANTINE and not self.blocks


@dataclass
class Verdict:
    suite: Suite
    outcomes: list[Outcome]

    @property
    def blocking(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.blocks]

    def checks(self) -> list[CheckResult]:
        return [
            CheckResult(
                kind="expectation", name=o.expectation.name, action=o.expectation.action,
                rows_checked=o.rows_checked, rows_failed=o.rows_failed, success=o.success,
                expectation_type=o.expectation.type, suite=self.suite.name, sample_keys=o.sample_keys,
                detail=o.observed or o.expectation.describe(),
            )
            for o in self.outcomes
        ]

    def message(self, flow: Flow) -> str:
        lines = [
            f"{flow.file}: flow {flow.flow!r}: critical expectations of suite {self.suite.name!r} "
            f"({self.suite.file}) failed; the batch was not loaded, target and watermark are unchanged:"
        ]
        for o in self.blocking:
            share = f"{o.rows_failed} of {o.rows_checked} rows" if o.expectation.row_level else (o.observed or "failed")
            keys = f", e.g. {', '.join(o.sample_keys[:3])}" if o.sample_keys else ""
            lines.append(f"  {o.expectation.name} [{o.expectation.describe()}]: {share}{keys}")
        return "\n".join(lines)

    def _quarantining(self) -> list[tuple[Outcome, ColumnElement[bool]]]:
        # Only row-level expectations quarantine, and each of those has its predicate.
        return [(o, o.predicate) for o in self.outcomes if o.quarantines and o.predicate is not None]

    def failing_rows(self, conn: Connection, staging: Table, columns: list[str]) -> Iterator[list[Reject]]:
        """The rows to quarantine, in batches, each with the names of the expectations it failed."""
        outcomes = self._quarantining()
        if not outcomes:
            return
        flags = [case((p, 1), else_=0).label(f"_failed_{i}") for i, (_, p) in enumerate(outcomes)]
        stg = staging.c
        last = -1
        while True:
            rows = conn.execute(
                select(*[stg[c] for c in columns], stg[SEQ], stg[SOURCE_KEY], *flags)
                .where(or_(*[p for _, p in outcomes]), stg[SEQ] > last)
                .order_by(stg[SEQ])
                .limit(_FETCH_BATCH)
            ).mappings().all()
            if not rows:
                return
            last = rows[-1][SEQ]
            batch = []
            for row in rows:
                failed = [o.expectation for i, (o, _) in enumerate(outcomes) if row[f"_failed_{i}"]]
                reason = f"failed expectations of suite {self.suite.name!r}: " + "; ".join(
                    f"{e.name} [{e.describe()}]" for e in failed
                )
                batch.append(Reject(row[SOURCE_KEY], {c: row[c] for c in columns}, reason))
            yield batch

    def remove_failing(self, conn: Connection, staging: Table) -> int:
        """Delete the quarantined rows from staging so they are not merged; returns how many."""
        outcomes = self._quarantining()
        if not outcomes:
            return 0
        return conn.execute(delete(staging).where(or_(*[p for _, p in outcomes]))).rowcount or 0


def check_batch(
    conn: Connection, staging: Table, suite: Suite, params: Params, unique_key: list[str] | None = None,
) -> Verdict:
    """Evaluate every expectation on the staged batch: one scan counts all row-level failures,
    then one small query per failing expectation fetches sample keys.

    ``unique_key``: columns already unique in staging (the flow's key, after duplicate
    resolution, never NULL there); an expectation that they be unique holds without the
    grouping it would cost (a second of a million-row batch)."""
    quoted = conn.dialect.identifier_preparer.format_table(staging)
    predicates: list[ColumnElement[bool] | None] = []
    for e in suite.expectations:
        if unique_key and _is_key_uniqueness(e, unique_key):
            predicates.append(false())
        elif e.type == "unexpected_rows_expectation":
            predicates.append(_unexpected_rows(staging, e.kwargs, params, quoted))
        elif e.row_level:
            predicates.append(_ROW_RULES[e.type](staging, e.kwargs, params))
        else:
            predicates.append(None)
    counted = [p for p in predicates if p is not None]
    totals = conn.execute(
        select(func.count(), *[func.coalesce(func.sum(case((p, 1), else_=0)), 0) for p in counted]).select_from(staging)
    ).one()
    rows = int(totals[0])
    failures = iter(int(v) for v in totals[1:])
    outcomes = []
    for e, p in zip(suite.expectations, predicates, strict=True):
        if p is not None:
            outcome = Outcome(e, rows, next(failures), p)
        else:
            outcome = _table_outcome(e, rows, params)
        if outcome.rows_failed and p is not None:
            outcome.sample_keys = list(
                conn.execute(
                    select(staging.c[SOURCE_KEY]).where(p).order_by(staging.c[SEQ]).limit(SAMPLE_KEYS)
                ).scalars()
            )
        outcomes.append(outcome)
    return Verdict(suite, outcomes)


def _is_key_uniqueness(e: Expectation, key: list[str]) -> bool:
    if e.type == "expect_column_values_to_be_unique":
        return [e.kwargs["column"]] == key
    if e.type == "expect_compound_columns_to_be_unique":
        return sorted(e.kwargs["column_list"]) == sorted(key)
    return False


def _table_outcome(e: Expectation, rows: int, params: Params) -> Outcome:
    kw = e.kwargs
    lo, hi = _value(kw.get("min_value"), params), _value(kw.get("max_value"), params)
    ok = True
    if lo is not None:
        ok &= rows > lo if kw.get("strict_min") else rows >= lo
    if hi is not None:
        ok &= rows < hi if kw.get("strict_max") else rows <= hi
    bounds = f"[{'' if lo is None else lo}, {'' if hi is None else hi}]"
    return Outcome(e, rows, 0 if ok else 1, None, observed=f"batch has {rows} rows; expected {bounds}")
