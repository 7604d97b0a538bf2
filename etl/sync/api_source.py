"""A web API as a flow's source (``source: {api: …}``): pages of JSON records read into the same
batches a table source yields, so transform, crosswalks, validation, quarantine and the ledger
are those of every flow.

The cursor keeps a table cursor's rules (etl.core.watermark): the run's ceiling is the newest
record the API reports when the run starts (``incremental.newest``), an incremental run asks
only for records at or after the watermark minus the lookback (``incremental.params``/``body``
with ``{lower}``), and every record is checked against the window on arrival, so a record
changed while the run pages is left for the next run instead of moving the watermark past
what was read.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from email.utils import parsedate_to_datetime
from typing import Any, BinaryIO
from urllib.parse import quote, urlsplit

import pandas as pd
from sqlalchemy import BigInteger as BigIntegerType
from sqlalchemy import Boolean, Column, Connection, Date, DateTime, MetaData, Numeric, Table, Text

from etl.config.api import ApiSource as ApiSourceSpec
from etl.config.api import CursorFormat, FieldType, Paging
from etl.config.flows import Flow
from etl.core import watermark as wm
from etl.core.rows import frame_from_rows
from etl.core.watermark import CursorValue, Window
from etl.dialects.base import copy_text
from etl.sync.http_api import ApiClient, ApiError, api_connection, fill, records_at, select_path
from etl.sync.ledger import RunRecord

_ODATA_DATE = re.compile(r"^/Date\((-?\d+)([+-]\d{4})?\)/$")


def parse_value(value: Any, kind: FieldType, fmt: CursorFormat) -> Any:
    """A JSON value as the Python value its declared type holds; raises ValueError."""
    if value is None or value == "" and kind != "string":
        return None
    if kind == "string":
        return value if isinstance(value, str) else str(value)
    if kind == "integer":
        if isinstance(value, bool):
            raise ValueError(f"{value!r} is not an integer")
        return int(value)
    if kind == "decimal":
        try:
            return Decimal(str(value))
        except InvalidOperation:
            raise ValueError(f"{value!r} is not a number") from None
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if value in (0, 1):
            return bool(value)
        raise ValueError(f"{value!r} is not a boolean")
    stamp = parse_timestamp(value, fmt)
    return stamp.date() if kind == "date" and isinstance(stamp, datetime) else stamp


def parse_timestamp(value: Any, fmt: CursorFormat) -> datetime | date:
    if fmt == "epoch_ms" or isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
        return datetime(1970, 1, 1) + timedelta(milliseconds=int(value))
    text = str(value)
    match = _ODATA_DATE.match(text)
    if match:
        # OData V2 JSON: milliseconds since the epoch in UTC (an offset only says the zone it came from).
        return datetime(1970, 1, 1) + timedelta(milliseconds=int(match.group(1)))
    if len(text) == 10:
        return date.fromisoformat(text)
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def format_cursor(value: CursorValue, fmt: CursorFormat) -> str:
    """A cursor value as the API's filter expects it."""
    if isinstance(value, datetime):
        if fmt == "frappe":
            return value.strftime("%Y-%m-%d %H:%M:%S.%f")
        if fmt == "odoo":
            # Odoo's domains take whole seconds: rounded down, the inclusive bound reads a little more, never less.
            return value.strftime("%Y-%m-%d %H:%M:%S")
        if fmt == "odata_v2":
            utc = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
            return utc.isoformat(timespec="milliseconds")
        if fmt == "epoch_ms":
            naive = value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value
            return str(int((naive - datetime(1970, 1, 1)).total_seconds() * 1000))
        return value.isoformat()
    return str(value)


