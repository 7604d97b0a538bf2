"""Web APIs by connection id: base URL, credentials and wire behaviour come from the connection.

A flow names an HTTP connection (``AIRFLOW_CONN_ERPNEXT_API``, an Airflow HTTP connection, or the
connections file, looked up as for databases); the YAML holds only paths and parameters. The
connection's extras choose the auth and the wire behaviour:

- ``auth``: ``token`` (``Authorization: token login:password``, Frappe/ERPNext), ``bearer``
  (``Authorization: bearer password``, Odoo API keys), ``basic`` (SAP Gateway), ``header``
  (``<header>: password``), ``oauth2`` (client credentials: login and password are the client id
  and secret, ``token_url`` the token endpoint; the token is cached until it expires and fetched
  again on a 401), or ``none``;
- ``headers``: a JSON object of plain headers (``{"X-Odoo-Database": "prod"}``);
- ``verify``: TLS verification, on unless ``false`` (or a CA bundle's path);
- ``timeout`` (seconds, default 30), ``max_retries`` (default 5), ``backoff`` (first wait, default
  0.5 s), ``rate_per_second`` (a request rate limit shared by every client of the connection).

Requests answered 429, 502, 503 or 504, and reads that time out or lose their connection, are
retried with exponential backoff, waiting at least what ``Retry-After`` asks. Writes are retried
only on 429 and 503 (the server said it did nothing), or always when they carry an idempotency
key. No message, log line or error names a password, token or the Authorization header: every
text leaving this module passes through :meth:`ApiConnection.redact`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

import httpx

from etl.core.errors import ConnectionNotFound, EtlError
from etl.core.printable import get_logger
from etl.core.rows import is_null
from etl.sync.connections import raw_connection

log = get_logger("etl.sync.http_api")

RETRY_STATUSES = frozenset({429, 502, 503, 504})
#: Statuses that say the server did not act on the request: safe to retry even a POST.
NOT_PROCESSED = frozenset({429, 503})
AUTH_KINDS = ("none", "token", "bearer", "basic", "header", "oauth2")
_MAX_RETRY_AFTER = 120.0
_ERROR_TEXT = 500


class ApiError(EtlError):
    """A request failed: the method, path, HTTP status (None for no answer) and the API's own
    error text, with every secret of the connection blanked out."""

    def __init__(self, message: str, status: int | None = None, text: str = "", retryable: bool = False):
        super().__init__(message)
        self.status = status
        self.text = text
        self.retryable = retryable


@dataclass
class ApiConnection:
    """An HTTP connection as a flow uses it. ``repr`` never shows the password."""

    conn_id: str
    base_url: str
    auth: str = "none"
    login: str | None = field(default=None, repr=False)
    password: str | None = field(default=None, repr=False)
    header: str = "X-API-Key"
    token_url: str | None = None
    scope: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    verify: bool | str = True
    timeout: float = 30.0
    max_retries: int = 5
    backoff: float = 0.5
    rate_per_second: float | None = None

    def secrets(self) -> list[str]:
        values = [self.password or ""]
        if self.auth in ("token", "oauth2") and self.login:
            values.append(self.login)
        return [v for v in values if len(v) >= 4]

    def redact(self, text: str, extra: list[str] | None = None) -> str:
        """``text`` with every secret of this connection (and ``extra``) replaced by ``***``."""
        for secret in sorted([*self.secrets(), *(s for s in (extra or []) if len(s) >= 4)], key=len, reverse=True):
            text = text.replace(secret, "***")
        return text


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() not in ("0", "false", "no", "off", "")


def api_connection(conn_id: str) -> ApiConnection:
    """The HTTP connection ``conn_id``; raises ConnectionNotFound naming the id (and the key at
    fault), never quoting its value."""
    raw = raw_connection(conn_id)
    where = f"connection {conn_id!r}"
    try:
        spec = _spec(raw)
    except (ValueError, TypeError) as exc:
        raise ConnectionNotFound(f"{where}: cannot read it as an HTTP connection ({type(exc).__name__})") from None
    extra = spec["extra"]
    auth = str(extra.get("auth", "none")).lower()
    if auth not in AUTH_KINDS:
        raise ConnectionNotFound(f"{where}: extra auth must be one of {', '.join(AUTH_KINDS)}")
    headers = extra.get("headers") or {}
    if isinstance(headers, str):
        headers = json.loads(headers) if headers else {}
    if not isinstance(headers, dict):
        raise ConnectionNotFound(f"{where}: extra headers must be a JSON object")
    verify_raw = extra.get("verify", True)
    verify: bool | str = verify_raw if isinstance(verify_raw, bool) else (
        _truthy(verify_raw) if str(verify_raw).lower() in ("0", "1", "true", "false", "yes", "no") else str(verify_raw)
    )
    conn = ApiConnection(
        conn_id=conn_id, base_url=spec["base_url"].rstrip("/"), auth=auth, login=spec["login"],
        password=spec["password"], header=str(extra.get("header", "X-API-Key")),
        token_url=extra.get("token_url"), scope=extra.get("scope"),
        headers={str(k): str(v) for k, v in headers.items()}, verify=verify,
        timeout=float(extra.get("timeout", 30)), max_retries=int(extra.get("max_retries", 5)),
        backoff=float(extra.get("backoff", 0.5)),
        rate_per_second=float(extra["rate_per_second"]) if extra.get("rate_per_second") else None,
    )
    if auth == "oauth2" and not conn.token_url:
        raise ConnectionNotFound(f"{where}: auth oauth2 needs extra token_url")
    if auth in ("token", "basic", "oauth2") and (not conn.login or not conn.password):
        raise ConnectionNotFound(f"{where}: auth {auth} needs a login and a password")
    if auth in ("bearer", "header") and not conn.password:
        raise ConnectionNotFound(f"{where}: auth {auth} needs the key as the password")
    return conn


def _spec(raw: str) -> dict[str, Any]:
    """Base URL, login, password and extras of an Airflow HTTP connection (URI or JSON)."""
    raw = raw.strip()
    if raw.startswith("{"):
        data: dict[str, Any] = json.loads(raw, parse_float=Decimal)
        extra = data.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra) if extra else {}
        host = str(data.get("host") or "")
        if "://" not in host:
            scheme = data.get("schema") or ("https" if data.get("conn_type") == "https" else "http")
            host = f"{scheme}://{host}"
        if data.get("port"):
            host = f"{host}:{int(data['port'])}"
        return {"base_url": host, "login": data.get("login"), "password": data.get("password"), "extra": dict(extra)}
    parts = urlsplit(raw)
    scheme = parts.scheme.split("+", 1)[0]
    if scheme not in ("http", "https"):
        raise ValueError("an HTTP connection URI starts with http:// or https://")
    query: dict[str, Any] = dict(parse_qsl(parts.query))
    if "__extra__" in query:
        query = {**json.loads(query.pop("__extra__")), **query}
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return {
        "base_url": f"{scheme}://{host}{port}{parts.path}",
        "login": unquote(parts.username) if parts.username else None,
        "password": unquote(parts.password) if parts.password else None,
        "extra": query,
    }


class _RateLimit:
    """At most ``rate`` requests a second through one connection, across threads."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate
        self.next_at = 0.0
        self.lock = threading.Lock()

    def wait(self) -> None:
        with self.lock:
            now = time.monotonic()
            delay = self.next_at - now
            self.next_at = max(now, self.next_at) + self.interval
        if delay > 0:
            time.sleep(delay)


