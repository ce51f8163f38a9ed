"""`SessionMiddleware` (pure ASGI) and the FastAPI dependencies `get_session` and
`get_request_session`. The contract is in the package docstring (`agent_sessions.integrations.asgi`)."""

from __future__ import annotations

import logging
from typing import assert_never

from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection, Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ...errors import SessionNotFound, StoreUnavailable
from ...manager import SessionManager
from ...session import Session
from .cookies import CookiePolicy, Credential, SameSite
from .request_session import Commit, RequestSession, SessionPhase

__all__ = ["SessionMiddleware", "get_request_session", "get_session"]

logger = logging.getLogger(__name__)

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


class SessionMiddleware:
    """Server-side sessions for every HTTP request: ``request.state.session`` is the `Session`.

    Keyword arguments: the cookie's name and attributes,
    `header_name` (the fallback credential for API clients; None disables it) and
    `create_session` (whether a request without a live session gets a new one, or None).
    `lazy=True` defers the load until a handler awaits `get_session` (or the handle's
    `load()`): no store I/O at all for requests that never ask, but ``request.state.session``
    is None until then. `store_timeout` bounds every store call the middleware makes (None:
    rely on the store's own timeouts). See `agent_sessions.integrations.asgi` for the contract.
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
        lazy: bool = False,
        store_timeout: float | None = 5.0,
    ) -> None:
        self.cookies = CookiePolicy(
            name=cookie_name,
            max_age=cookie_max_age,
            path=cookie_path,
            domain=cookie_domain,
            secure=cookie_secure,
            httponly=cookie_httponly,
            samesite=cookie_samesite,
            header_name=header_name,
        )
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
        self.lazy = lazy
        self.store_timeout = store_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        state = scope.setdefault("state", {})
        credential = self.cookies.credential(scope)
        handle = RequestSession(
            self.session_manager,
            credential,
            state,
            create_session=self.create_session,
            store_timeout=self.store_timeout,
        )
        state["session_handle"] = handle
        if not self.lazy:
            try:
                await handle.load()  # no I/O without a credential: a new visitor's session is built
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
                    commit = await handle.commit(status)
                except StoreUnavailable as exc:
                    raise _ResponseReplaced(503, _UNAVAILABLE_BODY) from exc
                except SessionNotFound as exc:
                    raise _ResponseReplaced(409, _ENDED_BODY) from exc
                extra = self._answer(commit, credential)
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
        if started and status < 500 and handle.has_unsaved_changes:
            logger.warning(
                "session changes made after the response started were not saved; "
                "make them before returning the response or call request.state.session_handle.save()"
            )

    def _answer(self, commit: Commit, credential: Credential) -> list[tuple[str, str]]:
        """The headers the response carries for the phase the request ended in."""
        phase, session = commit.phase, commit.session
        if phase is SessionPhase.PENDING:
            return []  # the session was never looked at: the response does not depend on it
        cookies = self.cookies
        headers = [("vary", name) for name in cookies.vary]
        send_id = False
        expire = False
        match phase:
            case SessionPhase.CREATED | SessionPhase.ROTATED:
                send_id = True
            case SessionPhase.RENEWED:
                # Only a cookie with a Max-Age has an expiry to follow; a header client keeps its id.
                send_id = cookies.max_age is not None and credential.transport == "cookie"
            case SessionPhase.DESTROYED | SessionPhase.REPLACED:
                expire = credential.had_cookie
            case SessionPhase.ABSENT | SessionPhase.FRESH | SessionPhase.LOADED | SessionPhase.SENT:
                pass
            case _:
                assert_never(phase)
        if send_id and session is not None:
            if credential.transport == "header":
                # A header client gets its new id in the header, never as a cookie.
                headers.append((cookies.header_label, session.session_id))
            else:
                now = self.session_manager.clock()
                headers.append(("set-cookie", cookies.issue(session.session_id, session.expiry_at, now)))
        elif expire:
            headers.append(("set-cookie", cookies.expire()))
        return headers

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
    """FastAPI dependency: the request's `RequestSession` handle (for login and logout)."""
    return _handle(request)


async def get_session(request: Request) -> Session | None:
    """FastAPI dependency: the request's session (``request.state.session``; loaded here with
    ``lazy=True``). A new, unsaved session when the request has none (None if the middleware
    has ``create_session=False``); changes are saved when the response starts.
    """
    return await _handle(request).load()


def _handle(conn: HTTPConnection) -> RequestSession:
    handle = conn.scope.get("state", {}).get("session_handle")
    if not isinstance(handle, RequestSession):
        raise RuntimeError("no session on this request: add SessionMiddleware to the application")
    return handle
