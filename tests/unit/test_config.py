"""Tests for etl.config: flow YAML validated into typed models, problems gathered and located."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from etl.config.flows import Flow, Project, check_identifier, check_table_name, parse_duration
from etl.config.paths import DEFAULT_MAPPINGS
from etl.config.project import load_project
from etl.core.errors import ConfigError, ConfigProblem

REPO_CROSSWALKS = DEFAULT_MAPPINGS / "crosswalks"
REPO_DEFAULTS = DEFAULT_MAPPINGS / "defaults.yaml"


def flow_dict(name: str = "x", **overrides: Any) -> dict[str, Any]:
    """A minimal valid flow with four plain columns a, b, c, d keyed on a."""
    data: dict[str, Any] = {
        "flow": name,
        "direction": "erp_to_mes",
        "source": {"connection": "erp_db", "table": "src"},
        "target": {"connection": "mes_db", "table": "tgt"},
        "key": ["a"],
        "columns": [{"target": t, "source": t} for t in ("a", "b", "c", "d")],
    }
    data.update(overrides)
    return data


class Mappings:
    """A throwaway mappings folder: the repo's crosswalks and defaults, flows written per test."""

    def __init__(self, root: Path):
        self.root = root
        shutil.copytree(REPO_CROSSWALKS, root / "crosswalks")
        shutil.copy(REPO_DEFAULTS, root / "defaults.yaml")
        (root / "flows").mkdir()

    def write(self, file_stem: str, content: dict[str, Any] | str) -> None:
        text = content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False)
        (self.root / "flows" / f"{file_stem}.yaml").write_text(text, encoding="utf-8")

    def write_defaults(self, content: dict[str, Any]) -> None:
        (self.root / "defaults.yaml").write_text(yaml.safe_dump(content), encoding="utf-8")

    def load(self) -> Project:
        return load_project(self.root)

    def problems(self) -> list[ConfigProblem]:
        with pytest.raises(ConfigError) as info:
            self.load()
        return info.value.problems

    def messages(self) -> list[str]:
        return [str(p) for p in self.problems()]

    def unknown_key(self, file: str, path: str) -> ConfigProblem:
        """The one 'unknown key' problem at ``file: path`` (a 'did you mean' hint may follow)."""
        found = [p for p in self.problems() if (p.file, p.path) == (file, path)]
        assert len(found) == 1, found
        assert str(found[0]).startswith(f"{file}: {path}: unknown key")
        return found[0]


@pytest.fixture
def mappings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Mappings:
    # Paths in messages are shown relative to the working directory.
    monkeypatch.chdir(tmp_path)
    return Mappings(tmp_path / "m")


# --- the real project -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def project() -> Project:
    return load_project()


def test_real_project_has_every_flow(project: Project) -> None:
    expected = {p.stem for p in (DEFAULT_MAPPINGS / "flows").glob("*.yaml")}
    assert set(project.flows) == expected
    assert {"materials", "boms", "production_orders", "order_components"} <= expected


def test_real_project_orders_master_data_before_boms(project: Project) -> None:
    order = list(project.flows)
    assert order.index("materials") < order.index("boms")


def test_real_project_orders_production_orders_before_components(project: Project) -> None:
    order = list(project.flows)
    assert order.index("production_orders") < order.index("order_components")


def test_real_project_every_dependency_comes_first(project: Project) -> None:
    order = list(project.flows)
    for name, flow in project.flows.items():
        for dep in flow.depends_on:
            assert order.index(dep) < order.index(name), (dep, name)


def test_real_project_records_the_file_of_each_flow(project: Project) -> None:
    assert project.flows["materials"].file.endswith("flows/materials.yaml")


def test_unknown_flow_name_is_a_config_error(project: Project) -> None:
    with pytest.raises(ConfigError, match="no flow named 'nope'"):
        project.flow("nope")


# --- problem reporting ------------------------------------------------------------------------


