"""Shared fixtures: the real PostgreSQL server, throwaway databases, the demo factory."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

PG_ADMIN_URL = os.environ.get("ETL_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


def _reachable(url: str) -> bool:
    try:
        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("select 1"))
        engine.dispose()
        return True
    except OperationalError:
        return False


def _pg_reachable() -> bool:
    return _reachable(PG_ADMIN_URL)


def _start_pg() -> None:
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions:
        return
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main", "start"],
        capture_output=True, check=False,
    )
    for _ in range(30):
        if _pg_reachable():
            return
        time.sleep(1)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the machine's PostgreSQL, started if it is down.

    Skips loudly when it cannot be reached; under CI (CI=true) that is an error instead,
    because CI promises a database.
    """
    if not _pg_reachable():
        _start_pg()
    if not _pg_reachable():
        message = f"PostgreSQL at {make_url(PG_ADMIN_URL).render_as_string(hide_password=True)} is not reachable and could not be started"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip("SKIPPED LOUDLY: " + message)
    return PG_ADMIN_URL


def _throwaway_databases(admin_url: str, create: str, drop: str) -> Iterator[Callable[[str], URL]]:
    """Yield a factory of databases made by ``create`` (a statement with ``{name}``) on the
    server at ``admin_url``; drop each with ``drop`` afterwards."""
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    created: list[str] = []

    def make(label: str) -> URL:
        name = f"ems_test_{label}_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(create.format(name=name)))
        created.append(name)
        return make_url(admin_url).set(database=name)

    yield make
    with admin.connect() as conn:
        for name in created:
            conn.execute(text(drop.format(name=name)))
    admin.dispose()


@pytest.fixture
def pg_database(pg_server: str) -> Iterator[Callable[[str], URL]]:
    """Factory of throwaway PostgreSQL databases, dropped when the test ends."""
    yield from _throwaway_databases(
        pg_server, "CREATE DATABASE \"{name}\" ENCODING 'UTF8' TEMPLATE template0",
        'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)',
    )


@pytest.fixture
def sqlite_urls(tmp_path: Path) -> dict[str, URL]:
    """URLs of three SQLite files: ERP, MES and warehouse."""
    return {name: make_url(f"sqlite:///{tmp_path / (name + '.db')}") for name in ("erp", "mes", "warehouse")}


MARIADB_ADMIN_URL = os.environ.get("ETL_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/mysql?charset=utf8mb4")


def _mariadb_reachable() -> bool:
    return _reachable(MARIADB_ADMIN_URL)


@pytest.fixture(scope="session")
def mariadb_server() -> str:
    """The admin URL of the machine's MariaDB, started if it is down (skipped loudly, or failed
    under CI=true, when it cannot be reached)."""
    if not _mariadb_reachable():
        subprocess.run(["service", "mariadb", "start"], capture_output=True, check=False)
        for _ in range(30):
            if _mariadb_reachable():
                break
            time.sleep(1)
    if not _mariadb_reachable():
        message = f"MariaDB at {make_url(MARIADB_ADMIN_URL).render_as_string(hide_password=True)} is not reachable and could not be started"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip("SKIPPED LOUDLY: " + message)
    return MARIADB_ADMIN_URL


@pytest.fixture
def mariadb_database(mariadb_server: str) -> Iterator[Callable[[str], URL]]:
    """Factory of throwaway MariaDB databases (utf8mb4, binary collation so codes compare
    exactly, as they do in PostgreSQL), dropped when the test ends."""
    yield from _throwaway_databases(
        mariadb_server, "CREATE DATABASE `{name}` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        "DROP DATABASE IF EXISTS `{name}`",
    )


@pytest.fixture(scope="session")
def mqtt_broker() -> str:
    """``host:port`` of the machine's Mosquitto on loopback, started if it is down (skipped
    loudly, or failed under CI=true, when there is none)."""
    from event_site import MQTT_HOST, MQTT_PORT, start_mosquitto

    if not start_mosquitto():
        message = f"no MQTT broker on {MQTT_HOST}:{MQTT_PORT} and mosquitto could not be started (apt-get install mosquitto)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip("SKIPPED LOUDLY: " + message)
    return f"{MQTT_HOST}:{MQTT_PORT}"
