"""Great Expectations suites: one JSON file per flow, read and checked against the flow."""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl.config.flows import ExpectationsSpec, Flow
from etl.config.user_sql import read_only_problem
from etl.core.errors import ConfigError, ConfigProblem, display_path

QUARANTINE = "quarantine"

CRITICAL = "critical"

WARNING = "warning"

_ACTIONS = (QUARANTINE, CRITICAL, WARNING)
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
        return _row_level(self.type)

    def describe(self) -> str:
        cols = [str(self.kwargs[k]) for k in ("column", "column_A", "column_B") if k in self.kwargs]
        cols += [str(c) for c in self.kwargs.get("column_list", [])]
        return f"{self.type}({', '.join(cols)})" if cols else self.type


@dataclass(frozen=True)
class Suite:
    name: str
    file: str
    expectations: tuple[Expectation, ...]


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
    if kind == "unexpected_rows_expectation" and isinstance(kwargs.get("unexpected_rows_query"), str):
        problem = query_problem(kwargs["unexpected_rows_query"])
        if problem is not None:
            problems.append(ConfigProblem(rel, f"{where}.kwargs.unexpected_rows_query", f"refused: {problem}"))
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
        action = WARNING if severity in ("warning", "info") else (QUARANTINE if _row_level(kind) else CRITICAL)
    if action not in _ACTIONS:
        problems.append(ConfigProblem(rel, f"{where}.meta.on_failure", f"must be one of {', '.join(_ACTIONS)}"))
    elif action == QUARANTINE and not _row_level(kind):
        problems.append(ConfigProblem(rel, f"{where}.meta.on_failure", f"{kind} is about the whole batch: it cannot quarantine rows"))
    if len(problems) > before:
        return None
    return Expectation(name, kind, dict(kwargs), action, None if mostly is None else float(mostly), where)


def batch_query(query: str, quoted_batch: str) -> str:
    """An unexpected_rows_query with ``{batch}`` replaced as GX replaces it: a subquery with an
    alias of its own, so one query serves both."""
    return query.replace("{batch}", f"(SELECT * FROM {quoted_batch}) AS subselect")


def query_problem(query: str, dialect: str | None = None) -> str | None:
    """Why an unexpected_rows_query is not one statement that only reads (see user_sql), or None."""
    return read_only_problem(batch_query(query, "etl_batch"), dialect)


def _default_name(kind: str, kwargs: dict[str, Any]) -> str:
    cols = [str(kwargs[k]) for k in ("column", "column_A", "column_B") if isinstance(kwargs.get(k), str)]
    cols += [str(c) for c in kwargs.get("column_list", []) or []]
    short = kind.removeprefix("expect_")
    return f"{short}({', '.join(cols)})" if cols else short


def _hint(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


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


#: Expectations about the whole batch; every other one judges each row and can quarantine it.
_TABLE_RULES = frozenset({"expect_table_row_count_to_be_between"})


def _row_level(kind: str) -> bool:
    return kind in _ALLOWED_KWARGS and kind not in _TABLE_RULES
