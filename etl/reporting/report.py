"""The data-quality report (数据质量报告): one self-contained HTML page about every flow.

Per flow: its runs in the window, rows read / loaded / quarantined, the quarantine backlog and
its commonest reasons, the results of its expectations and run reconciliations (etl_check),
freshness against its schedule, and a trend chart. Then the business reconciliations. A
summary at the top says how many flows need action; the email subject says the same.

``collect`` reads the pipeline tables of every target database (read only, apart from creating
missing pipeline tables as every command does); everything else here is pure: data in, HTML or
text out. Times are naive UTC, as the ledger stores them.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from html import escape
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, func, select

from etl.config.flows import Flow, Project, ReportSettings
from etl.config.paths import REPO_ROOT
from etl.core.reasons import PARENT_MISSING
from etl.reporting import charts
from etl.sync.business_reconciliation import ReconciliationResult, reconcile_all
from etl.sync.connections import Connections
from etl.sync.ledger import BUSY, DRY_RUN, FAILED, SUCCESS
from etl.sync.pipeline_tables import check, ensure_pipeline_tables, ledger, quarantine
from etl.sync.quarantine import WAITING

DEFAULT_REPORT = REPO_ROOT / ".demo" / "data_quality_report.html"
SUBJECT_PREFIX = "[erp-mes-sync]"
REASONS_SHOWN = 5
MISMATCHES_SHOWN = 20


def generated_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None, microsecond=0)


@dataclass(frozen=True)
class Window:
    """The period the report covers: [since, until), naive UTC."""

    since: datetime
    until: datetime


@dataclass(frozen=True)
class ReasonGroup:
    """Quarantined rows whose reasons differ only in the values they name."""

    pattern: str
    rows: int
    example: str
    #: The first source keys waiting with this pattern, oldest first (report.keys_per_reason).
    keys: list[str] = field(default_factory=list)


@dataclass
class CheckSummary:
    """One expectation or run reconciliation of one flow over the window."""

    kind: str
    name: str
    action: str
    expectation_type: str | None = None
    suite: str | None = None
    runs: int = 0
    failed_runs: int = 0
    rows_checked: int = 0
    rows_failed: int = 0
    #: From the latest failing run.
    sample_keys: list[str] = field(default_factory=list)
    detail: str | None = None

    @property
    def pass_rate(self) -> float | None:
        """Share of checked rows that passed (None when no rows were checked)."""
        return 1 - self.rows_failed / self.rows_checked if self.rows_checked else None

    @property
    def needs_action(self) -> bool:
        return self.failed_runs > 0 and self.action != "warning"


@dataclass(frozen=True)
class Freshness:
    last_success: datetime | None
    #: The schedule's interval (None when the flow runs on demand only).
    interval: timedelta | None
    stale: bool


@dataclass
class FlowReport:
    flow: str
    direction: str
    target: str
    schedule: str | None
    runs: Counter[str] = field(default_factory=Counter)
    rows_read: int = 0
    rows_loaded: int = 0
    rows_quarantined: int = 0
    last_run: dict[str, Any] | None = None
    freshness: Freshness = Freshness(None, None, False)
    #: Rows waiting in quarantine, of which ``expected_wait`` wait only for a parent the source
    #: has not released yet (for less than report.expected_wait_days): a designed wait, no action.
    backlog: int = 0
    expected_wait: int = 0
    #: When the oldest of those expected waits was first quarantined.
    expected_since: datetime | None = None
    reasons: list[ReasonGroup] = field(default_factory=list)
    checks: list[CheckSummary] = field(default_factory=list)
    #: (day, rows loaded, rows quarantined) for each day of the trend, oldest first.
    trend: list[tuple[str, int, int]] = field(default_factory=list)

    @property
    def failing(self) -> bool:
        return self.last_run is not None and self.last_run["outcome"] == FAILED

    @property
    def action_backlog(self) -> int:
        """Rows in quarantine that someone has to look at."""
        return self.backlog - self.expected_wait

    @property
    def problems(self) -> list[str]:
        """What someone has to look at, one sentence each; empty when the flow is fine."""
        out = []
        if self.failing:
            assert self.last_run is not None
            out.append(f"last run failed: {first_line(self.last_run.get('error'))}")
        if self.freshness.stale:
            if self.freshness.last_success is None:
                out.append("no successful run recorded")
            else:
                out.append(f"stale: last success {self.freshness.last_success:%Y-%m-%d %H:%M} UTC, "
                           f"schedule {self.schedule}")
        if self.action_backlog:
            out.append(f"{self.action_backlog} row(s) waiting in quarantine")
        for c in self.checks:
            if c.needs_action:
                out.append(f"{c.kind} {c.name} failed in {c.failed_runs} of {c.runs} run(s)")
        return out


@dataclass
class Report:
    window: Window
    generated_at: datetime
    flows: list[FlowReport]
    reconciliations: list[ReconciliationResult]
    settings: ReportSettings
    #: Link to the Great Expectations Data Docs, when they exist.
    data_docs: str | None = None
    #: Event to commit, per event-driven flow (see event_latency).
    latency: list[EventLatency] = field(default_factory=list)

    @property
    def flows_needing_action(self) -> list[FlowReport]:
        return [f for f in self.flows if f.problems]

    @property
    def backlog(self) -> int:
        return sum(f.backlog for f in self.flows)

    @property
    def action_backlog(self) -> int:
        return sum(f.action_backlog for f in self.flows)

    @property
    def expected_wait(self) -> int:
        return sum(f.expected_wait for f in self.flows)

    @property
    def mismatches(self) -> int:
        return sum(len(r.mismatches) for r in self.reconciliations)

    @property
    def broken_reconciliations(self) -> int:
        return sum(1 for r in self.reconciliations if r.error)

    @property
    def needs_action(self) -> bool:
        return bool(self.flows_needing_action or self.mismatches or self.broken_reconciliations)


# --- pure helpers -----------------------------------------------------------------------------


def first_line(text: Any) -> str:
    lines = str(text or "").strip().splitlines()
    return lines[0] if lines else "(no error message)"


def plural(count: int, noun: str, suffix: str = "s") -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}{suffix}"


# A quoted literal is a value (a code, a number) unless it names a crosswalk; bare numbers are
# values too. So "no ERP code for '100123'" and "... for '100456'" share one pattern.
_QUOTED = re.compile(r"""(crosswalk\s+)?('[^']*'|"[^"]*")""")
_NUMBER = re.compile(r"(?<![A-Za-z_\d])-?\d[\d.,:]*")


