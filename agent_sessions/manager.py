"""`SessionManager`: lifetimes, throttled touches, delta saves with compare-and-set, cleanup.

Timeouts: `session_lifetime` is the idle timeout (sliding, renewed on access);
`absolute_lifetime` counts from `created_at` and is never extended. The stored expiry is the
earlier of the two, so an expired session reads as absent on every backend.

Reads do not write: `get_session` persists `last_accessed_at` at most once per
`touch_interval` (default a quarter of the idle timeout), without bumping the version.

Saves never lose updates: `update_session` saves the session's delta with a compare-and-set;
on a conflict it reloads, re-applies the delta and retries. `mutate` re-runs a function on a
fresh copy until its save wins, for read-modify-write such as counters; within one process,
mutates of one session take turns (a lock per session id), so only other processes race them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import random
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from .errors import SessionConflict, SessionNotFound, StoreUnavailable
from .ids import id_hash, new_session_id, validate_session_id, validate_user_id
from .lifecycle import SessionDataHolder, erase_user, export_user
from .listing import DEFAULT_PAGE_SIZE, SessionPage
from .login import Keep, log_in
from .search import HistoryHit
from .session import HistoryPage, Session
from .stores.base import SessionStore
from .stores.primitives import ErasureReport
from .tracing import ATTR_RETRIES, set_attribute, traced
from .tracking import PendingWrite, SessionDelta
from .turns import Turns

if TYPE_CHECKING:
    from .ops.backup import ExportReport

__all__ = ["SessionManager"]

logger = logging.getLogger(__name__)

MutateFn = Callable[[Session], Awaitable[Any] | Any]


def landed(pending: PendingWrite, stored: Session) -> bool:
    """Whether the save `pending` stands for is part of `stored` (in its write lineage)."""
    baseline = stored.baseline
    return baseline is not None and pending.write_id in baseline.writes


class SessionManager:
    """Session manager for lifecycle management: creation, retrieval, saving and expiry.

    ``async with SessionManager(create_store(url)) as manager:`` starts the cleanup loop and
    closes the store on exit.

    Arguments:

    - `store` — the `SessionStore` sessions live in (`create_store(url)` builds one).
    - `session_lifetime` — the idle timeout in seconds (default 3600): a session not accessed
      for that long expires; every access renews it (sliding).
    - `cleanup_interval` — seconds between runs of the background cleanup of expired sessions
      (default 300); expired sessions read as absent before cleanup removes them.
    - `auto_cleanup` — run that background cleanup while started (default True).
    - `absolute_lifetime` — seconds from `created_at` after which a session expires however
      active it is (default 24 h = 86400; None for no absolute limit). Never extended.
    - `touch_interval` — persist the access time at most this often, in seconds (default a
      quarter of `session_lifetime`), so reads do not write on every call.
    - `max_retries` — how many lost compare-and-set races `update_session` / `mutate` retry
      before raising `SessionConflict` (default 100).

    Raises `ValueError` for a lifetime, interval or retry count that is not positive.
    """

    def __init__(
        self,
        store: SessionStore,
        session_lifetime: int | float = 3600,
        cleanup_interval: int | float = 300,
        auto_cleanup: bool = True,
        *,
        absolute_lifetime: float | None = 24 * 3600,
        touch_interval: float | None = None,
        max_retries: int = 100,
    ) -> None:
        if session_lifetime <= 0:
            raise ValueError("session_lifetime (the idle timeout) must be > 0 seconds")
        if absolute_lifetime is not None and absolute_lifetime <= 0:
            raise ValueError("absolute_lifetime must be > 0 seconds, or None for no absolute timeout")
        if cleanup_interval <= 0:
            raise ValueError("cleanup_interval must be > 0 seconds")
        if max_retries < 1:
            raise ValueError("max_retries must be >= 1")
        self.store = store
        self.session_lifetime = session_lifetime
        self.absolute_lifetime = absolute_lifetime
        self.cleanup_interval = cleanup_interval
        self.auto_cleanup = auto_cleanup
        self.touch_interval = session_lifetime / 4 if touch_interval is None else touch_interval
        self.max_retries = max_retries
        self._turns = Turns()
        self.last_cleanup: float = self.clock()
        self.cleanup_task: asyncio.Task[None] | None = None
        #: What `erase_user` erases besides the store (`register_data_holder`).
        self.data_holders: list[SessionDataHolder] = []

    def clock(self) -> float:
        """The store's clock (inject one into the store to control time in tests)."""
        return self.store.clock()

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Check the store answers (`SessionStore.ping`), then start the background cleanup loop
        (if `auto_cleanup`). Idempotent.

        Raises `StoreUnavailable` (naming the store's host, never its credentials) when the store
        cannot be reached: an application on an unreachable store fails at startup, not with
        an error on every request.
        """
        await self.store.ping()
        if self.auto_cleanup and (self.cleanup_task is None or self.cleanup_task.done()):
            self.cleanup_task = asyncio.create_task(self._cleanup_loop(), name="agent_sessions.cleanup")

    async def stop(self) -> None:
        """Stop the cleanup loop and close the store."""
        task, self.cleanup_task = self.cleanup_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                if not task.cancelled():
                    raise
        await self.store.close()

    async def __aenter__(self) -> Self:
        try:
            await self.start()
        except BaseException:
            # The body will not run, nor `__aexit__`: release the store now (a failure to do so
            # is raised, with the first failure as its context).
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # ------------------------------------------------------------------ expiry
    def expiry_for(self, session: Session, now: float) -> float:
        """The earlier of the idle deadline from `now` and the absolute deadline."""
        idle = now + self.session_lifetime
        if self.absolute_lifetime is None:
            return idle
        absolute = session.created_at + self.absolute_lifetime
        return idle if idle <= absolute else absolute

    # ------------------------------------------------------------------ reads
    @traced("get_session")
    async def get_session(self, session_id: str, create_if_missing: bool = False) -> Session | None:
        """The live session, or None (or a brand-new session with a new id if asked).

        An unknown id is never adopted: `create_if_missing` issues a fresh server-side id.
        The access time is persisted at most once per `touch_interval`.
        """
        sid = validate_session_id(session_id)
        session = await self.store.get(sid)
        if session is None:
            return await self.create_session() if create_if_missing else None
        now = self.clock()
        if now - session.last_accessed_at >= self.touch_interval:
            expiry = self.expiry_for(session, now)
            if not await self.store.touch(sid, now, expiry):
                return await self.create_session() if create_if_missing else None
            session.last_accessed_at = now
            session.expiry_at = expiry
            session.mark_field_clean("expiry_at")
        return session

    @traced("get_user_sessions", session=False)
    async def get_user_sessions(self, user_id: str) -> list[Session]:
        """The live sessions of a user (through the store's per-user index)."""
        return await self.store.get_user_sessions(user_id)

    @traced("list_sessions", session=False)
    async def list_sessions(
        self,
        user_id: str | None = None,
        *,
        limit: int = DEFAULT_PAGE_SIZE,
        cursor: str | None = None,
        with_history: bool = True,
    ) -> SessionPage:
        """A page of live sessions (of `user_id`, or of every user) in session id order; pass
        `next_cursor` back as `cursor` for the next page (None: the last page). Keyset-paged on
        every backend (see `agent_sessions.listing`): a session that exists throughout the
        paging is listed exactly once. `limit` is 1 to 1000 (`InvalidLimit`); a cursor not from
        this listing raises `InvalidCursor`. `with_history=False` skips loading each session's
        history window (its `history` is then empty): the fast path for lists of sessions."""
        return await self.store.list_sessions(user_id, limit=limit, cursor=cursor, with_history=with_history)

    @traced("get_history")
    async def get_history(self, session_id: str, *, limit: int = 50, before: int | None = None) -> HistoryPage:
        """A page of history, oldest to newest; pass `next_before` back to go further back."""
        return await self.store.get_history(session_id, limit=limit, before=before)

    # ------------------------------------------------------------------ writes
    @traced("create_session", session=False)
    async def create_session(
        self,
        user_id: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        preferences: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Session:
        """Create and save a new session with a fresh id.

        A session of a known `user_id` starts with that user's preferences and ``user:``
        state; every session sees the ``app:`` state. `data` is initial state.

        `session_id` lets a server-side caller choose the id (an adapter that maps a
        framework's own ids onto ours, such as the ADK session service). It must have the
        exact shape of an issued id (43 characters of ``[A-Za-z0-9_-]``, `SESSION_ID_PATTERN`),
        else `InvalidSessionId`; an id already in use raises `SessionConflict`. Never pass an
        id that came from a client: web and tool paths always let the server issue one.
        """
        session = await self.new_session(user_id, data, preferences=preferences, session_id=session_id)
        await self.store.set(session)
        return session

    async def new_session(
        self,
        user_id: str | None = None,
        data: dict[str, Any] | None = None,
        *,
        preferences: dict[str, Any] | None = None,
        session_id: str | None = None,
        load_scopes: bool = True,
    ) -> Session:
        """Build a new session exactly as `create_session` does, but do not save it.

        For lazy callers (the web middleware) that write a record only once there is
        something in it: save it with `update_session`. Reads the scopes, writes nothing;
        with `load_scopes` False it does no I/O at all, and the session starts without the
        ``user:`` / ``app:`` keys and user preferences (they show once it is loaded again).
        """
        uid = None if user_id is None else validate_user_id(user_id)
        sid = new_session_id() if session_id is None else validate_session_id(session_id)
        now = self.clock()
        session = Session(session_id=sid, user_id=uid, created_at=now, last_accessed_at=now)
        session.expiry_at = self.expiry_for(session, now)
        if load_scopes:
            scopes = await self.store.load_scopes(uid)
            session.state.update(scopes.state)
            session.preferences.update(scopes.preferences)
        # The scope values are the baseline: only what the caller adds counts as a change.
        session.mark_clean()
        session.version = 0
        if data:
            for key, value in data.items():
                session.set(key, value)
        if preferences:
            session.preferences.update(preferences)
        session.last_accessed_at = now
        return session

    @traced("update_session")
    async def update_session(self, session: Session) -> Session:
        """Save the session's changes (touching it); concurrent changes to other keys survive.

        On a version conflict the delta is re-applied to a fresh copy and saved again; `session`
        then holds the merged result. Raises `SessionNotFound` if the session was deleted or
        expired meanwhile, `SessionConflict` after `max_retries` lost races. Saves and mutates
        of one session through this manager take turns, so only other processes race them.

        Retrying after `StoreUnavailable` is safe: the failed save's outcome was unknown, and if
        it was applied after all, the retry recognises it (by its write id in the record) and
        saves only what changed since, instead of appending its history entries twice.
        """
        async with self._turns.of((asyncio.get_running_loop(), validate_session_id(session.session_id))):
            return await self._save(session)

    async def _save(self, session: Session) -> Session:
        now = self.clock()
        session.last_accessed_at = now
        session.expiry_at = self.expiry_for(session, now)
        # The delta is computed only when a conflict needs it: a failed save leaves `session`
        # untouched, so it still describes the same changes (saves the work on the common path).
        delta: SessionDelta | None = None
        target = session
        for attempt in range(self.max_retries):
            try:
                await self.store.set(target)
            except SessionConflict:
                pending = session.pending_write
                if session.version == 0 and pending is None:
                    raise  # the id exists, and not because an earlier try of this insert landed
                fresh = await self.store.get(session.session_id)
                if fresh is None:
                    if session.version == 0:
                        raise
                    raise SessionNotFound("the session was deleted or expired while it was being saved") from None
                if pending is not None:
                    session.pending_write = None
                    if landed(pending, fresh):
                        # An earlier try of this very save was applied after all (its outcome was
                        # unknown): take the stored copy, then save only what changed since then.
                        logger.info("session %s: a save reported as failed had landed", id_hash(session.session_id))
                        rest = session.changes().without(pending.sent)
                        rest.fields.pop("expiry_at", None)  # the landed save stamped the access
                        session.adopt(fresh)
                        if rest.is_empty():
                            return session
                        rest.apply(session)
                        delta, target = None, session
                        continue
                if session.version == 0:
                    raise
                if delta is None:
                    delta = session.changes()
                delta.apply(fresh)
                now = self.clock()
                fresh.last_accessed_at = now
                fresh.expiry_at = self.expiry_for(fresh, now)
                target = fresh
                await self._backoff(attempt)
                continue
            except StoreUnavailable:
                carried = target.pending_write
                if target is not session and carried is not None:
                    # The try that failed carried the caller's changes on a fresher copy.
                    sent = (delta if delta is not None else session.changes()).copy()
                    session.pending_write = PendingWrite(carried.write_id, sent)
                raise
            if target is not session:
                session.adopt(target)
            session.pending_write = None
            set_attribute(ATTR_RETRIES, attempt)
            return session
        raise SessionConflict(
            f"session {id_hash(session.session_id)}: gave up after {self.max_retries} conflicting saves"
        )

    @traced("mutate")
    async def mutate(self, session_id: str, fn: MutateFn) -> Session:
        """Apply `fn(session)` (sync or async, mutating in place) and save; re-run on conflict.

        `fn` always sees the latest saved state, so read-modify-write (counters) is exact for
        the session's own keys. Shared ``user:``/``app:`` keys and user preferences are written
        per key, last-writer-wins across sessions: keep exact counters in session keys.
        Returns the saved session. Raises `SessionNotFound` if the session is gone.

        Mutates of one session through this manager take turns (first come, first served), so
        they never conflict with each other: under heavy contention on one key each still does
        one load and one save, and none is starved into `SessionConflict`. Saves from elsewhere
        (other processes, `update_session`) are still raced with compare-and-set and retries.
        """
        sid = validate_session_id(session_id)
        async with self._turns.of((asyncio.get_running_loop(), sid)):
            return await self._mutate(sid, fn)

    async def _mutate(self, sid: str, fn: MutateFn) -> Session:
        for attempt in range(self.max_retries):
            session = await self.store.get(sid)
            if session is None:
                raise SessionNotFound("the session does not exist or has expired")
            result = fn(session)
            if inspect.isawaitable(result):
                await result
            now = self.clock()
            session.last_accessed_at = now
            session.expiry_at = self.expiry_for(session, now)
            try:
                await self.store.set(session)
            except SessionConflict:
                await self._backoff(attempt)
                continue
            set_attribute(ATTR_RETRIES, attempt)
            return session
        raise SessionConflict(f"session {id_hash(sid)}: gave up after {self.max_retries} conflicting saves")

    @traced("refresh_session")
    async def refresh_session(self, session_id: str, extend_lifetime: bool = True) -> Session | None:
        """Touch the session now and (by default) renew its idle deadline; None if it is gone."""
        sid = validate_session_id(session_id)
        session = await self.store.get(sid)
        if session is None:
            return None
        now = self.clock()
        expiry = self.expiry_for(session, now) if extend_lifetime else session.expiry_at
        if not await self.store.touch(sid, now, expiry):
            return None
        session.last_accessed_at = now
        session.expiry_at = expiry
        session.mark_field_clean("expiry_at")
        return session

    @traced("regenerate_id")
    async def regenerate_id(self, session_id: str) -> Session:
        """Move the session to a fresh id and kill the old one at once (call it on login)."""
        sid = validate_session_id(session_id)
        return await self.store.rename(sid, new_session_id())

    @traced("login")
    async def login(self, session_id: str, user_id: str, *, keep: Keep = "session") -> Session:
        """The login step in one call: move the session to a fresh id (the old one stops working
        at once, as `regenerate_id`), bind `user_id`, and carry the visitor's preferences into
        the user's scope, so the user's next session, on any device, starts with them.

        `keep` says whose value wins when both have a preference: ``"session"`` (the visitor's
        choices, the default) or ``"user"`` (the stored user's; the visitor's other keys are
        still carried). The session's own state keys, history and the rest stay with the
        session; ``temp:`` keys are never stored. Returns the saved session under its new id.
        `agent_sessions.login` documents the steps and what a crash between them leaves.

        Raises `InvalidKeepPolicy`, `InvalidSessionId` or `InvalidUserId` before any I/O,
        `SessionNotFound` if the session is gone (or a concurrent login rotated it first),
        `SessionOwnedByAnotherUser` if it is bound to another user (nothing done),
        `SessionTooLarge` if the carried preferences would grow the user scope past the store's
        `max_scope_bytes` (before anything is written or rotated). A session
        already bound to `user_id` is only rotated. A save of the old id racing the login either
        lands before the rotation (and is carried) or raises `SessionNotFound`.
        """
        return await log_in(self, session_id, user_id, keep=keep)

    @traced("delete_session")
    async def delete_session(self, session_id: str) -> None:
        """Delete the session; concurrent writers then get `SessionNotFound`."""
        await self.store.delete(validate_session_id(session_id))

    # ------------------------------------------------------------------ cleanup
    @traced("cleanup", session=False)
    async def cleanup(self, force: bool = False) -> int:
        """Remove expired sessions (unless the interval has not passed and not `force`)."""
        now = self.clock()
        if not force and (now - self.last_cleanup) < self.cleanup_interval:
            return 0
        count = await self.store.cleanup_expired()
        self.last_cleanup = now
        if count:
            logger.info("removed %d expired sessions", count)
        return count

    async def _cleanup_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cleanup_interval)
            try:
                await self.cleanup(force=True)
            except Exception:
                # The loop must outlive a transient store outage; the failure is reported, not hidden.
                logger.exception("session cleanup failed; retrying in %s s", self.cleanup_interval)

    @staticmethod
    async def _backoff(attempt: int) -> None:
        # Jittered exponential backoff, capped: contenders spread out instead of colliding again.
        await asyncio.sleep(random.uniform(0, min(0.05, 0.0005 * (2 ** min(attempt, 10)))))

    # ------------------------------------------------------------------ one user's data
    def register_data_holder(self, holder: SessionDataHolder) -> None:
        """Have `erase_user` also erase what `holder` keeps for the user's sessions (a
        `DatabaseConversationStore` or `RedisConversationStore`), and `export_user` export it
        (an `ExportableDataHolder`). Registering twice is one."""
        if not any(known is holder for known in self.data_holders):
            self.data_holders.append(holder)

    @traced("erase_user", session=False)
    async def erase_user(self, user_id: str) -> ErasureReport:
        """Erase every session of `user_id` (history, index entries), its user scope and what
        the registered data holders keep for it; idempotent, safe against concurrent saves
        (see `agent_sessions.lifecycle`). Returns the counts of what was removed."""
        return await erase_user(self.store, user_id, self.data_holders)

    async def export_user(
        self, user_id: str, path: str | os.PathLike[str], *, include_auth: bool = False
    ) -> ExportReport:
        """Write everything the store and the registered data holders (the conversation stores)
        hold about `user_id` to `path` in the backup format (see `agent_sessions.lifecycle`); a
        registered holder that cannot export is named in the report's `not_exported`."""
        return await export_user(self.store, user_id, path, include_auth=include_auth, holders=self.data_holders)

    # ------------------------------------------------------------------ search
    @traced("search_history", session=False)
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
        """Rank the history entries of all `user_id`'s live sessions for `query`, best first.

        With `user_id` None, search the one session `session_id` (an anonymous session); with
        both, that session only if it is the user's. `types` keeps only entries of those types,
        `since` only entries with ``timestamp >= since``. Any string is a valid query (a blank
        one finds nothing). Raises `InvalidSearchQuery` for bad arguments (neither id, a NUL
        in the query, a bad `limit`), `SearchUnavailable` on Redis (no full-text engine).
        """
        return await self.store.search_history(
            user_id, query, limit=limit, types=types, since=since, session_id=session_id
        )
