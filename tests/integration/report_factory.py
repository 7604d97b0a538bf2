"""Small hand-made histories for the data-quality report and the business reconciliations.

``business_fixture`` fills the demo ERP schema with four orders whose MES feedback disagrees with
the ERP in known ways; ``pipeline_history`` writes runs, checks and quarantine entries through
the pipeline's own functions (ledger.write_run, quarantine.record), as real runs do.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from sqlalchemy import Engine, text

from demo.schema import create_demo_schema
from etl.config.paths import DEFAULT_MAPPINGS
from etl.core.rows import Reject
from etl.sync import ledger, quarantine
from etl.sync.ledger import CheckResult, RunCounts, RunRecord
from etl.sync.pipeline_tables import ensure_pipeline_tables

#: The flows of the trimmed project the report tests use (no depends_on between them).
REPORT_FLOWS = ("materials", "work_centers", "production_orders", "confirmations")


def trimmed_mappings(folder: Path, recipients: list[str] | None = None) -> Path:
    """A copy of mappings/ with only REPORT_FLOWS, and ``report.recipients`` set if given."""
    shutil.copytree(DEFAULT_MAPPINGS, folder)
    shutil.copytree(DEFAULT_MAPPINGS.parent / "expectations", folder.parent / "expectations", dirs_exist_ok=True)
    for path in (folder / "flows").glob("*.yaml"):
        if path.stem not in REPORT_FLOWS:
            path.unlink()
    if recipients is not None:
        defaults = yaml.safe_load((folder / "defaults.yaml").read_text(encoding="utf-8"))
        defaults["report"]["recipients"] = recipients
        (folder / "defaults.yaml").write_text(yaml.safe_dump(defaults, sort_keys=False), encoding="utf-8")
    return folder


def business_fixture(erp: Engine) -> None:
    """Four orders on the demo ERP schema, with the MES feedback the sync would have written.

    order_output (5 %): 1000001 102 vs 100 within; 1000002 40.5 vs 50 beyond; 1000003 no
    confirmation, 0 vs 200 beyond; 1000004 is still running (REL) and not compared.
    material_issue (5 % or 1): 1000001 MAT-000010 204 vs 200 within, MAT-000011 12 vs 10 beyond;
    1000002 MAT-000012 25.5 vs 25 within, MAT-000099 issued 3 but never required: beyond.
    finished_goods_receipt (0.001): plant 1000 on 2026-03-02 received 98 + 39 = 137 against 102 - 4
    + 40 = 138 confirmed (the receipt of 1000002 posted after midnight still counts for the 2nd);
    plant 2000 on 2026-03-05 received 5 for an order without confirmations.
    """
    create_demo_schema(erp, "erp")
    t = datetime(2026, 3, 1, 8, 0)
    orders = [
        ("1000001", "MAT-000001", "1000", Decimal("100"), "PC", "TECO"),
        ("1000002", "MAT-000002", "1000", Decimal("50"), "KG", "CLSD"),
        ("1000003", "MAT-000001", "2000", Decimal("200"), "PC", "TECO"),
        ("1000004", "MAT-000001", "1000", Decimal("80"), "PC", "REL"),
    ]
    confirmations = [
        ("MES-OPR-1", "1000001", "0010", "103", "0", "PC", datetime(2026, 3, 1, 20, 0)),
        ("MES-OPR-2", "1000001", "0020", "98", "4", "PC", datetime(2026, 3, 2, 10, 0)),
        ("MES-OPR-3", "1000002", "0010", "40.000", "0.500", "KG", datetime(2026, 3, 2, 15, 0)),
        ("MES-OPR-4", "1000004", "0010", "10", "0", "PC", datetime(2026, 3, 2, 16, 0)),
    ]
    components = [
        ("1000001", 10, "MAT-000010", "200", "PC"),
        ("1000001", 20, "MAT-000011", "10", "KG"),
        ("1000002", 10, "MAT-000012", "25", "KG"),
    ]
    movements = [
        ("MES-ISS-1", "261", "1000001", "MAT-000010", "1000", "204", "PC", datetime(2026, 3, 1, 7, 0)),
        ("MES-ISS-2", "261", "1000001", "MAT-000011", "1000", "12", "KG", datetime(2026, 3, 1, 7, 0)),
        ("MES-ISS-3", "261", "1000002", "MAT-000012", "1000", "25.5", "KG", datetime(2026, 3, 2, 7, 0)),
        ("MES-ISS-4", "261", "1000002", "MAT-000099", "1000", "3", "KG", datetime(2026, 3, 2, 7, 0)),
        ("MES-RCV-1", "101", "1000001", "MAT-000001", "1000", "98", "PC", datetime(2026, 3, 2, 11, 0)),
        ("MES-RCV-2", "101", "1000002", "MAT-000002", "1000", "39", "KG", datetime(2026, 3, 3, 1, 0)),
        ("MES-RCV-3", "101", "1000003", "MAT-000001", "2000", "5", "PC", datetime(2026, 3, 5, 9, 0)),
    ]
    # Numbers go in as text: exact on both databases (SQLite's driver takes no Decimal).
    with erp.begin() as conn:
        conn.execute(text(
            "INSERT INTO production_order (order_no, material_no, plant, quantity, unit, planned_start, planned_end, "
            "status, created_at, updated_at) VALUES (:o, :m, :p, :q, :u, :t, :t, :s, :t, :t)"
        ), [{"o": o, "m": m, "p": p, "q": str(q), "u": u, "s": s, "t": t} for o, m, p, q, u, s in orders])
        conn.execute(text(
            "INSERT INTO if_confirmation (posting_key, order_no, operation_no, work_center, yield_qty, scrap_qty, "
            "unit, start_time, end_time) VALUES (:k, :o, :op, 'WC-ASM1', :y, :s, :u, :e, :e)"
        ), [{"k": k, "o": o, "op": op, "y": y, "s": s, "u": u, "e": e}
            for k, o, op, y, s, u, e in confirmations])
        conn.execute(text(
            "INSERT INTO order_component (order_no, item_no, component_material_no, required_qty, unit, updated_at) "
            "VALUES (:o, :i, :m, :q, :u, :t)"
        ), [{"o": o, "i": i, "m": m, "q": q, "u": u, "t": t} for o, i, m, q, u in components])
        conn.execute(text(
            "INSERT INTO if_goods_movement (posting_key, movement_type, order_no, material_no, plant, quantity, unit, "
            "posting_time) VALUES (:k, :mt, :o, :m, :p, :q, :u, :pt)"
        ), [{"k": k, "mt": mt, "o": o, "m": m, "p": p, "q": q, "u": u, "pt": pt}
            for k, mt, o, m, p, q, u, pt in movements])


@dataclass(frozen=True)
class History:
    now: datetime
    failed_run_id: str


def _run(
    flow: str, direction: str, started: datetime, outcome: str, *, read: int = 0, loaded: int = 0,
    quarantined: int = 0, error: str | None = None, checks: list[CheckResult] | None = None,
    run_id: str | None = None,
) -> RunRecord:
    return RunRecord(
        run_id=run_id or f"{flow}-{started:%Y%m%d%H%M}", flow=flow, direction=direction, started_at=started,
        finished_at=started + timedelta(seconds=4), outcome=outcome, error=error, checks=checks or [],
        counts=RunCounts(rows_read=read, rows_loaded=loaded, rows_quarantined=quarantined,
                         rows_new_in_quarantine=quarantined),
    )


def pipeline_history(engines: dict[str, Engine], now: datetime) -> History:
    """Runs on the ERP and MES targets, relative to ``now``:

    - materials (MES, nightly): a success 2 h ago; nothing to act on.
    - work_centers (MES, nightly): last success 3 days ago: stale.
    - production_orders (MES, hourly): successes 30 min ago (read 10, loaded 7, quarantined 3,
      a quarantine expectation failing 2 of 10 rows, a warning failing 1) and 2 days ago (loaded
      40), a busy run 20 min ago; 3 rows waiting in quarantine, two with the same kind of reason.
    - confirmations (ERP, every 15 min): a success 50 min ago, then a run blocked 5 min ago by a
      critical expectation (3 of 12 rows; the error is in Chinese, to see it survive).
    """
    mes, erp = engines["mes_db"], engines["erp_db"]
    failed_run = "confirmations-failed-1"
    order_checks = [
        CheckResult("expectation", "quantity_positive", "quarantine", 10, 2, False,
                    expectation_type="expect_column_values_to_be_between", suite="production_orders",
                    sample_keys=["order_no=1000456", "order_no=1000457"], detail="quantity <= 0"),
        CheckResult("expectation", "order_no_not_null", "critical", 10, 0, True,
                    expectation_type="expect_column_values_to_not_be_null", suite="production_orders"),
        CheckResult("expectation", "planned_end_after_start", "warning", 10, 1, False,
                    expectation_type="expect_column_pair_values_a_to_be_greater_than_b", suite="production_orders",
                    sample_keys=["order_no=1000460"]),
        CheckResult("reconciliation", "row_count", "critical", 10, 0, True, detail="read 10 = loaded 7 + quarantined 3"),
    ]
    with mes.begin() as conn:
        ensure_pipeline_tables(conn)
        for record in (
            _run("materials", "erp_to_mes", now - timedelta(hours=2), "success", read=5, loaded=5),
            _run("work_centers", "erp_to_mes", now - timedelta(days=3), "success", read=8, loaded=8),
            _run("production_orders", "erp_to_mes", now - timedelta(days=2), "success", read=40, loaded=40),
            _run("production_orders", "erp_to_mes", now - timedelta(minutes=30), "success", read=10, loaded=7,
                 quarantined=3, checks=order_checks),
            _run("production_orders", "erp_to_mes", now - timedelta(minutes=20), "busy"),
        ):
            ledger.write_run(conn, record)
        quarantine.record(conn, "production_orders", "production_orders-q", [
            Reject("order_no=1000456", {"order_no": "1000456"}, "crosswalk 'material' has no MES code for 'MAT-000123' (column item_code)"),
            Reject("order_no=1000457", {"order_no": "1000457"}, "crosswalk 'material' has no MES code for 'MAT-000124' (column item_code)"),
            Reject("order_no=1000458", {"order_no": "1000458"}, "column quantity: <script>alert(1)</script> is not a number"),
        ], now - timedelta(minutes=30))
    with erp.begin() as conn:
        ensure_pipeline_tables(conn)
        ledger.write_run(conn, _run("confirmations", "mes_to_erp", now - timedelta(minutes=50), "success", read=12, loaded=12))
        ledger.write_run(conn, _run(
            "confirmations", "mes_to_erp", now - timedelta(minutes=5), "failed", read=12, run_id=failed_run,
            error=f"flow 'confirmations' failed at step 'validate' (run {failed_run}): 3 of 12 rows fail the "
                  "critical expectation good_qty_not_negative (报工数量为负)",
            checks=[CheckResult("expectation", "good_qty_not_negative", "critical", 12, 3, False,
                                expectation_type="expect_column_values_to_be_between", suite="confirmations",
                                sample_keys=["R000000007", "R000000008", "R000000009"])],
        ))
    return History(now, failed_run)


def engines_of(urls: dict[str, Any]) -> dict[str, Engine]:
    from etl.sync.connections import create_db_engine

    return {f"{name}_db": create_db_engine(url) for name, url in urls.items()}
