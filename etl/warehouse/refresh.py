"""The reporting warehouse: its schema, the type-2 history of materials, and a refresh of both.

Rows reach the warehouse through flows like any other (``mappings/flows/wh_*.yaml``, direction
``warehouse``), run by the same runner with the same watermark, ledger and quarantine. This
module adds what a flow does not express:

- ``build``: create the tables and KPI views of ``sql/warehouse/`` (idempotent), fill dim_date;
- ``apply_material_history``: dim_material's type-2 history, from stg_material;
- ``refresh``: the warehouse flows in dependency order, then the history step. It is what
  ``python -m etl warehouse refresh`` runs and what a warehouse DAG task calls.

Facts carry the ERP's golden codes, not surrogate keys, so a fact never waits for a dimension
version: a report joins the material version valid at its own time
(``valid_from <= end_time < valid_to``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    Boolean,
    Connection,
    Date,
    DateTime,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    case,
    column,
    exists,
    func,
    inspect,
    literal,
    or_,
    select,
    table,
    text,
    true,
    update,
)

from etl.config.crosswalks import load_crosswalks
from etl.config.flows import Flow, Project
from etl.config.paths import REPO_ROOT
from etl.core.clock import utcnow
from etl.core.errors import EtlError, FlowBusy, StepFailed
from etl.dialects import dialect_for
from etl.sync import ledger
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import ensure_pipeline_tables
from etl.sync.runner import RunOptions, RunResult, run_flow

WAREHOUSE_SQL = REPO_ROOT / "sql" / "warehouse"
#: KPI views in creation order: each comes after the views it reads.
VIEWS = (
    "int_confirmation",
    "int_equipment_state_day",
    "kpi_order_progress",
    "kpi_on_time_delivery",
    "kpi_yield_daily",
    "kpi_scrap_pareto",
    "kpi_oee_daily",
    "kpi_inventory_shortfall",
)
FIRST_DATE = date(2020, 1, 1)
LAST_DATE = date(2035, 12, 31)
#: The ledger's name for the type-2 step, which is not a flow.
MATERIAL_HISTORY = "wh_dim_material_history"
STAGING_TABLE = "stg_material"
#: A change of these starts a new dim_material version (type 2) ...
HISTORY_COLUMNS = ("standard_cost", "material_group")
#: ... a change of these is written into every version (type 1).
OVERWRITE_COLUMNS = ("material_type", "base_unit", "description_zh", "description_en", "is_deleted")
BEGINNING = datetime(1900, 1, 1)
END_OF_TIME = datetime(9999, 12, 31)

_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_CREATES = re.compile(
    r"^\s*CREATE\s+(TABLE|VIEW)\s+(?:IF\s+NOT\s+EXISTS\s+)?([A-Za-z_][A-Za-z0-9_]*)", re.IGNORECASE
)


class WarehouseError(EtlError):
    """The warehouse SQL or setup is incomplete (a view without SQL for this database, no
    warehouse flow in mappings/)."""


@dataclass(frozen=True)
class SqlObject:
    """One table or view of sql/warehouse/: its statements and the header comment that documents it."""

    name: str
    kind: str
    path: Path
    statements: tuple[str, ...]
    description: str


def sql_statements(sql: str) -> list[str]:
    """The statements of a SQL file, comments removed, in file order.

    A statement ends with ";" at the end of a line. Only whole-line and trailing ``--`` comments
    outside quotes are removed, so literals keep their text.
    """
    lines = [_strip_comment(line) for line in sql.splitlines()]
    return [part.strip() for part in _STATEMENT_END.split("\n".join(lines)) if part.strip()]


def _strip_comment(line: str) -> str:
    quoted = False
    for i, char in enumerate(line):
        if char == "'":
            quoted = not quoted
        elif not quoted and line.startswith("--", i):
            return line[:i].rstrip()
    return line


def header_comment(sql: str) -> str:
    """The leading ``--`` comment block of a SQL file, as plain text (one line per line)."""
    lines = []
    for line in sql.splitlines():
        if not line.startswith("--"):
            break
        lines.append(line.removeprefix("--").removeprefix(" ").rstrip())
    return "\n".join(lines)


def read_object(path: Path) -> SqlObject:
    """Parse one file of sql/warehouse/; WarehouseError if it creates no table or view."""
    sql = path.read_text(encoding="utf-8")
    statements = sql_statements(sql)
    match = next((m for m in map(_CREATES.match, statements) if m), None)
    if match is None:
        raise WarehouseError(f"{path}: creates no table or view")
    return SqlObject(match.group(2), match.group(1).lower(), path, tuple(statements), header_comment(sql))


def table_objects() -> list[SqlObject]:
    """Every warehouse table, from sql/warehouse/tables/ (portable DDL), by file name."""
    if not WAREHOUSE_SQL.is_dir():
        raise WarehouseError(
            f"not supported yet: the warehouse SQL is read from a clone of the repository ({WAREHOUSE_SQL} "
            "is not there); an installed package syncs flows, but builds no warehouse"
        )
    return [read_object(path) for path in sorted((WAREHOUSE_SQL / "tables").glob("*.sql"))]


def view_objects(dialect_name: str) -> list[SqlObject]:
    """The KPI views in creation order, each from ``views/<dialect>/<name>.sql`` where the
    database needs its own syntax, else from the portable ``views/<name>.sql``."""
    views = []
    for name in VIEWS:
        own = WAREHOUSE_SQL / "views" / dialect_name / f"{name}.sql"
        portable = WAREHOUSE_SQL / "views" / f"{name}.sql"
        path = own if own.is_file() else portable
        if not path.is_file():
            raise WarehouseError(
                f"view {name} has no SQL for {dialect_name}: write {own.relative_to(REPO_ROOT)}"
            )
        views.append(read_object(path))
    return views


@dataclass(frozen=True)
class BuildReport:
    tables: list[str]
    views: list[str]
    dates_added: int


def build(
    engine: Engine, *, replace: bool = False, first_date: date = FIRST_DATE, last_date: date = LAST_DATE,
) -> BuildReport:
    """Create the warehouse tables where missing and (re)create every KPI view, in one transaction.

    Idempotent: tables and their rows stay, seed rows are added only where missing, dim_date
    gains only missing days, views are dropped and created again (so a changed view takes
    effect). ``replace`` drops the tables first, data included: the demo's reset.
    ``engine`` should come from etl.sync.connections, whose SQLite engines make DDL transactional.
    """
    tables = table_objects()
    views = view_objects(engine.dialect.name)
    with engine.begin() as conn:
        quote = conn.dialect.identifier_preparer.quote
        for view in reversed(views):
            conn.exec_driver_sql(f"DROP VIEW IF EXISTS {quote(view.name)}")
        if replace:
            for obj in tables:
                conn.exec_driver_sql(f"DROP TABLE IF EXISTS {quote(obj.name)}")
        for obj in tables + views:
            for statement in obj.statements:
                conn.exec_driver_sql(statement)
            _describe(conn, obj)
        added = fill_dim_date(conn, first_date, last_date)
    return BuildReport([t.name for t in tables], [v.name for v in views], added)


def _describe(conn: Connection, obj: SqlObject) -> None:
    # PostgreSQL keeps the header (grain, key, formula) as the object's comment, where BI tools
    # such as Metabase show it; SQLite has no comments, its readers have the .sql files.
    if conn.dialect.name != "postgresql":
        return
    name = conn.dialect.identifier_preparer.quote(obj.name)
    conn.execute(text(f"COMMENT ON {obj.kind.upper()} {name} IS :description"), {"description": obj.description})


def missing_tables(engine: Engine) -> list[str]:
    """Warehouse tables that do not exist yet in ``engine``'s database."""
    existing = set(inspect(engine).get_table_names())
    return [obj.name for obj in table_objects() if obj.name not in existing]


