"""Flow configuration: YAML under mappings/ validated into typed models.

A flow file says where rows come from, where they go, how they are keyed and watermarked, and
how each target column is computed. Validation rejects unknown keys and gathers every problem of
every file into one ConfigError, each located as ``file: key.path: message``.
"""

from __future__ import annotations

import codecs
import difflib
import re
import string
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from etl.config.api import ApiSource, ApiTarget
from etl.config.user_sql import read_only_problem
from etl.core.errors import ConfigError, ConfigProblem
from etl.core.expressions import ExpressionError, parse_expression
from etl.core.types import Scalar

# Letters, digits, underscore and inner spaces: enough for real schemas, and nothing that
# could end a statement. Identifiers are also quoted when SQL is built.
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ]{0,126}[A-Za-z0-9_]$|^[A-Za-z_]$")
_CONNECTION_ID = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
_FLOW_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
_SUB_FOLDER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,62}$")
_DURATION = re.compile(r"^(\d+)\s*([smhd])$")
_DURATION_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}

Side = Literal["erp", "mes"]
Direction = Literal["erp_to_mes", "mes_to_erp", "warehouse"]


def check_identifier(value: str) -> str:
    """Return ``value`` if it is a safe column or table name, else raise ValueError."""
    if not isinstance(value, str) or not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid identifier (letters, digits, underscore, inner spaces)"
        )
    return value


def check_table_name(value: str) -> str:
    """Return ``value`` if it is ``table`` or ``schema.table`` with safe parts."""
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a table name")
    for part in value.split("."):
        check_identifier(part)
    if value.count(".") > 1:
        raise ValueError(f"{value!r}: at most one dot (schema.table)")
    return value


def check_connection_id(value: str) -> str:
    """Return ``value`` if it is a connection id (``erp_db``), else raise ValueError."""
    if not isinstance(value, str) or not _CONNECTION_ID.fullmatch(value):
        raise ValueError(f"{value!r} is not a connection id (lower case, digits, underscore)")
    return value


def closest_name(name: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest candidate, or nothing."""
    match = difflib.get_close_matches(name, candidates, n=1)
    return f" (did you mean {match[0]!r}?)" if match else ""


def parse_duration(value: Any) -> timedelta:
    """Parse ``90s``, ``10m``, ``2h``, ``1d`` or a number of seconds into a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match:
            return timedelta(**{_DURATION_UNITS[match.group(2)]: int(match.group(1))})
    raise ValueError(f"{value!r} is not a duration (examples: 90s, 10m, 2h, 1d)")


Identifier = Annotated[str, BeforeValidator(check_identifier)]
TableName = Annotated[str, BeforeValidator(check_table_name)]
Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class _RowFilters(_Model):
    """Which rows of a table a flow reads."""

    #: Equality / membership filters, e.g. ``{status: [REL, TECO]}``; values are bound parameters.
    where: dict[Identifier, Scalar | list[Scalar]] = Field(default_factory=dict)
    #: Exclusions, e.g. ``{state: [cancel, draft]}``: rows holding one of these values are not
    #: read. A NULL is not one of them, so such rows are read.
    where_not: dict[Identifier, Scalar | list[Scalar]] = Field(default_factory=dict)
    #: Source column holding the plant code, so a run can be limited to some plants.
    plant_column: Identifier | None = None


#: The kinds of source a flow can read, each a key of ``source:`` naming what to read; a flow
#: gives exactly one. etl.sync.extract.open_source turns each into the run's Source.
SOURCE_KINDS = ("table", "files", "api")

#: The columns a file source adds to every row: the file's name, the sheet (Excel) and the line
#: of the file or row of the sheet, so that a quarantine entry names the row's place.
PLACE_COLUMNS = ("source_file", "source_sheet", "source_line")


class FilesSpec(_Model):
    """A drop folder of CSV or Excel files: each complete file is read whole, once."""

    folder: str = Field(min_length=1)
    #: Which files of the folder belong to the flow (a glob, not recursive).
    pattern: str = Field(default="*.csv", min_length=1)
    format: Literal["csv", "xlsx"]
    #: A codec name (utf-8, utf-8-sig, gb18030, gbk, cp1252, ...), or ``detect``. UTF-8 files
    #: are read past a byte order mark.
    encoding: str = "utf-8"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    quote: str = Field(default='"', min_length=1, max_length=1)
    #: The row holding the column names (1 is the first); rows above it are not read.
    header_row: int = Field(default=1, ge=1)
    #: Excel: the sheet by name, or by position (1 is the first).
    sheet: str | int = 1
    #: A file is taken once unchanged (size and modification time) for this long ...
    complete_after: Duration = timedelta(seconds=30)
    #: ... or, when set, once a marker file NAME + marker (e.g. ``.done``) exists beside it.
    marker: str | None = None
    #: Sub-folders loaded files and refused files move to after the run commits.
    archive: str = "archive"
    rejected: str = "rejected"

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        if value == "detect":
            return value
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"{value!r} is not an encoding Python knows (e.g. utf-8, utf-8-sig, gb18030, gbk), or detect") from None
        return value

    @field_validator("archive", "rejected")
    @classmethod
    def _sub_folder(cls, value: str) -> str:
        if not _SUB_FOLDER.fullmatch(value):
            raise ValueError(f"{value!r}: a sub-folder name (letters, digits, _ . -), not a path")
        return value

    @field_validator("pattern")
    @classmethod
    def _in_folder(cls, value: str) -> str:
        if "/" in value or "\\" in value or value.startswith(".."):
            raise ValueError(f"{value!r}: a file name pattern inside the folder, not a path")
        return value

    @model_validator(mode="after")
    def _format_options(self) -> FilesSpec:
        if self.format == "xlsx" and isinstance(self.sheet, int) and self.sheet < 1:
            raise ValueError("sheet: 1 is the first sheet")
        if self.archive == self.rejected:
            raise ValueError("archive and rejected must be different sub-folders")
        return self

    @property
    def label(self) -> str:
        return f"{self.folder.rstrip('/')}/{self.pattern}"


