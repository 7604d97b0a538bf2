"""Deterministic synthetic factory for the demo ERP and MES databases.

generate() writes the ERP master data and production orders, and the shop-floor records
(operation reports, inspections, material issues, goods receipts, equipment states) that
a factory working through the released orders would have left in its MES. The ERP
interface tables (if_*) and the MES tables the sync loads (item ... work_order_component)
stay empty: filling them is the sync's job.

One schedule drives the shop floor: released orders queue for their machines, and the
equipment states, operation reports, scrap, issues, inspections and receipts are what that
schedule left behind, so the KPIs computed from them agree with each other.

All randomness comes from random.Random instances seeded from the seed, so the same seed,
arguments and as_of give the same rows.
"""

from __future__ import annotations

import csv
import random
import re
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal
from types import MappingProxyType
from typing import Any, TypeVar

import sqlalchemy as sa

from demo.schema import REPO_ROOT, schema_tables

CROSSWALK_DIR = REPO_ROOT / "mappings" / "crosswalks"

BATCH_ROWS = 5_000
MIN_ORDERS = 10

MINUTE = 60
HOUR = 3_600
DAY = 86_400
WEEK = 7 * DAY
# job slots are plain modular arithmetic.
EPOCH = datetime(2000, 1, 1)
# Asia/Shanghai has no daylight saving time, so UTC is local time minus 8 hours all year.
UTC_OFFSET = timedelta(hours=8)
EPOCH_UTC = EPOCH - UTC_OFFSET

MRP_RUN = 2 * HOUR
MASS_RELEASE = 6 * HOUR
TECO_JOB = 23 * HOUR + 30 * MINUTE
WEEKLY_CLOSE = DAY + 22 * HOUR
MASTER_LOAD = 3 * HOUR

DIRTY_MATERIAL_NO = "MAT-A00001"
WORK_ORDER_PREFIX = "WO-2026-"
_MATERIAL_RULE = re.compile(r"^MAT-0(\d{5})$")

ERP_WRITTEN = (
    "work_center", "material", "bom_item", "routing_operation", "employee",
    "stock_level", "production_order", "order_component",
)
MES_WRITTEN = (
    "equipment_state_log", "operation_report", "quality_inspection",
    "material_issue", "fg_receipt",
)

MES_STATUSES = frozenset({"REL", "TECO", "CLSD"})
COMPLETE_STATUSES = frozenset({"TECO", "CLSD"})

# Orders are released over the last RELEASED_DAYS and planned for the next PLANNED_DAYS.
RELEASED_DAYS = 14
PLANNED_DAYS = 7
# The busiest machine runs about this share of the released window; the others less.
UTILIZATION = 0.8
# Actual run time per unit against the routing's standard: performance 80-95 %.
SLOWER_THAN_STANDARD = (1.05, 1.25)
# Run time per standard minute the lot sizing allows for: the slower pace and unplanned stops.
RUN_ALLOWANCE = 1.3
# Share of operation lots that scrap anything (those scrap 0.5-5 % of their units).
SCRAPPED_LOTS = 0.15
MIN_LOT = 5
# The ERP plans an order's lead time as its standard time times this, plus a queue per operation.
PLANNED_ALLOWANCE = 1.3
QUEUE_ALLOWANCE = (4 * HOUR, 14 * HOUR)
PLANNED_STOP = "PM"
PLANNED_STOP_HOURS = 4

_WORK_CENTERS: dict[str, tuple[str, str, str, str]] = {
    # ERP work center: plant, kind, description, capacity hours per day
    "WC-CUT1": ("1000", "CUT", "激光切割中心", "16.00"),
    "WC-WLD1": ("1000", "WLD", "机器人焊接中心", "20.00"),
    "WC-MIX1": ("1000", "MIX", "配料混合中心", "24.00"),
    "WC-ASM1": ("1000", "ASM", "总装线", "16.00"),
    "WC-PKG1": ("1000", "PKG", "包装线", "8.00"),
    "WC-CUT2": ("2000", "CUT", "切割中心（深圳）", "16.00"),
    "WC-ASM2": ("2000", "ASM", "装配线（深圳）", "16.00"),
    "WC-PKG2": ("2000", "PKG", "包装线（深圳）", "8.00"),
}

# Routing flows as (work center, operation text); routings use a slice or subset of one.
_ASSEMBLY_FLOW = (("WC-CUT1", "下料切割"), ("WC-WLD1", "焊接"), ("WC-ASM1", "总装"), ("WC-PKG1", "包装"))
_PART_FLOW = (("WC-CUT1", "下料切割"), ("WC-WLD1", "焊接"), ("WC-ASM1", "部件组装"))
_WEIGHED_FLOW = (("WC-MIX1", "称量配料"), ("WC-MIX1", "混合搅拌"), ("WC-PKG1", "灌装包装"))
# Machine minutes per unit (PC) or per KG, as (low, high) in 1/10000 minute.
_STD_MINUTES = {
    ("CUT", "PC"): (2_000, 15_000), ("WLD", "PC"): (5_000, 50_000),
    ("ASM", "PC"): (8_000, 90_000), ("PKG", "PC"): (2_000, 10_000),
    ("MIX", "KG"): (100, 800), ("PKG", "KG"): (50, 300),
}

# (type, unit) -> entries of (Chinese, English, material group, model prefix)
_CATALOG: dict[tuple[str, str], tuple[tuple[str, str, str, str], ...]] = {
    ("FERT", "PC"): (
        ("齿轮箱", "Gearbox", "FG-GEAR", "GB"),
        ("减速机", "Speed reducer", "FG-GEAR", "RD"),
        ("电机总成", "Motor assembly", "FG-MOTOR", "MA"),
        ("水泵", "Water pump", "FG-PUMP", "WP"),
        ("离心风机", "Centrifugal fan", "FG-FAN", "CF"),
        ("液压缸", "Hydraulic cylinder", "FG-HYD", "HC"),
        ("控制柜", "Control cabinet", "FG-ELEC", "CC"),
        ("空气压缩机", "Air compressor", "FG-COMP", "AC"),
        ("电动阀门", "Motorized valve", "FG-VALVE", "MV"),
        ("皮带输送机", "Belt conveyor", "FG-CONV", "BC"),
    ),
    ("HALB", "PC"): (
        ("焊接机架", "Welded frame", "SF-WELD", "WF"),
        ("传动轴组件", "Drive shaft assembly", "SF-MECH", "DS"),
        ("铸铝壳体", "Cast aluminium housing", "SF-MECH", "AH"),
        ("电机转子", "Motor rotor", "SF-ELEC", "RT"),
        ("电机定子", "Motor stator", "SF-ELEC", "ST"),
        ("斜齿轮", "Helical gear", "SF-MECH", "HG"),
        ("连接法兰", "Connecting flange", "SF-MECH", "FL"),
        ("安装支架", "Mounting bracket", "SF-WELD", "MB"),
    ),
    ("HALB", "KG"): (
        ("橡胶混炼胶", "Rubber compound", "SF-MIX", "RC"),
        ("环氧涂料", "Epoxy paint mix", "SF-MIX", "EP"),
        ("预混粉料", "Premixed powder", "SF-MIX", "PM"),
        ("密封胶", "Sealant compound", "SF-MIX", "SC"),
    ),
    ("ROH", "KG"): (
        ("冷轧钢板", "Cold-rolled steel sheet", "RM-STEEL", "SPCC"),
        ("铝锭", "Aluminium ingot", "RM-METAL", "AL"),
        ("漆包铜线", "Enamelled copper wire", "RM-METAL", "CU"),
        ("聚丙烯颗粒", "Polypropylene pellets", "RM-PLAST", "PP"),
        ("环氧树脂", "Epoxy resin", "RM-CHEM", "EPR"),
        ("钛白粉", "Titanium dioxide", "RM-CHEM", "TIO"),
        ("炭黑", "Carbon black", "RM-CHEM", "CB"),
        ("天然橡胶", "Natural rubber", "RM-CHEM", "NR"),
        ("焊丝", "Welding wire", "RM-WELD", "ER"),
    ),
    ("ROH", "M"): (
        ("电力电缆", "Power cable", "RM-ELEC", "YJV"),
        ("无缝钢管", "Seamless steel tube", "RM-STEEL", "SMLS"),
        ("橡胶软管", "Rubber hose", "RM-PLAST", "RH"),
        ("紫铜管", "Copper pipe", "RM-METAL", "TP2"),
    ),
    ("ROH", "PC"): (
        ("六角螺栓", "Hex bolt", "RM-FAST", "M8"),
        ("六角螺母", "Hex nut", "RM-FAST", "M10"),
        ("深沟球轴承", "Deep groove ball bearing", "RM-BEAR", "62"),
        ("平垫圈", "Flat washer", "RM-FAST", "W"),
        ("O型密封圈", "O-ring seal", "RM-SEAL", "OR"),
        ("瓦楞纸箱", "Corrugated carton", "RM-PACK", "CT"),
        ("木托盘", "Wooden pallet", "RM-PACK", "PL"),
        ("铭牌", "Nameplate", "RM-PACK", "NP"),
    ),
}
# Standard cost per base unit, (low, high) in 1/10000 currency units.
_COST = {
    ("FERT", "PC"): (5_000_000, 200_000_000), ("HALB", "PC"): (200_000, 20_000_000),
    ("HALB", "KG"): (50_000, 800_000), ("ROH", "KG"): (30_000, 1_200_000),
    ("ROH", "M"): (20_000, 600_000), ("ROH", "PC"): (500, 3_000_000),
}

