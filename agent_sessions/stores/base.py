"""`SessionStore`: the storage contract, with the shared logic above a handful of primitives.

A backend implements the underscore primitives (`_load`, `_write`, `_delete`, `_touch`,
`_load_scopes`, `_write_scopes`, `_history_page`, `_user_session_ids`, `_scan`, `_iter_scopes`,
`_cleanup_expired`, `close`). Everything a caller uses — id validation before any I/O, strict
encoding and size limits, expiry, scopes, history numbering, change tracking — lives here, so
every backend behaves the same and the contract suite in `tests/contract/` proves it.

The primitives deal in bytes produced by the store's codec, never in `Session` objects:

- a session is one *record* (every field but `history`, with `user:`/`app:`/`temp:` state keys
  removed) plus columns the backend indexes (`user_id`, `expiry_at`, `version`, ...);
- history is append-only rows numbered by `seq` (1, 2, ... per session), stored apart from the
  record and capped at `max_history` per session;
- scope data is per-key: the `user` scope of a `user_id` holds its `user:` state keys and its
  preferences (as ``pref:<name>``), the `app` scope holds the `app:` keys.

One exception, for a backend in the same process (memory, `keeps_decoded`): it may keep the
record and history decoded, as values that are shared and never mutated. Its writes then carry
a private copy of each new history entry (`HistoryRow.entry`) and the session's new baseline
(`SessionWrite.baseline`, whose values become the kept record), its reads return them as a
`DecodedRecord` (the history window already copied), and the session built from one gets
copies. Nothing is encoded for such a
backend while size bounds prove the limits hold (`_prepare_write`); the checks are the same.
"""

from __future__ import annotations

import logging
import math
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from types import TracebackType
from typing import Any, Literal, Self

from pydantic import ValidationError

from ..codec import (
    DEFAULT_MAX_DEPTH,
    FLOAT_SIZE,
    MAX_COUNTER,
    Codec,
    JsonCodec,
    check_json,
    check_json_key,
    check_max_depth,
    clone_with_bound,
    decode_bounded,
    encode_checked,
    is_strict_json,
    json_clone,
    json_size_bound,
)
from ..errors import (
    ScopeError,
    SerializationError,
    SessionConflict,
    SessionNotFound,
    SessionTooLarge,
    StoreUnavailable,
)
from ..ids import id_hash, new_write_id, validate_session_id, validate_user_id
from ..session import (
    APP_PREFIX,
    TEMP_PREFIX,
    USER_PREFIX,
    WRITE_LINEAGE,
    Baseline,
    HistoryPage,
    PendingWrite,
    Session,
    SessionDelta,
    _construct_session,
    _delta_since,
    _mark_saved,
    _next_baseline,
    set_pending_write,
)

__all__ = [
    "DEFAULT_HISTORY_WINDOW",
    "DEFAULT_MAX_HISTORY",
    "DEFAULT_MAX_SESSION_BYTES",
    "MAX_TIMESTAMP",
    "check_timestamp",
    "DecodedRecord",
    "PREF_PREFIX",
    "HistoryRow",
    "ScopeChange",
    "ScopeData",
    "SessionStore",
    "SessionWrite",
    "StoredSession",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SESSION_BYTES = 1024 * 1024
DEFAULT_MAX_HISTORY = 1000
DEFAULT_HISTORY_WINDOW = 50
#: Preferences of a user are kept in the user scope under this key prefix.
PREF_PREFIX = "pref:"
RECORD_FORMAT = 1
RENAME_ATTEMPTS = 20

OnCorrupt = Literal["raise", "skip"]


@dataclass(slots=True)
class HistoryRow:
    """One encoded history entry; `seq` numbers a session's entries from 1, never reused."""

    seq: int
    timestamp: float
    type: str
    payload: bytes
    #: A private copy of the entry, for a backend that keeps entries decoded (else None).
    entry: dict[str, Any] | None = None
    #: `codec.clone_hint(entry)` when known (None: unknown, or the entry has no hint).
    hint: tuple[str, ...] | None = None


#: The keys of a record `_encode_record` writes.
_RECORD_KEY_SET = frozenset(
    (
        "format",
        "session_id",
        "user_id",
        "created_at",
        "last_accessed_at",
        "expiry_at",
        "state",
        "preferences",
        "auth_info",
        "ai_context",
        "feature_flags",
        "environment",
        "writes",
    )
)


@dataclass(slots=True)
class DecodedRecord:
    """A session as a backend that keeps decoded values (memory) returns it, instead of bytes.

    `baseline` is the change-tracking baseline of the save that wrote the record: its maps and
    fields hold the record's values (``preferences``, ``ai_context``, ``feature_flags``,
    ``environment``, ``auth_info``, and ``state``, which may also hold the ``user:``/``app:``
    keys the saving session saw: those live in the scope rows, so `state` is the record's own
    state, the baseline's dict itself when it has none). `created_at` is the record's. All of
    it is shared with the backend and never mutated: the session built from it gets copies,
    and takes the baseline (or its maps and fields) as its own, as it never mutates it either.
    `history` is the recent window as private copies of the backend's entries (dicts), which
    the session takes as they are.
    """

    created_at: float
    baseline: Baseline
    state: dict[str, Any]
    history: list[dict[str, Any]]


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
    #: Set (with `record` empty and `history` unused) by a backend that keeps values decoded.
    decoded: DecodedRecord | None = None


@dataclass(slots=True)
class ScopeChange:
    """Per-key changes to one scope: `kind` "user" (owner = user id) or "app" (owner "")."""

    kind: Literal["user", "app"]
    owner: str
    sets: dict[str, bytes] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.sets or self.deletes)


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
    #: The session's change-tracking baseline once this write succeeds (None for a restore).
    baseline: Baseline | None = None
    #: This save's id, first in the record's write lineage (`Baseline.writes`) once it lands.
    write_id: str = ""


@dataclass(slots=True)
class Restore:
    """One session to `SessionStore.restore_many`: as exported, with its full history."""

    session: Session
    history: list[dict[str, Any]]
    history_seq: int | None = None


@dataclass(slots=True)
class ScopeData:
    """Decoded scope values: `user` holds ``user:`` keys and ``pref:`` preferences."""

    user: dict[str, Any] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)

    @property
    def preferences(self) -> dict[str, Any]:
        n = len(PREF_PREFIX)
        return {k[n:]: v for k, v in self.user.items() if k.startswith(PREF_PREFIX)}

    @property
    def state(self) -> dict[str, Any]:
        merged = {k: v for k, v in self.user.items() if k.startswith(USER_PREFIX)}
        merged.update(self.app)
        return merged


