"""`RequestSession`: the session of one HTTP request, as an explicit state machine.

The request session is always in one `SessionPhase`; every change goes through `advance`, one
table of `(phase, event) -> phase`. The phase at response start alone decides what the
middleware sends back (see `SessionMiddleware`):

=========== =============================================== ==================================
phase       meaning                                         answered with
=========== =============================================== ==================================
PENDING     lazy mode: the credential is not looked up yet  nothing (no I/O happened)
ABSENT      no live session, and none started               ``Vary``
FRESH       a new session in hand, never written            ``Vary``
LOADED      the client's live session, expiry not renewed   ``Vary``
RENEWED     the client's session, written or renewed        ``Vary``; the cookie if it has
                                                            a ``Max-Age`` to follow
CREATED     a new session, first written in this request    ``Vary``; the new id
ROTATED     moved to a fresh id in this request             ``Vary``; the new id
DESTROYED   deleted in this request, nothing in hand        ``Vary``; the deletion cookie
REPLACED    a new session in hand after a destroy, not      ``Vary``; the deletion cookie
            written (written: CREATED)
SENT        the response has started                        (terminal)
=========== =============================================== ==================================
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal, TypeVar, overload

from ...errors import SessionNotFound, StoreUnavailable
from ...ids import id_hash, new_session_id, validate_user_id
from ...login import Keep, check_keep
from ...manager import SessionManager
from ...session import Session
from .cookies import Credential, Transport

__all__ = ["Commit", "SessionEvent", "SessionPhase", "RequestSession", "advance"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


class SessionPhase(Enum):
    """Where a request's session stands (see the module docstring for each phase)."""

    PENDING = "pending"
    ABSENT = "absent"
    FRESH = "fresh"
    LOADED = "loaded"
    RENEWED = "renewed"
    CREATED = "created"
    ROTATED = "rotated"
    DESTROYED = "destroyed"
    REPLACED = "replaced"
    SENT = "sent"


class SessionEvent(Enum):
    """What can happen to a request's session."""

    FOUND = "found"  # the client's live session was loaded
    NONE = "none"  # there is no live session and none is started
    STARTED = "started"  # a new, unsaved session is handed out
    WRITTEN = "written"  # the record was written or its expiry renewed in the store
    ROTATED = "rotated"  # the session moved to a fresh id
    DESTROYED = "destroyed"  # the session was deleted
    SENT = "sent"  # the response started


P, E = SessionPhase, SessionEvent
_IN_HAND = (P.FRESH, P.LOADED, P.RENEWED, P.CREATED, P.ROTATED, P.REPLACED)
_TRANSITIONS: dict[tuple[SessionPhase, SessionEvent], SessionPhase] = {
    (P.PENDING, E.FOUND): P.LOADED,
    (P.PENDING, E.NONE): P.ABSENT,
    (P.PENDING, E.STARTED): P.FRESH,
    (P.ABSENT, E.STARTED): P.FRESH,
    (P.DESTROYED, E.STARTED): P.REPLACED,
    (P.FRESH, E.WRITTEN): P.CREATED,
    (P.REPLACED, E.WRITTEN): P.CREATED,
    (P.LOADED, E.WRITTEN): P.RENEWED,
    (P.RENEWED, E.WRITTEN): P.RENEWED,
    (P.CREATED, E.WRITTEN): P.CREATED,
    (P.ROTATED, E.WRITTEN): P.ROTATED,
    # A session after the response started can still be saved (`RequestSession.save`).
    (P.SENT, E.WRITTEN): P.SENT,
    # A never-written session only changes its id: nothing to announce yet.
    (P.FRESH, E.ROTATED): P.FRESH,
    (P.REPLACED, E.ROTATED): P.REPLACED,
    **{(phase, E.ROTATED): P.ROTATED for phase in (P.LOADED, P.RENEWED, P.CREATED, P.ROTATED)},
    **{(phase, E.DESTROYED): P.DESTROYED for phase in (P.PENDING, P.ABSENT, P.DESTROYED, *_IN_HAND)},
    **{(phase, E.SENT): P.SENT for phase in SessionPhase},
}
del P, E


def advance(phase: SessionPhase, event: SessionEvent) -> SessionPhase:
    """The phase after `event` in `phase`; `RuntimeError` for a transition that cannot happen."""
    try:
        return _TRANSITIONS[phase, event]
    except KeyError:
        raise RuntimeError(f"request session: no transition for {event.name} in phase {phase.name}") from None


@dataclass(frozen=True, slots=True)
class Commit:
    """What the middleware answers with: the phase the request ended in and its session."""

    phase: SessionPhase
    session: Session | None


