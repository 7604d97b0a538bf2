"""Build the demo: ERP, MES and warehouse databases on any SQLAlchemy URLs, filled by the factory."""

from __future__ import annotations

import json
import os
from datetime import datetime
from pathlib import Path

from sqlalchemy.engine import URL

from demo.factory import generate
from demo.schema import create_demo_schema
from etl.sync.connections import create_db_engine, parse_url
from etl.sync.pipeline_tables import metadata as pipeline_metadata
from etl.warehouse.refresh import build as build_warehouse

CONNECTION_IDS = {"erp": "erp_db", "mes": "mes_db", "warehouse": "warehouse_db"}


def _prepare_sqlite_folder(url: URL) -> None:
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)


def init_demo(
    *, erp_url: str, mes_url: str, warehouse_url: str, orders: int, seed: int, connections_file: Path,
    as_of: datetime | None = None,
) -> dict[str, URL]:
    """Create the demo schemas (replacing earlier demo tables and pipeline state), generate
    ``orders`` production orders with their shop-floor feedback as of ``as_of`` (plant time;
    default: the start of today), and write the connections file.

    Returns the connection ids and their URLs.
    """
    urls = {
        "erp": parse_url(erp_url, "--erp-url"), "mes": parse_url(mes_url, "--mes-url"),
        "warehouse": parse_url(warehouse_url, "--warehouse-url"),
    }
    engines = {}
    for name, url in urls.items():
        _prepare_sqlite_folder(url)
        engines[name] = create_db_engine(url)
    try:
        for engine in engines.values():
            with engine.begin() as conn:
                pipeline_metadata.drop_all(conn, checkfirst=True)
                pipeline_metadata.create_all(conn)
        create_demo_schema(engines["erp"], "erp")
        create_demo_schema(engines["mes"], "mes")
        build_warehouse(engines["warehouse"], replace=True)
        generate(engines["erp"], engines["mes"], orders=orders, seed=seed, as_of=as_of)
    finally:
        for engine in engines.values():
            engine.dispose()
    connections_file.parent.mkdir(parents=True, exist_ok=True)
    # The file may hold passwords of real servers given on the command line: owner-only.
    fd = os.open(connections_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(
            {CONNECTION_IDS[name]: url.render_as_string(hide_password=False) for name, url in urls.items()},
            fh, indent=2,
        )
    return {CONNECTION_IDS[name]: url for name, url in urls.items()}