class SessionStore(ABC):
    """Abstract session store. Backends implement the primitives; the contract lives here.

    Keyword options shared by every backend:

    - `codec`: how records are encoded (default strict `JsonCodec`; wrap with `FernetCodec`
      for encryption at rest);
    - `max_session_bytes`: the largest encoded record (and history entry) a save accepts;
    - `max_scope_bytes`: the largest a user or app scope may grow, encoded keys and values
      (default `max_session_bytes`): every new session of a user loads its whole scope;
    - `max_depth`: how deeply lists and dicts may nest in a value (a state or preference
      value, a history entry's data; default 64, at most `codec.MAX_DEPTH_LIMIT`). A deeper
      value raises `SerializationError` at save; one stored deeper reads as corrupt;
    - `max_history`: history entries kept per session (oldest dropped);
    - `history_window`: how many recent entries `get` loads into `Session.history`;
    - `clock`: the time source (inject one in tests instead of sleeping).
    """

    def __init__(
        self,
        *,
        codec: Codec | None = None,
        max_session_bytes: int = DEFAULT_MAX_SESSION_BYTES,
        max_history: int = DEFAULT_MAX_HISTORY,
        history_window: int = DEFAULT_HISTORY_WINDOW,
        clock: Callable[[], float] = time.time,
        max_depth: int = DEFAULT_MAX_DEPTH,
        max_scope_bytes: int | None = None,
    ) -> None:
        if max_session_bytes <= 0 or max_history <= 0 or history_window < 0:
            raise ValueError("max_session_bytes and max_history must be > 0, history_window >= 0")
        if max_scope_bytes is not None and max_scope_bytes <= 0:
            raise ValueError("max_scope_bytes must be > 0")
        self.codec: Codec = codec if codec is not None else JsonCodec()
        self.max_session_bytes = max_session_bytes
        self.max_scope_bytes = max_session_bytes if max_scope_bytes is None else max_scope_bytes
        self.max_depth = check_max_depth(max_depth)
        self.max_history = max_history
        self.history_window = min(history_window, max_history)
        self.clock = clock
        #: True for a backend that keeps values decoded: writes then carry private copies of
        #: new history entries (`HistoryRow.entry`) and the session's new baseline.
        self.keeps_decoded = False

    # ================================================================ backend primitives
    @abstractmethod
    async def load_record(self, session_id: str, now: float) -> StoredSession | None:
        """The session with its recent `history_window` and scopes, or None if absent/expired."""

    async def load_records(self, session_ids: list[str], now: float) -> list[StoredSession]:
        """Several sessions (absent or expired ones left out); override to batch."""
        loaded = [await self.load_record(sid, now) for sid in session_ids]
        return [s for s in loaded if s is not None]

    @abstractmethod
    async def write(self, write: SessionWrite, now: float) -> None:
        """Apply one compare-and-set save (see `SessionWrite`)."""

    async def write_many(self, writes: list[SessionWrite], now: float) -> list[bool]:
        """Apply several inserts (every `expected_version == 0`): per write, True if inserted,
        False if the id already existed (left as it was). Not atomic across the batch.

        This default writes them one by one; backends override it with one round trip or
        statement per batch (import, migration and bulk creation use it).
        """
        inserted = []
        for one in writes:
            try:
                await self.write(one, now)
            except SessionConflict:
                inserted.append(False)
            else:
                inserted.append(True)
        return inserted

    @abstractmethod
    async def delete_record(self, session_id: str) -> bool:
        """Delete the session, its history and its index entries; True if it existed."""

    @abstractmethod
    async def touch_record(self, session_id: str, last_accessed_at: float, expiry_at: float | None, now: float) -> bool:
        """Set the two columns of a live session without bumping its version; False if absent."""

    @abstractmethod
    async def scope_rows(self, user_id: str | None) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The (user scope, app scope) rows; the user scope is empty when `user_id` is None."""

    @abstractmethod
    async def write_scope_rows(self, changes: list[ScopeChange]) -> None:
        """Apply scope changes outside of a session save (import, migration)."""

    @abstractmethod
    async def iter_scope_rows(self) -> AsyncIterator[ScopeChange]:
        """Every non-empty scope as a `ScopeChange` whose `sets` hold all its rows."""
        yield ScopeChange("app", "")  # pragma: no cover - abstract

    @abstractmethod
    async def history_page(
        self, session_id: str, limit: int, before_seq: int | None, now: float
    ) -> list[tuple[int, bytes]] | None:
        """Up to `limit` newest entries with ``seq < before_seq``, ascending; None if absent."""

    @abstractmethod
    async def user_session_ids(self, user_id: str, now: float) -> list[str]:
        """Ids of the live sessions of `user_id`, from an index (never a scan)."""

    @abstractmethod
    def scan_records(self, batch_size: int, now: float) -> AsyncIterator[list[StoredSession]]:
        """Every live session in batches of about `batch_size`, streaming (never all at once)."""

    @abstractmethod
    async def delete_expired(self, now: float, batch_size: int) -> int:
        """Delete sessions expired at `now` (with history and index entries) in batches."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections. Idempotent."""

    # ================================================================ public API
    async def ping(self) -> None:
        """Check once that the store answers (`SessionManager.start` calls it, so an app on an
        unreachable store fails at startup); raises `StoreUnavailable` if it does not.

        This default reads the app scope (one cheap read); backends override it with their own
        cheapest round trip and a message naming where the store is (never a password).
        """
        await self.load_scopes(None)

    async def get(self, session_id: str) -> Session | None:
        """The live session with this id (recent history window, scopes merged), or None.

        Raises `InvalidSessionId` before any I/O, `SerializationError` for a corrupt record,
        `StoreUnavailable` when the backend cannot be reached.
        """
        return await self._get_valid(validate_session_id(session_id))

    async def _get_valid(self, sid: str) -> Session | None:
        """`get` for an id the caller has just checked with `validate_session_id` (the manager
        checks each id from outside once, not once per layer)."""
        now = self.clock()
        stored = await self.load_record(sid, now)
        if stored is None:
            return None
        decoded = stored.decoded
        if decoded is not None:
            return self._build_decoded(stored, decoded, now, sid)
        session = self._build(stored, now)
        if session is not None:
            session._mark_id_valid(sid)
        return session

    async def set(self, session: Session) -> None:
        """Save `session` with a compare-and-set on `session.version`.

        A session never saved (version 0) is inserted; an existing id raises `SessionConflict`.
        Otherwise the stored version must still be `session.version`: `SessionConflict` if
        someone saved in between, `SessionNotFound` if the session was deleted or expired
        (it is never re-created). On success `session.version` is bumped and its change
        tracking reset. Nothing is written when encoding fails (`SerializationError`) or the
        record exceeds `max_session_bytes` (`SessionTooLarge`).
        """
        write = self._prepare_write(session)
        now = self.clock()
        if write.expiry_at is not None and write.expiry_at <= now:
            raise SessionNotFound("the session has expired; create a new one")
        try:
            await self.write(write, now)
        except StoreUnavailable:
            # The request may have reached the store and been applied: remember what this save
            # carried, so that a retry recognises it (`SessionManager.update_session`).
            set_pending_write(session, PendingWrite(write.write_id, session.changes().copy()))
            raise
        assert write.baseline is not None
        _mark_saved(session, write.baseline, write.history_seq, write.new_version)
        set_pending_write(session, None)

    async def delete(self, session_id: str) -> bool:
        """Delete the session, its history and index entries. True if it existed."""
        return await self.delete_record(validate_session_id(session_id))

    async def touch(self, session_id: str, last_accessed_at: float, expiry_at: float | None) -> bool:
        """Persist an access time and expiry without a version bump; False if the session is gone.

        Raises `SerializationError` for a time that is not a finite number in range."""
        sid = validate_session_id(session_id)
        accessed = check_timestamp(last_accessed_at, "last_accessed_at")
        expiry = None if expiry_at is None else check_timestamp(expiry_at, "expiry_at")
        return await self.touch_record(sid, accessed, expiry, self.clock())

    async def get_user_sessions(self, user_id: str) -> list[Session]:
        """The live sessions of `user_id`, found through the per-user index."""
        uid = validate_user_id(user_id)
        now = self.clock()
        ids = await self.user_session_ids(uid, now)
        if not ids:
            return []
        stored = await self.load_records(ids, now)
        sessions = [self._build(s, now) for s in stored]
        return [s for s in sessions if s is not None and s.user_id == uid]

    async def iter_sessions(self, *, batch_size: int = 500, on_corrupt: OnCorrupt = "raise") -> AsyncIterator[Session]:
        """Stream every live session. A corrupt record raises, or with ``on_corrupt="skip"``
        is logged at ERROR and left out."""
        now = self.clock()
        scopes: dict[str | None, tuple[dict[str, bytes], dict[str, bytes]]] = {}
        async for batch in self.scan_records(batch_size, now):
            for stored in batch:
                if not stored.scopes_loaded:
                    if stored.user_id not in scopes:
                        if len(scopes) > 1024:
                            scopes.clear()
                        scopes[stored.user_id] = await self.scope_rows(stored.user_id)
                    stored.user_scope, stored.app_scope = scopes[stored.user_id]
                try:
                    session = self._build(stored, now)
                except SerializationError:
                    if on_corrupt == "raise":
                        raise
                    logger.error("skipping corrupt session record %s", id_hash(stored.session_id))
                    continue
                if session is not None:
                    yield session

    async def get_all(self, filter_func: Callable[[Session], bool] | None = None) -> list[Session]:
        """All live sessions matching `filter_func` (loads them all: prefer `iter_sessions`)."""
        return [s async for s in self.iter_sessions() if filter_func is None or filter_func(s)]

    async def get_history(self, session_id: str, *, limit: int = 50, before: int | None = None) -> HistoryPage:
        """A page of history: the newest `limit` entries older than cursor `before`, oldest first.

        Pass the returned `next_before` as `before` to get the previous page. An absent or
        expired session has an empty history.
        """
        sid = validate_session_id(session_id)
        if type(limit) is not int or not 0 < limit < MAX_COUNTER:
            raise SerializationError(f"limit must be an int from 1 to 2**53 - 2, got {limit!r:.40}")
        if before is not None and (type(before) is not int or not -MAX_COUNTER <= before <= MAX_COUNTER):
            raise SerializationError(
                "before must be a cursor from HistoryPage.next_before (an int within ±(2**53 - 1))"
            )
        rows = await self.history_page(sid, limit + 1, before, self.clock())
        if not rows:
            return HistoryPage([], None)
        more = len(rows) > limit
        rows = rows[-limit:]
        entries = self._decode_history([payload for _, payload in rows], sid)
        return HistoryPage(entries, rows[0][0] if more else None)

    async def load_scopes(self, user_id: str | None) -> ScopeData:
        """The decoded user scope of `user_id` (``user:`` keys, ``pref:`` preferences) and app scope."""
        uid = None if user_id is None else validate_user_id(user_id)
        user_raw, app_raw = await self.scope_rows(uid)
        return ScopeData(self._decode_scope(user_raw), self._decode_scope(app_raw))

    async def write_scopes(self, user_id: str | None, values: dict[str, Any], *, delete: Iterable[str] = ()) -> None:
        """Set (and delete) scope keys directly: ``user:x`` / ``pref:x`` need `user_id`; ``app:x`` do not."""
        user = ScopeChange("user", "" if user_id is None else validate_user_id(user_id))
        app = ScopeChange("app", "")
        for key, value in values.items():
            self._route_scope_key(key, user, app, user_id).sets[key] = self._encode_value(value, key)
        for key in delete:
            self._route_scope_key(key, user, app, user_id).deletes.append(key)
        if user.sets or app.sets:
            await self._check_scope_bounds(user, app)
        await self.write_scope_rows([c for c in (user, app) if not c.is_empty()])

    async def iter_scopes(self) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """Every scope as ``(kind, owner, values)``: kind "user" (owner = user id) or "app"."""
        async for change in self.iter_scope_rows():
            yield change.kind, change.owner, self._decode_scope(change.sets)

    async def cleanup_expired(self, *, batch_size: int = 500) -> int:
        """Delete expired sessions (index-backed, in batches); returns how many were removed."""
        return await self.delete_expired(self.clock(), batch_size)

    async def restore(self, session: Session, history: list[dict[str, Any]], *, history_seq: int | None = None) -> None:
        """Insert `session` as it was exported: its `version`, and `history` (oldest first) in full.

        Raises `SessionConflict` if the id exists. Used by import and migration; scope data is
        restored separately with `write_scopes`.
        """
        now = self.clock()
        await self.write(self._restore_write(session, history, history_seq, now), now)

    async def restore_many(self, items: Sequence[Restore]) -> list[bool]:
        """`restore` for a batch, in one round trip or statement where the backend can.

        Every item is checked and encoded before anything is written (a bad one raises and
        nothing of the batch is stored). Returns, per item, True if it was inserted and False
        if its id already existed (that one is left as it was; the rest are inserted).
        """
        now = self.clock()
        writes = [self._restore_write(item.session, item.history, item.history_seq, now) for item in items]
        return await self.write_many(writes, now) if writes else []

    def _restore_write(
        self, session: Session, history: list[dict[str, Any]], history_seq: int | None, now: float
    ) -> SessionWrite:
        sid = validate_session_id(session.session_id)
        if session.expiry_at is not None and session.expiry_at <= now:
            raise SessionNotFound("the session has expired; it is not restored")
        kept = history[-self.max_history :]
        last_seq = history_seq if history_seq is not None else len(history)
        if type(last_seq) is not int or not len(history) <= last_seq <= MAX_COUNTER:
            raise SerializationError("history_seq must be an int from the number of history entries to 2**53 - 1")
        version = session.version
        if type(version) is not int or not 0 <= version <= MAX_COUNTER:
            raise SerializationError("version must be an int from 0 to 2**53 - 1")
        first_seq = last_seq - len(kept) + 1
        rows = [self._history_row(entry, first_seq + i, sid) for i, entry in enumerate(kept)]
        return SessionWrite(
            session_id=sid,
            user_id=session.user_id,
            previous_user_id=None,
            expected_version=0,
            new_version=max(session.version, 1),
            created_at=session.created_at,
            last_accessed_at=session.last_accessed_at,
            expiry_at=session.expiry_at,
            record=self._encode_record(session),
            history=rows,
            history_seq=last_seq,
            max_history=self.max_history,
        )

    async def delete_if_version(self, session_id: str, version: int) -> bool:
        """Delete the session only if its stored version is still `version`; True if deleted.

        Backends override this with one atomic operation; this default re-reads, then deletes.
        """
        stored = await self.load_record(session_id, self.clock())
        if stored is None or stored.version != version:
            return False
        return await self.delete_record(session_id)

    async def rename(self, old_id: str, new_id: str) -> Session:
        """Move a session (record and full history) to `new_id` and delete the old id.

        Backends with transactions override this to do it atomically. This default copies the
        session to the new id, then deletes the old one only if nobody saved it meanwhile
        (`_delete_if_version`); if someone did, the copy is dropped and the move starts over,
        so a save racing the move is never lost. Raises `SessionNotFound` if the old session
        is gone, `SessionConflict` if it keeps changing.
        """
        old = validate_session_id(old_id)
        new = validate_session_id(new_id)
        for _ in range(RENAME_ATTEMPTS):
            session = await self.get(old)
            if session is None:
                raise SessionNotFound("the session does not exist or has expired")
            seq = session.history_seq
            rows: list[tuple[int, bytes]] = []
            before: int | None = seq + 1
            while True:
                page = await self.history_page(old, 500, before, self.clock())
                if not page:
                    break
                rows[:0] = page
                if len(page) < 500:
                    break
                before = page[0][0]
            history = [self._decode_entry(payload, old) for _, payload in rows]
            version = session.version
            session.session_id = new
            await self.restore(session, history, history_seq=seq)
            if await self.delete_if_version(old, version):
                moved = await self.get(new)
                if moved is None:
                    raise SessionNotFound("the session expired while its id was being regenerated")
                return moved
            await self.delete_record(new)
        raise SessionConflict("the session kept changing while its id was being regenerated; try again")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # ================================================================ shared internals
    def _encode_value(self, value: Any, where: str, *, checked: bool = False) -> bytes:
        """Encode one value (size-limited); `checked`: the caller has run `check_json` on it."""
        if not checked and not is_strict_json(value, self.max_depth):
            check_json(value, where, self.max_depth)  # raises, naming the value
        data = encode_checked(self.codec, value)
        if len(data) > self.max_session_bytes:
            raise SessionTooLarge(
                f"{where}: {len(data)} bytes encoded exceeds max_session_bytes={self.max_session_bytes}"
            )
        return data

    def _decode_value(self, raw: bytes) -> Any:
        """Decode one scope value; one nested deeper than `max_depth` is corrupt."""
        return decode_bounded(self.codec, raw, self.max_depth)

    def _decode_scope(self, raw: dict[str, bytes]) -> dict[str, Any]:
        return {k: decode_bounded(self.codec, v, self.max_depth) for k, v in raw.items()}

    def _decode_history(self, payloads: list[bytes], session_id: str) -> list[dict[str, Any]]:
        """Decode a history window; with the plain JSON codec in one `json.loads` of the joined
        payloads (a corrupt entry changes the element count or fails, then each is decoded alone)."""
        if len(payloads) > 1 and type(self.codec) is JsonCodec:
            # The joined list is one level deeper than its entries, each of which wraps a value
            # in one dict: `max_depth + 2` in all. Entries that open few brackets each (the
            # usual ones) cannot be deeper: then nothing is measured.
            joined = b"[" + b",".join(payloads) + b"]"
            limit = self.max_depth + 1
            try:
                # The most lists plus the most dicts any entry opens bounds each entry's depth
                # (counted in C: `map` over `bytes.count`, no Python frame per entry).
                if (
                    max(map(bytes.count, payloads, repeat(b"["))) + max(map(bytes.count, payloads, repeat(b"{")))
                    <= limit
                ):
                    entries = self.codec.decode(joined)
                else:
                    entries = self.codec.decode_bounded(joined, limit + 1)
            except SerializationError:
                entries = None  # some entry is corrupt: decoded one by one below, which reports it
            if type(entries) is list and len(entries) == len(payloads) and all(type(e) is dict for e in entries):
                return entries
        return [self._decode_entry(p, session_id) for p in payloads]

    def _decode_entry(self, payload: bytes, session_id: str) -> dict[str, Any]:
        try:
            # An entry wraps its data in one dict: one level more than a value.
            entry = decode_bounded(self.codec, payload, self.max_depth + 1)
        except SerializationError:
            logger.error("corrupt history entry in session %s", id_hash(session_id))
            raise
        if not isinstance(entry, dict):
            logger.error("corrupt history entry in session %s", id_hash(session_id))
            raise SerializationError("a stored history entry is not a JSON object")
        return entry

    @staticmethod
    def _route_scope_key(key: str, user: ScopeChange, app: ScopeChange, user_id: str | None) -> ScopeChange:
        if type(key) is not str:
            raise ScopeError(f"scope keys are str, got {type(key).__name__}")
        _check_column_text(key, "scope key")
        if key.startswith(APP_PREFIX):
            return app
        if key.startswith((USER_PREFIX, PREF_PREFIX)):
            if user_id is None:
                raise ScopeError(f"scope key {key!r} needs a user_id")
            return user
        raise ScopeError(f"scope keys start with {USER_PREFIX!r}, {PREF_PREFIX!r} or {APP_PREFIX!r}; got {key!r}")

    def _encode_record(self, session: Session, *, checked: bool = False, writes: tuple[str, ...] = ()) -> bytes:
        """The session's record (no history, no scoped state keys), size-limited.

        `checked`: every value that changed since the session's baseline has passed
        `_check_delta` (the rest was checked when it was saved, or decoded from a store), so the
        record is encoded without walking it again. Otherwise every value is checked here
        (with the store's `max_depth`, value by value, so the error names the value).
        """
        if not checked:
            _check_shape(session)
            full = _delta_since(session.__dict__, None)
            full.history = []
            _check_delta(full, self.max_depth)
        state = {}
        for key, value in session.state.items():
            if type(key) is not str:
                raise SerializationError(f"state keys must be str, got {type(key).__name__}")
            if not key.startswith((USER_PREFIX, APP_PREFIX, TEMP_PREFIX)):
                state[key] = value
        record = {
            "format": RECORD_FORMAT,
            "session_id": session.session_id,
            "user_id": session.user_id,
            "created_at": float(session.created_at),
            "last_accessed_at": float(session.last_accessed_at),
            "expiry_at": session.expiry_at,
            "state": state,
            "preferences": session.preferences,
            "auth_info": session.auth_info,
            "ai_context": session.ai_context,
            "feature_flags": session.feature_flags,
            "environment": session.environment,
            "writes": list(writes),
        }
        data = encode_checked(self.codec, record)
        if len(data) > self.max_session_bytes:
            raise SessionTooLarge(
                f"session record is {len(data)} bytes encoded, over max_session_bytes={self.max_session_bytes}; "
                "keep large data elsewhere and store a reference"
            )
        return data

    def _history_row(self, entry: Any, seq: int, session_id: str) -> HistoryRow:
        if not isinstance(entry, dict):
            raise SerializationError("history entries must be dicts like {'timestamp', 'type', 'data'}")
        # A backend that keeps entries decoded needs no bytes: a size bound under the limit is
        # enough (otherwise the entry is encoded, which gives the exact size or the error). The
        # bound, the private copy it keeps and the copy's clone hint come from one walk; a bound
        # proves the entry strict JSON, as `check_json` would.
        # The entry wraps its data in one dict: one level more than a value may nest.
        depth = self.max_depth + 1
        kept = clone_with_bound(entry, depth) if self.keeps_decoded and type(entry) is dict else None
        if kept is None:
            check_json(entry, f"history[{seq}]", depth)
        timestamp = entry.get("timestamp")
        kind = entry.get("type")
        if not isinstance(timestamp, int | float) or isinstance(timestamp, bool) or not isinstance(kind, str):
            raise SerializationError("history entries need a numeric 'timestamp' and a str 'type'")
        if "\x00" in kind or len(kind) > MAX_COLUMN_TEXT:
            _check_column_text(kind, "history entry type")  # raises
        stamp = check_timestamp(timestamp, f"history[{seq}] timestamp")
        if kept is not None:
            copy, bound, hint = kept
            payload = b""
            if bound > self.max_session_bytes:
                payload = self._encode_value(entry, f"history entry {seq}", checked=True)
            return HistoryRow(seq, stamp, kind, payload, copy, hint)
        payload = self._encode_value(entry, f"history entry {seq}", checked=True)
        return HistoryRow(seq, stamp, kind, payload, json_clone(entry) if self.keeps_decoded else None)

    def _check_scope_view(self, change: ScopeChange, values: dict[str, Any], baseline: Baseline | None) -> None:
        """Raise `SessionTooLarge` if a save's `change` grows its scope past `max_scope_bytes`.

        Every new session of a user loads the whole user scope (and the app scope), so it is
        bounded like a session is: by what the saving session holds of it (its ``user:`` or
        ``app:`` keys, and preferences for the user scope, loaded with it), as a record is
        bounded by what the session holds. No extra read: keys another session added since
        this one loaded count from its next load on. A change that does not grow the scope
        is always accepted, so an oversized scope can be cleaned up.
        """
        after = self._scope_view_size(change, values["state"], values["preferences"], change.sets)
        if after <= self.max_scope_bytes:
            return
        before = 0
        if baseline is not None:
            before = self._scope_view_size(change, baseline.maps["state"], baseline.maps["preferences"], {})
        if after > before:
            where = "the app scope" if change.kind == "app" else "the user scope"
            raise SessionTooLarge(
                f"{where} would be {after} bytes encoded, over max_scope_bytes={self.max_scope_bytes}; "
                "every new session loads it: delete keys or keep large data elsewhere"
            )

    def _scope_view_size(
        self, change: ScopeChange, state: dict[str, Any], prefs: dict[str, Any], encoded: dict[str, bytes]
    ) -> int:
        """The encoded size of the scope of `change` as `state` and `prefs` hold it (values in
        `encoded` are already encoded; the others are, unless a size bound settles it)."""
        if change.kind == "app":
            rows = {k: v for k, v in state.items() if type(k) is str and k.startswith(APP_PREFIX)}
        else:
            rows = {k: v for k, v in state.items() if type(k) is str and k.startswith(USER_PREFIX)}
            rows.update((PREF_PREFIX + k, v) for k, v in prefs.items())
        if type(self.codec) is JsonCodec:
            # An upper bound first (keys at most 4 bytes a character in UTF-8): usually enough.
            bound = 0
            for key, value in rows.items():
                raw = encoded.get(key)
                size = len(raw) if raw is not None else json_size_bound(value, self.max_depth)
                if size is None:
                    break
                bound += 4 * len(key) + size
            else:
                if bound <= self.max_scope_bytes:
                    return bound
        total = 0
        for key, value in rows.items():
            raw = encoded.get(key)
            total += len(key.encode("utf-8", "surrogatepass")) + len(
                raw if raw is not None else self._encode_value(value, key, checked=True)
            )
        return total

    async def _check_scope_bounds(self, user: ScopeChange | None, app: ScopeChange | None) -> None:
        """Raise `SessionTooLarge` if a direct scope write (`write_scopes`) would grow a scope
        past `max_scope_bytes`, checked against the scope as it is before the write (one read).
        A change that does not grow a scope is always accepted."""
        user_sets = user is not None and bool(user.sets)
        user_raw, app_raw = await self.scope_rows(user.owner if user is not None and user_sets else None)
        for change, rows in ((user, user_raw), (app, app_raw)):
            if change is None or not change.sets:
                continue
            before = _scope_size(rows)
            after_rows = dict(rows)
            after_rows.update(change.sets)
            for key in change.deletes:
                after_rows.pop(key, None)
            after = _scope_size(after_rows)
            if after > self.max_scope_bytes and after > before:
                where = "the app scope" if change.kind == "app" else "the user scope"
                raise SessionTooLarge(
                    f"{where} would be {after} bytes encoded, over max_scope_bytes={self.max_scope_bytes}; "
                    "every new session loads it: delete keys or keep large data elsewhere"
                )

    def _prepare_write(self, session: Session) -> SessionWrite:
        """Check and encode what a save of `session` writes.

        Only the delta is checked for strict JSON (the rest was checked when it was saved, or
        decoded from the store). A backend that keeps values decoded (memory) gets no record
        bytes when an upper bound on their size, carried by the baseline from save to save
        (`Baseline.record_bound`), stays under `max_session_bytes`: then nothing is encoded.
        """
        # The session's attributes read once (see `_delta_since`); `Session._tracking`, inline.
        values = session.__dict__
        private = session.__pydantic_private__
        assert private is not None
        sid = values["session_id"]
        if sid is not private.get("_valid_id"):
            sid = validate_session_id(sid)
            private["_valid_id"] = sid
        baseline: Baseline | None = private["_snapshot"]
        seq = int(private["_history_seq"])
        user_id = values["user_id"]
        if user_id is not None:
            user_id = validate_user_id(user_id)
        version = values["version"]
        if type(version) is not int or not 0 <= version < MAX_COUNTER:
            raise SerializationError(f"version must be an int from 0 to 2**53 - 2 to save, got {version!r:.40}")
        _check_values_shape(values)
        delta = _delta_since(values, baseline)
        write_id = new_write_id()
        writes = (write_id,) if baseline is None else (write_id, *baseline.writes[: WRITE_LINEAGE - 1])
        max_depth = self.max_depth
        record_bound: int | None = None
        if self.keeps_decoded:
            growth = _check_delta_bound(delta, max_depth)
            if growth is not None and baseline is not None and baseline.record_bound is not None:
                record_bound = baseline.record_bound + growth
            if record_bound is not None and record_bound <= self.max_session_bytes:
                record = b""
            else:
                record = self._encode_record(session, checked=True, writes=writes)
                record_bound = len(record) + RECORD_SLACK
        else:
            _check_delta(delta, max_depth)
            record = self._encode_record(session, checked=True, writes=writes)
        rows = []
        for entry in delta.history:
            seq += 1
            rows.append(self._history_row(entry, seq, sid))
        if seq > MAX_COUNTER:
            raise SerializationError("the history sequence number would pass 2**53 - 1")

        user: ScopeChange | None = None
        app: ScopeChange | None = None
        state_sets = delta.sets.get("state")
        if state_sets is not None:
            for key, value in state_sets.items():
                if key.startswith((USER_PREFIX, APP_PREFIX)):
                    user = user or ScopeChange("user", user_id or "")
                    app = app or ScopeChange("app", "")
                    change = self._route_scope_key(key, user, app, user_id)
                    change.sets[key] = self._encode_value(value, f"state[{key!r}]", checked=True)
        state_deletes = delta.deletes.get("state")
        if state_deletes is not None:
            for key in state_deletes:
                if key.startswith((USER_PREFIX, APP_PREFIX)):
                    user = user or ScopeChange("user", user_id or "")
                    app = app or ScopeChange("app", "")
                    self._route_scope_key(key, user, app, user_id).deletes.append(key)
        if user_id is not None:
            pref_sets = delta.sets.get("preferences")
            pref_deletes = delta.deletes.get("preferences")
            if pref_sets is not None or pref_deletes is not None:
                user = user or ScopeChange("user", user_id)
                for key, value in (pref_sets or {}).items():
                    _check_column_text(key, "preference key")
                    user.sets[PREF_PREFIX + key] = self._encode_value(value, f"preferences[{key!r}]", checked=True)
                user.deletes.extend(PREF_PREFIX + key for key in pref_deletes or ())

        if user is not None and user.sets:
            self._check_scope_view(user, values, baseline)
        if app is not None and app.sets:
            self._check_scope_view(app, values, baseline)
        previous_user = baseline.fields["user_id"] if baseline is not None else None
        after = _next_baseline(baseline, delta, record_bound)
        after.writes = writes
        # Positional: a dataclass built with keywords costs several times more, on every save.
        return SessionWrite(
            sid,  # session_id
            user_id,
            previous_user if version > 0 else None,  # previous_user_id
            version,  # expected_version
            version + 1,  # new_version
            values["created_at"],
            values["last_accessed_at"],
            values["expiry_at"],
            record,
            rows,  # history
            seq,  # history_seq
            self.max_history,
            None if user is None or user.is_empty() else user,  # user_scope
            None if app is None or app.is_empty() else app,  # app_scope
            after,  # baseline
            write_id,
        )

    def _build(self, stored: StoredSession, now: float) -> Session | None:
        """Decode a stored session (scopes merged, tracking reset); None if expired at `now`."""
        if stored.decoded is not None:
            return self._build_decoded(stored, stored.decoded, now)
        try:
            # A record wraps each value in two dicts (the record, then `state` or another map).
            record = decode_bounded(self.codec, stored.record, self.max_depth + 2)
            if not isinstance(record, dict):
                raise SerializationError("the stored record is not a JSON object")
            history = self._decode_history(stored.history, stored.session_id)
            state = record.setdefault("state", {})
            prefs = record.setdefault("preferences", {})
            for key, raw in stored.user_scope.items():
                if key.startswith(PREF_PREFIX):
                    prefs[key[len(PREF_PREFIX) :]] = self._decode_value(raw)
                else:
                    state[key] = self._decode_value(raw)
            for key, raw in stored.app_scope.items():
                state[key] = self._decode_value(raw)
            # Records this library wrote have every field with its exact type: built without
            # pydantic. Anything else (an older record, a corrupt one) is validated in full.
            writes = record.pop("writes", [])
            if type(writes) is not list or not all(type(w) is str for w in writes):
                raise SerializationError("the stored record's write lineage is not a list of ids")
            session = None
            if record.keys() | {"writes"} == _RECORD_KEY_SET:
                values = {
                    "session_id": stored.session_id,
                    "user_id": stored.user_id,
                    "created_at": record["created_at"],
                    "last_accessed_at": stored.last_accessed_at,
                    "expiry_at": stored.expiry_at,
                    "state": state,
                    "preferences": prefs,
                    "history": history,
                    "auth_info": record["auth_info"],
                    "ai_context": record["ai_context"],
                    "feature_flags": record["feature_flags"],
                    "environment": record["environment"],
                    "version": stored.version,
                }
                session = Session._from_record(values, None, stored.history_seq)
            if session is None:
                record.pop("format", None)
                record["session_id"] = stored.session_id
                record["user_id"] = stored.user_id
                record["last_accessed_at"] = stored.last_accessed_at
                record["expiry_at"] = stored.expiry_at
                record["version"] = stored.version
                record["history"] = history
                session = Session.model_validate(record)
                session._mark_clean(history_seq=stored.history_seq)
            snapshot = session.baseline
            assert snapshot is not None
            snapshot.writes = tuple(writes)  # the baseline was just built for this session alone
        except (SerializationError, ValidationError, TypeError, AttributeError, RecursionError) as exc:
            logger.error("corrupt session record %s: %s", id_hash(stored.session_id), type(exc).__name__)
            if isinstance(exc, SerializationError):
                raise
            raise SerializationError(f"stored session record is invalid: {exc}") from exc
        if session.is_expired(now):
            return None
        return session

    def _build_decoded(
        self, stored: StoredSession, decoded: DecodedRecord, now: float, valid_id: str | None = None
    ) -> Session | None:
        """`_build` for a backend that keeps values decoded: the session gets copies, and the
        shared values are its baseline as they are (no decoding, one copy instead of two).
        `valid_id`: the id the caller validated (`Session._tracking` then skips checking it)."""
        expiry = stored.expiry_at
        if expiry is not None and expiry <= now:
            return None
        kept = decoded.baseline
        try:
            maps = kept.maps
            fields = kept.fields
            state = decoded.state
            prefs = maps["preferences"]
            merged = bool(stored.user_scope or stored.app_scope)
            if merged:
                state = dict(state)
                prefs = dict(prefs)
                for key, raw in stored.user_scope.items():
                    if key.startswith(PREF_PREFIX):
                        prefs[key[len(PREF_PREFIX) :]] = self._decode_value(raw)
                    else:
                        state[key] = self._decode_value(raw)
                for key, raw in stored.app_scope.items():
                    state[key] = self._decode_value(raw)
            auth = fields["auth_info"]
            ai_context = maps["ai_context"]
            flags = maps["feature_flags"]
            environment = fields["environment"]
            created_at = decoded.created_at
            last_accessed_at = stored.last_accessed_at
            # The session's copies (the record stays shared, never mutated): one `json_clone`
            # per non-empty map; the history window comes as copies already.
            history = decoded.history
            values = {
                "session_id": stored.session_id,
                "user_id": stored.user_id,
                "created_at": created_at,
                "last_accessed_at": last_accessed_at,
                "expiry_at": expiry,
                "state": json_clone(state) if state else {},
                "preferences": json_clone(prefs) if prefs else {},
                "history": history,
                "auth_info": None if auth is None else json_clone(auth),
                "ai_context": json_clone(ai_context) if ai_context else {},
                "feature_flags": json_clone(flags) if flags else {},
                "environment": json_clone(environment) if environment else {},
                "version": stored.version,
            }
            if (
                not merged
                and state is maps["state"]
                and fields["expiry_at"] is expiry
                and fields["user_id"] is stored.user_id
            ):
                # The saving session's baseline describes exactly what was loaded (no scope
                # values merged, no touch since): shared as it is, or with its maps and fields.
                baseline = kept
                if kept.history_len != len(history):
                    baseline = Baseline(maps, fields, len(history), kept.record_bound, kept.writes)
            else:
                baseline = Baseline(
                    {"state": state, "preferences": prefs, "ai_context": ai_context, "feature_flags": flags},
                    {"user_id": stored.user_id, "expiry_at": expiry, "environment": environment, "auth_info": auth},
                    len(history),
                    kept.record_bound,
                    kept.writes,
                )
            # The types `Session._from_record` would check, except what is true by construction:
            # `values` is built above in field order, its containers are fresh copies, and the
            # history window holds dict copies (`DecodedRecord`). A kept record was written by
            # a save (`_check_shape`), but a touch or an injected clock can make the numbers
            # ints: anything unusual takes the checked path.
            session: Session | None
            if (
                type(created_at) is float
                and type(last_accessed_at) is float
                and (expiry is None or type(expiry) is float)
                and type(stored.version) is int
                and type(state) is dict
                and type(prefs) is dict
                and type(ai_context) is dict
                and type(flags) is dict
                and type(environment) is dict
                and (auth is None or type(auth) is dict)
                and (stored.user_id is None or type(stored.user_id) is str)
                and type(stored.session_id) is str
            ):
                valid = valid_id if valid_id is not None and valid_id is stored.session_id else None
                session = _construct_session(values, baseline, stored.history_seq, valid)
            else:
                session = Session._from_record(values, baseline, stored.history_seq)
                if session is None:
                    session = Session.model_validate(values)
                    session._mark_clean(history_seq=stored.history_seq)
                if valid_id is not None and session.session_id is valid_id:
                    session._mark_id_valid(valid_id)
        except (SerializationError, ValidationError, TypeError, AttributeError, KeyError, RecursionError) as exc:
            logger.error("corrupt session record %s: %s", id_hash(stored.session_id), type(exc).__name__)
            if isinstance(exc, SerializationError):
                raise
            raise SerializationError(f"stored session record is invalid: {exc}") from exc
        return session