class RequestSession:
    """The session of one HTTP request, at ``request.state.session_handle``.

    `SessionMiddleware` loads it before the application runs (unless ``lazy=True``) and saves
    its changes when the response starts. Use the handle to log in (`login`: rotate the id, bind
    the user, carry the visitor's preferences; `regenerate_id` only rotates), log out
    (`destroy`), save early (`save`) or pick up a save made elsewhere (`refresh`). Every store
    call it makes is bounded by the middleware's `store_timeout` (`StoreUnavailable` past it).
    """

    def __init__(
        self,
        manager: SessionManager,
        credential: Credential,
        state: dict[str, Any],
        *,
        create_session: bool = True,
        store_timeout: float | None = 5.0,
    ) -> None:
        self._manager = manager
        self._credential = credential
        self._state = state  # the request's ``scope["state"]``: kept pointing at the session
        self._create_session = create_session
        self._store_timeout = store_timeout
        self._phase = SessionPhase.PENDING
        self._session: Session | None = None
        self._seen_version = 0  # the version `_session` had when this handle got it
        self._lock = asyncio.Lock()
        state["session"] = None
        state["session_id"] = None

    # ------------------------------------------------------------------ inspection
    @property
    def phase(self) -> SessionPhase:
        """Where this request's session stands."""
        return self._phase

    @property
    def transport(self) -> Transport:
        """How the session id travels for this request: "cookie" or "header"."""
        return self._credential.transport

    @property
    def session(self) -> Session | None:
        """The session in hand, without any I/O (None before it is loaded, or after `destroy`)."""
        return self._session

    @property
    def loaded(self) -> bool:
        """True once the request's credential was looked up (always, unless ``lazy=True``)."""
        return self._phase is not SessionPhase.PENDING

    @property
    def is_new(self) -> bool:
        """True when the session in hand was started in this request (it may not be saved yet)."""
        return self._phase in (SessionPhase.FRESH, SessionPhase.CREATED, SessionPhase.REPLACED)

    @property
    def has_unsaved_changes(self) -> bool:
        """True when the session in hand has changes not saved yet."""
        session = self._session
        return session is not None and not session.changes().is_empty()

    # ------------------------------------------------------------------ the public actions
    @overload
    async def load(self, *, create: Literal[True]) -> Session: ...

    @overload
    async def load(self, *, create: bool | None = None) -> Session | None: ...

    async def load(self, *, create: bool | None = None) -> Session | None:
        """The request's session: the client's live session, else a new unsaved one.

        With `create` False (default: the middleware's `create_session`) there is no new one:
        None. A new session gets a fresh server-side id and is written only once it has
        changes. Raises `StoreUnavailable` when the store cannot be reached.
        """
        async with self._lock:
            return await self._load(self._create_session if create is None else create)

    async def save(self) -> Session:
        """Save the session's changes now (creating it if new) instead of at response start.

        Use it before handing `session_id` to code that loads the session itself (an agent
        run), or to persist changes made after the response has started (existing sessions
        only: a new session cannot get its cookie any more).
        """
        async with self._lock:
            session = await self._load(True)
            if self._phase is SessionPhase.SENT and session.version == 0:
                raise RuntimeError("the response has started: a new session can no longer be issued")
            if session.version == 0 or not session.changes().is_empty():
                await self._bounded(self._manager.update_session(session))
                self._advance(SessionEvent.WRITTEN)
            return session

    async def refresh(self) -> Session | None:
        """Reload the session from the store (unsaved changes kept), renew its idle deadline, and
        re-send the cookie with the response.

        Call it after code outside this handle saved the session (an agent run through the
        manager), to see those changes. Returns the session in hand when it was never written
        (None if there is none); raises `SessionNotFound` if it was deleted or expired meanwhile.
        """
        async with self._lock:
            self._check_not_sent("refresh the session")
            session = self._session
            if session is None or session.version == 0:
                return session
            fresh = await self._bounded(self._manager.refresh_session(session.session_id))
            if fresh is None:
                raise SessionNotFound("the session was deleted or expired during the request")
            pending = session.changes()
            session.adopt(fresh)
            pending.apply(session)
            self._advance(SessionEvent.WRITTEN)
            return session

    async def regenerate_id(self) -> Session:
        """Move the session to a fresh id and kill the old one at once (on a privilege change;
        to log a user in, `login` does this, binds the user and carries the preferences).

        Unsaved changes are kept (and saved with the response). Starts a session if there is
        none. Returns the same `Session` object, now under its new id.
        """
        async with self._lock:
            self._check_not_sent("regenerate the session id")
            session = await self._load(True)
            if session.version == 0:
                session.session_id = new_session_id()  # never written: no record to move
            else:
                pending = session.changes()
                renamed = await self._bounded(self._manager.regenerate_id(session.session_id))
                session.adopt(renamed)
                pending.apply(session)
                logger.info("session rotated to %s", id_hash(session.session_id))
            self._advance(SessionEvent.ROTATED)
            self._state["session_id"] = session.session_id
            return session

    async def login(self, user_id: str, *, keep: Keep = "session") -> Session:
        """Log `user_id` in: the session moves to a fresh id (the old one dies at once, the new
        one goes out with the response), is bound to the user, and the visitor's preferences are
        carried into the user's scope by `keep` (`SessionManager.login`).

        The visitor's unsaved changes are saved first, so the login carries them by the same
        policy (a session never written is created, then logged in). ``temp:`` keys of the
        request's `Session` are kept. Returns that `Session` object, now the user's under its
        new id. Raises `InvalidUserId` / `InvalidKeepPolicy` before any I/O,
        `SessionOwnedByAnotherUser` if the session is another user's (`destroy` it first),
        `SessionNotFound` if it ended meanwhile (a logout in another tab).
        """
        uid = validate_user_id(user_id)
        policy = check_keep(keep)
        async with self._lock:
            self._check_not_sent("log in")
            session = await self._load(True)
            if session.version == 0 or not session.changes().is_empty():
                await self._bounded(self._manager.update_session(session))
                self._advance(SessionEvent.WRITTEN)
            logged = await self._bounded(self._manager.login(session.session_id, uid, keep=policy))
            session.adopt(logged)
            self._advance(SessionEvent.ROTATED)
            self._state["session_id"] = session.session_id
            return session

    async def destroy(self) -> None:
        """Delete the session from the store now and expire the client's cookie; call it on logout.

        A later `load()` in the same request starts a new session.
        """
        async with self._lock:
            self._check_not_sent("destroy the session")
            target: str | None = None
            if self._session is not None:
                target = self._session.session_id if self._session.version > 0 else None
            elif self._phase is SessionPhase.PENDING:
                target = self._credential.session_id
            if target is not None:
                await self._bounded(self._manager.delete_session(target))
                logger.info("session %s destroyed", id_hash(target))
            self._session = None
            self._advance(SessionEvent.DESTROYED)
            self._state["session"] = None
            self._state["session_id"] = None

    async def commit(self, status: int) -> Commit:
        """Called by the middleware when the response starts: save the changes (unless `status`
        is a 5xx) and end the request's phase. Applications never call it."""
        async with self._lock:
            try:
                session = self._session
                if session is not None:
                    if status < 500 and not session.changes().is_empty():
                        await self._bounded(self._manager.update_session(session))
                        self._advance(SessionEvent.WRITTEN)
                    elif session.version > self._seen_version:
                        # Saved during the request by code holding this `Session` (a handler
                        # calling `SessionManager.update_session` itself):
                        # the save extended the stored expiry, so the cookie follows.
                        self._advance(SessionEvent.WRITTEN)
                return Commit(self._phase, session)
            finally:
                self._advance(SessionEvent.SENT)

    # ------------------------------------------------------------------ internals
    def _advance(self, event: SessionEvent) -> None:
        self._phase = advance(self._phase, event)

    def _check_not_sent(self, action: str) -> None:
        if self._phase is SessionPhase.SENT:
            raise RuntimeError(f"cannot {action} after the response has started: do it before returning the response")

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        """Await a store call, turning a timeout into `StoreUnavailable`."""
        if self._store_timeout is None:
            return await awaitable
        try:
            async with asyncio.timeout(self._store_timeout):
                return await awaitable
        except TimeoutError as exc:
            raise StoreUnavailable(f"the session store did not answer within {self._store_timeout} s") from exc

    @overload
    async def _load(self, create: Literal[True]) -> Session: ...

    @overload
    async def _load(self, create: bool) -> Session | None: ...

    async def _load(self, create: bool) -> Session | None:
        if self._session is not None:
            return self._session
        phase = self._phase
        if phase is SessionPhase.SENT:
            raise RuntimeError("the response has started: load the session before returning the response")
        if phase is SessionPhase.PENDING and self._credential.session_id is not None:
            client_id = self._credential.session_id
            started = self._manager.clock()
            found = await self._bounded(self._manager.get_session(client_id))
            if found is not None:
                self._advance(SessionEvent.FOUND)
                if found.last_accessed_at >= started:
                    self._advance(SessionEvent.WRITTEN)  # get_session renewed the stored expiry
                return self._use(found)
            logger.debug("session %s is unknown or expired; not adopted", id_hash(client_id))
        if not create:
            if phase is SessionPhase.PENDING:
                self._advance(SessionEvent.NONE)
            return None
        # A new visitor costs no I/O: the session is built without reading the shared scopes
        # (see `SessionMiddleware`: its `app:` keys show from the next request on).
        session = await self._manager.new_session(load_scopes=False)
        self._advance(SessionEvent.STARTED)
        return self._use(session)

    def _use(self, session: Session) -> Session:
        self._session = session
        self._seen_version = session.version
        self._state["session"] = session
        self._state["session_id"] = session.session_id
        return session
