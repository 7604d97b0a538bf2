"""Crash anywhere: a run that dies at any point leaves the old state, and the rerun is exact.

Three flows carry the promise to a plant (orders down to the MES, operation reports and goods
movements up to the ERP). Each is crashed at every boundary a clean run of it passes (every
step ``run_flow`` announces to its hook, the first, middle and last chunk) and right after inner
operations (the COPY of the first and last chunk into staging, the merge statement, the
quarantine release, the key copy of delete detection): first by an exception (the run's own
error handling), then by SIGKILL of the process running it (no handler at all); on a first full
load and on an incremental run with new, changed, hard-deleted and released rows; on both
transform paths (SQL inside the target, Python chunk by chunk). After each crash the synced
tables, watermarks and quarantine are what they were before it; the rerun then leaves the site
equal, row by row, to a twin that never crashed. A loop of runs killed at random moments, in
forked processes and as ``python -m etl run all``, checks the same after every kill.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pytest
from sqlalchemy import text
from sync_harness import (
    SYNC_FLOWS,
    TRANSFORM_PATHS,
    Child,
    Site,
    SiteFactory,
    SourceChanges,
    assert_same,
    diff_states,
    leftovers,
    sync_state,
)

import etl.sync.quarantine
from etl.config.paths import REPO_ROOT
from etl.core.errors import StepFailed
from etl.dialects.postgresql import PostgresDialect
from etl.sync.runner import RunOptions

pytestmark = pytest.mark.slow

CHUNK = 40
#: The steps in which the two transform paths differ: extraction, chunk by chunk on the Python path.
CHUNK_STEPS = ("stage_first_chunk", "stage_chunk", "retry_quarantine")
CRASH_FLOWS = {"production_orders": "mes", "confirmations": "erp", "consumptions": "erp"}


class Injected(RuntimeError):
    """The failure a test injects."""


@dataclass(frozen=True)
class Point:
    """Where a run is crashed: on entering hook step ``step`` for the ``nth`` time, or right after
    the ``nth`` call of an inner operation (``inside``) returned, which happens within ``step``."""

    step: str
    nth: int = 1
    inside: str | None = None

    @property
    def label(self) -> str:
        name = f"{self.step}>{self.inside}" if self.inside else self.step
        return f"{name}#{self.nth}" if self.nth != 1 else name


# Inner operations a crash can follow: (owner, attribute). A crash right after one of them
# returned is a crash in the middle of a step: rows copied but not merged, merged but the
# quarantine not yet released, released but the deletes and the watermark not yet done.
INSIDE = {
    "copy_into_staging": (PostgresDialect, "stage"),
    "merge_statement": (PostgresDialect, "merge"),
    "quarantine_release": (etl.sync.quarantine, "release_loaded"),
}


def observe(site: Site, flow: str, options: RunOptions) -> tuple[Any, list[tuple[str, str]]]:
    """Run ``flow`` cleanly, recording the steps it enters and the inner operations it calls."""
    events: list[tuple[str, str]] = []
    restores = []
    for op in INSIDE:
        point = Point("", 0, op)
        restores.append(_after_call(point, lambda op=op: events.append(("inside", op)), every=True)())
    try:
        result = site.run(flow, options, hook=lambda step: events.append(("step", step)))
    finally:
        for restore in reversed(restores):
            restore()
    return result, events


def crash_points(events: list[tuple[str, str]]) -> list[Point]:
    """Every boundary a clean run of the flow passed, in its order: each step's entry, and right
    after each kind of inner operation. Of a step entered many times (one per chunk) the first,
    the middle and the last; of an inner operation called many times the first and the last."""
    totals = Counter(events)
    seen: Counter[tuple[str, str]] = Counter()
    current = "start"
    points: list[Point] = []
    for kind, name in events:
        seen[(kind, name)] += 1
        nth, total = seen[(kind, name)], totals[(kind, name)]
        wanted = {1, max(total // 2, 1), total} if kind == "step" else {1, total}
        if kind == "step":
            current = name
        if nth in wanted:
            points.append(Point(current, nth, None if kind == "step" else name))
    assert points[-1].step == "done" and points[-1].inside is None, points[-1]
    return points


def _after_call(point: Point, action: Callable[[], None], every: bool = False) -> Callable[[], Callable[[], None]]:
    """Wrap the point's inner operation so ``action`` runs right after its nth call (or every
    call) returns; returns the installer, which returns the undo."""
    owner, attribute = INSIDE[point.inside]  # type: ignore[index]

    def install() -> Callable[[], None]:
        original = getattr(owner, attribute)
        calls = [0]

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            calls[0] += 1
            if every or calls[0] == point.nth:
                action()
            return out

        had_own = attribute in vars(owner)
        setattr(owner, attribute, wrapper)

        def restore() -> None:
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)

        return restore

    return install


def _raise_at(point: Point, flow: str) -> tuple[Callable[[str], None], Callable[[], Callable[[], None]] | None]:
    if point.inside is not None:
        def injected() -> None:
            raise Injected(f"injected inside {point.inside} of {flow}")
        return (lambda step: None), _after_call(point, injected)
    seen = [0]

    def hook(step: str) -> None:
        if step == point.step:
            seen[0] += 1
            if seen[0] == point.nth:
                raise Injected(f"injected at {point.label} of {flow}")

    return hook, None


def _phase_changes(phase: str, sites: list[Site], changes: SourceChanges) -> dict[str, RunOptions]:
    """Bring every site to the phase's source state; the options each flow runs with."""
    if phase == "first load":
        return {}
    changes.apply(sites, orders=40, changes=20, records=45)
    first = sites[0]
    with first.engine("erp").connect() as conn:
        gone = conn.execute(text(
            "SELECT min(order_no) FROM production_order WHERE status = 'REL' AND order_no < '1950000'")).scalar_one()
    for site in sites:
        # The crosswalk fix of the README's demo: MAT-A00001 and what waits for it leave quarantine.
        (site.mappings / "crosswalks" / "material.csv").write_text("erp,mes\nMAT-A00001,200001\n", encoding="utf-8")
        site.reload()
        site.execute("erp", "DELETE FROM production_order WHERE order_no = :no", no=gone)
    return {"production_orders": RunOptions(keyset=True), "materials": RunOptions(keyset=True)}


