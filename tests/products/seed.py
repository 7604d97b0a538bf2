"""A small ERPNext site and Odoo MRP database to sync between, built from the schemas beside.

``build_erpnext`` and ``build_odoo`` create the tables (``*/schema.sql``) and the interface
tables the flows write (``*/interface.sql``), then insert a fixed set of records that each show
one thing an integration trips over (a draft and a cancelled work order, an employee who left, an item whose Odoo
product is archived, a code shared by an archived and an active product, a unit spelled
differently on each side), plus ``extra_orders`` random submitted or draft work orders drawn
from a seeded generator. Datetimes are what each product stores: ERPNext naive Asia/Shanghai,
Odoo naive UTC.
"""

from __future__ import annotations

import json
import random
import re
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, text

HERE = Path(__file__).resolve().parent
COMPANY = "Shanghai Precision Co."
_COMMENT = re.compile(r"--[^\n]*")


def apply_sql(engine: Engine, path: Path) -> None:
    """Run every statement of a DDL file (statements end with ``;``, comments are dropped)."""
    body = _COMMENT.sub("", path.read_text(encoding="utf-8"))
    with engine.begin() as conn:
        for statement in (s.strip() for s in body.split(";")):
            if statement:
                conn.exec_driver_sql(statement)


def _insert(engine: Engine, table: str, rows: list[dict[str, Any]]) -> None:
    with engine.begin() as conn:
        conn.execute(Table(table, MetaData(), autoload_with=conn).insert(), rows)


def _frappe(name: str, modified: datetime, **fields: Any) -> dict[str, Any]:
    """A Frappe row: the standard columns every doctype table has, then the doctype's fields."""
    return {"name": name, "creation": modified - timedelta(hours=1), "modified": modified,
            "modified_by": "Administrator", "owner": "Administrator", **fields}


ITEMS = [
    ("FG-BOLT-M8", "Bolt M8", "Units"),
    ("FG-NUT-M8", "Nut M8", "Units"),
    ("RM-STEEL-ROD", "Steel Rod Ø10", "Kg"),
    ("FG-OLD-1", "Old bracket", "Units"),
    ("FG-DUP", "Hinge", "Units"),
    ("SA-SHAFT", "Shaft", "Kg"),
    # Stocked in grams in ERPNext and in kilograms in Odoo: quantities must be converted.
    ("RM-ZINC-PRIMER", "Zinc primer", "Gram"),
]


def _work_order(name: str, item: str, qty: str, uom: str, start: datetime, docstatus: int, status: str,
                modified: datetime) -> dict[str, Any]:
    item_name = next(n for code, n, _ in ITEMS if code == item)
    return _frappe(
        name, modified, docstatus=docstatus, naming_series="MFG-WO-.YYYY.-", status=status,
        production_item=item, item_name=item_name, bom_no=f"BOM-{item}-001", company=COMPANY,
        qty=Decimal(qty), stock_uom=uom, wip_warehouse="Work In Progress - SPC",
        fg_warehouse="Finished Goods - SPC", planned_start_date=start,
        planned_end_date=start + timedelta(hours=8), expected_delivery_date=(start + timedelta(days=7)).date(),
    )


def _required_item(name: str, parent: str, idx: int, item: str, qty: str, uom: str, docstatus: int,
                   modified: datetime) -> dict[str, Any]:
    item_name = next(n for code, n, _ in ITEMS if code == item)
    return _frappe(
        name, modified, docstatus=docstatus, idx=idx, item_code=item, item_name=item_name,
        source_warehouse="Stores - SPC", include_item_in_manufacturing=1, required_qty=Decimal(qty),
        stock_uom=uom, parent=parent, parentfield="required_items", parenttype="Work Order",
    )


