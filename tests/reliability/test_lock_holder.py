"""A run that finds its flow's lock taken says who holds it (issue #25, item 16): the holder's
connection, client, since when, its state and statement, and how to free it if its run is gone
(after ``kill -9`` MariaDB keeps the dead run's statement, and so its lock, until it ends).
"""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from sqlalchemy import create_engine, func, select, text
from sync_harness import SiteFactory

from etl.cli import main as cli
from etl.dialects import dialect_for
from etl.dialects.base import lock_key
from etl.dialects.mysql import lock_name

pytestmark = pytest.mark.slow


def _sleeping(engine: Any, statement: str, params: dict[str, Any]) -> threading.Thread:
    def run() -> None:
        with engine.connect() as conn:
            conn.execute(text(statement), params)
            conn.rollback()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


HOLDERS = {
    # how the other run holds the lock, the state and statement the message must name
    "idle in its transaction": (False, "state 'idle in transaction'", "statement: SELECT pg_try_advisory_xact_lock"),
    "running a statement": (True, "state 'active'", "statement: SELECT pg_sleep(4)"),
}


@pytest.mark.parametrize("case", HOLDERS, ids=list(HOLDERS))
def test_a_busy_run_on_postgresql_names_the_holder(
    sites: SiteFactory, case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any,
    capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    busy, state, statement = HOLDERS[case]
    site = sites.new("lock_holder")
    for side in ("erp", "mes"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{side.upper()}_DB", site.connection_urls[f"{side}_db"])
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(tmp_path / "none.json"))
    engine = create_engine(site.urls["mes"])
    holder = engine.connect()
    try:
        holder.execute(select(func.pg_try_advisory_xact_lock(lock_key("materials"))))
        pid = holder.execute(select(func.pg_backend_pid())).scalar_one()
        if busy:
            threading.Thread(target=lambda: holder.execute(text("SELECT pg_sleep(4)")), daemon=True).start()
            time.sleep(0.5)
        else:
            holder.execute(select(func.pg_try_advisory_xact_lock(lock_key("materials"))))
        code = cli.main(["--mappings", str(site.mappings), "run", "materials"])
        err = capsys.readouterr().err
        assert code == 75, err
        assert f"another run holds its lock (PostgreSQL backend {pid} (user postgres, from " in err, err
        assert re.search(r"in its transaction since \d{4}-\d\d-\d\d \d\d:\d\d:\d\d", err), err
        assert state in err and statement in err and f"pg_terminate_backend({pid})" in err, err
    finally:
        time.sleep(4 if busy else 0)
        holder.close()
        engine.dispose()
    figures.inputs.add(f"hostile: lock held by a run {case}")


def test_a_busy_run_on_mariadb_names_the_orphaned_statement(mariadb_database: Any, figures: Any) -> None:
    url = mariadb_database("lock")
    engine = create_engine(url)
    name = lock_name(engine.url.database, "materials")
    # What kill -9 leaves on MariaDB: the dead run's connection, still running its statement,
    # holding the flow's lock until the statement ends.
    orphan = _sleeping(engine, "SELECT GET_LOCK(:n, 0), SLEEP(5)", {"n": name})
    try:
        with engine.connect() as conn:
            for _ in range(50):
                if conn.execute(select(func.is_used_lock(name))).scalar_one() is not None:
                    break
                time.sleep(0.1)
            time.sleep(1.2)
            dialect = dialect_for(conn)
            assert not dialect.try_lock(conn, "materials")
            said = dialect.lock_holder(conn, "materials")
        assert said is not None, "the holder is named"
        named = re.match(r"MariaDB connection (\d+) \(root@[^)]+\), query for [1-9] s, state 'User sleep'", said)
        assert named is not None, said
        holder_id = named.group(1)
        assert "statement: SELECT GET_LOCK" in said and f"KILL {holder_id} frees the lock" in said, said
    finally:
        orphan.join(10)
        engine.dispose()
    figures.inputs.add("hostile: lock held by an orphaned MariaDB statement")


def test_a_free_lock_names_no_holder(mariadb_database: Any, pg_database: Any) -> None:
    for url in (mariadb_database("free"), pg_database("free")):
        engine = create_engine(url)
        with engine.connect() as conn:
            assert dialect_for(conn).lock_holder(conn, "materials") is None
        engine.dispose()
