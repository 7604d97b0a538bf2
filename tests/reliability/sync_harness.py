"""Harness of the reliability tests.

A *site* is one demo ERP and one demo MES on the real PostgreSQL server, cloned (CREATE
DATABASE ... TEMPLATE) from a pristine pair the demo factory filled once per session, with its
own copy of mappings/. A *twin* is a second site that receives the same source changes and
runs the same flows without ever crashing: after a crash and a rerun, the crashed site's sync
state must equal the twin's, row by row. ``Child`` runs flows in a forked process, so a test can
SIGKILL a run at an exact step or at a random moment without paying Python's start-up time.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.engine import URL, make_url

from etl.config.crosswalks import Crosswalk, load_crosswalks
from etl.config.flows import LoadSpec, Project
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.core.errors import StepFailed
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, RunResult, run_flow

#: The flows that keep ERP and MES in step, in dependency order (warehouse flows are not ours).
SYNC_FLOWS = (
    "materials", "boms", "work_centers", "personnel", "routings", "production_orders",
    "order_components", "confirmations", "consumptions", "goods_receipts", "quality_results",
)
#: Ways a PostgreSQL -> PostgreSQL flow can transform: in the target database (the default where
#: every rule has an SQL twin) or chunk by chunk in Python (the path of every other database pair).
TRANSFORM_PATHS = ("auto", "python") if "transform" in LoadSpec.model_fields else ("auto",)
#: Tables only the sync writes, per database: what "the target" means when comparing sites.
SYNC_TABLES = {
    "mes": ("item", "item_bom", "equipment", "route_step", "operator", "work_order", "work_order_component"),
    "erp": ("if_confirmation", "if_goods_movement", "if_quality_result"),
}


def copy_mappings(
    dest: Path, *, chunk_size: int | None = None, transform: str | None = None, flows: Iterable[str] = SYNC_FLOWS,
) -> Path:
    """A copy of mappings/ with only the sync flows, optionally another chunk size or transform
    path (``load.transform``: ``python`` forces the chunked Python path on PostgreSQL too)."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(REPO_ROOT / "mappings" / "crosswalks", dest / "crosswalks")
    shutil.copytree(REPO_ROOT / "expectations", dest.parent / "expectations", dirs_exist_ok=True)
    (dest / "flows").mkdir()
    for name in flows:
        shutil.copy(REPO_ROOT / "mappings" / "flows" / f"{name}.yaml", dest / "flows")
    defaults = (REPO_ROOT / "mappings" / "defaults.yaml").read_text(encoding="utf-8")
    if chunk_size is not None:
        defaults = defaults.replace("chunk_size: 5000", f"chunk_size: {chunk_size}")
        assert f"chunk_size: {chunk_size}" in defaults
    if transform is not None:
        defaults = defaults.replace("load:\n", f"load:\n  transform: {transform}\n")
        assert f"transform: {transform}" in defaults
    (dest / "defaults.yaml").write_text(defaults, encoding="utf-8")
    return dest


_DROP_SCRIPT = """
import os, sys
from sqlalchemy import create_engine, text
engine = create_engine(os.environ["ETL_TEST_DROP_URL"], isolation_level="AUTOCOMMIT")
with engine.connect() as conn:
    for name in sys.argv[1:]:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
"""