def build_erpnext(engine: Engine, extra_orders: int = 0, seed: int = 7) -> None:
    """Create the ERPNext tables and interface tables on ``engine`` (MariaDB) and fill them."""
    apply_sql(engine, HERE / "erpnext" / "schema.sql")
    apply_sql(engine, HERE / "erpnext" / "interface.sql")
    at = datetime(2026, 11, 19, 9, 0)
    _insert(engine, "tabUOM", [_frappe(u, at, uom_name=u, must_be_whole_number=int(u != "Kg")) for u in ("Kg", "Gram", "Units", "Nos")])
    _insert(engine, "tabItem", [
        _frappe(code, at, item_code=code, item_name=name, item_group="Products", stock_uom=uom,
                disabled=int(code == "FG-OLD-1"))
        for code, name, uom in ITEMS
    ])
    _insert(engine, "tabEmployee", [
        _frappe(name, at, naming_series="HR-EMP-", first_name=first, employee_name=full, status=status,
                company=COMPANY, department="Production - SPC", attendance_device_id=badge,
                date_of_joining=datetime(2024, 3, 1).date())
        for name, first, full, status, badge in [
            ("HR-EMP-00001", "Wei", "Wang Wei", "Active", "0042"),
            ("HR-EMP-00002", "Li", "Zhang Li", "Active", "0107"),
            ("HR-EMP-00003", "Jun", "Liu Jun", "Left", "0099"),
        ]
    ])
    orders = [
        _work_order("MFG-WO-2026-00001", "FG-BOLT-M8", "100", "Units", datetime(2026, 11, 20, 8, 0), 1, "Not Started", at),
        _work_order("MFG-WO-2026-00002", "FG-NUT-M8", "250.5", "Units", datetime(2026, 11, 21, 7, 30), 1, "In Process", at),
        _work_order("MFG-WO-2026-00003", "FG-BOLT-M8", "10", "Units", datetime(2026, 11, 22, 8, 0), 0, "Draft", at),
        _work_order("MFG-WO-2026-00004", "FG-NUT-M8", "20", "Units", datetime(2026, 11, 22, 8, 0), 2, "Cancelled", at),
        _work_order("MFG-WO-2026-00005", "FG-OLD-1", "5", "Units", datetime(2026, 11, 23, 8, 0), 1, "Not Started", at),
        _work_order("MFG-WO-2026-00006", "FG-DUP", "40", "Units", datetime(2026, 11, 23, 13, 0), 1, "Not Started", at),
        _work_order("MFG-WO-2026-00007", "SA-SHAFT", "12.345", "Kg", datetime(2026, 11, 22, 0, 15), 1, "Not Started", at),
    ]
    lines = [
        _required_item("8f3a1c0e21", "MFG-WO-2026-00001", 1, "RM-STEEL-ROD", "5.2", "Kg", 1, at),
        _required_item("8f3a1c0e22", "MFG-WO-2026-00001", 2, "FG-NUT-M8", "100", "Units", 1, at),
        _required_item("8f3a1c0e23", "MFG-WO-2026-00001", 3, "RM-ZINC-PRIMER", "250", "Gram", 1, at),
        _required_item("9b71d44a03", "MFG-WO-2026-00002", 1, "RM-STEEL-ROD", "12.525", "Kg", 1, at),
        _required_item("c2e0f7b914", "MFG-WO-2026-00003", 1, "RM-STEEL-ROD", "1", "Kg", 0, at),
        _required_item("d5a9e3c705", "MFG-WO-2026-00005", 1, "RM-STEEL-ROD", "1", "Kg", 1, at),
    ]
    rng = random.Random(seed)
    for n in range(extra_orders):
        code, _, uom = rng.choice([i for i in ITEMS if i[0] not in ("FG-OLD-1", "RM-STEEL-ROD", "RM-ZINC-PRIMER")])
        start = datetime(2026, 12, 1, 6, 0) + timedelta(minutes=15 * rng.randrange(0, 2000))
        submitted = rng.random() < 0.8
        name = f"MFG-WO-2026-{10000 + n:05d}"
        orders.append(_work_order(name, code, str(rng.randrange(1, 500)), uom, start, int(submitted),
                                  "Not Started" if submitted else "Draft", at + timedelta(minutes=n)))
        lines.append(_required_item(f"e{n:09d}", name, 1, "RM-STEEL-ROD", f"{rng.randrange(1, 9000) / 1000}", "Kg",
                                    int(submitted), at + timedelta(minutes=n)))
    _insert(engine, "tabWork Order", orders)
    _insert(engine, "tabWork Order Item", lines)
    # Stock entries numbered from the series "MAT-STE-.YYYY.-": tabSeries holds the last number used.
    _insert(engine, "tabSeries", [{"name": "MAT-STE-2026-", "current": 17}])
    posted = datetime(2026, 11, 21, 16, 0)
    _insert(engine, "tabStock Entry", [
        _frappe(name, posted, docstatus=docstatus, naming_series="MAT-STE-.YYYY.-", stock_entry_type=purpose,
                purpose=purpose, work_order="MFG-WO-2026-00002", company=COMPANY, posting_date=posted.date(),
                fg_completed_qty=Decimal(qty), remarks=remarks)
        for name, purpose, qty, docstatus, remarks in [
            ("MAT-STE-2026-00015", "Material Transfer for Manufacture", "250.5", 1, "material to WIP"),
            # Production booked by hand in ERPNext before the sync ran: it counts towards what is posted.
            ("MAT-STE-2026-00016", "Manufacture", "50", 1, "first shift, booked by hand"),
            ("MAT-STE-2026-00017", "Manufacture", "20", 2, "booked twice by mistake, cancelled"),
        ]
    ])