MAX_COLUMN_TEXT = 1024
_MAPS = ("state", "preferences", "ai_context", "feature_flags", "environment")


def _check_shape(session: Session) -> None:
    """The record fields must have the types the model declares (pydantic does not check
    assignments): a record of another shape could be written but never loaded again."""
    _check_values_shape(session.__dict__)


def _check_values_shape(values: dict[str, Any]) -> None:
    """`_check_shape` of the session whose `__dict__` is `values`."""
    auth = values["auth_info"]
    created = values["created_at"]
    accessed = values["last_accessed_at"]
    expiry = values["expiry_at"]
    # The usual shape in one expression; anything else is checked below, which says what is wrong.
    if (
        type(values["state"]) is dict
        and type(values["preferences"]) is dict
        and type(values["ai_context"]) is dict
        and type(values["feature_flags"]) is dict
        and type(values["environment"]) is dict
        and (auth is None or type(auth) is dict)
        and type(created) is float
        and type(accessed) is float
        and (expiry is None or type(expiry) is float)
        # In range (so finite: NaN compares false).
        and -MAX_TIMESTAMP <= created <= MAX_TIMESTAMP
        and -MAX_TIMESTAMP <= accessed <= MAX_TIMESTAMP
        and (expiry is None or -MAX_TIMESTAMP <= expiry <= MAX_TIMESTAMP)
    ):
        return
    for name in _MAPS:
        if type(values[name]) is not dict:
            raise SerializationError(f"{name} must be a dict, got {type(values[name]).__name__}")
    if auth is not None and type(auth) is not dict:
        raise SerializationError(f"auth_info must be a dict or None, got {type(auth).__name__}")
    for name in ("created_at", "last_accessed_at", "expiry_at"):
        value = values[name]
        if value is None and name == "expiry_at":
            continue
        check_timestamp(value, name)


