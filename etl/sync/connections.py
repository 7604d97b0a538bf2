"""Database connections by id. Flows name a connection; this module finds its URL.

Lookup order for connection id ``erp_db``:
1. the environment variable ``AIRFLOW_CONN_ERP_DB`` (an Airflow connection URI or JSON),
2. inside an Airflow task: Airflow's own connections (the metadata database, a secrets backend),
3. the connections file named by ``ETL_CONNECTIONS_FILE`` (JSON: ``{"erp_db": "url", ...}``),
   by default ``.demo/connections.json``, which ``python -m etl demo init`` writes.
Credentials therefore live in the environment or a git-ignored file, never in YAML. URLs are
only ever shown with the password masked.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from etl.config.paths import REPO_ROOT
from etl.core.errors import ConnectionNotFound

CONNECTIONS_FILE_ENV = "ETL_CONNECTIONS_FILE"

# Airflow's connection types and URI schemes -> SQLAlchemy dialect+driver.
_SCHEMES = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "mssql": "mssql+pymssql",
    "mysql": "mysql+pymysql",
    "sqlite": "sqlite",
}


def _env_name(conn_id: str) -> str:
    return f"AIRFLOW_CONN_{conn_id.upper()}"


def _url_from_airflow_json(raw: str) -> URL:
    spec: dict[str, Any] = json.loads(raw)
    conn_type = spec.get("conn_type", "")
    drivername = _SCHEMES.get(conn_type, conn_type)
    extra = spec.get("extra") or {}
    if isinstance(extra, str):
        extra = json.loads(extra) if extra else {}
    if not isinstance(extra, dict):
        raise ValueError("extra must be a JSON object")
    return URL.create(
        drivername,
        username=spec.get("login"),
        password=spec.get("password"),
        host=spec.get("host"),
        port=spec.get("port"),
        database=spec.get("schema"),
        query={k: str(v) for k, v in extra.items()},
    )


class AmbiguousUrl(ValueError):
    """A URL whose ``user:password@host`` part can be read more than one way."""


def check_authority(scheme: str, rest: str) -> None:
    """Refuse a URL with more than one ``@``: a password holding ``@`` (and ``/``) not
    percent-encoded is otherwise split at the wrong place, and its tail becomes the host or the
    database name that the driver's error then prints. The message never quotes the URL."""
    if scheme.split("+", 1)[0] == "sqlite":
        return  # a file path, no user or host
    if rest.count("@") > 1:
        raise AmbiguousUrl(
            f"{rest.count('@')} '@' in the URL, so where the password ends is ambiguous: percent-encode "
            "'@' as %40, '/' as %2F, ':' as %3A in the user name and password (the URL is not shown)"
        )


def to_sqlalchemy_url(raw: str) -> URL:
    """Turn an Airflow connection URI/JSON or a SQLAlchemy URL into a SQLAlchemy URL.

    Raises ValueError (AmbiguousUrl for more than one ``@``) or ArgumentError; no message
    quotes any part of ``raw``."""
    raw = raw.strip()
    if raw.startswith("{"):
        return _url_from_airflow_json(raw)
    scheme, sep, rest = raw.partition("://")
    if not sep:
        raise ValueError("not a URL (expected scheme://...)")
    check_authority(scheme, rest)
    base = scheme.split("+", 1)[0]
    if "+" not in scheme and base in _SCHEMES:
        scheme = _SCHEMES[base]
    # Airflow URIs percent-encode the password; make_url decodes it exactly once.
    return make_url(f"{scheme}://{rest}")


DEFAULT_CONNECTIONS_FILE = REPO_ROOT / ".demo" / "connections.json"


def _connections_file_path() -> Path:
    return Path(os.environ.get(CONNECTIONS_FILE_ENV) or str(DEFAULT_CONNECTIONS_FILE))


