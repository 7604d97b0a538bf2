"""cursor.skip_loaded on the SQL path, against the real server: an incremental run sets aside
the rows its lookback reads again at the cursor value the last run loaded, and still loads
every row that changed or arrived late; a full refresh compares everything again."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Numeric, String, Table, Text, func, select, text
from sqlalchemy.engine import URL

from etl.config.flows import Defaults, Flow, Project
from etl.config.paths import REPO_ROOT
from etl.core.errors import EtlError, StepFailed
from etl.sync.connections import Connections
from etl.sync.pipeline_tables import lookback_loaded, quarantine
from etl.sync.runner import RunOptions, RunResult, run_flow

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 11, 20, 8, 0, 0, 123456, tzinfo=UTC)


def _flow(key: list[str], transform: str = "auto") -> Flow:
    keyed = [{"target": k, "source": k} for k in key]
    return Flow.model_validate({
        "flow": "readings",
        "direction": "mes_to_erp",
        "source": {"connection": "src", "table": "reading"},
        "target": {"connection": "dst", "table": "reading_in"},
        "key": key,
        "cursor": {"column": "updated_at", "lookback": "10m", "skip_loaded": True},
        "load": {"transform": transform},
        "columns": [*keyed, {"target": "qty", "source": "qty"}, {"target": "note", "source": "note"}],
    })


def _tables() -> tuple[Table, Table]:
    source = Table(
        "reading", MetaData(),
        Column("line", String(8), primary_key=True), Column("id", Integer, primary_key=True, autoincrement=False),
        Column("qty", Numeric(18, 3)), Column("note", Text), Column("updated_at", DateTime(timezone=True), nullable=False),
    )
    target = Table(
        "reading_in", MetaData(),
        Column("line", String(8), primary_key=True), Column("id", Integer, primary_key=True, autoincrement=False),
        Column("qty", Numeric(18, 3)), Column("note", String(8)),
    )
    return source, target


class Plant:
    """A source and a target database with the reading tables, and a way to run the flow."""

    def __init__(self, urls: dict[str, URL], key: list[str]):
        self.connections = Connections({"src": urls["src"], "dst": urls["dst"]})
        self.source, self.target = _tables()
        if key == ["id"]:  # one key column: the target's key is the id alone
            self.target = Table(
                "reading_in", MetaData(), Column("id", Integer, primary_key=True, autoincrement=False),
                Column("qty", Numeric(18, 3)), Column("note", String(8)),
            )
        self.source.create(self.connections.engine("src"))
        self.target.create(self.connections.engine("dst"))
        self.project = Project(flows={"readings": _flow(key)}, defaults=Defaults(), mappings_dir=str(REPO_ROOT / "mappings"))

    def put(self, *rows: dict[str, Any]) -> None:
        with self.connections.engine("src").begin() as conn:
            for row in rows:
                conn.execute(text(
                    "INSERT INTO reading (line, id, qty, note, updated_at) VALUES (:line, :id, :qty, :note, :updated_at) "
                    "ON CONFLICT (line, id) DO UPDATE SET qty = EXCLUDED.qty, note = EXCLUDED.note, updated_at = EXCLUDED.updated_at"
                ), {"line": "L1", "note": "ok", "qty": Decimal("1.000"), **row})

    def run(self, **options: Any) -> RunResult:
        return run_flow(self.project, "readings", self.connections, RunOptions(**options))

    def target_rows(self) -> dict[int, tuple[Decimal, str]]:
        with self.connections.engine("dst").connect() as conn:
            return {r.id: (r.qty, r.note) for r in conn.execute(select(self.target))}

    def dst(self, sql: str) -> None:
        with self.connections.engine("dst").begin() as conn:
            conn.execute(text(sql))

    def memory(self) -> int:
        with self.connections.engine("dst").connect() as conn:
            return conn.execute(select(func.count()).select_from(lookback_loaded)).scalar_one()


@pytest.fixture(params=[["id"], ["line", "id"]], ids=["one key column", "two key columns"])
def plant(request: pytest.FixtureRequest, pg_database: Callable[[str], URL]) -> Iterator[Plant]:
    p = Plant({name: pg_database(name) for name in ("src", "dst")}, request.param)
    yield p
    p.connections.dispose()


def test_rows_the_last_run_loaded_are_set_aside_and_changes_still_load(plant: Plant) -> None:
    plant.put(*[{"id": i, "updated_at": T0} for i in range(1, 6)])
    assert plant.run().record.counts.rows_loaded == 5
    assert plant.memory() == 0  # a run that read everything remembers nothing
    first = plant.run()  # the first incremental run compares its lookback's rows, then keeps them
    assert (first.record.counts.rows_read, first.record.counts.rows_unchanged) == (5, 5)
    assert plant.memory() == 5

    # The target's sessions now render times and dates differently: the memory reads back alike.
    plant.dst(f"ALTER DATABASE \"{plant.connections.engine('dst').url.database}\" SET TimeZone = 'Asia/Shanghai'")
    plant.dst(f"ALTER DATABASE \"{plant.connections.engine('dst').url.database}\" SET DateStyle = 'SQL, DMY'")
    plant.connections.engine("dst").dispose()
    plant.dst("UPDATE reading_in SET note = 'by hand' WHERE id = 1")
    plant.put(
        {"id": 2, "qty": Decimal("2.500"), "updated_at": T0 + timedelta(minutes=1)},  # changed: its cursor moved
        {"id": 6, "updated_at": T0 - timedelta(minutes=5)},  # committed late, behind the watermark
    )
    second = plant.run()
    counts = second.record.counts
    assert (counts.rows_read, counts.rows_loaded, counts.rows_unchanged) == (6, 2, 4)
    assert second.record.options["rows_set_aside"] == 4
    rows = plant.target_rows()
    assert rows[2] == (Decimal("2.500"), "ok") and rows[6] == (Decimal("1.000"), "ok")
    # Row 1 was set aside, not compared: the hand edit stays until a full refresh.
    assert rows[1] == (Decimal("1.000"), "by hand")
    balance = [c for c in second.record.checks if c.name == "rows_balance"][0]
    assert balance.success and "loaded by the last run at the same cursor value 4" in (balance.detail or "")
    # The next lookback starts 10 minutes before the new watermark (T0 + 1 min): all six stay.
    assert plant.memory() == 6

    third = plant.run(full_refresh=True)
    assert third.record.counts.rows_loaded == 1
    assert plant.target_rows()[1] == (Decimal("1.000"), "ok")
    assert plant.memory() == 0


def test_the_memory_holds_only_the_next_lookback(plant: Plant) -> None:
    plant.put({"id": 1, "updated_at": T0 - timedelta(hours=1)}, {"id": 2, "updated_at": T0})
    plant.run()
    plant.run()
    assert plant.memory() == 1  # row 1 is an hour behind: no lookback reads it again
    plant.put({"id": 3, "updated_at": T0 + timedelta(hours=1)})
    run = plant.run()
    # Row 2 sits an hour behind the new watermark now: read (lookback from T0 - 10 min) and set
    # aside, but no longer remembered.
    assert (run.record.counts.rows_read, run.record.counts.rows_loaded, run.record.counts.rows_unchanged) == (2, 1, 1)
    assert plant.memory() == 1


def test_a_quarantined_row_is_never_set_aside(plant: Plant) -> None:
    plant.put({"id": 1, "updated_at": T0}, {"id": 2, "note": "far too long for eight", "updated_at": T0})
    first = plant.run()
    assert (first.record.counts.rows_loaded, first.record.counts.rows_quarantined) == (1, 1)
    plant.run()
    assert plant.memory() == 1
    second = plant.run()
    # The lookback reads both again: row 1 is set aside, row 2 is tried again (twice: read and
    # retried from quarantine) and stays in quarantine, with its reason.
    assert second.record.counts.rows_unchanged == 1
    assert second.record.counts.rows_quarantined == 1
    with plant.connections.engine("dst").connect() as conn:
        waiting = conn.execute(select(quarantine.c.source_key, quarantine.c.status)).all()
    assert [s for _, s in waiting] == ["waiting"] and "id=2" in waiting[0][0]


def test_a_row_back_at_an_older_version_is_loaded(plant: Plant) -> None:
    """A source restored from a backup brings a row back at a cursor value an earlier run loaded;
    the memory holds only the latest version, so the restored row is compared and loaded."""
    plant.put({"id": 1, "updated_at": T0})
    plant.run()
    plant.run()
    assert plant.memory() == 1
    plant.put({"id": 1, "qty": Decimal("9.000"), "updated_at": T0 + timedelta(minutes=1)})
    assert plant.run().record.counts.rows_loaded == 1
    plant.put({"id": 1, "qty": Decimal("1.000"), "updated_at": T0})
    assert plant.run().record.counts.rows_loaded == 1
    assert plant.target_rows()[1] == (Decimal("1.000"), "ok")


def test_the_python_path_refuses_skip_loaded(pg_database: Callable[[str], URL]) -> None:
    plant = Plant({name: pg_database(name) for name in ("src", "dst")}, ["id"])
    try:
        plant.project = Project(flows={"readings": _flow(["id"], transform="python")}, defaults=Defaults(),
                                mappings_dir=str(REPO_ROOT / "mappings"))
        plant.put({"id": 1, "updated_at": T0})
        with pytest.raises(StepFailed) as failure:
            plant.run()
        assert isinstance(failure.value.cause, EtlError)
        message = str(failure.value.cause)
        assert "'readings'" in message and "cursor.skip_loaded" in message and "Python path" in message
        with plant.connections.engine("dst").connect() as conn:
            assert conn.execute(select(func.count()).select_from(plant.target)).scalar_one() == 0
    finally:
        plant.connections.dispose()


def test_a_run_since_a_given_time_compares_everything_it_reads(plant: Plant) -> None:
    plant.put({"id": 1, "updated_at": T0}, {"id": 2, "updated_at": T0})
    plant.run()
    plant.run()
    assert plant.memory() == 2
    plant.dst("UPDATE reading_in SET note = 'by hand'")
    run = plant.run(since=T0 - timedelta(days=1))
    assert (run.record.counts.rows_read, run.record.counts.rows_loaded) == (2, 2)
    assert plant.memory() == 0  # the next incremental run starts the memory again
