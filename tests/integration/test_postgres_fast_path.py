"""The PostgreSQL pieces the benchmark leans on, against the real server: the source-to-target
COPY through an OS pipe (binary where the types allow), its failures on either side, the MERGE
of a batch (a plain INSERT into an empty target), and the settings a run takes for its own
transaction."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from decimal import Decimal

import psycopg2
import pytest
from sqlalchemy import (
    ARRAY,
    Column,
    DateTime,
    Engine,
    Integer,
    Interval,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    column,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.dialects.postgresql import ENUM, JSONB
from sqlalchemy.engine import URL
from sqlalchemy.exc import IntegrityError

from etl.dialects.postgresql import PostgresDialect
from etl.sync.stage_sql import binary_copy_safe, copy_between

pytestmark = pytest.mark.postgres

ROWS = [
    # 18-digit decimal, microseconds, Chinese text, an empty string beside a NULL, JSON
    (1, Decimal("123456789012345.678"), datetime(2026, 11, 20, 8, 0, 0, 123456, tzinfo=UTC), "换线 / changeover", "", {"a": [1, "二"]}),
    (2, Decimal("-0.001"), datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), None, None, None),
    (3, None, None, "tab\there\nnewline \\ backslash", "x", {"nested": {"k": None}}),
]


def _table(name: str) -> Table:
    return Table(
        name, MetaData(),
        Column("id", Integer, primary_key=True, autoincrement=False), Column("qty", Numeric(18, 3)),
        Column("at", DateTime(timezone=True)), Column("note", Text), Column("code", String(8)), Column("doc", JSONB),
    )


@pytest.fixture
def engines(pg_database: Callable[[str], URL]) -> Iterator[tuple[Engine, Engine]]:
    source, target = create_engine(pg_database("copy_src")), create_engine(pg_database("copy_dst"))
    with source.begin() as conn:
        table = _table("reading")
        table.create(conn)
        conn.execute(table.insert(), [dict(zip(("id", "qty", "at", "note", "code", "doc"), r, strict=True)) for r in ROWS])
    with target.begin() as conn:
        _table("reading").create(conn)
    yield source, target
    source.dispose()
    target.dispose()


def _copy(source: Engine, target: Engine, select_sql: str, binary: bool, columns: str = "id, qty, at, note, code, doc") -> int:
    """Copy the rows of ``select_sql`` into the target's reading table, their numbers into ``seq``."""
    names = [c.strip() for c in columns.split(",")]
    statement = text(select_sql).columns(*[column(c) for c in names])
    with target.begin() as conn:
        conn.execute(text("ALTER TABLE reading ADD COLUMN IF NOT EXISTS seq BIGINT"))
    with source.connect() as sconn, target.connect() as tconn:
        with tconn.begin():
            return copy_between(sconn, tconn, statement, "reading", f"{columns}, seq", binary=binary)


@pytest.mark.parametrize("binary", [True, False])
def test_copy_between_servers_keeps_every_value(engines: tuple[Engine, Engine], binary: bool) -> None:
    source, target = engines
    copied = _copy(source, target, "SELECT id, qty, at, note, code, doc FROM reading", binary)
    assert copied == len(ROWS)
    with source.connect() as a, target.connect() as b:
        query = "SELECT id, qty, at, note, code, doc FROM reading ORDER BY id"
        assert b.execute(text(query)).all() == a.execute(text(query)).all()
        # the empty string stayed empty and the NULL stayed NULL
        assert b.execute(text("SELECT code IS NULL FROM reading WHERE id IN (1, 2) ORDER BY id")).scalars().all() == [False, True]


@pytest.mark.parametrize("binary", [True, False])
def test_a_failing_source_query_fails_the_copy_and_loads_nothing(engines: tuple[Engine, Engine], binary: bool) -> None:
    source, target = engines
    with pytest.raises(psycopg2.Error, match="division by zero"):
        _copy(source, target, "SELECT id, qty / 0 AS qty, at, note, code, doc FROM reading", binary)
    with target.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM reading")).scalar_one() == 0


