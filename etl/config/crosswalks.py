"""Crosswalks (对照表): translate codes between the ERP and the MES, in both directions.

A crosswalk is a table of pairs (CSV columns ``erp,mes`` plus optional ``factor`` and
``direction``), a rule (a regular expression with named groups per side and a format to
rebuild the other side), or both: the table wins where it knows a code, the rule covers the
rest. One definition serves both directions. A ``factor`` turns a quantity in the ERP unit into
the MES unit (KG -> g: 1000); going back divides by it.

A crosswalk can also be a ``lookup``: its pairs are read from a table on one of the databases
(a product table's ``default_code`` and ``id``, a unit's name and id), at the start of each run
that uses it, once, and serve both directions for that run. :func:`load_crosswalks` only checks
its definition (``python -m etl check`` reads no lookup); :func:`resolve_lookups` reads it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pandas as pd
from pydantic import Field, ValidationError, field_validator

from etl.config.flows import Identifier, TableName, _Model, check_connection_id, closest_name, problems_from_validation, read_yaml
from etl.core.errors import ConfigError, ConfigProblem, CrosswalkNotLoaded, display_path
from etl.core.expressions import ExpressionError, parse_expression
from etl.core.types import Scalar

SIDES = ("erp", "mes")
_FORMAT_FIELD = re.compile(r"\{(\w+)\}")
_DIRECTIONS = {"both", "to_mes", "to_erp"}
_ONE = Decimal(1)


def other_side(side: str) -> str:
    return "mes" if side == "erp" else "erp"


@dataclass(frozen=True)
class RuleSide:
    """How one side's codes look: a pattern with named groups and a format that rebuilds it."""

    pattern: re.Pattern[str]
    format: str
    #: ``format`` for str.format_map: its fields as they are, every other brace doubled. A batch
    #: can hold 250,000 distinct order numbers; this renders them at twice the speed of a re.sub.
    template: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        pieces = _FORMAT_FIELD.split(self.format)  # literal, field name, literal, ...
        template = "".join(
            piece.replace("{", "{{").replace("}", "}}") if i % 2 == 0 else "{" + piece + "}"
            for i, piece in enumerate(pieces)
        )
        object.__setattr__(self, "template", template)

    def render(self, groups: dict[str, str]) -> str:
        return self.template.format_map(groups)


class LookupSpec(_Model):
    """Where a lookup crosswalk reads its pairs: one table on one connection.

    ``erp`` and ``mes`` are expressions over the table's columns (usually a column name, or
    e.g. ``json_get(name, 'en_US')``); ``where`` / ``where_not`` filter the rows like a flow's
    source (values bound), e.g. ``{active: true}`` to leave archived duplicates out.
    """

    connection: str
    table: TableName
    erp: str
    mes: str
    where: dict[Identifier, Scalar | list[Scalar]] = Field(default_factory=dict)
    where_not: dict[Identifier, Scalar | list[Scalar]] = Field(default_factory=dict)

    @field_validator("connection")
    @classmethod
    def _connection_id(cls, value: str) -> str:
        return check_connection_id(value)

    @field_validator("erp", "mes")
    @classmethod
    def _expression(cls, value: str) -> str:
        try:
            parse_expression(value)
        except ExpressionError as exc:
            raise ValueError(str(exc)) from None
        return value

    def columns(self) -> list[str]:
        """The table's columns the lookup reads, in a stable order."""
        return sorted(parse_expression(self.erp).columns | parse_expression(self.mes).columns)


