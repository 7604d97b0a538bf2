"""Local HTTP servers that speak each product's documented web API over real HTTP on loopback.

None of the products runs here; these servers answer as their documentation says they do:

- ``ErpnextServer``: Frappe's REST API (``/api/resource/<DocType>``, ``Authorization: token
  key:secret``, ``fields``, ``filters``, ``order_by``, ``limit_start`` / ``limit_page_length``
  with the default page of 20, ``{"data": …}`` answers, child tables in a single document's
  answer, ``DuplicateEntryError`` as 409), backed by the ERPNext tables of
  ``tests/products/erpnext`` on MariaDB (``tab<DocType>``).
- ``OdooServer``: Odoo's JSON-2 API (``POST /json/2/<model>/<method>``, ``Authorization: bearer
  <api key>``, the method's arguments by name in the body: ``search_read``, ``search``,
  ``create``, ``write``; errors as JSON with ``message``), backed by the Odoo tables of
  ``tests/products/odoo`` on PostgreSQL (model ``mrp.production`` is table ``mrp_production``).
- ``SapServer``: SAP Gateway OData V2 for ``API_PRODUCTION_ORDER_2_SRV`` (``A_ProductionOrder_2``)
  and ``API_PROD_ORDER_CONFIRMATION_2_SRV`` (``ProdnOrdConf2``): basic auth, ``{"d": {"results":
  […], "__next": …$skiptoken=…}}``, ``$filter`` with ``eq``/``ge``/``gt``/``le`` and ``and``,
  ``$top``/``$orderby``, ``/Date(ms)/`` timestamps, decimals as strings, and the CSRF token a
  write must carry (``X-CSRF-Token: Fetch`` on a GET first), kept in memory (no SAP schema is
  modelled under tests/products).

Each server injects faults on request (``fail(path_part, kind, times)``: ``401``, ``429`` with
``Retry-After``, ``500``, ``502``, ``503``, ``slow`` (seconds in ``arg``), ``malformed`` JSON) and
logs every request it answers (``log``: method, path with query, headers, body).
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sqlalchemy import Engine, MetaData, Table, and_, asc, desc, func, select


@dataclass
class Fault:
    path_part: str
    kind: str
    times: int
    arg: float = 1.0


@dataclass
class Logged:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


class Reply(Exception):
    """Answer the request now with ``status`` and a JSON ``body`` (or raw ``raw`` bytes)."""

    def __init__(self, status: int, body: Any = None, headers: dict[str, str] | None = None, raw: bytes | None = None):
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.raw = raw


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, date):
        return value.isoformat()
    raise TypeError(type(value).__name__)


class ProductServer:
    """A threaded HTTP server on 127.0.0.1 with a free port; subclasses answer ``handle``."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.log: list[Logged] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _serve(self, method: str) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else None
                except ValueError:
                    body = raw.decode(errors="replace")
                headers = {k: v for k, v in self.headers.items()}
                with server.lock:
                    server.log.append(Logged(method, self.path, headers, body))
                try:
                    server.inject(self.path)
                    result = server.handle(method, self.path, headers, body)
                    status, payload, extra, data = 200, result, {}, None
                except Reply as reply:
                    status, payload, extra, data = reply.status, reply.body, reply.headers, reply.raw
                if data is None:
                    data = b"" if payload is None and status == 204 else json.dumps(payload, default=server.json_default).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("Date", formatdate(usegmt=True))
                for key, value in extra.items():
                    self.send_header(key, value)
                self.end_headers()
                if method != "HEAD":
                    self.wfile.write(data)

            def do_GET(self) -> None:
                self._serve("GET")

            def do_HEAD(self) -> None:
                self._serve("HEAD")

            def do_POST(self) -> None:
                self._serve("POST")

            def do_PUT(self) -> None:
                self._serve("PUT")

            def do_PATCH(self) -> None:
                self._serve("PATCH")

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    json_default = staticmethod(_json_default)

    def __enter__(self) -> ProductServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def fail(self, path_part: str, kind: str, times: int = 1, arg: float = 1.0) -> None:
        with self.lock:
            self.faults.append(Fault(path_part, kind, times, arg))

    def inject(self, path: str) -> None:
        with self.lock:
            fault = next((f for f in self.faults if f.path_part in unquote(path) and f.times > 0), None)
            if fault is None:
                return
            fault.times -= 1
        if fault.kind == "slow":
            time.sleep(fault.arg)
            return
        if fault.kind == "malformed":
            raise Reply(200, raw=b'{"data": [{"name": "half an answer"')
        if fault.kind == "429":
            raise Reply(429, {"message": "Too many requests"}, {"Retry-After": str(int(fault.arg))})
        if fault.kind == "401":
            raise Reply(401, {"message": "not authorized"})
        raise Reply(int(fault.kind), {"message": f"injected {fault.kind}"})

    def requests_to(self, part: str, method: str | None = None) -> list[Logged]:
        with self.lock:
            return [r for r in self.log if part in unquote(r.path) and (method is None or r.method == method)]

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        raise NotImplementedError