class SourceSpec(_RowFilters):
    """Where a flow reads: exactly one kind (see ``SOURCE_KINDS``): a database ``table`` on its
    ``connection``, or a web ``api`` (its HTTP connection named inside it). The source is only
    ever read."""

    connection: str | None = None
    table: TableName | None = None
    files: FilesSpec | None = None
    api: ApiSource | None = None

    @field_validator("connection")
    @classmethod
    def _connection_id(cls, value: str | None) -> str | None:
        return None if value is None else check_connection_id(value)

    @model_validator(mode="after")
    def _one_kind(self) -> SourceSpec:
        given = [k for k in SOURCE_KINDS if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(SOURCE_KINDS)} (got {', '.join(given) or 'none'})")
        if self.table is not None and self.connection is None:
            raise ValueError("table: a table source needs its connection")
        if self.files is not None:
            given = [k for k in ("connection", "where", "where_not", "plant_column") if getattr(self, k)]
            if given:
                raise ValueError(f"files: not supported yet with a file source: {', '.join(given)}")
        if self.api is not None and self.connection is not None:
            raise ValueError("connection: an api source names its HTTP connection as api.connection")
        return self

    @property
    def kind(self) -> str:
        """Which kind of source this is: one of ``SOURCE_KINDS``."""
        return next(k for k in SOURCE_KINDS if getattr(self, k) is not None)

    @property
    def label(self) -> str:
        """The source as people name it in lists and messages."""
        if self.files is not None:
            return self.files.label
        if self.api is not None:
            return f"{self.api.connection}:{self.api.path}"
        return f"{self.connection}.{self.table}"


class SequenceRow(_Model):
    """A counter kept in one row of a table the product owns (Odoo ``ir_sequence``, ERPNext
    ``tabSeries``): the row is found by ``key`` and its ``counter`` column is advanced."""

    table: TableName
    #: Column = value pairs that pick the one counter row, e.g. ``{code: mrp.production}``.
    key: dict[Identifier, Scalar] = Field(min_length=1)
    counter: Identifier
    #: ``next``: the counter holds the next number to use (Odoo ``number_next``).
    #: ``last``: it holds the last number used (ERPNext ``current``).
    holds: Literal["next", "last"] = "next"


