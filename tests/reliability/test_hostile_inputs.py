"""Hostile but honest inputs (issue #25): values, files and URLs a plant can produce that must
neither lose a change, overwrite the wrong row, nor leak or garble what is printed.

Each test tries the issue's example and at least one other instance of the same class, against
the real PostgreSQL server (sites cloned from the demo pair) or through the CLI.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from sqlalchemy import text
from sync_harness import SiteFactory

from etl import watermark as wm

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
