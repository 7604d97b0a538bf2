"""Tests for etl.config.crosswalks: code translation between ERP and MES, tables and rules."""

from __future__ import annotations

import shutil
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from etl.config.crosswalks import Crosswalk, load_crosswalks
from etl.config.paths import DEFAULT_MAPPINGS
from etl.core.errors import ConfigError, ConfigProblem, CrosswalkNotLoaded

REPO_CROSSWALKS = DEFAULT_MAPPINGS / "crosswalks"

ORDER_RULE = """\
crosswalk: order_number
rule:
  erp: {pattern: '^1(?P<seq>\\d{6,})$', format: '1{seq}'}
  mes: {pattern: '^WO-2026-(?P<seq>\\d{6,})$', format: 'WO-2026-{seq}'}
"""


@pytest.fixture(scope="module")
def real() -> dict[str, Crosswalk]:
    return load_crosswalks(REPO_CROSSWALKS)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "xw"
    path.mkdir()
    return path


def write(folder: Path, **files: str) -> None:
    for name, text in files.items():
        (folder / name.replace("__", ".")).write_text(text, encoding="utf-8")


def problems_of(folder: Path) -> list[ConfigProblem]:
    with pytest.raises(ConfigError) as info:
        load_crosswalks(folder)
    return info.value.problems


def messages_of(folder: Path) -> list[str]:
    return [str(p) for p in problems_of(folder)]


# --- tables -----------------------------------------------------------------------------------


def test_table_both_directions(real: dict[str, Crosswalk]) -> None:
    plant = real["plant"]
    assert plant.lookup("1000", "mes") == ("SH01", Decimal(1))
    assert plant.lookup("SH01", "erp") == ("1000", Decimal(1))


def test_lookup_accepts_non_string_codes(real: dict[str, Crosswalk]) -> None:
    assert real["plant"].lookup(2000, "mes") == ("SZ01", Decimal(1))


def test_factor_erp_to_mes(real: dict[str, Crosswalk]) -> None:
    assert real["unit"].lookup("KG", "mes") == ("g", Decimal(1000))


def test_reverse_factor_mes_to_erp(real: dict[str, Crosswalk]) -> None:
    code, factor = real["unit"].lookup("g", "erp")
    assert code == "KG"
    assert factor == Decimal("0.001")


def test_to_erp_only_entry(real: dict[str, Crosswalk]) -> None:
    unit = real["unit"]
    assert unit.lookup("kg", "erp") == ("KG", Decimal(1))
    # KG going to the MES still means grams: the to_erp row does not compete.
    assert unit.lookup("KG", "mes") == ("g", Decimal(1000))


def test_miss_returns_none(real: dict[str, Crosswalk]) -> None:
    assert real["plant"].lookup("9999", "mes") is None
    assert real["plant"].lookup("1000", "erp") is None  # an ERP code is not a MES code
    assert real["plant"].lookup(None, "mes") is None
    assert real["plant"].lookup(float("nan"), "mes") is None


# --- rules ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("erp", "mes"),
    [("1000456", "WO-2026-000456"), ("12000000", "WO-2026-2000000")],
)
def test_rule_both_directions(real: dict[str, Crosswalk], erp: str, mes: str) -> None:
    orders = real["order_number"]
    assert orders.lookup(erp, "mes") == (mes, Decimal(1))
    assert orders.lookup(mes, "erp") == (erp, Decimal(1))


@pytest.mark.parametrize("code", ["2000456", "100045", "WO-2025-000456", "1000456x"])
def test_rule_miss(real: dict[str, Crosswalk], code: str) -> None:
    assert real["order_number"].lookup(code, "mes") is None


def test_material_rule(real: dict[str, Crosswalk]) -> None:
    assert real["material"].lookup("MAT-000012", "mes") == ("100012", Decimal(1))
    assert real["material"].lookup("100012", "erp") == ("MAT-000012", Decimal(1))


def test_table_entry_wins_over_rule(folder: Path) -> None:
    shutil.copy(REPO_CROSSWALKS / "material.yaml", folder)
    write(folder, material__csv="erp,mes\nMAT-000012,199999\nSPECIAL-1,100777\n")
    material = load_crosswalks(folder)["material"]
    assert material.lookup("MAT-000012", "mes") == ("199999", Decimal(1))  # table, not rule
    assert material.lookup("SPECIAL-1", "mes") == ("100777", Decimal(1))
    assert material.lookup("100777", "erp") == ("SPECIAL-1", Decimal(1))
    assert material.lookup("MAT-000013", "mes") == ("100013", Decimal(1))  # rule covers the rest


