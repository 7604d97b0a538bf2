"""A PostgreSQL URL names the one driver the pipeline's bulk paths use (issue #25, item 14):
``postgresql://`` means psycopg2 wherever a URL is given (``demo init`` included); another
driver (psycopg 3, pg8000, asyncpg) is refused naming the connection and what to write
instead, before anything connects, never with the driver's own crash mid-run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from etl.cli import main as cli

pytestmark = pytest.mark.slow


def test_demo_init_takes_a_plain_postgresql_url(pg_database: Any, tmp_path: Path) -> None:
    urls = {side: pg_database(f"plain_{side}").set(drivername="postgresql") for side in ("erp", "mes", "wh")}
    connections = tmp_path / "connections.json"
    code = cli.main([
        "demo", "init", "--orders", "10", "--connections-file", str(connections),
        "--erp-url", urls["erp"].render_as_string(hide_password=False),
        "--mes-url", urls["mes"].render_as_string(hide_password=False),
        "--warehouse-url", urls["wh"].render_as_string(hide_password=False),
    ])
    assert code == 0
    written = json.loads(connections.read_text(encoding="utf-8"))
    assert {make_url(u).drivername for u in written.values()} == {"postgresql+psycopg2"}


OTHER_DRIVERS = {
    "psycopg 3 (the issue's example)": ("postgresql+psycopg", "'psycopg'"),
    "pg8000": ("postgresql+pg8000", "'pg8000'"),
    "asyncpg": ("postgresql+asyncpg", "'asyncpg'"),
}


@pytest.mark.parametrize("case", OTHER_DRIVERS, ids=list(OTHER_DRIVERS))
def test_another_postgresql_driver_is_refused_naming_the_connection_and_what_to_write(
    case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    scheme, driver = OTHER_DRIVERS[case]
    monkeypatch.setenv("AIRFLOW_CONN_ERP_DB", f"{scheme}://postgres:Secret77@127.0.0.1:5432/erp")
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", f"{scheme}://postgres:Secret77@127.0.0.1:5432/mes")
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(tmp_path / "none.json"))
    code = cli.main(["run", "materials"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG, err
    assert f"driver {driver} is not supported" in err and "write postgresql+psycopg2://" in err, err
    assert "connection 'erp_db'" in err and "mogrify" not in err and "Secret77" not in err, err
    code = cli.main(["demo", "init", "--erp-url", f"{scheme}://postgres@127.0.0.1:5432/erp",
                     "--connections-file", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG and "--erp-url: the postgresql driver" in err, err
    figures.inputs.add(f"hostile: URL with driver {case}")