class DocumentNumber(_Model):
    """A target column filled, for new rows only, from the product's own number series: a
    counter row (``sequence``) or a database sequence (``database_sequence``), exactly one."""

    column: Identifier
    sequence: SequenceRow | None = None
    #: A sequence object of the target database (Odoo's ``ir_sequence_NNN`` for series with
    #: implementation "standard"); PostgreSQL, MariaDB and SQL Server.
    database_sequence: TableName | None = None
    #: Python format with ``n``, the allocated number: ``WH/MO/{n:05d}``.
    format: str = "{n}"

    @model_validator(mode="after")
    def _one_series(self) -> DocumentNumber:
        if (self.sequence is None) == (self.database_sequence is None):
            raise ValueError("give exactly one of sequence (a counter row) or database_sequence")
        return self

    @field_validator("format")
    @classmethod
    def _uses_n(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
            value.format(n=1)
        except (ValueError, KeyError, IndexError) as exc:
            raise ValueError(f"{value!r} is not a number format (example: WH/MO/{{n:05d}}): {exc}") from None
        if fields != {"n"}:
            raise ValueError(f"{value!r}: the format must use {{n}} and no other field")
        return value


#: The fields a file target's name may use: ``{flow}``, ``{run_id}`` and ``{run_started}`` (a
#: datetime, so ``{run_started:%Y%m%dT%H%M%S}``).
FILE_NAME_FIELDS = frozenset({"flow", "run_id", "run_started"})


class FileTarget(_Model):
    """A folder a system imports files from: each run with changed rows writes one file there,
    beside its manifest (see etl.sync.file_sink). ``target.table`` is then the exported-record
    table on ``target.connection``: the last values written per key."""

    folder: str = Field(min_length=1)
    format: Literal["csv", "xlsx"] = "csv"
    #: CSV only (a workbook holds its own text).
    encoding: str = "utf-8"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    #: The file's name, a Python format of ``FILE_NAME_FIELDS``; by default
    #: ``{flow}_{run_started:%Y%m%dT%H%M%S}_{run_id:.8}.`` and the format.
    name: str = Field(default="", min_length=1)

    @field_validator("encoding")
    @classmethod
    def _known_codec(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"{value!r} is not an encoding Python knows (e.g. utf-8, utf-8-sig, gb18030)") from None
        return value

    @field_validator("name")
    @classmethod
    def _name_pattern(cls, value: str) -> str:
        try:
            fields = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
            sample = value.format(flow="f", run_id="r", run_started=datetime(2026, 1, 2, 3, 4, 5))
        except (ValueError, KeyError, IndexError, AttributeError) as exc:
            raise ValueError(f"{value!r} is not a file name pattern (example: {{flow}}_{{run_started:%Y%m%dT%H%M%S}}.csv): {exc}") from None
        unknown = fields - FILE_NAME_FIELDS
        if unknown:
            raise ValueError(f"{value!r}: unknown field(s) {', '.join(sorted(unknown))}; use {', '.join(sorted(FILE_NAME_FIELDS))}")
        if "run_started" not in fields and "run_id" not in fields:
            raise ValueError(f"{value!r}: the name must use {{run_started}} or {{run_id}}, so that each run's file has its own name")
        if "/" in sample or "\\" in sample or sample.startswith("."):
            raise ValueError(f"{value!r}: a file name inside the folder, not a path or a hidden name")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name"):
            data = {**data, "name": "{flow}_{run_started:%Y%m%dT%H%M%S}_{run_id:.8}." + str(data.get("format", "csv"))}
        return data

    @model_validator(mode="after")
    def _format_options(self) -> FileTarget:
        if self.format == "xlsx" and (self.encoding != "utf-8" or self.delimiter != ","):
            raise ValueError("encoding and delimiter: for csv files only; a workbook holds its own text")
        return self


class TargetSpec(_RowFilters):
    """Where a flow writes. The pipeline's own tables live on the same connection."""

    connection: str
    table: TableName
    #: A folder a system imports files from; ``table`` is then the exported-record table on
    #: ``connection`` (see etl.sync.file_sink).
    files: FileTarget | None = None

    @field_validator("connection")
    @classmethod
    def _connection_id(cls, value: str) -> str:
        return check_connection_id(value)

    #: The target's own id column (serial / auto-increment): never written, lines point at it.
    generated_key: Identifier | None = None
    document_number: DocumentNumber | None = None
    #: A web API the checked records are posted to; ``table`` is then the posted-record table on
    #: ``connection`` (see etl.sync.api_sink).
    api: ApiTarget | None = None


class CursorSpec(_Model):
    """Incremental extraction: rows whose cursor column is at or after the watermark."""

    column: Identifier
    #: Re-read this far behind the watermark, for rows committed late with an older cursor.
    lookback: Duration = timedelta(minutes=10)
    #: Rows the lookback reads again at the very cursor value the last run loaded are set
    #: aside before the transform instead of being compared with the target again (the SQL
    #: path). Off by default: a re-read row then also restores a hand edit on the target.
    skip_loaded: bool = False
    #: How far past the source's own clock a cursor value may lie (local times read against
    #: a clock in another zone, clock skew). A row beyond it is loaded and reported, but the
    #: watermark never passes the clock plus this.
    future_tolerance: Duration = timedelta(days=1)
    #: The cursor column allows NULL and that is known: rows with NULL there are read only by a
    #: full refresh. Acknowledged, the run stops warning of it (and warns if the column no
    #: longer allows NULL, so the acknowledgement does not outlive its cause).
    allows_null: bool = False


class CrosswalkRef(_Model):
    name: Identifier
    to: Side


Clean = Literal["trim", "upper", "lower"]


class UnitConversion(_Model):
    """Multiply the column by the factor the unit crosswalk gives for the row's unit."""

    unit_column: Identifier
    crosswalk: Identifier = "unit"
    #: Divide instead: for per-unit values such as cycle time per unit.
    inverse: bool = False
    #: Cleaning of the unit code before the lookup; padding is never part of a unit.
    clean: list[Clean] = Field(default_factory=lambda: list[Clean](["trim"]))


class TimezoneRule(_Model):
    """Reinterpret a timestamp from one zone in another (naive values are taken as ``from``)."""

    from_: str = Field(alias="from")
    to: str

    @field_validator("from_", "to")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use IANA names like Asia/Shanghai)") from None
        return value


Cast = Literal["string", "integer", "decimal", "timestamp", "date", "boolean"]


class PostedTotal(_Model):
    """Where the target's already-posted total of a delta column is summed."""

    #: Defaults to the flow's target table.
    table: TableName | None = None
    #: Column summed; defaults to the delta column itself.
    sum: Identifier | None = None
    #: Only postings of this kind count, e.g. ``{movement_type: "101"}``.
    where: dict[Identifier, Scalar | list[Scalar]] = Field(default_factory=dict)


class DeltaSpec(_Model):
    """The source holds a cumulative value; the target receives only what it does not yet hold."""

    #: Target columns that identify one running total, e.g. ``[order_no, material_no]``.
    group_by: list[Identifier] = Field(min_length=1)
    posted: PostedTotal = PostedTotal()
    #: A cumulative value below the posted total: wait in quarantine, or post the negative
    #: difference (a reversal) for targets that take signed quantities.
    negative: Literal["quarantine", "post"] = "quarantine"


#: The order of a column's steps, on every backend: after them the value is converted into the
#: target column's type, then a required column's NULL is rejected.
COLUMN_STEPS = ("clean", "crosswalk", "convert_unit", "cast", "timezone", "default")