class Postgres:
    """The admin side of the server: throwaway databases, clones, killing sessions."""

    def __init__(self, admin_url: str):
        self.admin_url = make_url(admin_url)
        self.engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.created: list[str] = []
        self._droppers: list[subprocess.Popen[bytes]] = []

    def url(self, database: str, **parts: Any) -> URL:
        return self.admin_url.set(database=database, **parts)

    def create(self, label: str, template: str | None = None) -> str:
        name = f"ems_test_{label}_{uuid.uuid4().hex[:8]}"
        source = f'TEMPLATE "{template}"' if template else "ENCODING 'UTF8' TEMPLATE template0"
        for attempt in range(20):
            try:
                with self.engine.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}" {source}'))
                break
            except Exception as exc:  # a template still has a closing session for a moment
                if "is being accessed by other users" not in str(exc) or attempt == 19:
                    raise
                time.sleep(0.1)
        self.created.append(name)
        return name

    def execute(self, database: str, sql: str, **params: Any) -> list[Any]:
        engine = create_engine(self.url(database), isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                result = conn.execute(text(sql), params)
                return result.all() if result.returns_rows else []
        finally:
            engine.dispose()

    def terminate(self, database: str) -> int:
        """Close every session on ``database`` (as a DBA or a network cut would)."""
        sql = "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql), {"db": database}).scalar_one())

    def advisory_locks(self, database: str) -> int:
        sql = (
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database "
            "WHERE l.locktype = 'advisory' AND d.datname = :db"
        )
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql), {"db": database}).scalar_one())

    def wait_until_no_advisory_locks(self, database: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.advisory_locks(database) and time.monotonic() < deadline:
            time.sleep(0.05)

    def drop(self, names: Iterable[str]) -> None:
        with self.engine.connect() as conn:
            for name in list(names):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                if name in self.created:
                    self.created.remove(name)

    def drop_soon(self, names: Iterable[str]) -> None:
        """Drop databases in a background process: a drop can wait seconds for autovacuum."""
        names = [n for n in names if n in self.created]
        for name in names:
            self.created.remove(name)
        env = {**os.environ, "ETL_TEST_DROP_URL": self.admin_url.render_as_string(hide_password=False)}
        self._droppers.append(subprocess.Popen([sys.executable, "-c", _DROP_SCRIPT, *names], env=env))

    def drop_all(self) -> None:
        for process in self._droppers:
            process.wait()
        self.drop(self.created)
        self.engine.dispose()


@dataclass
class Site:
    """One ERP + MES pair with its own mappings; the flows run against it in this process."""

    label: str
    databases: dict[str, str]
    urls: dict[str, URL]
    mappings: Path
    project: Project
    connections: Connections
    crosswalks: dict[str, Crosswalk]

    @property
    def connection_urls(self) -> dict[str, str]:
        return {f"{side}_db": url.render_as_string(hide_password=False) for side, url in self.urls.items()}

    def engine(self, side: str) -> Engine:
        return self.connections.engine(f"{side}_db")

    def reload(self) -> None:
        """Read mappings/ again (after a test edited a crosswalk or a flow)."""
        self.project = load_project(self.mappings)
        self.crosswalks = load_crosswalks(self.mappings / "crosswalks")

    def run(self, flow: str, options: RunOptions = RunOptions(), hook: Callable[[str], None] | None = None) -> RunResult:
        return run_flow(self.project, flow, self.connections, options, crosswalks=self.crosswalks, hook=hook)

    def run_until_done(self, flow: str, options: RunOptions = RunOptions(), tries: int = 100) -> tuple[RunResult, int]:
        """Run ``flow``, retrying transient failures (a killed run's lock not yet freed) the way
        Airflow would; returns the result and how many retries it took."""
        for attempt in range(tries):
            try:
                return self.run(flow, options), attempt
            except StepFailed as exc:
                if not exc.retryable or attempt == tries - 1:
                    raise
                time.sleep(0.05)
        raise AssertionError("unreachable")

    def run_all(self, flows: Iterable[str] = SYNC_FLOWS, options: RunOptions = RunOptions()) -> dict[str, RunResult]:
        return {name: self.run_until_done(name, options)[0] for name in flows}

    def ledger(self, side: str, flow: str | None = None) -> list[dict[str, Any]]:
        sql = "SELECT * FROM etl_ledger" + (" WHERE flow = :flow" if flow else "") + " ORDER BY started_at, run_id"
        with self.engine(side).connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(sql), {"flow": flow})]

    def count(self, side: str, table: str, where: str = "", **params: Any) -> int:
        with self.engine(side).connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table} {where}"), params).scalar_one())

    def execute(self, side: str, sql: str, **params: Any) -> None:
        with self.engine(side).begin() as conn:
            conn.execute(text(sql), params)

    def close(self) -> None:
        self.connections.dispose()


class SiteFactory:
    """Clones the pristine demo pair into new sites."""

    def __init__(self, pg: Postgres, templates: dict[str, str], tmp: Path):
        self.pg = pg
        self.templates = templates
        self.tmp = tmp
        self.sites: list[Site] = []

    def new(self, label: str, *, chunk_size: int | None = None, transform: str | None = None) -> Site:
        """A new site: clones of the pristine ERP and MES, and its own copy of mappings/."""
        databases = {side: self.pg.create(f"{label}_{side}", template) for side, template in self.templates.items()}
        urls = {side: self.pg.url(db) for side, db in databases.items()}
        mappings = copy_mappings(self.tmp / f"{label}-{uuid.uuid4().hex[:6]}" / "mappings", chunk_size=chunk_size, transform=transform)
        connections = Connections({f"{side}_db": url for side, url in urls.items()})
        site = Site(label, databases, urls, mappings, load_project(mappings), connections,
                    load_crosswalks(mappings / "crosswalks"))
        self.sites.append(site)
        return site

    def close(self) -> None:
        for site in self.sites:
            site.close()
            self.pg.drop_soon(site.databases.values())