def test_config_problem_str_shape() -> None:
    assert str(ConfigProblem("flows/x.yaml", "columns[3].souce", "unknown key")) == (
        "flows/x.yaml: columns[3].souce: unknown key"
    )
    assert str(ConfigProblem("flows/x.yaml", "", "no flow")) == "flows/x.yaml: no flow"


def test_unknown_key_located_by_file_and_key_path(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][3]["souce"] = "d"
    mappings.write("x", data)
    problem = mappings.unknown_key("m/flows/x.yaml", "columns[3].souce")
    assert problem.message.startswith("unknown key")


def test_problems_of_several_files_gathered_into_one_error(mappings: Mappings) -> None:
    bad_key = flow_dict("x", colums=[])
    no_source = flow_dict("y")
    del no_source["source"]
    mappings.write("x", bad_key)
    mappings.write("y", no_source)
    problems = mappings.problems()
    located = {(p.file, p.path): p.message for p in problems}
    assert located["m/flows/x.yaml", "colums"].startswith("unknown key")
    assert located["m/flows/y.yaml", "source"] == "required key is missing"


def test_config_error_message_lists_every_problem(mappings: Mappings) -> None:
    mappings.write("x", flow_dict("x", colour="red"))
    mappings.write("y", flow_dict("y", size=3))
    with pytest.raises(ConfigError) as info:
        mappings.load()
    text = str(info.value)
    assert "x.yaml: colour: unknown key" in text
    assert "y.yaml: size: unknown key" in text


def test_malformed_yaml_reports_line_and_column(mappings: Mappings) -> None:
    mappings.write("x", "flow: x\ncolumns: [a\n  b: c\n")
    (problem,) = mappings.problems()
    assert problem.file == "m/flows/x.yaml"
    assert problem.path == "line 3, column 4"
    assert problem.message.startswith("malformed YAML")


def test_top_level_must_be_a_mapping(mappings: Mappings) -> None:
    mappings.write("x", "- just\n- a list\n")
    assert mappings.messages() == ["m/flows/x.yaml: expected a mapping of keys at the top level"]


@pytest.mark.parametrize("missing", ["source", "key", "columns", "direction"])
def test_missing_required_key(mappings: Mappings, missing: str) -> None:
    data = flow_dict()
    del data[missing]
    mappings.write("x", data)
    assert f"m/flows/x.yaml: {missing}: required key is missing" in mappings.messages()


def test_missing_column_target(mappings: Mappings) -> None:
    data = flow_dict()
    del data["columns"][1]["target"]
    mappings.write("x", data)
    assert "m/flows/x.yaml: columns[1].target: required key is missing" in mappings.messages()


def test_no_flow_files_is_a_problem(mappings: Mappings) -> None:
    assert any("no flow files" in m for m in mappings.messages())


# --- identifiers ------------------------------------------------------------------------------


def test_table_name_injection_refused(mappings: Mappings) -> None:
    data = flow_dict()
    data["source"]["table"] = "orders; DROP TABLE x"
    mappings.write("x", data)
    (problem,) = mappings.problems()
    assert problem.path == "source.table"
    assert "is not a valid identifier" in problem.message


def test_column_target_injection_refused(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][1]["target"] = "a;b"
    mappings.write("x", data)
    (problem,) = mappings.problems()
    assert problem.path == "columns[1].target"
    assert "'a;b' is not a valid identifier" in problem.message


@pytest.mark.parametrize("name", ["a", "order_no", "Order No", "_x1"])
def test_safe_identifiers_accepted(name: str) -> None:
    assert check_identifier(name) == name


@pytest.mark.parametrize("name", ["", "1abc", "a;b", 'a"b', "a-b", "trailing ", " leading", "x" * 129])
def test_unsafe_identifiers_refused(name: str) -> None:
    with pytest.raises(ValueError, match="not a valid identifier"):
        check_identifier(name)


def test_schema_qualified_table_accepted_but_not_two_dots() -> None:
    assert check_table_name("erp.orders") == "erp.orders"
    with pytest.raises(ValueError, match="at most one dot"):
        check_table_name("db.erp.orders")