_DIM_DATE = table(
    "dim_date",
    column("calendar_date", Date), column("year", Integer), column("quarter", Integer),
    column("month", Integer), column("year_month", String), column("day_of_month", Integer),
    column("iso_year", Integer), column("iso_week", Integer), column("day_of_week", Integer),
    column("is_weekend", Boolean),
)


def date_row(day: date) -> dict[str, object]:
    """The dim_date row of one day."""
    iso = day.isocalendar()
    return {
        "calendar_date": day, "year": day.year, "quarter": (day.month - 1) // 3 + 1, "month": day.month,
        "year_month": f"{day.year:04d}-{day.month:02d}", "day_of_month": day.day,
        "iso_year": iso.year, "iso_week": iso.week, "day_of_week": iso.weekday, "is_weekend": iso.weekday >= 6,
    }


def fill_dim_date(conn: Connection, first: date, last: date) -> int:
    """Add the days of [first, last] that dim_date lacks; returns how many were added."""
    known = set(
        conn.execute(select(_DIM_DATE.c.calendar_date).where(_DIM_DATE.c.calendar_date.between(first, last))).scalars()
    )
    days = (first + timedelta(days=n) for n in range((last - first).days + 1))
    rows = [date_row(day) for day in days if day not in known]
    if rows:
        conn.execute(_DIM_DATE.insert(), rows)
    return len(rows)


