"""The watch loop: ``python -m etl watch FLOW...`` keeps a flow's listener open and answers its
events with :func:`etl.sync.runner.run_flow`, the same run (lock, ledger, quarantine,
reconciliation) as a scheduled one.

- A run at start catches up on whatever arrived while nobody listened; so does a run after
  every reconnect (a NOTIFY sent while the connection was down is never repeated).
- Events that arrive while a run is going wait in the listener's box and wake ONE following
  run, however many there were.
- The flow's schedule stays as the sweep: a run at each cron time, event or not.
- A lost source reconnects with backoff; a failed run is logged and the next event (or the
  sweep) tries again; a run refused because another holds the flow's lock is tried again
  shortly, since rows committed after that run's ceiling are not in it.
- Stopping (SIGTERM) lets a run that is going finish, then closes the listener.
One line is logged per run.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from croniter import croniter

from etl.config.flows import Flow, Project
from etl.core.clock import utcnow
from etl.core.errors import ConfigError, ConfigProblem, FlowBusy, StepFailed
from etl.events.listeners import Backoff, EventBox, Events, Listener, ListenerLost, listener_for
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, RunResult, run_flow

#: The longest a wait lasts before the loop looks at the clock and its stop flag again.
TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Answered:
    """One run the watch made: why, for how many events, and how it ended."""

    flow: str
    woken_by: str
    events: int
    event_at: datetime | None
    result: RunResult | None
    failure: StepFailed | None

    def line(self) -> str:
        """The one line logged for this run."""
        why = f"{self.woken_by} ({self.events} event{'s' if self.events != 1 else ''})" if self.events else self.woken_by
        if self.failure is not None and isinstance(self.failure.cause, FlowBusy):
            return f"flow {self.flow} woken by {why}: busy (another run holds the flow's lock), trying again"
        if self.failure is not None:
            return f"flow {self.flow} woken by {why}: FAILED {self.failure}"
        assert self.result is not None
        record, counts = self.result.record, self.result.record.counts
        after = ""
        if self.event_at is not None and record.finished_at is not None:
            after = f", committed {(record.finished_at - self.event_at).total_seconds():.2f}s after the event"
        return (
            f"flow {self.flow} woken by {why}: {record.outcome}, read {counts.rows_read} loaded {counts.rows_loaded} "
            f"quarantined {counts.rows_quarantined} in {record.duration_s or 0:.2f}s{after}"
        )


def sweep_times(schedule: str | None, flow: Flow) -> Callable[[datetime], datetime | None]:
    """The next sweep after a moment (naive UTC), from the flow's cron schedule; never for none.
    Raises ConfigError naming the flow's file for a schedule cron cannot read."""
    if schedule is None:
        return lambda _now: None
    if not croniter.is_valid(schedule):
        raise ConfigError([ConfigProblem(flow.file, "schedule", f"{schedule!r} is not a cron schedule the watch can sweep on")])
    return lambda now: croniter(schedule, now).get_next(datetime)


class FlowWatch:
    """The loop of one flow; :meth:`serve` returns when ``stop`` is set."""

    def __init__(
        self,
        project: Project,
        flow: Flow,
        connections: Connections,
        stop: threading.Event,
        say: Callable[[str], None],
        *,
        clock: Callable[[], datetime] = utcnow,
        busy_retry: float = 0.5,
    ) -> None:
        if flow.trigger is None:
            raise ConfigError([ConfigProblem(flow.file, "trigger", f"flow {flow.flow!r} has no trigger: nothing to watch")])
        self.project, self.flow, self.connections, self.stop, self.say = project, flow, connections, stop, say
        self.clock = clock
        self.box = EventBox(clock)
        connection = flow.trigger_connection()
        assert connection is not None
        self.listener: Listener = listener_for(flow, connections.url(connection), self.box)
        self.next_sweep = sweep_times(project.schedule_of(flow), flow)
        self.backoff = Backoff()
        self.busy_retry = busy_retry
        self.answered: list[Answered] = []

    def serve(self) -> None:
        """Listen, run, reconnect, sweep until ``stop`` is set; then close the listener."""
        kind = self.listener.kind
        listening = False
        sweep_at = self.next_sweep(self.clock())
        woken_by: str | None = "start"
        pending: Events | None = None
        try:
            while not self.stop.is_set():
                if not listening:
                    try:
                        self.listener.open()
                    except ListenerLost as exc:
                        self.say(f"flow {self.flow.flow}: {exc}; reconnecting in {self.backoff.next:.1f}s")
                        self.backoff.pause(self.stop)
                        continue
                    listening = True
                    self.backoff.reset()
                    woken_by = woken_by or "reconnect"
                if woken_by is None:
                    timeout = TICK_SECONDS
                    if sweep_at is not None:
                        timeout = max(0.0, min(timeout, (sweep_at - self.clock()).total_seconds()))
                    try:
                        pending = self.box.take(timeout)
                    except ListenerLost as exc:
                        self.say(f"flow {self.flow.flow}: {exc}; reconnecting")
                        self.listener.close()
                        listening = False
                        continue
                    if pending is not None:
                        woken_by = kind
                    elif sweep_at is not None and self.clock() >= sweep_at:
                        woken_by = "sweep"
                if woken_by is None or self.stop.is_set():
                    continue
                if woken_by == "sweep" or sweep_at is None or self.clock() >= sweep_at:
                    sweep_at = self.next_sweep(self.clock())
                busy = self._answer(woken_by, pending)
                if busy:
                    # Keep the events: a run after the busy one must still read their rows.
                    self.stop.wait(self.busy_retry)
                    continue
                woken_by, pending = None, None
        finally:
            self.listener.close()

    def _answer(self, woken_by: str, events: Events | None) -> bool:
        """Run the flow once for ``events``; log its line. True when another run held the lock."""
        options = RunOptions(
            woken_by=woken_by, events=events.count if events else 0, event_at=events.first_at if events else None,
        )
        result: RunResult | None = None
        failure: StepFailed | None = None
        try:
            result = run_flow(self.project, self.flow.flow, self.connections, options, clock=self.clock)
        except StepFailed as exc:
            failure = exc
        answered = Answered(self.flow.flow, woken_by, options.events, options.event_at, result, failure)
        self.answered.append(answered)
        self.say(answered.line())
        if failure is not None:
            if isinstance(failure.cause, FlowBusy):
                return True
            # A failing run should not spin on a flood of events: the next try waits a little.
            self.backoff.pause(self.stop)
        else:
            self.backoff.reset()
        return False


def watch(
    project: Project, names: list[str], connections: Connections, stop: threading.Event,
    say: Callable[[str], None],
) -> list[FlowWatch]:
    """Watch every named flow, each in a thread of its own, until ``stop`` is set; returns the
    watches (with the runs they made). Raises ConfigError before starting when a flow has no
    trigger or an unreadable schedule."""
    watches = [FlowWatch(project, project.flow(n), connections, stop, say) for n in names]
    threads = [threading.Thread(target=w.serve, name=f"watch-{w.flow.flow}") for w in watches]
    for thread in threads:
        thread.start()
    try:
        while any(t.is_alive() for t in threads):
            for thread in threads:
                thread.join(timeout=TICK_SECONDS)
    finally:
        stop.set()
        for w in watches:
            w.box.wake()
        for thread in threads:
            thread.join()
    return watches


def first_sweep(project: Project, flow: Flow, now: datetime) -> timedelta | None:
    """How long until the flow's first sweep, for the start-up line; None without a schedule."""
    at = sweep_times(project.schedule_of(flow), flow)(now)
    return None if at is None else at - now
