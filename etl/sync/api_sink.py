"""A web API as a flow's target (``target: {api: …}``): each checked record is posted once.

The flow's ``target.table`` is the posted-record table on the pipeline's database: the last
values posted per key. A run stages and checks its batch like any flow; before the merge, the
records that differ from what was posted are sent to the API one by one, those the API refuses
wait in quarantine with the HTTP status and the API's own words, and the merge then writes what
was posted, with ``etl_api_posting`` (the remote id and how each record got there), in the run's
transaction. So the posted-record table never claims a posting that did not happen.

What a rerun promises depends on what the API offers (``ApiTarget.guarantee``):
- **exactly once** with ``lookup`` (the record is looked up by its posting key first: a posting
  whose commit was lost is found and recorded, not sent again) or ``idempotency_header`` (the
  server recognises the repeat);
- **at least once, detected** otherwise: an intent row is committed before each send, so a
  posting whose outcome the pipeline lost waits in quarantine ("may have been posted") instead
  of being sent a second time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, Table, and_, delete, func, or_, select

from etl.config.api import ApiTarget
from etl.config.flows import Flow
from etl.core.reasons import API_MAYBE_POSTED, API_NO_UPDATE, API_REFUSED
from etl.core.rows import SEQ, SOURCE_KEY, Reject
from etl.sync.http_api import NOT_PROCESSED, ApiClient, ApiError, fill, plain, records_at, select_path
from etl.sync.pipeline_tables import api_posting

_CHUNK = 500

CREATED, UPDATED, FOUND, SENDING = "created", "updated", "found", "sending"
#: Answers about the API or the connection rather than the record: the run fails (and is
#: retried) instead of quarantining every record. Other refusals wait in quarantine.
RUN_FAILS = frozenset({401, 403, 407, 408, 429, 502, 503, 504})


@dataclass
class Posted:
    """What became of one record: ``how`` is created, updated or found (posted before)."""

    how: str
    remote_id: str | None


def posting_key(flow: Flow, row: dict[str, Any]) -> str:
    """The record's posting key: its natural key values joined with ``/``."""
    return "/".join(str(row[k]) for k in flow.key)


def _url_values(values: dict[str, Any]) -> dict[str, Any]:
    from urllib.parse import quote

    return {k: quote(str(plain(v)), safe="") for k, v in values.items()}


class ApiSink:
    """Posts one flow's records through one client, as ``spec`` says."""

    def __init__(self, client: ApiClient, flow: Flow, spec: ApiTarget, columns: list[str]):
        self.client = client
        self.flow = flow
        self.spec = spec
        self.columns = columns

    def _value(self, value: Any) -> Any:
        if isinstance(value, Decimal):
            if self.spec.decimals == "text":
                return str(value)
            return int(value) if value == value.to_integral_value() else float(value)
        return plain(value)

    def _record(self, row: dict[str, Any], key: str) -> dict[str, Any]:
        record = {c: self._value(row[c]) for c in self.columns}
        if self.spec.key_field:
            record[self.spec.key_field] = key
        return record

    def _body(self, template: Any, row: dict[str, Any], key: str, remote_id: str | None = None) -> Any:
        record = self._record(row, key)
        if template is None:
            return record
        values = {k: self._value(v) for k, v in row.items()}
        return fill(template, {**values, "key": key, "id": remote_id}, record)

    def lookup(self, row: dict[str, Any], key: str) -> str | None:
        """The remote id of the record posted before with this key, or None."""
        spec = self.spec.lookup
        if spec is None:
            return None
        values = {**row, "key": key}
        path = fill(spec.path, _url_values(values), {})
        response = self.client.request(
            spec.method, path, params=fill(spec.params, values, {}) or None,
            json_body=fill(spec.body, values, {}) if spec.body is not None else None, ok=(404,),
        )
        if response.status_code == 404:
            return None
        found = records_at(self.client.json(response, f"lookup {path}"), spec.records, f"lookup {path}")
        if not found:
            return None
        remote = found[0].get(spec.id)
        return None if remote is None else str(remote)

    def _headers(self) -> dict[str, str]:
        if self.spec.csrf is None:
            return {}
        return {"X-CSRF-Token": self.client.csrf_token(self.spec.csrf)}

    def _send(self, method: str, path: str, body: Any, key: str, ok: tuple[int, ...] = ()) -> Any:
        try:
            return self.client.request(
                method, path, json_body=body, headers=self._headers(),
                idempotency_key=f"{self.flow.flow}/{key}" if self.spec.idempotency_header else None, ok=ok,
            )
        except ApiError as exc:
            if exc.status == 403 and self.spec.csrf is not None:
                # SAP Gateway's token expired with its session: fetch a new one, once.
                self.client.forget_csrf()
                return self.client.request(method, path, json_body=body, headers=self._headers(), ok=ok)
            raise

    def create(self, row: dict[str, Any], key: str) -> Posted:
        path = fill(self.spec.path, _url_values({**row, "key": key}), {})
        response = self._send(self.spec.method, path, self._body(self.spec.body, row, key), key,
                              ok=tuple(self.spec.exists_statuses))
        if response.status_code in self.spec.exists_statuses:
            return Posted(FOUND, self.lookup(row, key) if self.spec.lookup else None)
        remote = select_path(self.client.json(response, f"create {path}"), self.spec.created_id) if self.spec.created_id else None
        if isinstance(remote, list):
            remote = remote[0] if remote else None
        return Posted(CREATED, None if remote is None else str(remote))

    def update(self, row: dict[str, Any], key: str, remote_id: str) -> Posted:
        assert self.spec.update_path is not None and self.spec.update_method is not None
        values = {**row, "key": key, "id": remote_id}
        path = fill(self.spec.update_path, _url_values(values), {})
        self._send(self.spec.update_method, path, self._body(self.spec.update_body or self.spec.body, row, key, remote_id), key)
        return Posted(UPDATED, remote_id)


