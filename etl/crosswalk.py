"""Crosswalks (对照表): translate codes between the ERP and the MES, in both directions.

A crosswalk is a table of pairs (CSV columns ``erp,mes`` plus optional ``factor`` and
``direction``), a rule (a regular expression with named groups per side and a format to
rebuild the other side), or both: the table wins where it knows a code, the rule covers the
rest. One definition serves both directions. A ``factor`` turns a quantity in the ERP unit into
the MES unit (KG -> g: 1000); going back divides by it.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from etl.errors import ConfigError, ConfigProblem, display_path

SIDES = ("erp", "mes")
_FORMAT_FIELD = re.compile(r"\{(\w+)\}")
_DIRECTIONS = {"both", "to_mes", "to_erp"}


def other_side(side: str) -> str:
    return "mes" if side == "erp" else "erp"


@dataclass(frozen=True)
class RuleSide:
    """How one side's codes look: a pattern with named groups and a format that rebuilds it."""

    pattern: re.Pattern[str]
    format: str

    def render(self, groups: dict[str, str]) -> str:
        return _FORMAT_FIELD.sub(lambda m: groups[m.group(1)], self.format)


@dataclass(frozen=True)
class Crosswalk:
    """Code translation in both directions; ``to_mes[code] = (mes_code, factor)``."""

    name: str
    to_mes: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    to_erp: dict[str, tuple[str, Decimal]] = field(default_factory=dict)
    rule: dict[str, RuleSide] | None = None

    def lookup(self, code: Any, to: str) -> tuple[str, Decimal] | None:
        """The counterpart of ``code`` on side ``to`` and the quantity factor, or None."""
        if code is None or (isinstance(code, float) and code != code):
            return None
        code = str(code)
        table = self.to_mes if to == "mes" else self.to_erp
        hit = table.get(code)
        if hit is not None:
            return hit
        if self.rule is not None:
            match = self.rule[other_side(to)].pattern.match(code)
            if match:
                return self.rule[to].render(match.groupdict()), Decimal(1)
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


def _read_table(path: Path, rel: str, problems: list[ConfigProblem]) -> tuple[dict, dict]:
    """Read a CSV crosswalk table into both direction maps, reporting conflicts by line."""
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
        if direction in ("both", "to_erp"):
            if mes in to_erp:
                problems.append(ConfigProblem(rel, where, f"MES code {mes!r} already maps to {to_erp[mes][0]!r}"))
            to_erp[mes] = (erp, Decimal(1) / factor)
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
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        problems.append(ConfigProblem(rel, "", f"malformed YAML: {exc}"))
        return None, None
    if not isinstance(raw, dict):
        problems.append(ConfigProblem(rel, "", "expected a mapping"))
        return None, None
    unknown = set(raw) - {"crosswalk", "description", "table", "rule"}
    for key in sorted(unknown):
        problems.append(ConfigProblem(rel, key, "unknown key"))
    name = raw.get("crosswalk")
    if name != path.stem:
        problems.append(ConfigProblem(rel, "crosswalk", f"must be {path.stem!r}, the file's name"))
        return None, None
    if "table" not in raw and "rule" not in raw:
        problems.append(ConfigProblem(rel, "", "needs a table, a rule, or both"))
        return None, None
    to_mes: dict = {}
    to_erp: dict = {}
    table_path = None
    if "table" in raw:
        table_path = path.parent / str(raw["table"])
        if not table_path.is_file():
            problems.append(ConfigProblem(rel, "table", f"file {raw['table']!r} not found next to it"))
        else:
            to_mes, to_erp = _read_table(table_path, display_path(table_path), problems)
    rule = _read_rule(raw["rule"], rel, problems) if "rule" in raw else None
    return Crosswalk(name, to_mes, to_erp, rule), table_path


def load_crosswalks(directory: Path) -> dict[str, Crosswalk]:
    """Load every crosswalk in ``directory``: ``*.yaml`` definitions and stand-alone ``*.csv``.

    A CSV named by a YAML file's ``table`` belongs to that crosswalk. Raises ConfigError with
    every problem found (conflicting pairs, bad factors, broken rules), each with file and line.
    """
    problems: list[ConfigProblem] = []
    result: dict[str, Crosswalk] = {}
    owned: set[Path] = set()
    for path in sorted(directory.glob("*.y*ml")):
        crosswalk, table = _load_yaml_crosswalk(path, problems)
        if crosswalk is not None:
            result[crosswalk.name] = crosswalk
        if table is not None:
            owned.add(table.resolve())
    for path in sorted(directory.glob("*.csv")):
        if path.resolve() in owned:
            continue
        if path.stem in result:
            problems.append(ConfigProblem(display_path(path), "", f"crosswalk {path.stem!r} is also defined by a YAML file"))
            continue
        to_mes, to_erp = _read_table(path, display_path(path), problems)
        result[path.stem] = Crosswalk(path.stem, to_mes, to_erp)
    if problems:
        raise ConfigError(problems)
    return result