@pytest.mark.parametrize("name", ["a\n", "orders\n"])
def test_identifier_with_trailing_newline_refused(name: str) -> None:
    with pytest.raises(ValueError):
        check_table_name(name)


# --- column inputs ----------------------------------------------------------------------------


def test_column_with_source_and_value_refused(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][1] = {"target": "b", "source": "b", "value": 1}
    mappings.write("x", data)
    (problem,) = mappings.problems()
    assert problem.path == "columns[1]"
    assert "exactly one of source, expr, value" in problem.message
    assert "['source', 'value']" in problem.message


def test_column_without_input_refused(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][2] = {"target": "c"}
    mappings.write("x", data)
    (problem,) = mappings.problems()
    assert problem.path == "columns[2]"
    assert "exactly one of source, expr, value (got none)" in problem.message


@pytest.mark.parametrize(
    "column",
    [{"target": "b", "source": "b"}, {"target": "b", "expr": "upper(b)"}, {"target": "b", "value": "X"}],
)
def test_column_with_exactly_one_input_accepted(mappings: Mappings, column: dict[str, Any]) -> None:
    data = flow_dict()
    data["columns"][1] = column
    mappings.write("x", data)
    assert mappings.load().flows["x"].columns[1].target == "b"


def test_forbidden_expression_refused_at_load(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][1] = {"target": "b", "expr": "__import__('os')"}
    mappings.write("x", data)
    (problem,) = mappings.problems()
    assert problem.path == "columns[1]"
    assert "'__import__' is not allowed" in problem.message


# --- crosswalk references ---------------------------------------------------------------------


def test_unknown_crosswalk_reported_with_key_path(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][1]["crosswalk"] = "nope"
    mappings.write("x", data)
    assert mappings.messages() == ["m/flows/x.yaml: columns[1].crosswalk: no crosswalk named 'nope'"]


def test_unknown_unit_crosswalk_reported_with_key_path(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][2]["convert_unit"] = {"unit_column": "u", "crosswalk": "units_typo"}
    mappings.write("x", data)
    assert mappings.messages() == [
        "m/flows/x.yaml: columns[2].convert_unit.crosswalk: no crosswalk named 'units_typo'"
    ]


def test_unknown_crosswalk_reported_when_no_crosswalks_exist(mappings: Mappings) -> None:
    shutil.rmtree(mappings.root / "crosswalks")
    data = flow_dict()
    data["columns"][1]["crosswalk"] = "nope"
    mappings.write("x", data)
    assert "m/flows/x.yaml: columns[1].crosswalk: no crosswalk named 'nope'" in mappings.messages()


def test_warehouse_flow_must_give_crosswalk_direction(mappings: Mappings) -> None:
    data = flow_dict(direction="warehouse")
    data["columns"][1]["crosswalk"] = "plant"
    mappings.write("x", data)
    assert any("warehouse flows must say the crosswalk direction" in m for m in mappings.messages())


# --- dependencies and names -------------------------------------------------------------------


def test_depends_on_unknown_flow(mappings: Mappings) -> None:
    mappings.write("x", flow_dict("x", depends_on=["ghost"]))
    assert mappings.messages() == ["m/flows/x.yaml: depends_on[0]: no flow named 'ghost'"]


def test_dependency_cycle_reported(mappings: Mappings) -> None:
    mappings.write("x", flow_dict("x", depends_on=["y"]))
    mappings.write("y", flow_dict("y", depends_on=["z"]))
    mappings.write("z", flow_dict("z", depends_on=["x"]))
    (problem,) = mappings.problems()
    assert problem.path == "depends_on"
    assert "dependency cycle: x -> y -> z -> x" in problem.message


def test_self_dependency_is_a_cycle(mappings: Mappings) -> None:
    mappings.write("x", flow_dict("x", depends_on=["x"]))
    assert mappings.messages() == ["m/flows/x.yaml: depends_on: dependency cycle: x -> x"]


def test_dependency_order_follows_depends_on(mappings: Mappings) -> None:
    # Alphabetical order would put "a_child" first.
    mappings.write("a_child", flow_dict("a_child", depends_on=["z_parent"]))
    mappings.write("z_parent", flow_dict("z_parent"))
    assert list(mappings.load().flows) == ["z_parent", "a_child"]


