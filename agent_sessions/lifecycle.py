"""One user's data, whole: erase it (`erase_user`) or export it (`export_user`).

`erase_user` removes, through the store's per-user index (never a scan), every session of the
user with its history, index and expiry entries, and the user scope (``user:`` keys and
``pref:`` preferences): `SessionStore.erase_user`, one primitive per backend. Then each
registered `SessionDataHolder` (the SQL and Redis conversation stores) deletes what it keeps
for those sessions. It is idempotent (a second call reports zeros) and safe while the user's
sessions are being saved: when it returns, nothing of theirs written before the call remains,
and a deleted session never comes back (a save of it raises `SessionNotFound` and writes
nothing). A session *created* (or bound to the user) while it runs, and what such a session or
a conversation turn writes meanwhile, may remain: it was written after the call started.

`export_user` writes the user's live sessions (full history) and user scope in the backup
format of `agent_sessions.ops.export_sessions` (same writer), and what each holder that can
export (`ExportableDataHolder`: the SQL and Redis conversation stores) keeps for the user: the
conversations `erase_user` would remove, one ``conversation`` line each. `import_sessions` of the
file into an empty store (with an empty conversation store as its holder) gives back the user's
data. A registered holder that cannot export is named in the report (`not_exported`) and logged.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard, TypeVar, runtime_checkable

from .ids import id_hash, validate_user_id
from .session import Session
from .stores.base import SessionStore
from .stores.primitives import ErasureReport

if TYPE_CHECKING:
    from .ops.backup import ExportReport

__all__ = [
    "ErasureReport",
    "ExportableDataHolder",
    "FullyExportableDataHolder",
    "ImportedItems",
    "SessionDataHolder",
    "can_export",
    "can_export_all",
    "erase_user",
    "export_user",
    "holder_name",
    "holders_implementing",
]

logger = logging.getLogger(__name__)

_Holder = TypeVar("_Holder", bound="SessionDataHolder")


@runtime_checkable
class SessionDataHolder(Protocol):
    """Something that keeps data for sessions outside the session store (a conversation store).

    Register it with `SessionManager.register_data_holder` (or pass it to
    `agent_sessions.ops.erase_user`): erasing a user then calls `erase_sessions`.
    """

    async def erase_sessions(self, user_id: str, session_ids: Sequence[str]) -> int:
        """Delete what is kept for the user `user_id` and for these sessions of theirs (the
        ones live when the erase started; data kept under `user_id` covers the others).
        Returns how many items (conversations) it removed; idempotent."""
        ...


@dataclass(slots=True)
class ImportedItems:
    """What `ExportableDataHolder.import_items` did with the items it was given: `imported`
    were new, `replaced` overwrote the holder's copy, `skipped` were kept as the holder had them."""

    imported: int = 0
    replaced: int = 0
    skipped: int = 0