def _connections_file() -> dict[str, str]:
    """The connections file's URLs by id; {} when there is no file. Raises ConnectionNotFound
    naming the file when it cannot be read or is not a JSON object of URLs (a value may also be
    an Airflow connection as a JSON object). Messages never quote its content: it holds passwords."""
    path = _connections_file_path()
    if not path.exists():
        return {}
    where = f"connections file {path}"
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise ConnectionNotFound(f"{where}: cannot read it ({exc.strerror or type(exc).__name__})") from None
    except UnicodeDecodeError:
        raise ConnectionNotFound(f"{where}: not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        # The position only: the decoder's message quotes no content.
        raise ConnectionNotFound(f"{where}: not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}") from None
    if not isinstance(data, dict):
        raise ConnectionNotFound(
            f"{where}: expected a JSON object of connection ids and URLs "
            f'({{"erp_db": "postgresql://…", …}}), found a {_json_kind(data)}'
        )
    urls: dict[str, str] = {}
    for conn_id, value in data.items():
        if isinstance(value, dict):
            urls[conn_id] = json.dumps(value)  # an Airflow connection in its JSON form
        elif isinstance(value, str):
            urls[conn_id] = value
        else:
            raise ConnectionNotFound(
                f"{where}: connection {conn_id!r}: expected a URL string or an Airflow connection object, "
                f"found a {_json_kind(value)}"
            )
    return urls


def _json_kind(value: Any) -> str:
    kinds = {list: "list", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def _airflow_connection_uri(conn_id: str) -> str | None:
    """The URI of Airflow connection ``conn_id`` when running under Airflow, else None.

    Only asks when this process already imported Airflow's task SDK, as a DAG task has:
    ``python -m etl`` imports Airflow only to send mail, after its databases are read. Airflow
    masks the password in task logs itself.
    """
    if "airflow.sdk" not in sys.modules:
        return None
    from airflow.sdk import Connection
    from airflow.sdk.exceptions import AirflowNotFoundException

    try:
        conn: Connection = Connection.get(conn_id)
    except AirflowNotFoundException:
        return None
    if conn.conn_type == "sqlite" and conn.host and not conn.schema:
        # Airflow's SQLite connections keep the file path in the host field; a URI keeps it
        # in the path, so it survives the conversion.
        return f"sqlite:///{unquote(conn.host)}"
    return conn.get_uri()


def raw_connection(conn_id: str) -> str:
    """Connection ``conn_id`` as its source gives it (a URI or Airflow's JSON form), looked up
    in the module's order; raises ConnectionNotFound if undefined. Holds secrets: never print it."""
    raw = (
        os.environ.get(_env_name(conn_id))
        or _airflow_connection_uri(conn_id)
        or _connections_file().get(conn_id)
    )
    if raw is None:
        path = _connections_file_path()
        named = os.environ.get(CONNECTIONS_FILE_ENV)
        found = f" ({path} does not exist)" if named and not path.exists() else ""
        raise ConnectionNotFound(
            f"connection {conn_id!r} is not defined: set {_env_name(conn_id)} "
            f"(an Airflow connection URI), add it to Airflow's connections, "
            f"or list it in the file named by {CONNECTIONS_FILE_ENV}{found}"
        )
    return raw


def resolve_url(conn_id: str) -> URL:
    """The SQLAlchemy URL of connection ``conn_id``; raises ConnectionNotFound if undefined."""
    return _parsed(raw_connection(conn_id), f"connection {conn_id!r}", to_sqlalchemy_url)


def parse_url(raw: str, name: str) -> URL:
    """A SQLAlchemy URL given on the command line as ``name``; refused as :func:`resolve_url`
    refuses one, naming ``name`` and never the URL."""
    return _parsed(raw, name, to_sqlalchemy_url)


def _parsed(raw: str, name: str, parse: Any) -> URL:
    try:
        url: URL = parse(raw)
    except AmbiguousUrl as exc:
        raise ConnectionNotFound(f"{name}: cannot parse its URL: {exc}") from None
    except (ValueError, TypeError, AttributeError, ArgumentError) as exc:
        # The raw value may hold a password: name the variable, never echo the value (a bad
        # port's ValueError quotes it, json's quotes the text around the error).
        raise ConnectionNotFound(f"{name}: cannot parse its URL ({type(exc).__name__})") from None
    driver = _SUPPORTED_DRIVERS.get(url.get_backend_name())
    if driver is not None and url.get_driver_name() != driver:
        raise ConnectionNotFound(
            f"{name}: the {url.get_backend_name()} driver {url.get_driver_name()!r} is not supported "
            f"(COPY and statement rendering go through {driver}): write {url.get_backend_name()}+{driver}:// "
            f"or {url.get_backend_name()}://, the rest of the URL as it is"
        )
    return url


#: Databases whose bulk paths use one driver's own API (PostgreSQL: psycopg2's copy_expert and
#: mogrify, which psycopg 3 names and shapes differently).
_SUPPORTED_DRIVERS = {"postgresql": "psycopg2"}


def masked(url: URL) -> str:
    """A URL safe to print or log."""
    return url.render_as_string(hide_password=True)


def create_db_engine(url: URL | str) -> Engine:
    """An engine with the settings the pipeline relies on, for any supported database."""
    url = make_url(url) if isinstance(url, str) else url
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.get_backend_name() == "sqlite":
        kwargs = {}
    engine = create_engine(url, **kwargs)
    if url.get_backend_name() == "sqlite":
        _sqlite_settings(engine)
    return engine


def _sqlite_settings(engine: Engine) -> None:
    # Let SQLAlchemy issue BEGIN itself so a run is one real transaction, and wait for a
    # concurrent writer instead of failing at once.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        dbapi_conn.execute("PRAGMA busy_timeout = 30000")
        dbapi_conn.execute("PRAGMA foreign_keys = ON")

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN")


class Connections:
    """Engines by connection id, created once per process and disposed together."""

    def __init__(self, overrides: dict[str, URL | str] | None = None):
        self._overrides = {k: (make_url(v) if isinstance(v, str) else v) for k, v in (overrides or {}).items()}
        self._engines: dict[str, Engine] = {}

    def url(self, conn_id: str) -> URL:
        return self._overrides.get(conn_id) or resolve_url(conn_id)

    def engine(self, conn_id: str) -> Engine:
        if conn_id not in self._engines:
            self._engines[conn_id] = create_db_engine(self.url(conn_id))
        return self._engines[conn_id]

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.dispose()
