"""Every batch checked against its flow's Great Expectations suite, on the real PostgreSQL server:
the demo's suites, planted dirty rows, exact quarantine at 100,000 failing rows, critical
failures that block the batch, and agreement with Great Expectations itself."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, MetaData, Table, create_engine, select, text
from sqlalchemy.engine import URL

from demo.setup import init_demo
from etl.config.flows import Project
from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.core.errors import ConfigError, StepFailed, ValidationFailed
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import check, ledger, quarantine, watermark
from etl.sync.runner import RunOptions, RunResult, run_flow

pytestmark = [pytest.mark.slow, pytest.mark.postgres]

# The demo factory's clock for this file: the rows its tests write by hand are dated against it.
DEMO_AS_OF = datetime(2026, 11, 20, 8, 0)

SYNC_FLOWS = [
    "materials", "boms", "work_centers", "personnel", "routings", "production_orders", "order_components",
    "confirmations", "consumptions", "goods_receipts", "quality_results",
]


@dataclass
class Site:
    project: Project
    connections: Connections
    erp: Engine
    mes: Engine
    root: Path

    def run(self, flow: str, **options: object) -> RunResult:
        return run_flow(self.project, flow, self.connections, RunOptions(**options))  # type: ignore[arg-type]

    def reload(self) -> None:
        self.project = load_project(self.root / "mappings")


def _table(engine: Engine, name: str) -> Table:
    return Table(name, MetaData(), autoload_with=engine)


def _checks(engine: Engine, run_id: str) -> dict[str, dict]:
    with engine.connect() as conn:
        rows = conn.execute(select(check).where(check.c.run_id == run_id)).mappings().all()
    return {r["name"]: dict(r) for r in rows}


def _waiting(engine: Engine, flow: str) -> dict[str, str]:
    with engine.connect() as conn:
        q = quarantine.c
        rows = conn.execute(select(q.source_key, q.reason).where(q.flow == flow, q.status == "waiting")).all()
    return {k: r for k, r in rows}


@pytest.fixture
def demo(pg_database: Callable[[str], URL], tmp_path: Path) -> Iterator[Site]:
    urls = {n: pg_database(n) for n in ("erp", "mes", "warehouse")}
    shutil.copytree(REPO_ROOT / "mappings", tmp_path / "mappings")
    shutil.copytree(REPO_ROOT / "expectations", tmp_path / "expectations")
    init_demo(
        erp_url=urls["erp"].render_as_string(hide_password=False),
        mes_url=urls["mes"].render_as_string(hide_password=False),
        warehouse_url=urls["warehouse"].render_as_string(hide_password=False),
        orders=200, seed=11, connections_file=tmp_path / "connections.json", as_of=DEMO_AS_OF,
    )
    connections = Connections({"erp_db": urls["erp"], "mes_db": urls["mes"], "warehouse_db": urls["warehouse"]})
    yield Site(load_project(tmp_path / "mappings"), connections, connections.engine("erp_db"),
               connections.engine("mes_db"), tmp_path)
    connections.dispose()


def test_every_sync_flow_names_a_suite_that_great_expectations_itself_reads() -> None:
    import great_expectations as gx

    project = load_project()
    for name in SYNC_FLOWS:
        flow = project.flows[name]
        assert flow.expectations is not None, name
        raw = json.loads((REPO_ROOT / "expectations" / f"{flow.expectations.suite}.json").read_text())
        suite = gx.ExpectationSuite(**raw)
        assert len(suite.expectations) == len(raw["expectations"]) >= 4


# Known demo dirt that only warns: operators without a badge, materials without a Chinese name.
DEMO_WARNINGS = {("confirmations", "operator_known"), ("materials", "chinese_name_present")}


def test_clean_demo_passes_and_planted_dirty_rows_wait_in_quarantine_under_the_failed_names(demo: Site) -> None:
    results = {name: demo.run(name) for name in SYNC_FLOWS}
    for name, result in results.items():
        engine = demo.erp if demo.project.flows[name].direction == "mes_to_erp" else demo.mes
        checks = _checks(engine, result.record.run_id)
        assert {"rows_balance", "target_matches_batch"} <= set(checks), name
        failing = {(name, c) for c, row in checks.items() if not row["success"]}
        assert failing <= DEMO_WARNINGS, failing
        assert all(checks[c]["action"] == "warning" for _, c in failing)
    with demo.erp.connect() as conn:
        failed_warnings = conn.execute(
            select(check.c.name, check.c.rows_failed, check.c.sample_keys)
            .where(check.c.flow == "confirmations", check.c.name == "operator_known")
        ).one()
    assert failed_warnings.rows_failed > 0 and json.loads(failed_warnings.sample_keys)

    # Plant one row per rule in the sources, next to clean ones.
    late = datetime(2026, 11, 22, 3, 0)
    orders = _table(demo.erp, "production_order")
    with demo.erp.connect() as conn:
        material = conn.execute(select(orders.c.material_no).where(orders.c.material_no.like("MAT-0%")).limit(1)).scalar_one()
        released = select(orders.c.order_no).where(orders.c.status == "REL").order_by(orders.c.order_no).limit(2)
        wo_rows = conn.execute(released).scalars().all()
    order = wo_rows[0]
    wo = "WO-2026-" + order[1:]
    with demo.erp.begin() as conn:
        base = dict(material_no=material, plant="1000", unit="PC", status="REL", created_at=late, updated_at=late)
        conn.execute(orders.insert(), [
            {**base, "order_no": "1950001", "quantity": Decimal("0"), "planned_start": late, "planned_end": late + timedelta(hours=4)},
            {**base, "order_no": "1950002", "quantity": Decimal("5"), "planned_start": late, "planned_end": late - timedelta(hours=1)},
            {**base, "order_no": "1950003", "quantity": Decimal("5"), "planned_start": late, "planned_end": late + timedelta(hours=2)},
        ])
        conn.execute(_table(demo.erp, "work_center").update().where(text("work_center = 'WC-CUT1'"))
                     .values(capacity_hours=Decimal("30"), updated_at=late))
    reports = _table(demo.mes, "operation_report")
    report = dict(wo_no=wo, step_no=10, equipment_code="EQ-SH01-MIX-01", good_qty=Decimal("3"), scrap_qty=Decimal("0"),
                  unit="pcs", scrap_reason=None, operator_badge="00001001", updated_at=late)
    future = datetime.now().replace(microsecond=0) + timedelta(days=2)
    with demo.mes.begin() as conn:
        conn.execute(reports.insert(), [
            {**report, "report_id": 9_500_001, "report_no": "R-BACKWARDS",
             "start_time_utc": late, "end_time_utc": late - timedelta(minutes=5)},
            {**report, "report_id": 9_500_002, "report_no": "R-NEGATIVE", "scrap_qty": Decimal("-1"), "scrap_reason": "S01",
             "start_time_utc": late, "end_time_utc": late},
            {**report, "report_id": 9_500_003, "report_no": "R-FUTURE",
             "start_time_utc": future, "end_time_utc": future},
            {**report, "report_id": 9_500_004, "report_no": "R-CLEAN",
             "start_time_utc": late, "end_time_utc": late + timedelta(minutes=30)},
        ])
        conn.execute(_table(demo.mes, "quality_inspection").insert(), [
            dict(inspection_id=9_500_001, lot_no="L-DIRTY", wo_no=wo, item_code="1" + material[5:], sample_size=5, defect_qty=7,
                 defect_code="D01", result="FAIL", inspected_at_utc=late, updated_at=late),
            dict(inspection_id=9_500_002, lot_no="L-CLEAN", wo_no=wo, item_code="1" + material[5:], sample_size=5, defect_qty=1,
                 defect_code="D01", result="PASS", inspected_at_utc=late, updated_at=late),
        ])
        conn.execute(_table(demo.mes, "material_issue").insert(), [
            dict(issue_id=9_500_001, wo_no=wo, item_code="1" + material[5:], plant_code="SH01", qty=Decimal("0"), unit="pcs",
                 lot_no=None, issued_at_utc=late, updated_at=late),
        ])

    expected = {
        "production_orders": {"1950001": "planned_qty_positive", "1950002": "planned_end_not_before_start"},
        "work_centers": {"WC-CUT1": "capacity_within_a_day"},
        "confirmations": {"R-BACKWARDS": "end_not_before_start", "R-NEGATIVE": "scrap_not_negative", "R-FUTURE": "end_not_in_future"},
        "quality_results": {"9500001": "defects_within_sample"},
        "consumptions": {"9500001": "quantity_positive"},
    }
    for name, planted in expected.items():
        result = demo.run(name)
        engine = demo.erp if demo.project.flows[name].direction == "mes_to_erp" else demo.mes
        waiting = _waiting(engine, name)
        for fragment, rule in planted.items():
            entry = [reason for key, reason in waiting.items() if fragment in key]
            assert len(entry) == 1, (name, fragment, waiting)
            assert rule in entry[0] and f"suite '{demo.project.flows[name].expectations.suite}'" in entry[0]
        checks = _checks(engine, result.record.run_id)
        assert {c for c, row in checks.items() if not row["success"] and row["action"] == "quarantine"} == set(planted.values())
        assert checks["rows_balance"]["success"] and checks["target_matches_batch"]["success"]

    # The dirty rows were kept out, the clean ones beside them loaded.
    with demo.mes.connect() as conn:
        loaded_orders = set(conn.execute(text("SELECT wo_no FROM work_order WHERE wo_no LIKE 'WO-2026-95000%'")).scalars())
        assert loaded_orders == {"WO-2026-950003"}
        capacity = text("SELECT capacity_hours FROM equipment WHERE equipment_code = 'EQ-SH01-CUT-01'")
        assert conn.execute(capacity).scalar_one() != Decimal("30")
    with demo.erp.connect() as conn:
        posted = set(conn.execute(text("SELECT posting_key FROM if_confirmation WHERE posting_key LIKE 'MES-OPR-R-%'")).scalars())
        assert posted == {"MES-OPR-R-CLEAN"}
        assert conn.execute(text("SELECT count(*) FROM if_quality_result WHERE posting_key = 'MES-QI-9500002'")).scalar_one() == 1
        assert conn.execute(text("SELECT count(*) FROM if_quality_result WHERE posting_key = 'MES-QI-9500001'")).scalar_one() == 0

    # Fixed at the source, the row loads and leaves quarantine.
    with demo.mes.begin() as conn:
        conn.execute(text("UPDATE operation_report SET end_time_utc = start_time_utc + interval '10 minutes', "
                          "updated_at = updated_at + interval '1 minute' WHERE report_no = 'R-BACKWARDS'"))
    demo.run("confirmations")
    assert not [k for k in _waiting(demo.erp, "confirmations") if "R-BACKWARDS" in k]
    with demo.erp.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM if_confirmation WHERE posting_key = 'MES-OPR-R-BACKWARDS'")).scalar_one() == 1


def test_a_critical_expectation_blocks_the_batch_and_leaves_target_and_watermark_untouched(demo: Site) -> None:
    for name in ("materials", "work_centers", "production_orders"):
        demo.run(name)
    # The plant decides a zero quantity must stop the whole batch, in the flow's YAML.
    flow_file = demo.root / "mappings" / "flows" / "production_orders.yaml"
    flow_file.write_text(flow_file.read_text().replace(
        "expectations: {suite: production_orders}",
        "expectations: {suite: production_orders, on_failure: {planned_qty_positive: critical}}",
    ))
    demo.reload()
    with demo.mes.connect() as conn:
        before_rows = conn.execute(text("SELECT * FROM work_order ORDER BY wo_no")).all()
        before_mark = conn.execute(select(watermark).where(watermark.c.flow == "production_orders")).one()
    late = datetime(2026, 11, 22, 3, 0)
    with demo.erp.begin() as conn:
        conn.execute(text(
            "UPDATE production_order SET quantity = 0, updated_at = :late WHERE order_no IN "
            "(SELECT order_no FROM production_order WHERE status = 'REL' ORDER BY order_no LIMIT 3)"
        ), {"late": late})
        conn.execute(text(
            "UPDATE production_order SET quantity = quantity + 1, updated_at = :late WHERE order_no IN "
            "(SELECT order_no FROM production_order WHERE status = 'TECO' ORDER BY order_no LIMIT 5)"
        ), {"late": late})

    with pytest.raises(StepFailed) as failure:
        demo.run("production_orders")
    assert isinstance(failure.value.cause, ValidationFailed)
    assert failure.value.step == "validate" and not failure.value.retryable
    assert "planned_qty_positive" in str(failure.value) and "3 of " in str(failure.value)

    with demo.mes.connect() as conn:
        assert conn.execute(text("SELECT * FROM work_order ORDER BY wo_no")).all() == before_rows
        assert conn.execute(select(watermark).where(watermark.c.flow == "production_orders")).one() == before_mark
        last = conn.execute(
            select(ledger).where(ledger.c.flow == "production_orders").order_by(ledger.c.started_at.desc()).limit(1)
        ).mappings().one()
    assert last["outcome"] == "failed" and "ValidationFailed" in last["error"]
    checks = _checks(demo.mes, last["run_id"])
    assert checks["planned_qty_positive"]["action"] == "critical" and checks["planned_qty_positive"]["rows_failed"] == 3
    assert len(json.loads(checks["planned_qty_positive"]["sample_keys"])) == 3


BULK_FLOW = """\
flow: bulk_postings
description: a large batch, most of it failing one expectation
direction: mes_to_erp
source: {connection: mes_db, table: bulk_source}
target: {connection: erp_db, table: bulk_target}
key: [posting_key]
cursor: {column: updated_at}
load: {transform: TRANSFORM, chunk_size: 20000}
columns:
  - {target: posting_key, expr: "concat('B-', id)"}
  - {target: quantity, source: qty}
  - {target: unit, source: unit}