def _query(path: str) -> tuple[str, dict[str, str]]:
    parts = urlsplit(path)
    return unquote(parts.path), {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}


_OPS = {"=": "__eq__", "!=": "__ne__", ">": "__gt__", ">=": "__ge__", "<": "__lt__", "<=": "__le__"}


def _condition(table: Table, name: str, op: str, value: Any) -> Any:
    if name not in table.c:
        raise Reply(417, {"exc_type": "DataError", "exception": f"Field not permitted in query: {name}"})
    column = table.c[name]
    op = op.lower()
    if op in _OPS:
        return getattr(column, _OPS[op])(value)
    if op == "in":
        return column.in_(value if isinstance(value, list) else str(value).split(","))
    if op == "not in":
        return column.not_in(value if isinstance(value, list) else str(value).split(","))
    if op == "like":
        return column.like(value)
    raise Reply(417, {"exc_type": "DataError", "exception": f"unsupported operator {op}"})


class ErpnextServer(ProductServer):
    """Frappe REST over the ERPNext tables (see the module's docstring)."""

    #: Child tables returned inside a single document, by doctype: field -> child doctype.
    CHILDREN = {"Work Order": {"required_items": "Work Order Item"}}

    def __init__(self, engine: Engine, api_key: str, api_secret: str) -> None:
        super().__init__()
        self.engine = engine
        self.token = f"token {api_key}:{api_secret}"
        self.tables: dict[str, Table] = {}

    def table(self, doctype: str) -> Table:
        if doctype not in self.tables:
            with self.engine.connect() as conn:
                try:
                    self.tables[doctype] = Table(f"tab{doctype}", MetaData(), autoload_with=conn)
                except Exception:
                    raise Reply(404, {"exc_type": "DoesNotExistError", "exception": f"DocType {doctype} not found"}) from None
        return self.tables[doctype]

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        if headers.get("Authorization") != self.token:
            raise Reply(401, {"exc_type": "AuthenticationError", "exception": "frappe.exceptions.AuthenticationError"})
        route, query = _query(path)
        match = re.fullmatch(r"/api/resource/([^/]+)(?:/(.+))?", route)
        if match is None:
            raise Reply(404, {"exc_type": "PageDoesNotExistError"})
        doctype, name = match.group(1), match.group(2)
        table = self.table(doctype)
        if method in ("GET", "HEAD") and name is None:
            return {"data": self.list(table, query)}
        if method == "GET":
            return {"data": self.get(doctype, table, name)}
        if method == "POST" and name is None:
            return {"data": self.insert(doctype, table, body)}
        if method == "PUT" and name is not None:
            return {"data": self.update(doctype, table, name, body)}
        raise Reply(405, {"exc_type": "MethodNotAllowed"})

    def list(self, table: Table, query: dict[str, str]) -> list[dict[str, Any]]:
        fields = json.loads(query.get("fields", '["name"]'))
        columns = list(table.c) if "*" in fields else [table.c[f] for f in fields if f in table.c]
        stmt = select(*columns)
        filters = json.loads(query.get("filters", "[]"))
        if isinstance(filters, dict):
            filters = [[k, "=", v] for k, v in filters.items()]
        conditions = [_condition(table, *(f[-3:])) for f in filters]
        if conditions:
            stmt = stmt.where(and_(*conditions))
        order = query.get("order_by", "modified desc").split()
        column = table.c[order[0]]
        stmt = stmt.order_by(desc(column) if order[-1].lower() == "desc" else asc(column), table.c.name)
        start = int(query.get("limit_start", 0))
        # Frappe's default page is 20 records; 0 means every record.
        length = int(query.get("limit_page_length", query.get("limit", 20)))
        stmt = stmt.offset(start)
        if length:
            stmt = stmt.limit(length)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def _one(self, table: Table, name: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.name == name)).mappings().first()
        return None if row is None else dict(row)

    def get(self, doctype: str, table: Table, name: str) -> dict[str, Any]:
        doc = self._one(table, name)
        if doc is None:
            raise Reply(404, {"exc_type": "DoesNotExistError", "exception": f"{doctype} {name} not found"})
        for fieldname, child in self.CHILDREN.get(doctype, {}).items():
            lines = self.table(child)
            with self.engine.connect() as conn:
                doc[fieldname] = [dict(r) for r in conn.execute(
                    select(lines).where(lines.c.parent == name).order_by(lines.c.idx)).mappings()]
        return doc

    def _values(self, table: Table, doc: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in doc if k not in table.c]
        if unknown:
            raise Reply(417, {"exc_type": "DataError", "exception": f"unknown field(s) {', '.join(unknown)}"})
        return doc

    def insert(self, doctype: str, table: Table, doc: dict[str, Any]) -> dict[str, Any]:
        doc = dict(self._values(table, doc))
        doc.setdefault("name", secrets.token_hex(5))
        now = datetime.now()
        doc.setdefault("creation", now)
        doc["modified"] = now
        with self.engine.begin() as conn:
            if conn.execute(select(table.c.name).where(table.c.name == doc["name"])).first() is not None:
                raise Reply(409, {"exc_type": "DuplicateEntryError",
                                  "exception": f"frappe.exceptions.DuplicateEntryError: {doctype} {doc['name']} already exists"})
            conn.execute(table.insert(), [doc])
        return self.get(doctype, table, doc["name"])

    def update(self, doctype: str, table: Table, name: str, doc: dict[str, Any]) -> dict[str, Any]:
        doc = {k: v for k, v in self._values(table, doc).items() if k != "name"}
        doc["modified"] = datetime.now()
        with self.engine.begin() as conn:
            if conn.execute(table.update().where(table.c.name == name).values(**doc)).rowcount == 0:
                raise Reply(404, {"exc_type": "DoesNotExistError", "exception": f"{doctype} {name} not found"})
        return self.get(doctype, table, name)