_RATE_LIMITS: dict[str, _RateLimit] = {}
_RATE_LOCK = threading.Lock()


def _rate_limit(conn: ApiConnection) -> _RateLimit | None:
    if conn.rate_per_second is None:
        return None
    with _RATE_LOCK:
        limit = _RATE_LIMITS.get(conn.conn_id)
        if limit is None or abs(limit.interval - 1.0 / conn.rate_per_second) > 1e-9:
            limit = _RATE_LIMITS[conn.conn_id] = _RateLimit(conn.rate_per_second)
        return limit


def retry_after(response: httpx.Response, now: float | None = None) -> float | None:
    """The wait ``Retry-After`` asks for, in seconds (delta-seconds or an HTTP date), capped."""
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    return max(0.0, min(seconds, _MAX_RETRY_AFTER))


class ApiClient:
    """Requests to one connection, with its auth, retries, rate limit and timeouts."""

    def __init__(self, conn: ApiConnection, transport: httpx.BaseTransport | None = None):
        self.conn = conn
        self._token: str | None = None
        self._token_expires = 0.0
        self._csrf: str | None = None
        self._limit = _rate_limit(conn)
        self.http = httpx.Client(
            base_url=conn.base_url, timeout=conn.timeout, verify=conn.verify, transport=transport,
            headers={"Accept": "application/json", "User-Agent": "erp-mes-sync", **conn.headers},
            follow_redirects=False,
        )
        #: Seconds spent waiting for the API (requests, backoff), for the run's figures.
        self.seconds = 0.0
        self.requests = 0
        #: The ``Date`` header of the latest answer: the server's own clock.
        self.last_date: str | None = None

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def redact(self, text: str) -> str:
        return self.conn.redact(text, [t for t in (self._token, self._csrf) if t])

    def _auth_headers(self, refresh: bool = False) -> dict[str, str]:
        conn = self.conn
        if conn.auth == "token":
            return {"Authorization": f"token {conn.login}:{conn.password}"}
        if conn.auth == "bearer":
            return {"Authorization": f"bearer {conn.password}"}
        if conn.auth == "header":
            return {conn.header: str(conn.password)}
        if conn.auth == "basic":
            basic = httpx.BasicAuth(str(conn.login), str(conn.password))
            request = next(basic.auth_flow(httpx.Request("GET", "http://x")))
            return {"Authorization": request.headers["Authorization"]}
        if conn.auth == "oauth2":
            return {"Authorization": f"Bearer {self._oauth_token(refresh)}"}
        return {}

    def _oauth_token(self, refresh: bool) -> str:
        if self._token is not None and not refresh and time.monotonic() < self._token_expires:
            return self._token
        data = {"grant_type": "client_credentials", "client_id": str(self.conn.login),
                "client_secret": str(self.conn.password)}
        if self.conn.scope:
            data["scope"] = self.conn.scope
        assert self.conn.token_url is not None
        response = self._send("POST", self.conn.token_url, {"data": data}, {}, writes=False)
        if response.status_code != 200:
            raise self._error("POST", "the OAuth2 token endpoint", response)
        body = _json(response, "the OAuth2 token endpoint", self)
        token = body.get("access_token") if isinstance(body, dict) else None
        if not isinstance(token, str):
            raise ApiError(f"connection {self.conn.conn_id!r}: the OAuth2 token endpoint returned no access_token")
        self._token = token
        # Ask again a little before it expires, so a long page walk never sends a stale token.
        self._token_expires = time.monotonic() + max(float(body.get("expires_in", 3600)) - 30.0, 1.0)
        return token

    def csrf_token(self, path: str) -> str:
        """SAP Gateway's CSRF token: fetched once by a GET with ``X-CSRF-Token: Fetch`` (its
        session cookie kept by the client) and sent with every write."""
        if self._csrf is None:
            response = self.request("GET", path, headers={"X-CSRF-Token": "Fetch"})
            token = response.headers.get("X-CSRF-Token")
            if not token:
                raise ApiError(f"connection {self.conn.conn_id!r}: GET {path} returned no X-CSRF-Token")
            self._csrf = token
        return self._csrf

    def forget_csrf(self) -> None:
        self._csrf = None

    def request(
        self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json_body: Any = None,
        headers: Mapping[str, str] | None = None, idempotency_key: str | None = None, ok: tuple[int, ...] = (),
    ) -> httpx.Response:
        """Send one request, retrying as the module says; returns a 2xx response (or one whose
        status is in ``ok``), else raises ApiError with the status and the API's error text."""
        writes = method.upper() not in ("GET", "HEAD", "OPTIONS")
        extra = dict(headers or {})
        if idempotency_key is not None:
            extra["Idempotency-Key"] = idempotency_key
        kwargs: dict[str, Any] = {}
        if params:
            kwargs["params"] = {k: _param(v) for k, v in params.items()}
        if json_body is not None:
            kwargs["content"] = json.dumps(json_body, default=_json_default).encode()
            extra.setdefault("Content-Type", "application/json")
        response = self._send(method, path, kwargs, extra, writes=writes and idempotency_key is None)
        if response.status_code == 401 and self.conn.auth == "oauth2":
            self._auth_headers(refresh=True)
            response = self._send(method, path, kwargs, extra, writes=writes and idempotency_key is None)
        if response.is_success or response.status_code in ok:
            return response
        raise self._error(method, path, response)

    def _send(self, method: str, path: str, kwargs: dict[str, Any], headers: dict[str, str], writes: bool) -> httpx.Response:
        attempt = 0
        started = time.monotonic()
        try:
            while True:
                if self._limit is not None:
                    self._limit.wait()
                auth = {} if path == self.conn.token_url else self._auth_headers()
                self.requests += 1
                try:
                    response = self.http.request(method, path, headers={**headers, **auth}, **kwargs)
                except (httpx.TimeoutException, httpx.TransportError) as exc:
                    # A write that may have reached the server is not sent again blindly.
                    sent = not isinstance(exc, (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout))
                    if attempt >= self.conn.max_retries or (writes and sent):
                        raise ApiError(
                            self.redact(f"connection {self.conn.conn_id!r}: {method} {path}: no answer "
                                        f"({type(exc).__name__}) after {attempt + 1} attempt(s)"),
                            retryable=True,
                        ) from None
                    self._wait(attempt, None)
                    attempt += 1
                    continue
                self.last_date = response.headers.get("Date") or self.last_date
                retryable = response.status_code in (NOT_PROCESSED if writes else RETRY_STATUSES)
                if not retryable or attempt >= self.conn.max_retries:
                    return response
                log.info(
                    "connection %s: %s %s answered %d; retry %d of %d", self.conn.conn_id, method, path,
                    response.status_code, attempt + 1, self.conn.max_retries,
                )
                self._wait(attempt, retry_after(response))
                attempt += 1
        finally:
            self.seconds += time.monotonic() - started

    def _wait(self, attempt: int, asked: float | None) -> None:
        delay = min(self.conn.backoff * (2 ** attempt), 30.0)
        time.sleep(max(delay, asked or 0.0))

    def _error(self, method: str, path: str, response: httpx.Response) -> ApiError:
        text = api_error_text(response)
        message = f"connection {self.conn.conn_id!r}: {method} {path} answered {response.status_code}"
        return ApiError(
            self.redact(f"{message}: {text}" if text else message), response.status_code, self.redact(text),
            retryable=response.status_code in RETRY_STATUSES,
        )

    def json(self, response: httpx.Response, what: str) -> Any:
        return _json(response, what, self)


