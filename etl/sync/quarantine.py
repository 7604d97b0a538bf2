"""Quarantine: rows that could not be loaded wait here, visible, with their reason.

An entry is keyed by (flow, source key) while it waits, so a row that fails again updates its
entry instead of adding a second one. Entries whose payload is the source row are retried by
every run of the flow; an entry leaves (status ``released``) in the transaction that loads its
source key. Nothing is ever deleted here except by the retention purge of released entries.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, select, update

from etl.core.rows import SOURCE_KEY_LENGTH, Reject
from etl.sync.pipeline_tables import quarantine

WAITING = "waiting"
RELEASED = "released"
SOURCE_PAYLOAD = "source"
TARGET_PAYLOAD = "target"
_KEY_BATCH = 500


_ASTRAL = re.compile("[\U00010000-\U0010FFFF]")


def _surrogates(match: re.Match[str]) -> str:
    above = ord(match.group()) - 0x10000
    return f"\\u{0xD800 + (above >> 10):04x}\\u{0xDC00 + (above & 0x3FF):04x}"


def encode_payload(row: dict[str, Any]) -> str:
    """JSON that keeps Decimal, timestamps and bytes exact, so a retry sees the original row.
    Characters above U+FFFF are written as JSON escapes: a MariaDB utf8mb3 table holds them so."""
    text = json.dumps({k: _tag(v) for k, v in row.items()}, ensure_ascii=False, sort_keys=True)
    return _ASTRAL.sub(_surrogates, text) if not text.isascii() else text


def decode_payload(text: str) -> dict[str, Any]:
    return {k: _untag(v) for k, v in json.loads(text).items()}


def _tag(value: Any) -> Any:
    if isinstance(value, Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, datetime):
        return {"$timestamp": value.isoformat()}
    if isinstance(value, date):
        return {"$date": value.isoformat()}
    if isinstance(value, time):
        return {"$time": value.isoformat()}
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, float) and value != value:
        return None
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    return value


def _untag(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        (tag, raw), = value.items()
        if tag == "$decimal":
            return Decimal(raw)
        if tag == "$timestamp":
            return datetime.fromisoformat(raw)
        if tag == "$date":
            return date.fromisoformat(raw)
        if tag == "$time":
            return time.fromisoformat(raw)
        if tag == "$bytes":
            return base64.b64decode(raw)
    return value


@dataclass(frozen=True)
class Waiting:
    id: int
    source_key: str
    payload: dict[str, Any]


@dataclass
class QuarantineCounts:
    touched: int = 0
    new: int = 0


def record(
    conn: Connection, flow: str, run_id: str, rejects: list[Reject], now: datetime,
    payload_kind: str = SOURCE_PAYLOAD,
) -> QuarantineCounts:
    """Put ``rejects`` in quarantine: update the waiting entry of the same source key, or add one."""
    counts = QuarantineCounts()
    if not rejects:
        return counts
    latest: dict[str, Reject] = {}
    for reject in rejects:
        latest[reject.source_key[:SOURCE_KEY_LENGTH]] = reject
    keys = list(latest)
    existing: dict[str, int] = {}
    for start in range(0, len(keys), _KEY_BATCH):
        batch = keys[start:start + _KEY_BATCH]
        rows = conn.execute(
            select(quarantine.c.id, quarantine.c.source_key).where(
                quarantine.c.flow == flow, quarantine.c.status == WAITING, quarantine.c.source_key.in_(batch)
            )
        )
        existing.update({key: id_ for id_, key in rows})
    updates = [
        {"b_id": existing[key], "b_payload": encode_payload(r.payload), "b_reason": r.reason}
        for key, r in latest.items() if key in existing
    ]
    if updates:
        q = quarantine.c
        conn.execute(
            update(quarantine)
            .where(q.id == bindparam("b_id"))
            .values(
                payload=bindparam("b_payload"), reason=bindparam("b_reason"), payload_kind=payload_kind,
                attempts=q.attempts + 1, last_seen_at=now, last_run_id=run_id,
            ),
            updates,
        )
    inserts = [
        {
            "flow": flow, "source_key": key, "payload": encode_payload(r.payload), "payload_kind": payload_kind,
            "reason": r.reason, "status": WAITING, "attempts": 1, "first_seen_at": now, "last_seen_at": now,
            "first_run_id": run_id, "last_run_id": run_id,
        }
        for key, r in latest.items() if key not in existing
    ]
    if inserts:
        conn.execute(quarantine.insert(), inserts)
    counts.touched = len(latest)
    counts.new = len(inserts)
    return counts


def waiting_for_retry(conn: Connection, flow: str, run_id: str, batch_size: int) -> Iterator[list[Waiting]]:
    """Batches of waiting entries with a source payload not already seen by this run."""
    q = quarantine.c
    last_id = 0
    while True:
        rows = conn.execute(
            select(q.id, q.source_key, q.payload)
            .where(
                q.flow == flow, q.status == WAITING, q.payload_kind == SOURCE_PAYLOAD,
                q.last_run_id != run_id, q.id > last_id,
            )
            .order_by(q.id)
            .limit(batch_size)
        ).all()
        if not rows:
            return
        last_id = rows[-1].id
        yield [Waiting(r.id, r.source_key, decode_payload(r.payload)) for r in rows]


def release_loaded(conn: Connection, flow: str, run_id: str, staging: Table, now: datetime) -> int:
    """Release every waiting entry of ``flow`` whose source key is in staging (now loaded)."""
    q = quarantine.c
    loaded = select(staging.c._source_key)
    result = conn.execute(
        update(quarantine)
        .where(q.flow == flow, q.status == WAITING, q.source_key.in_(loaded))
        .values(status=RELEASED, released_at=now, released_run_id=run_id)
    )
    return result.rowcount or 0


def backlog(conn: Connection, flow: str | None = None) -> int:
    q = quarantine.c
    stmt = select(func.count()).select_from(quarantine).where(q.status == WAITING)
    if flow is not None:
        stmt = stmt.where(q.flow == flow)
    return int(conn.execute(stmt).scalar_one())


def waiting_reasons(conn: Connection, flow: str) -> list[str]:
    """The distinct reasons rows of ``flow`` wait for."""
    q = quarantine.c
    stmt = select(q.reason).where(q.flow == flow, q.status == WAITING).distinct()
    return [str(r) for r in conn.execute(stmt).scalars()]


def list_waiting(conn: Connection, flow: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """Waiting entries, oldest first, for the CLI and the report."""
    q = quarantine.c
    stmt = (
        select(q.flow, q.source_key, q.reason, q.attempts, q.first_seen_at, q.last_seen_at)
        .where(q.status == WAITING)
        .order_by(q.flow, q.first_seen_at, q.id)
        .limit(limit)
    )
    if flow is not None:
        stmt = stmt.where(q.flow == flow)
    return [dict(r._mapping) for r in conn.execute(stmt)]


def purge_released(conn: Connection, older_than: timedelta, now: datetime) -> int:
    """Delete released entries older than the retention period (payloads hold business data)."""
    q = quarantine.c
    result = conn.execute(delete(quarantine).where(and_(q.status == RELEASED, q.released_at < now - older_than)))
    return result.rowcount or 0
