"""Lookup crosswalks: pairs read from a database table at the start of a run."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from decimal import Decimal
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Engine, MetaData, Table, and_, select
from sqlalchemy.exc import NoSuchTableError

from etl.config.crosswalks import Crosswalk, LookupSpec, other_side
from etl.config.flows import closest_name
from etl.core.errors import SchemaDriftError
from etl.core.expressions import parse_expression
from etl.core.reasons import quoted
from etl.dialects import dialect_for
from etl.dialects.base import exclude_filter, scope_filter


def _code_text(value: Any) -> str:
    """A code read from a lookup table as the text crosswalks compare: ``42`` for an integer id."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def _is_whole_number(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _reflect_lookup_table(conn: Connection, crosswalk: Crosswalk, spec: LookupSpec) -> Table:
    schema, _, name = spec.table.rpartition(".")
    where = f"{crosswalk.file}: lookup of crosswalk {crosswalk.name!r} on {spec.connection}"
    try:
        table = Table(name, MetaData(), schema=schema or None, autoload_with=conn)
    except NoSuchTableError:
        raise SchemaDriftError(f"{where}: table {spec.table!r} does not exist") from None
    known = list(table.columns.keys())
    missing = [c for c in spec.columns() + list(spec.where) + list(spec.where_not) if c not in known]
    if missing:
        raise SchemaDriftError(
            f"{where}: " + "; ".join(f"column {spec.table}.{c} not found{closest_name(c, known)}" for c in missing)
        )
    return table


def read_lookup(crosswalk: Crosswalk, conn: Connection) -> tuple[Crosswalk, list[str]]:
    """Read a lookup crosswalk's pairs through ``conn``; returns the loaded crosswalk and warnings.

    Rows with NULL on either side, or whose expression fails, are left out. A code that the
    rows pair with two different counterparts is ambiguous: it is left out of that direction,
    so rows holding it wait in quarantine, and a warning names it.
    """
    spec = crosswalk.lookup_spec
    assert spec is not None
    table = _reflect_lookup_table(conn, crosswalk, spec)
    columns = spec.columns()
    stmt = select(*[table.c[c] for c in columns])
    filters = [scope_filter(table, dict(spec.where)), exclude_filter(table, dict(spec.where_not))]
    if any(f is not None for f in filters):
        stmt = stmt.where(and_(*[f for f in filters if f is not None]))
    rows = conn.execute(stmt).all()
    # Plain Python values (object dtype): an integer id stays an int, never a float.
    frame = pd.DataFrame(
        {c: pd.Series([r[i] for r in rows], dtype=object) for i, c in enumerate(columns)}, columns=columns
    )
    erp = parse_expression(spec.erp).evaluate(frame).values
    mes = parse_expression(spec.mes).evaluate(frame).values
    pairs = [(e, m) for e, m in zip(erp, mes, strict=True) if e is not None and m is not None]
    maps = {
        "mes": _one_way((_code_text(e), _code_text(m)) for e, m in pairs),
        "erp": _one_way((_code_text(m), _code_text(e)) for e, m in pairs),
    }
    # Injective both ways: a code left out as ambiguous takes its counterparts out of the other
    # direction too, else two ERP codes would write to one MES code (or post as one ERP code).
    taken_out: dict[str, set[str]] = {}
    for side, (_, ambiguous) in maps.items():
        reverse = maps[other_side(side)][0]
        taken_out[other_side(side)] = {c for c, (code, _) in reverse.items() if code in ambiguous}
        for counterpart in taken_out[other_side(side)]:
            del reverse[counterpart]
    warnings = []
    ambiguity = []
    for side, (_, ambiguous) in maps.items():
        if ambiguous:
            named = [
                f"{c!r} with " + " and ".join(sorted({
                    repr(_code_text(m if side == "mes" else e)) for e, m in pairs
                    if _code_text(e if side == "mes" else m) == c
                }))
                for c in sorted(ambiguous)[:5]
            ]
            shown = ", ".join(named) + (" ..." if len(ambiguous) > 5 else "")
            other = "ERP" if side == "mes" else "MES"
            warnings.append(
                f"crosswalk {crosswalk.name!r}: {len(ambiguous)} {other} code(s) match more than one row of "
                f"{spec.table} ({shown}); rows with them wait in quarantine (narrow the lookup's where)"
            )
            # Rows wait for it both ways: with an ambiguous code, or with a counterpart taken out.
            ambiguity.append((side, frozenset(ambiguous), warnings[-1]))
            ambiguity.append((other_side(side), frozenset(taken_out[other_side(side)]), warnings[-1]))
    whole = frozenset(
        side for side, values in (("erp", [e for e, _ in pairs]), ("mes", [m for _, m in pairs]))
        if values and all(_is_whole_number(v) for v in values)
    )
    loaded = replace(
        crosswalk, to_mes=maps["mes"][0], to_erp=maps["erp"][0], loaded=True, whole_number_sides=whole,
        ambiguity=tuple(ambiguity),
    )
    return loaded, warnings


def _one_way(pairs: Iterable[tuple[str, str]]) -> tuple[dict[str, tuple[str, Decimal]], set[str]]:
    mapping: dict[str, tuple[str, Decimal]] = {}
    ambiguous: set[str] = set()
    for code, counterpart in pairs:
        known = mapping.get(code)
        if known is not None and known[0] != counterpart:
            ambiguous.add(code)
        mapping[code] = (counterpart, Decimal(1))
    for code in ambiguous:
        del mapping[code]
    return mapping, ambiguous


def ambiguity_waiting(crosswalk: Crosswalk, side: str, reasons: Iterable[str]) -> str | None:
    """The warning of ``crosswalk``'s ambiguous codes towards ``side`` if one of them is in a
    reason of a row that waits (``reasons``), else None: a warning is true or not shown."""
    for ambiguous_side, codes, warning in crosswalk.ambiguity:
        if ambiguous_side != side:
            continue
        # The code as a reject reason shows it (etl.rules.transform): quoted text, or an id bare.
        prefix = f"crosswalk {crosswalk.name!r} has no {side.upper()} code for "
        shown = {f"{prefix}{form} (column " for code in codes for form in (quoted(code), code)}
        if any(s in reason for reason in reasons for s in shown):
            return warning
    return None


def resolve_lookups(
    crosswalks: dict[str, Crosswalk], names: Iterable[str], engine_for: Callable[[str], Engine],
) -> tuple[dict[str, Crosswalk], list[str]]:
    """A copy of ``crosswalks`` with the lookups among ``names`` read from their databases, each
    once, in a read-only transaction; plus warnings. The caller's dictionary is left as it was,
    so the next run reads the lookup afresh."""
    resolved = dict(crosswalks)
    warnings: list[str] = []
    for name in sorted(set(names)):
        crosswalk = resolved.get(name)
        if crosswalk is None or crosswalk.loaded or crosswalk.lookup_spec is None:
            continue
        with engine_for(crosswalk.lookup_spec.connection).connect() as conn:
            conn.begin()
            dialect_for(conn).begin_read(conn)
            resolved[name], found = read_lookup(crosswalk, conn)
            conn.rollback()
        warnings += found
    return resolved, warnings
