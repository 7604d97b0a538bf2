"""Security: least-privilege roles (sql/roles/postgresql.sql), and no credential in logs or ledger.

The roles file runs on a throwaway ERP and MES; the flows then run connecting as logins that
hold only those roles, with the result equal to a run as the superuser, and every write outside
a role's job is refused by the server. Role names are cluster-wide, so the test gives the file's
roles a unique prefix and drops them afterwards.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError
from sync_harness import SYNC_FLOWS, Postgres, Site, SiteFactory, assert_same

from etl.config.paths import REPO_ROOT
from etl.core.errors import StepFailed
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import ensure_pipeline_tables
from etl.sync.retention import purge_released_quarantine
from etl.sync.runner import RunOptions, run_flow

pytestmark = pytest.mark.slow

ROLES_FILE = REPO_ROOT / "sql" / "roles" / "postgresql.sql"
ERP_TO_MES = [f for f in SYNC_FLOWS if f not in ("confirmations", "consumptions", "goods_receipts", "quality_results")]
MES_TO_ERP = ["confirmations", "consumptions", "goods_receipts", "quality_results"]


@dataclass
class Roles:
    """The file's four roles under a unique prefix, and one login in each."""

    prefix: str
    site: Site
    pg: Postgres
    #: The roles file with the prefix applied: run it again after a DBA adds a table.
    script: str

    def role(self, name: str) -> str:
        return f"{self.prefix}_{name}"

    def login(self, name: str) -> str:
        return f"{self.prefix}_{name}_login"

    def url(self, name: str, side: str) -> URL:
        return self.site.urls[side].set(username=self.login(name))

    def connections(self, source: tuple[str, str], target: tuple[str, str]) -> Connections:
        """Connections with ``erp_db`` and ``mes_db`` as the logins of the given roles."""
        (source_role, source_side), (target_role, target_side) = source, target
        return Connections({f"{source_side}_db": self.url(source_role, source_side),
                            f"{target_side}_db": self.url(target_role, target_side)})


NAMES = ("erp_extract", "erp_load", "mes_extract", "mes_load")


@pytest.fixture
def roles(sites: SiteFactory, pg: Postgres) -> Iterator[Roles]:
    site = sites.new("roles")
    prefix = f"ems_t{uuid.uuid4().hex[:6]}"
    sql = re.sub(r"\bems_(erp|mes)_(extract|load)\b", lambda m: f"{prefix}_{m.group(1)}_{m.group(2)}",
                 ROLES_FILE.read_text(encoding="utf-8"))
    for side in ("erp", "mes"):
        engine = create_engine(pg.url(site.databases[side]), isolation_level="AUTOCOMMIT")
        raw = engine.raw_connection()
        try:
            with raw.cursor() as cursor:
                cursor.execute(sql)
                cursor.execute(sql)  # re-running the file is harmless
        finally:
            raw.close()
            engine.dispose()
    pg.execute("postgres", "; ".join(f'CREATE ROLE "{prefix}_{n}_login" LOGIN IN ROLE "{prefix}_{n}"' for n in NAMES))
    yield Roles(prefix, site, pg, sql)
    site.close()
    everyone = ", ".join(f'"{prefix}_{n}", "{prefix}_{n}_login"' for n in NAMES)
    for side in ("erp", "mes"):
        pg.terminate(site.databases[side])
        pg.execute(site.databases[side], f"DROP OWNED BY {everyone}")
    pg.execute("postgres", f"DROP ROLE {everyone}")


def test_the_flows_run_as_least_privileged_roles(roles: Roles, sites: SiteFactory, figures: Any) -> None:
    twin = sites.new("roles_twin")
    twin.run_all()
    site = roles.site
    down = roles.connections(("erp_extract", "erp"), ("mes_load", "mes"))
    up = roles.connections(("mes_extract", "mes"), ("erp_load", "erp"))
    with down, up:
        for name in SYNC_FLOWS:
            connections = down if name in ERP_TO_MES else up
            result = run_flow(site.project, name, connections, RunOptions(), crosswalks=site.crosswalks)
            assert result.record.outcome == "success"
    assert_same(site, twin, figures, "flows run as the least-privileged roles")
    # Housekeeping runs as the load roles too: the retention purge deletes from etl_quarantine.
    with roles.connections(("erp_load", "erp"), ("mes_load", "mes")) as connections:
        assert set(purge_released_quarantine(site.project, connections)) == {"erp_db", "mes_db"}