def test_rule_format_needing_uncaptured_group(folder: Path) -> None:
    write(
        folder,
        o__yaml="crosswalk: o\nrule:\n"
        "  erp: {pattern: '^1(?P<seq>\\d+)$', format: '1{seq}'}\n"
        "  mes: {pattern: '^WO-(?P<n>\\d+)$', format: 'WO-{seq}'}\n",
    )
    (problem,) = problems_of(folder)
    assert problem.file == "xw/o.yaml"
    assert problem.path == "rule.erp.format"
    assert "uses seq, which rule.mes.pattern does not capture" in problem.message


def test_rule_format_keeps_braces_that_are_not_fields(folder: Path) -> None:
    """A format's fields are ``{group}``; any other brace is text, as written."""
    write(
        folder,
        o__yaml="crosswalk: o\nrule:\n"
        "  erp: {pattern: '^1(?P<seq>\\d+)(?P<lot>[A-Z]?)$', format: '1{seq}{lot}'}\n"
        "  mes: {pattern: '^WO\\{(?P<seq>\\d+)\\}(?P<lot>[A-Z]?)$', format: 'WO{{seq}}{lot}'}\n",
    )
    orders = load_crosswalks(folder)["o"]
    assert orders.lookup("1000456B", "mes") == ("WO{000456}B", Decimal(1))
    assert orders.lookup("WO{000456}", "erp") == ("1000456", Decimal(1))
    assert orders.lookup("WO000456", "erp") is None


def test_rule_with_bad_regex(folder: Path) -> None:
    write(
        folder,
        o__yaml="crosswalk: o\nrule:\n"
        "  erp: {pattern: '^1(?P<seq>\\d+$', format: '1{seq}'}\n"
        "  mes: {pattern: '^WO-(?P<seq>\\d+)$', format: 'WO-{seq}'}\n",
    )
    (problem,) = problems_of(folder)
    assert problem.path == "rule.erp.pattern"
    assert "invalid regular expression" in problem.message


def test_yaml_crosswalk_name_must_match_file(folder: Path) -> None:
    write(folder, orders__yaml=ORDER_RULE)
    assert messages_of(folder) == ["xw/orders.yaml: crosswalk: must be 'orders', the file's name"]


# --- translate --------------------------------------------------------------------------------


def test_translate_series_with_nulls_and_repeats(real: dict[str, Crosswalk]) -> None:
    values = pd.Series(["KG", None, "PC", "KG", "XX", float("nan"), "KG"], dtype=object)
    codes, factors = real["unit"].translate(values, "mes")
    assert codes.dtype == object and factors.dtype == object
    assert codes.isna().tolist() == [False, True, False, False, True, True, False]
    assert codes[[0, 2, 3, 6]].tolist() == ["g", "pcs", "g", "g"]
    assert factors[[0, 2, 3, 6]].tolist() == [Decimal(1000), Decimal(1), Decimal(1000), Decimal(1000)]
    assert factors.isna().tolist() == codes.isna().tolist()


def test_translate_keeps_index(real: dict[str, Crosswalk]) -> None:
    values = pd.Series(["1000", "2000"], index=[10, 20], dtype=object)
    codes, _ = real["plant"].translate(values, "mes")
    assert codes.to_dict() == {10: "SH01", 20: "SZ01"}


def test_translate_looks_each_distinct_code_up_once(monkeypatch: pytest.MonkeyPatch, real: dict[str, Crosswalk]) -> None:
    plant = real["plant"]
    calls: list[object] = []
    original = Crosswalk.lookup

    def counting(self: Crosswalk, code: object, to: str) -> object:
        calls.append(code)
        return original(self, code, to)

    monkeypatch.setattr(Crosswalk, "lookup", counting)
    plant.translate(pd.Series(["1000"] * 50 + ["2000"] * 50, dtype=object), "mes")
    assert sorted(calls) == ["1000", "2000"]


# --- CSV problems -----------------------------------------------------------------------------


def test_same_erp_code_twice(folder: Path) -> None:
    write(folder, result__csv="erp,mes\nA,PASS\nA,FAIL\n")
    assert messages_of(folder) == ["xw/result.csv: line 3: ERP code 'A' already maps to 'PASS'"]


def test_same_mes_code_twice(folder: Path) -> None:
    write(folder, result__csv="erp,mes\nA,PASS\nB,PASS\n")
    assert messages_of(folder) == ["xw/result.csv: line 3: MES code 'PASS' already maps to 'A'"]


def test_problems_of_several_files_gathered(folder: Path) -> None:
    write(folder, a__csv="erp,mes\nA,X\nA,Y\n", b__csv="erp,mes\nB,X\nC,X\n")
    messages = messages_of(folder)
    assert "xw/a.csv: line 3: ERP code 'A' already maps to 'X'" in messages
    assert "xw/b.csv: line 3: MES code 'X' already maps to 'B'" in messages