def _story(site: Site, side: str, flow: str) -> list[dict[str, Any]]:
    """The flow's ledger; checks the windows of successive successful runs leave no gap."""
    rows = site.ledger(side, flow)
    done = [r for r in rows if r["outcome"] == "success"]
    for before, after in zip(done, done[1:], strict=False):
        if before["window_to"] and after["window_from"]:
            assert datetime.fromisoformat(after["window_from"]) <= datetime.fromisoformat(before["window_to"]), (before, after)
    return rows


def _crash_matrix(sites: SiteFactory, figures: Any, pg: Any, mode: str, path: str) -> None:
    transform = None if path == "auto" else path
    site = sites.new(f"crash_{mode}", chunk_size=CHUNK, transform=transform)
    twin = sites.new(f"twin_{mode}", chunk_size=CHUNK, transform=transform)
    changes = SourceChanges(seed=61)
    crashes = 0
    for phase in ("first load", "incremental"):
        options = _phase_changes(phase, [site, twin], changes)
        reference, events = {}, {}
        for name in SYNC_FLOWS:
            if name in CRASH_FLOWS:
                reference[name], events[name] = observe(twin, name, options.get(name, RunOptions()))
            else:
                reference[name] = twin.run(name, options.get(name, RunOptions()))
        for name in SYNC_FLOWS:
            opts = options.get(name, RunOptions())
            if name not in CRASH_FLOWS:
                site.run(name, opts)
                continue
            side = CRASH_FLOWS[name]
            want = reference[name].record.counts
            assert want.rows_loaded > 0, (phase, name)
            points = crash_points(events[name])
            if mode == "sigkill" and path != "auto":
                # Steps before and after staging run the same code on both paths, and the auto
                # run killed them already: here only the chunks, and the commit that ends the run.
                points = [p for p in points if p.step in CHUNK_STEPS or p.step == "done"]
            before = sync_state(site)  # a crash changes nothing, so this holds before every point
            for point in points:
                ledger_before = site.ledger(side, name)
                if mode == "exception":
                    hook, patch = _raise_at(point, name)
                    restore = patch() if patch else None
                    try:
                        with pytest.raises(StepFailed) as failure:
                            site.run(name, opts, hook=hook)
                    finally:
                        if restore:
                            restore()
                    assert failure.value.step == point.step, point
                    assert isinstance(failure.value.cause, Injected)
                    assert not failure.value.retryable
                    run_id = failure.value.run_id
                else:
                    if point.inside is None:
                        child = Child(site, [name], options=opts, kill_at=(name, point.step, point.nth))
                    else:
                        child = Child(site, [name], options=opts,
                                      patch=lambda p=point: _after_call(p, lambda: os.kill(os.getpid(), signal.SIGKILL))())
                    assert child.wait() == -signal.SIGKILL, (point, child.lines())
                crashes += 1
                figures.crash_points.add(f"{mode}/{path}: {point.label}")
                left = leftovers(pg, site)
                assert not any(left.values()), (point, left)
                ledger_after = site.ledger(side, name)
                if point.step == "done":
                    # Committed: the data, the watermark and a success row are there.
                    new = [r for r in ledger_after if r["run_id"] not in {x["run_id"] for x in ledger_before}]
                    assert [r["outcome"] for r in new] == ["success"], (point, new)
                    assert new[0]["rows_loaded"] == want.rows_loaded, (phase, name, new[0])
                    if mode == "exception":
                        assert new[0]["run_id"] == run_id
                    break
                diff = diff_states(sync_state(site), before)
                assert diff.clean, f"{mode} at {point.label} ({phase}, {name}) changed the state: {diff.explain()}"
                if mode == "exception":
                    (row,) = [r for r in ledger_after if r["run_id"] == run_id]
                    assert row["outcome"] == "failed" and row["error"].startswith(f"{point.step}: Injected"), row
                    assert len(ledger_after) == len(ledger_before) + 1
                else:
                    # A killed process writes nothing: no ledger row, as if the run never started.
                    assert len(ledger_after) == len(ledger_before), point
            rerun, _ = site.run_until_done(name, opts)
            assert rerun.record.counts.rows_loaded == 0, (phase, name, "the committed run already loaded everything")
            _story(site, side, name)
        assert_same(site, twin, figures, f"{mode}, after the {phase}")
    figures.add(f"crashes injected ({mode}, {path} transform)", crashes)
    kinds = sorted({p.split(": ", 1)[1] for p in figures.crash_points if p.startswith(f"{mode}/{path}:")})
    print(f"\n{mode}, {path} transform: {crashes} crashes at {len(kinds)} distinct points of flows "
          f"{', '.join(CRASH_FLOWS)}, on a first load and an incremental run: {', '.join(kinds)}")


