"""SQL Server cannot run here: its statements are checked by compiling them with SQLAlchemy's
mssql dialect and asserting their shape."""

from __future__ import annotations

from datetime import datetime

import pytest
from sqlalchemy import Column, DateTime, Integer, MetaData, Numeric, Table, create_engine
from sqlalchemy.dialects import mssql
from sqlalchemy.schema import CreateTable

from etl.config.flows import Flow
from etl.core.types import column_type
from etl.core.watermark import Window
from etl.dialects import dialect_for
from etl.dialects.mssql import MSSQLDialect, merge_statement
from etl.sync.connections import to_sqlalchemy_url
from etl.sync.extract import TableSource

DIALECT = mssql.dialect()


def test_merge_is_one_statement_with_holdlock_and_null_safe_change_test() -> None:
    sql = merge_statement(DIALECT, "if_confirmation", "#etl_stg_confirmations", ["posting_key"],
                          ["posting_key", "order_no", "yield_qty"], "upsert")
    assert sql == (
        "MERGE INTO if_confirmation WITH (HOLDLOCK) AS t\n"
        "USING (SELECT posting_key, order_no, yield_qty FROM [#etl_stg_confirmations] WHERE _seq IN "
        "(SELECT max(_seq) FROM [#etl_stg_confirmations] GROUP BY posting_key)) AS s\n"
        "ON t.posting_key = s.posting_key\n"
        "WHEN MATCHED AND NOT EXISTS (SELECT s.order_no, s.yield_qty INTERSECT SELECT t.order_no, t.yield_qty) "
        "THEN UPDATE SET t.order_no = s.order_no, t.yield_qty = s.yield_qty\n"
        "WHEN NOT MATCHED BY TARGET THEN INSERT (posting_key, order_no, yield_qty) "
        "VALUES (s.posting_key, s.order_no, s.yield_qty);"
    )


def test_merge_quotes_awkward_identifiers_with_brackets_and_schema() -> None:
    sql = merge_statement(DIALECT, "Production Order", "#etl_stg_x", ["Order No"], ["Order No", "Qty"], "upsert", "dbo")
    assert sql.startswith("MERGE INTO dbo.[Production Order] WITH (HOLDLOCK) AS t")
    assert "ON t.[Order No] = s.[Order No]" in sql
    assert "GROUP BY [Order No]" in sql


def test_append_mode_never_updates() -> None:
    sql = merge_statement(DIALECT, "t", "#s", ["k"], ["k", "v"], "append")
    assert "WHEN MATCHED" not in sql
    assert "WHEN NOT MATCHED BY TARGET THEN INSERT (k, v)" in sql


def test_staging_is_a_hash_temp_table_with_the_targets_unicode_types() -> None:
    target = Table(
        "if_confirmation", MetaData(),
        Column("posting_key", mssql.NVARCHAR(40), primary_key=True),
        Column("text_zh", mssql.NVARCHAR(80)),
        Column("yield_qty", Numeric(18, 3)),
        Column("start_time", mssql.DATETIME2(7)),
        Column("posted_at", mssql.DATETIMEOFFSET(7)),
    )
    staging = MSSQLDialect().staging_table(target, ["posting_key", "text_zh", "yield_qty", "start_time", "posted_at"], "confirmations")
    ddl = str(CreateTable(staging).compile(dialect=DIALECT))
    assert ddl.startswith("\nCREATE TABLE [#etl_stg_confirmations] (")
    assert "TEMPORARY" not in ddl
    for fragment in ("posting_key NVARCHAR(40) NULL", "text_zh NVARCHAR(80) NULL", "yield_qty NUMERIC(18, 3) NULL",
                     "start_time DATETIME2(7) NULL", "posted_at DATETIMEOFFSET(7) NULL", "_source_key NVARCHAR(512) NOT NULL"):
        assert fragment in ddl


