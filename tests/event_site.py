"""A small MES/ERP pair on PostgreSQL for the event-driven tests and the latency benchmark: the
MES operation_report table with the NOTIFY trigger of sql/events/, the ERP confirmation
interface, the flows of bench/latency/mappings (their MQTT topic and session made unique), a
shop-floor writer that commits reports one per transaction (publishing an MQTT message after
each, as an MES that publishes events does), and ``python -m etl watch`` as a child process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from etl.sync.pipeline_tables import ensure_pipeline_tables

REPO = Path(__file__).resolve().parents[1]
LATENCY = REPO / "bench" / "latency"
NOTIFY_SQL = REPO / "sql" / "events" / "notify_on_commit.sql"
MQTT_HOST, MQTT_PORT = "127.0.0.1", 1883


def mqtt_reachable() -> bool:
    try:
        with socket.create_connection((MQTT_HOST, MQTT_PORT), timeout=1):
            return True
    except OSError:
        return False


def start_mosquitto() -> bool:
    """Start the machine's Mosquitto on loopback when it is not running; whether it now is."""
    if mqtt_reachable():
        return True
    if shutil.which("mosquitto") is None:
        return False
    # Loopback only, anonymous: a broker for this machine's tests and nobody else.
    config = Path(os.environ.get("TMPDIR", "/tmp")) / "erp-mes-sync-mosquitto.conf"
    config.write_text(f"listener {MQTT_PORT} {MQTT_HOST}\nallow_anonymous true\n", encoding="utf-8")
    subprocess.run(["mosquitto", "-d", "-c", str(config)], capture_output=True, check=False)
    for _ in range(20):
        if mqtt_reachable():
            return True
        time.sleep(0.25)
    return False