def test_a_failing_target_side_ends_the_copy_without_hanging(engines: tuple[Engine, Engine]) -> None:
    source, target = engines
    with source.begin() as conn:  # enough rows that the source is still writing when the target fails
        conn.execute(text("INSERT INTO reading (id, code) SELECT i, 'c' FROM generate_series(10, 300000) AS i"))
    with target.begin() as conn:
        conn.execute(text("ALTER TABLE reading ADD CONSTRAINT short_ids CHECK (id < 100000)"))
    with pytest.raises(psycopg2.Error, match="short_ids"):
        _copy(source, target, "SELECT id, qty, at, note, code, doc FROM reading ORDER BY id", binary=True)
    with target.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM reading")).scalar_one() == 0


def test_binary_copy_only_for_types_that_travel_alike() -> None:
    plain = _table("plain")
    assert binary_copy_safe(plain, [c.name for c in plain.columns])
    odd = Table(
        "odd", MetaData(), Column("status", ENUM("new", "done", name="status", create_type=False)),
        Column("tags", ARRAY(Text)), Column("took", Interval), Column("n", Integer),
    )
    assert binary_copy_safe(odd, ["n"])
    for name in ("status", "tags", "took"):
        assert not binary_copy_safe(odd, ["n", name]), name


def test_merge_writes_new_and_changed_rows_only(pg_database: Callable[[str], URL]) -> None:
    engine = create_engine(pg_database("merge"))
    meta = MetaData()
    target = Table("order_in", meta, Column("order_no", String(12), primary_key=True), Column("qty", Numeric(9, 3)), Column("note", Text))
    staging = Table("stg", MetaData(), Column("order_no", String(12)), Column("qty", Numeric(9, 3)), Column("note", Text))
    try:
        with engine.begin() as conn:
            target.create(conn)
            staging.create(conn)
            conn.execute(target.insert(), [
                {"order_no": "1", "qty": Decimal("1"), "note": None},
                {"order_no": "2", "qty": Decimal("2"), "note": "same"},
                {"order_no": "9", "qty": Decimal("9"), "note": "not in the batch"},
            ])
            conn.execute(staging.insert(), [
                {"order_no": "1", "qty": Decimal("1"), "note": ""},  # NULL -> empty string is a change
                {"order_no": "2", "qty": Decimal("2.000"), "note": "same"},  # equal
                {"order_no": "3", "qty": None, "note": "new"},
            ])
            columns = ["order_no", "qty", "note"]
            xmin_before = conn.execute(text("SELECT xmin::text FROM order_in WHERE order_no = '2'")).scalar_one()
            assert PostgresDialect().merge(conn, staging, target, ["order_no"], columns, "upsert") == 2
            # the equal row was neither written nor locked
            assert conn.execute(text("SELECT xmin::text, xmax::text FROM order_in WHERE order_no = '2'")).one() == (xmin_before, "0")
            assert conn.execute(select(target).order_by(target.c.order_no)).all() == [
                ("1", Decimal("1.000"), ""), ("2", Decimal("2.000"), "same"), ("3", None, "new"),
                ("9", Decimal("9.000"), "not in the batch"),
            ]
            assert PostgresDialect().merge(conn, staging, target, ["order_no"], columns, "upsert") == 0
            conn.execute(staging.update().values(note="appended?"))
            assert PostgresDialect().merge(conn, staging, target, ["order_no"], columns, "append") == 0
            assert conn.execute(select(target.c.note).where(target.c.order_no == "3")).scalar_one() == "new"
    finally:
        engine.dispose()


def test_a_run_tunes_its_own_transaction_only(pg_database: Callable[[str], URL]) -> None:
    engine = create_engine(pg_database("tune"))
    try:
        with engine.connect() as conn:
            configured = conn.execute(text("SELECT current_setting('jit'), current_setting('work_mem')")).one()
            conn.rollback()
            with conn.begin():
                PostgresDialect().tune(conn, 96)
                assert conn.execute(text("SHOW jit")).scalar_one() == "off"
                assert conn.execute(text("SHOW work_mem")).scalar_one() == "96MB"
            # SET LOCAL ends with the transaction: the session is as the server configured it
            assert conn.execute(text("SELECT current_setting('jit'), current_setting('work_mem')")).one() == configured
    finally:
        engine.dispose()


def _order_tables() -> tuple[Table, Table]:
    """A target keyed by order number and a staging table of the same columns."""
    target = Table("order_in", MetaData(), Column("order_no", String(12), primary_key=True), Column("qty", Numeric(9, 3)))
    staging = Table("stg", MetaData(), Column("order_no", String(12)), Column("qty", Numeric(9, 3)))
    return target, staging


