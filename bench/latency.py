"""Benchmark: shop-floor feedback latency, MES commit -> ERP row committed, per row.

    python bench/latency.py [--rows 200] [--gap 0.1,3.0] [--modes notify,mqtt,airflow] [--seed 7]

For each mode an MES writer commits ``--rows`` operation reports into PostgreSQL, one per
transaction, at random intervals (uniform within ``--gap`` seconds), and the confirmations
flow of bench/latency/mappings carries them into the ERP's interface table:

  notify   ``python -m etl watch confirmations_notify``, woken by the NOTIFY trigger of
           sql/events/notify_on_commit.sql
  mqtt     ``python -m etl watch confirmations_mqtt``, woken by the MQTT message the writer
           publishes after each commit (Mosquitto on 127.0.0.1:1883, QoS 1)
  airflow  Airflow 3 (api-server, scheduler, dag-processor, triggerer as processes, LocalExecutor,
           SQLite metadata): the confirmations_notify DAG scheduled on its asset, whose watcher
           (etl.airflow.triggers.FlowEventTrigger) hears the same NOTIFY

The limit, measured in the same run on the same commits: a plain relay woken by the same event
(LISTEN or the same MQTT topic) that copies the new rows with one SELECT and one INSERT into an
ERP table of its own, no checks, no ledger. An observer polls both ERP tables every 20 ms and
notes when each row first shows, so every figure is an upper bound by up to 20 ms. Each mode
must deliver every row exactly once (the target's key is its primary key; the ledger's loaded
counts must add up to the rows). Targets: p95 <= 1 s with etl watch, <= 5 s under Airflow.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
ADMIN_URL = os.environ.get("ETL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
TARGET_P95 = {"notify": 1.0, "mqtt": 1.0, "airflow": 5.0}
POLL = 0.02


def _databases(labels: list[str]) -> tuple[dict[str, URL], Callable[[], None]]:
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    stamp = f"{os.getpid()}_{int(time.time())}"
    urls = {}
    with admin.connect() as conn:
        for label in labels:
            name = f"ems_latency_{label}_{stamp}"
            conn.execute(text(f'CREATE DATABASE "{name}" TEMPLATE template0'))
            urls[label] = make_url(ADMIN_URL).set(database=name)

    def drop() -> None:
        with admin.connect() as conn:
            for url in urls.values():
                conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
        admin.dispose()

    return urls, drop


class Observer(threading.Thread):
    """Polls ERP tables; remembers when each posting key first showed."""

    def __init__(self, tables: dict[str, tuple[URL, str]]) -> None:
        super().__init__(daemon=True)
        self.engines = {name: (create_engine(url), table) for name, (url, table) in tables.items()}
        self.seen: dict[str, dict[str, float]] = {name: {} for name in tables}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, (engine, table) in self.engines.items():
                with engine.connect() as conn:
                    keys = conn.execute(text(f"SELECT posting_key FROM {table}")).scalars().all()
                now = time.time()
                for key in keys:
                    self.seen[name].setdefault(key, now)
            self.stop.wait(POLL)


class Relay(threading.Thread):
    """The limit: woken by the same event, copies new MES rows into its own ERP table."""

    def __init__(self, mes: URL, erp: URL, mode: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.mes, self.erp, self.mode, self.topic = create_engine(mes), create_engine(erp), mode, topic
        self.mes_url = mes
        self.stop = threading.Event()
        self.wake = threading.Event()
        with self.erp.begin() as conn:
            conn.execute(text("CREATE TABLE relay_confirmation (posting_key VARCHAR(40) PRIMARY KEY, order_no VARCHAR(20), "
                              "yield_qty NUMERIC(18,3), source_updated_at TIMESTAMPTZ)"))

    def run(self) -> None:
        if self.mode in ("notify", "airflow"):
            threading.Thread(target=self._listen, daemon=True).start()
        else:
            import paho.mqtt.client as mqtt

            client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"relay-{os.getpid()}")
            client.on_connect = lambda c, *_: c.subscribe(self.topic, 1)
            client.on_message = lambda *_: self.wake.set()
            client.connect("127.0.0.1", 1883)
            client.loop_start()
        while not self.stop.is_set():
            if not self.wake.wait(0.2):
                continue
            self.wake.clear()
            with self.erp.connect() as econn:
                last = econn.execute(text("SELECT coalesce(max(posting_key), '') FROM relay_confirmation")).scalar()
            with self.mes.connect() as mconn:
                rows = mconn.execute(text(
                    "SELECT 'MES-OPR-' || report_no, wo_no, good_qty, updated_at FROM operation_report "
                    "WHERE 'MES-OPR-' || report_no > :last"), {"last": last}).all()
            if rows:
                with self.erp.begin() as econn:
                    econn.execute(text("INSERT INTO relay_confirmation VALUES (:k, :o, :q, :u) ON CONFLICT DO NOTHING"),
                                  [{"k": r[0], "o": r[1], "q": r[2], "u": r[3]} for r in rows])

    def _listen(self) -> None:
        import select

        import psycopg2

        args = self.mes_url.translate_connect_args(username="user", database="dbname")
        conn = psycopg2.connect(**args)
        conn.autocommit = True
        conn.cursor().execute('LISTEN "operation_report_changed"')
        while not self.stop.is_set():
            if select.select([conn], [], [], 0.2)[0]:
                conn.poll()
                if conn.notifies:
                    conn.notifies.clear()
                    self.wake.set()


def _breakdown(ledger: list[dict[str, Any]]) -> str:
    """Where the time goes, from the ledger: event received -> run started, and the run itself."""
    import json
    from datetime import datetime

    woken, running = [], []
    for r in ledger:
        at = json.loads(r["options"]).get("event_at")
        if r["outcome"] == "success" and at:
            woken.append((r["started_at"] - datetime.fromisoformat(at)).total_seconds())
            running.append((r["finished_at"] - r["started_at"]).total_seconds())
    if not woken:
        return ""
    return f" (event -> run start p50 {statistics.median(woken):.3f}s, run p50 {statistics.median(running):.3f}s)"


def _figures(latencies: list[float]) -> tuple[float, float, float]:
    ordered = sorted(latencies)
    p95 = ordered[max(0, int(round(0.95 * len(ordered))) - 1)]
    return statistics.median(ordered), p95, ordered[-1]


def run_mode(mode: str, rows: int, gap: tuple[float, float], rng: random.Random, tmp: Path) -> bool:
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO))
    from event_site import EventSite, start_mosquitto

    if mode == "mqtt" and not start_mosquitto():
        print("mqtt: no broker on 127.0.0.1:1883 (apt-get install mosquitto)")
        return False
    flow = "confirmations_mqtt" if mode == "mqtt" else "confirmations_notify"
    urls, drop = _databases(["mes", "erp", "relay"])
    site = EventSite(urls["mes"], urls["erp"], tmp / mode)
    relay = Relay(urls["mes"], urls["relay"], mode, site.topic)
    observer = Observer({"etl": (urls["erp"], "if_confirmation"), "relay": (urls["relay"], "relay_confirmation")})
    airflow = None
    try:
        if mode == "airflow":
            airflow = _start_airflow(site, tmp / "airflow")
            if not site.watch_ready(flow, timeout=240):
                print(f"airflow: no event-driven run within 240 s:\n{airflow.logs()}")
                return False
        else:
            site.start_watch(flow)
            if not site.watch_ready(flow):
                print(f"{mode}: the watch did not start:\n{site.logs()}")
                return False
        relay.start()
        observer.start()
        committed: dict[str, float] = {}
        for _ in range(rows):
            time.sleep(rng.uniform(*gap))
            key, at = site.commit_report(publish=mode == "mqtt")
            committed[key] = at
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and any(len(observer.seen[n]) < rows for n in ("etl", "relay")):
            time.sleep(0.1)
        observer.stop.set()
        relay.stop.set()
        ok = True
        line = f"{mode:<7}"
        for name in ("etl", "relay"):
            seen = observer.seen[name]
            missing = [k for k in committed if k not in seen]
            latencies = [seen[k] - at for k, at in committed.items() if k in seen]
            p50, p95, worst = _figures(latencies) if latencies else (float("nan"),) * 3
            line += f" | {name}: p50 {p50:.3f}s p95 {p95:.3f}s max {worst:.3f}s, {len(seen)}/{rows} rows"
            if missing:
                ok = False
                line += f" ({len(missing)} missing)"
            if name == "etl":
                etl_p = (p50, p95)
            else:
                relay_p = (p50, p95)
        ledger = site.ledger(flow)
        loaded = sum(r["rows_loaded"] for r in ledger if r["outcome"] == "success")
        line += f" | ledger: {loaded} loaded in {len(ledger)} runs{_breakdown(ledger)}"
        ratio = f" | ratio to the relay: p50 x{etl_p[0] / relay_p[0]:.1f}, p95 x{etl_p[1] / relay_p[1]:.1f}"
        print(line + ratio)
        if loaded != rows or len(site.loaded()) != rows:
            print(f"{mode}: FAILED exactly once: {len(site.loaded())} rows in the ERP, {loaded} loaded by the ledger")
            ok = False
        if etl_p[1] > TARGET_P95[mode]:
            print(f"{mode}: over target: p95 {etl_p[1]:.3f}s > {TARGET_P95[mode]}s")
            ok = False
        return ok
    finally:
        if airflow is not None:
            airflow.stop()
        site.close()
        drop()


def _start_airflow(site: Any, home: Path) -> Any:
    """Airflow's processes on a home of their own, the site's DAGs only (as the Airflow test of
    tests/integration/test_airflow_events.py starts them)."""
    sys.path.insert(0, str(REPO / "tests" / "integration"))
    import subprocess

    from test_airflow_events import DAG, start_airflow

    class Started:
        def __init__(self) -> None:
            self.services: Any = None

        def __call__(self, env: dict[str, str]) -> Any:
            from test_airflow_services import AirflowServices

            home_dir = Path(env["AIRFLOW_HOME"])
            home_dir.mkdir(parents=True, exist_ok=True)
            self.services = AirflowServices(home_dir, env, int(env["AIRFLOW__API__PORT"]))
            self.services.airflow("db", "migrate")
            pools = subprocess.run([sys.executable, "-m", "etl", "pools"], env=env, cwd=REPO, capture_output=True,
                                   text=True, check=True)
            (home_dir / "pools.json").write_text(pools.stdout)
            self.services.airflow("pools", "import", str(home_dir / "pools.json"))
            return self.services

    started = Started()
    try:
        services = start_airflow(site, started, home)
    except BaseException:
        if started.services is not None:
            started.services.stop()
        raise
    print(f"airflow: DAG {DAG} parsed and unpaused")
    return services


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=200)
    parser.add_argument("--gap", default="0.1,3.0", help="seconds between commits: min,max (default: %(default)s)")
    parser.add_argument("--modes", default="notify,mqtt,airflow")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    low, high = (float(x) for x in args.gap.split(","))
    import tempfile

    print(f"latency MES commit -> ERP row visible, {args.rows} rows, gaps {low}-{high}s, observer poll {POLL * 1000:.0f} ms")
    results = []
    with tempfile.TemporaryDirectory(prefix="ems-latency-") as tmp:
        for mode in args.modes.split(","):
            results.append(run_mode(mode.strip(), args.rows, (low, high), random.Random(args.seed), Path(tmp)))
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