def test_flow_file_name_must_equal_flow_name(mappings: Mappings) -> None:
    mappings.write("x", flow_dict("y"))
    assert mappings.messages() == ["m/flows/x.yaml: flow: flow 'y' must live in y.yaml"]


def test_flow_defined_twice(mappings: Mappings) -> None:
    mappings.write("x", flow_dict("x"))
    mappings.write("y", flow_dict("x"))
    assert "m/flows/y.yaml: flow: flow 'x' is also defined in m/flows/x.yaml" in mappings.messages()


def test_bad_flow_name_refused(mappings: Mappings) -> None:
    mappings.write("x", flow_dict("Bad-Name"))
    assert any("is not a flow name" in m for m in mappings.messages())


def test_duplicate_target_columns(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][1]["target"] = "a"
    mappings.write("x", data)
    assert mappings.messages() == ["m/flows/x.yaml: target columns mapped twice: a"]


def test_key_not_among_mapped_columns(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(key=["zz"]))
    assert mappings.messages() == ["m/flows/x.yaml: key columns not among the mapped columns: zz"]


def test_parent_column_must_be_mapped(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(parents=[{"column": "zz", "table": "item", "key": "item_code"}]))
    assert any("parents: column 'zz' is not a mapped column" in m for m in mappings.messages())


# --- durations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("10m", timedelta(minutes=10)),
        ("2h", timedelta(hours=2)),
        ("90s", timedelta(seconds=90)),
        ("1d", timedelta(days=1)),
        (" 5 m ", timedelta(minutes=5)),
        (90, timedelta(seconds=90)),
        (0, timedelta(0)),
    ],
)
def test_parse_duration(raw: Any, expected: timedelta) -> None:
    assert parse_duration(raw) == expected


@pytest.mark.parametrize("raw", ["bad", "10", "1.5h", "10x", -5, True, 1.5, None])
def test_parse_duration_refuses(raw: Any) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(raw)


def test_bad_lookback_located(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(cursor={"column": "u", "lookback": "bad"}))
    assert mappings.messages() == [
        "m/flows/x.yaml: cursor.lookback: 'bad' is not a duration (examples: 90s, 10m, 2h, 1d)"
    ]


def test_lookback_parsed_from_flow(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(cursor={"column": "u", "lookback": "2h"}))
    assert mappings.load().flows["x"].cursor.lookback == timedelta(hours=2)


# --- defaults ---------------------------------------------------------------------------------


def test_defaults_chunk_size_inherited(mappings: Mappings) -> None:
    mappings.write_defaults({"load": {"chunk_size": 1234}})
    mappings.write("x", flow_dict())
    assert mappings.load().flows["x"].load.chunk_size == 1234


def test_defaults_merge_with_partial_flow_section(mappings: Mappings) -> None:
    mappings.write_defaults({"load": {"chunk_size": 1234}})
    mappings.write("x", flow_dict(load={"mode": "append"}))
    load = mappings.load().flows["x"].load
    assert (load.mode, load.chunk_size) == ("append", 1234)


def test_flow_override_wins_over_defaults(mappings: Mappings) -> None:
    mappings.write_defaults({"load": {"chunk_size": 1234}})
    mappings.write("x", flow_dict(load={"chunk_size": 10}))
    assert mappings.load().flows["x"].load.chunk_size == 10


def test_defaults_cursor_lookback_inherited(mappings: Mappings) -> None:
    mappings.write_defaults({"cursor": {"lookback": "30m"}})
    mappings.write("x", flow_dict(cursor={"column": "updated_at"}))
    mappings.write("y", flow_dict("y"))
    project = mappings.load()
    assert project.flows["x"].cursor.lookback == timedelta(minutes=30)
    assert project.flows["y"].cursor is None  # defaults do not invent a cursor


