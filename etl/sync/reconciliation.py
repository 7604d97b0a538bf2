"""Every run proves its own counts before it commits.

Two checks, both recorded in ``etl_check`` with the run:
- ``rows_balance``: every row read (fresh or retried from quarantine) is either staged or
  quarantined while staging, and every staged row ends loaded, unchanged, quarantined by an
  expectation, a key conflict or a negative delta posting, or skipped as a copy of another row.
- ``target_matches_batch``: after the merge, every staged row's natural key is on the target
  and, unless the flow only appends, the target row holds exactly the staged values. This is
  the key-and-value comparison of the window against the source (after mapping), done in the
  target database with one join.
A mismatch raises ReconciliationFailed: the run's transaction rolls back, nothing is committed.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, Table, and_, case, func, or_, select
from sqlalchemy.sql.elements import ColumnElement

from etl.core.rows import SEQ, SOURCE_KEY
from etl.sync.ledger import CheckResult

KIND = "reconciliation"
SAMPLE_KEYS = 10


@dataclass(frozen=True)
class RowTally:
    """Where each row of one run went."""

    read: int
    retried: int
    quarantined_while_staging: int
    staged: int
    key_conflicts: int
    quarantined_by_expectations: int
    skipped_copies: int
    loaded: int
    unchanged: int
    #: Delta postings whose cumulative value went down (etl.sync.postings).
    quarantined_as_negative_deltas: int = 0
    #: Rows the lookback read again at the cursor value the last run loaded (cursor.skip_loaded).
    set_aside: int = 0
    #: Records a web API target refused (etl.sync.api_sink), quarantined with its answer.
    refused_by_api: int = 0


def rows_balance(t: RowTally) -> CheckResult:
    took_in = t.read + t.retried
    staged_ok = t.quarantined_while_staging + t.set_aside + t.staged == took_in
    ended = (
        t.key_conflicts + t.quarantined_by_expectations + t.quarantined_as_negative_deltas
        + t.refused_by_api + t.skipped_copies + t.loaded + t.unchanged
    )
    ended_ok = ended == t.staged and min(t.skipped_copies, t.unchanged) >= 0
    detail = (
        f"read {took_in} (fresh {t.read}, from quarantine {t.retried}) = quarantined while staging "
        f"{t.quarantined_while_staging} + "
        + (f"loaded by the last run at the same cursor value {t.set_aside} + " if t.set_aside else "")
        + f"staged {t.staged}; staged {t.staged} = loaded {t.loaded} + "
        f"unchanged {t.unchanged} + quarantined by expectations {t.quarantined_by_expectations} + key "
        f"conflicts {t.key_conflicts} + copies of another row {t.skipped_copies}"
        + (f" + negative deltas {t.quarantined_as_negative_deltas}" if t.quarantined_as_negative_deltas else "")
        + (f" + refused by the API {t.refused_by_api}" if t.refused_by_api else "")
    )
    failed = abs(took_in - t.quarantined_while_staging - t.set_aside - t.staged) + abs(t.staged - ended)
    if not ended_ok and failed == 0:
        failed = 1
    return CheckResult(
        kind=KIND, name="rows_balance", action="critical", rows_checked=took_in,
        rows_failed=failed, success=staged_ok and ended_ok, detail=detail,
    )


def target_matches_batch(
    conn: Connection, staging: Table, target: Table, key: list[str], columns: list[str], compare_values: bool,
) -> CheckResult:
    """Staged rows missing from the target, or (with ``compare_values``) differing from it."""
    stg = staging.c
    match = and_(*[target.c[k] == stg[k] for k in key])
    nonkey = [c for c in columns if c not in key]
    # An outer join, so the database can hash both sides once instead of probing per row.
    bad: ColumnElement[bool] = target.c[key[0]].is_(None)
    if compare_values and nonkey:
        bad = or_(bad, *[target.c[c].is_distinct_from(stg[c]) for c in nonkey])
    joined = staging.outerjoin(target, match)
    checked, failed = conn.execute(
        select(func.count(), func.coalesce(func.sum(case((bad, 1), else_=0)), 0)).select_from(joined)
    ).one()
    samples: list[str] = []
    if failed:
        samples = list(
            conn.execute(
                select(stg[SOURCE_KEY]).select_from(joined).where(bad).order_by(stg[SEQ]).limit(SAMPLE_KEYS)
            ).scalars()
        )
    what = "keys and values" if compare_values and nonkey else "keys"
    return CheckResult(
        kind=KIND, name="target_matches_batch", action="critical", rows_checked=int(checked),
        rows_failed=int(failed), success=int(failed) == 0, sample_keys=samples,
        detail=f"{what} of {int(checked)} staged rows compared with {target.name}: {int(failed)} missing or different",
    )