# (role, database, statement): each must be refused by the server.
FORBIDDEN = [
    ("erp_extract", "erp", "INSERT INTO production_order SELECT * FROM production_order LIMIT 1"),
    ("erp_extract", "erp", "UPDATE material SET description_en = 'x'"),
    ("erp_extract", "erp", "DELETE FROM order_component"),
    ("erp_extract", "erp", "SELECT * FROM if_confirmation"),
    ("erp_extract", "erp", "INSERT INTO etl_ledger (run_id) VALUES ('x')"),
    ("erp_extract", "erp", "CREATE TABLE stolen (x int)"),
    ("mes_load", "mes", "INSERT INTO operation_report SELECT * FROM operation_report LIMIT 1"),
    ("mes_load", "mes", "SELECT * FROM operation_report"),
    ("mes_load", "mes", "DELETE FROM work_order"),
    ("mes_load", "mes", "TRUNCATE item"),
    ("mes_load", "mes", "DROP TABLE work_order"),
    ("mes_load", "mes", "ALTER TABLE work_order ADD COLUMN x int"),
    ("mes_load", "mes", "UPDATE etl_ledger SET outcome = 'success'"),
    ("mes_load", "mes", "DELETE FROM etl_ledger"),
    ("mes_load", "mes", "UPDATE etl_check SET success = true"),
    ("mes_extract", "mes", "UPDATE operation_report SET good_qty = 0"),
    ("mes_extract", "mes", "INSERT INTO work_order SELECT * FROM work_order LIMIT 1"),
    ("mes_extract", "mes", "SELECT * FROM etl_quarantine"),
    ("erp_load", "erp", "UPDATE production_order SET quantity = 0"),
    ("erp_load", "erp", "INSERT INTO material SELECT * FROM material LIMIT 1"),
    ("erp_load", "erp", "SELECT * FROM material"),
    ("erp_load", "erp", "DELETE FROM if_goods_movement"),
    ("erp_load", "erp", "CREATE TABLE stolen (x int)"),
]


def test_every_write_outside_a_roles_job_is_refused(roles: Roles, figures: Any) -> None:
    refused = []
    for role, side, statement in FORBIDDEN:
        engine = create_engine(roles.url(role, side))
        try:
            with engine.begin() as conn:
                with pytest.raises(ProgrammingError) as denied:
                    conn.execute(text(statement))
        finally:
            engine.dispose()
        message = str(denied.value.orig)
        assert "permission denied" in message or "must be owner" in message, (role, statement, message)
        refused.append(statement)
    assert len(refused) == len(FORBIDDEN)
    figures.add("forbidden statements refused", len(FORBIDDEN))


def test_a_flow_given_the_wrong_role_fails_and_writes_nothing(roles: Roles) -> None:
    site = roles.site
    # The MES extract role as the target of an ERP -> MES flow: it may not even read the watermark.
    with roles.connections(("erp_extract", "erp"), ("mes_extract", "mes")) as connections:
        with pytest.raises(StepFailed) as failure:
            run_flow(site.project, "materials", connections, RunOptions(), crosswalks=site.crosswalks)
    assert not failure.value.retryable
    assert "permission denied for table etl_watermark" in str(failure.value)
    # The ERP load role as the source of an ERP -> MES flow: it may not read the material master.
    with roles.connections(("erp_load", "erp"), ("mes_load", "mes")) as connections:
        with pytest.raises(StepFailed) as failure:
            run_flow(site.project, "materials", connections, RunOptions(), crosswalks=site.crosswalks)
    assert "permission denied for table material" in str(failure.value)
    assert site.count("mes", "item") == 0
    assert site.count("mes", "etl_watermark") == 0


def test_a_flow_that_remembers_its_lookback_runs_as_the_load_role(roles: Roles) -> None:
    """etl_lookback_loaded (cursor.skip_loaded) is created by a DBA: the sync roles may not
    create tables. A target set up before it existed runs its other flows without it; once a
    DBA has added it and run the roles file again, the flow sets rows aside as the role."""
    site = roles.site
    roles.pg.execute(site.databases["erp"], "DROP TABLE etl_lookback_loaded")
    # Every report at one time, so that a lookback reads them all again.
    site.execute("mes", "UPDATE operation_report SET updated_at = (SELECT max(updated_at) FROM operation_report)")
    up = roles.connections(("mes_extract", "mes"), ("erp_load", "erp"))
    with up:
        assert run_flow(site.project, "confirmations", up, RunOptions(), crosswalks=site.crosswalks).record.outcome == "success"
        flow_file = site.mappings / "flows" / "confirmations.yaml"
        flow_file.write_text(flow_file.read_text(encoding="utf-8").replace(
            "cursor: {column: updated_at}", "cursor: {column: updated_at, skip_loaded: true}"), encoding="utf-8")
        site.reload()
        with pytest.raises(StepFailed) as failure:
            run_flow(site.project, "confirmations", up, RunOptions(), crosswalks=site.crosswalks)
        message = str(failure.value)
        assert "etl_lookback_loaded missing on this target" in message and "sql/pipeline/postgresql.sql" in message
        with create_engine(roles.pg.url(site.databases["erp"])).begin() as conn:
            ensure_pipeline_tables(conn, lookback=True)
            with conn.connection.dbapi_connection.cursor() as cursor:  # the file's % are its own
                cursor.execute(roles.script)
        runs = [run_flow(site.project, "confirmations", up, RunOptions(), crosswalks=site.crosswalks) for _ in range(3)]
    remembered = site.count("erp", "etl_lookback_loaded")
    assert remembered > 0
    # The first incremental run compared its lookback and kept it; the next two set it aside.
    assert [r.record.options["rows_set_aside"] for r in runs] == [0, remembered, remembered]
    assert [r.record.counts.rows_loaded for r in runs] == [0, 0, 0]