def pages(
    client: ApiClient, method: str, path: str, params: dict[str, Any], body: dict[str, Any] | None,
    records: str, paging: Paging,
) -> Iterator[list[dict[str, Any]]]:
    """The records of each page, in the API's order, until the API has no more."""
    where = f"connection {client.conn.conn_id!r}: {method} {path}"
    offset, page, cursor = 0, paging.first_page, None
    url: str = path
    first = True
    base_host = urlsplit(client.conn.base_url).netloc
    while True:
        query = dict(params) if first or paging.kind != "next_link" else {}
        sent = copy.deepcopy(body) if body is not None else None
        into = sent if (paging.in_body and sent is not None) else query
        if paging.kind == "offset":
            into[paging.offset_param] = offset
            into[paging.limit_param] = paging.size
        elif paging.kind == "page":
            into[paging.page_param] = page
            into[paging.limit_param] = paging.size
        elif paging.kind == "cursor" and cursor is not None:
            into[paging.cursor_param] = cursor
        response = client.request(method, url, params=query or None, json_body=sent)
        document = client.json(response, where)
        found = records_at(document, records, where)
        yield found
        first = False
        if paging.kind == "none":
            return
        if paging.kind in ("offset", "page"):
            if len(found) < paging.size:
                return
            offset += len(found)
            page += 1
        elif paging.kind == "cursor":
            cursor = select_path(document, paging.cursor_path)
            if not cursor or not found:
                return
        else:
            link = select_path(document, paging.next_path)
            if not link:
                return
            link = str(link)
            host = urlsplit(link).netloc
            if host and host != base_host:
                # The credentials go with every request: never to a host the connection does not name.
                raise ApiError(f"{where}: the next page's link points at another host ({host}); not followed")
            url = link


