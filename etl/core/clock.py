"""The pipeline's clock."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Naive UTC, the convention of the pipeline's own tables."""
    return datetime.now(UTC).replace(tzinfo=None)
