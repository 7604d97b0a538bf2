"""Retention of the pipeline's own data: released quarantine entries are purged after a while.

A quarantine entry keeps the source row it could not load, so it can hold business data (names,
quantities, lots). Once the row has loaded, its entry is kept ``quarantine_retention_days``
(mappings/defaults.yaml) for audits, then deleted. Entries still waiting are never purged: they
are rows the target does not have yet. ``python -m etl quarantine --purge`` runs it; schedule it
daily, like any housekeeping job.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from etl.config.flows import Project
from etl.core.errors import ConfigError, ConfigProblem
from etl.sync import quarantine
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import ensure_pipeline_tables


def retention_period(project: Project) -> timedelta:
    """The configured retention; ConfigError if mappings/defaults.yaml does not set one."""
    days = project.defaults.quarantine_retention_days
    if days is None:
        raise ConfigError([ConfigProblem(
            f"{project.mappings_dir}/defaults.yaml", "quarantine_retention_days",
            "not set: say how many days released quarantine entries are kept (e.g. 90)",
        )])
    return timedelta(days=days)


def purge_released_quarantine(
    project: Project, connections: Connections, now: datetime | None = None,
) -> dict[str, int]:
    """Delete, on every target database of the project, the released quarantine entries older
    than the retention period. Returns the number deleted per connection id."""
    period = retention_period(project)
    now = now or datetime.now(UTC).replace(tzinfo=None)
    purged: dict[str, int] = {}
    for conn_id in sorted({flow.target.connection for flow in project.flows.values()}):
        with connections.engine(conn_id).begin() as conn:
            ensure_pipeline_tables(conn)
            purged[conn_id] = quarantine.purge_released(conn, period, now)
    return purged
