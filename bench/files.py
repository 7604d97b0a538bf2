"""Benchmark: a dropped CSV file through the flow against PostgreSQL's own COPY FROM of the same file.

    python bench/files.py [--rows 1000000] [--xlsx-rows 100000]

Writes a CSV of quality results (lot, material, sample size, defects numeric(10,2), inspection
time, a remark with Chinese text; commas and quotes inside quoted fields) and times, in one run
on throwaway PostgreSQL databases:

  copy       the limit: ``COPY ... FROM STDIN (FORMAT csv, HEADER)`` of the file into an indexed table
  flow_text  the file flow into a table of text columns (plus the line): the SQL path, whose
             raw table the file's lines reach as COPY in CSV format, parsed by PostgreSQL
  flow_typed the same flow into typed columns (integer, numeric, timestamp): the Python path,
             which types each value and quarantines what does not fit
  xlsx       a workbook of --xlsx-rows rows through the typed flow, and the reading of the sheet
             alone by python-calamine and by openpyxl (read-only mode), the two readers compared

Each flow's table is compared row by row with the COPY table (text of every value): the
differing rows must be 0. Ratios are against the COPY limit measured in the same run; each
flow's line also shows its five slowest steps (seconds), where the time goes.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta
from pathlib import Path

import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from etl.config.project import load_project  # noqa: E402
from etl.sync.connections import Connections  # noqa: E402
from etl.sync.runner import RunOptions, run_flow  # noqa: E402

ADMIN = os.environ.get("ETL_BENCH_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")
LIMIT = 3.0
HEADER = ["lot_no", "material", "sample_size", "defects", "inspected_at", "remark"]
TYPED = """CREATE TABLE {name} (lot_no varchar(20) PRIMARY KEY, material varchar(40), sample_size integer,
    defects numeric(10,2), inspected_at timestamp, remark text{place})"""
TEXT = "CREATE TABLE {name} (lot_no text PRIMARY KEY, material text, sample_size text, defects text, inspected_at text, remark text{place})"
PLACE = ", source_file text, source_line bigint"


def rows(start: int, count: int) -> list[list[object]]:
    base = datetime(2026, 6, 1)
    remarks = ["外观合格", 'scratch, "deep"', "", "尺寸超差 0.2mm", "ok"]
    return [
        [f"L-{i:08d}", f"MAT-{i % 5000:06d}", i % 50 + 1, f"{(i % 10000) / 100:.2f}",
         (base + timedelta(seconds=i * 7)).isoformat(sep=" "), remarks[i % 5]]
        for i in range(start, start + count)
    ]


def write_csv(path: Path, count: int) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        out = csv.writer(handle)
        out.writerow(HEADER)
        for start in range(0, count, 100_000):
            out.writerows(rows(start, min(100_000, count - start)))


def write_xlsx(path: Path, count: int) -> None:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet("results")
    sheet.append(HEADER)
    for row in rows(0, count):
        sheet.append([row[0], row[1], row[2], float(str(row[3])), datetime.fromisoformat(str(row[4])), row[5] or None])
    book.save(path)


def database(label: str) -> URL:
    name = f"ems_bench_files_{label}_{uuid.uuid4().hex[:6]}"
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return make_url(ADMIN).set(database=name)


def drop_database(url: URL) -> None:
    admin = create_engine(ADMIN, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
    admin.dispose()


def flow_file(root: Path, drop: Path, table: str, fmt: str) -> None:
    flows = root / "mappings" / "flows"
    flows.mkdir(parents=True, exist_ok=True)
    spec = {"folder": str(drop), "pattern": f"*.{fmt}", "format": fmt, "complete_after": "0s"}
    flow = {
        "flow": table, "direction": "mes_to_erp", "source": {"files": spec},
        "target": {"connection": "bench", "table": table}, "key": ["lot_no"],
        "load": {"chunk_size": 50_000},
        "columns": [{"target": c, "source": c} for c in [*HEADER, "source_file", "source_line"]],
    }
    (flows / f"{table}.yaml").write_text(yaml.safe_dump(flow), encoding="utf-8")


def run(root: Path, url: URL, name: str) -> tuple[float, dict[str, object]]:
    """Run flow ``name``; its seconds, rows loaded, transform path, and the seconds of each step."""
    project = load_project(root / "mappings", root / "expectations")
    marks: list[tuple[str, float]] = []
    start = time.monotonic()
    with Connections({"bench": url}) as connections:
        result = run_flow(project, name, connections, RunOptions(), crosswalks={},
                          hook=lambda step: marks.append((step, time.monotonic())))
    seconds = time.monotonic() - start
    steps: dict[str, float] = {}
    for (step, at), (_, then) in zip(marks, marks[1:], strict=False):
        steps[step] = steps.get(step, 0.0) + then - at
    slowest = sorted(steps.items(), key=lambda s: -s[1])[:5]
    where = ", ".join(f"{step} {sec:.1f}" for step, sec in slowest)
    return seconds, {"loaded": result.record.counts.rows_loaded, "path": result.record.options.get("transform"), "steps": where}


def differing(url: URL, table: str) -> int:
    columns = ", ".join(f"{c}::text" for c in HEADER)
    engine = create_engine(url)
    with engine.connect() as conn:
        count = conn.execute(text(
            f"SELECT count(*) FROM ((SELECT {columns} FROM copied EXCEPT ALL SELECT {columns} FROM {table}) "
            f"UNION ALL (SELECT {columns} FROM {table} EXCEPT ALL SELECT {columns} FROM copied)) d"
        )).scalar_one()
    engine.dispose()
    return int(count)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--xlsx-rows", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ems_bench_files_"))
    url = database("pg")
    try:
        return _bench(root, url, args)
    finally:
        drop_database(url)
        shutil.rmtree(root, ignore_errors=True)


def _bench(root: Path, url: URL, args: argparse.Namespace) -> int:
    source = root / "quality.csv"
    t = time.monotonic()
    write_csv(source, args.rows)
    print(f"wrote {args.rows:,} rows, {source.stat().st_size / 1e6:.0f} MB of CSV in {time.monotonic() - t:.1f} s")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(TYPED.format(name="copied", place="")))
        conn.execute(text(TYPED.format(name="flow_typed", place=PLACE)))
        conn.execute(text(TEXT.format(name="flow_text", place=PLACE)))
        conn.execute(text(TYPED.format(name="flow_xlsx", place=PLACE)))
    raw = engine.raw_connection()
    start = time.monotonic()
    with source.open("rb") as handle:
        cursor = raw.cursor()
        cursor.copy_expert("COPY copied FROM STDIN (FORMAT csv, HEADER)", handle, size=1 << 20)
    raw.commit()
    raw.close()
    engine.dispose()
    copy = time.monotonic() - start
    print(f"{'path':<12} {'seconds':>8} {'x COPY':>7} {'rows':>9} {'differing':>9}  transform")
    print(f"{'copy':<12} {copy:>8.2f} {1.0:>7.2f} {args.rows:>9,} {0:>9}  (the limit)")
    worst = 0.0
    for name in ("flow_text", "flow_typed"):
        drop = root / name
        drop.mkdir()
        shutil.copy(source, drop / "quality.csv")
        os.utime(drop / "quality.csv", (time.time() - 60, time.time() - 60))
        flow_file(root, drop, name, "csv")
        seconds, figures = run(root, url, name)
        diff = differing(url, name) if name == "flow_typed" else _differing_text(url)
        ratio = seconds / copy
        worst = max(worst, ratio) if name == "flow_text" else worst
        print(f"{name:<12} {seconds:>8.2f} {ratio:>7.2f} {figures['loaded']:>9,} {diff:>9}  {figures['path']}: {figures['steps']}")
        if diff:
            print(f"FAIL: {name}: {diff} rows differ from COPY's")
            return 1
    if args.xlsx_rows:
        _bench_xlsx(root, url, args.xlsx_rows)
    verdict = "within" if worst <= LIMIT else "OVER"
    print(f"the SQL path of a CSV file: {worst:.2f}x COPY, {verdict} the {LIMIT:.0f}x target")
    return 0


def _differing_text(url: URL) -> int:
    engine = create_engine(url)
    with engine.connect() as conn:
        # The text table holds the file's own text: typed the same way, it must equal COPY's.
        conn.execute(text(TYPED.format(name="text_typed", place="")))
        conn.execute(text(
            "INSERT INTO text_typed SELECT lot_no, material, sample_size::integer, defects::numeric, "
            "inspected_at::timestamp, remark FROM flow_text"
        ))
        conn.commit()
    engine.dispose()
    return differing(url, "text_typed")


def _bench_xlsx(root: Path, url: URL, count: int) -> None:
    drop = root / "xlsx"
    drop.mkdir()
    book = drop / "quality.xlsx"
    t = time.monotonic()
    write_xlsx(book, count)
    os.utime(book, (time.time() - 60, time.time() - 60))
    print(f"wrote {count:,} rows of xlsx ({book.stat().st_size / 1e6:.1f} MB) in {time.monotonic() - t:.1f} s")
    from openpyxl import load_workbook
    from python_calamine import CalamineWorkbook

    t = time.monotonic()
    calamine_rows = len(CalamineWorkbook.from_path(str(book)).get_sheet_by_name("results").to_python())
    calamine = time.monotonic() - t
    t = time.monotonic()
    workbook = load_workbook(book, read_only=True, data_only=True)
    openpyxl_rows = sum(1 for _ in workbook["results"].iter_rows(values_only=True))
    workbook.close()
    openpyxl = time.monotonic() - t
    print(f"reading the sheet: python-calamine {calamine:.2f} s ({calamine_rows:,} rows), "
          f"openpyxl read-only {openpyxl:.2f} s ({openpyxl_rows:,} rows): {openpyxl / calamine:.1f}x")
    flow_file(root, drop, "flow_xlsx", "xlsx")
    seconds, figures = run(root, url, "flow_xlsx")
    print(f"{'flow_xlsx':<12} {seconds:>8.2f} {'':>7} {figures['loaded']:>9,} {'':>9}  {figures['path']}: {figures['steps']}")


if __name__ == "__main__":
    sys.exit(main())