@pytest.mark.parametrize("path", TRANSFORM_PATHS)
def test_an_exception_at_every_boundary_leaves_the_old_state_and_the_rerun_is_exact(
    sites: SiteFactory, figures: Any, pg: Any, path: str,
) -> None:
    _crash_matrix(sites, figures, pg, "exception", path)


@pytest.mark.parametrize("path", TRANSFORM_PATHS)
def test_sigkill_at_every_boundary_leaves_the_old_state_and_the_rerun_is_exact(
    sites: SiteFactory, figures: Any, pg: Any, path: str,
) -> None:
    _crash_matrix(sites, figures, pg, "sigkill", path)


TRIALS = 20
#: Every CLI_EVERY-th trial kills ``python -m etl run all`` itself instead of a forked run.
CLI_EVERY = 6
#: reports and goods movements; the CLI trials run every flow.
LOOP_FLOWS = ("production_orders", "order_components", "confirmations", "consumptions", "goods_receipts")


def _loaded_by_flow(site: Site) -> dict[str, int]:
    """Rows each flow's successful runs say they loaded, summed over the whole ledger."""
    totals: dict[str, int] = {}
    for side in ("erp", "mes"):
        for row in site.ledger(side):
            if row["outcome"] == "success" and row["flow"] in SYNC_FLOWS:
                totals[row["flow"]] = totals.get(row["flow"], 0) + row["rows_loaded"]
    return totals