class OdooServer(ProductServer):
    """Odoo JSON-2 over the Odoo tables (see the module's docstring)."""

    def __init__(self, engine: Engine, api_key: str) -> None:
        super().__init__()
        self.engine = engine
        self.token = f"bearer {api_key}"
        self.tables: dict[str, Table] = {}

    @staticmethod
    def json_default(value: Any) -> Any:
        # Odoo's JSON writes datetimes as "YYYY-MM-DD HH:MM:SS" (naive UTC) and floats for numerics.
        if isinstance(value, datetime):
            return value.strftime("%Y-%m-%d %H:%M:%S")
        return _json_default(value)

    def table(self, model: str) -> Table:
        if model not in self.tables:
            with self.engine.connect() as conn:
                try:
                    self.tables[model] = Table(model.replace(".", "_"), MetaData(), autoload_with=conn)
                except Exception:
                    raise Reply(404, {"name": "werkzeug.exceptions.NotFound", "message": f"model {model} not found"}) from None
        return self.tables[model]

    def _domain(self, table: Table, domain: list[Any]) -> Any:
        conditions = [_condition(table, term[0], "!=" if term[1] == "!=" else term[1], term[2])
                      for term in domain if isinstance(term, list)]
        return and_(*conditions) if conditions else None

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        if headers.get("Authorization", "").lower() != self.token.lower():
            raise Reply(401, {"name": "werkzeug.exceptions.Unauthorized", "message": "Invalid apikey"})
        route, _ = _query(path)
        match = re.fullmatch(r"/json/2/([a-z0-9_.]+)/([a-z_]+)", route)
        if match is None or method != "POST":
            raise Reply(404, {"name": "werkzeug.exceptions.NotFound", "message": "not found"})
        model, call = match.groups()
        table = self.table(model)
        body = body or {}
        if call in ("search_read", "search", "search_count"):
            stmt = select(*(list(table.c) if call == "search_read" and not body.get("fields")
                            else [table.c[f] for f in ({"id", *body.get("fields", [])} if call == "search_read" else {"id"})]))
            where = self._domain(table, body.get("domain", []))
            if where is not None:
                stmt = stmt.where(where)
            if call == "search_count":
                with self.engine.connect() as conn:
                    return conn.execute(select(func.count()).select_from(stmt.subquery())).scalar_one()
            order = (body.get("order") or "id").split()
            stmt = stmt.order_by(desc(table.c[order[0]]) if order[-1].lower() == "desc" else asc(table.c[order[0]]), table.c.id)
            stmt = stmt.offset(int(body.get("offset") or 0))
            if body.get("limit"):
                stmt = stmt.limit(int(body["limit"]))
            with self.engine.connect() as conn:
                rows = [dict(r) for r in conn.execute(stmt).mappings()]
            if call == "search":
                return [r["id"] for r in rows]
            if "load" not in body:
                # read()'s default load: a many2one comes as [id, display name]; "load": null gives the id.
                rows = [{k: [v, f"{k} {v}"] if k.endswith("_id") and isinstance(v, int) else v for k, v in r.items()} for r in rows]
            return rows
        if call == "create":
            vals_list = body.get("vals_list")
            if not isinstance(vals_list, list):
                raise Reply(422, {"name": "TypeError", "message": "create() missing 1 required positional argument: 'vals_list'"})
            ids = []
            with self.engine.begin() as conn:
                for vals in vals_list:
                    unknown = [k for k in vals if k not in table.c]
                    if unknown:
                        raise Reply(422, {"name": "ValueError", "message": f"Invalid field {unknown[0]!r} on model {model!r}"})
                    ids.append(conn.execute(table.insert().values(**vals).returning(table.c.id)).scalar_one())
            return ids
        if call == "write":
            with self.engine.begin() as conn:
                conn.execute(table.update().where(table.c.id.in_(body.get("ids", []))).values(**body.get("vals", {})))
            return True
        raise Reply(422, {"name": "AttributeError", "message": f"The method '{call}' does not exist on the model '{model}'"})


