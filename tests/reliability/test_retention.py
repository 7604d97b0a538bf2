"""Quarantine retention: released entries older than quarantine_retention_days are purged;
entries still waiting, and recent releases, are kept."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sync_harness import Site, SiteFactory

from etl.cli import main as cli
from etl.config.project import load_project
from etl.core.errors import ConfigError

pytestmark = pytest.mark.slow


def _set_retention(mappings: Path, days: str | None) -> None:
    path = mappings / "defaults.yaml"
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if not line.startswith("quarantine_retention_days")]
    if days is not None:
        lines.append(f"quarantine_retention_days: {days}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _entries(site: Site, side: str) -> list[tuple[str, str]]:
    with site.engine(side).connect() as conn:
        return sorted((r.source_key, r.status) for r in conn.execute(text("SELECT source_key, status FROM etl_quarantine")))


def _cli(site: Site, args: list[str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    file = site.mappings.parent / "connections.json"
    file.write_text(json.dumps(site.connection_urls), encoding="utf-8")
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(file))
    for name in ("AIRFLOW_CONN_ERP_DB", "AIRFLOW_CONN_MES_DB"):
        monkeypatch.delenv(name, raising=False)
    capsys.readouterr()
    code = cli.main(["--mappings", str(site.mappings), *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_purge_deletes_only_released_entries_older_than_the_retention(
    sites: SiteFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    site = sites.new("retention")
    site.run("materials")
    (site.mappings / "crosswalks" / "material.csv").write_text("erp,mes\nMAT-A00001,200001\n", encoding="utf-8")
    site.reload()
    assert site.run("materials").record.counts.rows_released == 1
    now = datetime.now(UTC).replace(tzinfo=None)
    # The real release, dated 40 days back; beside it, entries of every age and status.
    site.execute("mes", "UPDATE etl_quarantine SET released_at = :t WHERE status = 'released'", t=now - timedelta(days=40))
    insert = (
        "INSERT INTO etl_quarantine (flow, source_key, payload, payload_kind, reason, status, attempts, first_seen_at,"
        " last_seen_at, first_run_id, last_run_id, released_at, released_run_id) VALUES (:flow, :key, '{}', 'source',"
        " 'test', :status, 1, :seen, :seen, 'r', 'r', :released, :rid)"
    )
    for side, key, status, age in (
        ("mes", "released 29 days ago", "released", 29),
        ("mes", "waiting for 400 days", "waiting", None),
        ("erp", "released 31 days ago", "released", 31),
        ("erp", "released 5 days ago", "released", 5),
    ):
        released = None if age is None else now - timedelta(days=age)
        site.execute(side, insert, flow="confirmations" if side == "erp" else "materials", key=key, status=status,
                     seen=now - timedelta(days=400), released=released, rid=None if age is None else "r")
    _set_retention(site.mappings, "30")

    code, out, _ = _cli(site, ["quarantine", "--purge"], monkeypatch, capsys)
    assert code == 0
    assert out.splitlines() == [
        "erp_db: purged 1 released quarantine row(s) older than 30 days",
        "mes_db: purged 1 released quarantine row(s) older than 30 days",
    ]
    assert _entries(site, "mes") == [("released 29 days ago", "released"), ("waiting for 400 days", "waiting")]
    assert _entries(site, "erp") == [("released 5 days ago", "released")]
    # Purging again finds nothing; the loaded rows themselves are untouched.
    assert _cli(site, ["quarantine", "--purge"], monkeypatch, capsys)[1].count("purged 0") == 2
    assert site.count("mes", "item", "WHERE item_code = '200001'") == 1
    figures.add("quarantine entries purged by retention", 2)


def test_purge_without_a_retention_setting_says_what_to_set(
    sites: SiteFactory, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    site = sites.new("retention_unset")
    _set_retention(site.mappings, None)
    code, _, err = _cli(site, ["quarantine", "--purge"], monkeypatch, capsys)
    assert code == cli.EXIT_CONFIG
    assert "defaults.yaml: quarantine_retention_days: not set" in err


@pytest.mark.parametrize(("value", "message"), [("0", "greater than or equal to 1"), ("a year", "valid integer")])
def test_a_bad_retention_setting_is_a_config_error(tmp_path: Path, value: str, message: str) -> None:
    from sync_harness import copy_mappings

    mappings = copy_mappings(tmp_path / "mappings", flows=["materials"])
    _set_retention(mappings, value)
    with pytest.raises(ConfigError) as error:
        load_project(mappings)
    assert "defaults.yaml: quarantine_retention_days:" in str(error.value) and message in str(error.value)


def test_the_shipped_defaults_keep_released_entries_90_days() -> None:
    import yaml

    from etl.config.flows import Defaults
    from etl.config.paths import DEFAULT_MAPPINGS

    raw = yaml.safe_load((DEFAULT_MAPPINGS / "defaults.yaml").read_text(encoding="utf-8"))
    assert Defaults.model_validate(raw).quarantine_retention_days == 90
