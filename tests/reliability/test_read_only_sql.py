"""The plant's own SQL cannot write (issue #25, item 7): suite queries
(``unexpected_rows_expectation``) and business reconciliation queries are one statement that
only reads, refused by ``check`` and at run time otherwise, and run where the database refuses
writes, inside the run's transaction without breaking the run's own writes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError
from sync_harness import SiteFactory

from etl.cli import main as cli
from etl.config.flows import BusinessReconciliation, ReconciliationQuery
from etl.config.user_sql import read_only_problem
from etl.core.errors import ConfigError, StepFailed
from etl.dialects import dialect_for
from etl.sync.business_reconciliation import reconcile

pytestmark = pytest.mark.slow

# --- the parse: one statement that only reads, in the dialect that runs it --------------------

REFUSED = {
    "a second statement": ("SELECT * FROM t; DROP TABLE t", None, "2 statements"),
    "COMMIT between statements": ("DELETE FROM t; COMMIT; SELECT 1 AS value", None, "3 statements"),
    "breaks out of its parentheses": ("SELECT * FROM t WHERE 1 = 0) AS x; DROP TABLE t; SELECT * FROM (SELECT 1", None, "does not parse"),
    "a write in a CTE": ("WITH gone AS (DELETE FROM t RETURNING *) SELECT * FROM gone", "postgresql", "DELETE"),
    "SELECT INTO": ("SELECT * INTO t2 FROM t", None, "SELECT ... INTO"),
    "a row lock": ("SELECT * FROM t FOR UPDATE", None, "row lock"),
    "a lock in a subquery": ("SELECT * FROM t WHERE a IN (SELECT a FROM u FOR UPDATE)", "postgresql", "row lock"),
    "not a SELECT": ("UPDATE t SET a = 1", None, "UPDATE statement"),
    "frees the run's lock": ("SELECT * FROM t WHERE pg_advisory_unlock_all() IS NULL", "postgresql", "pg_advisory_unlock_all"),
    "frees the run's MariaDB lock": ("SELECT * FROM t WHERE RELEASE_ALL_LOCKS() = 0", "mariadb", "RELEASE_ALL_LOCKS"),
    "draws a sequence": ("SELECT nextval('s') AS value", "postgresql", "nextval"),
    "a stored function on MariaDB": ("SELECT * FROM t WHERE wipe() = 0", "mariadb", "not a built-in"),
    "a MySQL comment hides nothing from PostgreSQL": ("SELECT 1 # ; DROP TABLE t", "postgresql", "does not parse"),
}

ACCEPTED = {
    "a plain query": ("SELECT * FROM t WHERE qty > 0 AND reason IS NULL", None),
    "a semicolon in a string": ("SELECT * FROM t WHERE note <> ';DROP TABLE t'", None),
    "a semicolon in a comment": ("SELECT * FROM t /* ; DROP TABLE t */ WHERE a = 1 -- ; DELETE", None),
    "a union": ("SELECT a FROM t UNION ALL SELECT a FROM u", None),
    "a cast and a regex": ("SELECT * FROM t WHERE a::text ~ '^[0-9]+$'", "postgresql"),
    "a user function on PostgreSQL (the read-only transaction guards it)": ("SELECT * FROM t WHERE f(a)", "postgresql"),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_sql_that_is_not_one_read_only_select_is_refused(case: str, figures: Any) -> None:
    sql, dialect, said = REFUSED[case]
    problem = read_only_problem(sql, dialect)
    assert problem is not None and said in problem, problem
    figures.inputs.add(f"hostile: user SQL {case}")


@pytest.mark.parametrize("case", ACCEPTED, ids=list(ACCEPTED))
def test_sql_that_only_reads_is_accepted(case: str) -> None:
    sql, dialect = ACCEPTED[case]
    assert read_only_problem(sql, dialect) is None


# --- suite queries, on a real site ---------------------------------------------------------------

WIPE = "CREATE FUNCTION wipe() RETURNS integer LANGUAGE sql AS 'DELETE FROM production_order; SELECT 0'"

SUITE_QUERIES = {
    # query, refused by check (else only by the database, at run time)
    "breaks out of its parentheses (the issue's example)": (
        "SELECT * FROM {batch} WHERE 1 = 0) AS x; DROP TABLE production_order; SELECT * FROM (SELECT 1 AS _seq", True,
    ),
    "a second statement": ("SELECT * FROM {batch}; DROP TABLE production_order", True),
    "a write in a CTE": (
        "WITH gone AS (DELETE FROM production_order RETURNING order_no) "
        "SELECT * FROM {batch} WHERE order_no IN (SELECT order_no FROM gone)",
        True,
    ),
    "a function that writes": ("SELECT * FROM {batch} WHERE wipe() = 0", False),
}


def _set_suite_query(site: Any, query: str) -> str:
    path = site.mappings.parent / "expectations" / "confirmations.json"
    suite = json.loads(path.read_text(encoding="utf-8"))
    index = next(i for i, e in enumerate(suite["expectations"]) if e.get("meta", {}).get("name") == "scrap_needs_reason")
    suite["expectations"][index]["kwargs"]["unexpected_rows_query"] = query
    path.write_text(json.dumps(suite), encoding="utf-8")
    return f"expectations/confirmations.json: expectations[{index}].kwargs.unexpected_rows_query"


@pytest.mark.parametrize("case", SUITE_QUERIES, ids=list(SUITE_QUERIES))
def test_a_suite_query_cannot_write(
    sites: SiteFactory, case: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    query, seen_by_check = SUITE_QUERIES[case]
    site = sites.new("suite_sql")
    site.execute("erp", WIPE)
    orders = site.count("erp", "production_order")
    where = _set_suite_query(site, query)
    for side in ("erp", "mes"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{side.upper()}_DB", site.connection_urls[f"{side}_db"])
    code = cli.main(["--mappings", str(site.mappings), "check"])
    err = capsys.readouterr().err
    if seen_by_check:
        assert code == cli.EXIT_CONFIG, err
        assert where in err and "refused" in err, err
        with pytest.raises(ConfigError, match="unexpected_rows_query"):
            site.reload()
    else:
        assert code == 0, err
        site.reload()
        with pytest.raises(StepFailed) as failure:
            site.run("confirmations")
        cause = str(failure.value.cause)
        assert failure.value.step == "validate" and isinstance(failure.value.cause, ConfigError), cause
        assert where in cause and "scrap_needs_reason" in cause and "read-only transaction" in cause, cause
        assert site.ledger("erp", "confirmations")[-1]["outcome"] != "success"
    assert site.count("erp", "production_order") == orders
    figures.inputs.add(f"hostile: suite SQL {case}")


def test_a_suite_query_that_reads_leaves_the_runs_own_writes_working(sites: SiteFactory) -> None:
    """The read-only guard sits inside the run's transaction: the merge after it still writes."""
    site = sites.new("suite_sql_ok")
    site.execute("mes", "UPDATE operation_report SET scrap_qty = 2, scrap_reason = NULL "
                        "WHERE report_id = (SELECT min(report_id) FROM operation_report)")
    result = site.run("confirmations")
    assert result.record.counts.rows_loaded > 0
    assert site.count("erp", "if_confirmation") == result.record.counts.rows_loaded
    scrap = next(c for c in result.record.checks if c.name == "scrap_needs_reason")
    assert scrap.rows_failed == 1 and scrap.action == "warning"