def test_bad_defaults_reported_against_defaults_file(mappings: Mappings) -> None:
    mappings.write_defaults({"schedulez": {}})
    mappings.write("x", flow_dict())
    mappings.unknown_key("m/defaults.yaml", "schedulez")


def test_schedule_of_uses_master_data_tag_before_direction(mappings: Mappings) -> None:
    mappings.write_defaults({"schedules": {"master_data": "nightly", "erp_to_mes": "hourly", "mes_to_erp": "15m"}})
    mappings.write("a", flow_dict("a", tags=["master_data"]))
    mappings.write("b", flow_dict("b"))
    mappings.write("c", flow_dict("c", direction="mes_to_erp"))
    mappings.write("d", flow_dict("d", schedule="@daily", tags=["master_data"]))
    project = mappings.load()
    assert project.schedule_of(project.flows["a"]) == "nightly"
    assert project.schedule_of(project.flows["b"]) == "hourly"
    assert project.schedule_of(project.flows["c"]) == "15m"
    assert project.schedule_of(project.flows["d"]) == "@daily"


def test_schedule_of_without_default_is_none(mappings: Mappings) -> None:
    mappings.write_defaults({"schedules": {}})
    mappings.write("x", flow_dict(direction="warehouse"))
    project = mappings.load()
    assert project.schedule_of(project.flows["x"]) is None


def test_real_project_schedules(project: Project) -> None:
    materials = project.flows["materials"]
    orders = project.flows["production_orders"]
    assert materials.direction == orders.direction == "erp_to_mes"
    assert project.schedule_of(materials) == project.defaults.schedules["master_data"]
    assert project.schedule_of(orders) == project.defaults.schedules["erp_to_mes"]
    assert project.schedule_of(materials) != project.schedule_of(orders)


# --- model helpers ----------------------------------------------------------------------------


def test_source_columns_include_unit_and_cursor_but_key_excludes_unit() -> None:
    data = flow_dict(cursor={"column": "updated_at"}, key=["a", "b"])
    data["columns"][1] = {"target": "b", "source": "qty", "convert_unit": {"unit_column": "uom"}}
    data["columns"][2] = {"target": "c", "expr": "concat(p, q)"}
    flow = Flow.model_validate(data)
    assert flow.source_columns() == ["a", "d", "p", "q", "qty", "uom", "updated_at"]
    assert flow.source_key_columns() == ["a", "qty"]


# --- report: and reconciliations.yaml ---------------------------------------------------------


def test_the_repo_declares_the_report_settings_and_three_reconciliations() -> None:
    project = load_project()
    report = project.defaults.report
    assert report.recipients == [] and report.smtp_connection == "smtp_default"
    assert report.stale_after_intervals == 2 and report.trend_days == 14
    assert [r.name for r in project.reconciliations] == ["order_output", "material_issue", "finished_goods_receipt"]
    assert all(r.erp.connection == r.mes.connection == "erp_db" for r in project.reconciliations)


def test_report_settings_are_validated_in_defaults_with_key_paths(mappings: Mappings) -> None:
    mappings.write_defaults({"report": {
        "recipients": ["qa@plant.example", "not an address"], "smtp_conection": "smtp_default",
        "stale_after_intervals": 0, "smtp_connection": "SMTP!",
    }})
    mappings.write("x", flow_dict())
    problem = mappings.unknown_key("m/defaults.yaml", "report.smtp_conection")
    assert "did you mean 'smtp_connection'?" in str(problem)
    messages = mappings.messages()
    assert "m/defaults.yaml: report.recipients: not an email address: 'not an address'" in messages
    assert any(m.startswith("m/defaults.yaml: report.stale_after_intervals: ") for m in messages)
    assert "m/defaults.yaml: report.smtp_connection: 'SMTP!' is not a connection id (lower case, digits, underscore)" in messages


def test_a_missing_report_section_means_no_recipients(mappings: Mappings) -> None:
    mappings.write_defaults({"schedules": {}})
    mappings.write("x", flow_dict())
    report = mappings.load().defaults.report
    assert report.recipients == [] and report.smtp_connection == "smtp_default"


