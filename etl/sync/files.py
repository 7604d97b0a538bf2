"""A drop folder of CSV or Excel files as a flow's source, each file loaded exactly once.

A run takes the folder's files that are complete (unchanged for ``complete_after``, or with
their marker file), oldest first. Each is hashed (SHA-256) and checked whole before a row of
it is staged: its encoding, its header against the flow's columns, and its structure (every
line as many fields as the header; no quoted field cut off). A file refused whole (wrong
encoding, header or structure, empty) loads nothing and moves to ``rejected/`` beside a
``NAME.reason.txt``; the same content seen again (already loaded, or twice in one run) is a
duplicate and loads nothing. Every file a run takes is recorded (name, size, SHA-256, rows,
outcome) in ``etl_file_intake`` in the run's own transaction, with its rows; after the commit,
loaded files move to ``archive/``. A run stopped between the commit and the move finds the file
still there with its record (same name, content and modification time) and only moves it.

Rows carry their place (``source_file``, ``source_sheet``, ``source_line``: the line of the file
or the row of the sheet), so a quarantine entry names it.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from operator import itemgetter
from pathlib import Path
from typing import Any, BinaryIO

import pandas as pd
from sqlalchemy import BigInteger, Column, Connection, MetaData, Table, Text, and_, insert, select

from etl.config.flows import PLACE_COLUMNS, FilesSpec, Flow, closest_name
from etl.core.errors import EtlError
from etl.core.printable import get_logger
from etl.core.rows import SEQ, frame_from_rows
from etl.core.watermark import CursorValue, Window
from etl.dialects.base import COPY_ESCAPES, copy_text
from etl.dialects.postgresql import copy_from_writer
from etl.sync.ledger import RunRecord
from etl.sync.pipeline_tables import file_intake

log = get_logger("etl.sync.files")

LOADED, DUPLICATE, REJECTED = "loaded", "duplicate", "rejected"
_BLOCK = 1 << 20
#: Names a folder holds that are never data: hidden files, Excel's lock files, partial copies.
_NOT_DATA = (".", "~$")
_PARTIAL = (".part", ".tmp", ".partial", ".crdownload")


class FileRefused(EtlError):
    """A file refused whole; the message says why, naming the file."""


@dataclass
class DroppedFile:
    """One file a run takes from the folder, and what became of it."""

    path: Path
    size: int
    mtime_ns: int
    sha256: str = ""
    outcome: str = LOADED
    reason: str | None = None
    header: list[str] = field(default_factory=list)
    rows: int = 0
    #: Loaded by an earlier run that stopped before moving it: only the move is left to do.
    recovered: bool = False
    #: CSV: each line after the header one record (see _CsvFile.one_per_line), and its codec.
    one_per_line: bool = False
    codec: str = ""

    @property
    def name(self) -> str:
        return self.path.name


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _codec(spec: FilesSpec, path: Path) -> str:
    """The codec to read ``path`` with: the declared one (UTF-8 read past a byte order mark),
    or, with ``encoding: detect``, the one charset-normalizer finds in its first megabyte."""
    if spec.encoding != "detect":
        name = codecs.lookup(spec.encoding).name
        return "utf-8-sig" if name == "utf-8" else name
    from charset_normalizer import from_bytes

    with path.open("rb") as handle:
        best = from_bytes(handle.read(_BLOCK)).best()
    if best is None:
        raise FileRefused(f"{path.name}: its encoding could not be detected; declare source.files.encoding")
    name = codecs.lookup(best.encoding).name
    return "utf-8-sig" if name in ("utf-8", "ascii") else name


def _text_lines(path: Path, codec: str) -> Iterator[str]:
    """The file's text line by line (each with its line end), decoded strictly in blocks;
    FileRefused with the byte offset of the first byte the codec cannot read."""
    decoder = codecs.getincrementaldecoder(codec)(errors="strict")
    consumed = 0
    rest = ""
    with path.open("rb") as handle:
        while True:
            block = handle.read(_BLOCK)
            pending = len(decoder.getstate()[0])
            try:
                text = decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                offset = consumed - pending + exc.start
                raise FileRefused(
                    f"{path.name}: not {codec} at byte offset {offset} "
                    f"(bytes {exc.object[exc.start:exc.start + 4].hex(' ')}): declare its encoding in source.files.encoding"
                ) from None
            consumed += len(block)
            lines = (rest + text).split("\n")
            rest = lines.pop()
            for line in lines:
                yield line + "\n"
            if not block:
                break
    if rest:
        yield rest


class _CsvFile:
    """The records of one CSV file: (line number, fields), the header first."""

    def __init__(self, spec: FilesSpec, path: Path) -> None:
        self.spec = spec
        self.path = path
        self.codec = _codec(spec, path)
        #: Whether every record read so far was one whole line (no line end inside quotes, no
        #: blank line): then each line after the header is one row, as PostgreSQL reads it.
        self.one_per_line = True

    def records(self) -> Iterator[tuple[int, list[str]]]:
        reader = csv.reader(
            _text_lines(self.path, self.codec), delimiter=self.spec.delimiter, quotechar=self.spec.quote,
            strict=True,
        )
        line = 1
        try:
            for fields in reader:
                start, line = line, reader.line_num + 1
                if reader.line_num != start or not fields:
                    self.one_per_line = False
                if fields:
                    yield start, fields
        except csv.Error as exc:
            raise FileRefused(
                f"{self.path.name}: line {line}: {exc} (a file cut off, or a quote character "
                f"{self.spec.quote!r} not closed)"
            ) from None


class _SheetFile:
    """The rows of one sheet of an Excel workbook: (row number, typed cells), the header first."""

    def __init__(self, spec: FilesSpec, path: Path) -> None:
        from python_calamine import CalamineWorkbook

        self.spec = spec
        self.path = path
        try:
            book = CalamineWorkbook.from_path(str(path))
        except Exception as exc:  # the reader's own error types: a file that is no workbook
            raise FileRefused(f"{path.name}: not an Excel workbook ({type(exc).__name__}: {exc})") from None
        names = book.sheet_names
        sheet = spec.sheet
        if isinstance(sheet, int):
            if not 1 <= sheet <= len(names):
                raise FileRefused(f"{path.name}: has {len(names)} sheet(s), no sheet number {sheet}")
            self.sheet_name = names[sheet - 1]
        elif sheet in names:
            self.sheet_name = sheet
        else:
            raise FileRefused(f"{path.name}: no sheet {sheet!r}{closest_name(sheet, names)} (sheets: {', '.join(names)})")
        self.sheet = book.get_sheet_by_name(self.sheet_name)
        header = spec.header_row - 1
        for (r0, c0), (r1, c1) in self.sheet.merged_cell_ranges or []:
            if r0 <= header <= r1:
                raise FileRefused(
                    f"{path.name}: sheet {self.sheet_name!r}: header cells {_cell(r0, c0)}:{_cell(r1, c1)} are merged; "
                    "unmerge them so that each column has its own name"
                )

    def records(self) -> Iterator[tuple[int, list[Any]]]:
        for number, cells in enumerate(self.sheet.to_python(skip_empty_area=False), start=1):
            values = [_cell_value(v) for v in cells]
            while values and values[-1] is None:
                values.pop()
            if values:
                yield number, values


def _cell(row: int, col: int) -> str:
    letters = ""
    col += 1
    while col:
        col, rem = divmod(col - 1, 26)
        letters = chr(65 + rem) + letters
    return f"{letters}{row + 1}"


def _cell_value(value: Any) -> Any:
    """A cell as the flow reads it: numbers exact (the shortest decimal that is the stored
    double, which is the text Excel shows for up to 15 digits), whole numbers as integers,
    empty cells as NULL, dates and times as they are."""
    if value == "" or value is None:
        return None
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            return str(value)
        return int(value) if value.is_integer() else Decimal(repr(value))
    if isinstance(value, (bool, int, str, datetime, date, timedelta)):
        return value
    return value


def _open(spec: FilesSpec, path: Path) -> _CsvFile | _SheetFile:
    return _CsvFile(spec, path) if spec.format == "csv" else _SheetFile(spec, path)


@dataclass
class _Rows:
    """The data records of one checked file, after its header."""

    file: DroppedFile
    sheet: str | None
    records: Iterator[tuple[int, list[Any]]]
    reader: _CsvFile | _SheetFile


class OpenedFolder:
    """A flow's drop folder for one run (an etl.sync.extract.OpenedSource)."""

    def __init__(self, flow: Flow, spec: FilesSpec, clock: Callable[[], float] = time.time) -> None:
        self.flow = flow
        self.spec = spec
        self.folder = Path(spec.folder)
        self.clock = clock
        self.files: list[DroppedFile] = []
        self._warnings: list[str] = []

    @property
    def connection(self) -> Connection | None:
        return None

    @property
    def warnings(self) -> list[str]:
        return self._warnings

    def open(self) -> None:
        if not self.folder.is_dir():
            raise EtlError(f"{self.flow.file}: flow {self.flow.flow!r}: source.files.folder {self.folder} is not a folder")

    def close(self) -> None:
        """Nothing held open between steps."""

    def _candidates(self) -> list[DroppedFile]:
        marker = self.spec.marker
        found = []
        for path in self.folder.glob(self.spec.pattern):
            name = path.name
            if not path.is_file() or name.startswith(_NOT_DATA) or name.endswith(_PARTIAL):
                continue
            if marker is not None and name.endswith(marker):
                continue
            stat = path.stat()
            found.append(DroppedFile(path, stat.st_size, stat.st_mtime_ns))
        return sorted(found, key=lambda f: (f.mtime_ns, f.name))

    def _complete(self, file: DroppedFile) -> bool:
        """Whether the file is whole: its marker exists, or it has not changed for complete_after."""
        if self.spec.marker is not None:
            if file.path.with_name(file.name + self.spec.marker).exists():
                return True
            self._warnings.append(f"{file.name}: waiting for its marker {file.name + self.spec.marker}")
            return False
        age = self.clock() - file.mtime_ns / 1e9
        if age < self.spec.complete_after.total_seconds():
            self._warnings.append(
                f"{file.name}: still being written (changed {age:.0f} s ago, taken once unchanged for "
                f"{self.spec.complete_after.total_seconds():.0f} s)"
            )
            return False
        return True

    def describe(self, tconn: Connection) -> Table:
        """Take the folder's complete files, hash and check each, and offer the columns the
        flow reads (as text: each value is typed by the flow's columns) plus the place columns."""
        seen: dict[str, DroppedFile] = {}
        for file in self._candidates():
            if not self._complete(file):
                continue
            file.sha256 = _sha256(file.path)
            stat = file.path.stat()
            if (stat.st_size, stat.st_mtime_ns) != (file.size, file.mtime_ns):
                self._warnings.append(f"{file.name}: still being written (it changed while it was read)")
                continue
            earlier = seen.get(file.sha256) or self._loaded_before(tconn, file)
            if earlier is not None and earlier is not file:
                file.outcome, file.reason = DUPLICATE, f"the same content as {earlier.name}, loaded before: nothing loaded"
            elif earlier is file:
                file.recovered = True
            else:
                self._check(file)
            if file.outcome == LOADED:
                seen.setdefault(file.sha256, file)
            self.files.append(file)
        for file in self.files:
            if file.outcome == DUPLICATE:
                self._warnings.append(f"{file.name}: duplicate: {file.reason}")
            elif file.outcome == REJECTED:
                self._warnings.append(f"{file.name}: rejected: {file.reason}")
        return self._table()

    def _loaded_before(self, tconn: Connection, file: DroppedFile) -> DroppedFile | None:
        """The earlier load of the same content: ``file`` itself when a run loaded this very
        file (name and modification time) and stopped before moving it."""
        row = tconn.execute(
            select(file_intake.c.file_name, file_intake.c.mtime_ns).where(and_(
                file_intake.c.flow == self.flow.flow, file_intake.c.sha256 == file.sha256,
                file_intake.c.outcome == LOADED,
            )).limit(1)
        ).first()
        if row is None:
            return None
        if row.file_name == file.name and int(row.mtime_ns) == file.mtime_ns:
            return file
        return DroppedFile(file.path.with_name(row.file_name), 0, 0)

    def _check(self, file: DroppedFile) -> None:
        """Read the whole file once: encoding, header, structure and row count. A problem
        refuses the file whole (outcome rejected, with the reason)."""
        try:
            rows = self._rows(file)
            width = len(file.header)
            for line, values in rows.records:
                if len(values) > width or (self.spec.format == "csv" and len(values) != width):
                    place = f"line {line}" if rows.sheet is None else f"sheet {rows.sheet!r} row {line}"
                    raise FileRefused(f"{file.name}: {place} has {len(values)} fields, the header has {width}")
                file.rows += 1
            if file.rows == 0:
                raise FileRefused(f"{file.name}: no data rows below its header")
            if isinstance(rows.reader, _CsvFile):
                file.one_per_line, file.codec = rows.reader.one_per_line, rows.reader.codec
        except FileRefused as exc:
            file.outcome, file.reason, file.rows = REJECTED, str(exc), 0

    def _rows(self, file: DroppedFile) -> _Rows:
        """The file opened past its header, the header checked against the flow's columns."""
        if file.size == 0:
            raise FileRefused(f"{file.name}: the file is empty")
        reader = _open(self.spec, file.path)
        records = reader.records()
        for _ in range(self.spec.header_row - 1):
            next(records, None)
        first = next(records, None)
        if first is None:
            raise FileRefused(f"{file.name}: no header row (row {self.spec.header_row})")
        header = ["" if v is None else str(v).strip() for v in first[1]]
        self._check_header(file, header)
        file.header = header
        return _Rows(file, reader.sheet_name if isinstance(reader, _SheetFile) else None, records, reader)

    def _check_header(self, file: DroppedFile, header: list[str]) -> None:
        blank = [i + 1 for i, h in enumerate(header) if not h]
        if blank:
            raise FileRefused(f"{file.name}: header column(s) {', '.join(map(str, blank))} have no name")
        doubled = sorted({h for h in header if header.count(h) > 1})
        if doubled:
            raise FileRefused(f"{file.name}: header names {', '.join(doubled)} more than once")
        taken = [h for h in header if h in PLACE_COLUMNS]
        if taken:
            raise FileRefused(f"{file.name}: header column(s) {', '.join(taken)} are names the pipeline gives each row's place")
        wanted = [c for c in self.flow.source_columns() if c not in PLACE_COLUMNS]
        missing = [c for c in wanted if c not in header]
        if missing and len(header) == 1:
            found = next((d for d in ";\t|," if d in header[0] and d != self.spec.delimiter), None)
            if found is not None:
                raise FileRefused(f"{file.name}: one column {header[0]!r}: is the delimiter {found!r}? (source.files.delimiter)")
        if missing:
            hints = "; ".join(f"{c}{closest_name(c, [h for h in header if h not in wanted])}" for c in missing)
            raise FileRefused(f"{file.name}: missing column(s): {hints}")

    def _table(self) -> Table:
        wanted = [c for c in self.flow.source_columns() if c not in PLACE_COLUMNS]
        extra: list[str] = []
        for file in self.taken:
            extra += [h for h in file.header if h not in wanted and h not in extra]
        place: list[Column[Any]] = [Column("source_file", Text), Column("source_sheet", Text), Column("source_line", BigInteger)]
        return Table(self.spec.label, MetaData(), *[Column(c, Text) for c in wanted + extra], *place)

    @property
    def taken(self) -> list[DroppedFile]:
        """The files whose rows this run loads."""
        return [f for f in self.files if f.outcome == LOADED and not f.recovered]

    def reader(self, table: Table, plants: list[str] | None) -> FolderRows:
        return FolderRows(self, table)

    def record(self, tconn: Connection, run: RunRecord, now: datetime) -> None:
        """Record every file this run took, with its rows' run, in the run's transaction."""
        entries = [
            {
                "run_id": run.run_id, "flow": self.flow.flow, "file_name": f.name, "sha256": f.sha256,
                "size_bytes": f.size, "mtime_ns": f.mtime_ns, "row_count": f.rows, "outcome": f.outcome,
                "reason": f.reason, "recorded_at": now,
            }
            for f in self.files if not f.recovered
        ]
        if entries:
            tconn.execute(insert(file_intake), entries)
        run.options["files"] = {
            outcome: [f.name for f in self.files if f.outcome == outcome and not f.recovered]
            for outcome in (LOADED, DUPLICATE, REJECTED)
        }
        if any(f.recovered for f in self.files):
            run.options["files"]["moved_after_an_earlier_run"] = [f.name for f in self.files if f.recovered]

    def after_commit(self, enter: Callable[[str], None]) -> None:
        """Move each file out of the folder: loaded ones to archive/, refused ones to rejected/
        beside a reason file. A move that fails is retried by the next run (the record says
        the file was loaded), so it warns and goes on."""
        if not self.files:
            return
        enter("move_files")
        for file in self.files:
            loaded = file.outcome == LOADED
            into = self.folder / (self.spec.archive if loaded else self.spec.rejected)
            try:
                into.mkdir(exist_ok=True)
                destination = _free_name(into / file.name, file.sha256)
                if not loaded:
                    reason = destination.with_name(destination.name + ".reason.txt")
                    reason.write_text(f"{file.reason}\n", encoding="utf-8")
                os.replace(file.path, destination)
                if self.spec.marker is not None:
                    marker = file.path.with_name(file.name + self.spec.marker)
                    if marker.exists():
                        os.replace(marker, destination.with_name(destination.name + self.spec.marker))
            except OSError as exc:
                log.warning("flow %s: could not move %s to %s (the next run moves it): %s", self.flow.flow, file.name, into, exc)