# --- comparing what two sites hold --------------------------------------------------------------


@dataclass
class Diff:
    compared: int = 0
    lost: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.lost or self.extra or self.changed)

    def explain(self) -> str:
        parts = [f"{len(self.lost)} lost, {len(self.extra)} extra (duplicated), {len(self.changed)} changed"]
        parts += [f"  lost    {x}" for x in self.lost[:10]]
        parts += [f"  extra   {x}" for x in self.extra[:10]]
        parts += [f"  changed {x}" for x in self.changed[:10]]
        return "\n".join(parts)


_PRIMARY_KEYS: dict[tuple[str, str], list[str]] = {}


def sync_state(site: Site) -> dict[str, dict[tuple[Any, ...], tuple[Any, ...]]]:
    """Everything the sync writes, keyed: target tables by primary key, each flow's watermark,
    and the rows waiting in quarantine by (flow, source key)."""
    state: dict[str, dict[tuple[Any, ...], tuple[Any, ...]]] = {}
    for side, tables in SYNC_TABLES.items():
        engine = site.engine(side)
        with engine.connect() as conn:
            for table in tables:
                if (side, table) not in _PRIMARY_KEYS:
                    _PRIMARY_KEYS[(side, table)] = inspect(conn).get_pk_constraint(table)["constrained_columns"]
                pk = _PRIMARY_KEYS[(side, table)]
                rows = conn.execute(text(f"SELECT * FROM {table}")).mappings().all()
                keyed = {tuple(r[c] for c in pk): tuple(r.values()) for r in rows}
                assert len(keyed) == len(rows), f"{table}: duplicate primary keys?"
                state[f"{side}.{table}"] = keyed
            state[f"{side}.etl_watermark"] = {
                (r.flow,): (r.cursor_value, r.cursor_type)
                for r in conn.execute(text("SELECT flow, cursor_value, cursor_type FROM etl_watermark"))
            }
            waiting = conn.execute(text(
                "SELECT flow, source_key, reason, payload_kind, payload FROM etl_quarantine WHERE status = 'waiting'"
            )).all()
            keyed_q = {(r.flow, r.source_key): (r.reason, r.payload_kind, r.payload) for r in waiting}
            assert len(keyed_q) == len(waiting), "a source key waits twice in quarantine"
            state[f"{side}.etl_quarantine(waiting)"] = keyed_q
    return state


def diff_states(actual: dict[str, dict], expected: dict[str, dict]) -> Diff:
    diff = Diff()
    for name in sorted(set(actual) | set(expected)):
        have, want = actual.get(name, {}), expected.get(name, {})
        diff.compared += len(want)
        diff.lost += [f"{name} {k}" for k in want if k not in have]
        diff.extra += [f"{name} {k}" for k in have if k not in want]
        diff.changed += [f"{name} {k}: {have[k]} != {want[k]}" for k in want if k in have and have[k] != want[k]]
    return diff


def assert_same(actual: Site, expected: Site, figures: Any = None, what: str = "") -> Diff:
    """The crashed site holds exactly what the twin holds; feeds the figures either way."""
    diff = diff_states(sync_state(actual), sync_state(expected))
    if figures is not None:
        figures.compared(diff)
    assert diff.clean, f"{what}: {diff.explain()}"
    return diff


def leftovers(pg: Postgres, site: Site) -> dict[str, int]:
    """Locks and staging tables a run may have left behind on the site's databases."""
    out = {}
    for side, db in site.databases.items():
        pg.wait_until_no_advisory_locks(db)
        out[f"{side} advisory locks"] = pg.advisory_locks(db)
        with site.engine(side).connect() as conn:
            out[f"{side} staging tables"] = int(conn.execute(text(
                "SELECT count(*) FROM pg_class WHERE relpersistence = 't' AND relname LIKE 'etl_stg_%'"
            )).scalar_one())
    return out


# --- changing the sources the way a factory does ------------------------------------------------


