"""The incremental cursor: how far a flow has read, and which window the next run reads.

Rules, kept in this one place:
- The window is inclusive at both ends: ``lower <= cursor <= upper``. Rows that share the
  watermark's value are read again rather than lost; the merge makes re-reading free.
- ``lower`` is the stored watermark minus the lookback, so rows committed late with an older
  cursor value are still picked up.
- ``upper`` is the ceiling: the source's own maximum cursor value taken when the run starts.
  A run never stores a watermark past what it has read, so rows committed while it reads
  arrive with the next run.
- The ceiling never passes the source's clock plus a tolerance (``limit``): a row dated in the
  future (``9999-12-31``) would otherwise become the watermark and hide every later change. Such
  rows are read by every run (``beyond``) until the clock reaches them, and reported; a stored
  watermark past the limit is not trusted, and the run reads everything up to the ceiling once.
- A watermark of 0 or the epoch is a value like any other: only ``None`` means "never read".
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, or_

CursorValue = datetime | date | int | Decimal | str


@dataclass(frozen=True)
class Window:
    """The cursor range one run reads. ``None`` bounds are open."""

    lower: CursorValue | None
    upper: CursorValue | None
    #: Include rows whose cursor is NULL (only when reading everything).
    include_null: bool = False
    #: Also read rows whose cursor is past this limit (dated in the future), whatever the bounds.
    beyond: CursorValue | None = None


def plan_window(
    watermark: CursorValue | None,
    ceiling: CursorValue | None,
    lookback: timedelta,
    *,
    since: CursorValue | None = None,
    full_refresh: bool = False,
    beyond: CursorValue | None = None,
) -> Window:
    """The window for the next run.

    ``since`` (a user's explicit start) wins over the watermark; ``full_refresh`` reads
    everything up to the ceiling, NULL cursors included. ``ceiling`` is the source's greatest
    cursor value not past its clock's limit; ``beyond`` is that limit when rows lie past it
    (they are read too). A watermark past ``beyond`` is treated as never read.
    """
    if full_refresh:
        return Window(None, ceiling, include_null=True, beyond=beyond)
    if since is not None:
        return Window(since, ceiling, beyond=beyond)
    if watermark is None or (beyond is not None and is_after(watermark, beyond)):
        return Window(None, ceiling, include_null=True, beyond=beyond)
    return Window(_minus(watermark, lookback), ceiling, beyond=beyond)


def is_after(value: CursorValue, limit: CursorValue) -> bool:
    """``value > limit``, comparing aware and naive timestamps as UTC."""
    return bool(_sortable(value) > _sortable(limit))


def clock_limit(now: datetime, tolerance: timedelta, sample: CursorValue | None) -> CursorValue | None:
    """The greatest cursor value a row may have at the source's clock ``now``: ``now`` plus
    ``tolerance``, as a date for a date cursor; None for cursors that are not times."""
    limit = now + tolerance
    if isinstance(sample, datetime):
        if sample.tzinfo is None and limit.tzinfo is not None:
            return limit.astimezone(UTC).replace(tzinfo=None)
        if sample.tzinfo is not None and limit.tzinfo is None:
            return limit.replace(tzinfo=UTC)
        return limit
    if isinstance(sample, date):
        return limit.date()
    return None


def _minus(value: CursorValue, lookback: timedelta) -> CursorValue:
    if isinstance(value, datetime):
        return value - lookback
    if isinstance(value, date):
        return value - timedelta(days=lookback.days)
    # Integer and text cursors (sequence numbers, version stamps) have no time lookback.
    return value


def window_filter(column: ColumnElement[Any], window: Window) -> ColumnElement[bool] | None:
    """The WHERE clause for ``window`` on ``column``, with bound values; None if unbounded."""
    bounds = []
    if window.lower is not None:
        bounds.append(column >= window.lower)
    if window.upper is not None:
        bounds.append(column <= window.upper)
    if not bounds:
        return None
    clause = and_(*bounds)
    if window.beyond is not None:
        clause = or_(clause, column > window.beyond)
    if window.include_null:
        clause = or_(clause, column.is_(None))
    return clause


def empty_window(window: Window | None) -> bool:
    """A window with nothing in it: the source holds no row with a cursor value yet."""
    return window is not None and window.upper is None and not window.include_null and window.beyond is None


def in_window(value: CursorValue | None, window: Window | None) -> bool:
    """Whether a record with cursor ``value`` is in ``window``: :func:`window_filter` for
    records read from a web API, where no SQL clause can ask it."""
    if window is None or (window.lower is None and window.upper is None):
        return True
    if value is None:
        return window.include_null
    if (window.lower is None or not is_after(window.lower, value)) and (
        window.upper is None or not is_after(value, window.upper)
    ):
        return True
    return window.beyond is not None and is_after(value, window.beyond)


def next_watermark(old: CursorValue | None, window: Window) -> CursorValue | None:
    """The watermark to store after a successful run: never moves backwards, except from
    past the clock's limit (``window.beyond``) back to the ceiling."""
    if old is not None and window.beyond is not None and is_after(old, window.beyond):
        old = None
    if window.upper is None:
        return old
    if old is None:
        return window.upper
    return max(old, window.upper, key=_sortable)


def _sortable(value: CursorValue) -> Any:
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC).replace(tzinfo=None)
    return value


def encode(value: CursorValue | None) -> tuple[str | None, str | None]:
    """Store a cursor value as text plus its type, exactly (microseconds and zone kept)."""
    if value is None:
        return None, None
    if isinstance(value, datetime):
        return value.isoformat(), "timestamp"
    if isinstance(value, date):
        return value.isoformat(), "date"
    if isinstance(value, bool):
        raise TypeError("a boolean cannot be a cursor")
    if isinstance(value, int):
        return str(value), "integer"
    if isinstance(value, Decimal):
        return str(value), "decimal"
    if isinstance(value, str):
        return value, "string"
    raise TypeError(f"unsupported cursor type {type(value).__name__}")


def decode(text: str | None, kind: str | None) -> CursorValue | None:
    """Inverse of :func:`encode`."""
    if text is None:
        return None
    if kind == "timestamp":
        return datetime.fromisoformat(text)
    if kind == "date":
        return date.fromisoformat(text)
    if kind == "integer":
        return int(text)
    if kind == "decimal":
        return Decimal(text)
    if kind == "string":
        return text
    raise ValueError(f"unknown cursor type {kind!r}")


def parse_since(text: str) -> datetime:
    """Parse a ``--since`` value: an ISO date or timestamp, in the source's own time."""
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(f"--since {text!r} is not an ISO date or timestamp (e.g. 2026-11-20T08:00)") from None