expectations: {suite: bulk_postings}
"""

BULK_SUITE = {
    "name": "bulk_postings",
    "expectations": [
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "quantity", "min_value": 0},
         "meta": {"name": "quantity_not_negative"}, "severity": "critical"},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "unit", "value_set": ["KG", "PC"]},
         "meta": {"name": "unit_known"}, "severity": "critical"},
    ],
    "meta": {"great_expectations_version": "1.24.1"},
}


@pytest.mark.parametrize("transform", ["sql", "python"])
def test_a_hundred_thousand_failing_rows_are_all_quarantined_and_none_loaded(
    pg_database: Callable[[str], URL], tmp_path: Path, transform: str,
) -> None:
    """GX caps the failing rows it returns; the pipeline's own evaluation does not."""
    mes_url, erp_url = pg_database("mes"), pg_database("erp")
    # ids 1..108,333 fail unless divisible by 13: exactly 100,000 failing rows, 31,667 clean.
    rows, failing = 140_000, 108_333
    with create_engine(mes_url).begin() as conn:
        conn.execute(text("CREATE TABLE bulk_source (id integer PRIMARY KEY, qty numeric(18,3) NOT NULL, "
                          "unit varchar(4) NOT NULL, updated_at timestamp NOT NULL)"))
        # Ids divisible by 13 are clean; ids 1..failing otherwise fail (both rules when divisible by 7).
        conn.execute(text(
            "INSERT INTO bulk_source SELECT g, CASE WHEN g <= :failing AND g % 13 <> 0 THEN -g ELSE g END, "
            "CASE WHEN g <= :failing AND g % 13 <> 0 AND g % 7 = 0 THEN 'XX' ELSE 'KG' END, "
            "timestamp '2026-11-01' + g * interval '1 second' FROM generate_series(1, :rows) g"
        ), {"failing": failing, "rows": rows})
        expected_bad = conn.execute(text("SELECT count(*) FROM bulk_source WHERE qty < 0")).scalar_one()
    with create_engine(erp_url).begin() as conn:
        conn.execute(text("CREATE TABLE bulk_target (posting_key varchar(20) PRIMARY KEY, "
                          "quantity numeric(18,3) NOT NULL, unit varchar(4) NOT NULL)"))
    (tmp_path / "mappings" / "flows").mkdir(parents=True)
    shutil.copytree(REPO_ROOT / "mappings" / "crosswalks", tmp_path / "mappings" / "crosswalks")
    (tmp_path / "mappings" / "flows" / "bulk_postings.yaml").write_text(BULK_FLOW.replace("TRANSFORM", transform))
    (tmp_path / "expectations").mkdir()
    (tmp_path / "expectations" / "bulk_postings.json").write_text(json.dumps(BULK_SUITE))
    connections = Connections({"mes_db": mes_url, "erp_db": erp_url})
    try:
        result = run_flow(load_project(tmp_path / "mappings"), "bulk_postings", connections)
        erp = connections.engine("erp_db")
        with erp.connect() as conn:
            loaded = set(conn.execute(text("SELECT posting_key FROM bulk_target")).scalars())
            waiting = _waiting(erp, "bulk_postings")
            checks = _checks(erp, result.record.run_id)
    finally:
        connections.dispose()
    assert expected_bad == 100_000
    bad_keys = {f"id={i}" for i in range(1, failing + 1) if i % 13 != 0}
    assert len(bad_keys) == expected_bad
    assert set(waiting) == bad_keys
    assert len(loaded) == rows - expected_bad
    assert not loaded & {f"B-{i}" for i in range(1, failing + 1) if i % 13 != 0}
    assert result.record.counts.rows_loaded == rows - expected_bad
    assert result.record.counts.rows_quarantined == expected_bad
    both = [r for k, r in waiting.items() if int(k[3:]) % 7 == 0]
    assert both and all("quantity_not_negative" in r and "unit_known" in r for r in both)
    assert checks["quantity_not_negative"]["rows_failed"] == expected_bad
    assert checks["unit_known"]["rows_failed"] == len([i for i in range(1, failing + 1) if i % 13 and i % 7 == 0])
    assert checks["rows_balance"]["success"] and checks["target_matches_batch"]["success"]