def test_datetimeoffset_is_time_zone_aware_and_nvarchar_is_text() -> None:
    assert column_type(mssql.DATETIMEOFFSET()).tz_aware
    assert not column_type(mssql.DATETIME2()).tz_aware
    assert column_type(mssql.NVARCHAR(80)).kind == "string" and column_type(mssql.NVARCHAR(80)).length == 80


def test_mssql_urls_select_the_pymssql_driver_and_the_mssql_dialect() -> None:
    url = to_sqlalchemy_url("mssql://sync:s3cret@erp-db.plant.local:1433/ERP")
    assert url.drivername == "mssql+pymssql" and url.database == "ERP"
    engine = create_engine(url)  # no connection is made until used
    assert isinstance(dialect_for(engine), MSSQLDialect)


def test_incremental_extract_compiles_with_bound_values_and_bracket_quoting() -> None:
    flow = Flow.model_validate({
        "flow": "orders", "direction": "erp_to_mes",
        "source": {"connection": "erp_db", "table": "Production Order", "where": {"Status": ["REL", "TECO"]}},
        "target": {"connection": "mes_db", "table": "work_order"},
        "key": ["wo_no"], "cursor": {"column": "Last Change"},
        "columns": [{"target": "wo_no", "source": "Order No"}, {"target": "qty", "source": "Qty"}],
    })
    table = Table("Production Order", MetaData(), Column("Order No", Integer), Column("Qty", Numeric(18, 3)),
                  Column("Status", mssql.NVARCHAR(4)), Column("Last Change", DateTime))
    source = TableSource(conn=None, table=table, flow=flow)  # type: ignore[arg-type]
    compiled = source.query(Window(datetime(2026, 11, 20, 7, 50), datetime(2026, 11, 20, 8, 0))).compile(dialect=DIALECT)
    sql = str(compiled)
    assert "FROM [Production Order]" in sql
    assert "[Production Order].[Last Change] >= :Last_Change_1 AND [Production Order].[Last Change] <= :Last_Change_2" in sql
    assert "ORDER BY [Production Order].[Last Change], [Production Order].[Order No]" in sql
    assert "'REL'" not in sql and "2026" not in sql  # values are bound, never spliced
    assert compiled.params == {
        "Status_1": ["REL", "TECO"],
        "Last_Change_1": datetime(2026, 11, 20, 7, 50),
        "Last_Change_2": datetime(2026, 11, 20, 8, 0),
    }


@pytest.mark.parametrize("flow", ["orders", "a_much_longer_flow_name_here"])
def test_flow_lock_is_an_application_lock_owned_by_the_transaction(flow: str) -> None:
    class Recorder:
        def __init__(self) -> None:
            self.sql = ""
            self.params: dict = {}

        def execute(self, statement, params):  # noqa: ANN001, ANN202
            self.sql, self.params = str(statement), params

            class Result:
                @staticmethod
                def scalar_one() -> int:
                    return 0

            return Result()

    conn = Recorder()
    assert MSSQLDialect().try_lock(conn, flow)  # type: ignore[arg-type]
    assert "sp_getapplock" in conn.sql and "@LockOwner = 'Transaction'" in conn.sql and "@LockTimeout = 0" in conn.sql
    assert conn.params["resource"].startswith("erp-mes-sync:")


class _Recording:
    """Stands in for a SQL Server connection (none can run here): compiles and keeps each statement."""

    dialect = DIALECT

    def __init__(self, rowcount: int = 0) -> None:
        self.statements: list[str] = []
        self.rowcount = rowcount

    def execute(self, statement, params=None):  # noqa: ANN001, ANN202
        self.statements.append(str(statement.compile(dialect=DIALECT)) if hasattr(statement, "compile") else str(statement))
        recording = self

        class Result:
            rowcount = recording.rowcount

        return Result()


