"""Per-flow state on the target database: the watermark and when keys were last compared.

Read and written inside the run's transaction, so the watermark moves only together with the
rows it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, select, update

from etl.core import watermark as wm
from etl.sync.pipeline_tables import watermark as watermark_table


@dataclass(frozen=True)
class FlowState:
    watermark: wm.CursorValue | None
    keyset_checked_at: datetime | None


def read_state(conn: Connection, flow: str) -> FlowState:
    t = watermark_table.c
    row = conn.execute(
        select(t.cursor_value, t.cursor_type, t.keyset_checked_at).where(t.flow == flow)
    ).first()
    if row is None:
        return FlowState(None, None)
    return FlowState(wm.decode(row.cursor_value, row.cursor_type), row.keyset_checked_at)


def write_state(
    conn: Connection, flow: str, value: wm.CursorValue | None, run_id: str, now: datetime,
    keyset_checked_at: datetime | None,
) -> None:
    text, kind = wm.encode(value)
    t = watermark_table.c
    values = {
        "cursor_value": text, "cursor_type": kind, "keyset_checked_at": keyset_checked_at,
        "updated_at": now, "run_id": run_id,
    }
    changed = conn.execute(update(watermark_table).where(t.flow == flow).values(values)).rowcount
    if not changed:
        conn.execute(watermark_table.insert().values(flow=flow, **values))
