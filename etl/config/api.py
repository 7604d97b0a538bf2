"""The ``api`` blocks of a flow: a web API read as a source (``source: {api: …}``) or written as
a target (``target: {api: …}``). Paths, parameters and JSON paths only: the base URL and every
credential come from the named HTTP connection (see etl.sync.http_api)."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_CONNECTION_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_ ]*)\}")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _connection(value: str) -> str:
    if not _CONNECTION_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a connection id (lower case, digits, underscore)")
    return value


def _path(value: str) -> str:
    if not value.startswith("/") or "://" in value:
        raise ValueError(f"{value!r}: a path on the connection's base URL starts with '/' (no host: the connection has it)")
    return value


def placeholders(text: str) -> list[str]:
    """The ``{field}`` names in a path or parameter template."""
    return _PLACEHOLDER.findall(text)


class Paging(_Model):
    """How the API pages its list. ``offset``: ``offset_param``/``limit_param`` (ERPNext
    ``limit_start``/``limit_page_length``); ``page``: a page number from ``first_page``;
    ``cursor``: the next page's cursor at ``cursor_path`` in the answer, sent as
    ``cursor_param``; ``next_link``: the next page's URL at ``next_path`` (OData V2
    ``d.__next`` with its ``$skiptoken``, V4 ``@odata.nextLink``); ``none``: one answer.
    ``in_body``: the paging values go in the JSON body (Odoo JSON-2 ``offset``/``limit``)."""

    kind: Literal["none", "offset", "page", "cursor", "next_link"] = "none"
    size: int = Field(default=100, ge=1, le=100_000)
    offset_param: str = "offset"
    limit_param: str = "limit"
    page_param: str = "page"
    first_page: int = 1
    cursor_param: str = "cursor"
    cursor_path: str = ""
    next_path: str = ""
    in_body: bool = False

    @model_validator(mode="after")
    def _paths(self) -> Paging:
        if self.kind == "cursor" and not self.cursor_path:
            raise ValueError("kind cursor needs cursor_path, where the answer gives the next cursor")
        if self.kind == "next_link" and not self.next_path:
            raise ValueError("kind next_link needs next_path, where the answer gives the next page's URL")
        return self


CursorFormat = Literal["iso", "frappe", "odoo", "odata_v2", "epoch_ms"]
FieldType = Literal["string", "integer", "decimal", "boolean", "timestamp", "date"]


class Incremental(_Model):
    """Ask only for records at or after the window's lower bound: ``{lower}`` in ``params`` or
    ``body`` is replaced by it (formatted as ``format``) when the run is incremental, and the
    whole block is left out when it reads everything. Records past the ceiling are dropped on
    arrival, so the window's rules are those of a table cursor. ``newest`` are the parameters
    (or body keys) that ask for the newest record first, one record: the run's ceiling."""

    params: dict[str, Any] = Field(default_factory=dict)
    body: dict[str, Any] = Field(default_factory=dict)
    format: CursorFormat = "iso"
    newest: dict[str, Any] = Field(min_length=1)


class Children(_Model):
    """Lines fetched per parent record: ``path`` with the parent's ``{field}`` values, the
    lines at ``records`` in each answer, and parent fields copied onto each line (``carry``:
    line column -> parent field)."""

    path: str
    records: str = ""
    carry: dict[str, str] = Field(default_factory=dict)

    _check_path = field_validator("path")(classmethod(lambda cls, v: _path(v)))


class ApiSource(_Model):
    """A list endpoint read page by page. ``records`` is the JSON path of the records in each
    answer (``data``, ``d.results``; empty: the answer itself)."""

    connection: str
    path: str
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, Any] = Field(default_factory=dict)
    body: dict[str, Any] | None = None
    records: str = ""
    paging: Paging = Paging()
    incremental: Incremental | None = None
    children: Children | None = None
    #: How the API writes timestamps (the cursor's too): ``frappe`` (``2026-11-20 08:00:00.000000``),
    #: ``odoo`` (``2026-11-20 08:00:00``, naive UTC), ``iso``, ``odata_v2`` (``/Date(1700000000000)/``, read as naive UTC), ``epoch_ms``.
    timestamps: CursorFormat = "iso"
    #: The type of each record field the flow reads, parsed on arrival (JSON has no timestamps
    #: or decimals); unnamed fields are text, the cursor's field a timestamp.
    types: dict[str, FieldType] = Field(default_factory=dict)

    _check_connection = field_validator("connection")(classmethod(lambda cls, v: _connection(v)))
    _check_path = field_validator("path")(classmethod(lambda cls, v: _path(v)))


class Lookup(_Model):
    """How the API finds a record posted before by its posting key: ``path`` and ``params``
    with ``{key}`` (the posting key) and ``{field}`` values; found when the answer holds a
    record at ``records``. ``id`` is the field of the remote record's own id."""

    path: str
    method: Literal["GET", "POST"] = "GET"
    params: dict[str, Any] = Field(default_factory=dict)
    body: dict[str, Any] | None = None
    records: str = ""
    id: str = "name"

    _check_path = field_validator("path")(classmethod(lambda cls, v: _path(v)))


class ApiTarget(_Model):
    """Each checked record posted to ``path`` (``{field}`` placeholders take its values):
    ``create`` (POST) when the API has no record with its posting key, ``update`` (PUT or PATCH
    on ``update_path``) when it has one that differs. The posting key is the flow's key joined
    with ``/``: sent as ``Idempotency-Key`` when ``idempotency_header`` is set, written into
    ``key_field`` of the body, and looked up first with ``lookup``.

    ``body``: the JSON body's shape, ``"{column}"`` for one of the record's values, ``"{record}"``
    for the whole record, ``"{key}"`` for the posting key (default: the record's columns as they
    are). ``csrf``: SAP Gateway: fetch the CSRF token from this path
    first. ``created_id``: the JSON path of the new record's id in a create's answer."""

    connection: str
    path: str
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    update_path: str | None = None
    update_method: Literal["POST", "PUT", "PATCH"] | None = None
    body: Any = None
    #: The update's body when it differs from the create's (Odoo ``write``: ``{ids: ["{id}"], vals: "{record}"}``).
    update_body: Any = None
    key_field: str | None = None
    idempotency_header: bool = False
    lookup: Lookup | None = None
    csrf: str | None = None
    created_id: str = ""
    #: How decimals travel: JSON numbers, or text (OData V2 writes Edm.Decimal as a string).
    decimals: Literal["number", "text"] = "number"
    #: Statuses a create may answer that mean "a record with this key exists already" (Frappe's
    #: DuplicateEntryError is a 409): recorded as posted before, never sent again.
    exists_statuses: list[int] = Field(default_factory=lambda: [409])

    _check_connection = field_validator("connection")(classmethod(lambda cls, v: _connection(v)))
    _check_path = field_validator("path")(classmethod(lambda cls, v: _path(v)))

    @model_validator(mode="after")
    def _guarantee(self) -> ApiTarget:
        if (self.update_path is None) != (self.update_method is None):
            raise ValueError("update_path and update_method go together")
        if self.update_path is not None and self.lookup is None:
            raise ValueError("update_path needs lookup: an update is sent to a record the lookup found")
        if self.update_path is not None:
            _path(self.update_path)
        return self

    @property
    def guarantee(self) -> str:
        """What the API lets a rerun promise: ``exactly once`` when the key is looked up first or
        the server honours an idempotency key, else ``at least once, detected``."""
        return "exactly once" if (self.lookup is not None or self.idempotency_header) else "at least once, detected"