def _name(en: str, zh: str | None = None) -> str:
    """A translatable Odoo name: JSONB keyed by language."""
    return json.dumps({"en_US": en, **({"zh_CN": zh} if zh else {})}, ensure_ascii=False)


def build_odoo(engine: Engine, synced_orders: bool = True) -> None:
    """Create the Odoo MRP tables and interface tables on ``engine`` (PostgreSQL) and fill them.

    With ``synced_orders`` false, Odoo holds no manufacturing order made from an ERPNext work
    order yet (only one of its own, a draft without origin): the state before a first sync into
    ``mrp_production``.
    """
    apply_sql(engine, HERE / "odoo" / "schema.sql")
    apply_sql(engine, HERE / "odoo" / "interface.sql")
    at = datetime(2026, 11, 19, 1, 0)
    stamp = {"create_date": at, "write_date": at}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO res_company (id, name, active) VALUES (1, :n, true)"), {"n": COMPANY})
        conn.execute(text("INSERT INTO uom_category (id, name) VALUES (1, CAST(:u AS jsonb)), (2, CAST(:w AS jsonb))"),
                     {"u": _name("Unit"), "w": _name("Weight")})
    _insert(engine, "uom_uom", [
        {"id": 1, "category_id": 1, "name": {"en_US": "Units", "zh_CN": "件"}, "uom_type": "reference",
         "factor": Decimal(1), "rounding": Decimal("0.01"), "active": True, **stamp},
        {"id": 2, "category_id": 1, "name": {"en_US": "Dozens", "zh_CN": "打"}, "uom_type": "bigger",
         "factor": Decimal("0.08333333333333333"), "rounding": Decimal("0.01"), "active": True, **stamp},
        {"id": 3, "category_id": 2, "name": {"en_US": "kg", "zh_CN": "千克"}, "uom_type": "reference",
         "factor": Decimal(1), "rounding": Decimal("0.01"), "active": True, **stamp},
        {"id": 4, "category_id": 2, "name": {"en_US": "g", "zh_CN": "克"}, "uom_type": "smaller",
         "factor": Decimal(1000), "rounding": Decimal("0.01"), "active": True, **stamp},
        # An archived duplicate: the lookup's `where: {active: true}` must leave it out.
        {"id": 6, "category_id": 2, "name": {"en_US": "KG"}, "uom_type": "reference",
         "factor": Decimal(1), "rounding": Decimal("0.01"), "active": False, **stamp},
    ])
    templates = [
        (1, "FG-BOLT-M8", "Bolt M8", "螺栓 M8", 1, True),
        (2, "FG-NUT-M8", "Nut M8", "螺母 M8", 1, True),
        (3, "RM-STEEL-ROD", "Steel Rod Ø10", "钢棒 Ø10", 3, True),
        (4, "FG-OLD-1", "Old bracket", "旧支架", 1, False),
        (5, "FG-DUP", "Hinge (old)", None, 1, False),
        (6, "FG-DUP", "Hinge", "铰链", 1, True),
        (7, "SA-SHAFT", "Shaft", None, 3, True),
        (8, "RM-ZINC-PRIMER", "Zinc primer", "锌底漆", 3, True),
    ]
    _insert(engine, "product_template", [
        {"id": t, "name": {"en_US": en, **({"zh_CN": zh} if zh else {})}, "default_code": code,
         "detailed_type": "product", "type": "product", "uom_id": uom, "uom_po_id": uom, "sale_ok": True,
         "purchase_ok": True, "active": active, "company_id": 1, **stamp}
        for t, code, en, zh, uom, active in templates
    ])
    # Variant ids differ from template ids on purpose: flows must use product_product.id.
    _insert(engine, "product_product", [
        {"id": 10 + t, "product_tmpl_id": t, "default_code": code, "combination_indices": "", "active": active, **stamp}
        for t, code, _, _, _, active in templates
    ])
    with engine.begin() as conn:
        for table in ("uom_uom", "product_template", "product_product"):
            conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))"))
    # Odoo's default ("standard") series draw from a database sequence named after the row's id;
    # number_next only reports it.
    with engine.begin() as conn:
        conn.execute(text("CREATE SEQUENCE ir_sequence_001 INCREMENT BY 1 START WITH 6"))
    _insert(engine, "ir_sequence", [{
        "id": 1, "name": "Production", "code": "mrp.production", "implementation": "standard", "active": True,
        "prefix": "WH/MO/", "number_next": 6, "number_increment": 1, "padding": 5, "company_id": 1,
        "use_date_range": False, **stamp,
    }])
    done = datetime(2026, 11, 20, 10, 0)
    productions = [
        (1, "WH/MO/00001", "MFG-WO-2026-00001", 11, "100", 1, "100", "done", datetime(2026, 11, 20, 0, 0), done),
        (2, "WH/MO/00002", "MFG-WO-2026-00002", 12, "250.5", 1, "0", "cancel", datetime(2026, 11, 20, 23, 30), None),
        (3, "WH/MO/00003", "MFG-WO-2026-00006", 16, "40", 1, "15", "progress", datetime(2026, 11, 23, 5, 0), None),
        (4, "WH/MO/00004", None, 13, "8", 3, "0", "draft", datetime(2026, 11, 24, 1, 0), None),
        (5, "WH/MO/00005", "MFG-WO-2026-00005", 14, "5", 1, "5", "done", datetime(2026, 11, 23, 0, 0), datetime(2026, 11, 23, 6, 0)),
    ]
    if not synced_orders:
        productions = [p for p in productions if p[2] is None]
    _insert(engine, "mrp_production", [
        {"id": i, "name": name, "priority": "0", "origin": origin, "product_id": product,
         "product_tmpl_id": product - 10, "product_qty": Decimal(qty), "product_uom_id": uom,
         "product_uom_qty": Decimal(qty), "qty_producing": Decimal(producing), "state": state,
         "date_start": start, "date_finished": finished, "company_id": 1, "create_date": at,
         "write_date": (finished or start) + timedelta(seconds=5)}
        for i, name, origin, product, qty, uom, producing, state, start, finished in productions
    ])
    with engine.begin() as conn:
        conn.execute(text("SELECT setval(pg_get_serial_sequence('mrp_production', 'id'), (SELECT max(id) FROM mrp_production))"))
    if not synced_orders:
        return
    _insert(engine, "stock_move", [{
        "name": "WH/MO/00001", "reference": "WH/MO/00001", "sequence": 1, "date": done, "company_id": 1,
        "product_id": 13, "product_uom_qty": Decimal("5.2"), "product_uom": 3, "quantity": Decimal("5.2"),
        "location_id": 8, "location_dest_id": 15, "state": "done", "raw_material_production_id": 1,
        "create_date": at, "write_date": done,
    }])