def test_a_suite_with_mistakes_is_refused_with_file_and_key_path(tmp_path: Path) -> None:
    shutil.copytree(REPO_ROOT / "mappings", tmp_path / "mappings")
    shutil.copytree(REPO_ROOT / "expectations", tmp_path / "expectations")
    suite_file = tmp_path / "expectations" / "quality_results.json"
    suite = json.loads(suite_file.read_text())
    suite["expectations"][2]["kwargs"]["column"] = "sample_sise"
    suite["expectations"].append({"type": "expect_column_kl_divergence_to_be_less_than", "kwargs": {"column": "defect_qty"}})
    suite["expectations"].append({"type": "expect_column_values_to_be_between", "kwargs": {
        "column": "defect_qty", "min_value": 0, "row_condition": "result == 'R'"}})
    suite_file.write_text(json.dumps(suite))
    flow_file = tmp_path / "mappings" / "flows" / "quality_results.yaml"
    flow_file.write_text(flow_file.read_text().replace(
        "timezone: Asia/Shanghai}", "timezone: Asia/Shanghai, on_failure: {defects_in_sample: warning}}",
    ))
    with pytest.raises(ConfigError) as error:
        load_project(tmp_path / "mappings")
    text_ = str(error.value)
    assert ("quality_results.json: expectations[2].kwargs.column: 'sample_sise' is not a target column of the flow "
            "(did you mean 'sample_size'?)") in text_
    assert "expectations[7].type: 'expect_column_kl_divergence_to_be_less_than' cannot be checked on each batch" in text_
    assert "expectations[8].kwargs.row_condition" in text_
    assert "quality_results.yaml: expectations.on_failure.defects_in_sample: no expectation named 'defects_in_sample'" in text_
    assert "did you mean 'defects_within_sample'?" in text_