def test_runs_killed_at_random_moments_never_lose_or_duplicate_a_row(
    sites: SiteFactory, figures: Any, pg: Any, tmp_path: Any,
) -> None:
    """A loop of trials: the factory changes both sources, the flows run in another process
    that is SIGKILLed after a random delay, then they run again. After every trial the site
    equals its twin, which ran the same flows at the same time without being killed."""
    rng = random.Random(20261125)
    site = sites.new("killed", chunk_size=CHUNK)
    twin = sites.new("kill_twin", chunk_size=CHUNK)
    changes = SourceChanges(seed=7)
    connections_file = tmp_path / "connections.json"
    connections_file.write_text(json.dumps(site.connection_urls), encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
    env["ETL_CONNECTIONS_FILE"] = str(connections_file)
    mid_run = 0
    estimate = 1.0
    for trial in range(TRIALS):
        cli = trial % CLI_EVERY == CLI_EVERY - 1
        flows = SYNC_FLOWS if trial == 0 or cli else LOOP_FLOWS
        if trial:
            changes.apply([site, twin], orders=4, changes=3, records=5, materials=0)
        if cli:
            site.connections.dispose()
            process = subprocess.Popen(
                [sys.executable, "-m", "etl", "--mappings", str(site.mappings), "run", "all"],
                cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            # Python's start-up (about a second) is part of the window.
            timer = threading.Timer(rng.uniform(0.3, 1.0 + 2 * estimate), process.send_signal, [signal.SIGKILL])
        else:
            child = Child(site, flows)
            timer = threading.Timer(rng.uniform(0, 1.2 * estimate), child.kill)
        timer.start()
        started = time.monotonic()
        twin.run_all(flows)  # meanwhile, on the other core
        estimate = time.monotonic() - started
        timer.join()
        if cli:
            killed = process.wait() == -signal.SIGKILL
            landed = "python -m etl run all" if killed else "finished before the kill"
            figures.add("random kills of `python -m etl run all`")
        else:
            killed = child.wait() == -signal.SIGKILL
            last = child.last_step()
            if not killed:
                landed = "finished before the kill"
            elif last is None:
                landed = "before the first step"
            else:
                landed = last.split()[1] if last.split()[1] not in ("result", "failed") else "between two flows"
            assert all(" failed " not in line for line in child.lines()), child.lines()
        mid_run += killed
        figures.kill_steps[landed] += 1
        left = leftovers(pg, site)
        assert not any(left.values()), (trial, left)
        site.run_all(flows)
        assert_same(site, twin, figures, f"trial {trial} (killed: {landed})")
    # Nothing counted twice: every committed run has its ledger row, and the rows the ledger
    # says were loaded add up, flow by flow, to what the twin's ledger says.
    assert _loaded_by_flow(site) == _loaded_by_flow(twin)
    figures.add("random kill trials", TRIALS)
    figures.add("random kills that hit a running sync", mid_run)
    print(f"\n{TRIALS} trials, {mid_run} killed mid-run; kills landed in: {dict(figures.kill_steps)}")
