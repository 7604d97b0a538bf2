"""Document numbers from a product's own number series, for new rows only.

Products name their documents from a counter row (Odoo ``ir_sequence.number_next`` for no-gap
series, ERPNext ``tabSeries.current``) or from a database sequence (Odoo's standard series).
A run draws once, as many numbers as staged rows the target does not hold yet, inside the run's
transaction. A counter row is advanced by one UPDATE whose row lock makes the product's own
users wait instead of drawing the same numbers, and a rollback gives the numbers back. A rerun
finds its rows by natural key, so no number is drawn twice.
"""

from __future__ import annotations

from sqlalchemy import Connection, Table, and_, exists, func, inspect, not_, select, update

from etl.config.flows import DocumentNumber, Flow
from etl.core.errors import SchemaDriftError
from etl.core.rows import SEQ
from etl.dialects import dialect_for
from etl.sync import staged_rows
from etl.sync.schema import reflect_table


def new_row_seqs(conn: Connection, staging: Table, target: Table, key: list[str]) -> list[int]:
    """Staging sequence numbers of rows whose natural key the target lacks, in source order."""
    stg = staging.c
    match = and_(*[target.c[k] == stg[k] for k in key])
    query = select(stg[SEQ]).where(not_(exists(select(1).select_from(target).where(match)))).order_by(stg[SEQ])
    return list(conn.execute(query).scalars())


def check_series(conn: Connection, flow: Flow) -> None:
    """Make sure the flow's number series is there before the run writes anything: the database
    sequence exists, or the counter table has the key and counter columns and exactly one row
    matches the key. Raises SchemaDriftError naming the flow's file and the key to fix."""
    spec = flow.target.document_number
    if spec is None:
        return
    where = f"{flow.file}: flow {flow.flow!r}: target.document_number"
    if spec.database_sequence is not None:
        if not conn.dialect.supports_sequences:
            raise SchemaDriftError(
                f"{where}.database_sequence: database sequences are not available on {conn.dialect.name}; "
                "use a counter row (sequence:)"
            )
        schema, _, name = spec.database_sequence.rpartition(".")
        found = inspect(conn).has_sequence(name, schema=schema or None)
        if not found:
            raise SchemaDriftError(
                f"{where}.database_sequence: the target database has no sequence {spec.database_sequence!r}"
                f"{_sequences_hint(conn, schema or None)}"
            )
        return
    sequence = spec.sequence
    assert sequence is not None
    table = reflect_table(conn, sequence.table, role="document number sequence", flow=flow)
    missing = [c for c in [*sequence.key, sequence.counter] if c not in table.c]
    if missing:
        raise SchemaDriftError(
            f"{where}.sequence: {sequence.table} has no column {', '.join(missing)} "
            f"(its columns: {', '.join(table.c.keys())})"
        )
    row = and_(*[table.c[name] == value for name, value in sequence.key.items()])
    matched = int(conn.execute(select(func.count()).select_from(table).where(row)).scalar_one())
    if matched != 1:
        raise SchemaDriftError(
            f"{where}.sequence.key: {matched} rows of {sequence.table} match {dict(sequence.key)}; exactly one must"
        )


def _sequences_hint(conn: Connection, schema: str | None) -> str:
    try:
        names = sorted(inspect(conn).get_sequence_names(schema=schema))
    except NotImplementedError:
        return ""
    if not names:
        return " (it has none)"
    shown = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "")
    return f" (its sequences: {shown})"


def reserve(conn: Connection, flow: Flow, spec: DocumentNumber, count: int) -> list[int]:
    """Draw ``count`` numbers, in ascending order, from the flow's series.

    Raises SchemaDriftError naming the flow when not exactly one counter row matches.
    """
    if spec.database_sequence is not None:
        # A database sequence is not transactional: a failed run leaves a gap, as the product's own would.
        return sorted(dialect_for(conn).next_values(conn, spec.database_sequence, count))
    sequence = spec.sequence
    assert sequence is not None
    table = reflect_table(conn, sequence.table, role="document number sequence", flow=flow)
    row = and_(*[table.c[name] == value for name, value in sequence.key.items()])
    counter = table.c[sequence.counter]
    # UPDATE first, read after: the row lock is ours before the value is read.
    matched = conn.execute(update(table).where(row).values({sequence.counter: counter + count})).rowcount
    if matched != 1:
        raise SchemaDriftError(
            f"{flow.file}: flow {flow.flow!r}: target.document_number.sequence: {matched} rows of "
            f"{sequence.table} match {dict(sequence.key)}; exactly one must"
        )
    value = int(conn.execute(select(counter).where(row)).scalar_one())
    first = value - count if sequence.holds == "next" else value - count + 1
    return list(range(first, first + count))


def allocate(conn: Connection, flow: Flow, staging: Table, target: Table) -> int:
    """Write a document number into each staged row new to the target; returns how many."""
    spec = flow.target.document_number
    if spec is None:
        return 0
    seqs = new_row_seqs(conn, staging, target, list(flow.key))
    if not seqs:
        return 0
    numbers = reserve(conn, flow, spec, len(seqs))
    staged_rows.rewrite(conn, staging, spec.column, {s: spec.format.format(n=n) for s, n in zip(seqs, numbers, strict=True)})
    return len(seqs)
