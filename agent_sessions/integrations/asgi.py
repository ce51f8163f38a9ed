"""`SessionMiddleware`: server-side sessions for Starlette and FastAPI, lazy and strict.

A pure ASGI middleware (the shape of Starlette's own session middleware): it wraps `send` and
adds its headers to ``http.response.start``. WebSocket and lifespan scopes pass through.

How a handler uses the session::

    app.add_middleware(SessionMiddleware, session_manager=manager)

    @app.post("/api/user/preferences")
    async def update(preferences: dict[str, Any], session: Session = Depends(get_session)):
        session.preferences.update(preferences)  # saved by the middleware, see below
        return {"preferences": session.preferences}

`request.state.session_handle` is a `RequestSession`, a lazy handle: nothing is read from the
store until a handler calls `await request.state.session_handle.load()` (the `get_session`
dependency does just that). In the default (lazy) mode `request.state.session` is that same
handle. `request.state.session_id` is None until the load, and afterwards the id of the loaded
session. Log in with `await request.state.session_handle.regenerate_id()` (fresh id, old one dead
at once), log out with `await request.state.session_handle.destroy()`. Before handing the id to
code that loads the session itself (an agent run), `await request.state.session_handle.save()`;
after it, `await request.state.session_handle.refresh()` to see its changes and renew the cookie.

Lazy or eager (``eager=``):

- Lazy (``eager=False``, the default): no store I/O at all for a request whose handler never
  loads the session. Use the `get_session` dependency (or the handle) to reach the `Session`.
- Eager (``eager=True``): the session is loaded before the application runs, and
  `request.state.session` is the `Session` itself (None with ``create_session=False`` when the
  request has no live session), as in the original design. This is the mode the original
  document's usage example 1 needs: it defines its own dependency returning
  ``request.state.session`` and reads ``session.preferences`` synchronously, which a lazy handle
  cannot serve (the session is not in memory before something awaits a store read). Add
  ``eager=True`` to its `add_middleware` call. The price: every HTTP request reads the store
  (the client's session, or the shared scopes for a new visitor), even one that never looks at
  the session. Everything else is the same as in lazy mode: an id the server did not issue is
  never adopted, a new session is only written once something is put in it, changes are saved
  at response start, and the handle (for login and logout) is at `request.state.session_handle`;
  after `destroy()`, `request.state.session` is None until the handle's `load()`. A store outage
  during the eager load answers 503 without calling the application.

Which id is used (precedence):

1. If the request carries the session cookie, that cookie is the only credential considered.
   Several cookies of that name (cookie tossing from a sibling domain) count as none.
2. Only when no session cookie is sent, the `header_name` header (``X-Session-ID``) is read; a
   repeated header counts as none.

A credential that is malformed (not exactly the shape of a server-issued id: checked before any
I/O), unknown, expired or deleted is never adopted: the request gets a new, empty session under a
fresh server-generated id, written only if the handler puts something in it.

When the session is saved: just before the response starts (``http.response.start``), so a
streaming response carries its cookie before its first body byte. Only a session with changes is
saved, with the manager's delta save (`SessionManager.update_session`: compare-and-set, changes
of concurrent requests to other keys survive). Changes made after the response has started (in a
streaming body, a background task) are not saved and are logged at WARNING; call
`RequestSession.save()` there if you must. A 5xx response or an unhandled exception saves
nothing. A 4xx or a redirect saves.

What goes back to the client:

- ``Set-Cookie`` only when the session was created (first written), rotated, destroyed, or its
  expiry was refreshed in the store while `cookie_max_age` is set (then ``Max-Age`` follows, never
  outliving the server-side session). Default attributes: ``HttpOnly; SameSite=Lax; Path=/``;
  ``Secure`` with `cookie_secure=True` (do that behind HTTPS). The deletion cookie on logout has
  the same attributes. Rotation and destruction happen in the store when called, so their cookie
  is sent whatever the status, unless the request ends with an unhandled exception (the error
  response is then produced outside this middleware; the old id is dead either way).
- A session that came in through the header is answered through the header: a new or rotated id
  is sent in `header_name`, never as a cookie. Nothing sent by the client is ever echoed.
- ``Vary: Cookie`` (and the header name) whenever the session was read.
- When the store is unavailable (`StoreUnavailable`, or no answer within `store_timeout`
  seconds) and the response has not started: ``503`` with no cookie change.
- When the session was deleted or expired by someone else (a logout in another tab) between
  `load()` and the save: ``409`` instead of the handler's response, nothing saved (a save never
  re-creates a deleted session).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
from collections.abc import Awaitable
from typing import Any, Literal, TypeVar, overload

try:
    from starlette.datastructures import MutableHeaders
    from starlette.requests import HTTPConnection, Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("agent_sessions.integrations.asgi needs Starlette: pip install agent-sessions[fastapi]") from exc

from ..errors import SessionNotFound, StoreUnavailable
from ..ids import id_hash, is_valid_session_id, new_session_id
from ..manager import SessionManager
from ..session import Session

__all__ = ["RequestSession", "SameSite", "SessionMiddleware", "get_request_session", "get_session"]

logger = logging.getLogger(__name__)

SameSite = Literal["lax", "strict", "none"]
Transport = Literal["cookie", "header"]

T = TypeVar("T")

_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 token: cookie and header names
_ATTRIBUTE = re.compile(r"[\x21-\x3a\x3c-\x7e]+")  # printable ASCII without ';' or spaces
_EPOCH = "Thu, 01 Jan 1970 00:00:00 GMT"
_UNAVAILABLE_BODY = b"Service Unavailable: the session store cannot be reached; retry later.\n"
_ENDED_BODY = b"Conflict: the session ended (logged out or expired) while this request changed it; nothing was saved.\n"


class _ResponseReplaced(Exception):
    """Raised from the wrapped `send` when the save at response start fails: the application's
    response must not go out; `SessionMiddleware.__call__` sends `status` instead.

    Not an `OSError` (unlike `StoreUnavailable`), so Starlette does not mistake it for a client
    disconnect.
    """

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(status)
        self.status = status
        self.body = body


class RequestSession:
    """The lazy session of one HTTP request, at ``request.state.session_handle`` (and at
    ``request.state.session`` in the default lazy mode).

    Nothing touches the store until `load()`. The middleware saves the loaded session's changes
    when the response starts; `regenerate_id()` and `destroy()` act on the store at once.
    """

    def __init__(
        self,
        middleware: SessionMiddleware,
        scope: Scope,
        client_id: str | None,
        transport: Transport,
        had_cookie: bool,
    ) -> None:
        self._mw = middleware
        self._state: dict[str, Any] = scope["state"]
        self._client_id = client_id
        #: How the session id travels for this request: "cookie" or "header".
        self.transport: Transport = transport
        self._had_cookie = had_cookie
        self._session: Session | None = None
        self._looked_up = False  # the client's id was resolved (or there was none)
        self._read = False  # `load()` was called: the response depends on the credential
        self._new = False  # `_session` was built here, not loaded from the store
        self._rotated = False
        self._destroyed = False
        self._refreshed = False  # the stored expiry was extended during this request
        self._seen_version = 0  # the version `_session` had when this handle got it
        self._committed = False
        self._eager = middleware.eager  # keep state["session"] pointing at the loaded Session
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ public API
    @property
    def session(self) -> Session | None:
        """The session `load()` returned, without any I/O (None before `load()`)."""
        return self._session

    @property
    def loaded(self) -> bool:
        """True once `load()` was called in this request."""
        return self._read

    @property
    def is_new(self) -> bool:
        """True when the session was started in this request (it may not be saved yet)."""
        return self._new

    @overload
    async def load(self, *, create: Literal[True]) -> Session: ...

    @overload
    async def load(self, *, create: bool | None = None) -> Session | None: ...

    async def load(self, *, create: bool | None = None) -> Session | None:
        """The request's session: the client's live session, else a new unsaved one.

        With `create` False (default: the middleware's `create_session`) there is no new one:
        None. A new session gets a fresh id and is written only once it has changes.
        Raises `StoreUnavailable` when the store cannot be reached.
        """
        async with self._lock:
            return await self._load(self._mw.create_session if create is None else create)

    async def save(self) -> Session:
        """Save the session's changes now (creating it if new) instead of at response start.

        Use it before handing `session_id` to code that loads the session itself (an agent
        run), or to persist changes made after the response has started (existing sessions
        only: a new session cannot get its cookie any more).
        """
        async with self._lock:
            session = await self._load(True)
            if self._committed and session.version == 0:
                raise RuntimeError("the response has started: a new session can no longer be issued")
            await self._persist(session)
            return session

    async def refresh(self) -> Session | None:
        """Reload the session from the store (unsaved changes kept), renew its idle deadline, and
        re-send the cookie with the response.

        Call it after code outside this handle saved the session (an agent run through the
        manager): the middleware does not see those saves, so without it the cookie's
        ``Max-Age`` would not follow the renewed expiry. Returns None if there is no stored
        session; raises `SessionNotFound` if it was deleted or expired meanwhile.
        """
        async with self._lock:
            self._check_not_committed("refresh the session")
            session = self._session
            if session is None or session.version == 0:
                return session
            fresh = await self._mw._bounded(self._mw.session_manager.refresh_session(session.session_id))
            if fresh is None:
                raise SessionNotFound("the session was deleted or expired during the request")
            pending = session.changes()
            session._adopt(fresh)
            pending.apply(session)
            self._refreshed = True
            return session

    async def regenerate_id(self) -> Session:
        """Move the session to a fresh id and kill the old one at once; call it on login.

        Unsaved changes are kept (and saved with the response). Creates the session if there
        is none. Returns the same `Session` object, now under its new id.
        """
        async with self._lock:
            self._check_not_committed("regenerate the session id")
            session = await self._load(True)
            if session.version == 0:
                # Never written: no record to move, only the id to replace.
                session.session_id = new_session_id()
            else:
                pending = session.changes()
                renamed = await self._mw._bounded(self._mw.session_manager.regenerate_id(session.session_id))
                session._adopt(renamed)
                pending.apply(session)
                self._rotated = True
                logger.info("session rotated to %s", id_hash(session.session_id))
            self._state["session_id"] = session.session_id
            return session

    async def destroy(self) -> None:
        """Delete the session from the store now and expire the client's cookie; call it on logout.

        A later `load()` in the same request starts a new session.
        """
        async with self._lock:
            self._check_not_committed("destroy the session")
            target: str | None = None
            if self._session is not None:
                target = self._session.session_id if self._session.version > 0 else None
            elif not self._looked_up:
                target = self._client_id
            if target is not None:
                await self._mw._bounded(self._mw.session_manager.delete_session(target))
                logger.info("session %s destroyed", id_hash(target))
            self._session = None
            self._looked_up = True
            self._new = self._rotated = self._refreshed = False
            self._destroyed = True
            self._state["session_id"] = None
            if self._eager:
                self._state["session"] = None

    # ------------------------------------------------------------------ internals
    def _check_not_committed(self, action: str) -> None:
        if self._committed:
            raise RuntimeError(f"cannot {action} after the response has started: do it before returning the response")

    @overload
    async def _load(self, create: Literal[True]) -> Session: ...

    @overload
    async def _load(self, create: bool) -> Session | None: ...

    async def _load(self, create: bool) -> Session | None:
        self._read = True
        if self._session is not None:
            return self._session
        manager = self._mw.session_manager
        if not self._looked_up:
            self._looked_up = True
            if self._client_id is not None:
                started = manager.clock()
                found = await self._mw._bounded(manager.get_session(self._client_id))
                if found is not None:
                    # get_session persisted a new access time (and expiry) iff it is fresh.
                    self._refreshed = found.last_accessed_at >= started
                    return self._use(found)
                logger.debug("session %s is unknown or expired; not adopted", id_hash(self._client_id))
        if not create:
            return None
        session = await self._mw._bounded(manager.new_session())
        self._new = True
        return self._use(session)

    def _use(self, session: Session) -> Session:
        self._session = session
        self._seen_version = session.version
        self._state["session_id"] = session.session_id
        if self._eager:
            self._state["session"] = session
        return session

    async def _persist(self, session: Session) -> None:
        if session.version > 0 and session.changes().is_empty():
            return
        await self._mw._bounded(self._mw.session_manager.update_session(session))
        self._refreshed = True

    async def _commit(self, status: int) -> list[tuple[str, str]]:
        """Save (unless 5xx) and return the headers to add to the response start."""
        async with self._lock:
            self._committed = True
            headers: list[tuple[str, str]] = []
            if not (self._read or self._destroyed):
                return headers
            if self._read:
                headers.extend(("vary", name) for name in self._mw._vary)
            session = self._session
            if session is not None and status < 500 and not session.changes().is_empty():
                await self._mw._bounded(self._mw.session_manager.update_session(session))
                self._refreshed = True
            if session is not None and session.version > self._seen_version:
                # Saved during the request by someone holding this `Session` (the handler through
                # `SessionManager.update_session`, as the original example does): every save
                # extends the stored expiry, so the cookie's Max-Age follows.
                self._refreshed = True
            saved = session is not None and session.version > 0
            created = saved and self._new
            if self.transport == "header":
                if session is not None and saved and (created or self._rotated):
                    headers.append((self._mw._header_label, session.session_id))
                return headers
            refreshed = self._refreshed and self._mw.cookie_max_age is not None
            if session is not None and saved and (created or self._rotated or refreshed):
                headers.append(("set-cookie", self._mw._cookie(session)))
            elif self._destroyed and self._had_cookie:
                headers.append(("set-cookie", self._mw._deletion_cookie()))
            return headers

    def _unsaved_after_commit(self) -> bool:
        session = self._session
        return session is not None and not session.changes().is_empty()


class SessionMiddleware:
    """Server-side sessions for every HTTP request, loaded lazily and saved at response start.

    Keyword arguments are those of the original design: the cookie's name and attributes,
    `header_name` (the fallback credential for API clients; None disables it) and
    `create_session` (whether `load()` / `get_session` start a new session when the request has
    none, or return None). `eager=True` loads the session before the application runs and puts
    the `Session` itself at ``request.state.session`` (what the original usage example 1 reads);
    the default loads it only when a handler asks. `store_timeout` bounds every store call the
    middleware makes (None: rely on the store's own timeouts). See the module docstring for the
    full contract.
    """

    def __init__(
        self,
        app: ASGIApp,
        session_manager: SessionManager,
        *,
        cookie_name: str = "session_id",
        cookie_max_age: int | None = None,
        cookie_path: str = "/",
        cookie_domain: str | None = None,
        cookie_secure: bool = False,
        cookie_httponly: bool = True,
        cookie_samesite: SameSite = "lax",
        header_name: str | None = "X-Session-ID",
        create_session: bool = True,
        eager: bool = False,
        store_timeout: float | None = 5.0,
    ) -> None:
        if not _TOKEN.fullmatch(cookie_name):
            raise ValueError("cookie_name must be a non-empty token (letters, digits and !#$%&'*+-.^_`|~)")
        if header_name is not None and not _TOKEN.fullmatch(header_name):
            raise ValueError("header_name must be a valid HTTP header name, or None")
        if not cookie_path.startswith("/") or not _ATTRIBUTE.fullmatch(cookie_path):
            raise ValueError("cookie_path must start with '/' and hold no spaces, ';' or control characters")
        if cookie_domain is not None and not _ATTRIBUTE.fullmatch(cookie_domain):
            raise ValueError("cookie_domain must hold no spaces, ';' or control characters")
        if cookie_samesite not in ("lax", "strict", "none"):
            raise ValueError("cookie_samesite must be 'lax', 'strict' or 'none'")
        if cookie_samesite == "none" and not cookie_secure:
            raise ValueError("cookie_samesite='none' requires cookie_secure=True (browsers reject it otherwise)")
        if cookie_max_age is not None and cookie_max_age <= 0:
            raise ValueError("cookie_max_age must be > 0 seconds, or None for a browser-session cookie")
        if store_timeout is not None and store_timeout <= 0:
            raise ValueError("store_timeout must be > 0 seconds, or None")
        self.app = app
        self.session_manager = session_manager
        self.cookie_name = cookie_name
        self.cookie_max_age = cookie_max_age
        self.cookie_path = cookie_path
        self.cookie_domain = cookie_domain
        self.cookie_secure = cookie_secure
        self.cookie_httponly = cookie_httponly
        self.cookie_samesite: SameSite = cookie_samesite
        self.header_name = header_name
        self.create_session = create_session
        self.eager = eager
        self.store_timeout = store_timeout

        self._cookie_key = cookie_name.encode("latin-1")
        self._header_key = header_name.lower().encode("latin-1") if header_name else None
        self._header_label = header_name.lower() if header_name else ""
        self._vary = ("Cookie", header_name) if header_name else ("Cookie",)
        attributes = [f"Path={cookie_path}"]
        if cookie_domain is not None:
            attributes.append(f"Domain={cookie_domain}")
        if cookie_secure:
            attributes.append("Secure")
        if cookie_httponly:
            attributes.append("HttpOnly")
        attributes.append(f"SameSite={cookie_samesite.capitalize()}")
        self._cookie_attributes = "; ".join(attributes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        state = scope.setdefault("state", {})
        handle = self._request_session(scope)
        state["session_handle"] = handle
        state["session"] = None if self.eager else handle
        state["session_id"] = None
        if self.eager:
            try:
                await handle.load()  # sets state["session"] (and "session_id") when there is one
            except StoreUnavailable as exc:
                logger.warning("session store unavailable; answering 503", exc_info=exc)
                await self._send_plain(send, 503, _UNAVAILABLE_BODY)
                return
        started = False
        status = 0

        async def send_wrapper(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                try:
                    extra = await handle._commit(status)
                except StoreUnavailable as exc:
                    raise _ResponseReplaced(503, _UNAVAILABLE_BODY) from exc
                except SessionNotFound as exc:
                    raise _ResponseReplaced(409, _ENDED_BODY) from exc
                if extra:
                    message.setdefault("headers", [])
                    headers = MutableHeaders(scope=message)
                    for name, value in extra:
                        if name == "vary":
                            headers.add_vary_header(value)
                        else:
                            headers.append(name, value)
                started = True
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except _ResponseReplaced as exc:
            if exc.status == 503:
                logger.warning("session store unavailable at save; answering 503", exc_info=exc.__cause__)
            else:
                logger.info("session ended before its changes could be saved; answering %d", exc.status)
            await self._send_plain(send, exc.status, exc.body)
            return
        except StoreUnavailable as exc:
            if started:
                raise
            logger.warning("session store unavailable; answering 503", exc_info=exc)
            await self._send_plain(send, 503, _UNAVAILABLE_BODY)
            return
        if started and status < 500 and handle._unsaved_after_commit():
            logger.warning(
                "session changes made after the response started were not saved; "
                "make them before returning the response or call request.state.session_handle.save()"
            )

    # ------------------------------------------------------------------ helpers
    def _request_session(self, scope: Scope) -> RequestSession:
        """Pick the credential (cookie first, then header) without any I/O; validate its shape."""
        cookies: list[bytes] = []
        header_values: list[bytes] = []
        for key, value in scope.get("headers", ()):
            if key == b"cookie":
                for part in value.split(b";"):
                    name, sep, raw = part.partition(b"=")
                    if sep and name.strip() == self._cookie_key:
                        cookies.append(raw.strip())
            elif self._header_key is not None and key == self._header_key:
                header_values.append(value.strip())
        transport: Transport = "cookie"
        values = cookies
        if not cookies and header_values:
            transport, values = "header", header_values
        client_id: str | None = None
        if len(values) == 1:
            candidate = values[0].decode("latin-1")
            if is_valid_session_id(candidate):
                client_id = candidate
            else:
                logger.debug("ignoring a malformed session id from the %s (length %d)", transport, len(candidate))
        elif len(values) > 1:
            logger.debug("ignoring %d conflicting session ids from the %s", len(values), transport)
        return RequestSession(self, scope, client_id, transport, had_cookie=bool(cookies))

    async def _bounded(self, awaitable: Awaitable[T]) -> T:
        """Await a store call, turning a timeout into `StoreUnavailable`."""
        if self.store_timeout is None:
            return await awaitable
        try:
            async with asyncio.timeout(self.store_timeout):
                return await awaitable
        except TimeoutError as exc:
            raise StoreUnavailable(f"the session store did not answer within {self.store_timeout} s") from exc

    def _cookie(self, session: Session) -> str:
        parts = [f"{self.cookie_name}={session.session_id}", self._cookie_attributes]
        if self.cookie_max_age is not None:
            max_age = self.cookie_max_age
            if session.expiry_at is not None:
                remaining = math.ceil(session.expiry_at - self.session_manager.clock())
                max_age = max(1, min(max_age, remaining))
            parts.append(f"Max-Age={max_age}")
        return "; ".join(parts)

    def _deletion_cookie(self) -> str:
        return f"{self.cookie_name}=; {self._cookie_attributes}; Max-Age=0; Expires={_EPOCH}"

    @staticmethod
    async def _send_plain(send: Send, status: int, body: bytes) -> None:
        headers = [
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
        ]
        if status == 503:
            headers.append((b"retry-after", b"5"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def get_request_session(request: Request) -> RequestSession:
    """FastAPI dependency: the request's lazy `RequestSession` handle (for login and logout)."""
    return _handle(request)


async def get_session(request: Request) -> Session | None:
    """FastAPI dependency: the request's session, loaded on first use (see `SessionMiddleware`).

    A new session when the request has none (None if the middleware has
    ``create_session=False``); changes are saved when the response starts.
    """
    return await _handle(request).load()


def _handle(conn: HTTPConnection) -> RequestSession:
    handle = conn.scope.get("state", {}).get("session_handle")
    if not isinstance(handle, RequestSession):
        raise RuntimeError("no session on this request: add SessionMiddleware to the application")
    return handle
