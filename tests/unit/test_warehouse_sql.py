"""sql/warehouse/ read as files: every object documented with grain and key, explicit columns,
a view for each database, and tables that hold what the warehouse flows write."""

from __future__ import annotations

import re
from datetime import date

import pytest
from sqlalchemy import inspect

from etl.config.paths import REPO_ROOT
from etl.config.project import load_project
from etl.sync.connections import create_db_engine
from etl.warehouse.refresh import (
    VIEWS,
    WAREHOUSE_SQL,
    WarehouseError,
    build,
    date_row,
    header_comment,
    sql_statements,
    table_objects,
    view_objects,
    warehouse_connection,
    warehouse_flows,
)

SQL_FILES = sorted(WAREHOUSE_SQL.rglob("*.sql"))


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: str(p.relative_to(WAREHOUSE_SQL)))
def test_every_file_says_what_it_is_its_grain_and_key(path) -> None:
    header = header_comment(path.read_text(encoding="utf-8"))
    name = path.stem
    assert header.startswith(f"{name}: "), f"{path}: the header starts with the object's name"
    assert "Grain:" in header and "Key:" in header, f"{path}: the header gives grain and key"


@pytest.mark.parametrize("path", SQL_FILES, ids=lambda p: str(p.relative_to(WAREHOUSE_SQL)))
def test_no_select_star(path) -> None:
    code = "\n".join(sql_statements(path.read_text(encoding="utf-8")))
    assert not re.search(r"select\s+(\w+\.)?\*", code, re.IGNORECASE), f"{path}: list the columns"


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_every_view_has_sql_for_both_databases(dialect: str) -> None:
    views = view_objects(dialect)
    assert [v.name for v in views] == list(VIEWS)
    assert all(v.kind == "view" and v.path.stem == v.name for v in views)


def test_a_database_without_its_own_sql_is_told_which_file_to_write() -> None:
    with pytest.raises(WarehouseError, match="sql/warehouse/views/mssql/int_confirmation.sql"):
        view_objects("mssql")


def test_statements_split_at_line_ends_and_keep_literals() -> None:
    sql = "-- header\nCREATE TABLE t (a VARCHAR(3)); -- trailing\nINSERT INTO t VALUES ('a;--b');\n"
    assert sql_statements(sql) == ["CREATE TABLE t (a VARCHAR(3))", "INSERT INTO t VALUES ('a;--b')"]
    assert header_comment("-- one\n--   two\nSELECT 1;") == "one\n  two"


def test_tables_hold_every_column_the_warehouse_flows_write() -> None:
    engine = create_db_engine("sqlite://")
    build(engine)
    inspector = inspect(engine)
    project = load_project(REPO_ROOT / "mappings")
    for flow in warehouse_flows(project):
        columns = {c["name"] for c in inspector.get_columns(flow.target.table)}
        missing = [c.target for c in flow.columns if c.target not in columns]
        assert not missing, f"{flow.file}: {flow.target.table} lacks {missing}"
        for parent in flow.parents:
            assert parent.key in {c["name"] for c in inspector.get_columns(parent.table)}, flow.file
    assert warehouse_connection(project) == "warehouse_db"
    assert {t.name for t in table_objects()} <= set(inspector.get_table_names())
    assert set(VIEWS) <= set(inspector.get_view_names())


def test_date_rows() -> None:
    assert date_row(date(2026, 1, 1)) == {
        "calendar_date": date(2026, 1, 1), "year": 2026, "quarter": 1, "month": 1, "year_month": "2026-01",
        "day_of_month": 1, "iso_year": 2026, "iso_week": 1, "day_of_week": 4, "is_weekend": False,
    }
    sunday = date_row(date(2027, 1, 3))
    assert (sunday["iso_year"], sunday["iso_week"], sunday["day_of_week"], sunday["is_weekend"]) == (2026, 53, 7, True)