def _reconciliation(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": "order_output", "key": ["order_no"],
        "erp": {"connection": "erp_db", "sql": "SELECT order_no, quantity AS value FROM production_order"},
        "mes": {"connection": "erp_db", "sql": "SELECT order_no, 1 AS value FROM if_confirmation"},
        "tolerance": {"relative": 0.05},
    }
    data.update(overrides)
    return data


def test_reconciliations_yaml_is_validated_with_file_and_key_paths(mappings: Mappings) -> None:
    mappings.write("x", flow_dict())
    path = mappings.root / "reconciliations.yaml"
    path.write_text(yaml.safe_dump({"reconciliations": [
        _reconciliation(tolerance={"relativ": 0.05}),
        _reconciliation(name="second", mes={"connection": "mes_db"}, key=[]),
    ]}), encoding="utf-8")
    problem = mappings.unknown_key("m/reconciliations.yaml", "reconciliations[0].tolerance.relativ")
    assert "did you mean 'relative'?" in str(problem)
    messages = mappings.messages()
    assert "m/reconciliations.yaml: reconciliations[1].mes.sql: required key is missing" in messages
    assert any(m.startswith("m/reconciliations.yaml: reconciliations[1].key: ") for m in messages)

    path.write_text(yaml.safe_dump({"reconcilations": []}), encoding="utf-8")
    mappings.unknown_key("m/reconciliations.yaml", "reconcilations")

    path.write_text(yaml.safe_dump({"reconciliations": [_reconciliation(), _reconciliation()]}), encoding="utf-8")
    assert mappings.messages() == ["m/reconciliations.yaml: reconciliation names used twice: order_output"]


def test_without_reconciliations_yaml_there_are_none(mappings: Mappings) -> None:
    mappings.write("x", flow_dict())
    assert mappings.load().reconciliations == []


def test_where_not_parsed_with_bound_values(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(source={"connection": "erp_db", "table": "src", "where_not": {"state": ["cancel", "draft"]}}))
    assert dict(mappings.load().flow("x").source.where_not) == {"state": ["cancel", "draft"]}


def test_where_not_column_checked_as_an_identifier(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(source={"connection": "erp_db", "table": "src", "where_not": {"state; --": "x"}}))
    with pytest.raises(ConfigError) as info:
        mappings.load()
    assert any(p.path.startswith("source.where_not") for p in info.value.problems)


def test_flow_using_an_unknown_lookup_crosswalk_is_located(mappings: Mappings) -> None:
    data = flow_dict()
    data["columns"][1]["crosswalk"] = "odoo_product"
    mappings.write("x", data)
    with pytest.raises(ConfigError) as info:
        mappings.load()
    assert [str(p) for p in info.value.problems] == ["m/flows/x.yaml: columns[1].crosswalk: no crosswalk named 'odoo_product'"]


def test_crosswalks_used_by_a_flow() -> None:
    data = flow_dict(direction="mes_to_erp", source={"connection": "mes_db", "table": "src", "plant_column": "d"})
    data["columns"][1]["crosswalk"] = "odoo_product"
    data["columns"][2]["convert_unit"] = {"unit_column": "d"}
    assert Flow.model_validate(data).crosswalks_used() == {"odoo_product", "unit", "plant"}


def test_product_mappings_check_without_connecting() -> None:
    project = load_project(Path(__file__).resolve().parent.parent / "products" / "mappings")
    assert set(project.flows) == {
        "erpnext_work_orders", "erpnext_work_order_items", "odoo_production_reports", "odoo_item_names",
        "erpnext_manufacturing_orders", "odoo_completions",
    }
    assert project.flow("erpnext_work_orders").source.table == "tabWork Order"
    orders = project.flow("erpnext_manufacturing_orders")
    assert (orders.target.table, orders.target.generated_key, orders.load.match) == ("mrp_production", "id", "natural_key")
    assert orders.lines is not None and orders.lines.target.header_id_column == "raw_material_production_id"