_SURNAMES = "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗"
_GIVEN_NAMES = (
    "伟", "娜", "芳", "敏", "静", "强", "磊", "军", "洋", "勇", "艳", "杰",
    "娟", "涛", "明", "超", "秀英", "丽", "刚", "平", "桂英", "建华", "志强", "晓明",
)
_SCRAP_REASONS = ("S01", "S02", "S03", "S04", "S05")
_DEFECT_CODES = ("D01", "D02", "D03", "D04", "D05", "D06")
_UNPLANNED_REASONS = ("BRK-MECH", "BRK-ELEC", "QA-HOLD", "NO-MAT")
_DIRTY_FORMS = ("lower", "trailing", "lower_trailing")

T = TypeVar("T")

Q3 = Decimal("0.001")


@dataclass(frozen=True)
class FactoryStats:
    """Rows written per table by generate(); tables it leaves empty are listed with 0."""

    erp: Mapping[str, int]
    mes: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.erp.values()) + sum(self.mes.values())


def today_as_of() -> datetime:
    """The demo's default as_of: midnight at the start of today, so one date gives one factory."""
    return datetime.combine(datetime.now().date(), time())


def generate(
    erp: sa.Engine,
    mes: sa.Engine,
    *,
    orders: int,
    seed: int = 42,
    as_of: datetime | None = None,
) -> FactoryStats:
    """Fill the demo ERP and MES databases with a synthetic factory as of ``as_of`` (default:
    today_as_of()).

    One schedule drives everything: orders released over the 14 days before as_of run their
    operations on their machines (setup, then standard time x quantity x 1.05-1.25, broken by
    unplanned stops, around weekly planned maintenance); the state log, confirmations, scrap,
    issues, inspections and receipts are what that schedule left behind. Orders released later
    (up to 7 days on) are still CRTD.

    The schemas must exist (create_demo_schema) and the tables written must be empty.
    ``as_of`` is naive local plant time (Asia/Shanghai), cut to whole seconds: ERP
    timestamps never pass it, MES timestamps (UTC) never pass as_of - 8h. ``erp`` and
    ``mes`` may be the same engine. Same arguments give identical rows.
    """
    if orders < MIN_ORDERS:
        raise ValueError(f"orders must be at least {MIN_ORDERS}, got {orders}")
    as_of = today_as_of() if as_of is None else as_of
    if as_of.tzinfo is not None:
        raise ValueError("as_of must be naive local plant time (Asia/Shanghai)")
    clock = _Clock(int((as_of.replace(microsecond=0) - EPOCH).total_seconds()))
    crosswalks = _load_crosswalks()
    erp_sink = _Sink(erp, ERP_WRITTEN)
    mes_sink = _Sink(mes, MES_WRITTEN)

    master = _build_master(_stream(seed, "master"), _material_count(orders), crosswalks, clock)
    _write_master(erp_sink, _stream(seed, "stock"), master, clock)
    erp_sink.flush()

    plan = _plan_dirt(_stream(seed, "plan"), orders)
    planned, machines = _plan_orders(_stream(seed, "orders"), master, plan, crosswalks, clock, orders)
    _write_equipment_states(mes_sink, machines, clock)
    shop_floor = _ShopFloor(_stream(seed, "mes"), mes_sink, crosswalks, master, plan, clock)
    for order in planned:
        required = _write_erp_order(erp_sink, order, clock)
        if order.status in MES_STATUSES and order.is_clean:
            shop_floor.work(order, required)
    erp_sink.flush()
    mes_sink.flush()

    return FactoryStats(
        erp=MappingProxyType({t: erp_sink.counts.get(t, 0) for t in schema_tables("erp")}),
        mes=MappingProxyType({t: mes_sink.counts.get(t, 0) for t in schema_tables("mes")}),
    )


def _stream(seed: int, name: str) -> random.Random:
    """An independent random stream per concern, so changing one leaves the others' data alone."""
    return random.Random(f"{seed}:{name}")


