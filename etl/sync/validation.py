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

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    MetaData,
    SmallInteger,
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

from etl.config.flows import ExpectationsSpec, Flow
from etl.config.suites import CRITICAL, QUARANTINE, WARNING, Expectation, Suite, batch_query, query_problem
from etl.core.errors import ConfigError, ConfigProblem
from etl.core.rows import SEQ, SOURCE_KEY, Reject
from etl.dialects import dialect_for
from etl.sync.ledger import CheckResult

SAMPLE_KEYS = 10
_FETCH_BATCH = 10_000

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


def _unexpected_seqs(conn: Connection, staging: Table, suite: Suite, e: Expectation) -> list[int]:
    """The ``_seq`` of every staged row the expectation's query selects, read where the query
    cannot write. Raises ConfigError naming the suite file and expectation when the query is
    not one statement that only reads, or when the database refuses it as a write.

    The query is the plant's own SQL (like a view) and must select the batch's rows, e.g.
    SELECT * FROM {batch} WHERE order_no NOT IN (...)."""
    where = f"{e.where}.kwargs.unexpected_rows_query" if e.where else "kwargs.unexpected_rows_query"
    raw = str(e.kwargs["unexpected_rows_query"])
    problem = query_problem(raw, conn.dialect.name)
    if problem is not None:
        raise ConfigError([ConfigProblem(suite.file, where, f"{e.name}: refused on {conn.dialect.name}: {problem}")])
    # The line break ends a trailing -- comment before the subquery's closing parenthesis.
    query = batch_query(raw, conn.dialect.identifier_preparer.format_table(staging)) + "\n"
    rows = text(query).columns(column(SEQ)).subquery("unexpected")
    try:
        with dialect_for(conn).read_only(conn):
            return [int(v) for v in conn.execute(select(rows.c[SEQ])).scalars()]
    except DBAPIError as exc:
        reason = str(exc.orig).strip().splitlines()[0] if str(exc.orig).strip() else type(exc.orig).__name__
        raise ConfigError([ConfigProblem(suite.file, where, f"{e.name}: the query failed on {conn.dialect.name}: {reason}")]) from None


def _unexpected_table(conn: Connection, staging: Table) -> Table:
    """A temporary table of (expectation number, _seq) beside staging, for what the suite's
    queries selected: read once, read-only, then matched by every later statement."""
    dialect = dialect_for(conn)
    table = Table(
        f"{staging.name}_unexpected", MetaData(),
        Column("rule", SmallInteger, nullable=False), Column(SEQ, BigInteger, nullable=False),
        prefixes=dialect.staging_prefixes(), **dialect.staging_table_options(),
    )
    dialect.drop_staging(conn, table)
    table.create(conn)
    return table


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
    predicates: list[ColumnElement[bool] | None] = []
    unexpected: Table | None = None
    for i, e in enumerate(suite.expectations):
        if unique_key and _is_key_uniqueness(e, unique_key):
            predicates.append(false())
        elif e.type == "unexpected_rows_expectation":
            seqs = _unexpected_seqs(conn, staging, suite, e)
            if unexpected is None:
                unexpected = _unexpected_table(conn, staging)
            for start in range(0, len(seqs), _FETCH_BATCH):
                conn.execute(unexpected.insert(), [{"rule": i, SEQ: s} for s in seqs[start:start + _FETCH_BATCH]])
            predicates.append(staging.c[SEQ].in_(select(unexpected.c[SEQ]).where(unexpected.c.rule == i)))
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
