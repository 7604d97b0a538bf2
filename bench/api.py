"""Benchmark: records paged from a local web API into PostgreSQL, against COPY, in one run.

    python bench/api.py [--records 100000] [--page 1000]

A local server in its own process answers an ERPNext-shaped list endpoint (token auth,
``limit_start`` / ``limit_page_length``, ``{"data": [...]}``, timestamps as Frappe writes them,
decimals as JSON numbers) from records it builds in memory. Three timings, each on the same
records:

  copy     the limit: the same rows as COPY text into an indexed PostgreSQL table
  http     the API alone: every page requested, its JSON parsed and each record's fields typed
           by the api source's own code (no database)
  engine   a full run of an ``api`` source flow into PostgreSQL: paging, typing, transform,
           staging, merge, watermark and ledger

It prints records per second for each, the engine against the COPY limit, and the share of the
engine run spent on the HTTP side (http / engine) against the rest of the engine. The loaded
table is checked against the records served: the differing rows must be 0.
"""

from __future__ import annotations

import argparse
import io
import json
import multiprocessing
import os
import secrets
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import create_engine, text

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

ADMIN_URL = os.environ.get("ETL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
# The local server's credentials: made afresh each run, known only to this process.
KEY, SECRET = secrets.token_hex(8), secrets.token_hex(16)
START = datetime(2026, 11, 1, 6, 0)


def record(n: int) -> dict[str, Any]:
    return {
        "name": f"MFG-WO-{n:07d}", "production_item": f"FG-{n % 500:04d}", "item_name": f"Item {n % 500} 螺栓",
        "qty": round((n % 997) * 1.25, 3), "stock_uom": "Units",
        "modified": (START + timedelta(seconds=n)).strftime("%Y-%m-%d %H:%M:%S.%f"), "status": "Not Started",
    }


def serve(port_out: Any, records: int) -> None:
    """Serve the list endpoint until killed; puts the port it listens on into ``port_out``."""
    rows = [record(n) for n in range(records)]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            query = {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}
            if self.headers.get("Authorization") != f"token {KEY}:{SECRET}":
                status, body = 401, b'{"exc_type": "AuthenticationError"}'
            else:
                start, size = int(query.get("limit_start", 0)), int(query.get("limit_page_length", 20))
                if query.get("order_by") == "modified desc":
                    page = rows[-1:]
                else:
                    page = rows[start:start + size]
                status, body = 200, json.dumps({"data": page}, ensure_ascii=False).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Date", formatdate(usegmt=True))
            self.end_headers()
            self.wfile.write(body)

        do_HEAD = do_GET

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port_out.put(httpd.server_address[1])
    httpd.serve_forever()


FLOW = """
flow: bench_api
direction: erp_to_mes
source:
  api:
    connection: bench_api
    path: /api/resource/Work Order
    params: {{order_by: modified asc}}
    records: data
    paging: {{kind: offset, offset_param: limit_start, limit_param: limit_page_length, size: {page}}}
    incremental:
      params: {{filters: [[modified, ">=", "{{lower}}"]]}}
      format: frappe
      newest: {{order_by: modified desc, limit_page_length: 1}}
    timestamps: frappe
    types: {{qty: decimal}}
target: {{connection: bench_pg, table: bench_api_order}}
key: [name]
cursor: {{column: modified, lookback: 10m}}
columns:
  - {{target: name, source: name}}
  - {{target: item, source: production_item}}
  - {{target: item_name, source: item_name}}
  - {{target: qty, source: qty}}
  - {{target: unit, source: stock_uom}}
  - {{target: modified, source: modified}}
  - {{target: status, source: status}}
"""

TABLE = """CREATE TABLE bench_api_order (name varchar PRIMARY KEY, item varchar NOT NULL, item_name varchar,
qty numeric(18,3), unit varchar, modified timestamp, status varchar)"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--page", type=int, default=1000)
    args = parser.parse_args()

    from etl.config.api import Paging
    from etl.config.project import load_project
    from etl.sync.api_source import pages, parse_value
    from etl.sync.connections import Connections
    from etl.sync.http_api import ApiClient, api_connection
    from etl.sync.runner import run_flow

    # Forked, so the server shares this run's KEY and SECRET.
    fork = multiprocessing.get_context("fork")
    ports: Any = fork.Queue()
    server = fork.Process(target=serve, args=(ports, args.records), daemon=True)
    server.start()
    port = ports.get(timeout=120)
    os.environ["AIRFLOW_CONN_BENCH_API"] = json.dumps(
        {"conn_type": "http", "host": f"http://127.0.0.1:{port}", "login": KEY, "password": SECRET, "extra": {"auth": "token"}})
    name = f"etl_bench_api_{uuid.uuid4().hex[:8]}"
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    target_url = ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = create_engine(target_url)
        with engine.begin() as conn:
            conn.execute(text(TABLE))
            conn.execute(text(TABLE.replace("bench_api_order", "bench_copy_order")))

        # The limit: the same rows as COPY text into the same kind of table.
        lines = "".join(
            "\t".join([r["name"], r["production_item"], r["item_name"], str(r["qty"]), r["stock_uom"], r["modified"], r["status"]]) + "\n"
            for r in (record(n) for n in range(args.records))
        )
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            started = time.perf_counter()
            cursor.copy_expert("COPY bench_copy_order FROM STDIN", io.StringIO(lines))
            raw.commit()
            copy_s = time.perf_counter() - started
        finally:
            raw.close()

        # The API alone: every page, parsed and typed as the source does.
        paging = Paging(kind="offset", offset_param="limit_start", limit_param="limit_page_length", size=args.page)
        with ApiClient(api_connection("bench_api")) as client:
            started = time.perf_counter()
            count = 0
            for page in pages(client, "GET", "/api/resource/Work Order", {"order_by": "modified asc"}, None, "data", paging):
                for r in page:
                    parse_value(r["modified"], "timestamp", "frappe")
                    parse_value(r["qty"], "decimal", "frappe")
                    count += 1
            http_s = time.perf_counter() - started
        assert count == args.records, count

        with tempfile.TemporaryDirectory() as tmp:
            (Path(tmp) / "flows").mkdir()
            (Path(tmp) / "crosswalks").mkdir()
            (Path(tmp) / "flows" / "bench_api.yaml").write_text(FLOW.format(page=args.page), encoding="utf-8")
            project = load_project(tmp, Path(tmp) / "expectations")
            with Connections({"bench_pg": target_url}) as connections:
                started = time.perf_counter()
                result = run_flow(project, "bench_api", connections)
                engine_s = time.perf_counter() - started
        counts = result.record.counts
        with engine.connect() as conn:
            differing = conn.execute(text(
                "SELECT count(*) FROM (SELECT name, item, item_name, qty, unit, modified, status FROM bench_api_order "
                "EXCEPT SELECT name, item, item_name, qty, unit, modified, status FROM bench_copy_order) d"
            )).scalar_one()
        engine.dispose()
    finally:
        server.terminate()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    n = args.records
    print(f"web API into PostgreSQL: {n:,} records, pages of {args.page} ({-(-n // args.page)} requests), "
          f"transform path {result.record.options.get('transform')}")
    print(f"  {'path':<8} {'seconds':>8} {'records/s':>10} {'x COPY':>7}")
    for label, seconds in (("copy", copy_s), ("http", http_s), ("engine", engine_s)):
        print(f"  {label:<8} {seconds:8.2f} {n / seconds:10,.0f} {seconds / copy_s:7.1f}")
    print(f"  engine run: read {counts.rows_read:,}, loaded {counts.rows_loaded:,}, quarantined {counts.rows_quarantined}; "
          f"rows differing from the records served: {differing}")
    share = http_s / engine_s
    print(f"  share of the engine run on the HTTP side (paging, JSON, typing): {share:.0%}; the rest of the engine: {1 - share:.0%}")
    if differing or counts.rows_loaded != n:
        sys.exit("the loaded table differs from the records served")


if __name__ == "__main__":
    main()