@dataclass(frozen=True)
class Crosswalk:
    """Code translation in both directions; ``to_mes[code] = (mes_code, factor)``."""

    name: str
    to_mes: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    to_erp: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    rule: dict[str, RuleSide] | None = None
    #: Set for a lookup crosswalk: its pairs come from this table, read by resolve_lookups.
    lookup_spec: LookupSpec | None = None
    #: False for a lookup not read yet; translating with it then raises CrosswalkNotLoaded.
    loaded: bool = True
    #: Sides whose codes are all whole numbers (surrogate ids): they arrive as integers.
    whole_number_sides: frozenset[str] = frozenset()
    #: File the crosswalk is defined in, for messages.
    file: str = ""
    #: Table entries that collide with the rule, by the side they translate to: a problem only
    #: where a flow translates that way (load_project refuses them there).
    collisions: tuple[tuple[str, ConfigProblem], ...] = ()
    #: A lookup's codes that name more than one row, left out: (side translated to, codes, the
    #: warning naming them). A run shows the warning only where rows with them wait.
    ambiguity: tuple[tuple[str, frozenset[str], str], ...] = ()

    def entries(self, to: str) -> dict[str, tuple[str, Decimal]]:
        """The table's pairs towards side ``to``: ``{code: (counterpart, factor)}``."""
        return self.to_mes if to == "mes" else self.to_erp

    def lookup(self, code: Any, to: str) -> tuple[str, Decimal] | None:
        """The counterpart of ``code`` on side ``to`` and the quantity factor, or None."""
        if not self.loaded:
            raise CrosswalkNotLoaded(
                f"{self.file}: crosswalk {self.name!r} is a lookup and has not been read from "
                f"{self.lookup_spec.connection if self.lookup_spec else '?'} (resolve_lookups)"
            )
        if code is None or (isinstance(code, float) and code != code):
            return None
        code = str(code)
        hit = self.entries(to).get(code)
        if hit is not None:
            return hit
        if self.rule is not None:
            match = self.rule[other_side(to)].pattern.match(code)
            if match:
                return self.rule[to].render(match.groupdict()), _ONE
        return None

    def translate(self, values: pd.Series, to: str) -> tuple[pd.Series, pd.Series]:
        """Translate a column. Returns (codes, factors); both NULL where there is no entry.

        Each distinct code is looked up once, so large columns with few codes stay cheap.
        """
        uniques = pd.unique(values[values.notna()])
        hits = {code: self.lookup(code, to) for code in uniques}
        codes = {k: v[0] for k, v in hits.items() if v is not None}
        factors = {k: v[1] for k, v in hits.items() if v is not None}
        return (
            values.map(codes).astype(object),
            values.map(factors).astype(object),
        )


def _parse_factor(raw: str | None, where: str, file: str, problems: list[ConfigProblem]) -> Decimal:
    if raw is None or raw.strip() == "":
        return Decimal(1)
    try:
        factor = Decimal(raw.strip())
    except InvalidOperation:
        problems.append(ConfigProblem(file, where, f"factor {raw!r} is not a number"))
        return Decimal(1)
    if not factor.is_finite() or factor <= 0:
        problems.append(ConfigProblem(file, where, f"factor {raw!r} must be a positive finite number"))
        return Decimal(1)
    return factor


def _read_table(
    path: Path, rel: str, problems: list[ConfigProblem], lines: dict[tuple[str, str], int] | None = None,
) -> tuple[dict, dict]:
    """Read a CSV crosswalk table into both direction maps, reporting conflicts by line.

    ``lines``, if given, receives the line of each pair: ``{(to, code): line}``."""
    to_mes: dict[str, tuple[str, Decimal]] = {}
    to_erp: dict[str, tuple[str, Decimal]] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(rel, "", f"cannot read: {exc}"))
        return to_mes, to_erp
    reader = csv.DictReader(text.splitlines())
    header = reader.fieldnames or []
    if not {"erp", "mes"} <= set(header):
        problems.append(ConfigProblem(rel, "header", f"needs columns erp,mes (found {','.join(header) or 'none'})"))
        return to_mes, to_erp
    unknown = set(header) - {"erp", "mes", "factor", "direction"}
    if unknown:
        problems.append(ConfigProblem(rel, "header", f"unknown columns: {', '.join(sorted(unknown))}"))
    for line_no, row in enumerate(reader, start=2):
        where = f"line {line_no}"
        erp, mes = (row.get("erp") or "").strip(), (row.get("mes") or "").strip()
        if not erp or not mes:
            problems.append(ConfigProblem(rel, where, "erp and mes codes must both be given"))
            continue
        direction = (row.get("direction") or "both").strip() or "both"
        if direction not in _DIRECTIONS:
            problems.append(ConfigProblem(rel, where, f"direction {direction!r} is not one of both, to_mes, to_erp"))
            continue
        factor = _parse_factor(row.get("factor"), where, rel, problems)
        if direction in ("both", "to_mes"):
            if erp in to_mes:
                problems.append(ConfigProblem(rel, where, f"ERP code {erp!r} already maps to {to_mes[erp][0]!r}"))
            to_mes[erp] = (mes, factor)
            if lines is not None:
                lines[("mes", erp)] = line_no
        if direction in ("both", "to_erp"):
            if mes in to_erp:
                problems.append(ConfigProblem(rel, where, f"MES code {mes!r} already maps to {to_erp[mes][0]!r}"))
            to_erp[mes] = (erp, Decimal(1) / factor)
            if lines is not None:
                lines[("erp", mes)] = line_no
    return to_mes, to_erp