_COPY_LINES = 10_000
_LINE_END = "\r\n"


def _sql_text(value: str) -> str:
    """A one-character COPY option as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def _same_rows(file: DroppedFile, read: int) -> None:
    if read != file.rows:  # changed between the check and the read: never load half a file
        raise EtlError(f"{file.name}: had {file.rows} rows when checked, {read} when read: it changed; rerun")


def _csv_copy_text(file: DroppedFile, rows: _Rows, order: list[str], written: int, out: BinaryIO) -> int:
    """Write a checked CSV file's records as COPY text (columns in ``order``, then the row's
    number from ``written`` + 1); returns the last number written.

    Text fields need escaping only when they hold a backslash, a tab or a line end, which few
    do: a record is joined whole and looked at once, and only such records are escaped field by
    field (the per-value path costs ten times as much on a million rows)."""
    position = {h: i for i, h in enumerate(file.header)}
    width = len(file.header)
    # The place columns ride at the end of each record: name, sheet (NULL), line.
    position.update({"source_file": width, "source_sheet": width + 1, "source_line": width + 2})
    pick = itemgetter(*[position[c] for c in order])
    name, tabs = copy_text(file.name), len(order) - 1
    lines: list[str] = []
    first = written
    for line, values in rows.records:
        values += (name, "", str(line))
        fields = pick(values)
        joined = "\t".join(fields)
        if joined.count("\t") != tabs or "\\" in joined or "\n" in joined or "\r" in joined:
            joined = "\t".join([f.translate(COPY_ESCAPES) if f else "\\N" for f in fields])
        elif "" in fields:
            joined = "\t".join([f or "\\N" for f in fields])
        written += 1
        lines.append(f"{joined}\t{written}\n")
        if len(lines) == _COPY_LINES:
            out.write("".join(lines).encode())
            lines = []
    out.write("".join(lines).encode())
    _same_rows(file, written - first)
    return written


def _free_name(path: Path, sha256: str) -> Path:
    """``path``, or beside it a name with the content's hash when one is there already."""
    if not path.exists():
        return path
    return path.with_name(f"{path.stem}.{sha256[:12]}{path.suffix}")