PARITY_SUITE = {
    "name": "parity",
    "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "code"},
         "meta": {"name": "code_present"}},
        {"type": "expect_column_values_to_be_null", "kwargs": {"column": "note"},
         "meta": {"name": "no_note"}},
        {"type": "expect_column_values_to_match_regex", "kwargs": {"column": "code", "regex": "^MAT-[0-9]{6}$"},
         "meta": {"name": "code_format"}},
        {"type": "expect_column_values_to_not_match_regex", "kwargs": {"column": "code", "regex": "^MAT-9"},
         "meta": {"name": "not_nine"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "qty", "min_value": 0, "max_value": 500},
         "meta": {"name": "qty_range"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "qty", "min_value": 0, "strict_min": True},
         "meta": {"name": "qty_positive"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "end_ts", "max_value": {"$PARAMETER": "now"}},
         "meta": {"name": "not_future"}},
        {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "unit", "value_set": ["KG", "PC"]},
         "meta": {"name": "unit_known"}},
        {"type": "expect_column_values_to_not_be_in_set", "kwargs": {"column": "unit", "value_set": ["XX"]},
         "meta": {"name": "unit_not_xx"}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "end_ts", "column_B": "start_ts", "or_equal": True},
         "meta": {"name": "end_after_start"}},
        {"type": "expect_column_pair_values_a_to_be_greater_than_b",
         "kwargs": {"column_A": "total", "column_B": "qty", "ignore_row_if": "either_value_is_missing"},
         "meta": {"name": "total_above_qty"}},
        {"type": "expect_column_pair_values_to_be_equal", "kwargs": {"column_A": "unit", "column_B": "unit2"},
         "meta": {"name": "units_agree"}},
        {"type": "expect_column_values_to_be_unique", "kwargs": {"column": "grp"},
         "meta": {"name": "grp_unique"}},
        {"type": "expect_compound_columns_to_be_unique", "kwargs": {"column_list": ["grp", "unit"]},
         "meta": {"name": "grp_unit_unique"}},
        {"type": "unexpected_rows_expectation", "kwargs": {"unexpected_rows_query": "SELECT * FROM {batch} WHERE qty > total"},
         "meta": {"name": "qty_over_total"}},
        {"type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1, "max_value": 10},
         "meta": {"name": "small_batch", "on_failure": "warning"}},
    ],
}


