"""Outages: a database that refuses connections, or drops one in the middle of a run.

The run fails with a StepFailed that names the step and says ``retryable`` (Airflow retries it
with backoff, the CLI exits 75), nothing is half-written, and the run that finally succeeds
leaves the site equal to a twin that never saw the outage.
"""

from __future__ import annotations

import json
import socket
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy.engine import URL
from sync_harness import Postgres, Site, SiteFactory, assert_same, diff_states, leftovers, sync_state

from etl.cli import main as cli
from etl.core.errors import SourceUnavailable, StepFailed
from etl.sync.connections import Connections

pytestmark = pytest.mark.slow

UPSTREAM = ("materials", "work_centers")


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class FlakyConnections(Connections):
    """Connections whose ``side`` points at a closed port for the first ``outages`` engines asked."""

    def __init__(self, site: Site, conn_id: str, outages: int):
        super().__init__({f"{s}_db": u for s, u in site.urls.items()})
        self.conn_id = conn_id
        self.outages = outages
        self.down = site.urls[conn_id.removesuffix("_db")].set(port=closed_port())

    def url(self, conn_id: str) -> URL:
        if conn_id == self.conn_id and self.outages > 0:
            return self.down
        return super().url(conn_id)

    def next_attempt(self) -> None:
        self.outages -= 1
        self.dispose()


def _prepare(sites: SiteFactory) -> tuple[Site, Site]:
    site, twin = sites.new("outage", chunk_size=40), sites.new("outage_twin", chunk_size=40)
    for s in (site, twin):
        s.run_all(UPSTREAM)
    return site, twin


@pytest.mark.parametrize("down", ["erp_db", "mes_db"], ids=["source down", "target down"])
def test_a_database_that_refuses_connections_fails_retryably_then_the_retry_is_exact(
    sites: SiteFactory, figures: Any, down: str, caplog: pytest.LogCaptureFixture,
) -> None:
    site, twin = _prepare(sites)
    twin.run("production_orders")
    before = sync_state(site)
    flaky = FlakyConnections(site, down, outages=3)
    attempts = 0
    while True:
        attempts += 1
        try:
            result = replace(site, connections=flaky).run("production_orders")
            break
        except StepFailed as failure:
            assert failure.step == "connect"
            assert failure.retryable, "a refused connection is worth a retry"
            assert isinstance(failure.__cause__, SourceUnavailable)
            assert "Connection refused" in str(failure) and "production_orders" in str(failure)
            assert diff_states(sync_state(site), before).clean
            flaky.next_attempt()
    flaky.dispose()
    assert attempts == 4
    assert result.record.outcome == "success"
    assert_same(site, twin, figures, f"{down} back after 3 refused attempts")
    failed = [r for r in site.ledger("mes", "production_orders") if r["outcome"] == "failed"]
    if down == "erp_db":
        # The target was up: each refused attempt is in the ledger with its reason.
        assert len(failed) == 3
        assert all(r["error"].startswith("connect: OperationalError: connection to server at") for r in failed)
    else:
        # The ledger lives on the target that was down: the log says why no row was written.
        assert failed == []
        assert "could not write the ledger row" in caplog.text
    figures.add("outages simulated", 3)


def test_the_cli_exits_75_when_a_database_refuses_connections(
    sites: SiteFactory, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    site = sites.new("outage_cli")
    connections_file = tmp_path / "connections.json"
    connections_file.write_text(json.dumps(site.connection_urls), encoding="utf-8")
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(connections_file))
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DB", f"postgres://postgres@127.0.0.1:{closed_port()}/erp")
    code = cli.main(["--mappings", str(site.mappings), "run", "materials"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_RETRY == 75
    assert "FAILED flow 'materials' failed at step 'connect'" in err and "Connection refused" in err
    assert site.count("mes", "item") == 0


# (connection whose sessions are closed, flow, the step at which they are closed)
DROPS = [
    ("mes", "production_orders", "stage_first_chunk"),
    ("mes", "production_orders", "merge"),
    ("mes", "production_orders", "commit"),
    ("erp", "production_orders", "stage_first_chunk"),
    ("erp", "production_orders", "commit"),
    ("erp", "consumptions", "merge"),
    ("mes", "consumptions", "stage_first_chunk"),
]


@pytest.mark.parametrize(("side", "flow", "step"), DROPS, ids=[f"{s}-{f}-{st}" for s, f, st in DROPS])
def test_a_connection_dropped_mid_run_fails_retryably_and_the_rerun_is_exact(
    sites: SiteFactory, pg: Postgres, figures: Any, side: str, flow: str, step: str,
) -> None:
    """``pg_terminate_backend`` closes every session on one database at a chosen step."""
    site, twin = _prepare(sites)
    if flow != "production_orders":
        for s in (site, twin):
            s.run("production_orders")
    twin.run(flow)
    before = sync_state(site)
    closed = []

    def hook(current: str) -> None:
        if current == step and not closed:
            closed.append(pg.terminate(site.databases[side]))

    with pytest.raises(StepFailed) as failure:
        site.run(flow, hook=hook)
    assert failure.value.retryable, f"a dropped connection is worth a retry: {failure.value}"
    assert failure.value.step == step
    assert isinstance(failure.value.__cause__, SourceUnavailable)
    assert closed and closed[0] >= 1
    left = leftovers(pg, site)
    assert not any(left.values()), left
    target_side = "erp" if flow == "consumptions" else "mes"
    outcome = {r["run_id"]: r["outcome"] for r in site.ledger(target_side, flow)}.get(failure.value.run_id)
    if outcome == "success":
        # The source went away after the target had committed (closing the source's read
        # transaction failed): the run is complete and its ledger row says so; the retry
        # Airflow makes then loads nothing.
        assert (side, step) == ("erp", "commit")
        assert_same(site, twin, figures, f"{side} dropped after the commit of {flow}")
    else:
        assert diff_states(sync_state(site), before).clean, "a failed run changed the target"
        assert outcome == "failed"
    result, _ = site.run_until_done(flow)
    assert result.record.outcome == "success"
    assert_same(site, twin, figures, f"{side} dropped at {step} of {flow}")
    figures.add("connections dropped mid-run")
