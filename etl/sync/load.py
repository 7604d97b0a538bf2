"""Checks that need the target before rows are merged (parents present, keys unique), and the
choice of merge for a flow.

All run inside the run's transaction. Parent lookups are batched per chunk and cached for the
run; duplicate keys are resolved on the staging table, so memory does not grow with the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
from sqlalchemy import Connection, Table, and_, delete, exists, func, select

from etl.config.flows import Flow, ParentSpec
from etl.core.reasons import PARENT_MISSING
from etl.core.rows import RETRY, SEQ, SOURCE_KEY, is_null
from etl.dialects.base import Dialect
from etl.sync import document_numbers

_IN_BATCH = 500


class ParentCheck:
    """Finds rows whose parent (e.g. the work order of a report) is not yet on the target."""

    def __init__(self, conn: Connection, flow: Flow, tables: dict[str, Table]):
        self.conn = conn
        self.flow = flow
        self.tables = tables
        self.known: dict[int, set[Any]] = {i: set() for i in range(len(flow.parents))}

    def _present(self, index: int, parent: ParentSpec, values: list[Any]) -> set[Any]:
        unknown = [v for v in values if v not in self.known[index]]
        table = self.tables[parent.table]
        column = table.c[parent.key]
        for start in range(0, len(unknown), _IN_BATCH):
            batch = unknown[start:start + _IN_BATCH]
            found = self.conn.execute(select(column).where(column.in_(batch)).distinct()).scalars()
            self.known[index].update(found)
        return self.known[index]

    def missing(self, rows: pd.DataFrame) -> dict[Any, str]:
        """Index label -> reason, for each row with a parent missing on the target."""
        problems: dict[Any, str] = {}
        for i, parent in enumerate(self.flow.parents):
            values = rows[parent.column]
            distinct = [v for v in pd.unique(values) if not is_null(v)]
            present = self._present(i, parent, distinct)
            for label, value in values.items():
                if not is_null(value) and value not in present:
                    problems.setdefault(
                        label,
                        PARENT_MISSING.text(table=parent.table, key=parent.key, value=repr(value), column=parent.column),
                    )
        return problems


@dataclass(frozen=True)
class Conflict:
    """Rows of one batch that share a natural key but disagree on other columns."""

    source_key: str
    target_row: dict[str, Any]
    reason: str


def resolve_duplicates(
    conn: Connection, staging: Table, key: list[str], columns: list[str], retried: bool = True,
) -> list[Conflict]:
    """Leave at most one staged row per natural key.

    A retried quarantine row yields to a fresh read of the same source row (``retried`` says
    whether any are staged). Identical copies
    collapse to one. Rows that share a key but differ are all removed and returned as
    conflicts: which one is right is not ours to guess.
    """
    stg = staging.c
    if retried:
        fresh = select(stg[SOURCE_KEY]).where(stg[RETRY] == 0)
        conn.execute(delete(staging).where(stg[RETRY] == 1, stg[SOURCE_KEY].in_(fresh)))

    repeated = select(*[stg[k] for k in key]).group_by(*[stg[k] for k in key]).having(func.count() > 1)
    if conn.execute(repeated.limit(1)).first() is None:
        return []  # the usual case, settled by one grouping without reading the rows again
    dup_keys = repeated.subquery()
    rows = conn.execute(
        select(staging)
        .where(exists(select(1).select_from(dup_keys).where(and_(*[dup_keys.c[k] == stg[k] for k in key]))))
        .order_by(*[stg[k] for k in key], stg[SEQ])
    ).mappings().all()
    if not rows:
        return []
    groups: dict[tuple[Any, ...], list[Any]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in key), []).append(row)
    drop_seqs: list[int] = []
    conflicts: list[Conflict] = []
    for key_values, group in groups.items():
        contents = {tuple(r[c] for c in columns) for r in group}
        if len(contents) == 1:
            drop_seqs += [r[SEQ] for r in group[:-1]]
            continue
        drop_seqs += [r[SEQ] for r in group]
        label = ", ".join(f"{k}={v}" for k, v in zip(key, key_values, strict=True))
        sources = sorted({r[SOURCE_KEY] for r in group})
        for r in group:
            conflicts.append(
                Conflict(
                    r[SOURCE_KEY],
                    {c: r[c] for c in columns},
                    f"duplicate natural key ({label}) in one batch with differing values, "
                    f"from source rows: {'; '.join(sources)}",
                )
            )
    for start in range(0, len(drop_seqs), _IN_BATCH):
        conn.execute(delete(staging).where(stg[SEQ].in_(drop_seqs[start:start + _IN_BATCH])))
    return conflicts



def insert_only_columns(flow: Flow) -> list[str]:
    """Target columns staged but written only with new rows (the document number)."""
    number = flow.target.document_number
    return [number.column] if number is not None else []


def merge_rows(conn: Connection, dialect: Dialect, flow: Flow, staging: Table, target: Table, columns: list[str]) -> int:
    """Merge staging into the flow's target as ``load.match`` says; returns rows inserted or changed.

    With ``natural_key`` the new rows first receive their document numbers, if the flow has them.
    """
    if flow.load.match == "unique_key":
        return dialect.merge(conn, staging, target, flow.key, columns, flow.load.mode)
    document_numbers.allocate(conn, flow, staging, target)
    return dialect.merge_by_natural_key(
        conn, staging, target, list(flow.key), columns, flow.load.mode, insert_only_columns(flow),
    )