def waits_for_parent(reason: str) -> bool:
    """Whether a quarantined row waits only for its parent to reach the target (each of its
    reasons is PARENT_MISSING): the run that finds the parent there loads it."""
    return _ONLY_PARENT_MISSING.fullmatch(str(reason)) is not None


_ONLY_PARENT_MISSING = re.compile(f"{PARENT_MISSING.pattern()}(?:; {PARENT_MISSING.pattern()})*", re.DOTALL)


def reason_pattern(reason: str) -> str:
    """The reason with the values it names replaced by ``…``: similar reasons share a pattern."""
    parts = []
    last = 0
    for match in _QUOTED.finditer(reason.strip()):
        parts.append(_NUMBER.sub("…", reason.strip()[last:match.start()]))
        parts.append(match.group(0) if match.group(1) else "'…'")
        last = match.end()
    parts.append(_NUMBER.sub("…", reason.strip()[last:]))
    return "".join(parts)


def pattern_of(reason: str) -> str:
    """A row's whole reason as a pattern: each of its parts ("a; b") by :func:`reason_pattern`."""
    return "; ".join(reason_pattern(part) for part in reason.split("; "))


def group_reasons(counts: Sequence[tuple[str, int]], limit: int = REASONS_SHOWN) -> list[ReasonGroup]:
    """Quarantine reasons (reason, rows) grouped by pattern, largest first, at most ``limit``.

    A row with several reasons ("a; b") counts once under its whole pattern."""
    rows: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for reason, n in counts:
        pattern = pattern_of(str(reason))
        rows[pattern] += n
        examples.setdefault(pattern, str(reason))
    ranked = sorted(rows.items(), key=lambda item: (-item[1], item[0]))
    return [ReasonGroup(pattern, n, examples[pattern]) for pattern, n in ranked[:limit]]


def schedule_interval(schedule: str | None, now: datetime) -> timedelta | None:
    """The gap between the schedule's two runs after ``now`` (None for manual-only flows).
    Cron presets such as ``@hourly`` work; ``@once`` and asset schedules have no interval."""
    if not schedule or schedule in ("@once", "@continuous"):
        return None
    from croniter import croniter  # an Airflow dependency; only needed here

    if not croniter.is_valid(schedule):
        return None
    it = croniter(schedule, now)
    first = it.get_next(datetime)
    return it.get_next(datetime) - first


def freshness(
    last_success: datetime | None, schedule: str | None, now: datetime, stale_after_intervals: float,
) -> Freshness:
    """Stale when a scheduled flow's last success is older than ``stale_after_intervals``
    schedule intervals, or it never succeeded. Flows without a schedule are never stale."""
    interval = schedule_interval(schedule, now)
    if interval is None:
        return Freshness(last_success, None, False)
    stale = last_success is None or now - last_success > interval * stale_after_intervals
    return Freshness(last_success, interval, stale)


def summarize_checks(rows: Sequence[dict[str, Any]]) -> list[CheckSummary]:
    """etl_check rows (oldest first) folded per check: runs, failures, rows, latest failing sample."""
    summaries: dict[tuple[str, str], CheckSummary] = {}
    for r in rows:
        s = summaries.setdefault((r["kind"], r["name"]), CheckSummary(
            r["kind"], r["name"], r["action"], r.get("expectation_type"), r.get("suite"),
        ))
        s.action = r["action"]
        s.runs += 1
        s.rows_checked += int(r["rows_checked"] or 0)
        s.rows_failed += int(r["rows_failed"] or 0)
        if not r["success"]:
            s.failed_runs += 1
            s.sample_keys = _sample_keys(r.get("sample_keys"))
            s.detail = r.get("detail")
    return sorted(summaries.values(), key=lambda s: (not s.needs_action, s.failed_runs == 0, s.kind, s.name))