class SourceChanges:
    """New and changed orders in the ERP, new shop-floor records in the MES, applied identically
    to every site given. Only changes an incremental run and a full reading agree on: inserts,
    and updates that stay within each flow's filter, each with a newer updated_at."""

    def __init__(self, seed: int):
        self.rng = random.Random(seed)
        self.serial = 0

    def _stamp(self, site: Site, side: str, tables: Iterable[str]) -> datetime:
        with site.engine(side).connect() as conn:
            latest = max(conn.execute(text(f"SELECT max(updated_at) FROM {t}")).scalar_one() for t in tables)
        return latest + timedelta(minutes=1)

    def apply(self, sites: list[Site], orders: int = 3, changes: int = 3, records: int = 4, materials: int = 3) -> None:
        first = sites[0]
        erp_ts = self._stamp(first, "erp", ["production_order", "order_component", "material"])
        mes_ts = self._stamp(first, "mes", ["operation_report", "material_issue", "fg_receipt", "quality_inspection"])
        with first.engine("erp").connect() as conn:
            released = list(conn.execute(text(
                "SELECT order_no FROM production_order WHERE status IN ('REL', 'TECO') ORDER BY order_no")).scalars())
            material_nos = list(conn.execute(text(
                "SELECT material_no FROM material WHERE material_no LIKE 'MAT-0%' ORDER BY material_no")).scalars())
        with first.engine("mes").connect() as conn:
            ids = {
                table: list(conn.execute(text(f"SELECT {pk} FROM {table} ORDER BY {pk}")).scalars())
                for table, pk in (("operation_report", "report_id"), ("material_issue", "issue_id"),
                                  ("fg_receipt", "receipt_id"), ("quality_inspection", "inspection_id"))
            }
        erp_sql: list[tuple[str, dict[str, Any]]] = []
        mes_sql: list[tuple[str, dict[str, Any]]] = []
        for old in self.rng.sample(released, orders):
            self.serial += 1
            new = str(1_950_000 + self.serial)
            erp_sql.append((
                "INSERT INTO production_order (order_no, material_no, plant, quantity, unit, planned_start, planned_end,"
                " status, created_at, updated_at) SELECT :new, material_no, plant, quantity + :dq, unit, planned_start,"
                " planned_end, 'REL', created_at, :ts FROM production_order WHERE order_no = :old",
                {"new": new, "old": old, "dq": self.rng.randint(1, 9), "ts": erp_ts},
            ))
            erp_sql.append((
                "INSERT INTO order_component (order_no, item_no, component_material_no, required_qty, unit, updated_at)"
                " SELECT :new, item_no, component_material_no, required_qty, unit, :ts FROM order_component WHERE order_no = :old",
                {"new": new, "old": old, "ts": erp_ts},
            ))
        for no in self.rng.sample(released, changes):
            erp_sql.append((
                "UPDATE production_order SET quantity = quantity + 1, status = CASE status WHEN 'REL' THEN 'TECO' ELSE status END,"
                " updated_at = :ts WHERE order_no = :no", {"no": no, "ts": erp_ts},
            ))
        for no in self.rng.sample(material_nos, materials):
            erp_sql.append((
                "UPDATE material SET description_en = concat('rev ', :serial, ' ', coalesce(description_en, '')), updated_at = :ts"
                " WHERE material_no = :no", {"no": no, "ts": erp_ts, "serial": str(self.serial)},
            ))
        copies = {
            "operation_report": "report_id, report_no, wo_no, step_no, equipment_code, good_qty, scrap_qty, unit, scrap_reason,"
                                " operator_badge, start_time_utc, end_time_utc, updated_at",
            "material_issue": "issue_id, wo_no, item_code, plant_code, qty, unit, lot_no, issued_at_utc, updated_at",
            "fg_receipt": "receipt_id, wo_no, item_code, plant_code, qty, unit, lot_no, received_at_utc, updated_at",
            "quality_inspection": "inspection_id, lot_no, wo_no, item_code, sample_size, defect_qty, defect_code, result,"
                                  " inspected_at_utc, updated_at",
        }
        for table, columns in copies.items():
            names = [c.strip() for c in columns.split(",")]
            pk = names[0]
            for old in self.rng.sample(ids[table], records):
                self.serial += 1
                select = [":new"] + names[1:-1] + [":ts"]
                if table == "operation_report":
                    select[1] = "concat(left(report_no, 10), '-', :serial)"
                    select[5] = "good_qty + 1"
                mes_sql.append((
                    f"INSERT INTO {table} ({columns}) SELECT {', '.join(select)} FROM {table} WHERE {pk} = :old",
                    {"new": 5_000_000 + self.serial, "old": old, "ts": mes_ts, "serial": str(self.serial)},
                ))
            old = self.rng.choice(ids[table])
            value = "good_qty = good_qty + 2" if table == "operation_report" else (
                "defect_qty = defect_qty" if table == "quality_inspection" else "qty = qty + 1")
            mes_sql.append((f"UPDATE {table} SET {value}, updated_at = :ts WHERE {pk} = :old", {"old": old, "ts": mes_ts}))
        for site in sites:
            for side, statements in (("erp", erp_sql), ("mes", mes_sql)):
                with site.engine(side).begin() as conn:
                    for sql, params in statements:
                        conn.execute(text(sql), params)


