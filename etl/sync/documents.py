"""Header-and-lines documents: an order and its components, a receipt and its items.

The lines of every header a run stages are read from the source with it, transformed by the
flow's ``lines.columns`` and staged beside the headers. A line that cannot be loaded (a
crosswalk miss, a bad value, a line key given twice) sends its whole document to quarantine,
as one entry for the header's source row with the line's reason; a retry of that entry reads
the lines again. After the headers are merged, each staged line receives its header's
generated id (or document number) and the lines are merged by (header id, line key), in the
same transaction: a document is written whole or not at all.

Lines are read on a second read-only connection opened with the first, because a streamed
header read holds the source connection (MariaDB cannot run a second query beside it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import pandas as pd
from sqlalchemy import Column, Connection, MetaData, Table, and_, delete, exists, func, not_, select, tuple_, update

from etl.config.crosswalks import Crosswalk
from etl.config.flows import Flow, LinesSpec
from etl.core.errors import SchemaDriftError
from etl.core.rows import SOURCE_KEY, frame_from_rows, is_null
from etl.core.types import ColumnType
from etl.dialects import Dialect, dialect_for
from etl.dialects.base import LoadMode, scope_filter
from etl.rules.transform import transform
from etl.sync.schema import reflect_table
from etl.sync.staged_rows import temporary_table

_IN_BATCH = 500
_HEADER = "_header_"


def line_flow(flow: Flow) -> Flow:
    """The flow's lines as a flow of their own, for the shared transform."""
    spec = _spec(flow)
    return flow.model_copy(update={
        "columns": spec.columns, "key": spec.key, "parents": [], "cursor": None, "lines": None,
    })


def _spec(flow: Flow) -> LinesSpec:
    assert flow.lines is not None
    return flow.lines