class ColumnSpec(_Model):
    """How one target column is computed from the source row.

    Exactly one of ``source`` (a source column), ``expr`` (a whitelisted expression) or
    ``value`` (a constant). Then the steps it names, in the order of COLUMN_STEPS. ``required``
    sends a row whose result is NULL to quarantine.
    """

    target: Identifier
    source: Identifier | None = None
    expr: str | None = None
    value: Scalar | None = None
    clean: list[Clean] = Field(default_factory=list)
    crosswalk: Identifier | CrosswalkRef | None = None
    convert_unit: UnitConversion | None = None
    cast: Cast | None = None
    timezone: TimezoneRule | None = None
    default: Scalar | None = None
    required: bool = False
    delta: DeltaSpec | None = None

    @model_validator(mode="after")
    def _one_input(self) -> ColumnSpec:
        given = [k for k in ("source", "expr", "value") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"column {self.target!r}: give exactly one of source, expr, value (got {given or 'none'})"
            )
        if self.expr is not None:
            try:
                parse_expression(self.expr)
            except ExpressionError as exc:
                raise ValueError(str(exc)) from None
        return self

    def steps(self) -> list[str]:
        """The steps this column takes, in the order every backend applies them."""
        return [s for s in COLUMN_STEPS if getattr(self, s) not in (None, [])]

    def source_columns(self) -> frozenset[str]:
        """Source columns this column reads, the unit column included."""
        cols: set[str] = set()
        if self.source is not None:
            cols.add(self.source)
        if self.expr is not None:
            cols |= parse_expression(self.expr).columns
        if self.convert_unit is not None:
            cols.add(self.convert_unit.unit_column)
        return frozenset(cols)


class ParentSpec(_Model):
    """A row waits in quarantine until its parent exists on the target."""

    column: Identifier
    table: TableName
    key: Identifier