def test_the_connections_really_are_the_role_logins(roles: Roles) -> None:
    with roles.connections(("erp_extract", "erp"), ("mes_load", "mes")) as connections:
        for conn_id, role in (("erp_db", "erp_extract"), ("mes_db", "mes_load")):
            with connections.engine(conn_id).connect() as conn:
                assert conn.execute(text("SELECT current_user")).scalar_one() == roles.login(role)


# --- no credential in logs, errors or the ledger ------------------------------------------------


def _all_text(engine_url: URL) -> str:
    """Every row of the pipeline's own tables on one database, as text."""
    engine = create_engine(engine_url)
    try:
        with engine.connect() as conn:
            return "\n".join(
                str(row) for table in ("etl_ledger", "etl_quarantine", "etl_watermark")
                for row in conn.execute(text(f"SELECT t::text FROM {table} AS t"))
            )
    finally:
        engine.dispose()


def test_a_password_appears_in_no_log_line_error_or_ledger_row(
    roles: Roles, pg: Postgres, caplog: pytest.LogCaptureFixture, tmp_path: Any, figures: Any,
) -> None:
    site = roles.site
    password = f"Zq9-s3cr3t_{uuid.uuid4().hex[:10]}"
    login = f"{roles.prefix}_secret"
    members = ", ".join(f'"{roles.role(n)}"' for n in NAMES)
    pg.execute("postgres", f"CREATE ROLE \"{login}\" LOGIN PASSWORD '{password}' IN ROLE {members}")
    try:
        urls = {side: url.set(username=login, password=password) for side, url in site.urls.items()}
        assert password in urls["erp"].render_as_string(hide_password=False)
        seen: list[str] = []
        caplog.set_level(logging.DEBUG)
        with Connections({"erp_db": urls["erp"], "mes_db": urls["mes"]}) as connections:
            for name in SYNC_FLOWS:
                run_flow(site.project, name, connections, RunOptions(), crosswalks=site.crosswalks)
        failing = [
            ({"erp_db": urls["erp"].set(port=1), "mes_db": urls["mes"]}, "production_orders", None),    # refused
            ({"erp_db": urls["erp"].set(database="no_such_db"), "mes_db": urls["mes"]}, "production_orders", None),
            ({"erp_db": urls["erp"], "mes_db": urls["mes"]}, "production_orders", "merge"),               # dropped
            ({"erp_db": urls["erp"], "mes_db": urls["mes"].set(port=1)}, "materials", None),            # target refused
        ]
        for overrides, flow, drop_at in failing:
            def hook(step: str, drop_at: str | None = drop_at) -> None:
                if step == drop_at:
                    pg.terminate(site.databases["mes"])

            with Connections(overrides) as connections:
                with pytest.raises(StepFailed) as failure:
                    run_flow(site.project, flow, connections, RunOptions(full_refresh=True), crosswalks=site.crosswalks, hook=hook)
            seen += [str(failure.value), repr(failure.value), str(failure.value.__cause__), str(failure.value.cause)]
        seen.append(caplog.text)
        seen += [_all_text(site.urls[side]) for side in ("erp", "mes")]

        # The CLI, verbose, with the password in Airflow connection URIs.
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_CONN_")}
        env["ETL_CONNECTIONS_FILE"] = str(tmp_path / "none.json")
        uri = {side: f"postgres://{login}:{password}@{url.host}:{url.port}/{url.database}" for side, url in site.urls.items()}
        for args, overrides in (
            (["run", "all", "--full-refresh"], {}),
            (["run", "production_orders"], {"mes": uri["mes"].replace(f":{site.urls['mes'].port}/", ":1/")}),
            (["runs", "--limit", "100"], {}),
            (["quarantine", "--limit", "100"], {}),
        ):
            run_env = {**env, **{f"AIRFLOW_CONN_{s.upper()}_DB": overrides.get(s, uri[s]) for s in ("erp", "mes")}}
            done = subprocess.run(
                [sys.executable, "-m", "etl", "-v", "--mappings", str(site.mappings), *args],
                cwd=REPO_ROOT, env=run_env, capture_output=True, text=True, timeout=300,
            )
            assert done.returncode in (0, 75), done.stderr
            seen += [done.stdout, done.stderr]
        assert "FAILED flow 'production_orders' failed at step 'connect'" in seen[-5]
        leaks = [s for s in seen if password in s]
        assert not leaks, f"the password leaked into: {[s[:200] for s in leaks]}"
        figures.add("texts searched for the password", len(seen))
    finally:
        pg.terminate(site.databases["erp"])
        pg.terminate(site.databases["mes"])
        for side in ("erp", "mes"):
            pg.execute(site.databases[side], f'DROP OWNED BY "{login}"')
        pg.execute("postgres", f'DROP ROLE "{login}"')