def test_direction_rows_may_share_a_code(folder: Path) -> None:
    write(folder, unit__csv="erp,mes,factor,direction\nKG,g,1000,both\nKG,kg,1,to_erp\n")
    unit = load_crosswalks(folder)["unit"]
    assert unit.lookup("kg", "erp") == ("KG", Decimal(1))


@pytest.mark.parametrize(
    ("factor", "message"),
    [
        ("abc", "factor 'abc' is not a number"),
        ("0", "factor '0' must be a positive finite number"),
        ("-1", "factor '-1' must be a positive finite number"),
    ],
)
def test_bad_factor(folder: Path, factor: str, message: str) -> None:
    write(folder, unit__csv=f"erp,mes,factor\nKG,g,{factor}\n")
    assert messages_of(folder) == [f"xw/unit.csv: line 2: {message}"]


@pytest.mark.parametrize("factor", ["NaN", "Infinity"])
def test_non_finite_factor_refused(folder: Path, factor: str) -> None:
    write(folder, unit__csv=f"erp,mes,factor\nKG,g,{factor}\n")
    (problem,) = problems_of(folder)
    assert problem.path == "line 2"
    assert factor in problem.message


def test_bad_direction(folder: Path) -> None:
    write(folder, unit__csv="erp,mes,direction\nKG,g,sideways\n")
    assert messages_of(folder) == ["xw/unit.csv: line 2: direction 'sideways' is not one of both, to_mes, to_erp"]


def test_missing_code(folder: Path) -> None:
    write(folder, plant__csv="erp,mes\n1000,SH01\n,SZ01\n")
    assert messages_of(folder) == ["xw/plant.csv: line 3: erp and mes codes must both be given"]


def test_bad_header(folder: Path) -> None:
    write(folder, plant__csv="sap,mes\n1000,SH01\n")
    (problem,) = problems_of(folder)
    assert problem.path == "header"
    assert "needs columns erp,mes" in problem.message


def test_factor_is_exact_decimal(folder: Path) -> None:
    write(folder, unit__csv="erp,mes,factor\nT,kg,1000\nKG,g,1000\n")
    unit = load_crosswalks(folder)["unit"]
    assert unit.lookup("kg", "erp") == ("T", Decimal("0.001"))
    assert isinstance(unit.lookup("T", "mes")[1], Decimal)


# --- folder layout ----------------------------------------------------------------------------


def test_csv_named_by_yaml_is_not_its_own_crosswalk(folder: Path) -> None:
    write(folder, m__yaml="crosswalk: m\ntable: codes.csv\n", codes__csv="erp,mes\nA,X\n")
    crosswalks = load_crosswalks(folder)
    assert set(crosswalks) == {"m"}
    assert crosswalks["m"].lookup("A", "mes") == ("X", Decimal(1))


def test_real_folder_names(real: dict[str, Crosswalk]) -> None:
    expected = {p.stem for p in REPO_CROSSWALKS.iterdir() if p.suffix in (".csv", ".yaml")}
    assert set(real) == expected
    assert real["material"].rule is not None  # material.csv belongs to material.yaml


def test_csv_and_yaml_with_the_same_name_but_unowned(folder: Path) -> None:
    write(folder, m__yaml="crosswalk: m\ntable: other.csv\n", other__csv="erp,mes\nA,X\n", m__csv="erp,mes\nB,Y\n")
    assert messages_of(folder) == ["xw/m.csv: crosswalk 'm' is also defined by a YAML file"]


def test_yaml_table_file_missing(folder: Path) -> None:
    write(folder, m__yaml="crosswalk: m\ntable: nowhere.csv\n")
    assert messages_of(folder) == ["xw/m.yaml: table: file 'nowhere.csv' not found next to it"]


def test_yaml_unknown_key(folder: Path) -> None:
    write(folder, order_number__yaml=ORDER_RULE + "tabel: x.csv\n")
    assert any(m.startswith("xw/order_number.yaml: tabel: unknown key") for m in messages_of(folder))


# --- the real crosswalks round trip -----------------------------------------------------------


def test_round_trip_erp_mes_erp_over_all_table_entries(real: dict[str, Crosswalk]) -> None:
    checked = 0
    for crosswalk in real.values():
        for erp, (mes, factor) in crosswalk.to_mes.items():
            back = crosswalk.lookup(mes, "erp")
            assert back is not None, (crosswalk.name, erp, mes)
            assert back[0] == erp, (crosswalk.name, erp, mes, back)
            assert factor * back[1] == 1, (crosswalk.name, erp, factor, back[1])
            checked += 1
    assert checked > 20


def test_round_trip_mes_erp_mes_for_two_way_entries(real: dict[str, Crosswalk]) -> None:
    for crosswalk in real.values():
        for mes, (erp, _) in crosswalk.to_erp.items():
            if erp in crosswalk.to_mes and crosswalk.to_mes[erp][0] != mes:
                continue  # a to_erp-only alias such as kg -> KG
            assert crosswalk.lookup(crosswalk.lookup(mes, "erp")[0], "mes")[0] == mes


