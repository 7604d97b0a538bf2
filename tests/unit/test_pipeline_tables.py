from pathlib import Path

from etl.sync.pipeline_tables import ddl

SQL_FILE = Path(__file__).resolve().parents[2] / "sql" / "pipeline" / "postgresql.sql"


def test_readable_ddl_matches_the_tables_the_pipeline_creates():
    text = SQL_FILE.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("--")).strip()
    assert body == ddl("postgresql").strip(), "regenerate sql/pipeline/postgresql.sql from etl.sync.pipeline_tables.ddl()"
