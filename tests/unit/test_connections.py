"""Tests for etl.sync.connections: Airflow connection URIs/JSON to SQLAlchemy URLs, lookup, masking."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from etl.core.errors import ConnectionNotFound
from etl.sync.connections import CONNECTIONS_FILE_ENV, Connections, masked, resolve_url, to_sqlalchemy_url

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No connection leaks in from the machine: no AIRFLOW_CONN_* for our ids, no connections file."""
    for conn_id in ("erp_db", "mes_db", "x"):
        monkeypatch.delenv(f"AIRFLOW_CONN_{conn_id.upper()}", raising=False)
    monkeypatch.setenv(CONNECTIONS_FILE_ENV, str(tmp_path / "absent.json"))


def connections_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, data: dict[str, str]) -> None:
    path = tmp_path / "connections.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    monkeypatch.setenv(CONNECTIONS_FILE_ENV, str(path))


# --- to_sqlalchemy_url ------------------------------------------------------------------------


def test_airflow_postgres_uri() -> None:
    url = to_sqlalchemy_url("postgres://user:p%40ss@host:5432/db")
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == ("user", "p@ss", "host", 5432, "db")


def test_postgresql_scheme_also_mapped() -> None:
    assert to_sqlalchemy_url("postgresql://u:p@h/db").drivername == "postgresql+psycopg2"


def test_airflow_mssql_uri() -> None:
    url = to_sqlalchemy_url("mssql://sa:pw@erp-host:1433/ERP")
    assert url.drivername == "mssql+pymssql"
    assert (url.host, url.port, url.database) == ("erp-host", 1433, "ERP")


def test_sqlite_absolute_path() -> None:
    url = to_sqlalchemy_url("sqlite:////abs/path/erp.db")
    assert url.drivername == "sqlite"
    assert url.database == "/abs/path/erp.db"


def test_explicit_sqlalchemy_driver_kept() -> None:
    assert to_sqlalchemy_url("postgresql+psycopg://u:p@h/db").drivername == "postgresql+psycopg"


def test_surrounding_whitespace_ignored() -> None:
    assert to_sqlalchemy_url("  postgres://u:p@h/db\n").database == "db"


@pytest.mark.parametrize(("encoded", "password"), [("a%2Fb", "a/b"), ("p%3Ass", "p:ss"), ("100%25", "100%")])
def test_percent_encoded_password_decoded(encoded: str, password: str) -> None:
    assert to_sqlalchemy_url(f"postgres://u:{encoded}@h/db").password == password


def test_password_containing_percent_sequence_not_decoded_twice() -> None:
    assert to_sqlalchemy_url("postgres://u:p%2540@h/db").password == "p%40"


def test_airflow_json_form_with_extra() -> None:
    raw = json.dumps(
        {"conn_type": "postgres", "login": "etl", "password": "p@ss", "host": "db", "port": 5432,
         "schema": "mes", "extra": {"sslmode": "require", "connect_timeout": 10}}
    )
    url = to_sqlalchemy_url(raw)
    assert url.drivername == "postgresql+psycopg2"
    assert (url.username, url.password, url.host, url.port, url.database) == ("etl", "p@ss", "db", 5432, "mes")
    assert dict(url.query) == {"sslmode": "require", "connect_timeout": "10"}


def test_airflow_json_extra_as_json_text() -> None:
    raw = json.dumps({"conn_type": "mssql", "host": "h", "extra": json.dumps({"tds_version": "7.4"})})
    url = to_sqlalchemy_url(raw)
    assert url.drivername == "mssql+pymssql"
    assert dict(url.query) == {"tds_version": "7.4"}


def test_text_without_scheme_refused() -> None:
    with pytest.raises(ValueError, match="not a URL"):
        to_sqlalchemy_url("host=db user=etl")


# --- resolve_url ------------------------------------------------------------------------------


def test_resolve_from_airflow_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DB", "postgres://etl:p%40ss@erp:5432/erp")
    url = resolve_url("erp_db")
    assert (url.drivername, url.host, url.password) == ("postgresql+psycopg2", "erp", "p@ss")


def test_resolve_from_connections_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    connections_file(tmp_path, monkeypatch, {"mes_db": "sqlite:////data/mes.db"})
    assert resolve_url("mes_db").database == "/data/mes.db"


def test_env_wins_over_connections_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    connections_file(tmp_path, monkeypatch, {"erp_db": "sqlite:////data/file.db"})
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DB", "sqlite:////data/env.db")
    assert resolve_url("erp_db").database == "/data/env.db"


def test_missing_connection_names_env_var() -> None:
    with pytest.raises(ConnectionNotFound) as info:
        resolve_url("erp_db")
    message = str(info.value)
    assert "AIRFLOW_CONN_ERP_DB" in message
    assert "'erp_db'" in message
    assert CONNECTIONS_FILE_ENV in message


def test_missing_connection_not_in_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    connections_file(tmp_path, monkeypatch, {"mes_db": "sqlite:////data/mes.db"})
    with pytest.raises(ConnectionNotFound, match="AIRFLOW_CONN_ERP_DB"):
        resolve_url("erp_db")


@pytest.mark.parametrize(
    "raw",
    [
        f"no scheme {SECRET}",
        f"postgres://etl:{SECRET}@host:notaport/db",
        f'{{"conn_type": "postgres", "password": "{SECRET}"',
        f'{{"conn_type": "postgres", "password": "{SECRET}", "extra": "not json"}}',
        f"post gres://etl:{SECRET}@host/db",
        f'{{"conn_type": "postgres", "password": "{SECRET}", "extra": [1]}}',
    ],
    ids=["no-scheme", "bad-port", "broken-json", "bad-extra-text", "space-in-scheme", "extra-list"],
)
def test_unparsable_url_error_never_shows_the_value(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_X", raw)
    with pytest.raises(ConnectionNotFound) as info:
        resolve_url("x")
    assert "'x'" in str(info.value)
    assert "cannot parse" in str(info.value)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


# --- masking and overrides --------------------------------------------------------------------


def test_masked_hides_password() -> None:
    text = masked(to_sqlalchemy_url(f"postgres://etl:{SECRET}@db:5432/erp"))
    assert SECRET not in text
    assert text == "postgresql+psycopg2://etl:***@db:5432/erp"


def test_masked_hides_password_from_json_form() -> None:
    url = to_sqlalchemy_url(json.dumps({"conn_type": "postgres", "login": "u", "password": SECRET, "host": "h"}))
    assert SECRET not in masked(url)
    assert "***" in masked(url)


def test_masked_url_without_password_unchanged() -> None:
    assert masked(make_url("sqlite:////data/erp.db")) == "sqlite:////data/erp.db"


def test_connections_override_wins_without_env() -> None:
    connections = Connections({"erp_db": "sqlite:////tmp/override.db"})
    assert connections.url("erp_db").database == "/tmp/override.db"
    with pytest.raises(ConnectionNotFound):
        connections.url("mes_db")