# --- flows in a forked process ------------------------------------------------------------------


class Child:
    """Runs flows of a site in a forked process, reporting each step through a pipe.

    ``kill_at`` (flow, step, nth) makes the process SIGKILL itself when the run enters that
    step for the nth time: no exception handler, no rollback, no ledger row, exactly as if the
    machine died. ``pause_at`` makes it stop there until ``resume()``. ``gated`` makes it wait
    for ``go()`` before starting, so two children can start at the same moment.
    """

    def __init__(
        self, site: Site, flows: Iterable[str], *, options: RunOptions = RunOptions(),
        kill_at: tuple[str, str, int] | None = None, pause_at: tuple[str, str] | None = None,
        gated: bool = False, patch: Callable[[], None] | None = None,
    ):
        self.flows = list(flows)
        steps_r, steps_w = os.pipe()
        gate_r, gate_w = os.pipe()
        resume_r, resume_w = os.pipe()
        urls = site.connection_urls
        project, crosswalks = site.project, site.crosswalks
        site.connections.dispose()  # the child must not share pooled sockets with this process
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 70
            try:
                os.close(steps_r)
                os.close(gate_w)
                os.close(resume_w)
                if gated:
                    os.read(gate_r, 1)
                if patch is not None:
                    patch()
                seen: Counter[tuple[str, str]] = Counter()
                code = 0
                with Connections(urls) as connections:
                    for name in self.flows:
                        def hook(step: str, name: str = name) -> None:
                            seen[(name, step)] += 1
                            os.write(steps_w, f"{name} {step}\n".encode())
                            if kill_at is not None and (name, step) == kill_at[:2] and seen[(name, step)] == kill_at[2]:
                                os.kill(os.getpid(), signal.SIGKILL)
                            if pause_at is not None and (name, step) == pause_at:
                                os.write(steps_w, b"paused\n")
                                os.read(resume_r, 1)

                        try:
                            result = run_flow(project, name, connections, options, crosswalks=crosswalks, hook=hook)
                            os.write(steps_w, f"{name} result {result.record.counts.rows_loaded}\n".encode())
                        except StepFailed as exc:
                            os.write(steps_w, f"{name} failed {type(exc.cause).__name__}\n".encode())
                            code = 75 if exc.retryable else 1
            except BaseException:
                code = 71
            finally:
                os._exit(code)
        os.close(steps_w)
        os.close(gate_r)
        os.close(resume_r)
        self.pid = pid
        self._steps_r = steps_r
        self._gate_w = gate_w
        self._resume_w = resume_w
        self._buffer = b""
        self.status: int | None = None

    def go(self) -> None:
        os.write(self._gate_w, b"g")

    def resume(self) -> None:
        os.write(self._resume_w, b"r")

    def kill(self) -> None:
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def wait_for(self, line: str, timeout: float = 30.0) -> None:
        """Block until the child reported ``line`` (e.g. ``paused``)."""
        deadline = time.monotonic() + timeout
        while line.encode() not in self._buffer.split(b"\n"):
            if time.monotonic() > deadline:
                raise TimeoutError(f"child never said {line!r}; said {self.lines()}")
            chunk = os.read(self._steps_r, 65536)
            if not chunk:
                raise AssertionError(f"child ended before saying {line!r}; said {self.lines()}")
            self._buffer += chunk

    def wait(self, timeout: float = 120.0) -> int:
        """Wait for the child to end; its exit code, or -signal if a signal ended it."""
        deadline = time.monotonic() + timeout
        while True:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.kill()
                os.waitpid(self.pid, 0)
                raise TimeoutError("child did not finish")
            time.sleep(0.01)
        while True:
            chunk = os.read(self._steps_r, 65536)
            if not chunk:
                break
            self._buffer += chunk
        for fd in (self._steps_r, self._gate_w, self._resume_w):
            try:
                os.close(fd)
            except OSError:
                pass
        self.status = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        return self.status

    def lines(self) -> list[str]:
        return [line for line in self._buffer.decode().splitlines() if line]

    def last_step(self) -> str | None:
        steps = [line for line in self.lines() if line != "paused"]
        return steps[-1] if steps else None