@runtime_checkable
class ExportableDataHolder(SessionDataHolder, Protocol):
    """A `SessionDataHolder` that can also export what it keeps for a user, and import it back
    (the SQL and Redis conversation stores): `export_user` writes its items into the export
    file, `import_sessions` hands them back to the first such holder it is given."""

    def export_sessions(self, user_id: str, session_ids: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
        """Yield, as JSON-safe dicts, everything `erase_sessions(user_id, session_ids)` would
        remove (for a conversation store: one item per conversation, with its record and its
        entries, oldest first), in a form `import_items` writes back exactly."""
        ...

    async def import_items(
        self, items: Sequence[dict[str, Any]], on_conflict: str, *, dry_run: bool = False
    ) -> ImportedItems:
        """Write back items `export_sessions` yielded. `on_conflict` is the import's policy
        (``"skip"``, ``"overwrite"``, ``"newer"``, ``"error"``) for an item the holder already
        has; with `dry_run`, nothing is written and the counts say what would be. Raises
        `InvalidExportItem` (a `SerializationError`; `import_sessions` reports it as a
        `BackupFormatError` at the item's line) for an item that is not one `export_sessions`
        could have yielded, before writing anything of it."""
        ...


@runtime_checkable
class FullyExportableDataHolder(ExportableDataHolder, Protocol):
    """An `ExportableDataHolder` that can also export everything it keeps, whoever it belongs
    to (the SQL and Redis conversation stores): a whole-store `export_sessions` writes its
    items, and `migrate` copies them into the destination's holder."""

    def export_all(self) -> AsyncIterator[dict[str, Any]]:
        """Yield every item the holder keeps, in the form of `export_sessions` (each item once
        if it is kept throughout the export), reading the backend page by page."""
        ...


def can_export(holder: SessionDataHolder) -> TypeGuard[ExportableDataHolder]:
    """Whether `holder` can export one user's data (`export_user`)."""
    return isinstance(holder, ExportableDataHolder)


def can_export_all(holder: SessionDataHolder) -> TypeGuard[FullyExportableDataHolder]:
    """Whether `holder` can export everything it keeps (`export_sessions`, `migrate`)."""
    return isinstance(holder, FullyExportableDataHolder)


def holders_implementing(
    holders: Iterable[SessionDataHolder], accepts: Callable[[SessionDataHolder], TypeGuard[_Holder]], doing: str
) -> tuple[list[_Holder], list[str]]:
    """The holders of `holders` that `accepts` (`can_export`, `can_export_all`: what `doing`
    can write), and the names of the others, each logged as a warning: what they keep is not
    written."""
    found: list[_Holder] = []
    others: list[str] = []
    for holder in holders:
        if accepts(holder):
            found.append(holder)
        else:
            others.append(holder_name(holder))
            logger.warning(
                "%s: the data holder %s cannot export it: what it keeps is not in the file", doing, others[-1]
            )
    return found, others


def holder_name(holder: object) -> str:
    """How reports and logs name a data holder: its class name."""
    return type(holder).__name__


async def erase_user(store: SessionStore, user_id: str, holders: Iterable[SessionDataHolder] = ()) -> ErasureReport:
    """Erase everything `store` and `holders` keep about `user_id` (see the module docstring).

    Raises `InvalidUserId` before any I/O, `StoreUnavailable` if the store fails (nothing is
    half-deleted per session; calling it again finishes the job).
    """
    uid = validate_user_id(user_id)
    now = store.clock()
    session_ids = await store.user_session_ids(uid, now)  # for the holders: the store forgets them
    report = await store.erase_user(uid, now)
    conversations = 0
    for holder in holders:
        conversations += await holder.erase_sessions(uid, session_ids)
    report = replace(report, conversations=conversations)
    logger.info(
        "erased user %s: %d sessions, %d history entries, %d scope keys, %d conversations",
        id_hash(uid),
        report.sessions,
        report.history_entries,
        report.scope_keys,
        report.conversations,
    )
    return report


async def export_user(
    store: SessionStore,
    user_id: str,
    path: str | os.PathLike[str],
    *,
    include_auth: bool = False,
    compress: bool | None = None,
    holders: Iterable[SessionDataHolder] = (),
) -> ExportReport:
    """Write the user's live sessions (with their full history) and user scope to `path`, in
    the format of `export_sessions` (gzip when `path` ends in ``.gz``; mode 0o600; `auth_info`
    only with ``include_auth=True``), and the items of each of `holders` that can export (the
    user's conversations). A holder that cannot export is named in the report's
    `not_exported` and logged as a warning. Raises `InvalidUserId` before any I/O."""
    from .ops.backup import write_export  # ops imports this module (`ops.erase_user`)

    uid = validate_user_id(user_id)
    exporting, not_exported = holders_implementing(holders, can_export, f"export of user {id_hash(uid)}")
    session_ids = await store.user_session_ids(uid, store.clock()) if exporting else []
    scope = (await store.load_scopes(uid)).user

    async def scopes() -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        if scope:
            yield "user", uid, scope

    async def sessions() -> AsyncIterator[Session]:
        for session in sorted(await store.get_user_sessions(uid), key=lambda s: (s.created_at, s.session_id)):
            yield session

    async def conversations() -> AsyncIterator[dict[str, Any]]:
        for holder in exporting:
            async for item in holder.export_sessions(uid, session_ids):
                yield item

    report = await write_export(
        store, path, scopes(), sessions(), conversations=conversations(), include_auth=include_auth, compress=compress
    )
    report.not_exported = not_exported
    return report
