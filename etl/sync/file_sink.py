"""A folder a system imports files from as a flow's target (``target: {files: …}``).

The flow's ``target.table`` is the exported-record table on the pipeline's database: the last
values written per key. A run stages and checks its batch like any flow; before the merge, the
rows that differ from what was exported, sorted by the flow's key, are written as one CSV file
with a manifest beside it, and the merge then records them in the exported-record table, with
the file in ``etl_file_export``, in the run's transaction. So the watermark moves only once the
file is complete, and a run with nothing new writes nothing.

The file is written under a hidden name (``.NAME.FLOW.tmp``), flushed and fsynced; the manifest (rows, SHA-256 of
the file, run id, flow, window) is renamed into place, then the file (``os.replace``): a file
under its own name is always whole, and has its manifest. A run whose commit is lost after that
leaves a file no ``etl_file_export`` row names; the rerun of the same window selects the same
rows, finds that manifest by their SHA-256 (``rows_sha256``) and takes the file as its own (finishing the rename
if it was not done) instead of writing a second one.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Table, insert, select

from etl.config.flows import FileTarget, Flow
from etl.core.errors import EtlError
from etl.core.watermark import Window
from etl.sync.api_sink import differing
from etl.sync.pipeline_tables import file_export

MANIFEST = ".manifest.json"


@dataclass
class Written:
    """The file a run wrote (or took over from a run whose commit was lost)."""

    name: str
    rows: int
    sha256: str
    taken_over: bool


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv_text(rows: list[dict[str, Any]], columns: list[str], delimiter: str) -> str:
    out = io.StringIO(newline="")
    writer = csv.writer(out, delimiter=delimiter, lineterminator="\r\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_text(row[c]) for c in columns])
    return out.getvalue()


def rows_digest(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """SHA-256 of the rows themselves (as UTF-8 CSV), whatever the file's format: a workbook's
    bytes carry the time it was saved, so a rerun recognises its rows by this, not the file's."""
    return hashlib.sha256(_csv_text(rows, columns, ",").encode("utf-8")).hexdigest()


def _workbook(flow: Flow, rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    sheet = book.create_sheet(flow.flow[:31])
    sheet.append(columns)
    for row in rows:
        # Numbers stay numbers (Decimal exactly as the target types it), times stay Excel dates.
        sheet.append([row[c] for c in columns])
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def render(flow: Flow, spec: FileTarget, rows: list[dict[str, Any]], columns: list[str]) -> bytes:
    """The file's bytes: a header and one line per row, in the target's encoding (CSV) or one
    sheet named after the flow (xlsx). A value the encoding cannot hold fails the run naming the
    row's key and column (nothing is written)."""
    if spec.format == "xlsx":
        return _workbook(flow, rows, columns)
    text = _csv_text(rows, columns, spec.delimiter)
    try:
        return text.encode(spec.encoding)
    except UnicodeEncodeError as exc:
        bad = text[exc.start:exc.end]
        for row in rows:
            for c in columns:
                if bad in _text(row[c]):
                    key = "/".join(str(row[k]) for k in flow.key)
                    raise EtlError(
                        f"flow {flow.flow}: key {key}, column {c}: {bad!r} cannot be written in {spec.encoding}"
                    ) from None
        raise EtlError(f"flow {flow.flow}: {bad!r} cannot be written in {spec.encoding}") from None


def _fsync_write(path: Path, content: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _hidden(folder: Path, name: str, flow: Flow) -> Path:
    # The flow in the hidden name: a folder may serve several flows, and each clears only its own.
    return folder / f".{name}.{flow.flow}.tmp"


def _clear_leftovers(folder: Path, flow: Flow) -> None:
    """Remove the hidden files of this flow's runs that stopped before their manifest was in
    place (nothing of them was ever visible); a hidden file whose manifest is in place waits
    for its rerun to take it over."""
    tail = f".{flow.flow}.tmp"
    for path in folder.glob(f".*{tail}"):
        base = path.name[1:-len(tail)]
        if base.endswith(MANIFEST) or not (folder / f"{base}{MANIFEST}").exists():
            path.unlink(missing_ok=True)


def _bound(window: Window | None, side: str) -> str | None:
    value = None if window is None else getattr(window, side)
    return None if value is None else _text(value)


def _unclaimed(conn: Connection, flow: Flow, folder: Path, digest: str) -> tuple[str, str] | None:
    """The name and SHA-256 of a file this flow wrote with these rows that no committed run claims."""
    for manifest in sorted(folder.glob(f"*{MANIFEST}")):
        try:
            told = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if told.get("flow") != flow.flow or told.get("rows_sha256") != digest:
            continue
        claimed = conn.execute(
            select(file_export.c.file_name).where(file_export.c.flow == flow.flow, file_export.c.file_name == told.get("file"))
        ).first()
        if claimed is None:
            return str(told["file"]), str(told["sha256"])
    return None


def write_file(
    conn: Connection, flow: Flow, spec: FileTarget, staging: Table, target: Table, columns: list[str],
    run_id: str, run_started: datetime, window: Window | None, renamed: Any = None,
) -> Written | None:
    """Write the staged rows the exported-record table does not hold as they are, as one file;
    record it in ``etl_file_export`` on ``conn`` (the run's transaction). None when no row
    changed. ``renamed`` is called once the file is in place (tests stop the run there)."""
    key = list(flow.key)
    stmt = differing(conn, staging, target, key, columns).order_by(None).order_by(*[staging.c[k] for k in key])
    rows = [dict(r) for r in conn.execute(stmt).mappings()]
    if not rows:
        return None
    folder = Path(spec.folder)
    if not folder.is_dir():
        raise EtlError(f"flow {flow.flow}: target.files.folder {spec.folder} is not a folder")
    _clear_leftovers(folder, flow)
    digest = rows_digest(rows, columns)
    found = _unclaimed(conn, flow, folder, digest)
    taken_over = found is not None
    if found is not None:
        name, sha256 = found
    else:
        content = render(flow, spec, rows, columns)
        sha256 = hashlib.sha256(content).hexdigest()
        name = spec.name.format(flow=flow.flow, run_id=run_id, run_started=run_started)
        if (folder / name).exists() or (folder / f"{name}{MANIFEST}").exists():
            raise EtlError(f"flow {flow.flow}: {folder / name} exists already; the file name pattern must differ per run")
        _fsync_write(_hidden(folder, name, flow), content)
        manifest = {
            "file": name, "flow": flow.flow, "run_id": run_id, "rows": len(rows), "sha256": sha256,
            "rows_sha256": digest, "format": spec.format, "encoding": spec.encoding, "columns": columns,
            "window": {"from": _bound(window, "lower"), "to": _bound(window, "upper")},
        }
        _fsync_write(_hidden(folder, f"{name}{MANIFEST}", flow), json.dumps(manifest, indent=2).encode("utf-8"))
        os.replace(_hidden(folder, f"{name}{MANIFEST}", flow), folder / f"{name}{MANIFEST}")
    if _hidden(folder, name, flow).exists():
        os.replace(_hidden(folder, name, flow), folder / name)
    _fsync_folder(folder)
    if renamed is not None:
        renamed()
    conn.execute(insert(file_export).values(
        flow=flow.flow, file_name=name, sha256=sha256, row_count=len(rows), run_id=run_id,
        window_from=_bound(window, "lower"), window_to=_bound(window, "upper"), written_at=run_started,
    ))
    return Written(name, len(rows), sha256, taken_over)
