"""`SessionStore`: the storage contract, with the shared logic above a handful of primitives.

A backend implements the public, typed primitives below (`load_record`, `write`,
`delete_record`, `touch_record`, `scope_rows`, `write_scope_rows`, `iter_scope_rows`,
`history_page`, `user_session_ids`, `list_page`, `scan_records`, `delete_expired`, `erase_user`,
`close`; `load_records`, `write_many`, `delete_if_version` and `ping` have defaults to override
for speed). Everything a caller uses — id validation before any I/O, strict encoding and size limits, expiry, scopes,
history numbering, change tracking — lives here, in `writes` (a save checked and encoded before
any I/O) and in `agent_sessions.records`, so every backend behaves the same and the contract
suite in `tests/contract/` proves it.

The primitives deal in bytes produced by the store's codec and in the small dataclasses of
`primitives` (re-exported here, where backends and callers import them), never in `Session`
objects:

- a session is one *record* (every field but `history`, with `user:`/`app:`/`temp:` state keys
  removed) plus columns the backend indexes (`user_id`, `expiry_at`, `version`, ...);
- history is append-only rows numbered by `seq` (1, 2, ... per session), stored apart from the
  record and capped at `max_history` per session;
- scope data is per-key: the `user` scope of a `user_id` holds its `user:` state keys and its
  preferences (as ``pref:<name>``), the `app` scope holds the `app:` keys.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from types import TracebackType
from typing import Any, Literal, Self

from .. import listing, records
from ..codec import DEFAULT_MAX_DEPTH, MAX_COUNTER, Codec, JsonCodec, check_max_depth
from ..errors import SearchUnavailable, SerializationError, SessionConflict, SessionNotFound, StoreUnavailable
from ..ids import id_hash, validate_session_id, validate_user_id
from ..records import MAX_TIMESTAMP, PREF_PREFIX, ScopeData, check_timestamp
from ..search import HistoryHit, SearchQuery, SearchRow, make_query
from ..session import HistoryPage, Session
from ..tracking import Baseline, PendingWrite
from . import writes
from .primitives import (
    ErasureReport,
    HistoryRow,
    Restore,
    ScopeChange,
    ScopeChanges,
    SessionWrite,
    StoredSession,
    raise_conflict,
)

__all__ = [
    "DEFAULT_HISTORY_WINDOW",
    "DEFAULT_MAX_HISTORY",
    "DEFAULT_MAX_SESSION_BYTES",
    "MAX_TIMESTAMP",
    "ErasureReport",
    "PREF_PREFIX",
    "HistoryRow",
    "OnCorrupt",
    "Restore",
    "ScopeChange",
    "ScopeChanges",
    "ScopeData",
    "SearchQuery",
    "SearchRow",
    "SessionStore",
    "SessionWrite",
    "StoredSession",
    "check_timestamp",
    "raise_conflict",
]

logger = logging.getLogger(__name__)

DEFAULT_MAX_SESSION_BYTES = 1024 * 1024
DEFAULT_MAX_HISTORY = 1000
DEFAULT_HISTORY_WINDOW = 50
RENAME_ATTEMPTS = 20

OnCorrupt = Literal["raise", "skip"]


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
    - `clock`: the time source (inject one in tests instead of sleeping);
    - `index_history`: keep each history entry's searchable text beside it for
      `search_history` (default True). That text is stored in clear even with `FernetCodec`:
      pass False to keep history encrypted only (`search_history` then raises
      `SearchUnavailable`; entries written meanwhile stay unsearchable).
    """

    #: Whether history rows carry their searchable text (False on a backend without search).
    indexes_history_text: bool = True

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
        index_history: bool = True,
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
        self.index_history = index_history

    # ================================================================ backend primitives
    @abstractmethod
    async def load_record(self, session_id: str, now: float) -> StoredSession | None:
        """The session with its recent `history_window` and scopes, or None if absent/expired."""

    async def load_records(
        self, session_ids: list[str], now: float, *, window: int | None = None
    ) -> list[StoredSession]:
        """Several sessions (absent or expired ones left out), each with its newest `window`
        history entries (None: `history_window`; 0: none, for listings); override to batch."""
        loaded = [s for sid in session_ids if (s := await self.load_record(sid, now)) is not None]
        if window is not None and window < self.history_window:
            for stored in loaded:
                stored.history = stored.history[-window:] if window else []
        return loaded

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

    @abstractmethod
    async def erase_user(self, user_id: str, now: float) -> ErasureReport:
        """Delete every session of `user_id` (expired ones too: record, history, index and
        expiry entries) and its user scope, found through the per-user index (never a scan).

        Safe while the user's sessions are being saved: when it returns, nothing of them
        written before the call remains, and a save racing it fails with `SessionNotFound`
        without writing anything back (record, history, index entries or user scope). A
        session whose creation overlaps the call may remain. Returns what it removed.
        """

    async def search(self, query: SearchQuery, now: float) -> list[SearchRow]:
        """The best `query.limit` history rows of the live sessions in the query's scope that
        hold any of its terms in their type or text, best first (see `SearchQuery`). Called
        with at least one term and `types` None or non-empty.

        This default raises `SearchUnavailable`: a backend with a full-text engine overrides it.
        """
        raise SearchUnavailable(f"{type(self).__name__} cannot search history; use SQLite or PostgreSQL")

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
        sid = validate_session_id(session_id)
        now = self.clock()
        stored = await self.load_record(sid, now)
        return None if stored is None else self._build(stored, now)

    async def set(self, session: Session) -> None:
        """Save `session` with a compare-and-set on `session.version`.

        A session never saved (version 0) is inserted; an existing id raises `SessionConflict`.
        Otherwise the stored version must still be `session.version`: `SessionConflict` if
        someone saved in between, `SessionNotFound` if the session was deleted or expired
        (it is never re-created). On success `session.version` is bumped and its change
        tracking reset. Nothing is written when encoding fails (`SerializationError`) or the
        record exceeds `max_session_bytes` (`SessionTooLarge`).
        """
        write, baseline = self.prepare_write(session)
        now = self.clock()
        if write.expiry_at is not None and write.expiry_at <= now:
            raise SessionNotFound("the session has expired; create a new one")
        try:
            await self.write(write, now)
        except StoreUnavailable:
            # The request may have reached the store and been applied: remember what this save
            # carried, so that a retry recognises it (`SessionManager.update_session`).
            session.pending_write = PendingWrite(write.write_id, session.changes().copy())
            raise
        # The baseline is what this save sent, never what the backend returned.
        session.mark_saved(baseline, write.history_seq, write.new_version)

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
        """The live sessions of `user_id`, in session id order: every page of `list_sessions`."""
        found: list[Session] = []
        cursor: str | None = None
        while True:
            page = await self.list_sessions(user_id, limit=listing.MAX_PAGE_SIZE, cursor=cursor)
            found += page.sessions
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    # ---------------------------------------------------------------- listing (`agent_sessions.listing`)
    @abstractmethod
    async def list_page(self, user_id: str | None, limit: int, after: str | None, now: float) -> list[str]:
        """Up to `limit` ids of sessions live at `now` (of `user_id` if not None) whose id sorts
        after `after` (None: from the first), ascending, read from an index by key (keyset,
        never skipping through a scan). An id may belong to a session deleted or expired a
        moment later: the caller loads the records and drops those."""

    async def list_sessions(
        self,
        user_id: str | None = None,
        *,
        limit: int = listing.DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        with_history: bool = True,
    ) -> listing.SessionPage:
        """A page of live sessions (of `user_id` if given) in session id order, and the cursor
        of the next page; `InvalidCursor` / `InvalidLimit` / `InvalidUserId` for bad arguments.
        `with_history=False`: the sessions come without their history windows."""
        return await listing.list_sessions(self, user_id, limit=limit, cursor=cursor, with_history=with_history)

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
        entries = records.decode_history(self.codec, [payload for _, payload in rows], sid, self.max_depth)
        return HistoryPage(entries, rows[0][0] if more else None)

    async def search_history(
        self,
        user_id: str | None,
        query: str,
        *,
        limit: int = 10,
        types: Sequence[str] | None = None,
        since: float | None = None,
        session_id: str | None = None,
    ) -> list[HistoryHit]:
        """Rank the history entries of `user_id`'s live sessions (or, with `user_id` None, of
        the session `session_id`; with both, of that session if it is the user's) for `query`.

        Any string is a valid query: its letters and digits are the terms, and an entry holding
        any of them matches (a query without any finds nothing). Raises `InvalidSearchQuery`
        for bad arguments, `SearchUnavailable` on a store without full-text search (Redis).
        """
        uid = None if user_id is None else validate_user_id(user_id)
        sid = None if session_id is None else validate_session_id(session_id)
        if not self.index_history:
            raise SearchUnavailable("this store was opened with index_history=False: its history is not indexed")
        checked = make_query(uid, sid, query, limit=limit, types=types, since=since)
        if self.indexes_history_text and (not checked.terms or checked.types == ()):
            return []  # nothing can match (a store without search still raises below)
        rows = await self.search(checked, self.clock())
        return [
            HistoryHit(
                row.session_id,
                row.seq,
                records.decode_entry(self.codec, row.payload, row.session_id, self.max_depth),
                row.score,
                row.snippet,
            )
            for row in rows
        ]

    async def load_scopes(self, user_id: str | None) -> ScopeData:
        """The decoded user scope of `user_id` (``user:`` keys, ``pref:`` preferences) and app scope."""
        uid = None if user_id is None else validate_user_id(user_id)
        user_raw, app_raw = await self.scope_rows(uid)
        return ScopeData(
            records.decode_scope(self.codec, user_raw, self.max_depth),
            records.decode_scope(self.codec, app_raw, self.max_depth),
        )

    async def write_scopes(self, user_id: str | None, values: dict[str, Any], *, delete: Iterable[str] = ()) -> None:
        """Set (and delete) scope keys directly: ``user:x`` / ``pref:x`` need `user_id`; ``app:x`` do not."""
        scopes = ScopeChanges(None if user_id is None else validate_user_id(user_id))
        for key, value in values.items():
            scopes.route(key).sets[key] = writes.encode_value(self, value, key)
        for key in delete:
            scopes.route(key).deletes.append(key)
        user, app = scopes.user, scopes.app
        if user.sets or app.sets:
            await self._check_scope_bounds(user, app)
        await self.write_scope_rows([c for c in (user, app) if not c.is_empty()])

    async def iter_scopes(self) -> AsyncIterator[tuple[str, str, dict[str, Any]]]:
        """Every scope as ``(kind, owner, values)``: kind "user" (owner = user id) or "app"."""
        async for change in self.iter_scope_rows():
            yield change.kind, change.owner, records.decode_scope(self.codec, change.sets, self.max_depth)

    async def cleanup_expired(self, *, batch_size: int = 500) -> int:
        """Delete expired sessions (index-backed, in batches); returns how many were removed."""
        return await self.delete_expired(self.clock(), batch_size)

    async def restore(self, session: Session, history: list[dict[str, Any]], *, history_seq: int | None = None) -> None:
        """Insert `session` as it was exported: its `version`, and `history` (oldest first) in full.

        Raises `SessionConflict` if the id exists. Used by import and migration; scope data is
        restored separately with `write_scopes`.
        """
        now = self.clock()
        await self.write(writes.restore_write(self, session, history, history_seq, now), now)

    async def restore_many(self, items: Sequence[Restore]) -> list[bool]:
        """`restore` for a batch, in one round trip or statement where the backend can.

        Every item is checked and encoded before anything is written (a bad one raises and
        nothing of the batch is stored). Returns, per item, True if it was inserted and False
        if its id already existed (that one is left as it was; the rest are inserted).
        """
        now = self.clock()
        batch = [writes.restore_write(self, item.session, item.history, item.history_seq, now) for item in items]
        return await self.write_many(batch, now) if batch else []

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
            history = [records.decode_entry(self.codec, payload, old, self.max_depth) for _, payload in rows]
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

    def prepare_write(self, session: Session) -> tuple[SessionWrite, Baseline]:
        """Check and encode a save of `session` without writing it: the `SessionWrite` that
        `write` receives, and the session's baseline once it lands (what it sent). `set` is
        this, then `write`, then `Session.mark_saved`; backend tests use it to send one write
        twice.

        Only the delta is checked for strict JSON: the rest was checked when it was saved, or
        decoded from the store.
        """
        return writes.prepare_write(self, session)

    # ================================================================ shared internals
    def _build(self, stored: StoredSession, now: float) -> Session | None:
        """The session `stored` holds (scopes merged, clean); None if expired at `now`."""
        return records.build_session(self.codec, stored, self.max_depth, now)

    async def _check_scope_bounds(self, user: ScopeChange, app: ScopeChange) -> None:
        """Raise `SessionTooLarge` if a direct scope write (`write_scopes`) would grow a scope
        past `max_scope_bytes`, checked against the scope as it is before the write (one read)."""
        user_raw, app_raw = await self.scope_rows(user.owner if user.sets else None)
        for change, rows in ((user, user_raw), (app, app_raw)):
            if change.sets:
                after = {**rows, **change.sets}
                for key in change.deletes:
                    after.pop(key, None)
                records.check_scope_growth(
                    change.kind, records.scope_size(rows), records.scope_size(after), self.max_scope_bytes
                )