def odata_error(code: str, text: str) -> dict[str, Any]:
    """SAP Gateway's error body: the message text at ``error.message.value``."""
    return {"error": {"code": code, "message": {"lang": "en", "value": text}}}


ORDER_SERVICE = "/sap/opu/odata/sap/API_PRODUCTION_ORDER_2_SRV"
CONFIRMATION_SERVICE = "/sap/opu/odata/sap/API_PROD_ORDER_CONFIRMATION_2_SRV"


def odata_date(value: datetime) -> str:
    """OData V2 JSON's ``/Date(ms)/`` of a naive UTC time."""
    return f"/Date({int((value - datetime(1970, 1, 1)).total_seconds() * 1000)})/"


_LITERAL = re.compile(r"^(?:datetimeoffset|datetime)'([^']*)'$|^'((?:[^']|'')*)'$|^(-?\d+(?:\.\d+)?)[mMdD]?$")


class SapServer(ProductServer):
    """OData V2 production orders and confirmations (see the module's docstring)."""

    def __init__(self, user: str, password: str, page_size: int = 50) -> None:
        super().__init__()
        self.page_size = page_size
        self.orders: list[dict[str, Any]] = []
        self.confirmations: list[dict[str, Any]] = []
        self.csrf: str | None = None
        self.basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    @staticmethod
    def json_default(value: Any) -> Any:
        if isinstance(value, Decimal):
            return str(value)  # Edm.Decimal travels as a string in OData V2 JSON
        if isinstance(value, datetime):
            return odata_date(value)
        raise TypeError(type(value).__name__)

    def _matches(self, record: dict[str, Any], expression: str) -> bool:
        for term in re.split(r"\s+and\s+", expression.strip()):
            name, op, literal = term.split(None, 2)
            match = _LITERAL.match(literal)
            if match is None:
                raise Reply(400, {"error": {"code": "/IWBEP/CM_MGW_RT/022", "message": {"lang": "en", "value": f"Invalid filter {term}"}}})
            stamp, text, number = match.groups()
            value: Any = datetime.fromisoformat(stamp.replace("Z", "+00:00")).astimezone(UTC).replace(tzinfo=None) \
                if stamp is not None else (text.replace("''", "'") if text is not None else Decimal(str(number)))
            have = record.get(name)
            if have is None:
                return False
            if isinstance(value, Decimal):
                have = Decimal(str(have))
            ok = {"eq": have == value, "ne": have != value, "gt": have > value, "ge": have >= value,
                  "lt": have < value, "le": have <= value}.get(op)
            if not ok:
                return False
        return True

    def handle(self, method: str, path: str, headers: dict[str, str], body: Any) -> Any:
        if headers.get("Authorization") != self.basic:
            raise Reply(401, {"error": {"code": "401", "message": {"lang": "en", "value": "Logon failed"}}})
        route, query = _query(path)
        if headers.get("X-CSRF-Token", headers.get("x-csrf-token", "")).lower() == "fetch" and method == "GET":
            self.csrf = secrets.token_urlsafe(16)
            raise Reply(200, {"d": {"EntitySets": ["A_ProductionOrder_2", "ProdnOrdConf2"]}}, {"X-CSRF-Token": self.csrf})
        if route.rstrip("/") in (ORDER_SERVICE, CONFIRMATION_SERVICE):
            return {"d": {"EntitySets": ["A_ProductionOrder_2", "ProdnOrdConf2"]}}
        if route == f"{ORDER_SERVICE}/A_ProductionOrder_2" and method in ("GET", "HEAD"):
            return self._list(self.orders, "A_ProductionOrder_2", ORDER_SERVICE, query, "ManufacturingOrder")
        if route == f"{CONFIRMATION_SERVICE}/ProdnOrdConf2":
            if method == "GET":
                return self._list(self.confirmations, "ProdnOrdConf2", CONFIRMATION_SERVICE, query, "ConfirmationCount")
            if method == "POST":
                if self.csrf is None or headers.get("X-CSRF-Token") != self.csrf:
                    raise Reply(403, {"error": {"code": "403", "message": {"lang": "en", "value": "CSRF token validation failed"}}},
                                {"X-CSRF-Token": "Required"})
                return self._confirm(body)
        raise Reply(404, odata_error("/IWBEP/CM_MGW_RT/020", f"Resource not found for segment '{route}'"))

    def _list(self, records: list[dict[str, Any]], entity_set: str, service: str, query: dict[str, str], key: str) -> Any:
        with self.lock:
            found = [dict(r) for r in records if not query.get("$filter") or self._matches(r, query["$filter"])]
        order = query.get("$orderby", key).split()
        found.sort(key=lambda r: (r.get(order[0]) is None, r.get(order[0]), r.get(key)), reverse=order[-1] == "desc")
        skip = int(query.get("$skiptoken", 0))
        top = int(query["$top"]) if "$top" in query else None
        page_end = skip + self.page_size if top is None else min(skip + self.page_size, top)
        page = found[skip:page_end]
        document: dict[str, Any] = {"results": [{"__metadata": {"type": f"{entity_set}Type"}, **r} for r in page]}
        if page_end < len(found) and (top is None or page_end < top):
            rest = "&".join(f"{k}={v}" for k, v in query.items() if k != "$skiptoken")
            document["__next"] = f"{self.url}{service}/{entity_set}?{rest}&$skiptoken={page_end}"
        return {"d": document}

    def _confirm(self, body: dict[str, Any]) -> Any:
        order = next((o for o in self.orders if o["ManufacturingOrder"] == body.get("OrderID")), None)
        if order is None:
            raise Reply(400, odata_error("CO/017", f"Order {body.get('OrderID')} does not exist"))
        try:
            yield_qty = Decimal(str(body.get("ConfirmationYieldQuantity", "0")))
        except Exception:
            raise Reply(400, {"error": {"code": "/IWBEP/CM_MGW_RT/011", "message": {"lang": "en", "value": "Invalid decimal"}}}) from None
        if yield_qty < 0:
            raise Reply(400, {"error": {"code": "RU/505", "message": {"lang": "en", "value": "Yield quantity cannot be negative"}}})
        with self.lock:
            count = len(self.confirmations) + 1
            record = {
                "ConfirmationGroup": f"{count:010d}", "ConfirmationCount": f"{count:08d}",
                "OrderID": body.get("OrderID"), "OrderOperation": body.get("OrderOperation", "0010"),
                "ConfirmationYieldQuantity": yield_qty,
                "ConfirmationScrapQuantity": Decimal(str(body.get("ConfirmationScrapQuantity", "0"))),
                "ConfirmationUnit": body.get("ConfirmationUnit"), "ConfirmationText": body.get("ConfirmationText", ""),
                "PostingDate": datetime.now(UTC).replace(tzinfo=None, hour=0, minute=0, second=0, microsecond=0),
            }
            self.confirmations.append(record)
        raise Reply(201, {"d": {"__metadata": {"type": "ProdnOrdConf2Type"}, **record}})


def sap_order(number: str, material: str, qty: str, unit: str, changed: datetime, plant: str = "1010") -> dict[str, Any]:
    """One ``A_ProductionOrder_2`` record as the service returns it."""
    return {
        "ManufacturingOrder": number, "ManufacturingOrderType": "PP01", "Material": material,
        "ProductionPlant": plant, "TotalQuantity": Decimal(qty), "ProductionUnit": unit,
        "MfgOrderPlannedStartDate": changed.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1),
        "LastChangeDateTime": changed,
    }