def _run_sql(url: URL, sql: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.exec_driver_sql(sql)
    engine.dispose()


@dataclass
class EventSite:
    """One site: its databases, mappings folder, writer and watch processes."""

    mes_url: URL
    erp_url: URL
    root: Path
    tag: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    committed: list[str] = field(default_factory=list)
    watchers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _run_sql(self.mes_url, (LATENCY / "mes.sql").read_text() + NOTIFY_SQL.read_text())
        _run_sql(self.erp_url, (LATENCY / "erp.sql").read_text())
        self.mappings = self.root / "mappings"
        shutil.copytree(LATENCY / "mappings", self.mappings)
        # Tests and benchmarks may run side by side: a topic and a session of their own.
        self.topic = f"spBv1.0/test_{self.tag}/DDATA/mes/operation_report"
        path = self.mappings / "flows" / "confirmations_mqtt.yaml"
        flow = yaml.safe_load(path.read_text())
        on = flow["trigger"].pop(True)  # YAML 1.1 reads the bare key on as true
        on["mqtt"] |= {"topic": self.topic, "client_id": f"ems-test-{self.tag}"}
        flow["trigger"]["on"] = on
        path.write_text(yaml.safe_dump(flow, sort_keys=False))
        self.mes = create_engine(self.mes_url)
        self.erp = create_engine(self.erp_url)
        with self.erp.begin() as conn:
            ensure_pipeline_tables(conn)  # the ledger is read before the first run ends
        self.publisher = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ems-mes-{self.tag}")
        self.publisher.connect(MQTT_HOST, MQTT_PORT)
        self.publisher.loop_start()

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "PYTHONPATH": str(REPO),
            "AIRFLOW_CONN_MES_DB": self.mes_url.render_as_string(hide_password=False),
            "AIRFLOW_CONN_ERP_DB": self.erp_url.render_as_string(hide_password=False),
            "AIRFLOW_CONN_MES_BROKER": f"mqtt://{MQTT_HOST}:{MQTT_PORT}",
        }

    # --- the shop floor ---------------------------------------------------------------------

    def publish(self, count: int = 1) -> None:
        """The MES's event after a commit: an empty QoS 1 message on the flow's topic."""
        for _ in range(count):
            self.publisher.publish(self.topic, b"", qos=1)

    def commit_report(self, publish: bool = False) -> tuple[str, float]:
        """Commit one operation report in its own transaction; its posting key and the wall
        time just after COMMIT returned."""
        report_no = f"R{len(self.committed) + 1:06d}"
        with self.mes.begin() as conn:
            conn.execute(
                text("INSERT INTO operation_report (report_no, wo_no, good_qty) VALUES (:r, :w, :q)"),
                {"r": report_no, "w": f"WO-{len(self.committed) % 7}", "q": len(self.committed) + 1},
            )
        at = time.time()
        self.committed.append(f"MES-OPR-{report_no}")
        if publish:
            self.publish()
        return self.committed[-1], at

    def roll_back_report(self, publish: bool = False) -> str:
        """Write a report and roll it back (publishing the event first, as a careless MES might)."""
        report_no = f"X{uuid.uuid4().hex[:8]}"
        with self.mes.connect() as conn:
            conn.execute(
                text("INSERT INTO operation_report (report_no, wo_no, good_qty) VALUES (:r, 'WO-X', 1)"), {"r": report_no},
            )
            if publish:
                self.publish()
                time.sleep(0.3)  # the run the event wakes reads while the row is uncommitted
            conn.rollback()
        return f"MES-OPR-{report_no}"

    # --- the ERP side -----------------------------------------------------------------------

    def loaded(self) -> list[str]:
        with self.erp.connect() as conn:
            return [r[0] for r in conn.execute(text("SELECT posting_key FROM if_confirmation ORDER BY 1"))]

    def wait_loaded(self, count: int, timeout: float = 20.0) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            keys = self.loaded()
            if len(keys) >= count:
                return keys
            time.sleep(0.05)
        return self.loaded()

    def ledger(self, flow: str) -> list[dict[str, Any]]:
        with self.erp.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(text(
                "SELECT run_id, outcome, started_at, finished_at, rows_read, rows_loaded, options, error "
                "FROM etl_ledger WHERE flow = :f ORDER BY started_at"), {"f": flow})]

    def overlapping_runs(self, flow: str) -> list[tuple[str, str]]:
        """Pairs of successful runs of ``flow`` that held the flow at once (from taking its lock,
        ``locked_at``, to writing their ledger row, before the commit): the lock forbids any. A
        run's ``started_at`` is earlier, before it connects, so it may fall inside another's run."""

        def locked_at(run: dict[str, Any]) -> datetime:
            at = datetime.fromisoformat(json.loads(run["options"])["locked_at"])
            return at.astimezone(UTC).replace(tzinfo=None) if at.tzinfo else at

        runs = sorted((r for r in self.ledger(flow) if r["outcome"] == "success"), key=locked_at)
        return [
            (a["run_id"], b["run_id"]) for a, b in zip(runs, runs[1:], strict=False)
            if locked_at(b) < a["finished_at"]
        ]

    # --- the watch ----------------------------------------------------------------------------

    def start_watch(self, flow: str) -> subprocess.Popen[bytes]:
        log = (self.root / f"watch-{len(self.watchers)}.log").open("wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "etl", "--mappings", str(self.mappings), "watch", flow],
            env=self.env(), stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
        )
        self.watchers.append(proc)
        return proc

    def wait_for(self, predicate: Callable[[], bool], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return True
            time.sleep(0.05)
        return predicate()

    def watch_ready(self, flow: str, runs: int = 1, timeout: float = 30.0) -> bool:
        """Whether the watch has made ``runs`` runs (the first is its catch-up at start)."""
        return self.wait_for(lambda: len(self.ledger(flow)) >= runs, timeout)

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.root.glob("watch-*.log")))

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        proc.send_signal(sig)
        return proc.wait(timeout=timeout)

    def close(self) -> None:
        for proc in self.watchers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self.publisher.loop_stop()
        self.publisher.disconnect()
        self.mes.dispose()
        self.erp.dispose()
