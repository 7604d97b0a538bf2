"""Delta postings: the MES reports a cumulative quantity, the ERP receives only the difference.

What the ERP already holds decides, not the pipeline's own state: inside the run's transaction
(under the flow's lock) the posted total of each group (order, material) is summed from the
target, and each staged report becomes a posting of ``cumulative - total so far``. A crash
before commit posts nothing; a rerun after a commit finds the postings (by key, and in the
total) and posts nothing again.

Rules, per group and in source order (cursor order):
- a staged row whose key the target already holds was posted before: dropped, unchanged;
- a difference of zero posts nothing;
- a negative difference (the MES corrected its count down) waits in quarantine with the target
  row as payload, or, with ``negative: post``, is posted as a negative quantity (a reversal).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, exists, func, select

from etl.config.flows import ColumnSpec, DeltaSpec, Flow
from etl.core.rows import SEQ, SOURCE_KEY, Reject
from etl.dialects.base import scope_filter
from etl.sync import staged_rows
from etl.sync.schema import reflect_table


@dataclass
class DeltaOutcome:
    #: Staged rows that post nothing: posted before, or no difference.
    unchanged: int = 0
    #: Negative differences sent to quarantine (target rows as payload).
    rejects: list[Reject] = field(default_factory=list)


def delta_column(flow: Flow) -> ColumnSpec | None:
    return next((c for c in flow.columns if c.delta is not None), None)


def posted_totals(conn: Connection, flow: Flow, spec: ColumnSpec, staging: Table, target: Table) -> dict[tuple[Any, ...], Any]:
    """Posted total per group, for the groups present in staging."""
    delta = _delta(spec)
    posted = target if delta.posted.table is None else reflect_table(conn, delta.posted.table, role="delta posted", flow=flow)
    groups = [posted.c[g] for g in delta.group_by]
    staged = exists(select(1).select_from(staging).where(and_(*[posted.c[g] == staging.c[g] for g in delta.group_by])))
    stmt = select(*groups, func.sum(posted.c[delta.posted.sum or spec.target])).where(staged).group_by(*groups)
    kind = scope_filter(posted, dict(delta.posted.where))
    if kind is not None:
        stmt = stmt.where(kind)
    return {tuple(row[:-1]): row[-1] for row in conn.execute(stmt)}


def _delta(spec: ColumnSpec) -> DeltaSpec:
    assert spec.delta is not None
    return spec.delta


def apply_deltas(conn: Connection, flow: Flow, staging: Table, target: Table) -> DeltaOutcome:
    """Turn the staged cumulative values of the flow's delta column into differences to post.

    Rewrites staging in place: rows left in it are exactly the postings to insert.
    """
    outcome = DeltaOutcome()
    spec = delta_column(flow)
    if spec is None:
        return outcome
    delta = _delta(spec)
    stg = staging.c
    posted_before = exists(select(1).select_from(target).where(and_(*[target.c[k] == stg[k] for k in flow.key])))
    outcome.unchanged += conn.execute(delete(staging).where(posted_before)).rowcount or 0

    running = posted_totals(conn, flow, spec, staging, target)
    columns = [c.target for c in flow.columns]
    postings: dict[int, Any] = {}
    dropped: list[int] = []
    rows = conn.execute(select(stg[SEQ], stg[SOURCE_KEY], *[stg[c] for c in columns]).order_by(stg[SEQ])).mappings()
    for row in rows:
        group = tuple(row[g] for g in delta.group_by)
        cumulative = row[spec.target]
        total = running.get(group) or 0
        difference = None if cumulative is None else _minus(cumulative, total)
        if difference is None or difference == 0:
            dropped.append(row[SEQ])
            outcome.unchanged += 1
            continue
        if difference < 0 and delta.negative == "quarantine":
            dropped.append(row[SEQ])
            outcome.rejects.append(Reject(row[SOURCE_KEY], {c: row[c] for c in columns}, _reason(delta, spec, group, total, cumulative)))
            continue
        running[group] = cumulative
        postings[row[SEQ]] = difference
    staged_rows.rewrite(conn, staging, spec.target, postings, dropped)
    return outcome


def _minus(cumulative: Any, total: Any) -> Any:
    """``cumulative - total``, exact for decimals; a float column on either side makes it float."""
    if isinstance(cumulative, float) or isinstance(total, float):
        return float(cumulative) - float(total)
    return cumulative - total


def _reason(delta: DeltaSpec, spec: ColumnSpec, group: tuple[Any, ...], total: Any, cumulative: Any) -> str:
    label = ", ".join(f"{g}={v}" for g, v in zip(delta.group_by, group, strict=True))
    return (
        f"cumulative {spec.target} went down to {_plain(cumulative)} while the target already holds "
        f"{_plain(total)} for ({label}): post the correction in the ERP, or set delta.negative: post"
    )


def _plain(value: Any) -> str:
    return format(value, "f") if isinstance(value, Decimal) else str(value)
