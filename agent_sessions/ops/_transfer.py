"""What export, import and migration share: reading a session's full history, writing one
session or one scope into a destination store under a conflict policy, and the running report.

Sessions are written in batches with `SessionStore.restore_many` (one round trip or statement
per batch where the backend can; each session one atomic insert), and the ids that already
existed then go through the conflict policy one by one. An interrupted transfer leaves each
session either fully copied or absent: re-running it skips or refreshes what is already there.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, assert_never

from ..errors import AgentSessionsError, SessionConflict, SessionNotFound, StoreUnavailable
from ..ids import id_hash
from ..session import APP_PREFIX, TEMP_PREFIX, USER_PREFIX, Session
from ..stores.base import DEFAULT_MAX_HISTORY, DEFAULT_MAX_SESSION_BYTES, SessionStore
from ..stores.primitives import Restore

__all__ = [
    "LINE_NESTING",
    "OnConflict",
    "Progress",
    "TransferReport",
    "full_history",
    "max_line_bytes",
    "restore_scope",
    "restore_session",
    "restore_sessions",
]

logger = logging.getLogger(__name__)

#: What to do when a session id (or scope key) already exists in the destination.
#:
#: - ``"skip"``: keep what the destination has;
#: - ``"overwrite"``: replace it with the incoming copy;
#: - ``"newer"``: replace a session only if the incoming copy is newer (higher `version`, then
#:   later `last_accessed_at`); scope keys carry no version, so existing ones are kept;
#: - ``"error"``: raise `SessionConflict` (sessions transferred before it stay).
OnConflict = Literal["skip", "overwrite", "newer", "error"]
ON_CONFLICT_CHOICES: tuple[OnConflict, ...] = ("skip", "overwrite", "newer", "error")

Outcome = Literal["imported", "replaced", "skipped", "expired"]

HISTORY_PAGE = 500
#: Sessions per `restore_many` call in import and migration.
RESTORE_BATCH = 500
_REPLACE_ATTEMPTS = 5
#: Room per encoded value in an export line for what wraps it (keys, punctuation).
_LINE_SLACK = 4096
#: How many levels an export line wraps a value in: a history entry's data sits in the line,
#: its `history` list, the entry and its `data` dict (a state value in three, a scope value two).
LINE_NESTING = 4


def max_line_bytes(store: SessionStore | None = None) -> int:
    """The longest export line `store` (None: a store with the default limits) could accept: a
    session record and a full history, or a whole scope, each at most the store's limit.
    Longer lines are refused unread."""
    session_bytes = DEFAULT_MAX_SESSION_BYTES if store is None else store.max_session_bytes
    history = DEFAULT_MAX_HISTORY if store is None else store.max_history
    scope_bytes = session_bytes if store is None else store.max_scope_bytes
    return max((history + 1) * (session_bytes + _LINE_SLACK), scope_bytes + _LINE_SLACK)


@dataclass(slots=True)
class TransferReport:
    """Running counts of an import or a migration (passed to `progress` callbacks as it grows).

    `imported` sessions were new in the destination, `replaced` overwrote an existing copy,
    `skipped` already existed and were kept, `expired` had expired and were not written.
    Conversations (lines of an export file, or a migration's) count apart: `conversations` were new,
    `conversations_replaced` overwrote a copy, `conversations_skipped` were not written: kept
    as the destination had them, or, when `conversations_skipped_reason` says so, because no
    data holder that can import them was given.
    """

    imported: int = 0
    replaced: int = 0
    skipped: int = 0
    expired: int = 0
    scopes: int = 0
    history_entries: int = 0
    conversations: int = 0
    conversations_replaced: int = 0
    conversations_skipped: int = 0
    conversations_skipped_reason: str | None = None

    @property
    def conversations_seen(self) -> int:
        """Every conversation line read, whatever happened to it."""
        return self.conversations + self.conversations_replaced + self.conversations_skipped

    @property
    def sessions_seen(self) -> int:
        """Every session read from the source, whatever happened to it."""
        return self.imported + self.replaced + self.skipped + self.expired

    def count(self, outcome: Outcome, history_entries: int) -> None:
        if outcome == "imported":
            self.imported += 1
        elif outcome == "replaced":
            self.replaced += 1
        elif outcome == "skipped":
            self.skipped += 1
        elif outcome == "expired":
            self.expired += 1
        else:
            assert_never(outcome)
        if outcome in ("imported", "replaced"):
            self.history_entries += history_entries


Progress = Callable[[TransferReport], None]


def check_on_conflict(value: str) -> OnConflict:
    """Validate a conflict policy given as a string (raises `ValueError`)."""
    for choice in ON_CONFLICT_CHOICES:
        if value == choice:
            return choice
    raise ValueError(f"on_conflict must be one of {', '.join(ON_CONFLICT_CHOICES)}; got {value!r}")


def session_payload(session: Session, *, include_auth: bool) -> dict[str, Any]:
    """The session's own fields for transfer: no history, no shared-scope or `temp:` keys."""
    data = session.model_dump(exclude={"history"})
    data["state"] = {k: v for k, v in session.state.items() if not k.startswith((USER_PREFIX, APP_PREFIX, TEMP_PREFIX))}
    data["auth_info"] = session.auth_info if include_auth else None
    data["history_seq"] = session.history_seq
    return data


async def full_history(store: SessionStore, session: Session) -> list[dict[str, Any]]:
    """Every stored history entry of `session`, oldest first (paged; bounded by `max_history`)."""
    window = session.history
    if len(window) < store.history_window:
        # The recent window is not full, so it already holds every stored entry.
        return list(window)
    pages: list[list[dict[str, Any]]] = []
    before: int | None = None
    while True:
        page = await store.get_history(session.session_id, limit=HISTORY_PAGE, before=before)
        pages.append(page.entries)
        if page.next_before is None:
            break
        before = page.next_before
    return [entry for page_entries in reversed(pages) for entry in page_entries]


def _incoming_is_newer(incoming: Session, existing: Session) -> bool:
    return (incoming.version, incoming.last_accessed_at) > (existing.version, existing.last_accessed_at)


def _existing_outcome(
    session: Session, existing: Session, on_conflict: OnConflict, cause: BaseException | None = None
) -> Literal["skipped", "replace"]:
    """What `on_conflict` does with `session` when the destination holds a live `existing` copy."""
    if on_conflict == "skip":
        return "skipped"
    if on_conflict == "error":
        raise SessionConflict(
            f"session {id_hash(session.session_id)} already exists in the destination "
            "(on_conflict='error'); use 'skip', 'newer' or 'overwrite'"
        ) from cause
    if on_conflict == "newer" and not _incoming_is_newer(session, existing):
        return "skipped"
    return "replace"


async def restore_session(
    store: SessionStore,
    session: Session,
    history: list[dict[str, Any]],
    history_seq: int,
    on_conflict: OnConflict,
    *,
    dry_run: bool = False,
) -> Outcome:
    """Write one session (record, version, full history) into `store` under `on_conflict`.

    Encoding and size checks run inside `restore` before anything is written, so a session
    that cannot be stored raises without touching an existing copy. With `dry_run`, nothing is
    written: the outcome is what a real run would report now (``"error"`` still raises).
    """
    if _expired(session, store.clock()):
        return "expired"
    if dry_run:
        existing = await store.get(session.session_id)
        if existing is None:
            return "imported"
        return "skipped" if _existing_outcome(session, existing, on_conflict) == "skipped" else "replaced"
    try:
        await store.restore(session, history, history_seq=history_seq)
    except SessionNotFound:
        return "expired"  # expired between the check above and the write
    except SessionConflict as exc:
        return await _restore_over_existing(store, session, history, history_seq, on_conflict, exc)
    return "imported"


async def _restore_over_existing(
    store: SessionStore,
    session: Session,
    history: list[dict[str, Any]],
    history_seq: int,
    on_conflict: OnConflict,
    cause: BaseException | None,
) -> Outcome:
    """`session` could not be inserted because its id exists in `store`: apply the policy."""
    existing = await store.get(session.session_id)
    # A None here is an expired row that cleanup has not removed yet; it is replaced whatever
    # the policy. A live copy: the policy decides.
    if existing is not None and _existing_outcome(session, existing, on_conflict, cause) == "skipped":
        return "skipped"
    await _replace(store, session, history, history_seq)
    return "replaced" if existing is not None else "imported"


async def restore_sessions(
    store: SessionStore, items: Sequence[Restore], on_conflict: OnConflict, *, dry_run: bool = False
) -> AsyncIterator[Outcome]:
    """`restore_session` for a batch: yields each item's outcome, in order.

    Live items go to `store` in one `restore_many` call; those whose id existed then get the
    policy one by one, exactly as `restore_session` gives it. The outcomes are those
    `restore_session` would give item by item, and an error is raised at the item that causes
    it, after the outcomes of the items before it: an item the store refuses (encoding, size,
    a race with expiry) makes the batch fall back to one `restore_session` per item, so the
    items before it are stored and the ones after it are not. `StoreUnavailable` from the
    batched write is raised before any outcome (which items landed is unknown; a re-run with
    ``"skip"`` or ``"newer"`` completes them). Under ``"error"`` the batch is cut before the
    first id the store already holds, so nothing after it is written (unless another writer
    creates an id of the batch while it is being written).
    """
    if dry_run:
        for item in items:
            yield await restore_session(store, *_parts(item), on_conflict, dry_run=True)
        return
    now = store.clock()
    # An id met again in the batch conflicts with its first copy: it waits for the bulk write.
    seen: set[str] = set()
    repeats: set[int] = set()
    for i, item in enumerate(items):
        if item.session.session_id in seen:
            repeats.add(i)
        seen.add(item.session.session_id)
    live = [i for i, item in enumerate(items) if i not in repeats and not _expired(item.session, now)]
    # Items from `end` on are restored one by one (under "error": from the first held id).
    end = len(items)
    if on_conflict == "error" and live:
        held = {s.session_id for s in await store.load_records([items[i].session.session_id for i in live], now)}
        end = min([i for i in live if items[i].session.session_id in held] + list(repeats) + [end])
        live = [i for i in live if i < end]
    try:
        inserted = dict(zip(live, await store.restore_many([items[i] for i in live]), strict=True))
    except StoreUnavailable:
        raise
    except AgentSessionsError:
        # Nothing of the batch was written: find the bad item the way a one-by-one run would.
        for item in items:
            yield await restore_session(store, *_parts(item), on_conflict)
        return
    for i, item in enumerate(items):
        if i >= end or i in repeats:
            yield await restore_session(store, *_parts(item), on_conflict)
        elif i not in inserted:
            yield "expired"
        elif inserted[i]:
            yield "imported"
        else:
            yield await _restore_over_existing(store, *_parts(item), on_conflict, None)


def _expired(session: Session, now: float) -> bool:
    return session.expiry_at is not None and session.expiry_at <= now


def _parts(item: Restore) -> tuple[Session, list[dict[str, Any]], int]:
    seq = len(item.history) if item.history_seq is None else item.history_seq
    return item.session, item.history, seq


async def _replace(store: SessionStore, session: Session, history: list[dict[str, Any]], history_seq: int) -> None:
    # Delete then insert; a writer re-creating the id in between makes the insert conflict, and
    # the replacement is tried again rather than silently dropped.
    for _ in range(_REPLACE_ATTEMPTS):
        await store.delete(session.session_id)
        try:
            await store.restore(session, history, history_seq=history_seq)
        except SessionConflict:
            continue
        return
    raise SessionConflict(
        f"session {id_hash(session.session_id)} kept being re-created while it was being replaced; "
        f"gave up after {_REPLACE_ATTEMPTS} attempts"
    )


async def restore_scope(
    store: SessionStore,
    kind: Literal["user", "app"],
    owner: str,
    values: dict[str, Any],
    on_conflict: OnConflict,
    *,
    dry_run: bool = False,
) -> int:
    """Merge one scope's values into `store` key by key; returns how many keys were written.

    ``"overwrite"`` writes every key; ``"skip"`` and ``"newer"`` write only keys the destination
    lacks (scope keys have no version to compare); ``"error"`` raises `SessionConflict` if a key
    exists with a different value. With `dry_run`, the count is what would be written; nothing is.
    """
    user_id = owner if kind == "user" else None
    if on_conflict == "overwrite":
        todo = values
    else:
        existing = await store.load_scopes(user_id)
        current = existing.user if kind == "user" else existing.app
        if on_conflict == "error":
            clashing = sorted(k for k, v in values.items() if k in current and current[k] != v)
            if clashing:
                raise SessionConflict(
                    f"{kind} scope keys {clashing[:5]} already exist in the destination with other values "
                    "(on_conflict='error')"
                )
        todo = {k: v for k, v in values.items() if k not in current}
    if todo and not dry_run:
        await store.write_scopes(user_id, todo)
    return len(todo)