def test_the_pipeline_finds_what_great_expectations_finds(pg_database: Callable[[str], URL], tmp_path: Path) -> None:
    """The same suite through GX 1.x (its SQL data source) and through the pipeline's own checks:
    the same number of failing rows for every expectation, and the same verdict for the batch's."""
    import random

    import great_expectations as gx

    from etl.config import suites
    from etl.config.flows import Flow
    from etl.sync import validation

    rng = random.Random(5)
    now = datetime(2026, 11, 20, 12, 0)
    rows = []
    for i in range(400):
        qty = rng.choice([None, Decimal("-1"), Decimal("0"), Decimal("3.5"), Decimal("250"), Decimal("900")])
        start = now - timedelta(hours=rng.randint(1, 50))
        rows.append({
            "_seq": i, "_source_key": f"id={i}", "_retry": 0,
            "code": rng.choice([None, f"MAT-{rng.randint(0, 999999):06d}", "mat-000001", "MAT-12", f"MAT-9{rng.randint(0, 99999):05d}"]),
            "note": rng.choice([None, None, None, "x"]),
            "qty": qty, "total": rng.choice([None, Decimal("100"), Decimal("1000")]),
            "unit": rng.choice([None, "KG", "PC", "XX", "G"]), "unit2": rng.choice([None, "KG", "PC"]),
            "start_ts": rng.choice([None, start]), "end_ts": rng.choice([None, start + timedelta(hours=rng.randint(-3, 60))]),
            "grp": rng.choice([None, *range(300)]),
        })
    url = pg_database("parity")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(
            "CREATE TABLE parity_batch (_seq bigint, _source_key varchar(100), _retry smallint, code varchar(20), "
            "note varchar(10), qty numeric(18,3), total numeric(18,3), unit varchar(4), unit2 varchar(4), "
            "start_ts timestamp, end_ts timestamp, grp integer)"
        ))
    batch_table = _table(engine, "parity_batch")
    with engine.begin() as conn:
        conn.execute(batch_table.insert(), rows)
    flow = Flow.model_validate({
        "flow": "parity", "direction": "mes_to_erp", "source": {"connection": "a", "table": "s"},
        "target": {"connection": "b", "table": "parity_batch"}, "key": ["code"],
        "columns": [{"target": c, "source": c} for c in ("code", "note", "qty", "total", "unit", "unit2", "start_ts", "end_ts", "grp")],
        "expectations": {"suite": "parity", "clock_skew": 0},
    })
    (tmp_path / "parity.json").write_text(json.dumps(PARITY_SUITE))
    suite = suites.load_suite(tmp_path, flow)
    with engine.connect() as conn:
        verdict = validation.check_batch(conn, batch_table, suite, validation.parameters(flow.expectations, now))
    ours = {o.expectation.name: o for o in verdict.outcomes}

    context = gx.get_context(mode="ephemeral")
    asset = context.data_sources.add_postgres("plant", connection_string=url.render_as_string(hide_password=False)) \
        .add_table_asset("parity_batch", table_name="parity_batch")
    batch = asset.add_batch_definition_whole_table("all").get_batch()
    result = batch.validate(gx.ExpectationSuite(**PARITY_SUITE), expectation_parameters={"now": now},
                            result_format={"result_format": "SUMMARY"})
    engine.dispose()
    assert result.results
    for r in result.results:
        name = r.expectation_config.meta["name"]
        if name == "small_batch":
            assert r.success is False and ours[name].success is False
            continue
        theirs = r.result.get("unexpected_count", r.result.get("observed_value"))
        assert (name, ours[name].rows_failed) == (name, theirs), r.result
        assert ours[name].rows_failed > 0, f"{name}: the data should exercise the rule"