class DocumentLines:
    """The lines of one run's documents: read, checked and staged per header chunk, merged last."""

    def __init__(
        self, flow: Flow, sconn: Connection, tconn: Connection, dialect: Dialect, header_target: Table,
        crosswalks: dict[str, Crosswalk], now: datetime | None = None,
    ):
        spec = _spec(flow)
        #: What now() gives in the lines' expressions: the run's start on the target's clock.
        self.now = now
        self.flow = flow
        self.spec = spec
        self.lines = line_flow(flow)
        self.crosswalks = crosswalks
        self.dialect = dialect
        self.header_target = header_target
        assert sconn.engine is not None
        self.read_conn = sconn.engine.connect()
        self.read_conn.begin()
        dialect_for(self.read_conn).begin_read(self.read_conn)
        self.source = reflect_table(self.read_conn, spec.source.table, role="lines source", flow=flow)
        self.target = reflect_table(tconn, spec.target.table, role="lines target", flow=flow)
        self._check_columns()
        self.types: dict[str, ColumnType] = dialect.target_types(tconn, self.target)
        self.columns = [spec.target.header_id_column] + [c.target for c in spec.columns]
        self.header_keys = {k: f"{_HEADER}{k}" for k in flow.key}
        shape = Table(
            "lines", MetaData(),
            *[Column(name, header_target.c[k].type) for k, name in self.header_keys.items()],
            *[Column(c, self.target.c[c].type) for c in self.columns],
        )
        self.staging = dialect.create_staging(tconn, shape, [*self.header_keys.values(), *self.columns], f"{flow.flow}_lines")
        self.seq = 0

    def _check_columns(self) -> None:
        wanted = [(self.source, c) for c in self.spec.source_columns() + list(self.spec.source.where)]
        wanted += [(self.target, c) for c in [self.spec.target.header_id_column] + [c.target for c in self.spec.columns]]
        missing = [f"{t.name}.{c}" for t, c in wanted if c not in t.c]
        if missing:
            raise SchemaDriftError(
                f"{self.flow.file}: flow {self.flow.flow!r}: lines: columns not found: {', '.join(missing)}"
            )

    def _read(self, parents: list[Any]) -> pd.DataFrame:
        columns = self.spec.source_columns()
        parent = self.source.c[self.spec.source.parent_column]
        filters = scope_filter(self.source, dict(self.spec.source.where))
        rows: list[Any] = []
        for start in range(0, len(parents), _IN_BATCH):
            stmt = select(*[self.source.c[c] for c in columns]).where(parent.in_(parents[start:start + _IN_BATCH]))
            if filters is not None:
                stmt = stmt.where(filters)
            rows += self.read_conn.execute(stmt.order_by(parent, *[self.source.c[c] for c in columns])).all()
        return frame_from_rows(rows, columns)

    def stage_for(self, conn: Connection, frame: pd.DataFrame, headers: pd.DataFrame) -> dict[Any, str]:
        """Read, transform and stage the lines of ``headers`` (transformed rows indexed like the
        source ``frame``); return index label -> reason for each header whose lines fail."""
        if headers.empty:
            return {}
        header_column = self.spec.source.header_column
        labels_of: dict[Any, list[Any]] = {}
        for label in headers.index:
            value = frame.at[label, header_column]
            if not is_null(value):
                labels_of.setdefault(value, []).append(label)
        lines = self._read(list(labels_of))
        out = transform(lines, self.lines, self.crosswalks, self.types, self.now)
        failed: dict[Any, str] = {}
        parent_column = self.spec.source.parent_column
        for reject in out.rejects:
            failed.setdefault(reject.payload[parent_column], f"line {reject.source_key}: {reject.reason}")
        rows = out.rows.assign(**{_HEADER: lines.loc[out.rows.index, parent_column]})
        for parent, key in self._repeated_keys(rows):
            failed.setdefault(parent, f"line key ({key}) appears more than once in the document")
        rows = rows[~rows[_HEADER].isin(list(failed))]
        problems = {
            label: f"document not loaded: {reason}"
            for parent, reason in failed.items() for label in labels_of.get(parent, [])
        }
        self._stage(conn, headers.drop(index=list(problems)), rows, labels_of)
        return problems

    def _repeated_keys(self, rows: pd.DataFrame) -> list[tuple[Any, str]]:
        key = list(self.spec.key)
        repeated = rows[rows.duplicated(subset=[_HEADER, *key], keep=False)]
        return [
            (parent, ", ".join(f"{k}={v}" for k, v in zip(key, values, strict=True)))
            for parent, *values in repeated[[_HEADER, *key]].drop_duplicates().itertuples(index=False, name=None)
        ]

    def _stage(self, conn: Connection, headers: pd.DataFrame, rows: pd.DataFrame, labels_of: dict[Any, list[Any]]) -> None:
        header_of = {parent: labels[-1] for parent, labels in labels_of.items()}
        staged = pd.DataFrame(index=rows.index)
        for key, name in self.header_keys.items():
            values: list[Any] = [headers.at[header_of[p], key] if header_of[p] in headers.index else None for p in rows[_HEADER]]
            staged[name] = values
        staged = staged.dropna(subset=list(self.header_keys.values()))
        staged[self.spec.target.header_id_column] = None
        for column in self.columns[1:]:
            staged[column] = rows.loc[staged.index, column]
        staged[SOURCE_KEY] = rows.loc[staged.index, SOURCE_KEY]
        # The same document read again (a quarantine retry after a fresh read) replaces its lines.
        self._forget(conn, headers)
        self.dialect.stage(conn, self.staging, staged.astype(object), self.seq, False)
        self.seq += len(staged)

    def _forget(self, conn: Connection, headers: pd.DataFrame) -> None:
        stg = self.staging.c
        keys = list(self.header_keys)
        values = list(headers[keys].itertuples(index=False, name=None))
        for start in range(0, len(values), _IN_BATCH):
            batch = values[start:start + _IN_BATCH]
            if len(keys) == 1:
                match = stg[self.header_keys[keys[0]]].in_([v[0] for v in batch])
            else:
                match = tuple_(*[stg[self.header_keys[k]] for k in keys]).in_(batch)
            conn.execute(delete(self.staging).where(match))

    def merge(self, conn: Connection, header_staging: Table) -> tuple[int, int]:
        """Merge the staged lines of the headers still staged; returns (lines inserted or
        changed, lines deleted because the source no longer has them)."""
        stg = self.staging.c
        hdr = header_staging.c
        same_header = and_(*[hdr[k] == stg[name] for k, name in self.header_keys.items()])
        # Headers quarantined after their lines were staged (missing parent, duplicate key).
        conn.execute(delete(self.staging).where(not_(exists(select(1).select_from(header_staging).where(same_header)))))
        self._point_at_headers(conn, header_staging)
        key = [self.spec.target.header_id_column, *self.spec.key]
        mode: LoadMode = "append" if self.flow.load.mode == "append" else "upsert"
        written = self.dialect.merge_by_natural_key(conn, self.staging, self.target, key, self.columns, mode)
        deleted = self._delete_missing(conn, header_staging, key) if self.spec.missing == "delete" else 0
        return written, deleted

    def _point_at_headers(self, conn: Connection, header_staging: Table) -> None:
        """Give each staged line its header's generated id, for the headers of this run.

        The ids are collected once into a temporary table keyed by the header key, then joined:
        a lookup in the target per line cost a scan of the target per line where its key has no
        index (a product table's natural key often has none).
        """
        target = self.header_target
        generated = self.flow.target.generated_key
        assert generated is not None
        header_id = self.spec.target.header_id_column
        ids = temporary_table(conn, f"{self.staging.name}_ids", [
            *[Column(name, target.c[k].type, primary_key=True, autoincrement=False) for k, name in self.header_keys.items()],
            Column(header_id, self.target.c[header_id].type, nullable=True),
        ])
        keys = [target.c[k] for k in self.header_keys]
        staged = exists(select(1).select_from(header_staging).where(and_(*[target.c[k] == header_staging.c[k] for k in self.header_keys])))
        # min(): a product table without a unique index may hold a key twice; point at the oldest.
        found = select(*keys, func.min(target.c[generated])).where(staged).group_by(*keys)
        conn.execute(ids.insert().from_select([*self.header_keys.values(), header_id], found))
        stg = self.staging.c
        pointed = select(ids.c[header_id]).where(and_(*[ids.c[name] == stg[name] for name in self.header_keys.values()]))
        # Every staged line, as the lookup in the target did: the statement and the order it
        # rewrites staging in stay the same, so the lines' own ids come out as before.
        conn.execute(update(self.staging).values({header_id: pointed.scalar_subquery()}))
        self.dialect.drop_staging(conn, ids)

    def _delete_missing(self, conn: Connection, header_staging: Table, key: list[str]) -> int:
        """Delete target lines of this run's documents whose key no staged line has."""
        target = self.header_target
        generated = self.flow.target.generated_key
        assert generated is not None
        documents = select(target.c[generated]).select_from(
            target.join(header_staging, and_(*[target.c[k] == header_staging.c[k] for k in self.flow.key]))
        )
        lines = self.target.c
        staged = exists(select(1).select_from(self.staging).where(and_(*[self.staging.c[k] == lines[k] for k in key])))
        stmt = delete(self.target).where(lines[self.spec.target.header_id_column].in_(documents), not_(staged))
        return conn.execute(stmt).rowcount or 0

    def drop_staging(self, conn: Connection) -> None:
        self.dialect.drop_staging(conn, self.staging)

    def close_reader(self) -> None:
        """End the lines' read-only source connection (after success or failure)."""
        self.read_conn.close()
