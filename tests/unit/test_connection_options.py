"""TLS and driver options pass through connection URLs untouched, down to the driver's connect()."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import create_engine

from etl.sync.connections import masked, to_sqlalchemy_url


def connect_kwargs(raw: str) -> dict[str, object]:
    """What SQLAlchemy would hand the DBAPI driver's connect() for connection ``raw``."""
    url = to_sqlalchemy_url(raw)
    engine = create_engine(url)
    try:
        return engine.dialect.create_connect_args(url)[1]
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "raw",
    [
        "postgres://sync:secret@mes-db.plant.local:5432/mes?sslmode=verify-full&sslrootcert=/etc/ssl/plant-ca.pem",
        "postgresql+psycopg2://sync:secret@mes-db.plant.local:5432/mes?sslmode=verify-full&sslrootcert=/etc/ssl/plant-ca.pem",
        json.dumps({"conn_type": "postgres", "host": "mes-db.plant.local", "port": 5432, "login": "sync",
                    "password": "secret", "schema": "mes",
                    "extra": {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/plant-ca.pem"}}),
    ],
    ids=["airflow uri", "sqlalchemy url", "airflow json extra"],
)
def test_postgres_sslmode_reaches_psycopg2(raw: str) -> None:
    url = to_sqlalchemy_url(raw)
    assert url.drivername == "postgresql+psycopg2"
    assert dict(url.query) == {"sslmode": "verify-full", "sslrootcert": "/etc/ssl/plant-ca.pem"}
    kwargs = connect_kwargs(raw)
    assert kwargs["sslmode"] == "verify-full" and kwargs["sslrootcert"] == "/etc/ssl/plant-ca.pem"
    assert "secret" not in masked(url)


@pytest.mark.parametrize(
    "raw",
    [
        "mssql://sync:secret@erp-db.plant.local:1433/erp?encryption=require&tds_version=7.4",
        json.dumps({"conn_type": "mssql", "host": "erp-db.plant.local", "port": 1433, "login": "sync",
                    "password": "secret", "schema": "erp", "extra": {"encryption": "require", "tds_version": "7.4"}}),
    ],
    ids=["airflow uri", "airflow json extra"],
)
def test_sql_server_encryption_reaches_pymssql(raw: str) -> None:
    url = to_sqlalchemy_url(raw)
    assert url.drivername == "mssql+pymssql"
    kwargs = connect_kwargs(raw)
    assert kwargs["encryption"] == "require" and kwargs["tds_version"] == "7.4"


def test_pymssql_accepts_the_encryption_keyword() -> None:
    """pymssql rejects unknown keywords with TypeError; ``encryption`` is not one of them."""
    pymssql = pytest.importorskip("pymssql")
    with pytest.raises(pymssql.OperationalError):  # nothing listens on port 1: refused, not TypeError
        pymssql.connect(server="127.0.0.1", port="1", user="u", password="p", encryption="require", login_timeout=1)


def test_mariadb_ssl_options_pass_through() -> None:
    url = to_sqlalchemy_url("mysql://sync:secret@erp-db.plant.local:3306/erp?ssl_ca=/etc/ssl/plant-ca.pem&ssl_verify_cert=true")
    assert url.drivername == "mysql+pymysql"
    assert dict(url.query) == {"ssl_ca": "/etc/ssl/plant-ca.pem", "ssl_verify_cert": "true"}