def _sample_keys(raw: Any) -> list[str]:
    try:
        keys = json.loads(raw) if raw else []
    except ValueError:
        return [str(raw)]
    return [str(k) for k in keys] if isinstance(keys, list) else [str(keys)]


def daily_trend(runs: Sequence[dict[str, Any]], until: datetime, days: int) -> list[tuple[str, int, int]]:
    """Rows loaded and quarantined per UTC day for the ``days`` days up to ``until``."""
    last = until.date()
    first = last - timedelta(days=days - 1)
    loaded: Counter[Any] = Counter()
    quarantined: Counter[Any] = Counter()
    for r in runs:
        day = r["started_at"].date()
        if first <= day <= last and r["outcome"] == SUCCESS:
            loaded[day] += int(r["rows_loaded"] or 0)
            quarantined[day] += int(r["rows_new_in_quarantine"] or 0)
    return [
        (f"{d:%m-%d}", loaded[d], quarantined[d])
        for d in (first + timedelta(days=k) for k in range(days))
    ]


# --- reading the pipeline tables --------------------------------------------------------------


@dataclass
class _TargetData:
    runs: list[dict[str, Any]] = field(default_factory=list)
    last_run: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_success: dict[str, datetime] = field(default_factory=dict)
    reasons: dict[str, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    #: (flow, reason) -> when the oldest row waiting for that reason was first quarantined.
    first_seen: dict[tuple[str, str], datetime] = field(default_factory=dict)
    checks: list[dict[str, Any]] = field(default_factory=list)
    #: flow -> reason pattern -> the first keys waiting with it (see waiting_keys).
    keys: dict[str, dict[str, list[str]]] = field(default_factory=dict)


def waiting_keys(conn: Connection, flows: Sequence[str], limit: int) -> dict[str, dict[str, list[str]]]:
    """flow -> reason pattern -> the source keys of the first ``limit`` rows waiting with it,
    oldest first. The rows are streamed: the backlog is read once, never held whole."""
    found: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    if limit <= 0:
        return found
    Q = quarantine.c
    patterns: dict[str, str] = {}
    stmt = (
        select(Q.flow, Q.reason, Q.source_key).where(Q.flow.in_(flows), Q.status == WAITING)
        .order_by(Q.flow, Q.first_seen_at, Q.source_key)
    )
    for flow, reason, key in conn.execution_options(stream_results=True, yield_per=5000).execute(stmt):
        pattern = patterns.get(reason)
        if pattern is None:
            pattern = patterns[reason] = pattern_of(str(reason))
        keys = found[flow][pattern]
        if len(keys) < limit:
            keys.append(str(key))
    return found


def _read_target(
    conn: Connection, flows: Sequence[str], window: Window, trend_since: datetime, keys_per_reason: int = 0,
) -> _TargetData:
    data = _TargetData()
    L, Q, C = ledger.c, quarantine.c, check.c
    data.runs = [dict(r._mapping) for r in conn.execute(
        select(L.run_id, L.flow, L.started_at, L.outcome, L.rows_read, L.rows_loaded, L.rows_quarantined,
               L.rows_new_in_quarantine, L.error)
        .where(L.flow.in_(flows), L.started_at >= min(trend_since, window.since), L.started_at < window.until)
        .order_by(L.started_at)
    )]
    for flow in flows:
        latest = conn.execute(
            select(L.run_id, L.started_at, L.outcome, L.error)
            .where(L.flow == flow, L.started_at < window.until, L.outcome != DRY_RUN)
            .order_by(L.started_at.desc()).limit(1)
        ).first()
        if latest is not None:
            data.last_run[flow] = dict(latest._mapping)
    data.last_success = {
        flow: moment for flow, moment in conn.execute(
            select(L.flow, func.max(func.coalesce(L.finished_at, L.started_at)))
            .where(L.flow.in_(flows), L.outcome == SUCCESS, L.started_at < window.until)
            .group_by(L.flow)
        )
    }
    for flow, reason, n, first_seen in conn.execute(
        select(Q.flow, Q.reason, func.count(), func.min(Q.first_seen_at))
        .where(Q.flow.in_(flows), Q.status == WAITING).group_by(Q.flow, Q.reason)
    ):
        data.reasons[flow].append((reason, int(n)))
        data.first_seen[(flow, reason)] = first_seen
    data.keys = waiting_keys(conn, flows, keys_per_reason)
    data.checks = [dict(r._mapping) for r in conn.execute(
        select(C.flow, C.run_id, C.checked_at, C.kind, C.name, C.expectation_type, C.suite, C.action,
               C.rows_checked, C.rows_failed, C.success, C.sample_keys, C.detail)
        .where(C.flow.in_(flows), C.checked_at >= window.since, C.checked_at < window.until)
        .order_by(C.checked_at, C.id)
    )]
    return data


def flow_report(
    flow: Flow, schedule: str | None, data: _TargetData, window: Window, settings: ReportSettings,
) -> FlowReport:
    """One flow's section from what its target database holds."""
    report = FlowReport(flow.flow, flow.direction, flow.target.connection, schedule)
    runs = [r for r in data.runs if r["flow"] == flow.flow]
    for r in runs:
        # A dry run wrote nothing: it counts neither toward the flow's runs nor its rows.
        if r["started_at"] >= window.since and r["outcome"] != DRY_RUN:
            report.runs[r["outcome"]] += 1
            report.rows_read += int(r["rows_read"] or 0)
            report.rows_loaded += int(r["rows_loaded"] or 0)
            report.rows_quarantined += int(r["rows_quarantined"] or 0)
    report.last_run = data.last_run.get(flow.flow)
    report.freshness = freshness(
        data.last_success.get(flow.flow), schedule, window.until, settings.stale_after_intervals,
    )
    reasons = data.reasons.get(flow.flow, [])
    report.backlog = sum(n for _, n in reasons)
    expected_after = window.until - timedelta(days=settings.expected_wait_days)
    for reason, n in reasons:
        since = data.first_seen.get((flow.flow, reason))
        if waits_for_parent(reason) and since is not None and since >= expected_after:
            report.expected_wait += n
            report.expected_since = since if report.expected_since is None else min(report.expected_since, since)
    keys = data.keys.get(flow.flow, {})
    report.reasons = [replace(g, keys=keys.get(g.pattern, [])) for g in group_reasons(reasons)]
    report.checks = summarize_checks([c for c in data.checks if c["flow"] == flow.flow])
    report.trend = daily_trend(runs, window.until - timedelta(microseconds=1), settings.trend_days)
    return report


def data_docs_link(settings: ReportSettings, *, local: bool = True) -> str | None:
    """Where readers open the Data Docs: ``<report.data_docs_url>/index.html`` when a URL is
    configured; else, for the page written on this machine only (``local``), a file URI of the
    built folder's index.html; else None. A mail never carries a file URI: it is dead for
    every recipient."""
    if settings.data_docs_url:
        return settings.data_docs_url.rstrip("/") + "/index.html"
    if not local or not settings.data_docs:
        return None
    folder = Path(settings.data_docs)
    folder = folder if folder.is_absolute() else REPO_ROOT / folder
    index = folder / "index.html"
    return index.resolve().as_uri() if index.is_file() else None


def collect(
    project: Project, connections: Connections, window: Window, *, generated_at: datetime | None = None,
    reconcile: bool = True,
) -> Report:
    """Read every target database of ``project`` and run its business reconciliations."""
    settings = project.defaults.report
    trend_since = datetime.combine(window.until.date() - timedelta(days=settings.trend_days - 1), datetime.min.time())
    by_target: dict[str, list[Flow]] = defaultdict(list)
    for flow in project.flows.values():
        by_target[flow.target.connection].append(flow)
    flows: dict[str, FlowReport] = {}
    for target, target_flows in sorted(by_target.items()):
        with connections.engine(target).begin() as conn:
            ensure_pipeline_tables(conn)
            data = _read_target(conn, [f.flow for f in target_flows], window, trend_since, settings.keys_per_reason)
        for flow in target_flows:
            flows[flow.flow] = flow_report(flow, project.schedule_of(flow), data, window, settings)
    return Report(
        window=window,
        generated_at=generated_at or generated_now(),
        flows=[flows[name] for name in project.flows],
        reconciliations=reconcile_all(project, connections) if reconcile else [],
        settings=settings,
        data_docs=data_docs_link(settings),
        latency=event_latency(project, connections, window),
    )


@dataclass(frozen=True)
class EventLatency:
    """How long an event-driven flow took from the event to the commit of the run it woke, over
    the window's successful runs that answered an event (the ledger's ``options.event_at``)."""

    flow: str
    woken_by: str
    runs: int
    events: int
    p50: float
    p95: float
    worst: float


def _nearest_rank(ordered: Sequence[float], share: float) -> float:
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def event_latency(project: Project, connections: Connections, window: Window) -> list[EventLatency]:
    """Per flow with a ``trigger:``, event-to-commit seconds (p50, p95, max) of the window's runs."""
    by_target: dict[str, list[str]] = defaultdict(list)
    for spec in project.flows.values():
        if spec.trigger is not None:
            by_target[spec.target.connection].append(spec.flow)
    out = []
    for target, flows in sorted(by_target.items()):
        L = ledger.c
        with connections.engine(target).connect() as conn:
            rows = conn.execute(
                select(L.flow, L.finished_at, L.options).where(
                    L.flow.in_(flows), L.outcome == SUCCESS, L.started_at >= window.since,
                    L.started_at < window.until, L.options.like('%"event_at": "%'),
                )
            ).all()
        seconds: dict[str, list[float]] = defaultdict(list)
        answered: Counter[str] = Counter()
        kinds: dict[str, set[str]] = defaultdict(set)
        for name, finished, raw in rows:
            options = json.loads(raw)
            seconds[name].append((finished - datetime.fromisoformat(options["event_at"])).total_seconds())
            answered[name] += int(options.get("events") or 0)
            kinds[name].add(str(options.get("woken_by")))
        for name in flows:
            ordered = sorted(seconds.get(name, []))
            if ordered:
                out.append(EventLatency(
                    name, ", ".join(sorted(kinds[name])), len(ordered), answered[name],
                    _nearest_rank(ordered, 0.5), _nearest_rank(ordered, 0.95), ordered[-1],
                ))
    return out


def latency_section(latency: Sequence[EventLatency]) -> str:
    """The event-driven flows' latency table; nothing when no flow answered an event."""
    if not latency:
        return ""
    rows = [
        [escape(x.flow), escape(x.woken_by), _n(x.runs), _n(x.events), f"{x.p50:.2f} s", f"{x.p95:.2f} s", f"{x.worst:.2f} s"]
        for x in latency
    ]
    table = _table(["flow", "woken by", "runs", "events", "p50", "p95", "max"], rows, numeric=(2, 3, 4, 5, 6))
    return (
        "<section id='latency'><h2>Event-driven flows: event to commit</h2><p class='note'>From the first event a "
        "run answered (as the listener received it) to the run's commit, over the window's successful runs.</p>"
        f"{table}</section>"
    )


# --- text -------------------------------------------------------------------------------------


def action_items(report: Report) -> list[str]:
    """The subject's counts, biggest concern first; empty when nothing needs action."""
    failing = sum(1 for f in report.flows if f.failing)
    stale = sum(1 for f in report.flows if f.freshness.stale)
    failed_checks = sum(1 for f in report.flows for c in f.checks if c.needs_action)
    items = []
    if failing:
        items.append(f"{plural(failing, 'flow')} failing")
    if stale:
        items.append(f"{plural(stale, 'flow')} stale")
    if report.action_backlog:
        items.append(f"{plural(report.action_backlog, 'row')} in quarantine")
    if failed_checks:
        items.append(f"{plural(failed_checks, 'failed check')}")
    if report.mismatches:
        items.append(f"{plural(report.mismatches, 'reconciliation mismatch', 'es')}")
    if report.broken_reconciliations:
        items.append(f"{plural(report.broken_reconciliations, 'reconciliation')} could not run")
    return items


def subject(report: Report) -> str:
    """``[erp-mes-sync] ACTION NEEDED: 2 flows failing, 135 rows in quarantine — data quality 2026-11-25``
    or ``[erp-mes-sync] OK — data quality 2026-11-25``."""
    day = f"data quality {report.window.until:%Y-%m-%d}"
    items = action_items(report)
    if items:
        return f"{SUBJECT_PREFIX} ACTION NEEDED: {', '.join(items)} — {day}"
    return f"{SUBJECT_PREFIX} OK — {day}"


def render_text(report: Report) -> str:
    """The report's plain-text part: the verdict, what needs action and one line per flow."""
    w = report.window
    lines = [
        subject(report), "",
        f"Window {w.since:%Y-%m-%d %H:%M} – {w.until:%Y-%m-%d %H:%M} UTC, generated "
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC.", "",
    ]
    todo = [f"- {f.flow}: {'; '.join(f.problems)}" for f in report.flows_needing_action]
    todo += [
        f"- reconciliation {r.check.name}: "
        + (r.error or f"{plural(len(r.mismatches), 'line')} beyond tolerance")
        for r in report.reconciliations if not r.ok
    ]
    lines += ["Needs action:", *todo] if todo else ["Nothing needs action."]
    waiting = [f"- {f.flow}: {expected_wait_text(f, w.until)}" for f in report.flows if f.expected_wait]
    if waiting:
        lines += ["", "Waiting (expected), no action:", *waiting]
    lines += ["", "Flows (runs ok / failed / busy; rows read, loaded, quarantined; waiting in quarantine):"]
    for f in report.flows:
        expected = f" (+{_n(f.expected_wait)} waiting, expected)" if f.expected_wait else ""
        lines.append(
            f"- {f.flow}: {f.runs[SUCCESS]} / {f.runs[FAILED]} / {f.runs[BUSY]}; {_n(f.rows_read)}, "
            f"{_n(f.rows_loaded)}, {_n(f.rows_quarantined)}; {_n(f.action_backlog)} waiting{expected}; last success "
            f"{_ago(f.freshness.last_success, w.until)}"
        )
    if report.data_docs:
        lines += ["", f"Great Expectations Data Docs: {report.data_docs}"]
    lines += ["", "The HTML part has each flow's checks, quarantine reasons and trend."]
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------------------


def expected_wait_text(flow: FlowReport, now: datetime) -> str:
    """``311 rows wait for a parent the source has not released yet, oldest 2 h ago``."""
    rows = plural(flow.expected_wait, "row")
    verb = "waits" if flow.expected_wait == 1 else "wait"
    return f"{rows} {verb} for a parent the source has not released yet, oldest {_ago(flow.expected_since, now)}"


def _n(value: Any) -> str:
    return f"{int(value):,}"


def _qty(value: Decimal) -> str:
    text = f"{value:,.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def _ago(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return "never"
    seconds = max(0, int((now - moment).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def _interval(interval: timedelta | None) -> str:
    if interval is None:
        return "on demand"
    minutes = int(interval.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"every {minutes // 1440} d"
    if minutes % 60 == 0:
        return f"every {minutes // 60} h"
    return f"every {minutes} min"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[int] = ()) -> str:
    """An HTML table; cells are already escaped markup."""
    head = "".join(f"<th{' class=num' if i in numeric else ''}>{escape(h)}</th>" for i, h in enumerate(headers))
    body = "".join(
        "<tr>" + "".join(f"<td{' class=num' if i in numeric else ''}>{cell}</td>" for i, cell in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _badge(text: str, kind: str) -> str:
    return f"<span class='badge {kind}'>{escape(text)}</span>"


def _status(flow: FlowReport) -> str:
    if flow.failing:
        return _badge("failing", "bad")
    if flow.freshness.stale:
        return _badge("stale", "bad")
    if flow.problems:
        return _badge("needs action", "warn")
    if flow.expected_wait:
        return _badge("waiting (expected)", "good")
    return _badge("ok", "good")


def _tiles(report: Report) -> str:
    needing = len(report.flows_needing_action)
    failing = sum(1 for f in report.flows if f.failing)
    stale = sum(1 for f in report.flows if f.freshness.stale)
    failed_checks = sum(1 for f in report.flows for c in f.checks if c.needs_action)
    tiles = [
        ("Flows needing action", f"{needing} of {len(report.flows)}", needing),
        ("Failing", _n(failing), failing),
        ("Stale", _n(stale), stale),
        ("Rows in quarantine", _n(report.action_backlog), report.action_backlog),
        ("Waiting (expected)", _n(report.expected_wait), 0),
        ("Failed checks", _n(failed_checks), failed_checks),
        ("Reconciliation mismatches", _n(report.mismatches), report.mismatches + report.broken_reconciliations),
    ]
    return "<div class='tiles'>" + "".join(
        f"<div class='tile{' alert' if bad else ''}'><div class='tile-name'>{escape(name)}</div>"
        f"<div class='tile-value'>{escape(value)}</div></div>"
        for name, value, bad in tiles
    ) + "</div>"


def summary_section(report: Report) -> str:
    verdict = "Action needed" if report.needs_action else "All flows OK"
    items = [
        f"<li><a href='#flow-{escape(f.flow)}'>{escape(f.flow)}</a>: {escape('; '.join(f.problems))}</li>"
        for f in report.flows_needing_action
    ]
    items += [
        f"<li><a href='#rec-{escape(r.check.name)}'>reconciliation {escape(r.check.name)}</a>: "
        + (escape(r.error) if r.error else escape(f"{plural(len(r.mismatches), 'line')} beyond tolerance"))
        + "</li>"
        for r in report.reconciliations if not r.ok
    ]
    todo = f"<ul class='todo'>{''.join(items)}</ul>" if items else "<p>Nothing needs action.</p>"
    waiting = [
        f"<li><a href='#flow-{escape(f.flow)}'>{escape(f.flow)}</a>: {escape(expected_wait_text(f, report.window.until))}</li>"
        for f in report.flows if f.expected_wait
    ]
    if waiting:
        todo += f"<p class='note'>Waiting (expected), no action:</p><ul class='waiting'>{''.join(waiting)}</ul>"
    docs = (
        f"<p>Expectation suites in detail: <a href='{escape(report.data_docs)}'>Great Expectations Data Docs</a>.</p>"
        if report.data_docs else ""
    )
    return f"<section id='summary'><h2>Summary: {escape(verdict)}</h2>{_tiles(report)}{todo}{docs}</section>"


def overview_section(report: Report) -> str:
    now = report.window.until
    rows = []
    for f in report.flows:
        runs = f"{f.runs[SUCCESS]} / {f.runs[FAILED]} / {f.runs[BUSY]}"
        rows.append([
            f"<a href='#flow-{escape(f.flow)}'>{escape(f.flow)}</a>", escape(f.direction), _status(f), escape(runs),
            _n(f.rows_read), _n(f.rows_loaded), _n(f.rows_quarantined), _n(f.action_backlog), _n(f.expected_wait),
            escape(_ago(f.freshness.last_success, now)), escape(_interval(f.freshness.interval)),
        ])
    table = _table(
        ["flow", "direction", "status", "runs ok / failed / busy", "read", "loaded", "quarantined",
         "waiting in quarantine", "waiting (expected)", "last success", "schedule"],
        rows, numeric=(4, 5, 6, 7, 8),
    )
    return (
        "<section id='flows'><h2>Flows</h2><p class='note'>Runs and rows in the report window; quarantine as it "
        "stands now; a flow is stale when its last success is older than "
        f"{report.settings.stale_after_intervals:g} schedule intervals.</p>{table}</section>"
    )


def _checks_table(checks: Sequence[CheckSummary]) -> str:
    rows = []
    for c in checks:
        rate = "–" if c.pass_rate is None else f"{c.pass_rate * 100:.1f} %"
        verdict = _badge("passed", "good") if c.failed_runs == 0 else _badge(
            "failed" if c.action != "warning" else "warning", "bad" if c.action != "warning" else "warn")
        what = escape(c.name) + (f"<div class='sub'>{escape(c.expectation_type)}</div>" if c.expectation_type else "")
        detail = escape(c.detail or "")
        keys = ", ".join(escape(k) for k in c.sample_keys)
        rows.append([
            escape(c.kind), what, escape(c.action), verdict, f"{c.runs - c.failed_runs} of {c.runs}",
            _n(c.rows_failed), escape(rate), f"{detail}<div class='keys'>{keys}</div>" if keys else detail,
        ])
    return _table(
        ["kind", "check", "on failure", "result", "runs passed", "rows failed", "rows passed", "detail / sample keys"],
        rows, numeric=(5, 6),
    )


def flow_section(flow: FlowReport, report: Report) -> str:
    parts = []
    problems = flow.problems
    if problems:
        parts.append("<ul class='todo'>" + "".join(f"<li>{escape(p)}</li>" for p in problems) + "</ul>")
    if flow.last_run is not None and flow.last_run["outcome"] == FAILED:
        parts.append(
            f"<p class='error'>Last run {escape(str(flow.last_run['run_id']))} at "
            f"{flow.last_run['started_at']:%Y-%m-%d %H:%M} UTC: {escape(str(flow.last_run['error'] or ''))}</p>"
        )
    days = [d for d, _, _ in flow.trend]
    chart = charts.daily_columns(
        days,
        [(charts.BLUE, "rows loaded", [float(x) for _, x, _ in flow.trend]),
         (charts.RED, "rows quarantined", [float(q) for _, _, q in flow.trend])],
        label=f"{flow.flow}: rows per day",
    )
    parts.append(
        f"<div class='trend'><h3>Rows per day, last {len(days)} days</h3>{chart}"
        + charts.legend([(charts.BLUE, "loaded"), (charts.RED, "new in quarantine")]) + "</div>"
    )
    if flow.reasons:
        rows = [[_n(g.rows), escape(g.pattern), escape(g.example)] for g in flow.reasons]
        if flow.expected_wait:
            parts.append(f"<p class='note'>Waiting (expected): {escape(expected_wait_text(flow, report.window.until))}; "
                         "each is loaded by the run that finds its parent on the target.</p>")
        parts.append(f"<h3>Quarantine backlog: {plural(flow.backlog, 'row')}, commonest reasons</h3>"
                     + _table(["rows", "reason", "example"], rows, numeric=(0,)))
    parts.append(waiting_keys_section(flow))
    if flow.checks:
        parts.append("<h3>Expectations and run reconciliations</h3>" + _checks_table(flow.checks))
    fresh = (
        f"last success {_ago(flow.freshness.last_success, report.window.until)}, schedule "
        f"{flow.schedule or 'none'} ({_interval(flow.freshness.interval)})"
    )
    return (
        f"<section id='flow-{escape(flow.flow)}'><h2>{escape(flow.flow)} {_status(flow)}</h2>"
        f"<p class='note'>{escape(flow.direction)} → {escape(flow.target)} · {escape(fresh)}</p>{''.join(parts)}</section>"
    )


def waiting_keys_section(flow: FlowReport) -> str:
    """Which rows wait, by reason: the first keys of each, so a planner can act from the mail."""
    listed = [g for g in flow.reasons if g.keys]
    if not listed:
        return ""
    items = []
    for group in listed:
        more = group.rows - len(group.keys)
        tail = f" and {_n(more)} more" if more > 0 else ""
        keys = ", ".join(f"<code>{escape(k)}</code>" for k in group.keys)
        items.append(f"<li>{escape(group.pattern)}: {keys}{escape(tail)}</li>")
    return f"<h3>Keys waiting in quarantine, by reason</h3><ul class='keys'>{''.join(items)}</ul>"


def reconciliation_section(results: Sequence[ReconciliationResult]) -> str:
    if not results:
        return ("<section id='business'><h2>Business reconciliation</h2>"
                "<p class='note'>No reconciliations declared (mappings/reconciliations.yaml).</p></section>")
    blocks = []
    for r in results:
        c = r.check
        tol = f"tolerance: {c.tolerance.absolute:g} absolute or {c.tolerance.relative * 100:g} % of the ERP value"
        head = f"<h3 id='rec-{escape(c.name)}'>{escape(c.name)} "
        if r.error:
            blocks.append(f"{head}{_badge('could not run', 'bad')}</h3><p class='error'>{escape(r.error)}</p>")
            continue
        bad = r.mismatches
        verdict = _badge(f"{len(bad)} beyond tolerance", "bad") if bad else _badge("within tolerance", "good")
        text = (f"{escape(c.description)} <span class='sub'>({escape(c.value)}; {escape(tol)}; "
                f"{plural(len(r.lines), 'line')}, {len(r.lines) - len(bad)} within)</span>")
        table = ""
        if bad:
            worst = sorted(bad, key=lambda line: (-abs(line.difference), line.key))[:MISMATCHES_SHOWN]
            rows = [
                [escape(" · ".join(line.key)),
                 _qty(line.erp) + (" <span class='sub'>(no ERP row)</span>" if line.erp_missing else ""),
                 _qty(line.mes) + (" <span class='sub'>(no MES row)</span>" if line.mes_missing else ""),
                 _qty(line.difference), "no"]
                for line in worst
            ]
            shown = f" (the {len(worst)} largest)" if len(bad) > len(worst) else ""
            table = f"<p class='sub'>Lines beyond tolerance{shown}:</p>" + _table(
                [" · ".join(c.key), "ERP", "MES", "MES − ERP", "within tolerance"], rows, numeric=(1, 2, 3))
        blocks.append(f"{head}{verdict}</h3><p>{text}</p>{table}")
    return ("<section id='business'><h2>Business reconciliation</h2><p class='note'>ERP figures against the MES "
            "feedback, key by key (mappings/reconciliations.yaml).</p>" + "".join(blocks) + "</section>")


STYLE = """
body{margin:0;background:#f4f6f8;color:#22272e;font:14px/1.45 system-ui,"Noto Sans CJK SC","Microsoft YaHei",sans-serif}
header{background:#1f3b57;color:#fff;padding:18px 28px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;opacity:.8}main{padding:18px 28px;display:grid;gap:18px;max-width:1280px}
section{background:#fff;border-radius:8px;padding:14px 18px;box-shadow:0 1px 2px #0001}
section h2{margin:0 0 6px;font-size:17px}h3{font-size:14px;margin:12px 0 4px}p.note,.sub{color:#5b6470}
.sub{font-size:12px}.tiles{display:grid;grid-template-columns:repeat(7,1fr);gap:10px;margin:8px 0}
.tile{background:#f4f6f8;border-radius:8px;padding:10px 12px}.tile.alert{background:#fbe9e5}
.tile-name{font-size:12px;color:#5b6470;text-transform:uppercase;letter-spacing:.04em}
.tile-value{font-size:24px;font-weight:600}table{border-collapse:collapse;width:100%;font-size:13px}
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6ea;vertical-align:top}
th{color:#5b6470;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;vertical-align:middle}
.badge.good{background:#e3f2e8;color:#2b7046}.badge.bad{background:#fbe9e5;color:#a63f2a}
.badge.warn{background:#fcf1dc;color:#8a5a12}.todo li{margin:2px 0}.error{color:#a63f2a}
.keys{font-family:ui-monospace,monospace;font-size:12px;color:#5b6470}.trend{max-width:460px}
.legend{margin-top:4px;font-size:12px;color:#5b6470}.swatch{display:inline-block;width:10px;height:10px;
margin:0 5px 0 14px;border-radius:2px;vertical-align:middle}.empty{color:#8a8f98;font-style:italic}
footer{padding:0 28px 24px;color:#8a8f98;font-size:12px}
"""


def render_html(report: Report) -> str:
    """The whole report as one self-contained HTML document: UTF-8, no script, nothing fetched."""
    w = report.window
    flows = "".join(flow_section(f, report) for f in report.flows if _has_content(f))
    quiet = [f.flow for f in report.flows if not _has_content(f)]
    quiet_note = (
        f"<section><h2>Flows without runs</h2><p class='note'>No runs, checks or quarantine for: "
        f"{escape(', '.join(quiet))}.</p></section>" if quiet else ""
    )
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        "<link rel='icon' href='data:,'>"
        f"<title>{escape(subject(report))}</title><style>{STYLE}</style></head><body>"
        "<header><h1>Data-quality report · 数据质量报告</h1>"
        f"<p>Window {w.since:%Y-%m-%d %H:%M} – {w.until:%Y-%m-%d %H:%M} UTC · generated "
        f"{report.generated_at:%Y-%m-%d %H:%M} UTC</p></header><main>"
        f"{summary_section(report)}{overview_section(report)}{latency_section(report.latency)}"
        f"{reconciliation_section(report.reconciliations)}"
        f"{flows}{quiet_note}</main>"
        "<footer>erp-mes-sync · from the run ledger, the quarantine and the checks on every target database "
        "(etl_ledger, etl_quarantine, etl_check); `python -m etl report` writes this page.</footer>"
        "</body></html>"
    )


def _has_content(flow: FlowReport) -> bool:
    return bool(flow.last_run or flow.backlog or flow.checks or any(x or q for _, x, q in flow.trend))


# --- the command and the DAG task --------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    path: Path
    subject: str
    needs_action: bool
    #: The page as written to ``path`` (it may link Data Docs on this machine).
    html: str
    #: The page as mailed (Data Docs linked only through report.data_docs_url) and its text twin.
    mail_html: str
    text: str


def build_report(
    project: Project, connections: Connections, out: Path, window: Window | None = None,
    *, generated_at: datetime | None = None,
) -> Written:
    """Collect, render and write the report to ``out`` (folders created). The default window is
    the 24 hours before now."""
    now = generated_at or generated_now()
    window = window or Window(now - timedelta(days=1), now)
    report = collect(project, connections, window, generated_at=now)
    html = render_html(report)
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    mailed = replace(report, data_docs=data_docs_link(report.settings, local=False))
    return Written(out, subject(report), report.needs_action, html, render_html(mailed), render_text(mailed))
