"""Hostile but honest inputs (issue #25): values, files and URLs a plant can produce that must
neither lose a change, overwrite the wrong row, nor leak or garble what is printed.

Each test tries the issue's example and at least one other instance of the same class, against
the real PostgreSQL server (sites cloned from the demo pair) or through the CLI.
"""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sync_harness import TRANSFORM_PATHS, SiteFactory, copy_mappings

from etl.cli import main as cli
from etl.config.crosswalks import load_crosswalks
from etl.config.project import load_project
from etl.core import watermark as wm
from etl.core.errors import ConfigError, ConnectionNotFound, StepFailed
from etl.sync.connections import Connections
from etl.sync.lookups import resolve_lookups
from etl.sync.runner import RunOptions, run_flow

pytestmark = pytest.mark.slow


def _watermark(site: Any, flow: str) -> wm.CursorValue | None:
    with site.engine("mes").connect() as conn:
        row = conn.execute(
            text("SELECT cursor_value, cursor_type FROM etl_watermark WHERE flow = :f"), {"f": flow}
        ).one()
    return wm.decode(row.cursor_value, row.cursor_type)


def _source_now(site: Any) -> Any:
    with site.engine("erp").connect() as conn:
        return conn.execute(text("SELECT LOCALTIMESTAMP")).scalar_one()


# 1. A cursor value from the future: the row loads, the watermark stays at the source's clock.
FUTURE_CASES = {
    # flow, table, key column, key, changed column, target table, target key, target key value, target column
    "material dated 9999-12-31": (
        "materials", "material", "material_no", "MAT-000010", "description_en", "'9999-12-31'",
        "item", "item_code", "100010", "name_en",
    ),
    "work center dated two days ahead": (
        "work_centers", "work_center", "work_center", "WC-ASM1", "description",
        "LOCALTIMESTAMP + interval '2 days'", "equipment", "equipment_code", None, "name",
    ),
}


@pytest.mark.parametrize("case", FUTURE_CASES, ids=list(FUTURE_CASES))
def test_a_cursor_from_the_future_never_freezes_the_watermark(sites: SiteFactory, case: str, figures: Any) -> None:
    flow, table, key, key_value, column, future, target, target_key, target_value, target_column = FUTURE_CASES[case]
    site = sites.new(f"future_{flow}")
    site.run(flow)
    site.execute("erp", f"UPDATE {table} SET {column} = 'from the future', updated_at = {future} WHERE {key} = :k", k=key_value)
    result = site.run(flow)
    assert any("past the source's clock" in w and key_value in w for w in result.warnings), result.warnings
    assert json.loads(site.ledger("mes", flow)[-1]["options"])["rows_beyond_clock"] == 1
    mark = _watermark(site, flow)
    assert mark is not None and mark < _source_now(site)
    # The row from the future was loaded; a change made afterwards at the source's clock arrives too.
    where = f"WHERE {target_column} = 'from the future'"
    assert site.count("mes", target, where) == 1
    site.execute(
        "erp", f"UPDATE {table} SET {column} = 'changed later', updated_at = LOCALTIMESTAMP "
        f"WHERE {key} = (SELECT min({key}) FROM {table} WHERE {key} <> :k)", k=key_value,
    )
    result = site.run(flow)
    assert site.count("mes", target, f"WHERE {target_column} = 'changed later'") == 1
    assert any(key_value in w for w in result.warnings), "reported by every run until corrected"
    figures.inputs.add(f"hostile: {case}")


def test_a_watermark_stored_past_the_clock_is_repaired_and_reads_what_it_hid(sites: SiteFactory) -> None:
    site = sites.new("future_frozen")
    site.run("materials")
    # The state a run before this fix left: the watermark at 9999, every later change hidden.
    site.execute("mes", "UPDATE etl_watermark SET cursor_value = '9999-12-31T00:00:00' WHERE flow = 'materials'")
    site.execute("erp", "UPDATE material SET description_en = 'hidden', updated_at = LOCALTIMESTAMP WHERE material_no = 'MAT-000003'")
    result = site.run("materials")
    assert any("stored watermark 9999-12-31" in w for w in result.warnings), result.warnings
    assert site.count("mes", "item", "WHERE name_en = 'hidden'") == 1
    mark = _watermark(site, "materials")
    assert mark is not None and mark < _source_now(site)


