"""What the command line prints and the exit codes it returns."""

from __future__ import annotations

from typing import Any

from etl.core.printable import escape_controls
from etl.sync.runner import RunResult

EXIT_FAILED = 1

EXIT_CONFIG = 2

EXIT_RETRY = 75


SUMMARY_COLUMNS = [
    ("flow", "flow"), ("direction", "direction"), ("read", "rows_read"), ("retried", "rows_retried"),
    ("loaded", "rows_loaded"), ("unchanged", "rows_unchanged"), ("quarantined", "rows_new_in_quarantine"),
    ("released", "rows_released"), ("deleted", "rows_deleted"), ("waiting", "quarantine_backlog"),
    ("seconds", "seconds"), ("outcome", "outcome"),
]


def format_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """A plain fixed-width table; numbers right-aligned."""
    cells = [[_cell(r.get(key)) for _, key in columns] for r in rows]
    widths = [max([len(title)] + [len(c[i]) for c in cells]) for i, (title, _) in enumerate(columns)]
    numeric = [all(_is_number(r.get(key)) for r in rows) and rows != [] for _, key in columns]

    def line(values: list[str]) -> str:
        return "  ".join(v.rjust(w) if n else v.ljust(w) for v, w, n in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line([t for t, _ in columns]), line(["-" * w for w in widths])]
    out += [line(c) for c in cells]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return escape_controls(str(value))  # one row per line, whatever a source value holds


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summary_row(result: RunResult) -> dict[str, Any]:
    run = result.record
    row: dict[str, Any] = {"flow": run.flow, "direction": run.direction, "outcome": run.outcome}
    row.update(vars(run.counts))
    row["seconds"] = run.duration_s or 0.0
    return row
