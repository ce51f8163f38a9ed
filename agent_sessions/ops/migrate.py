"""Copy every live session, its full history and all scope data from one store to another,
and the conversations of the conversation stores beside them (`migrate`'s `conversations`).

Works between any two backends (memory, SQLite, PostgreSQL, Redis): it only uses the public
`SessionStore` API. Sessions are written in batches (`SessionStore.restore_many`: one round trip
or statement per batch where the backend can), each one atomic insert, so a migration interrupted
part-way leaves every session either fully copied or absent; running it again resumes it
(sessions already there are skipped, or refreshed if the source has a newer version).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from ..lifecycle import ExportableDataHolder, FullyExportableDataHolder, can_export, can_export_all
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
#: Conversations handed to the destination holder per `import_items` call.
_ITEM_BATCH = 100


async def migrate(
    src: SessionStore,
    dst: SessionStore,
    *,
    batch_size: int = 500,
    on_conflict: OnConflict = "newer",
    on_corrupt: OnCorrupt = "raise",
    progress: Progress | None = None,
    conversations: Sequence[tuple[FullyExportableDataHolder, ExportableDataHolder]] = (),
) -> TransferReport:
    """Copy sessions (with `version` and full history) and scopes from `src` to `dst`, then
    for each ``(source, destination)`` pair of data holders in `conversations` (the
    conversation stores beside `src` and `dst`), everything the source keeps.

    Reads `src` in batches of `batch_size` and writes `dst` in batches of as many sessions (at
    most 500, fewer when their histories are long). Expiry is preserved: a session keeps its
    `expiry_at`, and one already expired on `dst`'s clock is not written (counted as
    `expired`). `on_conflict` (default ``"newer"``) decides about ids already in `dst`; with
    ``"newer"`` or ``"skip"`` a re-run after an interruption is idempotent. A corrupt record in
    `src` stops the migration, or with ``on_corrupt="skip"`` is logged and left behind.
    `progress` is called with the running counts after every session (once its batch is written).
    Conversations are written under the same `on_conflict` policy, each in one atomic write
    (counted in the report's `conversations`, `conversations_replaced`, `conversations_skipped`),
    after the sessions. `on_corrupt` covers sessions only: a conversation the source cannot give
    whole (`SerializationError`) stops the migration there; fix or delete it and run it again
    (with ``"newer"`` or ``"skip"`` what was copied is kept).
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be > 0")
    policy = check_on_conflict(on_conflict)
    for pair in conversations:
        if not (len(pair) == 2 and can_export_all(pair[0]) and can_export(pair[1])):
            raise TypeError(
                "conversations takes (source, destination) pairs of conversation stores: the source able to "
                "export everything it keeps (FullyExportableDataHolder), the destination to import "
                "(ExportableDataHolder)"
            )
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
    for source, destination in conversations:
        await _copy_items(source, destination, policy, report)
    logger.info(
        "migrated %d sessions (%d replaced, %d skipped, %d expired), %d scope keys, %d history entries, "
        "%d conversations (%d replaced, %d skipped)",
        report.imported,
        report.replaced,
        report.skipped,
        report.expired,
        report.scopes,
        report.history_entries,
        report.conversations,
        report.conversations_replaced,
        report.conversations_skipped,
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


async def _copy_items(
    source: FullyExportableDataHolder, destination: ExportableDataHolder, policy: OnConflict, report: TransferReport
) -> None:
    """Everything `source` keeps into `destination`, `_ITEM_BATCH` items per `import_items` call."""
    batch: list[dict[str, Any]] = []
    items = source.export_all()
    while True:
        item = await anext(items, None)
        if item is not None:
            batch.append(item)
        if batch and (item is None or len(batch) >= _ITEM_BATCH):
            done = await destination.import_items(batch, policy)
            report.conversations += done.imported
            report.conversations_replaced += done.replaced
            report.conversations_skipped += done.skipped
            batch = []
        if item is None:
            return


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
