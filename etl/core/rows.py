"""What a staged row carries besides its columns, and a row that cannot be loaded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

SEQ = "_seq"

SOURCE_KEY = "_source_key"

RETRY = "_retry"
#: Source keys are stored in quarantine and compared with staged ones: one bounded length.
SOURCE_KEY_LENGTH = 512


@dataclass(frozen=True)
class Reject:
    """A source row that cannot be loaded, and why."""

    source_key: str
    payload: dict[str, Any]
    reason: str


def is_null(value: Any) -> bool:
    return value is None or value is pd.NA or value is pd.NaT or (isinstance(value, float) and value != value)


def frame_from_rows(rows: Sequence[Sequence[Any]], columns: list[str]) -> pd.DataFrame:
    """A DataFrame of plain Python values (object dtype): no float NaN for NULL integers,
    no float for decimals, no pandas Timestamp for datetimes."""
    data = {name: pd.Series([row[i] for row in rows], dtype=object) for i, name in enumerate(columns)}
    return pd.DataFrame(data, columns=columns)