@dataclass(frozen=True)
class HistoryCounts:
    """What one application of the material history changed in dim_material."""

    opened: int
    closed: int
    corrected: int
    overwritten: int
    run_id: str

    @property
    def written(self) -> int:
        return self.opened + self.closed + self.corrected + self.overwritten


def apply_material_history(engine: Engine, clock: Callable[[], datetime] = utcnow) -> HistoryCounts:
    """Bring dim_material's type-2 history in line with stg_material, in one transaction with
    its ledger row (flow ``wh_dim_material_history``).

    Why a step and not a flow: a flow upserts one row per key, while a type-2 change must close
    the current version and open a new one for the same material, decided against the current
    version, and both must commit together so a reader never sees a material with no current
    version or with two. For each staged material:

    - standard_cost or material_group changed: the current version ends (valid_to) at the
      ERP's updated_at and a new current version starts there; a change stamped no later than
      the current version began corrects that version in place instead;
    - no current version: one starts (at 1900-01-01 for a material seen for the first time);
    - the other attributes are overwritten in every version (type 1).
    Running it again without staged changes writes nothing. Raises FlowBusy when another run of
    this step holds its lock.
    """
    run = ledger.RunRecord(
        run_id=str(uuid.uuid4()), flow=MATERIAL_HISTORY, direction="warehouse", started_at=clock(),
    )
    with engine.begin() as conn:
        ensure_pipeline_tables(conn)
        if not dialect_for(conn).try_lock(conn, MATERIAL_HISTORY):
            raise FlowBusy(f"{MATERIAL_HISTORY}: another run holds its lock; nothing was written")
        staged = Table(STAGING_TABLE, MetaData(), autoload_with=conn)
        dim = Table("dim_material", MetaData(), autoload_with=conn)
        counts = _apply_history(conn, staged, dim, run.run_id)
        run.counts.rows_read = int(conn.execute(select(func.count()).select_from(staged)).scalar_one())
        run.counts.rows_loaded = counts.written
        run.finished_at = clock()
        run.outcome = ledger.SUCCESS
        ledger.write_run(conn, run)
    return counts