def api_error_text(response: httpx.Response) -> str:
    """The API's own words for an error: Frappe's ``exception``/``_server_messages``, OData's
    ``error.message.value``, Odoo JSON-2's message, else the start of the body."""
    try:
        body = json.loads(response.content)
    except (ValueError, UnicodeDecodeError):
        return response.text[:_ERROR_TEXT].strip()
    text: Any = body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message")
            text = message.get("value") if isinstance(message, dict) else message
        else:
            text = body.get("exception") or body.get("message") or error or body.get("_server_messages") or body
    return (text if isinstance(text, str) else json.dumps(text, default=str))[:_ERROR_TEXT]


def _json(response: httpx.Response, what: str, client: ApiClient) -> Any:
    try:
        return json.loads(response.content, parse_float=Decimal)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(
            client.redact(f"connection {client.conn.conn_id!r}: {what}: the answer is not JSON ({exc})"),
            response.status_code, retryable=True,
        ) from None


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value != value.to_integral_value() else int(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON")


def _param(value: Any) -> str:
    if isinstance(value, (list, dict)):
        return json.dumps(value, default=_json_default)
    return str(value)


def select_path(document: Any, path: str) -> Any:
    """The value at a dotted path (``d.results``, ``data``; ``""`` or ``$`` is the document)."""
    value = document
    for part in [p for p in path.removeprefix("$").strip(".").split(".") if p]:
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def records_at(document: Any, path: str, where: str) -> list[dict[str, Any]]:
    """The records at ``path``: a list of objects (one object counts as a list of one)."""
    found = select_path(document, path)
    if isinstance(found, dict):
        found = [found]
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        raise ApiError(f"{where}: no list of records at {path or '$'!r} in the answer")
    return found


#: A ``{name}`` placeholder of a path, a parameter or a body, with the single quotes around it.
_PLACEHOLDER = re.compile(r"(')?\{([A-Za-z_][A-Za-z0-9_ ]*)\}(?(1)')")


def plain(value: Any) -> Any:
    if is_null(value):
        return None
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return value


def fill(template: Any, values: dict[str, Any], record: dict[str, Any]) -> Any:
    """``template`` with ``{name}`` filled from ``values``: a string that is one placeholder
    takes the value as it is (a number stays a number), ``"{record}"`` the whole record; inside
    longer text, the value's text, and between single quotes (``'{key}'``, as OData's
    ``$filter`` and SQL write a text literal) with its own single quotes doubled, so a value
    can never end the literal early."""
    if isinstance(template, str):
        whole = _PLACEHOLDER.fullmatch(template)
        if whole is not None and not whole.group(1):
            name = whole.group(2)
            if name == "record":
                return record
            if name in values:
                return plain(values[name])
        return _PLACEHOLDER.sub(lambda m: _text(m, values), template)
    if isinstance(template, dict):
        return {k: fill(v, values, record) for k, v in template.items()}
    if isinstance(template, list):
        return [fill(v, values, record) for v in template]
    return template


def _text(match: re.Match[str], values: dict[str, Any]) -> str:
    name = match.group(2)
    if name not in values:
        return match.group(0)
    text = str(plain(values[name]))
    if match.group(1):
        return "'" + text.replace("'", "''") + "'"
    return text
