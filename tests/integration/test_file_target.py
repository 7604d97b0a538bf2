"""A folder a system imports files from as a flow's target, on real PostgreSQL and the local
filesystem: one CSV per run with changed rows, sorted by key, in the target's encoding, beside
its manifest; nothing for a run with nothing new; a crash at any step, or a kill between the
rename and the commit, leaves no lost row and no second, different file."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass
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

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "file-exchange.md"

SOURCE_DDL = """CREATE TABLE quality_result (
    lot_no varchar(20) PRIMARY KEY, material varchar(40), defects numeric(10,2), remark text,
    updated_at timestamp NOT NULL)"""
EXPORTED_DDL = """CREATE TABLE quality_exported (
    lot_no varchar(20) PRIMARY KEY, material varchar(40), defects numeric(10,2), remark text)"""


def guide_flow() -> dict[str, Any]:
    """The file target flow of docs/file-exchange.md (its second yaml block)."""
    block = GUIDE.read_text(encoding="utf-8").split("```yaml\n")[2].split("```")[0]
    flow: dict[str, Any] = yaml.safe_load(block)
    return flow


@dataclass
class Export:
    root: Path
    source: URL
    pipeline: URL

    @property
    def folder(self) -> Path:
        return self.root / "outbox"

    def configure(self, **files: Any) -> None:
        flow = guide_flow()
        flow["target"]["files"].update(folder=str(self.folder), **files)
        flows = self.root / "mappings" / "flows"
        flows.mkdir(parents=True, exist_ok=True)
        (flows / "quality_export.yaml").write_text(yaml.safe_dump(flow), encoding="utf-8")

    def run(self, hook: Callable[[str], None] | None = None) -> RunResult:
        project = load_project(self.root / "mappings", self.root / "expectations")
        with Connections({"mes_db": self.source, "erp_db": self.pipeline}) as connections:
            return run_flow(project, "quality_export", connections, RunOptions(), crosswalks={}, hook=hook)

    def execute(self, url: URL, sql: str) -> list[tuple[Any, ...]]:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                result = conn.execute(text(sql))
                return [tuple(r) for r in result] if result.returns_rows else []
        finally:
            engine.dispose()

    def put(self, rows: list[tuple[str, str, str, str]], at: str) -> None:
        for lot, material, defects, remark in rows:
            self.execute(self.source, (
                "INSERT INTO quality_result VALUES "
                f"('{lot}', '{material}', {defects}, '{remark}', '{at}') ON CONFLICT (lot_no) DO UPDATE SET "
                "material = EXCLUDED.material, defects = EXCLUDED.defects, remark = EXCLUDED.remark, "
                "updated_at = EXCLUDED.updated_at"
            ))

    def files(self) -> list[str]:
        return sorted(p.name for p in self.folder.iterdir())

    def exports(self) -> list[tuple[Any, ...]]:
        return self.execute(self.pipeline, "SELECT file_name, row_count, sha256 FROM etl_file_export ORDER BY written_at")

    def lines(self, name: str, encoding: str = "utf-8") -> list[list[str]]:
        return list(csv.reader(io.StringIO((self.folder / name).read_bytes().decode(encoding), newline="")))


@pytest.fixture
def export(pg_database: Callable[[str], URL], tmp_path: Path) -> Export:
    box = Export(tmp_path, pg_database("mes"), pg_database("erp"))
    box.execute(box.source, SOURCE_DDL)
    box.execute(box.pipeline, EXPORTED_DDL)
    box.folder.mkdir()
    box.configure()
    return box


ROWS = [("L-003", "MAT-3", "2.25", "comma, \"quoted\""), ("L-001", "MAT-1", "1.50", "划痕 scratch"), ("L-002", "MAT-2", "0", "合格")]


def test_one_file_per_run_sorted_by_key_with_its_manifest(export: Export) -> None:
    export.put(ROWS, "2026-06-01 08:00:00")
    result = export.run()
    [name, manifest] = export.files()
    assert manifest == f"{name}.manifest.json" and name.startswith("quality_export_") and name.endswith(".csv")
    assert export.lines(name) == [
        ["lot_no", "material", "defects", "remark"],
        ["L-001", "MAT-1", "1.50", "划痕 scratch"], ["L-002", "MAT-2", "0.00", "合格"],
        ["L-003", "MAT-3", "2.25", 'comma, "quoted"'],
    ]
    told = json.loads((export.folder / manifest).read_text(encoding="utf-8"))
    assert told["rows"] == 3 and told["flow"] == "quality_export" and told["run_id"] == result.record.run_id
    assert told["sha256"] == hashlib.sha256((export.folder / name).read_bytes()).hexdigest()
    assert told["window"]["to"] is not None
    assert export.exports() == [(name, 3, told["sha256"])]
    assert result.record.counts.rows_loaded == 3
    assert export.execute(export.pipeline, "SELECT count(*) FROM quality_exported") == [(3,)]


def test_a_run_with_nothing_new_writes_nothing_and_a_change_writes_only_the_change(export: Export) -> None:
    export.put(ROWS, "2026-06-01 08:00:00")
    export.run()
    first = export.files()
    export.run()
    assert export.files() == first and len(export.exports()) == 1
    export.put([("L-002", "MAT-2", "4", "复检")], "2026-06-02 08:00:00")
    export.run(hook=None)
    names = [n for n in export.files() if n not in first and not n.endswith(".json")]
    assert len(names) == 1 and len(export.exports()) == 2
    assert export.lines(names[0])[1:] == [["L-002", "MAT-2", "4.00", "复检"]]


@pytest.mark.parametrize(("encoding", "delimiter"), [("utf-8-sig", ";"), ("gb18030", "\t")])
def test_the_target_encoding_and_delimiter(export: Export, encoding: str, delimiter: str) -> None:
    export.configure(encoding=encoding, delimiter=delimiter)
    export.put(ROWS, "2026-06-01 08:00:00")
    export.run()
    [name] = [n for n in export.files() if n.endswith(".csv")]
    raw = (export.folder / name).read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf") == (encoding == "utf-8-sig")
    rows = list(csv.reader(io.StringIO(raw.decode(encoding), newline=""), delimiter=delimiter))
    assert rows[1] == ["L-001", "MAT-1", "1.50", "划痕 scratch"]


def test_a_value_the_encoding_cannot_hold_fails_the_run_naming_key_and_column(export: Export) -> None:
    export.configure(encoding="latin-1")
    export.put(ROWS, "2026-06-01 08:00:00")
    with pytest.raises(StepFailed) as failed:
        export.run()
    assert "key L-001, column remark" in str(failed.value) and "latin-1" in str(failed.value)
    assert export.files() == [] and export.execute(export.pipeline, "SELECT count(*) FROM quality_exported") == [(0,)]


def _steps(export: Export) -> list[str]:
    steps: list[str] = []
    export.run(hook=steps.append)
    return steps


def _reset(export: Export) -> None:
    for table in ("quality_exported", "etl_file_export", "etl_watermark", "etl_quarantine"):
        export.execute(export.pipeline, f"DELETE FROM {table}")
    for path in export.folder.iterdir():
        path.unlink()


def test_a_crash_at_any_step_leaves_no_lost_row_and_no_second_file(export: Export) -> None:
    export.put(ROWS, "2026-06-01 08:00:00")
    steps = _steps(export)
    [clean] = [n for n in export.files() if n.endswith(".csv")]
    expected = export.lines(clean)
    assert "write_file" in steps and "file_renamed" in steps
    for step in steps[: steps.index("commit") + 1]:
        _reset(export)

        def crash(at: str, step: str = step) -> None:
            if at == step:
                raise RuntimeError(f"crash at {step}")

        with pytest.raises(StepFailed):
            export.run(hook=crash)
        assert export.exports() == [], step
        export.run()
        [name] = [n for n in export.files() if n.endswith(".csv")]
        assert export.lines(name) == expected, step
        assert [n for n in export.files() if n.startswith(".")] == [], step
        assert [e[1] for e in export.exports()] == [3], step
        assert export.execute(export.pipeline, "SELECT count(*) FROM quality_exported") == [(3,)], step


def test_a_run_killed_between_rename_and_commit_is_taken_over_by_the_rerun(export: Export) -> None:
    export.put(ROWS, "2026-06-01 08:00:00")
    child = os.fork()
    if child == 0:  # the run, killed once its file is in place
        try:
            export.run(hook=lambda at: os.kill(os.getpid(), signal.SIGKILL) if at == "file_renamed" else None)
        finally:
            os._exit(3)
    _, status = os.waitpid(child, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    before = export.files()
    assert len(before) == 2 and export.exports() == []
    result = export.run()
    assert export.files() == before
    assert result.record.options.get("file_taken_over") is True
    assert [(e[0], e[1]) for e in export.exports()] == [(before[0], 3)]
    export.run()
    assert export.files() == before and len(export.exports()) == 1


def test_a_crash_between_the_manifest_and_the_file_rename_is_finished_by_the_rerun(export: Export) -> None:
    """The manifest is in place, the file still under its hidden name (the disk as a crash
    between the two renames leaves it): the rerun finishes the rename, writes no second file."""
    export.put(ROWS, "2026-06-01 08:00:00")

    def crash(at: str) -> None:
        if at == "file_renamed":
            raise RuntimeError("crash after the rename")

    with pytest.raises(StepFailed):
        export.run(hook=crash)
    [name] = [n for n in export.files() if n.endswith(".csv")]
    content = (export.folder / name).read_bytes()
    os.replace(export.folder / name, export.folder / f".{name}.quality_export.tmp")
    result = export.run()
    assert export.files() == [name, f"{name}.manifest.json"]
    assert (export.folder / name).read_bytes() == content
    assert result.record.options.get("file_taken_over") is True and len(export.exports()) == 1


def test_hidden_leftovers_of_a_run_stopped_before_its_manifest_are_cleared(export: Export) -> None:
    """A run stopped while writing (a full disk) leaves hidden files no manifest names; the
    next run with rows removes this flow's, and leaves another flow's alone."""
    leftovers = [".quality_export_x.csv.quality_export.tmp", ".quality_export_x.csv.manifest.json.quality_export.tmp"]
    for name in [*leftovers, ".other_x.csv.other_flow.tmp"]:
        (export.folder / name).write_bytes(b"half")
    export.put(ROWS, "2026-06-01 08:00:00")
    export.run()
    hidden = [n for n in export.files() if n.startswith(".")]
    assert hidden == [".other_x.csv.other_flow.tmp"]
    assert len([n for n in export.files() if n.endswith(".csv")]) == 1


def test_a_quarantined_row_is_not_in_the_file_and_goes_in_a_later_one_once_fixed(export: Export) -> None:
    flow = guide_flow()
    flow["target"]["files"]["folder"] = str(export.folder)
    flow["columns"][1]["required"] = True
    (export.root / "mappings" / "flows" / "quality_export.yaml").write_text(yaml.safe_dump(flow), encoding="utf-8")
    export.put(ROWS, "2026-06-01 08:00:00")
    export.execute(export.source, "UPDATE quality_result SET material = NULL WHERE lot_no = 'L-002'")
    result = export.run()
    assert result.record.counts.rows_quarantined == 1
    [first] = [n for n in export.files() if n.endswith(".csv")]
    assert [r[0] for r in export.lines(first)[1:]] == ["L-001", "L-003"]
    export.execute(export.source, "UPDATE quality_result SET material = 'MAT-2', updated_at = '2026-06-02 08:00:00' WHERE lot_no = 'L-002'")
    export.run()
    [second] = [n for n in export.files() if n.endswith(".csv") and n != first]
    assert [r[0] for r in export.lines(second)[1:]] == ["L-002"]
    assert export.execute(export.pipeline, "SELECT count(*) FROM etl_quarantine WHERE status = 'waiting'") == [(0,)]


def test_a_workbook_target_keeps_numbers_and_a_rerun_after_a_lost_commit_takes_it_over(export: Export) -> None:
    from openpyxl import load_workbook

    export.configure(format="xlsx", name="{flow}_{run_id}.xlsx")
    export.put(ROWS, "2026-06-01 08:00:00")

    def crash(at: str) -> None:
        if at == "file_renamed":
            raise RuntimeError("crash after the rename")

    with pytest.raises(StepFailed):
        export.run(hook=crash)
    before = export.files()
    [name] = [n for n in before if n.endswith(".xlsx")]
    content = (export.folder / name).read_bytes()
    result = export.run()
    assert export.files() == before and (export.folder / name).read_bytes() == content
    assert result.record.options.get("file_taken_over") is True
    told = json.loads((export.folder / f"{name}.manifest.json").read_text(encoding="utf-8"))
    assert told["sha256"] == hashlib.sha256(content).hexdigest() and told["format"] == "xlsx"
    sheet = load_workbook(export.folder / name, read_only=True)["quality_export"]
    cells = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert cells[0] == ["lot_no", "material", "defects", "remark"]
    assert cells[1] == ["L-001", "MAT-1", 1.5, "划痕 scratch"] and cells[3][0] == "L-003"
    assert [e[1] for e in export.exports()] == [3]


def test_rows_changed_back_to_earlier_values_are_written_again(export: Export) -> None:
    """A file already recorded is never taken over: the importer needs the old values again."""
    export.put([ROWS[1]], "2026-06-01 08:00:00")
    export.run()
    export.put([("L-001", "MAT-1", "9", "x")], "2026-06-02 08:00:00")
    export.run()
    export.put([ROWS[1]], "2026-06-03 08:00:00")
    result = export.run()
    assert result.record.options.get("file_taken_over") is None
    names = [e[0] for e in export.exports()]
    assert len(names) == 3 and len(set(names)) == 3
    assert export.lines(names[2]) == export.lines(names[0])
