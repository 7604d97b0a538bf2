"""Values decided in Python per staged row, written back into staging in a fixed number of statements.

Document numbers and delta postings are decided row by row in Python (a Python number format,
running totals in source order), but written back set-based: the decisions go into a temporary
table keyed by the staging row number (``_seq``) in one bulk insert, then one UPDATE and one
DELETE join it to staging by that key. Updating staging one row at a time cost a scan of the
whole staging table per row, which made the merge grow with the square of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Column, Connection, MetaData, SmallInteger, Table, delete, select, update
from sqlalchemy.schema import CreateTable

from etl.core.rows import SEQ
from etl.dialects import dialect_for

_DROP = "_drop"


def rewrite(conn: Connection, staging: Table, column: str, values: dict[int, Any], dropped: Sequence[int] = ()) -> None:
    """Set ``column`` of the staged rows named by their ``_seq`` in ``values``, delete the rows
    named in ``dropped``: one bulk insert, one UPDATE and one DELETE, whatever the batch size."""
    if not values and not dropped:
        return
    decided = temporary_table(conn, f"{staging.name}_by_seq", [
        Column(SEQ, BigInteger, primary_key=True, autoincrement=False),
        Column(column, staging.c[column].type, nullable=True),
        Column(_DROP, SmallInteger, nullable=False),
    ])
    records = [{SEQ: seq, column: value, _DROP: 0} for seq, value in values.items()]
    records += [{SEQ: seq, column: None, _DROP: 1} for seq in dropped]
    conn.execute(decided.insert(), records)
    stg, dec = staging.c, decided.c
    if values:
        # Correlated, not UPDATE ... FROM: SQLite before 3.33 has no UPDATE ... FROM.
        value = select(dec[column]).where(dec[SEQ] == stg[SEQ]).scalar_subquery()
        kept = select(dec[SEQ]).where(dec[_DROP] == 0)
        conn.execute(update(staging).where(stg[SEQ].in_(kept)).values({column: value}))
    if dropped:
        conn.execute(delete(staging).where(stg[SEQ].in_(select(dec[SEQ]).where(dec[_DROP] == 1))))
    dialect_for(conn).drop_staging(conn, decided)


def temporary_table(conn: Connection, name: str, columns: list[Column[Any]]) -> Table:
    """Create a session temporary table for the rest of the run, replacing one a failed run left.

    Keys are declared inside CREATE TABLE: a separate CREATE INDEX commits the transaction on
    MariaDB, even on a temporary table.
    """
    dialect = dialect_for(conn)
    table = Table(name, MetaData(), *columns, prefixes=dialect.staging_prefixes(), **dialect.staging_table_options())
    dialect.drop_staging(conn, table)
    conn.execute(CreateTable(table))
    return table