class FolderRows:
    """The rows of the files a run takes (an etl.sync.extract.Source), file by file."""

    dialect_name = "files"
    copies_binary = False

    def __init__(self, folder: OpenedFolder, table: Table) -> None:
        self.folder = folder
        self.table = table
        self.columns = [c.name for c in table.columns]

    def _records(self) -> Iterator[list[Any]]:
        """Each data row of each taken file, as values in the order of ``table``'s columns."""
        for file in self.folder.taken:
            yield from self._file_records(file, self.folder._rows(file))

    def _file_records(self, file: DroppedFile, rows: _Rows) -> Iterator[list[Any]]:
        names = [c for c in self.columns if c not in PLACE_COLUMNS]
        position = {h: i for i, h in enumerate(file.header)}
        picks = [position.get(c) for c in names]
        read = 0
        for line, values in rows.records:
            values = [None if v == "" else v for v in values]
            yield [values[i] if i is not None and i < len(values) else None for i in picks] + [file.name, rows.sheet, line]
            read += 1
        _same_rows(file, read)

    def chunks(self, window: Window | None, chunk_size: int) -> Iterator[pd.DataFrame]:
        batch: list[list[Any]] = []
        for record in self._records():
            batch.append(record)
            if len(batch) == chunk_size:
                yield frame_from_rows(batch, self.columns)
                batch = []
        if batch:
            yield frame_from_rows(batch, self.columns)

    def fill_raw(self, tconn: Connection, raw: Table) -> int | None:
        """Fill the raw table by COPY in CSV format, which PostgreSQL parses itself: each line
        after the header goes as it is, behind the file's name, its line and its number. Only
        for CSV files of one record per line whose columns the raw table has (else None: the
        rows go through copy_out). Empty fields, quoted or not, are NULL, as on the Python path."""
        spec, files = self.folder.spec, self.folder.taken
        names = {c.name for c in raw.columns}
        if spec.format != "csv" or not all(f.one_per_line and set(f.header) <= names for f in files):
            return None
        prep = tconn.dialect.identifier_preparer
        d, q = spec.delimiter, spec.quote
        written = 0
        for file in files:
            header = [prep.quote(h) for h in file.header]
            columns = ", ".join([prep.quote("source_file"), prep.quote("source_line"), prep.quote(SEQ), *header])
            options = f"FORMAT csv, DELIMITER {_sql_text(d)}, QUOTE {_sql_text(q)}, FORCE_NULL ({', '.join(header)})"
            prefix = q + file.name.replace(q, q + q) + q + d

            def produce(out: BinaryIO, file: DroppedFile = file, first: int = written, prefix: str = prefix) -> None:
                lines: list[str] = []
                number = first
                for line_no, line in enumerate(_text_lines(file.path, file.codec), start=1):
                    if line_no <= spec.header_row:
                        continue
                    number += 1
                    lines.append(f"{prefix}{line_no}{d}{number}{d}{line.rstrip(_LINE_END)}\n")
                    if len(lines) == _COPY_LINES:
                        out.write("".join(lines).encode())
                        lines = []
                out.write("".join(lines).encode())

            copied = copy_from_writer(tconn, produce, prep.format_table(raw), columns, options)
            _same_rows(file, copied)
            written += copied
        return written

    def copy_out(self, window: Window | None, out: BinaryIO, binary: bool) -> None:
        """The rows as numbered COPY text, in the raw table's column order (see raw_table)."""
        if binary:
            raise ValueError("a file source writes COPY text only")
        order = self.folder.flow.source_columns()
        written = 0
        for file in self.folder.taken:
            rows = self.folder._rows(file)
            if self.folder.spec.format == "csv":
                written = _csv_copy_text(file, rows, order, written, out)
                continue
            position = {c: i for i, c in enumerate(self.columns)}
            lines: list[str] = []
            for record in self._file_records(file, rows):
                written += 1
                lines.append("\t".join([copy_text(record[position[c]]) for c in order]) + f"\t{written}\n")
                if len(lines) == _COPY_LINES:
                    out.write("".join(lines).encode())
                    lines = []
            out.write("".join(lines).encode())

    def ceiling(self, limit: CursorValue | None = None) -> CursorValue | None:
        return None

    def clock(self) -> datetime:
        raise EtlError("a file source has no clock: it has no cursor")

    def beyond(self, limit: CursorValue, sample: int) -> tuple[int, list[str]]:
        raise EtlError("a file source has no cursor")

    def rows_with_keys(self, columns: list[str], keys: list[tuple[Any, ...]], chunk_size: int) -> Iterator[pd.DataFrame]:
        raise EtlError("a file source holds one file's rows, not the source's whole set: no delete detection")

    def keys(self, chunk_size: int) -> Iterator[pd.DataFrame]:
        raise EtlError("a file source holds one file's rows, not the source's whole set: no delete detection")