def test_convert_unit_refuses_a_lookup_crosswalk(mappings: Mappings) -> None:
    (mappings.root / "crosswalks" / "odoo_uom.yaml").write_text(
        "crosswalk: odoo_uom\nlookup: {connection: mes_db, table: uom_uom, erp: name, mes: id}\n", encoding="utf-8"
    )
    data = flow_dict()
    data["columns"][2]["convert_unit"] = {"unit_column": "d", "crosswalk": "odoo_uom"}
    mappings.write("x", data)
    with pytest.raises(ConfigError) as info:
        mappings.load()
    assert [str(p) for p in info.value.problems] == [
        "m/flows/x.yaml: columns[2].convert_unit.crosswalk: crosswalk 'odoo_uom' is a lookup and has no unit "
        "factors; use a CSV crosswalk with a factor column"
    ]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"connection": "erp_db"}, "source: give exactly one of table, files, api (got none)"),
        ({"connection": "erp_db", "table": "src", "files": {"folder": "d", "format": "csv"}},
         "source: give exactly one of table, files, api (got table, files)"),
        ({"files": {"folder": "d", "format": "csv"}, "where": {"a": 1}}, "source: files: not supported yet with a file source: where"),
        ({"files": {"folder": "d", "format": "csv", "encoding": "utf-9"}}, "source.files.encoding: 'utf-9' is not an encoding"),
        ({"files": {"folder": "d", "format": "csv", "archive": "../x"}}, "source.files.archive: '../x': a sub-folder name"),
        ({"files": {"folder": "d", "format": "csv", "pattern": "../*.csv"}}, "source.files.pattern: '../*.csv': a file name pattern"),
        ({"files": {"folder": "d", "format": "xls"}}, "source.files.format:"),
        ({"table": "src"}, "source: table: a table source needs its connection"),
    ],
)
def test_source_gives_exactly_one_kind(mappings: Mappings, source: dict[str, Any], message: str) -> None:
    mappings.write("x", flow_dict(source=source))
    assert any(m.startswith(f"m/flows/x.yaml: {message}") for m in mappings.messages()), mappings.messages()


def test_table_source_kind_and_label(mappings: Mappings) -> None:
    mappings.write("x", flow_dict())
    source = mappings.load().flow("x").source
    assert (source.kind, source.label) == ("table", "erp_db.src")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"cursor": {"column": "a"}}, "cursor: a file source has no cursor"),
        ({"deletes": {"detect": "keyset", "action": "delete"}}, "deletes: not supported yet with a file source"),
    ],
)
def test_a_file_flow_refuses_what_files_cannot_give(mappings: Mappings, overrides: dict[str, Any], message: str) -> None:
    mappings.write("x", flow_dict(source={"files": {"folder": "d", "format": "csv"}}, **overrides))
    assert any(message in m for m in mappings.messages()), mappings.messages()


def test_a_file_flow_reads_the_place_of_each_row(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(source={"files": {"folder": "drop/", "pattern": "q_*.csv", "format": "csv"}}))
    flow = mappings.load().flow("x")
    assert (flow.source.kind, flow.source.label) == ("files", "drop/q_*.csv")
    assert flow.source_columns() == ["a", "b", "c", "d", "source_file", "source_line", "source_sheet"]


def test_a_file_target_loads_with_its_defaults(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(target={"connection": "mes_db", "table": "t", "files": {"folder": "out"}}))
    spec = mappings.load().flow("x").target.files
    assert spec is not None and (spec.format, spec.encoding, spec.delimiter) == ("csv", "utf-8", ",")
    assert spec.name == "{flow}_{run_started:%Y%m%dT%H%M%S}_{run_id:.8}.csv"
    mappings.write("y", flow_dict("y", target={"connection": "mes_db", "table": "t", "files": {"folder": "o", "format": "xlsx"}}))
    workbook = mappings.load().flow("y").target.files
    assert workbook is not None and workbook.name.endswith("_{run_id:.8}.xlsx")