@dataclass
class PostOutcome:
    posted: int = 0
    found: int = 0
    refused: int = 0


def differing(conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str]) -> Any:
    """Staged rows the posted-record table does not hold as they are, in staging order."""
    on = and_(*[target.c[k] == staging.c[k] for k in key])
    differs = or_(target.c[key[0]].is_(None), *[target.c[c].is_distinct_from(staging.c[c]) for c in columns if c not in key])
    return (
        select(*[staging.c[c] for c in columns], staging.c[SEQ], staging.c[SOURCE_KEY], target.c[key[0]].label("_posted_before"))
        .select_from(staging.outerjoin(target, on)).where(differs).order_by(staging.c[SEQ])
    )


def _rows(conn: Connection, stmt: Any) -> Iterator[list[dict[str, Any]]]:
    result = conn.execute(stmt)
    while True:
        part = result.mappings().fetchmany(_CHUNK)
        if not part:
            return
        yield [dict(r) for r in part]


def post_batch(
    ctx_conn: Connection, flow: Flow, sink: ApiSink, staging: Table, target: Table, run_id: str, now: datetime,
) -> tuple[PostOutcome, list[Reject]]:
    """Post every staged record the API does not have as it is; remove the refused ones from
    staging and return them as rejects; record each posting in ``etl_api_posting``. All writes
    are on ``ctx_conn`` (the run's transaction) except the intent rows of an API with no lookup,
    which commit on their own first."""
    outcome = PostOutcome()
    rejects: list[Reject] = []
    refused_seqs: list[int] = []
    columns = sink.columns
    pending = _pending_intents(ctx_conn, flow) if sink.spec.guarantee != "exactly once" else {}
    rows = list(_chunks_of(_rows(ctx_conn, differing(ctx_conn, staging, target, list(flow.key), columns))))
    for row in rows:
        key = posting_key(flow, row)
        payload = {c: plain(row[c]) for c in columns}
        try:
            posted = _post_one(ctx_conn, flow, sink, row, key, pending, run_id, now)
        except ApiError as exc:
            if exc.status in NOT_PROCESSED:
                # The API said it did nothing: no intent to keep, on its own connection since the run fails.
                _drop_intent(ctx_conn, flow, key, own=True)
            if exc.status is None or exc.status in RUN_FAILS:
                raise  # the API as a whole is unwell or refuses us: the run fails, to be retried
            _drop_intent(ctx_conn, flow, key)
            reason = API_REFUSED.text(status=exc.status, text=exc.text or str(exc))
            rejects.append(Reject(str(row[SOURCE_KEY]), payload, reason))
            refused_seqs.append(int(row[SEQ]))
            continue
        except _Refused as refusal:
            rejects.append(Reject(str(row[SOURCE_KEY]), payload, refusal.reason))
            refused_seqs.append(int(row[SEQ]))
            continue
        if posted.how == FOUND:
            outcome.found += 1
        else:
            outcome.posted += 1
        _record_posting(ctx_conn, flow, key, posted, payload, run_id, now)
    outcome.refused = len(rejects)
    for start in range(0, len(refused_seqs), _CHUNK):
        ctx_conn.execute(delete(staging).where(staging.c[SEQ].in_(refused_seqs[start:start + _CHUNK])))
    return outcome, rejects