def test_a_small_batch_probes_the_key_index_and_writes_the_same(pg_database: Callable[[str], URL]) -> None:
    """10,000 changed rows into millions: a join over the whole target would grow with it."""
    engine = create_engine(pg_database("merge_small"))
    target, staging = _order_tables()
    dialect = PostgresDialect()
    try:
        with engine.begin() as conn:
            target.create(conn)
            staging.create(conn)
            conn.execute(text("INSERT INTO order_in SELECT i::text, i FROM generate_series(1, 20000) AS i"))
            conn.execute(staging.insert(), [{"order_no": "7", "qty": Decimal("70")}, {"order_no": "8", "qty": Decimal("8")},
                                            {"order_no": "new", "qty": Decimal("1")}])
            assert not dialect._batch_is_large(conn, staging, target)
            assert dialect.merge(conn, staging, target, ["order_no"], ["order_no", "qty"], "upsert") == 2
            qty = select(target.c.qty).where(target.c.order_no.in_(["7", "8", "new"])).order_by(target.c.order_no)
            assert conn.execute(qty).scalars().all() == [
                Decimal("70.000"), Decimal("8.000"), Decimal("1.000"),
            ]
            conn.execute(text("INSERT INTO stg SELECT i::text, i FROM generate_series(1, 20000) AS i"))
            assert dialect._batch_is_large(conn, staging, target)
    finally:
        engine.dispose()


def test_the_first_sync_into_an_empty_target_is_a_plain_insert(pg_database: Callable[[str], URL]) -> None:
    engine = create_engine(pg_database("merge_empty"))
    target, staging = _order_tables()
    statements: list[str] = []
    try:
        with engine.begin() as conn:
            target.create(conn)
            staging.create(conn)
            conn.execute(text("INSERT INTO stg SELECT i::text, i FROM generate_series(1, 500) AS i"))
            event.listen(conn, "before_cursor_execute", lambda *args: statements.append(args[2]))
            assert PostgresDialect().merge(conn, staging, target, ["order_no"], ["order_no", "qty"], "upsert") == 500
            assert [s.split()[0] for s in statements] == ["SELECT", "INSERT"]
            assert "ON CONFLICT" not in statements[1] and "MERGE" not in statements[1]
            assert conn.execute(select(func.sum(target.c.qty))).scalar_one() == Decimal(500 * 501 // 2)
    finally:
        engine.dispose()


def test_a_key_written_meanwhile_by_another_writer_fails_the_first_sync(pg_database: Callable[[str], URL]) -> None:
    """The target was empty when the run looked, but a writer outside the pipeline inserts a key
    of the batch before committing: the run's INSERT fails on the unique index, nothing is
    overwritten, and the other writer's row stays."""
    url = pg_database("merge_race")
    engine = create_engine(url)
    target, staging = _order_tables()
    with engine.begin() as conn:
        target.create(conn)
    other = psycopg2.connect(url.render_as_string(hide_password=False).replace("postgresql+psycopg2", "postgresql"))
    failure: list[BaseException] = []

    def first_sync() -> None:
        try:
            with engine.begin() as conn:
                staging.create(conn)
                conn.execute(text("INSERT INTO stg SELECT i::text, i FROM generate_series(1, 10) AS i"))
                PostgresDialect().merge(conn, staging, target, ["order_no"], ["order_no", "qty"], "upsert")
        except BaseException as exc:  # handed to the test's thread
            failure.append(exc)

    try:
        other.cursor().execute("INSERT INTO order_in VALUES ('7', 700)")  # not committed yet
        run = threading.Thread(target=first_sync)
        run.start()
        waiting = text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()")
        with engine.connect() as watch:  # the run's INSERT waits for the other writer's key
            for _ in range(200):
                if watch.execute(waiting).scalar_one():
                    break
                watch.rollback()  # pg_stat_activity holds still within a transaction
                time.sleep(0.05)
            else:
                pytest.fail("the first sync never waited for the other writer's key")
        other.commit()
        run.join(timeout=30)
        assert not run.is_alive()
        assert len(failure) == 1 and isinstance(failure[0], IntegrityError), failure
        with engine.connect() as conn:
            assert conn.execute(select(target)).all() == [("7", Decimal("700.000"))]
    finally:
        other.close()
        engine.dispose()