#: Timestamps are epoch seconds within this many of 0 (about the year 287,000): every backend
#: keeps them to the millisecond (Redis in doubles, and as integer milliseconds for its TTLs).
MAX_TIMESTAMP = 2.0**53 / 1000


def check_timestamp(value: Any, name: str) -> float:
    """`value` as a float timestamp; `SerializationError` unless it is a number (not a bool)
    within ±`MAX_TIMESTAMP` (so finite; an int compares exactly, however large)."""
    if (type(value) is not float and type(value) is not int) or not -MAX_TIMESTAMP <= value <= MAX_TIMESTAMP:
        raise SerializationError(
            f"{name} must be a finite number of seconds within ±{MAX_TIMESTAMP:.0f}, got {value!r:.40}"
        )
    return float(value)


def _scope_size(rows: dict[str, bytes]) -> int:
    """The encoded size of a scope: its keys (UTF-8) and values."""
    return sum(len(key.encode("utf-8", "surrogatepass")) + len(raw) for key, raw in rows.items())


#: Room in `Baseline.record_bound` for the record fields that change without being tracked:
#: ``created_at``, ``last_accessed_at`` and ``expiry_at`` (floats, each at most 24 characters),
#: and ``writes``.
RECORD_SLACK = 3 * FLOAT_SIZE + WRITE_LINEAGE * 20  # and the write lineage: ids of 16 characters, quoted