@pytest.mark.parametrize(
    ("files", "message"),
    [
        ({"format": "ods"}, "target.files.format: Input should be 'csv' or 'xlsx'"),
        ({"format": "xlsx", "encoding": "gbk"}, "encoding and delimiter: for csv files only"),
        ({"encoding": "utf-9"}, "target.files.encoding: 'utf-9' is not an encoding"),
        ({"delimiter": ";;"}, "target.files.delimiter"),
        ({"name": "{plant}_{run_id}.csv"}, "target.files.name: '{plant}_{run_id}.csv' is not a file name pattern"),
        ({"name": "export.csv"}, "the name must use {run_started} or {run_id}"),
        ({"name": "../{run_id}.csv"}, "a file name inside the folder, not a path"),
        ({"name": "{run_started:%Y}/{run_id}.csv"}, "a file name inside the folder, not a path"),
    ],
)
def test_a_file_target_is_checked_on_load(mappings: Mappings, files: dict[str, Any], message: str) -> None:
    mappings.write("x", flow_dict(target={"connection": "mes_db", "table": "t", "files": {"folder": "out", **files}}))
    assert message in " ".join(mappings.messages())


def test_a_file_target_refuses_what_it_cannot_write_yet(mappings: Mappings) -> None:
    mappings.write("x", flow_dict(target={"connection": "mes_db", "table": "t", "files": {"folder": "out"},
                                          "generated_key": "id"}, load={"mode": "append"}))
    assert "target.files: not supported yet with target.generated_key, load.mode other than upsert" in " ".join(
        mappings.messages())


def test_the_web_api_mappings_check_without_connecting() -> None:
    project = load_project(Path(__file__).resolve().parent.parent / "products" / "api_mappings")
    assert set(project.flows) == {
        "erpnext_api_work_orders", "erpnext_api_work_order_items", "erpnext_api_production_reports",
        "odoo_api_work_orders", "odoo_api_production_reports", "sap_production_orders", "sap_confirmations",
    }
    assert project.flow("sap_confirmations").target.api is not None
    assert project.flow("odoo_api_production_reports").source.kind == "api"


def test_an_api_target_refuses_what_it_does_not_support_yet() -> None:
    data = flow_dict()
    data["target"] = {**data["target"], "api": {"connection": "erp_api", "path": "/api/resource/X"}}
    data["load"] = {"mode": "snapshot_replace"}
    with pytest.raises(ValueError, match="target.api: not supported yet with load.mode other than upsert"):
        Flow.model_validate(data)
    data["load"] = {}
    data["target"]["api"] = {"connection": "erp_api", "path": "https://erp.example/api/resource/X"}
    with pytest.raises(ValueError, match="starts with '/'"):
        Flow.model_validate(data)
    data["target"]["api"] = {"connection": "erp_api", "path": "/x", "update_path": "/x/{k}", "update_method": "PUT"}
    with pytest.raises(ValueError, match="update_path needs lookup"):
        Flow.model_validate(data)


def test_an_api_source_names_its_connection_inside_and_refuses_what_needs_a_table() -> None:
    data = flow_dict()
    data["source"] = {"connection": "erp_db", "table": "src", "api": {"connection": "erp_api", "path": "/api/resource/X"}}
    with pytest.raises(ValueError, match="give exactly one of table, files, api"):
        Flow.model_validate(data)
    data["source"] = {"connection": "erp_db", "table": None, "api": {"connection": "erp_api", "path": "/x"}}
    with pytest.raises(ValueError, match="api.connection"):
        Flow.model_validate(data)
    data["source"] = {"api": {"connection": "erp_api", "path": "/x"}}
    flow = Flow.model_validate(data)
    assert (flow.source.kind, flow.source.label) == ("api", "erp_api:/x")
    data["cursor"] = {"column": "updated_at", "skip_loaded": True}
    with pytest.raises(ValueError, match="source.api: not supported yet with cursor.skip_loaded"):
        Flow.model_validate(data)
    data.pop("cursor")
    data["source"] = {"api": {"connection": "erp_api", "path": "/x", "paging": {"kind": "next_link"}}}
    with pytest.raises(ValueError, match="next_path"):
        Flow.model_validate(data)