# 2. A crosswalk table entry that collides with the crosswalk's rule, in either direction.
COLLISIONS = {
    # the issue's example: two ERP materials would write to MES item 100005
    "ERP exception takes the rule's MES item": (
        "material.csv", "erp,mes\nMAT-A00001,100005\n", None, ["'MAT-A00001'", "'100005'", "'MAT-000005'"],
    ),
    # feedback on MES items 200007 and 100007 would both post as MAT-000007
    "MES exception takes the rule's ERP material": (
        "material.csv", "erp,mes\nMAT-000007,200007\n", None, ["'200007'", "'MAT-000007'", "'100007'"],
    ),
    # another crosswalk, given a table next to its rule
    "order number exception takes the rule's work order": (
        "order_number.csv", "erp,mes\n1000099,WO-2026-000012\n", "order_number.yaml",
        ["'1000099'", "'WO-2026-000012'", "'1000012'"],  # (and MES WO-2026-000099, which the rule gives 1000099)
    ),
}


@pytest.mark.parametrize("case", COLLISIONS, ids=list(COLLISIONS))
def test_a_crosswalk_entry_colliding_with_its_rule_is_refused(
    sites: SiteFactory, case: str, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    table, content, definition, named = COLLISIONS[case]
    site = sites.new("collision")
    crosswalks = site.mappings / "crosswalks"
    (crosswalks / table).write_text(content, encoding="utf-8")
    if definition is not None:
        yaml_file = crosswalks / definition
        yaml_file.write_text(yaml_file.read_text(encoding="utf-8") + f"table: {table}\n", encoding="utf-8")
    assert cli.main(["--mappings", str(site.mappings), "check"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    collision = [line for line in err.splitlines() if "would share" in line]
    assert any(f"{table}: line 2:" in line and all(code in line for code in named) for line in collision), err
    with pytest.raises(ConfigError):
        site.reload()
    figures.inputs.add(f"hostile: {case}")


def test_a_lookup_never_sends_two_codes_to_one_counterpart(sites: SiteFactory, tmp_path: Path) -> None:
    site = sites.new("lookup_collision")
    site.execute("erp", "CREATE TABLE xw_product (code text, id integer)")
    # A and B share MES id 1; D has two MES ids; C is clean.
    site.execute("erp", "INSERT INTO xw_product VALUES ('A', 1), ('B', 1), ('C', 2), ('D', 3), ('D', 4)")
    (tmp_path / "xw_product.yaml").write_text(
        "crosswalk: xw_product\nlookup: {connection: erp_db, table: xw_product, erp: code, mes: id}\n", encoding="utf-8",
    )
    resolved, warnings = resolve_lookups(load_crosswalks(tmp_path), ["xw_product"], site.connections.engine)
    product = resolved["xw_product"]
    assert product.lookup("C", "mes") == ("2", Decimal(1)) and product.lookup(2, "erp") == ("C", Decimal(1))
    for code, to in (("A", "mes"), ("B", "mes"), (1, "erp"), ("D", "mes"), (3, "erp"), (4, "erp")):
        assert product.lookup(code, to) is None, (code, to)
    assert len(warnings) == 2, warnings
    assert "'1' with 'A' and 'B'" in warnings[1] and "'D' with '3' and '4'" in warnings[0], warnings


# 8. A URL whose user:password@host part is ambiguous is refused, and no part of it is echoed.
AMBIGUOUS_URLS = {
    # the issue's example: '@' and '/' in the password, not percent-encoded
    "password with @ and /": ("env", "postgres://postgres:Ab@localhost/SecretTail99@{host}:{port}/{db}", "SecretTail99"),
    "password with @ only": ("env", "postgresql://postgres:Pw@Frag77@{host}:{port}/{db}", "Frag77"),
    "the same in the connections file": ("file", "postgres://postgres:Ab@Frag88/x@{host}:{port}/{db}", "Frag88"),
    "a port that is not a number": ("env", "postgres://postgres:Secret55@{host}:Port66/{db}", "Port66"),
}


@pytest.mark.parametrize("case", AMBIGUOUS_URLS, ids=list(AMBIGUOUS_URLS))
def test_a_url_that_does_not_parse_is_refused_and_never_echoed(
    sites: SiteFactory, case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, figures: Any,
) -> None:
    where, template, fragment = AMBIGUOUS_URLS[case]
    site = sites.new("ambiguous_url")
    erp = site.urls["erp"]
    bad = template.format(host=erp.host, port=erp.port, db=erp.database)
    connections = {"mes_db": site.connection_urls["mes_db"]}
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", connections["mes_db"])
    if where == "env":
        monkeypatch.setenv("AIRFLOW_CONN_ERP_DB", bad)
        monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(tmp_path / "none.json"))
    else:
        monkeypatch.delenv("AIRFLOW_CONN_ERP_DB", raising=False)
        (tmp_path / "connections.json").write_text(json.dumps({"erp_db": bad}), encoding="utf-8")
        monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(tmp_path / "connections.json"))
    caplog.set_level("DEBUG")
    code = cli.main(["--mappings", str(site.mappings), "-v", "run", "materials"])
    out, err = capsys.readouterr()
    assert code == cli.EXIT_CONFIG, err
    assert "connection 'erp_db': cannot parse its URL" in err
    if "port" not in case:
        assert "percent-encode '@' as %40" in err
    # The same through run_flow (an Airflow task): the ledger row names the connection only.
    with Connections() as env_connections, pytest.raises(StepFailed) as failure:
        run_flow(site.project, "materials", env_connections, crosswalks=site.crosswalks)
    errors = [str(r["error"]) for r in site.ledger("mes", "materials")]
    assert errors and all("cannot parse its URL" in e for e in errors), errors
    texts = [out, err, caplog.text, *errors, str(failure.value), repr(failure.value.cause)]
    assert not [t for t in texts if fragment in t], "a fragment of the URL was echoed"
    figures.add("texts searched for a URL fragment", len(texts))
    figures.inputs.add(f"hostile: URL {case}")


@pytest.mark.parametrize("url", [
    "postgresql://postgres:Ab@Frag99@127.0.0.1:5432/erp", "postgresql://postgres:pw@127.0.0.1:Frag99/erp",
])
def test_demo_init_refuses_an_ambiguous_url_without_echoing_it(
    url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    code = cli.main(["demo", "init", "--erp-url", url, "--connections-file", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG and "--erp-url: cannot parse its URL" in err and "Frag99" not in err, err


# 9. Control characters in source values are escaped wherever they are printed or logged.
HOSTILE_TEXT = {
    "ESC": "\x1b", "BEL": "\x07", "CR": "\r", "backspace": "\x08", "C1 CSI": "\x9b", "RLO": "\u202e",
}


def test_control_characters_in_source_values_are_escaped_on_the_terminal_and_in_the_log(
    sites: SiteFactory, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture, figures: Any,
) -> None:
    site = sites.new("escapes")
    for side in ("erp", "mes"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{side.upper()}_DB", site.connection_urls[f"{side}_db"])
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(tmp_path / "none.json"))
    # A material number no crosswalk knows (it waits in quarantine, its key shown by `quarantine`),
    # dated in the future (its key in a warning on stderr and in the log).
    key = "MAT-\x1b[2J\x07\u202eX\r\x08\x9b1"
    site.execute(
        "erp", "INSERT INTO material (material_no, material_type, base_unit, description_en, is_deleted, updated_at) "
        "VALUES (:k, 'ROH', 'KG', :d, false, '9999-12-31')", k=key, d="\x1b]0;pwned\x07\x1b[31mred",
    )
    caplog.set_level("INFO")
    assert cli.main(["--mappings", str(site.mappings), "-v", "run", "materials"]) == 0
    assert cli.main(["--mappings", str(site.mappings), "quarantine"]) == 0
    assert cli.main(["--mappings", str(site.mappings), "runs"]) == 0
    out, err = capsys.readouterr()
    assert "\\x1b[2J\\x07\\u202eX\\x0d\\x08\\x9b1" in out, out  # the key in the quarantine table
    assert "\\x1b[2J" in err and "\\x1b[2J" in caplog.text  # the warning naming it
    for text_shown in (out, err, caplog.text):
        leaked = [name for name, char in HOSTILE_TEXT.items() if char in text_shown]
        assert not leaked, leaked
    figures.inputs.add("hostile: control characters in a source value")


# 11. A key given twice in one YAML mapping is refused with file, line and key, in every YAML file.
def _duplicate_source(text: str) -> str:
    return text.replace("source: {connection: erp_db, table: material}", "source: {connection: erp_db, table: material, table: bom_item}")


def _second_depends_on(text: str) -> str:
    return text.replace("depends_on: [materials]\n", "depends_on: [materials]\ntags: [erp_to_mes]\ndepends_on: [work_centers]\n")


def _duplicate_rule_side(text: str) -> str:
    return text.replace("  mes: {pattern:", "  erp: {pattern: '^X$', format: X}\n  mes: {pattern:")


def _duplicate_defaults_section(text: str) -> str:
    return text + "load:\n  chunk_size: 10\n"


DUPLICATE_KEYS = {
    "flow: two table: in one inline mapping": ("flows/materials.yaml", _duplicate_source, "'table'"),
    "flow: a second depends_on:": ("flows/production_orders.yaml", _second_depends_on, "'depends_on'"),
    "crosswalk: a rule side twice": ("crosswalks/material.yaml", _duplicate_rule_side, "'erp'"),
    "defaults: a section twice": ("defaults.yaml", _duplicate_defaults_section, "'load'"),
}


@pytest.mark.parametrize("case", DUPLICATE_KEYS, ids=list(DUPLICATE_KEYS))
def test_a_key_given_twice_in_a_yaml_mapping_is_refused(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    name, edit, key = DUPLICATE_KEYS[case]
    mappings = copy_mappings(tmp_path / "mappings")
    path = mappings / name
    before = path.read_text(encoding="utf-8")
    path.write_text(edit(before), encoding="utf-8")
    assert path.read_text(encoding="utf-8") != before
    assert cli.main(["--mappings", str(mappings), "check"]) == cli.EXIT_CONFIG
    err = capsys.readouterr().err
    (line,) = [x for x in err.splitlines() if "duplicate key" in x]
    assert f"{name}: line " in line and f"duplicate key {key} (first given on line " in line, err
    figures.inputs.add(f"hostile: YAML {case}")


def test_a_merge_key_may_still_override_what_it_merges(tmp_path: Path) -> None:
    mappings = copy_mappings(tmp_path / "mappings")
    flow = mappings / "flows" / "work_centers.yaml"
    flow.write_text(
        flow.read_text(encoding="utf-8").replace(
            "source: {connection: erp_db, table: work_center, plant_column: plant}",
            "x-base: &base {connection: mes_db, table: work_center, plant_column: plant}\n"
            "source: {<<: *base, connection: erp_db}",
        ).replace("flow: work_centers\n", "flow: work_centers\n"),
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as failure:
        load_project(mappings)
    # Only the unknown top-level key is refused; the merge itself, overridden, is fine.
    assert [p.path for p in failure.value.problems] == ["x-base"], failure.value.problems


# 12. A suite regex is compiled by the database that runs it, by `check` and before each validation.
REGEXES = {
    # pattern, compiles on PostgreSQL
    "unbalanced (the issue's example)": ("^[0-9]{6$(", False),
    "Python's named group, not PostgreSQL's": ("^(?P<n>[0-9]{6})$", False),
    "PostgreSQL's word start, not Python's": ("\\\\m[0-9]{6}$", True),
}


@pytest.mark.parametrize("case", REGEXES, ids=list(REGEXES))
def test_a_suite_regex_is_compiled_in_the_database_that_runs_it(
    sites: SiteFactory, case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    pattern, compiles = REGEXES[case]
    site = sites.new("regex")
    for side in ("erp", "mes"):
        monkeypatch.setenv(f"AIRFLOW_CONN_{side.upper()}_DB", site.connection_urls[f"{side}_db"])
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(tmp_path / "none.json"))
    suite = site.mappings.parent / "expectations" / "materials.json"
    suite.write_text(suite.read_text(encoding="utf-8").replace('"^[0-9]{6}$"', f'"{pattern}"'), encoding="utf-8")
    assert '"^[0-9]{6}$"' not in suite.read_text(encoding="utf-8")
    site.reload()
    code = cli.main(["--mappings", str(site.mappings), "check"])
    err = capsys.readouterr().err
    if compiles:
        assert code == 0, err
        site.run("materials")
        assert site.count("mes", "item") > 0
        return
    assert code == cli.EXIT_CONFIG, err
    assert "expectations/materials.json: expectations[2].kwargs.regex: item_code_format: regex" in err, err
    assert "does not compile in postgresql" in err and "column item_code" in err, err
    with pytest.raises(StepFailed) as failure:
        site.run("materials")
    assert failure.value.step == "validate" and isinstance(failure.value.cause, ConfigError)
    assert "materials.json" in str(failure.value.cause) and "SELECT" not in str(failure.value.cause)
    assert site.count("mes", "item") == 0  # nothing loaded
    figures.inputs.add(f"hostile: suite regex {case}")


# 13. A connections file that is not a JSON object of URLs: a clear error naming the file.
CONNECTIONS_FILES = {
    "a JSON list": ('["postgresql://u:Secret1@h/db"]', "expected a JSON object of connection ids and URLs", "a list"),
    "malformed JSON": ('{"erp_db": "postgresql://u:Secret1@h/db",}', "not valid JSON: ", "line 1, column"),
    "a number for a URL": ('{"erp_db": 5432}', "connection 'erp_db': expected a URL string", "a number"),
    "not UTF-8": (b'{"erp_db": "postgresql://u:Secret1\xff@h/db"}', "not UTF-8 text", ""),
    "a directory": (None, "cannot read it", ""),
}


@pytest.mark.parametrize("case", CONNECTIONS_FILES, ids=list(CONNECTIONS_FILES))
def test_a_broken_connections_file_is_a_clear_error_naming_the_file(
    sites: SiteFactory, case: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    content, message, detail = CONNECTIONS_FILES[case]
    site = sites.new("connections_file")
    path = tmp_path / "connections.json"
    if content is None:
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(path))
    monkeypatch.delenv("AIRFLOW_CONN_ERP_DB", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MES_DB", site.connection_urls["mes_db"])
    code = cli.main(["--mappings", str(site.mappings), "run", "materials"])
    err = capsys.readouterr().err
    assert code == cli.EXIT_CONFIG, err
    assert f"connections file {path}: {message}" in err and detail in err, err
    assert "Traceback" not in err and "Secret1" not in err
    with Connections() as connections, pytest.raises(StepFailed) as failure:
        run_flow(site.project, "materials", connections, crosswalks=site.crosswalks)
    assert str(path) in str(failure.value.cause)
    assert all(str(path) in str(r["error"]) for r in site.ledger("mes", "materials"))
    figures.inputs.add(f"hostile: connections file {case}")


def test_a_missing_connections_file_named_explicitly_is_said(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ETL_CONNECTIONS_FILE", str(tmp_path / "typo.json"))
    monkeypatch.delenv("AIRFLOW_CONN_ERP_DB", raising=False)
    with pytest.raises(ConnectionNotFound, match="typo.json does not exist"):
        Connections().url("erp_db")


# 15. One broken file is reported once; what only follows from it is not reported at all.
BROKEN_FILES = {
    "a crosswalk table not UTF-8": ("crosswalks/material.csv", "erp,mes\nMAT-\xc4001,200001\n".encode("latin-1")),
    "a crosswalk definition malformed": ("crosswalks/order_number.yaml", b"crosswalk: order_number\nrule: [\n"),
    "a crosswalk table with a bad factor": ("crosswalks/unit.csv", b"erp,mes,factor\nKG,g,lots\n"),
    "a flow file malformed": ("flows/materials.yaml", b"flow: materials\nsource: {connection: erp_db\n"),
}


@pytest.mark.parametrize("case", BROKEN_FILES, ids=list(BROKEN_FILES))
def test_one_broken_file_is_reported_once_without_follow_on_errors(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str], figures: Any,
) -> None:
    name, content = BROKEN_FILES[case]
    mappings = copy_mappings(tmp_path / "mappings")
    (mappings / name).write_bytes(content)
    assert cli.main(["--mappings", str(mappings), "check"]) == cli.EXIT_CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and name in lines[0], lines
    figures.inputs.add(f"hostile: broken file {case}")


def test_a_crosswalk_that_does_not_exist_is_still_reported_beside_a_broken_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    mappings = copy_mappings(tmp_path / "mappings")
    (mappings / "crosswalks" / "material.csv").write_bytes("erp,mes\nMAT-\xc4001,200001\n".encode("latin-1"))
    flow = mappings / "flows" / "work_centers.yaml"
    flow.write_text(flow.read_text(encoding="utf-8").replace("crosswalk: plant}", "crosswalk: plants}"), encoding="utf-8")
    assert cli.main(["--mappings", str(mappings), "check"]) == cli.EXIT_CONFIG
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2, lines
    assert "material.csv: cannot read" in lines[0] and "work_centers.yaml: columns[1].crosswalk: no crosswalk named 'plants'" in lines[1]


# 4. A row deleted in the source and inserted again is restored by the next key comparison.
RESTORED = {
    # flow, source table, source key column, key, target table, target key column, target key, flag check
    "production order, soft delete (the issue's example)": (
        "production_orders", "production_order", "order_no", "1000012", "work_order", "wo_no", "WO-2026-000012",
    ),
    "material, soft delete from the source's own flag": (
        "materials", "material", "material_no", "MAT-000013", "item", "item_code", "100013",
    ),
    "material, the oldest one": ("materials", "material", "material_no", None, "item", "item_code", None),
}


def _flagged(site: Any, table: str, column: str, key: str, flag: str = "is_deleted") -> Any:
    with site.engine("mes").connect() as conn:
        return conn.execute(text(f"SELECT {flag} FROM {table} WHERE {column} = :k"), {"k": key}).scalar_one()


@pytest.mark.parametrize("case", RESTORED, ids=list(RESTORED))
def test_a_row_back_in_the_source_is_restored_by_the_next_key_comparison(
    sites: SiteFactory, case: str, figures: Any,
) -> None:
    flow, table, key, value, target, target_key, target_value = RESTORED[case]
    site = sites.new("restored")
    site.run_all(("materials", "production_orders"))
    with site.engine("erp").connect() as conn:
        if value is None:  # the row furthest behind the watermark
            value = conn.execute(text(f"SELECT {key} FROM {table} ORDER BY updated_at, {key} LIMIT 1")).scalar_one()
            target_value = "1" + value[5:]
        row = dict(conn.execute(text(f"SELECT * FROM {table} WHERE {key} = :k"), {"k": value}).one()._mapping)
    site.execute("erp", f"DELETE FROM {table} WHERE {key} = :k", k=value)
    site.run(flow, RunOptions(keyset=True))
    assert _flagged(site, target, target_key, target_value) is True
    # Inserted again as it was, its cursor older than the watermark: no window reads it.
    site.execute("erp", f"INSERT INTO {table} ({', '.join(row)}) VALUES ({', '.join(':' + c for c in row)})", **row)
    result = site.run(flow)
    assert _flagged(site, target, target_key, target_value) is True  # not due: nothing compared
    result = site.run(flow, RunOptions(keyset=True))
    assert _flagged(site, target, target_key, target_value) is False
    assert json.loads(site.ledger("mes", flow)[-1]["options"])["rows_restored"] == 1
    assert result.record.counts.rows_deleted == 0
    # A second comparison finds nothing to restore.
    site.run(flow, RunOptions(keyset=True))
    assert "rows_restored" not in json.loads(site.ledger("mes", flow)[-1]["options"])
    figures.inputs.add(f"hostile: restored {case}")


def test_a_row_back_with_other_values_and_a_status_action_gets_them(sites: SiteFactory) -> None:
    """The status action (a flagged value in a mapped column): the source row is read again."""
    site = sites.new("restored_status")
    flow_file = site.mappings / "flows" / "work_centers.yaml"
    flow_file.write_text(
        flow_file.read_text(encoding="utf-8").replace(
            "cursor: {column: updated_at}\n",
            "cursor: {column: updated_at}\ndeletes: {detect: keyset, action: status, column: name, value: GONE}\n",
        ), encoding="utf-8",
    )
    site.reload()
    site.run("work_centers")
    with site.engine("erp").connect() as conn:
        row = dict(conn.execute(text("SELECT * FROM work_center WHERE work_center = 'WC-ASM1'")).one()._mapping)
    site.execute("erp", "DELETE FROM work_center WHERE work_center = 'WC-ASM1'")
    site.run("work_centers", RunOptions(keyset=True))
    assert site.count("mes", "equipment", "WHERE name = 'GONE'") == 1
    row["description"] = "Assembly line 1 (rebuilt)"
    row["updated_at"] -= timedelta(days=30)  # behind the lookback: only the key comparison finds it
    site.execute("erp", f"INSERT INTO work_center ({', '.join(row)}) VALUES ({', '.join(':' + c for c in row)})", **row)
    site.run("work_centers", RunOptions(keyset=True))
    assert site.count("mes", "equipment", "WHERE name = 'GONE'") == 0
    assert site.count("mes", "equipment", "WHERE name = 'Assembly line 1 (rebuilt)'") == 1


# 3. Keys that clean to the same value: the batch's rule holds across runs.
@pytest.mark.parametrize("transform", TRANSFORM_PATHS)
def test_a_key_that_cleans_like_a_loaded_one_never_overwrites_it(sites: SiteFactory, transform: str, figures: Any) -> None:
    site = sites.new("cleaned_alike", transform=None if transform == "auto" else transform)
    site.run("materials")
    with site.engine("mes").connect() as conn:
        before = conn.execute(text("SELECT name_en FROM item WHERE item_code = '100013'")).scalar_one()
    site.execute(
        "erp", "INSERT INTO material (material_no, material_type, base_unit, description_en, is_deleted, updated_at) "
        "SELECT 'mat-000013 ', material_type, base_unit, 'a second material', false, LOCALTIMESTAMP "
        "FROM material WHERE material_no = 'MAT-000013'",
    )
    site.run("materials")
    with site.engine("mes").connect() as conn:
        assert conn.execute(text("SELECT name_en FROM item WHERE item_code = '100013'")).scalar_one() == before
        reasons = conn.execute(text(
            "SELECT source_key, reason FROM etl_quarantine WHERE flow = 'materials' AND status = 'waiting' "
            "AND reason LIKE 'duplicate natural key (item_code=100013)%' ORDER BY source_key"
        )).all()
    assert [r.source_key for r in reasons] == ["material_no=MAT-000013", "material_no=mat-000013 "], reasons
    # The next run, the newer row outside its window, still leaves the loaded one as it was.
    site.run("materials")
    with site.engine("mes").connect() as conn:
        assert conn.execute(text("SELECT name_en FROM item WHERE item_code = '100013'")).scalar_one() == before
    figures.inputs.add(f"hostile: a key cleaning like a loaded one [{transform}]")


def test_an_order_number_padded_like_a_loaded_one_waits_with_it_and_an_identical_copy_loads_once(
    sites: SiteFactory,
) -> None:
    site = sites.new("cleaned_alike_orders")
    site.run_all(("materials", "production_orders"))
    with site.engine("erp").connect() as conn:
        first, second = conn.execute(text(
            "SELECT order_no FROM production_order WHERE status = 'REL' ORDER BY order_no LIMIT 2"
        )).scalars().all()
    copy = ("INSERT INTO production_order SELECT :new, material_no, plant, quantity + :more, unit, planned_start, "
            "planned_end, status, created_at, LOCALTIMESTAMP FROM production_order WHERE order_no = :old")
    site.execute("erp", copy, new=f" {first}", more=1, old=first)   # differs: both wait
    site.execute("erp", copy, new=f"{second} ", more=0, old=second)  # identical once cleaned: loads once
    site.run("production_orders")
    waiting = site.count("mes", "etl_quarantine", "WHERE flow = 'production_orders' AND status = 'waiting' "
                         "AND reason LIKE :r", r=f"duplicate natural key (wo_no=WO-2026-{first[1:]})%")
    assert waiting == 2
    assert site.count("mes", "etl_quarantine", "WHERE flow = 'production_orders' AND source_key LIKE :k", k=f"%{second}%") == 0