def _check_delta_bound(delta: SessionDelta, max_depth: int) -> int | None:
    """`_check_delta`, also returning an upper bound on how much the changed values can grow
    the encoded record; None when some value has no bound (the record must be encoded)."""
    growth: int | None = 0
    for name, values in delta.sets.items():
        for key, value in values.items():
            if type(key) is not str:
                raise SerializationError(f"{name} keys must be str, got {type(key).__name__}")
            kind = type(value)
            # A small int (a counter) inline, as `json_size_bound` bounds it; anything else through it.
            bound = (
                value.bit_length() // 3 + 2
                if kind is int and -MAX_COUNTER <= value <= MAX_COUNTER
                else json_size_bound(value, max_depth)
            )
            if bound is None:
                check_json(value, f"{name}[{key!r:.40}]", max_depth)
                growth = None
            if key.isascii():
                if growth is not None and bound is not None:
                    growth += bound + 6 * len(key) + 4
            else:
                check_json_key(key, name)
                growth = None if growth is None or bound is None else growth + bound + 6 * len(key) + 4
    # `environment` and `auth_info` are maps of values: one level more than a value.
    for name, value in delta.fields.items():
        # `expiry_at`, a finite float, changes on every save.
        bound = FLOAT_SIZE if type(value) is float and math.isfinite(value) else json_size_bound(value, max_depth + 1)
        if bound is None:
            if name != "user_id":
                check_json(value, name, max_depth + 1)
            growth = None
        elif growth is not None:
            growth += bound
    return growth