class ApiSource:
    """One run's reader of an API source (the ``Source`` protocol of etl.sync.extract)."""

    copies_binary = False
    dialect_name = "api"

    def __init__(self, client: ApiClient, flow: Flow, spec: ApiSourceSpec, table: Table, plants: list[str] | None):
        self.client = client
        self.flow = flow
        self.spec = spec
        self.table = table
        self.plants = plants
        self.cursor = flow.cursor.column if flow.cursor is not None else None
        self.types: dict[str, FieldType] = {c.name: _field_type(c) for c in table.columns}

    def _parsed(self, record: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for name, kind in self.types.items():
            value = record.get(name)
            if kind == "string" and (value is None or type(value) is str):
                out[name] = value  # most fields: text as the API sent it
                continue
            try:
                out[name] = parse_value(record.get(name), kind, self.spec.timestamps)
            except (ValueError, TypeError) as exc:
                # A value the declared type cannot hold reaches the transform as text, which then
                # quarantines the row with its reason instead of losing it.
                out[name] = None if record.get(name) is None else str(record.get(name))
                if name == self.cursor:
                    raise ApiError(f"flow {self.flow.flow!r}: cursor field {name} = {record.get(name)!r}: {exc}") from None
        return out

    def _kept(self, record: dict[str, Any]) -> bool:
        source = self.flow.source
        for name, allowed in source.where.items():
            values = allowed if isinstance(allowed, list) else [allowed]
            if record.get(name) not in values:
                return False
        for name, excluded in source.where_not.items():
            values = excluded if isinstance(excluded, list) else [excluded]
            if record.get(name) is not None and record.get(name) in values:
                return False
        if self.plants and source.plant_column:
            return record.get(source.plant_column) in self.plants
        return True

    def _request(self, window: Window | None, extra: dict[str, Any] | None = None) -> tuple[dict[str, Any], dict[str, Any] | None]:
        params = dict(self.spec.params)
        body = copy.deepcopy(self.spec.body)
        inc = self.spec.incremental
        if inc is not None and window is not None and window.lower is not None:
            values = {"lower": format_cursor(window.lower, inc.format)}
            params.update(fill(inc.params, values, {}))
            if inc.body:
                body = {**(body or {}), **fill(inc.body, values, {})}
        if extra:
            if self.spec.method == "POST" and body is not None:
                body.update(extra)
            else:
                params.update(extra)
        return params, body

    def records(self, window: Window | None, paging: Paging | None = None, extra: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
        """The source's records in ``window`` (every record for None), parsed, filtered, and
        with their lines when the API nests them."""
        params, body = self._request(window, extra)
        for page in pages(self.client, self.spec.method, self.spec.path, params, body, self.spec.records, paging or self.spec.paging):
            for raw in page:
                if not self._kept(raw):
                    continue
                if self.spec.children is None:
                    record = self._parsed(raw)
                    if wm.in_window(record.get(self.cursor) if self.cursor else None, window):
                        yield record
                    continue
                parent_cursor = self._parsed(raw).get(self.cursor) if self.cursor and self.cursor in raw else None
                if self.cursor and self.cursor in raw and not wm.in_window(parent_cursor, window):
                    continue
                yield from self._children(raw)

    def _children(self, parent: dict[str, Any]) -> Iterator[dict[str, Any]]:
        spec = self.spec.children
        assert spec is not None
        path = fill(spec.path, {k: quote(str(v), safe="") for k, v in parent.items() if not isinstance(v, (dict, list))}, {})
        response = self.client.request("GET", path)
        where = f"connection {self.client.conn.conn_id!r}: GET {path}"
        for line in records_at(self.client.json(response, where), spec.records, where):
            merged = {**line, **{column: parent.get(field) for column, field in spec.carry.items()}}
            yield self._parsed(merged)

    def ceiling(self, limit: CursorValue | None = None) -> CursorValue | None:
        """The newest record's cursor now (not past ``limit``)."""
        if self.cursor is None:
            return None
        inc = self.spec.incremental
        if inc is None:
            newest = self._scan_max(None)
        else:
            newest = None
            for record in self._newest(inc.newest):
                value = record.get(self.cursor)
                if value is not None and (newest is None or wm.is_after(value, newest)):
                    newest = value
        if limit is not None and newest is not None and wm.is_after(newest, limit):
            return self._scan_max(limit)
        return newest

    def _newest(self, extra: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params, body = self._request(None, extra)
        one = Paging(kind="none")
        for page in pages(self.client, self.spec.method, self.spec.path, params, body, self.spec.records, one):
            for raw in page:
                if self._kept(raw):
                    yield self._parsed(raw)

    def _scan_max(self, limit: CursorValue | None) -> CursorValue | None:
        best: CursorValue | None = None
        for record in self.records(None):
            value = record.get(self.cursor) if self.cursor else None
            if value is None or (limit is not None and wm.is_after(value, limit)):
                continue
            if best is None or wm.is_after(value, best):
                best = value
        return best

    def clock(self) -> datetime:
        """The API server's own time: the ``Date`` header of its latest answer (UTC, to the
        second), asked for with the ``newest`` request when nothing was asked yet."""
        if self.client.last_date is None and self.spec.incremental is not None:
            list(self._newest(self.spec.incremental.newest))
        header = self.client.last_date
        if header:
            return parsedate_to_datetime(header).astimezone(UTC)
        return datetime.now(UTC)

    def beyond(self, limit: CursorValue, sample: int) -> tuple[int, list[str]]:
        assert self.cursor is not None
        keys = self.flow.source_key_columns()
        found = [r for r in self.records(None) if r.get(self.cursor) is not None and wm.is_after(r[self.cursor], limit)]
        described = [", ".join(f"{k}={r.get(k)}" for k in keys) + f" ({self.cursor} {r[self.cursor]})" for r in found[:sample]]
        return len(found), described

    def _frames(self, records: Iterator[dict[str, Any]], columns: list[str], chunk_size: int) -> Iterator[pd.DataFrame]:
        rows: list[list[Any]] = []
        for record in records:
            rows.append([record.get(c) for c in columns])
            if len(rows) >= chunk_size:
                yield frame_from_rows(rows, columns)
                rows = []
        if rows:
            yield frame_from_rows(rows, columns)

    def chunks(self, window: Window | None, chunk_size: int) -> Iterator[pd.DataFrame]:
        if wm.empty_window(window):
            return
        yield from self._frames(self.records(window), self.flow.source_columns(), chunk_size)

    def copy_out(self, window: Window | None, out: BinaryIO, binary: bool) -> None:
        """The window's records as numbered COPY text, for the SQL path."""
        if binary:
            raise ValueError("an API source writes COPY text only")
        if wm.empty_window(window):
            return
        columns = self.flow.source_columns()
        lines: list[str] = []
        for n, record in enumerate(self.records(window), start=1):
            lines.append("\t".join([copy_text(record.get(c)) for c in columns]) + f"\t{n}\n")
            if len(lines) >= 5000:
                out.write("".join(lines).encode())
                lines = []
        out.write("".join(lines).encode())

    def rows_with_keys(self, columns: list[str], keys: list[tuple[Any, ...]], chunk_size: int) -> Iterator[pd.DataFrame]:
        wanted = set(keys)
        chosen = (r for r in self.records(None) if tuple(r.get(c) for c in columns) in wanted)
        yield from self._frames(chosen, self.flow.source_columns(), chunk_size)

    def keys(self, chunk_size: int) -> Iterator[pd.DataFrame]:
        columns = sorted({c for spec in self.flow.columns if spec.target in self.flow.key for c in spec.source_columns()})
        yield from self._frames(self.records(None), columns, chunk_size)


def _field_type(column: Column[Any]) -> FieldType:
    kind = column.type
    if isinstance(kind, DateTime):
        return "timestamp"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, Boolean):
        return "boolean"
    if isinstance(kind, BigIntegerType):
        return "integer"
    if isinstance(kind, Numeric):
        return "decimal"
    return "string"


_SQL_TYPES: dict[FieldType, Callable[[], Any]] = {
    "string": Text, "integer": BigIntegerType, "decimal": Numeric, "boolean": Boolean,
    "timestamp": DateTime, "date": Date,
}


def describe(flow: Flow, spec: ApiSourceSpec) -> Table:
    """The API's records as a table the schema check and the SQL path read: every field the
    flow reads or filters on, typed as ``spec.types`` declares (the cursor a timestamp)."""
    names = set(flow.source_columns()) | set(flow.source.where) | set(flow.source.where_not)
    if flow.source.plant_column:
        names.add(flow.source.plant_column)
    types = dict(spec.types)
    if flow.cursor is not None:
        types.setdefault(flow.cursor.column, "timestamp")
    return Table(
        spec.path.strip("/").replace("/", "_") or "api", MetaData(),
        *[Column(n, _SQL_TYPES[types.get(n, "string")](), nullable=n != (flow.cursor.column if flow.cursor else None))
          for n in sorted(names)],
    )


class OpenedApi:
    """An API source for one run: an HTTP client on the flow's connection, closed after the run."""

    def __init__(self, flow: Flow, spec: ApiSourceSpec, transport: Any = None) -> None:
        self.flow = flow
        self.spec = spec
        self.transport = transport
        self.client: ApiClient | None = None

    @property
    def connection(self) -> Connection | None:
        return None

    def open(self) -> None:
        self.client = ApiClient(api_connection(self.spec.connection), self.transport)

    @property
    def warnings(self) -> list[str]:
        return []

    def describe(self, tconn: Connection) -> Table:
        return describe(self.flow, self.spec)

    def reader(self, table: Table, plants: list[str] | None) -> ApiSource:
        if self.client is None:
            raise RuntimeError("the source is not open")
        return ApiSource(self.client, self.flow, self.spec, table, plants)

    def record(self, tconn: Connection, run: RunRecord, now: datetime) -> None:
        """An API source's records are found again by the watermark: nothing else to record."""

    def after_commit(self, enter: Callable[[str], None]) -> None:
        """Nothing to finish: the API was only read."""

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None
