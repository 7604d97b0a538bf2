"""The run ledger: one row per run with its window, row counts, duration and outcome."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, select

from etl.sync.pipeline_tables import check, ledger

SUCCESS = "success"
FAILED = "failed"
DRY_RUN = "dry_run"
BUSY = "busy"


@dataclass
class RunCounts:
    rows_read: int = 0
    rows_retried: int = 0
    rows_loaded: int = 0
    rows_unchanged: int = 0
    rows_quarantined: int = 0
    rows_new_in_quarantine: int = 0
    rows_released: int = 0
    rows_deleted: int = 0
    quarantine_backlog: int = 0


@dataclass
class CheckResult:
    """One expectation or reconciliation of one run."""

    kind: str  # "expectation" or "reconciliation"
    name: str
    action: str  # "quarantine", "critical" or "warning"
    rows_checked: int
    rows_failed: int
    success: bool
    expectation_type: str | None = None
    suite: str | None = None
    sample_keys: list[str] = field(default_factory=list)
    detail: str | None = None


@dataclass
class RunRecord:
    run_id: str
    flow: str
    direction: str
    started_at: datetime
    options: dict[str, Any] = field(default_factory=dict)
    window_from: str | None = None
    window_to: str | None = None
    counts: RunCounts = field(default_factory=RunCounts)
    finished_at: datetime | None = None
    outcome: str | None = None
    error: str | None = None
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def write_run(conn: Connection, run: RunRecord) -> None:
    """Insert the run's ledger row (call inside the transaction that commits the run)."""
    duration = run.duration_s
    conn.execute(
        ledger.insert().values(
            run_id=run.run_id,
            flow=run.flow,
            direction=run.direction,
            started_at=run.started_at,
            finished_at=run.finished_at,
            duration_s=None if duration is None else Decimal(f"{duration:.3f}"),
            window_from=run.window_from,
            window_to=run.window_to,
            outcome=run.outcome,
            options=json.dumps(run.options, sort_keys=True, default=str),
            error=run.error,
            **asdict(run.counts),
        )
    )
    if run.checks:
        conn.execute(
            check.insert(),
            [
                {
                    "run_id": run.run_id, "flow": run.flow, "checked_at": run.finished_at or run.started_at,
                    "kind": c.kind, "name": c.name, "expectation_type": c.expectation_type, "suite": c.suite,
                    "action": c.action, "rows_checked": c.rows_checked, "rows_failed": c.rows_failed,
                    "success": c.success, "sample_keys": json.dumps(c.sample_keys[:10], ensure_ascii=False),
                    "detail": c.detail,
                }
                for c in run.checks
            ],
        )


def recent_runs(conn: Connection, flow: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
    t = ledger.c
    stmt = select(ledger).order_by(t.started_at.desc(), t.run_id).limit(limit)
    if flow is not None:
        stmt = stmt.where(t.flow == flow)
    return [dict(r._mapping) for r in conn.execute(stmt)]