# --- business reconciliations ---------------------------------------------------------------------

def test_a_reconciliation_that_writes_is_refused_by_check(
    sites: SiteFactory, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    site = sites.new("recon_sql")
    path = site.mappings / "reconciliations.yaml"
    text_ = (Path(__file__).parents[2] / "mappings" / "reconciliations.yaml").read_text(encoding="utf-8")
    first = "        SELECT o.order_no, o.quantity AS value\n"
    assert first in text_
    path.write_text(text_.replace(first, "        DELETE FROM production_order; COMMIT;\n" + first, 1), encoding="utf-8")
    assert cli.main(["--mappings", str(site.mappings), "check"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    assert "reconciliations.yaml" in err and "sql" in err and "statements" in err, err
    figures.inputs.add("hostile: reconciliation DELETE; COMMIT; SELECT")


def test_a_reconciliation_query_runs_where_it_cannot_write(sites: SiteFactory, figures: Any) -> None:
    site = sites.new("recon_ro")
    site.execute("erp", WIPE)
    orders = site.count("erp", "production_order")
    check = BusinessReconciliation(
        name="wiping", key=["order_no"],
        erp=ReconciliationQuery(connection="erp_db", sql="SELECT order_no, wipe() AS value FROM production_order"),
        mes=ReconciliationQuery(connection="erp_db", sql="SELECT order_no, 0 AS value FROM production_order"),
    )
    result = reconcile(check, site.connections)
    assert result.error is not None and "read-only transaction" in result.error, result.error
    assert site.count("erp", "production_order") == orders
    figures.inputs.add("hostile: reconciliation through a function that writes")


# --- the mechanism on each database ---------------------------------------------------------------

def _read_only_inside_a_written_transaction(url: Any, refused: bool) -> None:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(text("CREATE TABLE ro_probe (a integer)"))
            conn.commit()
            conn.execute(text("INSERT INTO ro_probe VALUES (1)"))
            dialect = dialect_for(conn)
            if refused:
                with pytest.raises(DBAPIError), dialect.read_only(conn):
                    conn.execute(text("INSERT INTO ro_probe VALUES (2)"))
            else:
                with dialect.read_only(conn):
                    conn.execute(text("INSERT INTO ro_probe VALUES (2)"))
            conn.execute(text("INSERT INTO ro_probe VALUES (3)"))  # the run's own writes go on
            conn.commit()
            assert conn.execute(text("SELECT a FROM ro_probe ORDER BY a")).scalars().all() == [1, 3]
        with engine.connect() as conn, pytest.raises(DBAPIError), dialect_for(conn).read_only(conn):
            conn.execute(text("INSERT INTO ro_probe VALUES (4)"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM ro_probe")).scalar_one() == 2
    finally:
        engine.dispose()


def test_read_only_on_postgresql(pg_database: Any) -> None:
    _read_only_inside_a_written_transaction(pg_database("ro"), refused=True)


def test_read_only_on_sqlite(tmp_path: Any) -> None:
    _read_only_inside_a_written_transaction(f"sqlite:///{tmp_path / 'ro.db'}", refused=True)


def test_read_only_on_mariadb_undoes_inside_a_transaction_and_refuses_on_its_own(mariadb_database: Any) -> None:
    # MariaDB cannot turn a begun transaction read-only: what was written inside is undone.
    _read_only_inside_a_written_transaction(mariadb_database("ro"), refused=False)
