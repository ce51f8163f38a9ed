"""`SessionMiddleware`: server-side sessions for Starlette and FastAPI, strict and cheap.

A pure ASGI middleware (the shape of Starlette's own session middleware): it wraps `send` and
adds its headers to ``http.response.start``. WebSocket and lifespan scopes pass through.
``cookies.py`` reads the credential and builds cookies, ``request_session.py`` holds the
request's session as a state machine (`SessionPhase`), ``middleware.py`` ties them together.

How a handler uses the session::

    app.add_middleware(SessionMiddleware, session_manager=manager)

    @app.post("/api/user/preferences")
    async def update(preferences: dict[str, Any], session: Session = Depends(get_session)):
        session.preferences.update(preferences)  # saved by the middleware, see below
        return {"preferences": session.preferences}

``request.state.session`` is the `Session` itself (so an app's own dependency that returns it
gets a `Session`), and ``request.state.session_id`` its id:

- the client's live session when the request carries a known id (one store read, before the
  application runs);
- otherwise a new, unsaved session under a fresh server-generated id, built without any store
  I/O. It is written (and its cookie sent) only if something is put in it. Being built without
  I/O, it does not show the shared ``app:`` keys in the request that creates it: they show
  from the next request on (read them with ``manager.store.load_scopes(None)`` if a first
  request needs them);
- None with ``create_session=False`` when there is no live session.

A request without a session id costs no store I/O at all; a request with one costs one read
(and, once per `SessionManager.touch_interval`, a touch), whether or not the handler looks at
the session. ``lazy=True`` defers even that read until a handler awaits `get_session` (or
``request.state.session_handle.load()``); ``request.state.session`` is then None until the
load. A store outage during the load before the application answers 503 without calling it.

The handle, a `RequestSession`, is at ``request.state.session_handle`` (or
``Depends(get_request_session)``): log in with ``await handle.login(user_id)`` (fresh id, old
one dead at once, the user bound, the visitor's preferences carried into the user's scope:
`SessionManager.login`; ``keep="user"`` lets the stored user's values win), or only rotate
the id with ``await handle.regenerate_id()``; log out with ``await handle.destroy()``
(``request.state.session`` is then None until ``handle.load()`` starts a new one). Before
handing the id to code that loads the session itself (an agent run), ``await handle.save()``;
after it, ``await handle.refresh()`` to see its changes and renew the cookie.

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
of concurrent requests to other keys survive). A handler may also save it itself with
``await manager.update_session(session)``. Changes made after
the response has started (in a streaming body, a background task) are not saved and are logged
at WARNING; call `RequestSession.save()` there if you must. A 5xx response or an unhandled
exception saves nothing. A 4xx or a redirect saves.

What goes back to the client (decided by the `SessionPhase` the request ends in):

- ``Set-Cookie`` only when the session was created (first written), rotated, destroyed, or its
  expiry was renewed in the store while `cookie_max_age` is set (then ``Max-Age`` follows, never
  outliving the server-side session). Default attributes: ``HttpOnly; SameSite=Lax; Path=/``;
  ``Secure`` with `cookie_secure=True` (do that behind HTTPS). The deletion cookie on logout has
  the same attributes. Rotation and destruction happen in the store when called, so their cookie
  is sent whatever the status, unless the request ends with an unhandled exception (the error
  response is then produced outside this middleware; the old id is dead either way).
- A session that came in through the header is answered through the header: a new or rotated id
  is sent in `header_name`, never as a cookie. Nothing sent by the client is ever echoed.
- ``Vary: Cookie`` (and the header name) on every response whose session was looked up: every
  response, unless ``lazy=True`` and the handler never asked for the session.
- When the store is unavailable (`StoreUnavailable`, or no answer within `store_timeout`
  seconds) and the response has not started: ``503`` with no cookie change.
- When the session was deleted or expired by someone else (a logout in another tab) between
  the load and the save: ``409`` instead of the handler's response, nothing saved (a save never
  re-creates a deleted session).
"""

from __future__ import annotations

try:
    import starlette  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("agent_sessions.integrations.asgi needs Starlette: pip install agent-sessions[fastapi]") from exc

from .cookies import CookiePolicy, Credential, SameSite, Transport
from .middleware import SessionMiddleware, get_request_session, get_session
from .request_session import Commit, RequestSession, SessionEvent, SessionPhase, advance

__all__ = [
    "Commit",
    "CookiePolicy",
    "Credential",
    "RequestSession",
    "SameSite",
    "SessionEvent",
    "SessionMiddleware",
    "SessionPhase",
    "Transport",
    "advance",
    "get_request_session",
    "get_session",
]
