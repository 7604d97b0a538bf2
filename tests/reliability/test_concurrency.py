"""Concurrency: two runs of one flow never both load a window; different flows run side by side.

Each flow's run takes the flow's lock on the target (PostgreSQL: a transaction-scoped advisory
lock) before it reads anything. A second run of the same flow exits with FlowBusy (the CLI
with code 75, Airflow retries it) and writes nothing but its ledger row; runs of different
flows do not wait for each other.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest
from sync_harness import SYNC_FLOWS, Child, SiteFactory, SourceChanges, assert_same, sync_state

from etl.config.paths import REPO_ROOT

pytestmark = pytest.mark.slow

UPSTREAM = ("materials", "work_centers", "personnel")


def _outcome(child: Child, flow: str) -> tuple[str, int]:
    """('success', rows loaded) or ('busy', 0) from what a child reported."""
    for line in child.lines():
        parts = line.split()
        if parts[:2] == [flow, "result"]:
            return "success", int(parts[2])
        if parts[:2] == [flow, "failed"]:
            assert parts[2] == "FlowBusy", child.lines()
            return "busy", 0
    raise AssertionError(f"no outcome for {flow}: {child.lines()}")


def test_a_second_run_of_the_same_flow_exits_75_and_writes_nothing(sites: SiteFactory, figures: Any, tmp_path: Any) -> None:
    site, twin = sites.new("busy"), sites.new("busy_twin")
    for s in (site, twin):
        s.run_all(UPSTREAM)
    twin.run("production_orders")
    first = Child(site, ["production_orders"], pause_at=("production_orders", "merge"))
    first.wait_for("paused")  # it holds the flow's lock, its rows staged, nothing merged yet

    connections_file = tmp_path / "connections.json"
    connections_file.write_text(json.dumps(site.connection_urls), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    second = subprocess.run(
        [sys.executable, "-m", "etl", "--mappings", str(site.mappings), "run", "production_orders"],
        cwd=REPO_ROOT, env={**env, "ETL_CONNECTIONS_FILE": str(connections_file)},
        capture_output=True, text=True, timeout=120,
    )
    assert second.returncode == 75, second.stderr
    assert "failed at step 'lock'" in second.stderr
    assert "another run holds its lock (PostgreSQL backend " in second.stderr and "; this run read and wrote nothing" in second.stderr
    assert site.count("mes", "work_order") == 0

    first.resume()
    assert first.wait() == 0, first.lines()
    ledger = site.ledger("mes", "production_orders")
    assert sorted(r["outcome"] for r in ledger) == ["busy", "success"]
    busy = next(r for r in ledger if r["outcome"] == "busy")
    assert busy["rows_read"] == busy["rows_loaded"] == 0 and "FlowBusy" in busy["error"]
    assert_same(site, twin, figures, "after the busy run")
    figures.add("busy exits (exit code 75)")


ROUNDS = 9
RACED = ("production_orders", "confirmations", "consumptions")


def test_two_runs_started_together_never_both_load_the_same_window(sites: SiteFactory, figures: Any) -> None:
    """Rounds of two processes started at the same instant on the same flow, after new source
    rows arrived: together they load exactly what one clean run loads, never twice."""
    site, twin = sites.new("race", chunk_size=40), sites.new("race_twin", chunk_size=40)
    for s in (site, twin):
        s.run_all(UPSTREAM)
    changes = SourceChanges(seed=5)
    outcomes: dict[str, int] = {}
    for round_no in range(ROUNDS):
        flow = RACED[round_no % len(RACED)]
        if round_no >= len(RACED):
            changes.apply([site, twin], orders=6, changes=3, records=6, materials=0)
        pair = [Child(site, [flow], gated=True) for _ in range(2)]
        for child in pair:
            child.go()
        for child in pair:
            assert child.wait() in (0, 75), child.lines()
        results = [_outcome(child, flow) for child in pair]
        want = twin.run(flow).record.counts.rows_loaded
        assert sum(loaded for _, loaded in results) == want, (round_no, flow, results, want)
        assert sorted(results)[0][1] == 0 or results.count(("busy", 0)) == 1, results
        kinds = "+".join(sorted(kind for kind, _ in results))
        outcomes[kinds] = outcomes.get(kinds, 0) + 1
        assert_same(site, twin, figures, f"round {round_no} ({flow}: {results})")
    figures.add("same-flow races", ROUNDS)
    figures.add("busy exits (exit code 75)", outcomes.get("busy+success", 0))
    print(f"\n{ROUNDS} races of two runs of one flow: {outcomes}")


def test_every_flow_at_once_in_its_own_process(sites: SiteFactory, figures: Any) -> None:
    """All flows start together, each in its own process: none waits for or breaks another.
    Flows without parents are complete at once; rows whose parent was still being loaded by
    another process wait in quarantine and arrive with the next run, as with any late parent."""
    site, twin = sites.new("parallel"), sites.new("parallel_twin")
    twin.run_all()
    children = [Child(site, [flow], gated=True) for flow in SYNC_FLOWS]
    for child in children:
        child.go()
    codes = [child.wait() for child in children]
    assert codes == [0] * len(SYNC_FLOWS), [c.lines() for c in children]
    now, want = sync_state(site), sync_state(twin)
    for table in ("mes.item", "mes.equipment", "mes.operator"):
        assert now[table] == want[table], table
    site.run_all()
    assert_same(site, twin, figures, "after every flow ran in parallel, then once more in order")
    figures.add("flows run in parallel", len(SYNC_FLOWS))


def test_first_runs_on_a_new_target_create_the_pipeline_tables_once(sites: SiteFactory, figures: Any) -> None:
    """A new installation: several flows start at once on a target without the pipeline's tables."""
    site, twin = sites.new("fresh"), sites.new("fresh_twin")
    site.execute("mes", "DROP TABLE etl_ledger, etl_watermark, etl_quarantine")
    twin.run_all(("materials", "work_centers", "personnel", "production_orders"))
    children = [Child(site, [flow], gated=True) for flow in ("materials", "work_centers", "personnel", "production_orders")]
    for child in children:
        child.go()
    codes = [child.wait() for child in children]
    # One run creates the tables; a run that raced it fails retryably (exit 75) and its retry,
    # as Airflow makes it, finds them. Before the fix it failed for good with an IntegrityError.
    assert set(codes) <= {0, 75}, [c.lines() for c in children]
    assert all(line.endswith("failed PipelineTablesBusy") for c in children for line in c.lines() if " failed " in line)
    site.run_all(("materials", "work_centers", "personnel", "production_orders"))
    assert_same(site, twin, figures, "first runs in parallel on a new target")
    assert site.count("mes", "etl_ledger", "WHERE outcome = 'failed'") == codes.count(75)
    figures.add("first runs racing to create the pipeline tables", len(children))
    print(f"\n{len(children)} first runs on a new target: {codes.count(75)} lost the race and were retried")
