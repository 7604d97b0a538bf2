"""What the databases actually look like: reflected tables, column kinds, drift checks.

Everything a flow maps is checked against the live source and target before any write, so a
column renamed or dropped upstream stops the run with both names in the message instead of
loading NULLs.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from sqlalchemy import Connection, MetaData, Table, inspect
from sqlalchemy.exc import NoSuchTableError

from etl.config.flows import Flow
from etl.core.errors import SchemaDriftError


def reflect_table(conn: Connection, name: str, *, role: str, flow: Flow) -> Table:
    """Reflect ``name`` (``table`` or ``schema.table``); SchemaDriftError if it does not exist."""
    schema, _, table = name.rpartition(".")
    try:
        return Table(table, MetaData(), schema=schema or None, autoload_with=conn)
    except NoSuchTableError:
        known = inspect(conn).get_table_names(schema=schema or None)
        hint = _closest(table, known)
        raise SchemaDriftError(
            f"{flow.file}: flow {flow.flow!r}: {role} table {name!r} does not exist{hint}"
        ) from None


def _closest(name: str, candidates: list[str]) -> str:
    match = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


@dataclass(frozen=True)
class SchemaReport:
    """Outcome of checking a flow against the live tables. Unmapped source columns are news,
    not errors: a plant adds columns all the time."""

    new_source_columns: list[str]
    warnings: list[str]


def check_flow_schema(flow: Flow, source: Table, target: Table) -> SchemaReport:
    """Check every column the flow reads and writes exists; raise SchemaDriftError listing all
    that do not, each with the closest existing name (a rename shows as both names)."""
    problems = []
    source_cols = list(source.columns.keys())
    target_cols = list(target.columns.keys())
    for col in flow.source_columns():
        if col not in source_cols:
            problems.append(
                f"source column {source.name}.{col} not found{_closest(col, [c for c in source_cols if c not in flow.source_columns()])}"
            )
    for spec in flow.columns:
        if spec.target not in target_cols:
            problems.append(
                f"target column {target.name}.{spec.target} not found{_closest(spec.target, target_cols)}"
            )
    filters = list(flow.source.where) + list(flow.source.where_not)
    for name in filters + ([flow.source.plant_column] if flow.source.plant_column else []):
        if name not in source_cols:
            problems.append(f"source filter column {source.name}.{name} not found{_closest(name, source_cols)}")
    for option, name in _load_option_columns(flow):
        if name not in target_cols:
            problems.append(f"{option} {target.name}.{name} not found{_closest(name, target_cols)}")
    if flow.deletes.column and flow.deletes.column not in target_cols:
        problems.append(f"deletes.column {target.name}.{flow.deletes.column} not found")
    for name in flow.deletes.scope:
        if name not in target_cols:
            problems.append(f"deletes.scope column {target.name}.{name} not found")
    if problems:
        raise SchemaDriftError(
            f"{flow.file}: flow {flow.flow!r}: schema drift detected before any write:\n  "
            + "\n  ".join(problems)
        )
    warnings = []
    nullable = flow.cursor is not None and bool(source.columns[flow.cursor.column].nullable)
    if flow.cursor is not None and nullable and not flow.cursor.allows_null:
        warnings.append(
            f"cursor column {source.name}.{flow.cursor.column} allows NULL: such rows are read "
            f"only by a full refresh (set cursor.allows_null: true in {flow.file} to acknowledge it)"
        )
    if flow.cursor is not None and flow.cursor.allows_null and not nullable:
        warnings.append(
            f"{flow.file}: cursor.allows_null: true, but cursor column {source.name}.{flow.cursor.column} "
            "is NOT NULL: remove the acknowledgement"
        )
    used = set(flow.source_columns())
    new_cols = [c for c in source_cols if c not in used]
    return SchemaReport(new_source_columns=new_cols, warnings=warnings)


def _load_option_columns(flow: Flow) -> list[tuple[str, str]]:
    """(option, target column) of the load options that name target columns."""
    named = []
    if flow.target.generated_key:
        named.append(("target.generated_key", flow.target.generated_key))
    if flow.target.document_number:
        named.append(("target.document_number.column", flow.target.document_number.column))
    return named


def has_unique_key(conn: Connection, table: Table, key: list[str]) -> bool:
    """True if the target has a primary key or unique constraint/index on exactly ``key``."""
    wanted = set(key)
    pk = {c.name for c in table.primary_key.columns}
    if pk == wanted:
        return True
    insp = inspect(conn)
    for uc in insp.get_unique_constraints(table.name, schema=table.schema):
        if set(uc["column_names"]) == wanted:
            return True
    for ix in insp.get_indexes(table.name, schema=table.schema):
        if ix.get("unique") and set(ix["column_names"]) == wanted:
            return True
    return False