def _read_rule(raw: Any, rel: str, problems: list[ConfigProblem]) -> dict[str, RuleSide] | None:
    if not isinstance(raw, dict) or set(raw) != set(SIDES):
        problems.append(ConfigProblem(rel, "rule", "needs exactly the keys erp and mes"))
        return None
    sides: dict[str, RuleSide] = {}
    for side in SIDES:
        spec = raw[side]
        if not isinstance(spec, dict) or set(spec) != {"pattern", "format"}:
            problems.append(ConfigProblem(rel, f"rule.{side}", "needs exactly the keys pattern and format"))
            return None
        try:
            pattern = re.compile(str(spec["pattern"]))
        except re.error as exc:
            problems.append(ConfigProblem(rel, f"rule.{side}.pattern", f"invalid regular expression: {exc}"))
            return None
        sides[side] = RuleSide(pattern, str(spec["format"]))
    for side in SIDES:
        needed = set(_FORMAT_FIELD.findall(sides[side].format))
        offered = set(sides[other_side(side)].pattern.groupindex)
        if needed - offered:
            problems.append(
                ConfigProblem(
                    rel,
                    f"rule.{side}.format",
                    f"uses {', '.join(sorted(needed - offered))}, which rule.{other_side(side)}.pattern does not capture",
                )
            )
            return None
    return sides


def _load_yaml_crosswalk(path: Path, problems: list[ConfigProblem]) -> tuple[Crosswalk | None, Path | None]:
    rel = display_path(path)
    raw, errs = read_yaml(path, rel)
    if errs:
        problems += errs
        return None, None
    if not isinstance(raw, dict):
        problems.append(ConfigProblem(rel, "", "expected a mapping"))
        return None, None
    unknown = set(raw) - {"crosswalk", "description", "table", "rule", "lookup"}
    for key in sorted(unknown):
        hint = closest_name(str(key), ["crosswalk", "description", "table", "rule", "lookup"])
        problems.append(ConfigProblem(rel, str(key), f"unknown key{hint}"))
    name = raw.get("crosswalk")
    if name != path.stem:
        problems.append(ConfigProblem(rel, "crosswalk", f"must be {path.stem!r}, the file's name"))
        return None, None
    if "lookup" in raw:
        return _lookup_crosswalk(name, raw, rel, problems), None
    if "table" not in raw and "rule" not in raw:
        problems.append(ConfigProblem(rel, "", "needs a table, a rule, a lookup, or a table and a rule"))
        return None, None
    to_mes: dict = {}
    to_erp: dict = {}
    table_path = None
    lines: dict[tuple[str, str], int] = {}
    if "table" in raw:
        table_path = path.parent / str(raw["table"])
        if not table_path.is_file():
            problems.append(ConfigProblem(rel, "table", f"file {raw['table']!r} not found next to it"))
        else:
            to_mes, to_erp = _read_table(table_path, display_path(table_path), problems, lines)
    rule = _read_rule(raw["rule"], rel, problems) if "rule" in raw else None
    crosswalk = Crosswalk(name, to_mes, to_erp, rule)
    if rule is not None and table_path is not None:
        crosswalk = replace(crosswalk, collisions=table_rule_collisions(crosswalk, display_path(table_path), lines))
    return crosswalk, table_path