def _material_count(orders: int) -> int:
    return max(60, min(5000, orders // 5))


def item_code(material_no: str) -> str | None:
    """The MES item code of an ERP material number, or None when the crosswalk rule has none."""
    match = _MATERIAL_RULE.match(material_no)
    return None if match is None else "1" + match.group(1)


def work_order_no(order_no: str) -> str:
    """The MES work order number of an ERP production order number."""
    return WORK_ORDER_PREFIX + order_no[1:]


@dataclass(frozen=True)
class _Clock:
    """Whole-second local plant time as seconds since EPOCH; ``now`` is as_of."""

    now: int

    def local(self, t: int) -> datetime:
        return EPOCH + timedelta(seconds=t)

    def utc(self, t: int) -> datetime:
        return EPOCH_UTC + timedelta(seconds=t)


def _next_slot(t: int, period: int, phase: int) -> int:
    """The first time at or after t that is ``phase`` into a ``period``."""
    return t + (phase - t) % period


def _previous_slot(t: int, period: int, phase: int) -> int:
    """The last time at or before t that is ``phase`` into a ``period``."""
    return t - (t - phase) % period


@dataclass(frozen=True)
class _Crosswalks:
    plant: Mapping[str, str]
    equipment: Mapping[str, str]
    unit: Mapping[str, tuple[str, int]]
    alternate_unit: Mapping[str, tuple[str, int]]


def _read_crosswalk(name: str) -> list[dict[str, str]]:
    with (CROSSWALK_DIR / name).open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def _load_crosswalks() -> _Crosswalks:
    """The plant, work center and unit crosswalks, checked against the work centers built here."""
    plant = {r["erp"]: r["mes"] for r in _read_crosswalk("plant.csv")}
    equipment = {r["erp"]: r["mes"] for r in _read_crosswalk("work_center.csv")}
    units = _read_crosswalk("unit.csv")
    unit = {r["erp"]: (r["mes"], int(r["factor"])) for r in units if r["direction"] == "both"}
    alternate = {r["erp"]: (r["mes"], int(r["factor"])) for r in units if r["direction"] == "to_erp"}
    if set(equipment) != set(_WORK_CENTERS):
        raise ValueError(f"work_center.csv lists {sorted(equipment)}, the factory builds {sorted(_WORK_CENTERS)}")
    for work_center, (wc_plant, *_) in _WORK_CENTERS.items():
        if f"-{plant[wc_plant]}-" not in equipment[work_center]:
            raise ValueError(f"{work_center} is in plant {wc_plant} but maps to {equipment[work_center]}")
    return _Crosswalks(plant, equipment, unit, alternate)


class _Sink:
    """Buffered inserts into one database: batches of BATCH_ROWS, one transaction each."""

    def __init__(self, engine: sa.Engine, tables: Sequence[str]) -> None:
        self._engine = engine
        self._tables = {name: sa.Table(name, sa.MetaData(), autoload_with=engine) for name in tables}
        self._buffers: dict[str, list[dict[str, Any]]] = {name: [] for name in tables}
        self.counts: dict[str, int] = {name: 0 for name in tables}
        self._require_empty()

    def _require_empty(self) -> None:
        with self._engine.connect() as conn:
            for name, table in self._tables.items():
                if conn.execute(sa.select(sa.literal(1)).select_from(table).limit(1)).first():
                    raise ValueError(f"table {name} already holds rows; recreate the demo schema first")

    def add(self, table: str, row: dict[str, Any]) -> None:
        buffer = self._buffers[table]
        buffer.append(row)
        if len(buffer) >= BATCH_ROWS:
            self._flush_table(table)

    def flush(self) -> None:
        for table in self._buffers:
            self._flush_table(table)

    def _flush_table(self, table: str) -> None:
        rows = self._buffers[table]
        if not rows:
            return
        with self._engine.begin() as conn:
            conn.execute(self._tables[table].insert(), rows)
        self.counts[table] += len(rows)
        self._buffers[table] = []


@dataclass(frozen=True)
class _Material:
    code: str
    type: str
    unit: str
    description_zh: str | None
    description_en: str | None
    group: str | None
    cost: Decimal | None
    is_deleted: bool
    updated_at: int
    item_code: str | None


@dataclass(frozen=True)
class _BomLine:
    item_no: int
    component: _Material
    quantity: Decimal
    updated_at: int


@dataclass(frozen=True)
class _Operation:
    operation_no: str
    work_center: str
    equipment: str
    description: str | None
    std_minutes: Decimal
    setup_minutes: Decimal
    updated_at: int


@dataclass(frozen=True)
class _Product:
    """A material the factory makes (FERT or HALB) with its BOM and routing."""

    material: _Material
    base_quantity: Decimal
    bom: tuple[_BomLine, ...]
    operations: tuple[_Operation, ...]


@dataclass(frozen=True)
class _Employee:
    employee_no: str
    name: str
    plant: str
    work_center: str | None
    is_active: bool
    updated_at: int


@dataclass(frozen=True)
class _Master:
    materials: tuple[_Material, ...]
    products: tuple[_Product, ...]
    special_product: _Product
    employees: tuple[_Employee, ...]
    operators: Mapping[str, tuple[str, ...]]


def _build_master(rng: random.Random, count: int, crosswalks: _Crosswalks, clock: _Clock) -> _Master:
    """Materials, BOMs, routings and employees; the dirty material MAT-A00001 comes on top of ``count``."""
    loaded = _master_load(clock)
    kinds = _material_kinds(rng, count)
    forced_nulls = _forced_null_columns(kinds)
    materials = [
        _make_material(rng, f"MAT-0{i + 1:05d}", kind, forced_nulls.get(i, ()), loaded, clock)
        for i, kind in enumerate(kinds)
    ]
    obsolete = {m.code for m in [m for m in materials if m.type == "ROH"][-max(1, count // 100):]}
    materials = [replace(m, is_deleted=True) if m.code in obsolete else m for m in materials]
    dirty = _dirty_material(rng, clock)

    raw = _RawPool([m for m in materials if m.type == "ROH" and not m.is_deleted])
    every_halb = [m for m in materials if m.type == "HALB"]
    earlier_halb: list[_Material] = []
    products: list[_Product] = []
    for material in materials:
        if material.type == "ROH":
            continue
        # A HALB only uses HALB numbered before it, which keeps the BOM graph acyclic.
        halb = earlier_halb if material.type == "HALB" else every_halb
        bom = _make_bom(rng, material, raw, halb, loaded, clock)
        operations = _make_routing(rng, material, crosswalks, loaded, clock)
        products.append(_Product(material, _base_quantity(material), bom, operations))
        if material.type == "HALB":
            earlier_halb.append(material)
    special = _with_dirty_component(rng, next(p for p in products if p.material.type == "FERT"), dirty)
    products = [special if p.material.code == special.material.code else p for p in products]
    employees = _make_employees(rng, loaded, clock)
    operators = {
        plant: tuple(e.employee_no for e in employees if e.plant == plant and e.is_active)
        for plant in crosswalks.plant
    }
    return _Master(tuple(materials) + (dirty,), tuple(products), special, tuple(employees), operators)


def _material_kinds(rng: random.Random, count: int) -> list[tuple[str, str]]:
    """(type, unit) per material number, in exact shares: 20% FERT, 20% HALB, 60% ROH."""
    fert = round(count * 0.2)
    halb = round(count * 0.2)
    roh = count - fert - halb
    halb_kg = round(halb * 0.3)
    roh_kg = round(roh * 0.4)
    roh_m = round(roh * 0.2)
    kinds = (
        [("FERT", "PC")] * fert
        + [("HALB", "KG")] * halb_kg + [("HALB", "PC")] * (halb - halb_kg)
        + [("ROH", "KG")] * roh_kg + [("ROH", "M")] * roh_m + [("ROH", "PC")] * (roh - roh_kg - roh_m)
    )
    rng.shuffle(kinds)
    return kinds


def _forced_null_columns(kinds: list[tuple[str, str]]) -> dict[int, tuple[str, ...]]:
    """Material indexes whose nullable columns are NULL regardless of chance, so every seed has some."""
    roh = [i for i, (kind, _) in enumerate(kinds) if kind == "ROH"]
    first_halb = next(i for i, (kind, _) in enumerate(kinds) if kind == "HALB")
    return {
        first_halb: ("description_en",),
        roh[1]: ("group",),
        roh[2]: ("cost",),
        roh[-1]: ("description_zh",),
    }


def _make_material(
    rng: random.Random,
    code: str,
    kind: tuple[str, str],
    nulls: tuple[str, ...],
    loaded: int,
    clock: _Clock,
) -> _Material:
    material_type, unit = kind
    zh, en, group, prefix = rng.choice(_CATALOG[kind])
    model = f"{prefix}-{rng.randint(100, 999)}"
    low, high = _COST[kind]
    english_missing = rng.random() < 0.04 or "description_en" in nulls
    return _Material(
        code=code,
        type=material_type,
        unit=unit,
        description_zh=None if "description_zh" in nulls else f"{zh} {model}",
        description_en=None if english_missing else f"{en} {model}",
        group=None if rng.random() < 0.03 or "group" in nulls else group,
        cost=None if rng.random() < 0.02 or "cost" in nulls else Decimal(rng.randint(low, high)).scaleb(-4),
        is_deleted=False,
        updated_at=_master_time(rng, loaded, clock),
        item_code=item_code(code),
    )


def _dirty_material(rng: random.Random, clock: _Clock) -> _Material:
    """A raw material keyed in by hand outside the numbering scheme: it has no MES item."""
    return _Material(
        code=DIRTY_MATERIAL_NO,
        type="ROH",
        unit="KG",
        description_zh="进口特种润滑脂",
        description_en="Imported special grease",
        group="RM-CHEM",
        cost=Decimal("86.5000"),
        is_deleted=False,
        updated_at=clock.now - rng.randint(40 * DAY, 60 * DAY),
        item_code=None,
    )


def _master_load(clock: _Clock) -> int:
    """The second the master data was migrated into the ERP, about ten months before as_of."""
    return _previous_slot(clock.now - 320 * DAY, DAY, MASTER_LOAD)


def _master_time(rng: random.Random, loaded: int, clock: _Clock) -> int:
    """Most master rows still carry the second of the initial load; the rest were edited since."""
    if rng.random() < 0.6:
        return loaded
    return rng.randint(loaded, clock.now - HOUR)


def _base_quantity(material: _Material) -> Decimal:
    return Decimal("1000.000") if material.unit == "KG" else Decimal("1.000")


@dataclass(frozen=True)
class _RawPool:
    """Raw materials that BOMs may use (obsolete ones excluded), also split by unit."""

    all: list[_Material]
    weighed: list[_Material] = field(init=False)
    packs: list[_Material] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "weighed", [m for m in self.all if m.unit == "KG"])
        object.__setattr__(self, "packs", [m for m in self.all if m.unit == "PC"])


def _make_bom(
    rng: random.Random,
    parent: _Material,
    raw: _RawPool,
    halb: Sequence[_Material],
    loaded: int,
    clock: _Clock,
) -> tuple[_BomLine, ...]:
    """2-5 distinct components among the raw materials and the given HALB."""
    count = rng.randint(2, 5)
    if parent.unit == "KG":
        components = _mix_components(rng, count, raw, halb)
    else:
        semi = rng.sample(halb, min(len(halb), rng.randint(0, 2), count - 1))
        components = semi + rng.sample(raw.all, count - len(semi))
    updated_at = _master_time(rng, loaded, clock)
    quantities = _component_quantities(rng, parent, components)
    return tuple(
        _BomLine(10 * (i + 1), component, quantity, updated_at)
        for i, (component, quantity) in enumerate(zip(components, quantities, strict=True))
    )


def _mix_components(
    rng: random.Random, count: int, raw: _RawPool, halb: Sequence[_Material]
) -> list[_Material]:
    """Components of a weighed product: weighed ingredients, sometimes plus a packaging item."""
    weighed = raw.weighed + [m for m in halb if m.unit == "KG"]
    pack = 1 if raw.packs and rng.random() < 0.5 else 0
    ingredients = rng.sample(weighed, min(len(weighed), count - pack))
    return ingredients + rng.sample(raw.packs, pack)


def _component_quantities(
    rng: random.Random, parent: _Material, components: Sequence[_Material]
) -> list[Decimal]:
    """Quantity of each component, in its own unit, per base quantity of the parent."""
    if parent.unit == "KG":
        weighed = [c for c in components if c.unit == "KG"]
        weights = [rng.uniform(0.2, 1.0) for _ in weighed]
        batch = rng.randint(1_000_000, 1_050_000)
        shares = iter(max(1_000, int(batch * w / sum(weights))) for w in weights)
        return [
            Decimal(next(shares)).scaleb(-3) if c.unit == "KG" else Decimal(rng.randint(20, 100))
            for c in components
        ]
    return [_per_piece_quantity(rng, c) for c in components]


def _per_piece_quantity(rng: random.Random, component: _Material) -> Decimal:
    if component.unit == "PC":
        return Decimal(rng.randint(1, 4) if component.type == "HALB" else rng.randint(1, 12))
    if component.unit == "KG":
        return Decimal(rng.randint(50, 25_000)).scaleb(-3)
    return Decimal(rng.randint(200, 12_000)).scaleb(-3)


def _with_dirty_component(rng: random.Random, product: _Product, dirty: _Material) -> _Product:
    """The product with its last BOM line switched to the dirty material (so the BOM keeps 2-5 lines)."""
    last = product.bom[-1]
    line = _BomLine(last.item_no, dirty, Decimal(rng.randint(100, 2_000)).scaleb(-3), last.updated_at)
    return _Product(product.material, product.base_quantity, product.bom[:-1] + (line,), product.operations)


def _make_routing(
    rng: random.Random, material: _Material, crosswalks: _Crosswalks, loaded: int, clock: _Clock
) -> tuple[_Operation, ...]:
    """2-4 operations on plant-1000 work centers in a plausible flow for the material."""
    if material.unit == "KG":
        steps: Sequence[tuple[str, str]] = _WEIGHED_FLOW[: 2 if rng.random() < 0.4 else 3]
    elif material.type == "FERT":
        steps = _ASSEMBLY_FLOW[-rng.randint(2, 4):]
    else:
        steps = [_PART_FLOW[i] for i in sorted(rng.sample(range(3), rng.randint(2, 3)))]
    updated_at = _master_time(rng, loaded, clock)
    return tuple(
        _make_operation(rng, f"{10 * (i + 1):04d}", wc, text, material.unit, crosswalks, updated_at)
        for i, (wc, text) in enumerate(steps)
    )


def _make_operation(
    rng: random.Random,
    operation_no: str,
    work_center: str,
    text: str,
    unit: str,
    crosswalks: _Crosswalks,
    updated_at: int,
) -> _Operation:
    low, high = _STD_MINUTES[(_WORK_CENTERS[work_center][1], unit)]
    std = Decimal(rng.randint(low, high)).scaleb(-4)
    return _Operation(
        operation_no=operation_no,
        work_center=work_center,
        equipment=crosswalks.equipment[work_center],
        description=None if rng.random() < 0.03 else text,
        std_minutes=std,
        # A changeover costs the time of a few units (a few hundred kilograms of a mix).
        setup_minutes=max(Decimal(5), (std * rng.randint(2, 5) * (100 if unit == "KG" else 1)).quantize(Decimal("0.5"))),
        updated_at=updated_at,
    )


def _make_employees(rng: random.Random, loaded: int, clock: _Clock) -> list[_Employee]:
    """40 employees with distinct Chinese names, about 70% in plant 1000."""
    names = rng.sample([s + g for s in _SURNAMES for g in _GIVEN_NAMES], 40)
    employees = []
    for i, name in enumerate(names):
        plant = "1000" if rng.random() < 0.7 else "2000"
        centers = [wc for wc, (wc_plant, *_) in _WORK_CENTERS.items() if wc_plant == plant]
        work_center = None if rng.random() < 0.2 or i == len(names) - 1 else rng.choice(centers)
        employees.append(
            _Employee(f"{1001 + i:08d}", name, plant, work_center, rng.random() < 0.9, _master_time(rng, loaded, clock))
        )
    return employees


def _write_master(sink: _Sink, rng: random.Random, master: _Master, clock: _Clock) -> None:
    """Work centers, materials, BOMs, routings, employees and stock levels."""
    loaded = _master_load(clock)
    for work_center, (plant, _, description, capacity) in _WORK_CENTERS.items():
        sink.add("work_center", {
            "work_center": work_center, "plant": plant, "description": description,
            "capacity_hours": Decimal(capacity), "updated_at": clock.local(loaded),
        })
    for m in master.materials:
        sink.add("material", {
            "material_no": m.code, "material_type": m.type, "base_unit": m.unit,
            "description_zh": m.description_zh, "description_en": m.description_en,
            "material_group": m.group, "standard_cost": m.cost, "is_deleted": m.is_deleted,
            "updated_at": clock.local(m.updated_at),
        })
    for product in master.products:
        _write_product(sink, product, clock)
    for e in master.employees:
        sink.add("employee", {
            "employee_no": e.employee_no, "name": e.name, "plant": e.plant, "work_center": e.work_center,
            "is_active": e.is_active, "updated_at": clock.local(e.updated_at),
        })
    for m in master.materials:
        if m.type in ("ROH", "HALB"):
            for plant in ("1000", "2000"):
                sink.add("stock_level", _stock_row(rng, m, plant, clock))


def _write_product(sink: _Sink, product: _Product, clock: _Clock) -> None:
    parent = product.material
    for line in product.bom:
        sink.add("bom_item", {
            "parent_material_no": parent.code, "item_no": line.item_no,
            "base_quantity": product.base_quantity, "base_unit": parent.unit,
            "component_material_no": line.component.code, "quantity": line.quantity,
            "unit": line.component.unit, "updated_at": clock.local(line.updated_at),
        })
    for op in product.operations:
        sink.add("routing_operation", {
            "material_no": parent.code, "operation_no": op.operation_no, "work_center": op.work_center,
            "description": op.description, "std_minutes_per_unit": op.std_minutes, "unit": parent.unit,
            "setup_minutes": op.setup_minutes, "updated_at": clock.local(op.updated_at),
        })


def _stock_row(rng: random.Random, material: _Material, plant: str, clock: _Clock) -> dict[str, Any]:
    """Stock moves all the time, so stock rows were touched in the last three days."""
    if material.is_deleted or rng.random() < 0.05:
        quantity = Decimal("0.000")
    elif material.unit == "PC":
        quantity = Decimal(rng.randint(1, 20_000))
    else:
        quantity = Decimal(rng.randint(1_000, 50_000_000 if material.unit == "KG" else 5_000_000)).scaleb(-3)
    return {
        "material_no": material.code, "plant": plant, "storage_loc": "0001", "quantity": quantity,
        "unit": material.unit, "updated_at": clock.local(clock.now - rng.randint(0, 3 * DAY)),
    }



def _weighted(rng: random.Random, choices: Sequence[tuple[T, int]]) -> T:
    return rng.choices([c for c, _ in choices], [w for _, w in choices])[0]


@dataclass(frozen=True)
class _Plan:
    """Order sequence numbers that carry planted dirty data."""

    dirty_forms: Mapping[int, str]
    special_release: int
    duplicate_report: int
    null_badges: frozenset[int]

    def forced_status(self, seq: int) -> str | None:
        if seq == self.special_release:
            return "REL"
        if seq == self.duplicate_report or seq in self.null_badges:
            return "TECO"
        return None


def _plan_dirt(rng: random.Random, orders: int) -> _Plan:
    """Distinct order positions for each kind of planted dirt; about 0.1% dirty material numbers."""
    dirty_count = max(3, orders // 1000)
    positions = rng.sample(range(1, orders + 1), dirty_count + 4)
    dirty = positions[:dirty_count]
    return _Plan(
        dirty_forms={seq: _DIRTY_FORMS[i % len(_DIRTY_FORMS)] for i, seq in enumerate(dirty)},
        special_release=positions[dirty_count],
        duplicate_report=positions[dirty_count + 1],
        null_badges=frozenset(positions[dirty_count + 2:]),
    )


def _soil(code: str, form: str) -> str:
    """A material number as a careless user keys it in."""
    return {"lower": code.lower(), "trailing": code + "  ", "lower_trailing": code.lower() + " "}[form]




# --- the schedule: one plan of who runs what when, from which every record follows ---------


@dataclass(frozen=True)
class _Segment:
    """One stretch of an equipment's state log, in local seconds [start, end)."""

    state: str
    start: int
    end: int
    reason: str | None = None


class _Equipment:
    """One machine's timeline: it does one thing at a time and stops for its planned maintenance."""

    def __init__(self, code: str, origin: int, planned_stops: Sequence[tuple[int, int]]) -> None:
        self.code = code
        self.free_at = origin
        self.segments: list[_Segment] = []
        self._stops = list(planned_stops)

    def _stop_at(self, t: int) -> tuple[int, int] | None:
        """The first planned stop that ends after t."""
        while self._stops and self._stops[0][1] <= t:
            self._stops.pop(0)
        return self._stops[0] if self._stops else None

    def _add(self, state: str, start: int, end: int, reason: str | None = None) -> None:
        if end <= start:
            return
        last = self.segments[-1] if self.segments else None
        if last is not None and last.state == state == "IDLE" and last.end == start:
            self.segments[-1] = _Segment(state, last.start, end)
            return
        self.segments.append(_Segment(state, start, end, reason))

    def idle_until(self, until: int) -> None:
        """IDLE from free_at until ``until`` (later when a planned stop runs past it)."""
        t = self.free_at
        while t < until:
            stop = self._stop_at(t)
            if stop is not None and stop[0] <= t:
                self._add("DOWN", t, stop[1], PLANNED_STOP)
                t = stop[1]
                continue
            end = until if stop is None else min(until, stop[0])
            self._add("IDLE", t, end)
            t = end
        self.free_at = t

    def spend(self, state: str, seconds: int, reason: str | None = None) -> list[tuple[int, int]]:
        """``seconds`` in ``state`` from free_at, stepping over planned stops; returns the
        stretches spent in ``state``."""
        t = self.free_at
        stretches = []
        remaining = seconds
        while remaining > 0:
            stop = self._stop_at(t)
            if stop is not None and stop[0] <= t:
                self._add("DOWN", t, stop[1], PLANNED_STOP)
                t = stop[1]
                continue
            end = t + remaining if stop is None else min(t + remaining, stop[0])
            self._add(state, t, end, reason)
            stretches.append((t, end))
            remaining -= end - t
            t = end
        self.free_at = t
        return stretches


@dataclass(frozen=True)
class _Job:
    """One operation of one order as scheduled: ``units`` processed (MES unit) of which ``scrap``
    were scrapped, and the RUN stretches that processed them."""

    operation: _Operation
    equipment: str
    units: int
    scrap: int
    scrap_reason: str | None
    setup_start: int
    run: tuple[tuple[int, int], ...]

    @property
    def start(self) -> int:
        return self.run[0][0]

    @property
    def end(self) -> int:
        return self.run[-1][1]

    @property
    def run_seconds(self) -> int:
        return sum(b - a for a, b in self.run)

    def processed_by(self, t: int) -> float:
        """Share of the job's run time spent by t."""
        done = sum(max(0, min(b, t) - a) for a, b in self.run)
        return done / self.run_seconds if self.run_seconds else 1.0


@dataclass(frozen=True)
class _Order:
    seq: int
    order_no: str
    product: _Product
    material_no: str
    plant: str
    quantity: Decimal
    status: str
    released_at: int
    planned_start: int
    planned_end: int
    created_at: int
    updated_at: int
    jobs: tuple[_Job, ...]

    @property
    def is_clean(self) -> bool:
        return self.material_no == self.product.material.code


@dataclass(frozen=True)
class _Draft:
    """An order before the schedule has run: what the planner decided."""

    seq: int
    product: _Product
    material_no: str
    plant: str
    weight: float
    release: int
    cancelled: bool


def _unit_scale(product: _Product) -> int:
    """Weighed products are made in batches of hundreds of kilograms, pieces by the piece."""
    return 100 if product.material.unit == "KG" else 1


def _draft_order(rng: random.Random, seq: int, master: _Master, plan: _Plan, clock: _Clock) -> _Draft:
    """Product, plant, relative size and release time (the last 14 days to the next 7)."""
    product = master.special_product if seq == plan.special_release else rng.choice(master.products)
    form = plan.dirty_forms.get(seq)
    plant = "1000" if product.material.unit == "KG" or rng.random() < 0.65 else "2000"
    release = clock.now + rng.randint(-RELEASED_DAYS * DAY, PLANNED_DAYS * DAY)
    forced = plan.forced_status(seq)
    if forced == "REL":
        release = clock.now - rng.randint(HOUR, 6 * HOUR)
    elif forced == "TECO":
        release = clock.now - rng.randint(10 * DAY, 13 * DAY)
    if rng.random() < 0.6:
        slot = _previous_slot(release, DAY, MASS_RELEASE)
        if slot >= clock.now - RELEASED_DAYS * DAY:
            release = slot
    return _Draft(
        seq=seq, product=product,
        material_no=product.material.code if form is None else _soil(product.material.code, form),
        plant=plant, weight=rng.uniform(0.5, 1.5), release=release,
        cancelled=forced is None and rng.random() < 0.03,
    )


def _equipment_for(crosswalks: _Crosswalks, operation: _Operation, plant: str) -> str:
    """Plant 2000 cuts, assembles and packs on its own lines; welding and mixing exist only in 1000."""
    if plant == "2000":
        twin = operation.work_center[:-1] + "2"
        if twin in _WORK_CENTERS:
            return crosswalks.equipment[twin]
    return operation.equipment


def _lot_scale(drafts: Sequence[_Draft], crosswalks: _Crosswalks, clock: _Clock) -> float:
    """Units per unit of draft weight so that the busiest machine is occupied (setups, runs and
    their stops) about UTILIZATION of the released window: lot sizes follow from capacity, so the
    schedule neither starves nor floods."""
    setups: dict[str, float] = defaultdict(float)
    runs: dict[str, float] = defaultdict(float)
    for d in drafts:
        if d.cancelled or d.release > clock.now:
            continue
        for op in d.product.operations:
            machine = _equipment_for(crosswalks, op, d.plant)
            setups[machine] += float(op.setup_minutes)
            runs[machine] += d.weight * float(op.std_minutes) * _unit_scale(d.product) * RUN_ALLOWANCE
    capacity = UTILIZATION * RELEASED_DAYS * (24 - PLANNED_STOP_HOURS / 7) * 60
    scales = [(capacity - setups[m]) / runs[m] for m in runs if runs[m]]
    return max(min(scales, default=1.0), 0.0)


def _order_quantity(draft: _Draft, scale: float) -> Decimal:
    raw = draft.weight * scale * _unit_scale(draft.product)
    if draft.product.material.unit == "KG":
        return Decimal(max(50_000, round(raw * 1000))).scaleb(-3)
    return Decimal(max(MIN_LOT, round(raw)))


class _Schedule:
    """Every released order's operations, first come first served on each machine."""

    def __init__(self, rng: random.Random, crosswalks: _Crosswalks, clock: _Clock) -> None:
        self.rng = rng
        self.crosswalks = crosswalks
        self.clock = clock
        origin = _previous_slot(clock.now - RELEASED_DAYS * DAY, DAY, 0)
        self.origin = origin
        self.machines: dict[str, _Equipment] = {}
        for i, code in enumerate(crosswalks.equipment.values()):
            # Four hours of maintenance once a week, each machine on its own weekday.
            first = origin + (i % 7) * DAY + 6 * HOUR
            stops = [(t, t + PLANNED_STOP_HOURS * HOUR) for t in range(first, clock.now + 30 * DAY, WEEK)]
            self.machines[code] = _Equipment(code, origin, stops)

    def place(self, product: _Product, plant: str, quantity: Decimal, release: int) -> tuple[_Job, ...]:
        rng = self.rng
        unit, factor = self.crosswalks.unit[product.material.unit]
        flows = _operation_flows(rng, int(quantity * factor), len(product.operations))
        t = release + rng.randint(30 * MINUTE, 3 * HOUR)
        jobs = []
        for operation, (good, scrap) in zip(product.operations, flows, strict=True):
            machine = self.machines[_equipment_for(self.crosswalks, operation, plant)]
            setup = int(operation.setup_minutes * 60)
            if t > machine.free_at and _previous_slot(t, DAY, 0) != _previous_slot(t + setup + HOUR, DAY, 0):
                # A machine waiting anyway is not set up across midnight for a run the next day.
                t = _next_slot(t, DAY, 0)
            machine.idle_until(t)
            if rng.random() < 0.05:
                machine.spend("DOWN", rng.randint(10, 60) * MINUTE, "NO-MAT")
            setup_start = machine.free_at
            machine.spend("SETUP", setup)
            units = good + scrap
            per_unit = float(operation.std_minutes) * 60 / factor
            run_seconds = max(MINUTE, int(units * per_unit * rng.uniform(*SLOWER_THAN_STANDARD)))
            run = self._run(machine, run_seconds)
            jobs.append(_Job(
                operation, machine.code, units, scrap, rng.choice(_SCRAP_REASONS) if scrap else None,
                setup_start, tuple(run),
            ))
            t = machine.free_at + rng.randint(10 * MINUTE, HOUR)
        return tuple(jobs)

    def _run(self, machine: _Equipment, seconds: int) -> list[tuple[int, int]]:
        """RUN for ``seconds``, broken now and then by an unplanned stop."""
        rng = self.rng
        stretches: list[tuple[int, int]] = []
        remaining = seconds
        while remaining > 0:
            chunk = min(remaining, rng.randint(45 * MINUTE, 4 * HOUR))
            stretches += machine.spend("RUN", chunk)
            remaining -= chunk
            if remaining > 0 and rng.random() < 0.3:
                machine.spend("DOWN", rng.randint(10, 75) * MINUTE, rng.choice(_UNPLANNED_REASONS))
        return stretches

    def close(self) -> None:
        """Machines stand idle from their last job until now (and past it: the open interval)."""
        for machine in self.machines.values():
            machine.idle_until(self.clock.now + HOUR)


def _operation_flows(rng: random.Random, planned: int, operations: int) -> list[tuple[int, int]]:
    """(good, scrap) per operation for a complete run.

    The last operation outputs (good + scrap) within 3% of the planned quantity; every
    earlier operation's good output is exactly what the next one consumed.
    """
    # Truncated toward the plan, so even a small lot stays within 3 % of it.
    need = max(1, planned + int(planned * rng.uniform(-0.03, 0.03)))
    flows = []
    for k in range(operations):
        scrap = _scrap(rng, need)
        flow = (need - scrap, scrap) if k == 0 else (need, scrap)
        flows.append(flow)
        need = flow[0] + flow[1]
    flows.reverse()
    return flows


def _scrap(rng: random.Random, units: int) -> int:
    """Some operation lots scrap part of their units, 0.5 % to 5 %; most scrap none."""
    if rng.random() >= SCRAPPED_LOTS:
        return 0
    return round(units * rng.uniform(0.005, 0.05))


def _plan_orders(rng: random.Random, master: _Master, plan: _Plan, crosswalks: _Crosswalks,
                 clock: _Clock, count: int) -> tuple[list[_Order], list[_Equipment]]:
    """Draft every order, size lots to the capacity, run the schedule, then settle ERP status."""
    drafts = [_draft_order(rng, seq, master, plan, clock) for seq in range(1, count + 1)]
    scale = _lot_scale(drafts, crosswalks, clock)
    schedule = _Schedule(rng, crosswalks, clock)
    jobs: dict[int, tuple[_Job, ...]] = {}
    quantities = {d.seq: _order_quantity(d, scale) for d in drafts}
    for d in sorted(drafts, key=lambda d: (d.release, d.seq)):
        scheduled = not d.cancelled and d.release <= clock.now and d.material_no == d.product.material.code
        if scheduled:
            jobs[d.seq] = schedule.place(d.product, d.plant, quantities[d.seq], d.release)
    schedule.close()
    orders = [_settle(rng, d, quantities[d.seq], jobs.get(d.seq, ()), clock) for d in drafts]
    return orders, list(schedule.machines.values())


def _settle(rng: random.Random, draft: _Draft, quantity: Decimal, jobs: tuple[_Job, ...], clock: _Clock) -> _Order:
    """The ERP's view of the order: planned dates, status and the times it changed."""
    product = draft.product
    planned_start = _next_slot(draft.release + rng.randint(HOUR, 8 * HOUR), 30 * MINUTE, 0)
    standard = sum(
        float(op.setup_minutes) + float(op.std_minutes) * float(quantity) for op in product.operations
    ) * MINUTE
    lead = int(standard * PLANNED_ALLOWANCE) + len(product.operations) * rng.randint(*QUEUE_ALLOWANCE)
    planned_end = _next_slot(planned_start + lead, 30 * MINUTE, 0)
    created = min(draft.release - rng.randint(DAY, 5 * DAY), clock.now - rng.randint(10 * MINUTE, 3 * DAY))
    if rng.random() < 0.3:
        created = _previous_slot(created, DAY, MRP_RUN)
    if draft.cancelled:
        status, updated = "CNCL", rng.randint(created + MINUTE, clock.now)
    elif draft.release > clock.now:
        mrp = _previous_slot(clock.now, DAY, MRP_RUN)
        status, updated = "CRTD", mrp if mrp >= created else created
    elif not jobs or jobs[-1].end > clock.now:
        status, updated = "REL", max(created + MINUTE, min(draft.release, clock.now))
    else:
        finished = jobs[-1].end
        teco = _job_or_manual(rng, finished + 3 * HOUR + 30 * MINUTE, min(clock.now, finished + 30 * HOUR), DAY, TECO_JOB)
        status, updated = "TECO", teco
        if teco + DAY <= clock.now and rng.random() < 0.6:
            status, updated = "CLSD", _job_or_manual(rng, teco + DAY, clock.now, WEEK, WEEKLY_CLOSE, job_share=1.0)
    return _Order(
        seq=draft.seq, order_no=f"1{draft.seq:06d}", product=product, material_no=draft.material_no,
        plant=draft.plant, quantity=quantity, status=status, released_at=draft.release,
        planned_start=planned_start, planned_end=planned_end, created_at=created, updated_at=updated, jobs=jobs,
    )


def _job_or_manual(
    rng: random.Random, low: int, high: int, period: int, phase: int, *, job_share: float = 0.5
) -> int:
    """A time in [low, high]: the first batch-job slot when one fits and the job did it, else manual."""
    low = min(low, high)
    slot = _next_slot(low, period, phase)
    if slot <= high and rng.random() < job_share:
        return slot
    return rng.randint(low, high)


def _write_equipment_states(sink: _Sink, machines: Sequence[_Equipment], clock: _Clock) -> None:
    """The state log each machine's timeline left, up to now; the interval holding now is open."""
    log_id = 0
    for machine in machines:
        for segment in machine.segments:
            if segment.start >= clock.now:
                break
            is_open = segment.end > clock.now
            log_id += 1
            sink.add("equipment_state_log", {
                "log_id": log_id, "equipment_code": machine.code, "state": segment.state,
                "reason_code": segment.reason,
                "start_utc": clock.utc(segment.start), "end_utc": None if is_open else clock.utc(segment.end),
                "updated_at": clock.utc(segment.start if is_open else segment.end),
            })


@dataclass(frozen=True)
class _Requirement:
    line: _BomLine
    quantity: Decimal


def _write_erp_order(sink: _Sink, order: _Order, clock: _Clock) -> list[_Requirement]:
    """Write the order and its components (single-level BOM explosion); returns the components."""
    sink.add("production_order", {
        "order_no": order.order_no, "material_no": order.material_no, "plant": order.plant,
        "quantity": order.quantity, "unit": order.product.material.unit,
        "planned_start": clock.local(order.planned_start), "planned_end": clock.local(order.planned_end),
        "status": order.status, "created_at": clock.local(order.created_at),
        "updated_at": clock.local(order.updated_at),
    })
    factor = order.quantity / order.product.base_quantity
    updated_at = clock.local(order.updated_at)
    requirements = []
    for line in order.product.bom:
        required = (factor * line.quantity).quantize(Q3, rounding=ROUND_HALF_UP)
        sink.add("order_component", {
            "order_no": order.order_no, "item_no": line.item_no,
            "component_material_no": line.component.code, "required_qty": required,
            "unit": line.component.unit, "updated_at": updated_at,
        })
        requirements.append(_Requirement(line, required))
    return requirements



@dataclass
class _Sequences:
    report_id: int = 0
    report_no: int = 0
    inspection_id: int = 0
    issue_id: int = 0
    receipt_id: int = 0


def _report_cuts(job: _Job, until: int) -> list[int]:
    """Where a job's confirmations end: at each shift change (06:00, 14:00, 22:00) and midnight
    inside its run (output counts on the day it is reported), and at its end, never after ``until``."""
    cuts = []
    day = _previous_slot(job.start, DAY, 0)
    while day < min(job.end, until):
        # The day's last report ends a second before midnight, so it counts on its own day.
        cuts += [t for t in (day + 6 * HOUR, day + 14 * HOUR, day + 22 * HOUR, day + DAY - 1)
                 if job.start < t < job.end and t <= until]
        day += DAY
    if job.end <= until:
        cuts.append(job.end)
    return cuts


@dataclass
class _ShopFloor:
    """The MES side: what the shop floor records while the schedule works through an order."""

    rng: random.Random
    sink: _Sink
    crosswalks: _Crosswalks
    master: _Master
    plan: _Plan
    clock: _Clock
    ids: _Sequences = field(default_factory=_Sequences)
    _duplicate_pending: bool = field(default=False, init=False)
    _null_badge_pending: bool = field(default=False, init=False)

    def work(self, order: _Order, requirements: Sequence[_Requirement]) -> None:
        """Record reports and issues of what ran by now and, for completed orders, inspection and receipt."""
        if not order.jobs or order.jobs[0].setup_start >= self.clock.now:
            return
        unit, factor = self.crosswalks.unit[order.product.material.unit]
        self._duplicate_pending = order.seq == self.plan.duplicate_report
        self._null_badge_pending = order.seq in self.plan.null_badges
        self._issue_components(order, requirements)
        complete = order.status in COMPLETE_STATUSES
        # An order still running has not reached its planned quantity at its last operation.
        ceiling = None if complete else max(0, int(order.quantity * factor) - 1)
        for i, job in enumerate(order.jobs):
            self._report_job(order, job, unit, ceiling if i == len(order.jobs) - 1 else None)
        if complete:
            last = order.jobs[-1]
            self._inspect(order, last, unit)
            self._receive(order, last, unit)

    def _report_job(self, order: _Order, job: _Job, unit: str, ceiling: int | None) -> None:
        """One confirmation per shift the job ran in, units in proportion to the run time spent;
        the lot's scrap so far is booked on its biggest confirmation (never more than half of it)."""
        now = self.clock.now
        begin = job.start
        done = 0
        parts: list[list[int]] = []
        for cut in _report_cuts(job, now):
            units = int(job.units * job.processed_by(cut))
            if ceiling is not None:
                units = min(units, ceiling)
            if units - done <= 0:
                continue
            parts.append([begin, cut, units - done, 0])
            done, begin = units, cut
        if not parts:
            return
        biggest = max(parts, key=lambda p: p[2])
        biggest[3] = min(int(job.scrap * done / job.units), biggest[2] // 2)
        for begin, end, units, scrap in parts:
            self._add_report(order, job, units - scrap, scrap, unit, begin, end)

    def _add_report(
        self, order: _Order, job: _Job, good: int, scrap: int, unit: str, begin: int, end: int
    ) -> None:
        rng = self.rng
        self.ids.report_id += 1
        self.ids.report_no += 1
        operators = self.master.operators[order.plant]
        null_badge = rng.random() < 0.015 or self._null_badge_pending or not operators
        row = {
            "report_id": self.ids.report_id,
            "report_no": f"R{self.ids.report_no:09d}",
            "wo_no": work_order_no(order.order_no),
            "step_no": int(job.operation.operation_no),
            "equipment_code": job.equipment,
            "good_qty": Decimal(good),
            "scrap_qty": Decimal(scrap),
            "unit": unit,
            "scrap_reason": job.scrap_reason if scrap else None,
            "operator_badge": None if null_badge else rng.choice(operators),
            "start_time_utc": self.clock.utc(begin),
            "end_time_utc": self.clock.utc(end),
            "updated_at": self.clock.utc(_recorded_at(rng, end, self.clock)),
        }
        self.sink.add("operation_report", row)
        self._null_badge_pending = False
        if self._duplicate_pending:
            # The terminal re-sent the same report: same document number, new row id.
            self.ids.report_id += 1
            self.sink.add("operation_report", {**row, "report_id": self.ids.report_id})
            self._duplicate_pending = False

    def _issue_components(self, order: _Order, requirements: Sequence[_Requirement]) -> None:
        """One issue per component the MES knows, shortly before the first setup."""
        rng = self.rng
        complete = order.status in COMPLETE_STATUSES
        for requirement in requirements:
            component = requirement.line.component
            if component.item_code is None:
                continue
            if complete:
                ratio = rng.uniform(0.98, 1.03)
            else:
                ratio = 1.0 if rng.random() < 0.7 else rng.uniform(0.3, 1.0)
            consumed = (requirement.quantity * Decimal(round(ratio, 4))).quantize(Q3, rounding=ROUND_HALF_UP)
            quantity, unit = self._mes_quantity(component.unit, consumed)
            if quantity <= 0:
                continue
            issued = order.jobs[0].setup_start - rng.randint(10 * MINUTE, 2 * HOUR)
            self.ids.issue_id += 1
            self.sink.add("material_issue", {
                "issue_id": self.ids.issue_id, "wo_no": work_order_no(order.order_no),
                "item_code": component.item_code, "plant_code": self.crosswalks.plant[order.plant],
                "qty": quantity, "unit": unit,
                "lot_no": None if rng.random() < 0.03 else f"L{self.clock.local(issued):%y%m%d}{rng.randint(1, 999):03d}",
                "issued_at_utc": self.clock.utc(issued),
                "updated_at": self.clock.utc(_recorded_at(rng, issued, self.clock)),
            })

    def _mes_quantity(self, erp_unit: str, quantity: Decimal) -> tuple[Decimal, str]:
        """A consumed ERP quantity as the MES records it; weighed material sometimes in the alternate unit."""
        alternate = self.crosswalks.alternate_unit.get(erp_unit)
        unit, factor = self.crosswalks.unit[erp_unit]
        if alternate is not None and self.rng.random() < 0.1:
            unit, factor = alternate
        converted = quantity * factor
        if erp_unit == "PC":
            return converted.quantize(Decimal(1), rounding=ROUND_CEILING), unit
        return converted.quantize(Q3, rounding=ROUND_HALF_UP), unit

    def _inspect(self, order: _Order, last: _Job, unit: str) -> None:
        """A final inspection lot; it fails when defects exceed about one in thirteen samples."""
        rng = self.rng
        good = last.units - last.scrap
        inspected = min(last.end + rng.randint(10 * MINUTE, 3 * HOUR), self.clock.now)
        if unit == "pcs":
            sample = min(max(1, good), rng.choice((5, 8, 13, 20, 32, 50, 80)))
        else:
            sample = rng.randint(3, 10)
        defects = rng.randint(1, max(1, sample // 8)) if rng.random() < 0.12 else 0
        self.ids.inspection_id += 1
        self.sink.add("quality_inspection", {
            "inspection_id": self.ids.inspection_id, "lot_no": f"QL{self.ids.inspection_id:09d}",
            "wo_no": work_order_no(order.order_no), "item_code": order.product.material.item_code,
            "sample_size": sample, "defect_qty": defects,
            "defect_code": rng.choice(_DEFECT_CODES) if defects else None,
            "result": "FAIL" if defects > sample // 13 else "PASS",
            "inspected_at_utc": self.clock.utc(inspected),
            "updated_at": self.clock.utc(_recorded_at(rng, inspected, self.clock)),
        })

    def _receive(self, order: _Order, last: _Job, unit: str) -> None:
        """The finished-goods receipt of a completed order: the last operation's good output."""
        good = last.units - last.scrap
        if good <= 0:
            return
        rng = self.rng
        received = min(last.end + rng.randint(5 * MINUTE, 2 * HOUR), self.clock.now)
        self.ids.receipt_id += 1
        self.sink.add("fg_receipt", {
            "receipt_id": self.ids.receipt_id, "wo_no": work_order_no(order.order_no),
            "item_code": order.product.material.item_code, "plant_code": self.crosswalks.plant[order.plant],
            "qty": Decimal(good), "unit": unit,
            "lot_no": None if rng.random() < 0.02 else f"FG{self.clock.local(received):%y%m%d}{self.ids.receipt_id:08d}",
            "received_at_utc": self.clock.utc(received),
            "updated_at": self.clock.utc(_recorded_at(rng, received, self.clock)),
        })


def _recorded_at(rng: random.Random, t: int, clock: _Clock) -> int:
    """When an event at t reached the MES database: minutes later, never after as_of.

    Some terminals upload on the hour, so many rows share that second.
    """
    if rng.random() < 0.15:
        slot = _next_slot(t + MINUTE, HOUR, 0)
        if slot <= clock.now:
            return slot
    return min(t + rng.randint(MINUTE, 15 * MINUTE), clock.now)