@pytest.mark.parametrize(
    ("name", "erp"),
    [("order_number", "1000001"), ("order_number", "19999999"), ("material", "MAT-000001"), ("material", "MAT-099999")],
)
def test_round_trip_rules(real: dict[str, Crosswalk], name: str, erp: str) -> None:
    mes, _ = real[name].lookup(erp, "mes")
    assert mes != erp
    assert real[name].lookup(mes, "erp") == (erp, Decimal(1))


# --- lookups ----------------------------------------------------------------------------------

PRODUCT_LOOKUP = """\
crosswalk: odoo_product
lookup:
  connection: odoo_db
  table: product_product
  erp: default_code
  mes: id
  where: {active: true}
  where_not: {default_code: [TEST]}
"""


def test_lookup_definition_is_checked_without_connecting(folder: Path) -> None:
    write(folder, odoo_product__yaml=PRODUCT_LOOKUP)
    crosswalk = load_crosswalks(folder)["odoo_product"]
    assert not crosswalk.loaded
    assert crosswalk.lookup_spec is not None
    assert crosswalk.lookup_spec.columns() == ["default_code", "id"]
    assert dict(crosswalk.lookup_spec.where) == {"active": True}


def test_lookup_not_read_refuses_to_translate(folder: Path) -> None:
    write(folder, odoo_product__yaml=PRODUCT_LOOKUP)
    crosswalk = load_crosswalks(folder)["odoo_product"]
    with pytest.raises(CrosswalkNotLoaded, match="xw/odoo_product.yaml: crosswalk 'odoo_product' is a lookup"):
        crosswalk.lookup("FG-1", "mes")


def test_lookup_sides_may_be_expressions(folder: Path) -> None:
    write(folder, odoo_uom__yaml=(
        "crosswalk: odoo_uom\n"
        "lookup: {connection: odoo_db, table: uom_uom, erp: \"lower(json_get(name, 'en_US'))\", mes: id}\n"
    ))
    assert load_crosswalks(folder)["odoo_uom"].lookup_spec.columns() == ["id", "name"]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("lookup", "expected"),
    [
        ("{connection: Odoo-DB, table: t, erp: a, mes: b}", "lookup.connection: 'Odoo-DB' is not a connection id"),
        ("{connection: odoo_db, table: 't; drop table x', erp: a, mes: b}", "lookup.table: 't; drop table x' is not a valid identifier"),
        ("{connection: odoo_db, table: t, erp: 'a.b', mes: b}", "lookup.erp: expression \"a.b\": attribute access"),
        ("{connection: odoo_db, table: t, erp: a}", "lookup.mes: required key is missing"),
        ("{connection: odoo_db, table: t, erp: a, mes: b, wher: {x: 1}}", "lookup.wher: unknown key (did you mean 'where'?"),
        ("{connection: odoo_db, table: t, erp: a, mes: b, where: {'a;b': 1}}", "lookup.where.a;b"),
        ("{connection: odoo_db, table: t, erp: a, mes: b, where_not: {state: {x: 1}}}", "lookup.where_not.state"),
        ("[odoo_db, t]", "lookup: expected a mapping"),
    ],
)
def test_bad_lookup_named_by_file_and_key(folder: Path, lookup: str, expected: str) -> None:
    write(folder, odoo_product__yaml=f"crosswalk: odoo_product\nlookup: {lookup}\n")
    messages = messages_of(folder)
    assert any(m.startswith(f"xw/odoo_product.yaml: {expected}") for m in messages), messages


def test_lookup_cannot_be_combined_with_a_table_or_rule(folder: Path) -> None:
    write(folder, odoo_product__yaml=PRODUCT_LOOKUP + "table: odoo_product.csv\n")
    assert messages_of(folder) == [
        "xw/odoo_product.yaml: table: a lookup crosswalk takes its pairs from the lookup; remove this key"
    ]


def test_misspelt_top_level_key_suggests_lookup(folder: Path) -> None:
    write(folder, odoo_product__yaml=PRODUCT_LOOKUP.replace("lookup:", "lokup:"))
    messages = messages_of(folder)
    assert "xw/odoo_product.yaml: lokup: unknown key (did you mean 'lookup'?)" in messages


def test_loaded_lookup_translates_integer_ids_both_ways() -> None:
    crosswalk = Crosswalk(
        "odoo_product", to_mes={"FG-1": ("11", Decimal(1))}, to_erp={"11": ("FG-1", Decimal(1))},
        whole_number_sides=frozenset({"mes"}),
    )
    assert crosswalk.lookup("FG-1", "mes") == ("11", Decimal(1))
    assert crosswalk.lookup(11, "erp") == ("FG-1", Decimal(1))
