"""The HTTP layer on real HTTP over loopback: connections from the environment, each auth, retries
with backoff honouring Retry-After, no blind retry of a write, timeouts, malformed answers, the
rate limit, every paging kind, and no secret in any error or log line."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import pytest

from etl.config.api import Paging
from etl.core.errors import ConnectionNotFound
from etl.sync.api_source import format_cursor, pages, parse_timestamp, parse_value
from etl.sync.http_api import ApiClient, ApiError, api_connection, fill, retry_after, select_path
from tests.products.api_servers import ProductServer, Reply, _query

SECRET = "s3cret-Pa55word"
KEY = "k3y-4b1c"


class Echo(ProductServer):
    """Answers ``/items`` from a list of 95 records with every paging kind, ``/token`` as an
    OAuth2 token endpoint, and ``/write`` as a create."""

    def __init__(self) -> None:
        super().__init__()
        self.items = [{"id": n, "name": f"item {n}"} for n in range(1, 96)]
        self.tokens = 0
        self.expired: set[str] = set()

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        route, q = _query(path)
        if route == "/token":
            self.tokens += 1
            return {"access_token": f"tok-{self.tokens}-abcdef", "expires_in": 3600}
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and auth.removeprefix("Bearer ") in self.expired:
            raise Reply(401, {"message": "token expired"})
        if route == "/write":
            return {"ok": True}
        if route == "/echo-auth":
            return {"auth": auth, "key": headers.get("X-API-Key")}
        if route == "/items":
            if "offset" in q:
                start, size = int(q["offset"]), int(q["limit"])
                return {"data": self.items[start:start + size]}
            if "page" in q:
                start = (int(q["page"]) - 1) * int(q["limit"])
                return {"data": self.items[start:start + int(q["limit"])]}
            start = int(q.get("cursor", 0))
            page = self.items[start:start + 40]
            nxt = start + 40 if start + 40 < len(self.items) else None
            return {"data": page, "meta": {"next": nxt}, "next_url": f"/items?cursor={nxt}" if nxt else None}
        raise Reply(404, {"message": "no such route"})


@pytest.fixture
def echo() -> Iterator[Echo]:
    server = Echo()
    with server:
        yield server


def _connect(monkeypatch: pytest.MonkeyPatch, url: str, **extra: Any) -> ApiClient:
    spec = {"conn_type": "http", "host": url, "login": KEY, "password": SECRET,
            "extra": {"backoff": 0.05, **extra}}
    monkeypatch.setenv("AIRFLOW_CONN_TEST_API", json.dumps(spec))
    return ApiClient(api_connection("test_api"))


def test_a_connection_uri_gives_base_url_credentials_and_extras(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ERP_API", f"https://{KEY}:{SECRET.replace('@', '%40')}@erp.example:8443/base?auth=token&timeout=7")
    conn = api_connection("erp_api")
    assert (conn.base_url, conn.auth, conn.login, conn.password, conn.timeout) == (
        "https://erp.example:8443/base", "token", KEY, SECRET, 7.0)
    assert conn.verify is True  # TLS verification is on unless the connection turns it off
    assert SECRET not in repr(conn)


def test_a_bad_connection_names_the_id_and_never_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_ERP_API", f"ftp://{KEY}:{SECRET}@host")
    with pytest.raises(ConnectionNotFound) as caught:
        api_connection("erp_api")
    assert "erp_api" in str(caught.value) and SECRET not in str(caught.value)
    monkeypatch.setenv("AIRFLOW_CONN_ERP_API", f"http://{KEY}:{SECRET}@host?auth=magic")
    with pytest.raises(ConnectionNotFound, match="auth must be one of"):
        api_connection("erp_api")
    monkeypatch.setenv("AIRFLOW_CONN_ERP_API", "http://host?auth=oauth2")
    with pytest.raises(ConnectionNotFound, match="token_url"):
        api_connection("erp_api")


@pytest.mark.parametrize(("auth", "expected"), [
    ("token", f"token {KEY}:{SECRET}"), ("bearer", f"bearer {SECRET}"),
    ("basic", "Basic azN5LTRiMWM6czNjcmV0LVBhNTV3b3Jk"),
])
def test_each_auth_sends_its_header(monkeypatch: pytest.MonkeyPatch, echo: Echo, auth: str, expected: str) -> None:
    with _connect(monkeypatch, echo.url, auth=auth) as client:
        assert client.json(client.request("GET", "/echo-auth"), "echo")["auth"] == expected


def test_header_auth_puts_the_key_in_its_header(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    with _connect(monkeypatch, echo.url, auth="header", header="X-API-Key") as client:
        assert client.json(client.request("GET", "/echo-auth"), "echo")["key"] == SECRET


def test_oauth2_token_is_cached_and_fetched_again_after_a_401(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    with _connect(monkeypatch, echo.url, auth="oauth2", token_url=f"{echo.url}/token") as client:
        for _ in range(3):
            client.request("GET", "/echo-auth")
        assert echo.tokens == 1
        echo.expired.add("tok-1-abcdef")
        answer = client.json(client.request("GET", "/echo-auth"), "echo")
        assert echo.tokens == 2 and answer["auth"] == "Bearer tok-2-abcdef"
        token_calls = echo.requests_to("/token")
        assert all("client_secret" not in r.path for r in token_calls)  # in the form body, not the URL


def test_429_is_retried_after_the_wait_retry_after_asks(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    echo.fail("/items", "429", times=1, arg=1)
    with _connect(monkeypatch, echo.url) as client:
        started = time.monotonic()
        client.request("GET", "/items", params={"offset": 0, "limit": 5})
        assert time.monotonic() - started >= 1.0
    assert len(echo.requests_to("/items")) == 2


@pytest.mark.parametrize("status", ["502", "503", "504"])
def test_gateway_errors_are_retried_with_backoff(monkeypatch: pytest.MonkeyPatch, echo: Echo, status: str) -> None:
    echo.fail("/items", status, times=2)
    with _connect(monkeypatch, echo.url) as client:
        client.request("GET", "/items", params={"offset": 0, "limit": 5})
    assert len(echo.requests_to("/items")) == 3


def test_a_500_is_not_retried_and_names_status_and_the_apis_text(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    echo.fail("/items", "500", times=5)
    with _connect(monkeypatch, echo.url, auth="token") as client, pytest.raises(ApiError) as caught:
        client.request("GET", "/items")
    assert caught.value.status == 500 and "injected 500" in str(caught.value) and not caught.value.retryable
    assert len(echo.requests_to("/items")) == 1


def test_retries_stop_after_max_retries(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    echo.fail("/items", "503", times=10)
    with _connect(monkeypatch, echo.url, max_retries=2) as client, pytest.raises(ApiError) as caught:
        client.request("GET", "/items")
    assert caught.value.status == 503 and caught.value.retryable
    assert len(echo.requests_to("/items")) == 3


def test_a_write_is_retried_on_429_but_not_on_502(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    echo.fail("/write", "429", times=1, arg=0)
    with _connect(monkeypatch, echo.url) as client:
        client.request("POST", "/write", json_body={"a": 1})
        assert len(echo.requests_to("/write")) == 2
        echo.fail("/write", "502", times=1)
        with pytest.raises(ApiError) as caught:
            client.request("POST", "/write", json_body={"a": 1})
        assert caught.value.status == 502
        assert len(echo.requests_to("/write")) == 3
        # With an idempotency key the server recognises a repeat: retried.
        echo.fail("/write", "502", times=1)
        client.request("POST", "/write", json_body={"a": 1}, idempotency_key="flow/1")
        assert echo.requests_to("/write")[-1].headers["Idempotency-Key"] == "flow/1"


def test_a_slow_answer_times_out(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    echo.fail("/items", "slow", times=5, arg=1.5)
    with _connect(monkeypatch, echo.url, timeout=0.3, max_retries=1) as client, pytest.raises(ApiError) as caught:
        client.request("GET", "/items")
    assert "no answer (ReadTimeout) after 2 attempt(s)" in str(caught.value)


def test_malformed_json_is_an_error_naming_the_request(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    echo.fail("/items", "malformed")
    with _connect(monkeypatch, echo.url) as client, pytest.raises(ApiError, match="the answer is not JSON"):
        list(pages(client, "GET", "/items", {}, None, "data", Paging(kind="offset")))


def test_the_rate_limit_spaces_requests(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    with _connect(monkeypatch, echo.url, rate_per_second=20) as client:
        started = time.monotonic()
        for _ in range(6):
            client.request("GET", "/echo-auth")
        assert time.monotonic() - started >= 5 / 20


@pytest.mark.parametrize("paging", [
    Paging(kind="offset", size=10),
    Paging(kind="page", size=30, limit_param="limit"),
    Paging(kind="cursor", cursor_path="meta.next"),
    Paging(kind="next_link", next_path="next_url"),
])
def test_every_paging_kind_reads_every_record_once(monkeypatch: pytest.MonkeyPatch, echo: Echo, paging: Paging) -> None:
    with _connect(monkeypatch, echo.url) as client:
        ids = [r["id"] for page in pages(client, "GET", "/items", {}, None, "data", paging) for r in page]
    assert ids == list(range(1, 96))


def test_a_next_link_to_another_host_is_not_followed(monkeypatch: pytest.MonkeyPatch, echo: Echo) -> None:
    class Elsewhere(Echo):
        def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
            return {"data": [{"id": 1}], "next_url": "http://198.51.100.7/steal"}

    with Elsewhere() as other, _connect(monkeypatch, other.url) as client, pytest.raises(ApiError, match="another host"):
        list(pages(client, "GET", "/items", {}, None, "data", Paging(kind="next_link", next_path="next_url")))


def test_no_secret_in_errors_or_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    class Leaky(Echo):
        def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
            # An API that echoes the credentials it was sent in its error text.
            raise Reply(403, {"message": f"refused {headers.get('Authorization')}"})

    caplog.set_level(logging.DEBUG)
    with Leaky() as leaky, _connect(monkeypatch, leaky.url, auth="token") as client:
        leaky.fail("/x", "503", times=1)
        with pytest.raises(ApiError) as caught:
            client.request("GET", "/x")
    text = str(caught.value) + caught.value.text + caplog.text
    assert "refused token ***" in str(caught.value)
    assert SECRET not in text and KEY not in text


def test_retry_after_reads_seconds_and_dates() -> None:
    from email.utils import formatdate

    import httpx

    assert retry_after(httpx.Response(429, headers={"Retry-After": "3"})) == 3
    later = formatdate(time.time() + 10, usegmt=True)
    assert 8 <= (retry_after(httpx.Response(429, headers={"Retry-After": later})) or 0) <= 10
    assert retry_after(httpx.Response(429, headers={"Retry-After": "99999"})) == 120
    assert retry_after(httpx.Response(429)) is None


def test_values_parse_as_declared() -> None:
    from datetime import date, datetime
    from decimal import Decimal

    assert parse_value("2026-11-20 08:00:00.250000", "timestamp", "frappe") == datetime(2026, 11, 20, 8, 0, 0, 250000)
    assert parse_value("/Date(1763625600000)/", "timestamp", "odata_v2") == datetime(2025, 11, 20, 8, 0)
    assert parse_value("/Date(1763625600000+0000)/", "timestamp", "odata_v2") == datetime(2025, 11, 20, 8, 0)
    assert parse_value("12.345", "decimal", "iso") == Decimal("12.345")
    assert parse_value("2026-11-20", "date", "iso") == date(2026, 11, 20)
    assert parse_value("", "integer", "iso") is None
    with pytest.raises(ValueError):
        parse_value(True, "integer", "iso")
    assert parse_timestamp("2026-11-20T08:00:00Z", "iso").isoformat() == "2026-11-20T08:00:00+00:00"
    assert format_cursor(datetime(2026, 11, 20, 8, 0, 0, 5), "frappe") == "2026-11-20 08:00:00.000005"
    assert format_cursor(datetime(2026, 11, 20, 8, 0), "odata_v2") == "2026-11-20T08:00:00.000"
    assert select_path({"d": {"results": [1]}}, "d.results") == [1]
    assert select_path([{"a": 1}], "$") == [{"a": 1}]


def test_a_value_between_single_quotes_cannot_end_its_text_literal() -> None:
    template = {"$filter": "OrderID eq '{order}' and ConfirmationText eq '{key}'", "top": "{n}", "path": "/x/{key}"}
    filled = fill(template, {"order": "1000001", "key": "O'Brien' or 1 eq 1 or 'x", "n": 5}, {})
    assert filled == {
        "$filter": "OrderID eq '1000001' and ConfirmationText eq 'O''Brien'' or 1 eq 1 or ''x'",
        "top": 5,
        "path": "/x/O'Brien' or 1 eq 1 or 'x",
    }
    assert fill("'{missing}'", {}, {}) == "'{missing}'"