def _check_delta(delta: SessionDelta, max_depth: int) -> None:
    """Strict JSON, nested at most `max_depth` deep, for every value that changed since the
    baseline (the rest already was)."""
    for name, values in delta.sets.items():
        for key, value in values.items():
            if type(key) is not str:
                raise SerializationError(f"{name} keys must be str, got {type(key).__name__}")
            if not key.isascii():
                check_json_key(key, name)
            if not is_strict_json(value, max_depth):
                check_json(value, f"{name}[{key!r:.40}]", max_depth)
    for name, value in delta.fields.items():
        if name != "user_id" and not is_strict_json(value, max_depth + 1):
            check_json(value, name, max_depth + 1)


def _check_column_text(value: str, what: str) -> None:
    """Text that backends keep in an indexed column (scope keys, history types): every backend
    must accept the same values, and PostgreSQL text cannot hold NUL (nor UTF-8 a lone surrogate)."""
    if "\x00" in value or len(value) > MAX_COLUMN_TEXT:
        raise SerializationError(f"{what} must not contain NUL and be at most {MAX_COLUMN_TEXT} characters")
    if not value.isascii():
        check_json_key(value, what)


def raise_conflict(session_id: str) -> SessionConflict:
    """The `SessionConflict` a backend raises when a compare-and-set loses."""
    return SessionConflict(
        f"session {id_hash(session_id)} was saved by someone else since it was loaded; reload and retry"
    )
