"""Copy every live session, its full history and all scope data from one store to another.

Works between any two backends (memory, SQLite, PostgreSQL, Redis): it only uses the public
`SessionStore` API. Sessions are written in batches (`SessionStore.restore_many`: one round trip
or statement per batch where the backend can), each one atomic insert, so a migration interrupted
part-way leaves every session either fully copied or absent; running it again resumes it
(sessions already there are skipped, or refreshed if the source has a newer version).
"""

from __future__ import annotations

import logging

from ..stores.base import OnCorrupt, SessionStore
from ..stores.primitives import Restore
from ._transfer import (
    RESTORE_BATCH,
    OnConflict,
    Progress,
    TransferReport,
    check_on_conflict,
    full_history,
    restore_scope,
    restore_sessions,
)

__all__ = ["count_sessions", "migrate"]

logger = logging.getLogger(__name__)

#: A batch is also written once it holds this many history entries (full histories are held
#: until their batch is written: this keeps a migration's memory bounded whatever their length).
_BATCH_HISTORY_ENTRIES = 50_000


async def migrate(
    src: SessionStore,
    dst: SessionStore,
    *,
    batch_size: int = 500,
    on_conflict: OnConflict = "newer",
    on_corrupt: OnCorrupt = "raise",
    progress: Progress | None = None,
) -> TransferReport:
    """Copy sessions (with `version` and full history) and scopes from `src` to `dst`.

    Reads `src` in batches of `batch_size` and writes `dst` in batches of as many sessions (at
    most 500, fewer when their histories are long). Expiry is preserved: a session keeps its
    `expiry_at`, and one already expired on `dst`'s clock is not written (counted as
    `expired`). `on_conflict` (default ``"newer"``) decides about ids already in `dst`; with
    ``"newer"`` or ``"skip"`` a re-run after an interruption is idempotent. A corrupt record in
    `src` stops the migration, or with ``on_corrupt="skip"`` is logged and left behind.
    `progress` is called with the running counts after every session (once its batch is written).
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be > 0")
    policy = check_on_conflict(on_conflict)
    report = TransferReport()
    async for kind, owner, values in src.iter_scopes():
        report.scopes += await restore_scope(dst, "user" if kind == "user" else "app", owner, values, policy)
    limit = min(batch_size, RESTORE_BATCH)
    pending: list[Restore] = []
    entries = 0
    async for session in src.iter_sessions(batch_size=batch_size, on_corrupt=on_corrupt):
        history = await full_history(src, session)
        pending.append(Restore(session, history, session.history_seq))
        entries += len(history)
        if len(pending) >= limit or entries >= _BATCH_HISTORY_ENTRIES:
            await _write_batch(dst, pending, policy, report, progress)
            pending, entries = [], 0
    await _write_batch(dst, pending, policy, report, progress)
    logger.info(
        "migrated %d sessions (%d replaced, %d skipped, %d expired), %d scope keys, %d history entries",
        report.imported,
        report.replaced,
        report.skipped,
        report.expired,
        report.scopes,
        report.history_entries,
    )
    return report


async def _write_batch(
    dst: SessionStore, batch: list[Restore], policy: OnConflict, report: TransferReport, progress: Progress | None
) -> None:
    done = 0
    async for outcome in restore_sessions(dst, batch, policy):
        report.count(outcome, len(batch[done].history))
        done += 1
        if progress is not None:
            progress(report)


async def count_sessions(store: SessionStore, *, batch_size: int = 500) -> int:
    """How many live sessions `store` holds (for a progress total), streaming in batches.

    The store contract has no count, so this reads each session once through
    `SessionStore.iter_sessions` (history windows included): cheaper than the transfer it
    precedes, which also reads every session's full history. Corrupt records are counted out
    (the transfer itself stops on them or skips them, as told).
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be > 0")
    total = 0
    async for _ in store.iter_sessions(batch_size=batch_size, on_corrupt="skip"):
        total += 1
    return total