def test_staging_lifecycle_and_merge_statements_in_order() -> None:
    target = Table("work_order", MetaData(), Column("wo_no", mssql.NVARCHAR(20), primary_key=True), Column("qty", Numeric(18, 3)))
    conn = _Recording(rowcount=7)
    dialect = MSSQLDialect()
    staging = dialect.create_staging(conn, target, ["wo_no", "qty"], "production_orders")  # type: ignore[arg-type]
    written = dialect.merge(conn, staging, target, ["wo_no"], ["wo_no", "qty"], "upsert")  # type: ignore[arg-type]
    dialect.drop_staging(conn, staging)  # type: ignore[arg-type]
    assert written == 7
    drop, create, merge, drop_again = conn.statements
    assert drop == drop_again == "IF OBJECT_ID('tempdb..#etl_stg_production_orders') IS NOT NULL DROP TABLE [#etl_stg_production_orders]"
    assert create.strip().startswith("CREATE TABLE [#etl_stg_production_orders]")
    assert merge.startswith("MERGE INTO work_order WITH (HOLDLOCK) AS t")


def test_natural_key_merge_updates_changed_rows_from_staging_then_inserts_missing_keys() -> None:
    target = Table(
        "Production Order", MetaData(),
        Column("id", Integer, primary_key=True), Column("origin", mssql.NVARCHAR(32)),
        Column("qty", Numeric(18, 3)), Column("name", mssql.NVARCHAR(32)), schema="dbo",
    )
    conn = _Recording(rowcount=2)
    dialect = MSSQLDialect()
    staging = dialect.staging_table(target, ["origin", "qty", "name"], "mo")
    written = dialect.merge_by_natural_key(conn, staging, target, ["origin"], ["origin", "qty"], "upsert", ["name"])  # type: ignore[arg-type]
    assert written == 4
    changed, inserted = conn.statements
    assert changed == (
        "UPDATE dbo.[Production Order] SET qty=[#etl_stg_mo].qty FROM dbo.[Production Order], [#etl_stg_mo] "
        "WHERE dbo.[Production Order].origin = [#etl_stg_mo].origin "
        "AND NOT EXISTS (SELECT dbo.[Production Order].qty INTERSECT SELECT [#etl_stg_mo].qty)"
    )
    assert inserted == (
        "INSERT INTO dbo.[Production Order] (origin, qty, name) "
        "SELECT [#etl_stg_mo].origin, [#etl_stg_mo].qty, [#etl_stg_mo].name \nFROM [#etl_stg_mo] \n"
        "WHERE NOT (EXISTS (SELECT 1 \nFROM dbo.[Production Order] \nWHERE dbo.[Production Order].origin = [#etl_stg_mo].origin))"
    )
    assert "id" not in inserted.split("SELECT")[0]  # the target generates its own id


def test_natural_key_merge_in_append_mode_only_inserts() -> None:
    target = Table("t", MetaData(), Column("id", Integer, primary_key=True), Column("k", Integer), Column("v", Integer))
    conn = _Recording()
    staging = MSSQLDialect().staging_table(target, ["k", "v"], "t")
    MSSQLDialect().merge_by_natural_key(conn, staging, target, ["k"], ["k", "v"], "append")  # type: ignore[arg-type]
    (inserted,) = conn.statements
    assert inserted.startswith("INSERT INTO t (k, v) SELECT")


def test_database_sequence_values_are_drawn_with_next_value_for() -> None:
    drawn = iter([7, 8])

    class Sequenced(_Recording):
        def execute(self, statement, params=None):  # noqa: ANN001, ANN202
            super().execute(statement, params)

            class Result:
                @staticmethod
                def scalar_one() -> int:
                    return next(drawn)

            return Result()

    conn = Sequenced()
    assert MSSQLDialect().next_values(conn, "dbo.Order Numbers", 2) == [7, 8]  # type: ignore[arg-type]
    assert conn.statements == ["SELECT NEXT VALUE FOR dbo.[Order Numbers]"] * 2
