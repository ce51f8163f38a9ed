"""What export, import and migration share: reading a session's full history, writing one
session or one scope into a destination store under a conflict policy, and the running report.

A session is written with a single `SessionStore.restore` (one atomic insert on every backend),
so an interrupted transfer leaves each session either fully copied or absent: re-running it
skips or refreshes what is already there.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, assert_never

from ..errors import SessionConflict, SessionNotFound
from ..ids import id_hash
from ..session import APP_PREFIX, TEMP_PREFIX, USER_PREFIX, Session
from ..stores.base import DEFAULT_MAX_HISTORY, DEFAULT_MAX_SESSION_BYTES, SessionStore

__all__ = [
    "LINE_NESTING",
    "OnConflict",
    "Progress",
    "TransferReport",
    "full_history",
    "max_line_bytes",
    "restore_scope",
    "restore_session",
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
    """

    imported: int = 0
    replaced: int = 0
    skipped: int = 0
    expired: int = 0
    scopes: int = 0
    history_entries: int = 0

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
    if session.expiry_at is not None and session.expiry_at <= store.clock():
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
        existing = await store.get(session.session_id)
        # A None here is an expired row that cleanup has not removed yet; it is replaced
        # whatever the policy. A live copy: the policy decides.
        if existing is not None and _existing_outcome(session, existing, on_conflict, exc) == "skipped":
            return "skipped"
        await _replace(store, session, history, history_seq)
        return "replaced" if existing is not None else "imported"
    return "imported"


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
