"""File drop folders as a flow's source, on real PostgreSQL and MariaDB targets.

Every file here is written by the test itself: UTF-8, UTF-8 with a byte order mark, GB18030
with Chinese text, CRLF line ends, workbooks with several sheets and date cells; and the bad
ones: truncated, wrong encoding, missing, extra and doubled columns, empty, still being
written. Each good file loads exactly, once; each bad one is refused whole with its reason (or
its bad rows wait in quarantine naming file, sheet and line); nothing is lost or doubled.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL

from etl.config.project import load_project
from etl.core.errors import StepFailed
from etl.sync.connections import Connections
from etl.sync.runner import RunOptions, RunResult, run_flow

HEADER = ["lot_no", "material", "sample_size", "defects", "inspected_at", "remark"]
ROWS = [
    ["L-001", "MAT-000123", "20", "1.50", "2026-06-01 08:00:00", "划痕 scratch"],
    ["L-002", "MAT-000124", "5", "0", "2026-06-01 09:30:00", "合格"],
    ["L-003", "MAT-000125", "8", "2.25", "2026-06-02 10:00:00", 'comma, "quoted"'],
]

TARGET_DDL = {
    "postgresql": """CREATE TABLE quality_result (
        lot_no varchar(20) PRIMARY KEY, material varchar(40), sample_size integer, defects numeric(10,2),
        inspected_at timestamp, remark text, source_file text, source_sheet text, source_line bigint)""",
    "mysql": """CREATE TABLE quality_result (
        lot_no varchar(20) PRIMARY KEY, material varchar(40), sample_size integer, defects decimal(10,2),
        inspected_at datetime(6), remark text, source_file text, source_sheet text, source_line bigint)""",
}


def csv_text(rows: list[list[str]], header: list[str] = HEADER, end: str = "\n") -> str:
    def field(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n') else v

    return "".join(",".join(field(v) for v in row) + end for row in [header, *rows])


def flow_yaml(drop: Path, **files: Any) -> dict[str, Any]:
    spec = {"folder": str(drop), "pattern": "*.csv", "format": "csv", "complete_after": "0s", **files}
    return {
        "flow": "quality_file",
        "direction": "mes_to_erp",
        "source": {"files": spec},
        "target": {"connection": "erp_db", "table": "quality_result"},
        "key": ["lot_no"],
        "columns": [{"target": c, "source": c} for c in [*HEADER, "source_file", "source_sheet", "source_line"]],
    }


@dataclass
class Drop:
    """A drop folder, its flow and its target database."""

    root: Path
    url: URL
    dialect: str

    @property
    def folder(self) -> Path:
        return self.root / "drop"

    def configure(self, **files: Any) -> None:
        flows = self.root / "mappings" / "flows"
        flows.mkdir(parents=True, exist_ok=True)
        (flows / "quality_file.yaml").write_text(yaml.safe_dump(flow_yaml(self.folder, **files)), encoding="utf-8")

    def put(self, name: str, content: str | bytes, encoding: str = "utf-8", age: float = 120) -> Path:
        path = self.folder / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode(encoding))
        stamp = time.time() - age
        os.utime(path, (stamp, stamp))
        return path

    def run(self, hook: Callable[[str], None] | None = None) -> RunResult:
        project = load_project(self.root / "mappings", self.root / "expectations")
        with Connections({"erp_db": self.url}) as connections:
            return run_flow(project, "quality_file", connections, RunOptions(), crosswalks={}, hook=hook)

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        engine = create_engine(self.url)
        try:
            with engine.connect() as conn:
                return [tuple(r) for r in conn.execute(text(sql))]
        finally:
            engine.dispose()

    def target(self) -> dict[str, tuple[Any, ...]]:
        rows = self.query(
            "SELECT lot_no, material, sample_size, defects, inspected_at, remark, source_file, source_line FROM quality_result"
        )
        return {r[0]: r[1:] for r in rows}

    def intake(self) -> list[tuple[Any, ...]]:
        return self.query("SELECT file_name, outcome, row_count, sha256, reason FROM etl_file_intake ORDER BY recorded_at, file_name")

    def quarantine(self) -> list[dict[str, Any]]:
        rows = self.query("SELECT payload, reason FROM etl_quarantine WHERE status = 'waiting'")
        return [{**json.loads(p), "reason": r} for p, r in rows]

    def left(self, sub: str = "") -> list[str]:
        folder = self.folder / sub if sub else self.folder
        return sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.exists() else []


@pytest.fixture(params=["postgresql", "mysql"])
def drop(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Drop]:
    factory = request.getfixturevalue("pg_database" if request.param == "postgresql" else "mariadb_database")
    url = factory("files")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(TARGET_DDL[request.param]))
    engine.dispose()
    (tmp_path / "drop").mkdir()
    box = Drop(tmp_path, url, request.param)
    box.configure()
    yield box


@pytest.fixture
def pg_drop(pg_database: Callable[[str], URL], tmp_path: Path) -> Drop:
    url = pg_database("files")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text(TARGET_DDL["postgresql"]))
    engine.dispose()
    (tmp_path / "drop").mkdir()
    box = Drop(tmp_path, url, "postgresql")
    box.configure()
    return box


def expected(rows: list[list[str]], file: str, first_line: int = 2) -> dict[str, tuple[Any, ...]]:
    return {
        r[0]: (r[1], int(r[2]), Decimal(r[3]).quantize(Decimal("0.01")), datetime.fromisoformat(r[4]), r[5], file, first_line + i)
        for i, r in enumerate(rows)
    }


@pytest.mark.parametrize(
    ("encoding", "declared", "end"),
    [("utf-8", "utf-8", "\n"), ("utf-8-sig", "utf-8", "\n"), ("gb18030", "gb18030", "\n"), ("utf-8", "utf-8", "\r\n"),
     ("gb18030", "detect", "\r\n")],
    ids=["utf8", "utf8-bom", "gb18030", "crlf", "detected-gb18030"],
)
def test_each_encoding_loads_exactly_once(drop: Drop, encoding: str, declared: str, end: str) -> None:
    drop.configure(encoding=declared)
    # Detection needs text to go on: a few short words could be several encodings.
    rows = ROWS if declared != "detect" else [
        [f"L-{i:03d}", "MAT-000123", "5", "1", "2026-06-01 08:00:00", "外观检查合格，表面无划痕，尺寸符合图纸要求"] for i in range(30)
    ]
    drop.put("quality_0601.csv", csv_text(rows, end=end), encoding)
    result = drop.run()
    assert result.record.counts.rows_loaded == len(rows)
    assert drop.target() == expected(rows, "quality_0601.csv")
    [(name, outcome, count, sha, _)] = drop.intake()
    assert (name, outcome, count, len(sha)) == ("quality_0601.csv", "loaded", len(rows), 64)
    assert drop.left() == [] and drop.left("archive") == ["quality_0601.csv"]
    again = drop.run()  # nothing left in the folder: nothing read
    assert again.record.counts.rows_read == 0


def test_same_content_again_is_a_duplicate_and_loads_nothing(drop: Drop) -> None:
    drop.put("a.csv", csv_text(ROWS))
    drop.run()
    drop.put("a_copy.csv", csv_text(ROWS))
    result = drop.run()
    assert result.record.counts.rows_read == 0
    assert any("a_copy.csv: duplicate" in w for w in result.warnings), result.warnings
    assert [r[:3] for r in drop.intake()] == [("a.csv", "loaded", 3), ("a_copy.csv", "duplicate", 0)]
    assert drop.left("rejected") == ["a_copy.csv", "a_copy.csv.reason.txt"]
    assert "a.csv" in (drop.folder / "rejected" / "a_copy.csv.reason.txt").read_text()


def test_changed_content_under_the_same_name_is_a_new_file(drop: Drop) -> None:
    drop.put("a.csv", csv_text(ROWS))
    drop.run()
    changed = [[*ROWS[0][:2], "21", *ROWS[0][3:]]]
    drop.put("a.csv", csv_text(changed))
    result = drop.run()
    assert result.record.counts.rows_loaded == 1
    assert drop.target()["L-001"][1] == 21
    assert [r[:2] for r in drop.intake()] == [("a.csv", "loaded"), ("a.csv", "loaded")]
    assert len(drop.left("archive")) == 2  # the second under a name with its hash


def test_two_versions_of_a_row_in_one_run_both_wait_naming_their_files(drop: Drop) -> None:
    drop.put("b.csv", csv_text([[*ROWS[0][:2], "99", *ROWS[0][3:]]]), age=60)
    drop.put("a.csv", csv_text(ROWS), age=120)
    drop.run()
    # As for any batch: which of two differing versions is right is not the pipeline's to guess.
    assert drop.target().keys() == {"L-002", "L-003"}
    [entry] = [e for e in drop.quarantine() if e["lot_no"] == "L-001"]
    assert entry["source_file"] in ("a.csv", "b.csv") and "L-001" in entry["reason"], entry


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("lot_no;material\nL-1;M\n", "one column 'lot_no;material': is the delimiter ';'?"),
        (csv_text(ROWS, header=["lot_no", "materiel", *HEADER[2:]]), "missing column(s): material (did you mean 'materiel'?)"),
        (csv_text(ROWS, header=[*HEADER[:5], "lot_no"]), "header names lot_no more than once"),
        ("", "the file is empty"),
        (csv_text([]), "no data rows below its header"),
        (csv_text(ROWS)[:-25], "line 4 has 5 fields, the header has 6"),
        (csv_text(ROWS)[:-10] .rsplit('"', 1)[0] + '"cut', "line 4: unexpected end of data"),
    ],
    ids=["wrong-delimiter", "renamed-column", "duplicate-header", "empty", "header-only", "truncated", "cut-in-quotes"],
)
def test_a_bad_file_is_refused_whole_with_its_reason(drop: Drop, content: str, reason: str) -> None:
    drop.put("good.csv", csv_text(ROWS[:1]), age=200)
    drop.put("bad.csv", content)
    result = drop.run()
    assert drop.target().keys() == {"L-001"}  # the good file loads beside the bad one
    [bad] = [r for r in drop.intake() if r[0] == "bad.csv"]
    assert bad[1] == "rejected" and reason in bad[4], bad[4]
    assert any(w.startswith("bad.csv: rejected:") and reason in w for w in result.warnings)
    assert drop.left("rejected") == ["bad.csv", "bad.csv.reason.txt"]
    assert reason in (drop.folder / "rejected" / "bad.csv.reason.txt").read_text(encoding="utf-8")


def test_wrong_encoding_is_refused_with_the_byte_offset(drop: Drop) -> None:
    content = csv_text(ROWS).encode("gb18030")
    drop.put("gbk.csv", content)
    drop.run()
    [(_, outcome, _, _, reason)] = drop.intake()
    offset = content.index("划".encode("gb18030"))
    assert outcome == "rejected"
    assert f"gbk.csv: not utf-8-sig at byte offset {offset}" in reason


def test_an_extra_column_loads_and_is_reported(drop: Drop) -> None:
    drop.put("a.csv", csv_text([[*r, "x"] for r in ROWS], header=[*HEADER, "inspector"]))
    result = drop.run()
    assert result.record.counts.rows_loaded == 3
    assert result.new_source_columns == ["inspector"]


def test_a_file_still_being_written_waits(drop: Drop) -> None:
    drop.configure(complete_after="1h")
    drop.put("a.csv", csv_text(ROWS), age=5)
    result = drop.run()
    assert result.record.counts.rows_read == 0 and drop.left() == ["a.csv"]
    assert any("a.csv: still being written" in w for w in result.warnings)
    assert drop.intake() == []


def test_a_marker_file_says_when_a_file_is_complete(drop: Drop) -> None:
    drop.configure(marker=".done")
    drop.put("a.csv", csv_text(ROWS), age=0)
    assert drop.run().record.counts.rows_read == 0
    drop.put("a.csv.done", "")
    assert drop.run().record.counts.rows_loaded == 3
    assert drop.left("archive") == ["a.csv", "a.csv.done"]


def test_bad_rows_wait_in_quarantine_naming_file_and_line(drop: Drop) -> None:
    rows = [ROWS[0], [*ROWS[1][:2], "five", *ROWS[1][3:]], ROWS[2]]
    drop.put("a.csv", csv_text(rows))
    result = drop.run()
    assert result.record.counts.rows_loaded == 2
    [entry] = drop.quarantine()
    assert (entry["source_file"], entry["source_line"], entry["lot_no"]) == ("a.csv", 3, "L-002")
    assert "sample_size" in entry["reason"] and "'five'" in entry["reason"]
    assert drop.left("archive") == ["a.csv"]  # the file is loaded; its bad row waits, not lost


def test_a_crash_between_commit_and_move_loads_nothing_twice(drop: Drop) -> None:
    drop.put("a.csv", csv_text(ROWS))

    def crash(step: str) -> None:
        if step == "move_files":
            raise RuntimeError("killed after the commit")

    with pytest.raises(StepFailed):
        drop.run(hook=crash)
    assert drop.left() == ["a.csv"] and len(drop.target()) == 3
    result = drop.run()
    assert result.record.counts.rows_read == 0
    assert [r[:2] for r in drop.intake()] == [("a.csv", "loaded")]
    assert drop.left() == [] and drop.left("archive") == ["a.csv"]
    assert not result.warnings


def test_a_crash_at_any_step_leaves_the_old_state(pg_drop: Drop) -> None:
    drop = pg_drop
    drop.put("a.csv", csv_text(ROWS), age=300)
    drop.put("b.csv", csv_text([[*ROWS[0][:2], "7", *ROWS[0][3:]]]), age=200)
    steps: list[str] = []
    drop.run(hook=steps.append)
    clean = drop.target()
    drop.query("SELECT 1")
    for step in steps[: steps.index("commit") + 1]:
        _reset(drop)
        drop.put("a.csv", csv_text(ROWS), age=300)
        drop.put("b.csv", csv_text([[*ROWS[0][:2], "7", *ROWS[0][3:]]]), age=200)

        def crash(at: str, step: str = step) -> None:
            if at == step:
                raise RuntimeError(f"crash at {step}")

        with pytest.raises(StepFailed):
            drop.run(hook=crash)
        assert drop.target() == {} and drop.intake() == [], step
        assert drop.left() == ["a.csv", "b.csv"], step
        drop.run()
        assert drop.target() == clean, step
        assert [r[:2] for r in drop.intake()] == [("a.csv", "loaded"), ("b.csv", "loaded")], step


def _reset(drop: Drop) -> None:
    engine = create_engine(drop.url)
    with engine.begin() as conn:
        for table in ("quality_result", "etl_file_intake", "etl_watermark", "etl_quarantine"):
            conn.execute(text(f"DELETE FROM {table}"))
    engine.dispose()
    for sub in ("archive", "rejected"):
        for path in (drop.folder / sub).glob("*"):
            path.unlink()


@pytest.mark.parametrize(
    ("columns", "multi_line"),
    [(["lot_no", "remark"], False), (HEADER, False), (HEADER, True)],
    ids=["some-columns", "every-column", "line-end-in-quotes"],
)
def test_text_columns_take_the_sql_path_with_the_rows_the_python_path_loads(
    pg_drop: Drop, columns: list[str], multi_line: bool,
) -> None:
    """Every header column mapped, one record a line: PostgreSQL parses the CSV itself; else the
    records travel as COPY text. Both load what the Python path loads from the same file."""
    drop = pg_drop
    remark = "  padded\ttab \\ back  " + ("\nnext line" if multi_line else "")
    # sample_size empty, defects an empty quoted field: both NULL
    content = csv_text(ROWS) + f'L-004,x,,"",2026-06-03 00:00:00,"{remark}"\n'
    loaded = {}
    for path in ("sql", "python"):
        table = f"quality_{path}"
        engine = create_engine(drop.url)
        with engine.begin() as conn:
            if path == "python":  # the same file again, for the other path: not a duplicate here
                conn.execute(text("DELETE FROM etl_file_intake"))
            typed = ", ".join(c + " text" + (" PRIMARY KEY" if c == "lot_no" else "") for c in columns)
            conn.execute(text(f"CREATE TABLE {table} ({typed}, source_file text, source_line bigint)"))
        engine.dispose()
        data = flow_yaml(drop.folder)
        data["target"]["table"] = table
        data["load"] = {"transform": path}
        data["columns"] = [{"target": c, "source": c} for c in (*columns, "source_file", "source_line")]
        data["columns"][columns.index("remark")]["clean"] = ["trim"]
        (drop.root / "mappings" / "flows" / "quality_file.yaml").write_text(yaml.safe_dump(data), encoding="utf-8")
        drop.put("a.csv", content)
        result = drop.run()
        assert result.record.options["transform"] == path
        loaded[path] = drop.query(f"SELECT * FROM {table} ORDER BY lot_no")
    assert loaded["sql"] == loaded["python"]
    assert len(loaded["sql"]) == 4 and loaded["sql"][-1][-2:] == ("a.csv", 5)
    assert loaded["sql"][-1][columns.index("remark")] == remark.strip()
    if len(columns) > 2:
        assert loaded["sql"][-1][2:4] == (None, None)


def xlsx(path: Path, sheets: dict[str, list[list[Any]]], merge: str | None = None) -> None:
    from openpyxl import Workbook

    book = Workbook()
    book.remove(book.active)
    for name, rows in sheets.items():
        sheet = book.create_sheet(name)
        for row in rows:
            sheet.append(row)
        if merge:
            sheet.merge_cells(merge)
    book.save(path)
    stamp = time.time() - 120
    os.utime(path, (stamp, stamp))


XLSX_ROWS = [
    ["L-101", "MAT-000200", 12, 0.1, datetime(2026, 6, 5, 7, 45), "外观 ok"],
    ["L-102", "MAT-000201", 3, 2.75, datetime(2026, 6, 5, 8, 0), None],
]


def test_a_workbook_sheet_by_name_loads_typed_cells(drop: Drop) -> None:
    drop.configure(format="xlsx", pattern="*.xlsx", sheet="results", header_row=2)
    xlsx(drop.folder / "q.xlsx", {
        "cover": [["not this sheet"]],
        "results": [["Quality results, June"], HEADER, *XLSX_ROWS],
    })
    result = drop.run()
    assert result.record.counts.rows_loaded == 2
    assert drop.target() == {
        "L-101": ("MAT-000200", 12, Decimal("0.10"), datetime(2026, 6, 5, 7, 45), "外观 ok", "q.xlsx", 3),
        "L-102": ("MAT-000201", 3, Decimal("2.75"), datetime(2026, 6, 5, 8, 0), None, "q.xlsx", 4),
    }
    assert drop.query("SELECT DISTINCT source_sheet FROM quality_result") == [("results",)]


def test_a_workbook_with_merged_header_cells_is_refused(drop: Drop) -> None:
    drop.configure(format="xlsx", pattern="*.xlsx")
    xlsx(drop.folder / "q.xlsx", {"Sheet1": [HEADER, *XLSX_ROWS]}, merge="A1:B1")
    drop.run()
    [(_, outcome, _, _, reason)] = drop.intake()
    assert outcome == "rejected" and "header cells A1:B1 are merged" in reason


def test_a_workbook_without_the_sheet_is_refused(drop: Drop) -> None:
    drop.configure(format="xlsx", pattern="*.xlsx", sheet="reslts")
    xlsx(drop.folder / "q.xlsx", {"results": [HEADER, *XLSX_ROWS]})
    drop.run()
    [(_, outcome, _, _, reason)] = drop.intake()
    assert outcome == "rejected" and "no sheet 'reslts' (did you mean 'results'?)" in reason


GUIDE = Path(__file__).resolve().parents[2] / "docs" / "file-exchange.md"


def _guide_block(kind: str) -> str:
    return GUIDE.read_text(encoding="utf-8").split(f"```{kind}\n")[1].split("```")[0]


def test_the_guide_flow_loads_the_guide_file(pg_drop: Drop) -> None:
    """docs/file-exchange.md: its flow (folder aside) on its file, in the encoding it declares."""
    drop = pg_drop
    flow = yaml.safe_load(_guide_block("yaml"))
    flow["source"]["files"].update(folder=str(drop.folder), complete_after="0s")
    (drop.root / "mappings" / "flows" / "quality_file.yaml").unlink()
    (drop.root / "mappings" / "flows" / "quality_results_file.yaml").write_text(yaml.safe_dump(flow), encoding="utf-8")
    drop.put("quality_0601.csv", _guide_block("csv"), flow["source"]["files"]["encoding"])
    project = load_project(drop.root / "mappings", drop.root / "expectations")
    with Connections({"erp_db": drop.url}) as connections:
        result = run_flow(project, "quality_results_file", connections, RunOptions(), crosswalks={})
    assert result.record.counts.rows_loaded == 2
    assert sorted(drop.target()) == ["L-20260601-01", "L-20260601-02"]
    [entry] = drop.quarantine()
    assert (entry["source_file"], entry["source_line"]) == ("quality_0601.csv", 4)
    sql = _guide_block("sql")
    assert [r[1:3] for r in drop.query(sql)] == [("quality_0601.csv", "loaded")]


@pytest.mark.parametrize("step", ["stage_first_chunk", "write_ledger", "commit", "move_files"])
def test_a_run_killed_outright_loads_nothing_twice(pg_drop: Drop, step: str) -> None:
    """SIGKILL, no handler at all, at a step before the commit or between it and the move."""
    drop = pg_drop
    drop.put("a.csv", csv_text(ROWS), age=300)
    drop.put("b.csv", csv_text([[*ROWS[0][:2], "7", *ROWS[0][3:]]]), age=200)
    child = os.fork()
    if child == 0:  # the run, killed at ``step``
        try:
            drop.run(hook=lambda at: os.kill(os.getpid(), signal.SIGKILL) if at == step else None)
        finally:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    committed = step == "move_files"
    assert len(drop.target()) == (2 if committed else 0)  # L-001 in both files: waits in quarantine
    assert drop.left() == ["a.csv", "b.csv"]
    drop.run()
    assert sorted(drop.target()) == ["L-002", "L-003"]
    assert [r[:2] for r in drop.intake()] == [("a.csv", "loaded"), ("b.csv", "loaded")]
    assert drop.left() == [] and drop.left("archive") == ["a.csv", "b.csv"]
    assert len(drop.quarantine()) == 1
