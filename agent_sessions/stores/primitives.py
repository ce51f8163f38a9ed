"""The typed vocabulary a backend speaks: the small dataclasses of the `SessionStore` primitives.

A backend never sees a `Session`: `SessionStore` hands it a `SessionWrite` (the record bytes, new
`HistoryRow`s, `ScopeChange`s) and gets back a `StoredSession`; `erase_user` answers with an
`ErasureReport`, and `restore_many` takes `Restore` items. `raise_conflict` is the one message a
lost compare-and-set carries. All of them are re-exported by `agent_sessions.stores.base`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .. import records
from ..errors import SessionConflict
from ..ids import id_hash
from ..session import Session

__all__ = [
    "ErasureReport",
    "HistoryRow",
    "Restore",
    "ScopeChange",
    "ScopeChanges",
    "SessionWrite",
    "StoredSession",
    "raise_conflict",
]


@dataclass(slots=True)
class HistoryRow:
    """One encoded history entry; `seq` numbers a session's entries from 1, never reused.

    `text` is its searchable text (`search.entry_text`, computed from the decoded entry), kept
    beside the row by backends that search ("" on those that do not)."""

    seq: int
    timestamp: float
    type: str
    payload: bytes
    text: str = ""


@dataclass(slots=True)
class StoredSession:
    """What a backend returns for one session.

    `last_accessed_at` / `expiry_at` are the backend's columns and win over the record's copy
    (touches update only the columns). `history` is the recent window, oldest to newest.
    `user_scope` / `app_scope` are the scope rows (key -> encoded value); a backend that lists
    sessions in bulk may leave them empty and set `scopes_loaded=False`.
    """

    session_id: str
    user_id: str | None
    version: int
    last_accessed_at: float
    expiry_at: float | None
    record: bytes
    history: list[bytes]
    history_seq: int
    user_scope: dict[str, bytes] = field(default_factory=dict)
    app_scope: dict[str, bytes] = field(default_factory=dict)
    scopes_loaded: bool = True


@dataclass(slots=True)
class ScopeChange:
    """Per-key changes to one scope: `kind` "user" (owner = user id) or "app" (owner "")."""

    kind: Literal["user", "app"]
    owner: str
    sets: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.sets or self.deletes)


class ScopeChanges:
    """The user and app scope changes of one save or direct scope write, routed by key
    (`records.scope_of`: ``user:``/``pref:`` keys need `user_id`, else `ScopeError`)."""

    def __init__(self, user_id: str | None) -> None:
        self.user_id = user_id
        self.user = ScopeChange("user", user_id or "")
        self.app = ScopeChange("app", "")

    def route(self, key: str) -> ScopeChange:
        """The change `key` belongs to."""
        return self.app if records.scope_of(key, self.user_id) == "app" else self.user


@dataclass(slots=True)
class SessionWrite:
    """One compare-and-set save.

    `expected_version == 0` means insert: fail with `SessionConflict` if the id exists.
    Otherwise update only if the stored version equals `expected_version` and the session is
    live at `now`: a missing or expired session raises `SessionNotFound` (a save never
    resurrects), a different version raises `SessionConflict`. On success the stored version
    is `new_version`, `history` rows are appended, rows with ``seq <= history_seq - max_history``
    dropped, and the scope changes applied (atomically with the record where the backend can).
    """

    session_id: str
    user_id: str | None
    previous_user_id: str | None
    expected_version: int
    new_version: int
    created_at: float
    last_accessed_at: float
    expiry_at: float | None
    record: bytes
    history: list[HistoryRow]
    history_seq: int
    max_history: int
    user_scope: ScopeChange | None = None
    app_scope: ScopeChange | None = None
    #: This save's id, first in the record's write lineage (`Baseline.writes`) once it lands.
    write_id: str = ""


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """What erasing one user removed (all zero when nothing was left: erasing is idempotent).

    `sessions` (expired ones not yet cleaned up included), their `history_entries`, the
    `scope_keys` of the user scope (``user:`` keys and ``pref:`` preferences), and the
    `conversations` the registered session-data holders deleted (`SessionManager.erase_user`).
    """

    sessions: int = 0
    history_entries: int = 0
    scope_keys: int = 0
    conversations: int = 0


@dataclass(slots=True)
class Restore:
    """One session to `SessionStore.restore_many`: as exported, with its full history."""

    session: Session
    history: list[dict[str, Any]]
    history_seq: int | None = None


def raise_conflict(session_id: str) -> SessionConflict:
    """The `SessionConflict` a backend raises when a compare-and-set loses."""
    return SessionConflict(
        f"session {id_hash(session_id)} was saved by someone else since it was loaded; reload and retry"
    )