def _chunks_of(parts: Iterator[list[dict[str, Any]]]) -> Iterator[dict[str, Any]]:
    for part in parts:
        yield from part


class _Refused(Exception):
    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _post_one(
    conn: Connection, flow: Flow, sink: ApiSink, row: dict[str, Any], key: str,
    pending: dict[str, str], run_id: str, now: datetime,
) -> Posted:
    spec = sink.spec
    if key in pending:
        raise _Refused(API_MAYBE_POSTED.text(run_id=pending[key]))
    remote = sink.lookup(row, key) if spec.lookup is not None else None
    if remote is None:
        if row["_posted_before"] is not None and spec.update_path is None and spec.lookup is None:
            raise _Refused(API_NO_UPDATE.text())
        if spec.guarantee != "exactly once":
            _write_intent(conn, flow, key, run_id, now)
        return sink.create(row, key)
    if row["_posted_before"] is None and _recorded(conn, flow, key) is None:
        # Posted by a run whose commit was lost (or by hand): the API has it, record it as it is.
        return Posted(FOUND, remote)
    if spec.update_path is None:
        raise _Refused(API_NO_UPDATE.text())
    return sink.update(row, key, remote)


def _recorded(conn: Connection, flow: Flow, key: str) -> str | None:
    p = api_posting.c
    found: str | None = conn.execute(
        select(p.how).where(p.flow == flow.flow, p.posting_key == key)
    ).scalar_one_or_none()
    return found


def _record_posting(conn: Connection, flow: Flow, key: str, posted: Posted, payload: dict[str, Any], run_id: str, now: datetime) -> None:
    p = api_posting.c
    conn.execute(delete(api_posting).where(p.flow == flow.flow, p.posting_key == key))
    text = json.dumps(payload, sort_keys=True, default=str)
    conn.execute(api_posting.insert().values(
        flow=flow.flow, posting_key=key, remote_id=posted.remote_id, how=posted.how,
        payload_hash=hashlib.sha256(text.encode()).hexdigest(), run_id=run_id, posted_at=now,
    ))


def _write_intent(conn: Connection, flow: Flow, key: str, run_id: str, now: datetime) -> None:
    """Commit "about to send" on a connection of its own: if the run dies after the send, the
    next run finds it and holds the record back instead of sending it twice."""
    with conn.engine.begin() as own:
        p = api_posting.c
        own.execute(delete(api_posting).where(p.flow == flow.flow, p.posting_key == key, p.how == SENDING))
        own.execute(api_posting.insert().values(
            flow=flow.flow, posting_key=key, remote_id=None, how=SENDING, payload_hash="", run_id=run_id, posted_at=now,
        ))


def _pending_intents(conn: Connection, flow: Flow) -> dict[str, str]:
    """Posting keys whose send a run began and never recorded, with that run's id."""
    p = api_posting.c
    rows = conn.execute(select(p.posting_key, p.run_id).where(p.flow == flow.flow, p.how == SENDING)).all()
    return {k: r for k, r in rows}


def _drop_intent(conn: Connection, flow: Flow, key: str, own: bool = False) -> None:
    p = api_posting.c
    stmt = delete(api_posting).where(p.flow == flow.flow, p.posting_key == key, p.how == SENDING)
    if own:
        with conn.engine.begin() as alone:
            alone.execute(stmt)
    else:
        conn.execute(stmt)


def count_postings(conn: Connection, flow: str) -> int:
    p = api_posting.c
    return int(conn.execute(select(func.count()).select_from(api_posting).where(p.flow == flow, p.how != SENDING)).scalar_one())