def test_great_expectations_builds_data_docs_of_every_target_and_the_report_links_them(demo: Site, tmp_path: Path) -> None:
    from etl.reporting.data_docs import build_data_docs
    from etl.reporting.report import build_report

    for name in SYNC_FLOWS:
        demo.run(name)
    # A row that slipped into a target by hand, outside the pipeline: GX's nightly run must see it.
    with demo.mes.begin() as conn:
        conn.execute(text("UPDATE equipment SET capacity_hours = 99 WHERE equipment_code = 'EQ-SH01-CUT-01'"))
    site = tmp_path / "dq" / "site"
    docs = build_data_docs(demo.project, demo.connections, site, datetime(2026, 11, 21, 0, 0))
    assert docs.index == site / "index.html" and docs.index.is_file()
    assert set(docs.success) == set(SYNC_FLOWS)
    assert docs.success["work_centers"] is False
    # materials: the demo's materials without a Chinese name fail that (warning) expectation in GX's eyes too.
    assert {f for f, ok in docs.success.items() if not ok} == {"work_centers", "materials", "confirmations"}
    pages = "".join(p.read_text(encoding="utf-8", errors="replace") for p in site.rglob("*.html"))
    assert "capacity_within_a_day" in pages or "capacity_hours" in pages
    # The database URLs stay in this process: GX's files name an environment variable instead.
    database = demo.connections.url("mes_db").database
    assert not [p for p in (tmp_path / "dq").rglob("*") if p.is_file() and database in p.read_text(errors="replace")]

    settings = demo.project.defaults.report.model_copy(update={"data_docs": str(site)})
    project = demo.project.model_copy(update={"defaults": demo.project.defaults.model_copy(update={"report": settings})})
    written = build_report(project, demo.connections, tmp_path / "report.html")
    assert site.joinpath("index.html").resolve().as_uri() in written.html