def _apply_history(conn: Connection, staged: Table, dim: Table, run_id: str) -> HistoryCounts:
    same = staged.c.material_no == dim.c.material_no
    current = dim.c.is_current == true()
    changed = or_(*[dim.c[c].is_distinct_from(staged.c[c]) for c in HISTORY_COLUMNS])
    changed_at = staged.c.source_updated_at

    def staged_value(name: str) -> object:
        return select(staged.c[name]).where(same).scalar_subquery()

    corrected = conn.execute(
        update(dim)
        .where(current, exists(select(1).select_from(staged).where(same, changed, changed_at <= dim.c.valid_from)))
        .values({c: staged_value(c) for c in HISTORY_COLUMNS})
    ).rowcount
    closed = conn.execute(
        update(dim)
        .where(current, exists(select(1).select_from(staged).where(same, changed, changed_at > dim.c.valid_from)))
        .values(valid_to=staged_value("source_updated_at"), is_current=False)
    ).rowcount
    earlier = dim.alias("earlier")
    has_history = exists(select(1).select_from(earlier).where(earlier.c.material_no == staged.c.material_no))
    attributes = [*OVERWRITE_COLUMNS, *HISTORY_COLUMNS]
    opened = conn.execute(
        dim.insert().from_select(
            ["material_no", "valid_from", "valid_to", "is_current", *attributes],
            select(
                staged.c.material_no,
                case((has_history, changed_at), else_=literal(BEGINNING, DateTime)),
                literal(END_OF_TIME, DateTime),
                true(),
                *[staged.c[c] for c in attributes],
            ).where(~exists(select(1).select_from(dim).where(dim.c.material_no == staged.c.material_no, current))),
        )
    ).rowcount
    overwritten = conn.execute(
        update(dim)
        .where(exists(select(1).select_from(staged).where(
            same, or_(*[dim.c[c].is_distinct_from(staged.c[c]) for c in OVERWRITE_COLUMNS])
        )))
        .values({c: staged_value(c) for c in OVERWRITE_COLUMNS})
    ).rowcount
    return HistoryCounts(opened or 0, closed or 0, corrected or 0, overwritten or 0, run_id)


def warehouse_flows(project: Project) -> list[Flow]:
    """The project's warehouse flows, in dependency order."""
    return [flow for flow in project.flows.values() if flow.direction == "warehouse"]


def warehouse_connection(project: Project) -> str:
    """The connection id the warehouse flows write to; WarehouseError unless there is exactly one."""
    targets = sorted({flow.target.connection for flow in warehouse_flows(project)})
    if len(targets) != 1:
        found = ", ".join(targets) or "none"
        raise WarehouseError(
            f"{project.mappings_dir}: the warehouse flows (direction: warehouse) must write to one "
            f"connection; found: {found}"
        )
    return targets[0]


@dataclass
class RefreshResult:
    """The outcome of one refresh: a result per flow run, the history counts, what failed."""

    results: list[RunResult] = field(default_factory=list)
    history: HistoryCounts | None = None
    failures: list[StepFailed] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class RefreshFailed(EtlError):
    """Some warehouse flows failed; ``outcome`` holds what ran. Retryable when every failure was."""

    def __init__(self, outcome: RefreshResult):
        self.outcome = outcome
        self.retryable = all(f.retryable for f in outcome.failures)
        names = ", ".join(f.flow for f in outcome.failures)
        super().__init__(f"warehouse refresh: flow(s) failed: {names}" + (
            f"; skipped after them: {', '.join(outcome.skipped)}" if outcome.skipped else ""
        ))


def refresh(connections: Connections, project: Project, full: bool = False) -> RefreshResult:
    """Bring the warehouse up to date: every warehouse flow in dependency order, then the
    material history.

    Incremental by default: each flow reads from its watermark. ``full`` (the nightly rebuild)
    first rebuilds the schema and views and has every flow read its whole source; rows equal to
    the warehouse's are still not rewritten. A warehouse without its tables is built first.
    A flow that fails does not stop the flows that do not depend on it; the history step runs
    unless stg_material's flow failed. Returns what ran; raises RefreshFailed (carrying it)
    when a flow failed, retryable when every failure was transient.
    """
    flows = warehouse_flows(project)
    engine = connections.engine(warehouse_connection(project))
    if full or missing_tables(engine):
        build(engine)
    crosswalks = load_crosswalks(Path(project.mappings_dir) / "crosswalks")
    outcome = RefreshResult()
    failed: set[str] = set()
    for flow in flows:
        if any(dep in failed for dep in flow.depends_on):
            failed.add(flow.flow)
            outcome.skipped.append(flow.flow)
            continue
        try:
            outcome.results.append(
                run_flow(project, flow.flow, connections, RunOptions(full_refresh=full), crosswalks=crosswalks)
            )
        except StepFailed as exc:
            failed.add(flow.flow)
            outcome.failures.append(exc)
    if not any(flow.target.table == STAGING_TABLE and flow.flow in failed for flow in flows):
        outcome.history = apply_material_history(engine)
    if outcome.failures or outcome.skipped:
        raise RefreshFailed(outcome)
    return outcome