def table_rule_collisions(
    crosswalk: Crosswalk, rel: str, lines: dict[tuple[str, str], int],
) -> tuple[tuple[str, ConfigProblem], ...]:
    """Pairs of the table that make the crosswalk non-injective together with its rule.

    In each direction a table entry ``code -> counterpart`` collides when the rule gives the
    same ``counterpart`` to another code the table does not know: both would be written to (or
    posted as) one code, the second overwriting the first.
    """
    rule = crosswalk.rule
    if rule is None:
        return ()
    problems: list[tuple[str, ConfigProblem]] = []
    for to in SIDES:
        source = other_side(to)
        names = {"erp": "ERP", "mes": "MES"}
        for code, (counterpart, _) in crosswalk.entries(to).items():
            back = rule[to].pattern.match(counterpart)
            if not back:
                continue
            rival = rule[source].render(back.groupdict())
            forward = rule[source].pattern.match(rival)
            if rival == code or rival in crosswalk.entries(to) or not forward:
                continue
            if rule[to].render(forward.groupdict()) != counterpart:
                continue
            line = lines.get((to, code))
            problems.append((to, ConfigProblem(
                rel, f"line {line}" if line else "",
                f"{names[source]} code {code!r} maps to {names[to]} {counterpart!r}, which the rule of crosswalk "
                f"{crosswalk.name!r} gives to {names[source]} {rival!r}: two {names[source]} codes would share "
                f"{names[to]} {counterpart!r} (add {rival!r} to the table with its own code, or use another code)",
            )))
    return tuple(problems)


def _lookup_crosswalk(name: str, raw: dict[str, Any], rel: str, problems: list[ConfigProblem]) -> Crosswalk | None:
    """A lookup crosswalk's definition, checked without connecting; its pairs come at run time."""
    for other in ("table", "rule"):
        if other in raw:
            problems.append(ConfigProblem(rel, other, "a lookup crosswalk takes its pairs from the lookup; remove this key"))
    if not isinstance(raw["lookup"], dict):
        problems.append(ConfigProblem(rel, "lookup", "expected a mapping (connection, table, erp, mes, where)"))
        return None
    try:
        spec = LookupSpec.model_validate(raw["lookup"])
    except ValidationError as exc:
        for problem in problems_from_validation(rel, exc, LookupSpec):
            path = f"lookup.{problem.path}" if problem.path else "lookup"
            problems.append(replace(problem, path=path))
        return None
    return Crosswalk(name, lookup_spec=spec, loaded=False, file=rel)


def load_crosswalks(directory: Path) -> dict[str, Crosswalk]:
    """Load every crosswalk in ``directory``: ``*.yaml`` definitions and stand-alone ``*.csv``.

    A CSV named by a YAML file's ``table`` belongs to that crosswalk. Raises ConfigError with
    every problem found (conflicting pairs, bad factors, broken rules), each with file and line.
    """
    result, problems, _ = read_crosswalks(directory)
    if problems:
        raise ConfigError(problems)
    return result


def read_crosswalks(directory: Path) -> tuple[dict[str, Crosswalk], list[ConfigProblem], set[str]]:
    """What :func:`load_crosswalks` loads, without raising: the crosswalks that loaded whole,
    every problem, and the names of the crosswalks whose files have problems (a reference to
    one of those follows from its file's problem and needs no message of its own)."""
    problems: list[ConfigProblem] = []
    result: dict[str, Crosswalk] = {}
    broken: set[str] = set()
    owned: set[Path] = set()
    for path in sorted(directory.glob("*.y*ml")):
        before = len(problems)
        crosswalk, table = _load_yaml_crosswalk(path, problems)
        if len(problems) > before:
            broken.add(path.stem)
        elif crosswalk is not None:
            result[crosswalk.name] = crosswalk
        if table is not None:
            owned.add(table.resolve())
    for path in sorted(directory.glob("*.csv")):
        if path.resolve() in owned:
            continue
        if path.stem in result or path.stem in broken:
            problems.append(ConfigProblem(display_path(path), "", f"crosswalk {path.stem!r} is also defined by a YAML file"))
            continue
        before = len(problems)
        to_mes, to_erp = _read_table(path, display_path(path), problems)
        if len(problems) > before:
            broken.add(path.stem)
        else:
            result[path.stem] = Crosswalk(path.stem, to_mes, to_erp)
    return result, problems, broken