class DeleteSpec(_Model):
    """How a row that disappeared from the source is reflected on the target.

    ``detect: keyset`` compares the source's keys with the target's (within ``scope``) every
    ``every`` (nightly by default) or on a full refresh; ``action`` says what happens to target
    rows whose key the source no longer has.
    """

    detect: Literal["none", "keyset"] = "none"
    action: Literal["status", "soft_delete", "delete"] = "soft_delete"
    column: Identifier | None = None
    value: Scalar | None = None
    every: Duration = timedelta(hours=24)
    #: Target rows this flow owns, e.g. ``{plant_code: [SH01]}``; empty means the whole table.
    scope: dict[Identifier, Scalar | list[Scalar]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _action_needs_column(self) -> DeleteSpec:
        if self.detect == "none":
            return self
        if self.action in ("status", "soft_delete") and self.column is None:
            raise ValueError(f"action {self.action!r} needs 'column'")
        if self.action == "status" and self.value is None:
            raise ValueError("action 'status' needs 'value' (e.g. CANCELLED)")
        return self


class LinesSource(_Model):
    """Where the lines of each document are read: the same connection as the header."""

    table: TableName
    #: Column of the line naming its header, e.g. ``order_no``.
    parent_column: Identifier
    #: Column of the header source table that ``parent_column`` refers to.
    header_column: Identifier
    where: dict[Identifier, Scalar | list[Scalar]] = Field(default_factory=dict)


class LinesTarget(_Model):
    table: TableName
    #: Column of the line that receives the header's generated id.
    header_id_column: Identifier


def _mapped_once(columns: list[ColumnSpec], key: list[str]) -> list[str]:
    """The target columns, each mapped once, the key among them; ValueError otherwise."""
    targets = [c.target for c in columns]
    dupes = sorted({t for t in targets if targets.count(t) > 1})
    if dupes:
        raise ValueError(f"target columns mapped twice: {', '.join(dupes)}")
    missing = [k for k in key if k not in targets]
    if missing:
        raise ValueError(f"key columns not among the mapped columns: {', '.join(missing)}")
    return targets


class LinesSpec(_Model):
    """Line rows written with their header in the same transaction, all or nothing per document."""

    source: LinesSource
    target: LinesTarget
    #: Natural key of a line within its document, as target column names.
    key: list[Identifier] = Field(min_length=1)
    columns: list[ColumnSpec] = Field(min_length=1)
    #: Target lines of a document this run loads whose key the source no longer has: keep
    #: them, or delete them (for products whose lines may be deleted while the document is a draft).
    missing: Literal["keep", "delete"] = "keep"

    @model_validator(mode="after")
    def _consistent(self) -> LinesSpec:
        targets = _mapped_once(self.columns, self.key)
        if self.target.header_id_column in targets:
            raise ValueError(f"target.header_id_column: {self.target.header_id_column!r} is filled from the header; do not map it")
        if any(c.delta is not None for c in self.columns):
            raise ValueError("columns: delta is not supported on lines")
        return self

    def source_columns(self) -> list[str]:
        cols: set[str] = {self.source.parent_column}
        for spec in self.columns:
            cols |= spec.source_columns()
        return sorted(cols)


class LoadSpec(_Model):
    #: upsert: insert or update by key. append: insert new keys only, never update.
    #: snapshot_replace: upsert, then delete target rows (within scope) the source no longer has.
    mode: Literal["upsert", "append", "snapshot_replace"] = "upsert"
    chunk_size: int = Field(default=5000, ge=1, le=1_000_000)
    #: Where the column rules run. auto: in the target database when the target is PostgreSQL
    #: and every rule has an exact SQL twin; else in process (DuckDB over Arrow chunks) when
    #: every rule has an exact DuckDB twin; else in Python. python / sql / in_process: force.
    transform: Literal["auto", "python", "sql", "in_process"] = "auto"
    #: How staged rows find their target row. unique_key: the target has a primary key or unique
    #: index on the flow's key (one INSERT ... ON CONFLICT / MERGE). natural_key: it need not;
    #: UPDATE ... FROM staging on the key, then INSERT ... WHERE NOT EXISTS, made safe by the
    #: flow's lock (for product tables whose own id is generated).
    match: Literal["unique_key", "natural_key"] = "unique_key"
    #: PostgreSQL targets: work_mem (MB) for the run's own transaction when the server's is
    #: lower (SET LOCAL). The batch's joins and groupings (duplicates, checks, merge,
    #: reconciliation) stay in memory up to a few thousand rows per MB; beyond, they spill to disk.
    work_mem_mb: int = Field(default=64, ge=1, le=65536)


OnFailure = Literal["quarantine", "critical", "warning"]


class ExpectationsSpec(_Model):
    """The flow's Great Expectations suite, checked on every batch before it loads."""

    #: Suite file ``expectations/<suite>.json`` (GX's own suite JSON).
    suite: Identifier
    #: What a failing expectation does, by expectation name; wins over the suite's own setting.
    on_failure: dict[str, OnFailure] = Field(default_factory=dict)
    #: Zone of the target's naive timestamps: ``{"$PARAMETER": "now"}`` is the run's start there.
    timezone: str = "UTC"
    #: Added to ``now``: a shop-floor terminal's clock may run a little ahead of ours.
    clock_skew: Duration = timedelta(minutes=5)
    #: Further ``$PARAMETER`` values the suite refers to.
    parameters: dict[Identifier, Scalar] = Field(default_factory=dict)

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (IANA name, e.g. Asia/Shanghai)") from None
        return value


_CHANNEL = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def check_mqtt_topic(value: str) -> str:
    """Return ``value`` if it is an MQTT topic filter: ``+`` a whole level, ``#`` only the last."""
    if not isinstance(value, str) or not value or len(value.encode()) > 65535 or "\x00" in value:
        raise ValueError(f"{value!r} is not an MQTT topic")
    levels = value.split("/")
    for i, level in enumerate(levels):
        if ("+" in level and level != "+") or ("#" in level and (level != "#" or i != len(levels) - 1)):
            raise ValueError(f"{value!r}: '+' must stand for a whole level and '#' only for the last one")
    return value


class PostgresNotify(_Model):
    """A PostgreSQL ``LISTEN`` channel the MES (or the trigger in sql/events/) notifies on commit."""

    #: The database to listen on; the flow's source connection when not given.
    connection: str | None = None
    channel: str

    @field_validator("connection")
    @classmethod
    def _connection_id(cls, value: str | None) -> str | None:
        return None if value is None else check_connection_id(value)

    @field_validator("channel")
    @classmethod
    def _channel(cls, value: str) -> str:
        if not isinstance(value, str) or not _CHANNEL.fullmatch(value):
            raise ValueError(f"{value!r} is not a channel name (lower case, digits, underscore)")
        return value


class MqttTopic(_Model):
    """An MQTT topic the MES publishes on; host, port, user and password come from the connection
    (``mqtt://user:password@host:1883``)."""

    connection: str
    topic: Annotated[str, BeforeValidator(check_mqtt_topic)]
    #: 1 (at least once) with a persistent session: the broker keeps what arrives while the
    #: listener is away. 0 loses those; 2 costs a round trip more and buys nothing here.
    qos: Literal[0, 1, 2] = 1
    #: The session's name at the broker; the same name across restarts is what keeps the session.
    client_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")

    @field_validator("connection")
    @classmethod
    def _connection_id(cls, value: str) -> str:
        return check_connection_id(value)


class RedisChannel(_Model):
    """A Redis pub/sub channel (not supported yet: refused on load)."""

    connection: str
    channel: str


class TriggerSource(_Model):
    """Where the event that wakes a flow comes from: exactly one of the kinds."""

    postgres_notify: PostgresNotify | None = None
    mqtt: MqttTopic | None = None
    redis: RedisChannel | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> TriggerSource:
        given = [k for k in ("postgres_notify", "mqtt", "redis") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of postgres_notify, mqtt, redis (got {', '.join(given) or 'none'})")
        if self.redis is not None:
            raise ValueError("redis: not supported yet: use postgres_notify or mqtt")
        return self

    @property
    def kind(self) -> str:
        return "postgres_notify" if self.postgres_notify is not None else "mqtt"


class TriggerSpec(_Model):
    """Events that wake a run within seconds. An event carries no data: the run reads from the
    watermark as always, so a lost, doubled or late event loses or doubles no row. The flow's
    schedule stays as the sweep that catches what no event announced."""

    on: TriggerSource

    @model_validator(mode="before")
    @classmethod
    def _on_as_written(cls, data: Any) -> Any:
        # YAML 1.1 reads a bare ``on:`` key as the boolean true; the file means the word.
        if isinstance(data, dict) and True in data and "on" not in data:
            data = {("on" if k is True else k): v for k, v in data.items()}
        return data


class Flow(_Model):
    """One flow: a source table mapped onto a target table."""

    flow: str
    description: str = ""
    direction: Direction
    tags: list[str] = Field(default_factory=list)
    schedule: str | None = None
    #: Whether the flow's Airflow DAG starts paused when it first appears; unset: the project's.
    paused_on_create: bool | None = None
    depends_on: list[str] = Field(default_factory=list)
    source: SourceSpec
    target: TargetSpec
    #: Natural key, as target column names.
    key: list[Identifier] = Field(min_length=1)
    cursor: CursorSpec | None = None
    load: LoadSpec = LoadSpec()
    deletes: DeleteSpec = DeleteSpec()
    parents: list[ParentSpec] = Field(default_factory=list)
    columns: list[ColumnSpec] = Field(min_length=1)
    lines: LinesSpec | None = None
    expectations: ExpectationsSpec | None = None
    #: Events that wake the flow between its scheduled runs (``python -m etl watch``, Airflow).
    trigger: TriggerSpec | None = None
    #: File the flow was read from; set by the loader, not written in YAML.
    file: str = Field(default="", exclude=True)

    @field_validator("flow")
    @classmethod
    def _flow_name(cls, value: str) -> str:
        if not _FLOW_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a flow name (lower case, digits, underscore)")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Flow:
        targets = _mapped_once(self.columns, self.key)
        if self.source.files is not None:
            self._check_file_source()
        for parent in self.parents:
            if parent.column not in targets:
                raise ValueError(f"parents: column {parent.column!r} is not a mapped column")
        self._check_load_options(targets)
        for col in self.columns:
            if isinstance(col.crosswalk, str) and self.direction == "warehouse":
                raise ValueError(
                    f"column {col.target!r}: warehouse flows must say the crosswalk direction "
                    "({name: ..., to: erp|mes})"
                )
        return self

    def _check_file_source(self) -> None:
        """What a flow reading files cannot have: each file is read whole once, so there is no
        cursor, and a file holds its own rows, not the source's whole set."""
        if self.cursor is not None:
            raise ValueError("cursor: a file source has no cursor: each file is read whole, once")
        if self.deletes.detect == "keyset" or self.load.mode == "snapshot_replace":
            raise ValueError("deletes: not supported yet with a file source: a file holds its own rows, not the source's whole set")
        if self.lines is not None:
            raise ValueError("lines: not supported yet with a file source")

    def _check_load_options(self, targets: list[str]) -> None:
        """Generated keys, document numbers, delta postings and lines fit together. Each
        message starts with the key path it is about."""
        generated = self.target.generated_key
        number = self.target.document_number
        if generated is not None and generated in targets:
            raise ValueError(f"target.generated_key: {generated!r} is generated by the target; do not map it")
        if generated is not None and generated in self.key:
            raise ValueError(f"target.generated_key: {generated!r} cannot be part of the natural key")
        if number is not None:
            if number.column in targets:
                raise ValueError(f"target.document_number.column: {number.column!r} is allocated; do not map it")
            if self.load.match != "natural_key":
                raise ValueError("target.document_number: needs load.match: natural_key")
        deltas = [(i, c) for i, c in enumerate(self.columns) if c.delta is not None]
        if len(deltas) > 1:
            raise ValueError(f"columns[{deltas[1][0]}].delta: at most one delta column per flow")
        for i, col in deltas:
            assert col.delta is not None
            if col.target in self.key:
                raise ValueError(f"columns[{i}].delta: a delta column cannot be part of the key")
            unknown = [g for g in col.delta.group_by if g not in targets]
            if unknown:
                raise ValueError(f"columns[{i}].delta.group_by: not mapped: {', '.join(unknown)}")
            if self.load.mode == "snapshot_replace" or self.lines is not None:
                raise ValueError(f"columns[{i}].delta: needs load.mode upsert or append, and no lines")
        if self.source.api is not None:
            unsupported = [
                name for name, used in (("lines", self.lines is not None), ("cursor.skip_loaded", self.skips_loaded)) if used
            ]
            if unsupported:
                raise ValueError(f"source.api: not supported yet with {', '.join(unsupported)} (they read a source table)")
        if self.target.api is not None:
            unsupported = [
                name for name, used in (
                    ("target.generated_key", generated is not None), ("target.document_number", number is not None),
                    ("lines", self.lines is not None), ("columns[].delta", bool(deltas)),
                    ("load.mode other than upsert", self.load.mode != "upsert"),
                ) if used
            ]
            if unsupported:
                raise ValueError(f"target.api: not supported yet with {', '.join(unsupported)}")
        if self.target.files is not None:
            unsupported = [
                name for name, used in (
                    ("target.api", self.target.api is not None),
                    ("target.generated_key", generated is not None), ("target.document_number", number is not None),
                    ("lines", self.lines is not None), ("columns[].delta", bool(deltas)),
                    ("load.mode other than upsert", self.load.mode != "upsert"),
                ) if used
            ]
            if unsupported:
                raise ValueError(f"target.files: not supported yet with {', '.join(unsupported)}")
        if self.lines is not None:
            if generated is None:
                raise ValueError("lines: need target.generated_key, the header column the lines point at")
            if self.load.transform in ("sql", "in_process"):
                raise ValueError(f"lines: run on the Python path; remove load.transform: {self.load.transform}")

    def trigger_connection(self) -> str | None:
        """The connection the flow's event listener uses, or None for a flow without a trigger."""
        if self.trigger is None:
            return None
        on = self.trigger.on
        if on.postgres_notify is not None:
            return on.postgres_notify.connection or self.source.connection
        return on.mqtt.connection if on.mqtt is not None else None

    @property
    def column_map(self) -> dict[str, ColumnSpec]:
        return {c.target: c for c in self.columns}

    @property
    def skips_loaded(self) -> bool:
        """Whether incremental runs set aside the lookback's rows the last run loaded."""
        return self.cursor is not None and self.cursor.skip_loaded

    def source_key_columns(self) -> list[str]:
        """Source columns that determine the natural key, in a stable order."""
        cols: set[str] = set()
        for spec in self.columns:
            if spec.target in self.key:
                cols |= spec.source_columns() - (
                    {spec.convert_unit.unit_column} if spec.convert_unit else set()
                )
        return sorted(cols)

    def source_columns(self) -> list[str]:
        """Every source column the flow reads, in a stable order."""
        cols: set[str] = set()
        for spec in self.columns:
            cols |= spec.source_columns()
        if self.cursor is not None:
            cols.add(self.cursor.column)
        if self.lines is not None:
            cols.add(self.lines.source.header_column)
        if self.source.files is not None:
            cols |= set(PLACE_COLUMNS)
        return sorted(cols)

    def crosswalk_side(self, spec: ColumnSpec) -> tuple[str, Side] | None:
        """The crosswalk a column uses and the side it translates to."""
        if spec.crosswalk is None:
            return None
        if isinstance(spec.crosswalk, CrosswalkRef):
            return spec.crosswalk.name, spec.crosswalk.to
        return spec.crosswalk, ("mes" if self.direction == "erp_to_mes" else "erp")

    def crosswalks_used(self) -> set[str]:
        """Names of every crosswalk a run of this flow may translate with."""
        columns = [*self.columns, *(self.lines.columns if self.lines is not None else [])]
        names = {name for col in columns for name, _ in crosswalks_used(self, col)}
        if self.direction == "mes_to_erp" and self.source.plant_column is not None:
            names.add("plant")  # --plants are ERP codes, translated for an MES source
        return names

    def unit_side(self) -> Side:
        return "mes" if self.direction == "erp_to_mes" else "erp"

    @property
    def schedule_group(self) -> str:
        return "master_data" if "master_data" in self.tags else self.direction


_EMAIL = re.compile(r"^[^@\s,;<>]+@[^@\s,;<>]+$")


class ReportSettings(_Model):
    """The ``report:`` section of mappings/defaults.yaml: who gets the data-quality report and
    the failure alerts, and through which Airflow SMTP connection. Addresses only: the server,
    login and password live in that connection (e.g. ``AIRFLOW_CONN_SMTP_DEFAULT``)."""

    #: Nobody listed means the report is only written to a file and no alert is sent.
    recipients: list[str] = Field(default_factory=list)
    smtp_connection: str = "smtp_default"
    #: The From address; empty means the connection's ``from_email`` extra.
    sender: str | None = None
    #: A flow is stale when its last success is older than this many schedule intervals.
    stale_after_intervals: float = Field(default=2.0, gt=0)
    #: Days of history in each flow's trend chart.
    trend_days: int = Field(default=14, ge=1, le=90)
    #: A row waiting in quarantine only for its parent (not on the target yet: the source has not
    #: released it) is an expected wait, not an action, for up to this many days.
    expected_wait_days: int = Field(default=14, ge=1)
    #: Source keys listed under each quarantine reason, oldest first, so the reader can act from
    #: the mail alone; 0 lists none.
    keys_per_reason: int = Field(default=10, ge=0, le=1000)
    #: Where Great Expectations Data Docs are built (a folder that gets index.html, relative to
    #: the repository or absolute; GX's own project goes beside it).
    data_docs: str | None = None
    #: Where recipients reach that folder (a web server's URL, ending in the folder): the report
    #: links ``<data_docs_url>/index.html`` only when it is set; a local file is no link for them.
    data_docs_url: str | None = None

    @field_validator("recipients")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        bad = [v for v in value if not _EMAIL.fullmatch(v)]
        if bad:
            raise ValueError(f"not an email address: {', '.join(repr(b) for b in bad)}")
        return value

    @field_validator("sender")
    @classmethod
    def _sender(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.fullmatch(value):
            raise ValueError(f"not an email address: {value!r}")
        return value

    @field_validator("smtp_connection")
    @classmethod
    def _connection_id(cls, value: str) -> str:
        return check_connection_id(value)


class Defaults(_Model):
    """mappings/defaults.yaml: values every flow inherits unless it sets its own."""

    schedules: dict[str, str] = Field(default_factory=dict)
    load: dict[str, Any] = Field(default_factory=dict)
    cursor: dict[str, Any] = Field(default_factory=dict)
    #: Released quarantine entries (their payloads are business data) are purged after this many days.
    quarantine_retention_days: int | None = Field(default=None, ge=1)
    #: New flow DAGs start paused: a flow writes into a production system only once a person
    #: has unpaused it. A flow file's own ``paused_on_create`` overrides this.
    paused_on_create: bool = True
    report: ReportSettings = ReportSettings()


class Tolerance(_Model):
    """How far the two sides may differ: within when ``|erp - mes| <= max(absolute, relative * |erp|)``."""

    absolute: float = Field(default=0.0, ge=0)
    #: A fraction of the ERP value: 0.03 is 3 %.
    relative: float = Field(default=0.0, ge=0)


class ReconciliationQuery(_Model):
    """One side of a business reconciliation: a read-only query on one connection returning the
    key columns and a numeric ``value`` column."""

    connection: str
    sql: str = Field(min_length=1)

    @field_validator("connection")
    @classmethod
    def _connection_id(cls, value: str) -> str:
        return check_connection_id(value)

    @field_validator("sql")
    @classmethod
    def _one_select(cls, value: str) -> str:
        problem = read_only_problem(value)
        if problem is not None:
            raise ValueError(f"refused: {problem}")
        return value


class BusinessReconciliation(_Model):
    """A business check across the systems: ERP figures against MES figures, key by key."""

    name: str
    description: str = ""
    #: Columns both queries return that identify a line (e.g. order_no, material_no).
    key: list[Identifier] = Field(min_length=1)
    #: What the value means and its unit, for the report.
    value: str = "value"
    erp: ReconciliationQuery
    mes: ReconciliationQuery
    tolerance: Tolerance = Tolerance()

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _FLOW_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a reconciliation name (lower case, digits, underscore)")
        return value


class ReconciliationFile(_Model):
    """mappings/reconciliations.yaml."""

    reconciliations: list[BusinessReconciliation] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> ReconciliationFile:
        names = [r.name for r in self.reconciliations]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"reconciliation names used twice: {', '.join(dupes)}")
        return self


class Project(_Model):
    """Everything under mappings/: the flows, in dependency order, and the defaults."""

    flows: dict[str, Flow]
    defaults: Defaults
    mappings_dir: str
    expectations_dir: str = ""
    #: Business reconciliations from mappings/reconciliations.yaml (none if the file is absent).
    reconciliations: list[BusinessReconciliation] = Field(default_factory=list)

    def flow(self, name: str) -> Flow:
        try:
            return self.flows[name]
        except KeyError:
            raise ConfigError(
                [ConfigProblem(self.mappings_dir, "", f"no flow named {name!r}; flows: {', '.join(self.flows)}")]
            ) from None

    def schedule_of(self, flow: Flow) -> str | None:
        return flow.schedule or self.defaults.schedules.get(flow.schedule_group)

    def paused_on_create(self, flow: Flow) -> bool:
        """Whether the flow's DAG starts paused: the flow's own setting, else the project's."""
        return self.defaults.paused_on_create if flow.paused_on_create is None else flow.paused_on_create


def _loc_to_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif str(part).startswith("function-") or part in ("str", "CrosswalkRef", "list[...]"):
            continue
        else:
            out += ("." if out else "") + str(part)
    return out


def _model_at(model: type[BaseModel], loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The model class that holds the key at the end of ``loc`` (for 'did you mean')."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int) or not (isinstance(current, type) and issubclass(current, BaseModel)):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        current = _first_model(field.annotation)
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _first_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _first_model(arg)
        if found is not None:
            return found
    return None


def unknown_key_message(model: type[BaseModel], loc: tuple[Any, ...]) -> str:
    holder = _model_at(model, loc)
    if holder is None:
        return "unknown key"
    allowed = [f.alias or name for name, f in holder.model_fields.items() if name != "file"]
    close = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    return f"unknown key ({hint}expected one of: {', '.join(allowed)})"


def problems_from_validation(file: str, exc: ValidationError, model: type[BaseModel]) -> list[ConfigProblem]:
    problems = []
    for err in exc.errors():
        path = _loc_to_path(err["loc"])
        if err["type"] == "extra_forbidden":
            message = unknown_key_message(model, err["loc"])
        elif err["type"] == "missing":
            message = "required key is missing"
        else:
            message = err["msg"].removeprefix("Value error, ")
        problems.append(ConfigProblem(file, path, message))
    # A union of str and model reports one error per branch; keep the clearest per path.
    seen: dict[str, ConfigProblem] = {}
    for problem in problems:
        seen.setdefault(problem.path, problem)
    return list(seen.values())


class UniqueKeyLoader(yaml.SafeLoader):
    """The safe loader, refusing a key given twice in one mapping (plain YAML keeps the last,
    so a second ``source:`` or ``depends_on:`` would silently replace the first). Keys merged
    in with ``<<:`` may still be overridden: that is what a merge is for."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            first_line: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen = first_line.get(key)
                except TypeError:  # an unhashable key: the constructor reports it
                    continue
                if seen is not None:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first given on line {seen})", key_node.start_mark,
                    )
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path, rel: str) -> tuple[Any, list[ConfigProblem]]:
    """Parse a YAML file with :class:`UniqueKeyLoader`; problems carry file, line and column."""
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh, Loader=UniqueKeyLoader), []  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        reason = getattr(exc, "problem", None) or str(exc)
        return None, [ConfigProblem(rel, where, reason if reason.startswith("duplicate key") else f"malformed YAML: {reason}")]
    except UnicodeDecodeError as exc:
        return None, [ConfigProblem(rel, "", f"not UTF-8 text: {exc}")]


RECONCILIATIONS_FILE = "reconciliations.yaml"


def crosswalks_used(flow: Flow, col: ColumnSpec) -> list[tuple[str, str]]:
    used = []
    side = flow.crosswalk_side(col)
    if side:
        used.append((side[0], "crosswalk"))
    if col.convert_unit:
        used.append((col.convert_unit.crosswalk, "convert_unit.crosswalk"))
    return used
