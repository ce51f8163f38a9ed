"""Helpers for the web tests: the test app, clients over ASGI or a real socket, store call counting."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Annotated, Any

import httpx
import uvicorn
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse

from agent_sessions import Session, SessionManager, SessionStore
from agent_sessions.integrations.asgi import RequestSession, SessionMiddleware, get_request_session, get_session

Message = dict[str, Any]

#: The store primitives every backend implements (plus `rename`, which backends may override).
PRIMITIVES = (
    "load_record",
    "load_records",
    "write",
    "delete_record",
    "touch_record",
    "scope_rows",
    "write_scope_rows",
    "history_page",
    "user_session_ids",
    "delete_expired",
    "rename",
)


class StoreCalls:
    """Counts the store's I/O by wrapping its primitives on the instance (the database is real)."""

    def __init__(self, store: SessionStore) -> None:
        self.calls: list[str] = []
        for name in PRIMITIVES:
            original = getattr(store, name)
            setattr(store, name, self._counting(name, original))

    def _counting(self, name: str, original: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            return await original(*args, **kwargs)

        return wrapper

    def reset(self) -> None:
        self.calls.clear()


# Module level: FastAPI resolves the (postponed) annotations in this module's globals.
SessionDep = Annotated[Session, Depends(get_session)]
HandleDep = Annotated[RequestSession, Depends(get_request_session)]


def build_app(manager: SessionManager, **options: Any) -> FastAPI:
    """A FastAPI app with the middleware and one endpoint per behaviour under test."""
    app = FastAPI()
    app.add_middleware(SessionMiddleware, session_manager=manager, **options)
    app.state.release = asyncio.Event()

    @app.get("/static")
    async def static() -> dict[str, Any]:
        return {"ok": True}

    @app.get("/state")
    async def read_state(session: SessionDep) -> dict[str, Any]:
        if session is None:
            return {"state": None}
        return {"state": session.state, "preferences": session.preferences, "user_id": session.user_id}

    @app.post("/state/{key}")
    async def write_state(key: str, value: str, session: SessionDep) -> dict[str, Any]:
        session.set(key, value)
        return {"state": session.state}

    @app.get("/original")
    async def original_form(session: Session = Depends(get_session)) -> dict[str, Any]:  # noqa: B008
        return {"preferences": session.preferences if session else {}}

    @app.get("/ids")
    async def ids(request: Request) -> dict[str, Any]:
        before = request.state.session_id, request.state.session
        session = await request.state.session_handle.load()
        return {
            "before": [before[0], before[1] is not None],
            "after_matches": request.state.session_id == session.session_id and request.state.session is session,
        }

    @app.get("/request-state")
    async def request_state(request: Request) -> dict[str, Any]:
        # The original example's own dependency reads this attribute synchronously.
        session = request.state.session
        if session is None:
            return {"state": None}
        return {"state": session.state, "is_session": isinstance(session, Session)}

    @app.post("/fail/exception/{key}")
    async def fail_exception(key: str, session: SessionDep) -> dict[str, Any]:
        session.set(key, "written")
        raise RuntimeError("handler failed after changing the session")

    @app.post("/fail/status/{status}/{key}")
    async def fail_status(status: int, key: str, session: SessionDep) -> Response:
        session.set(key, "written")
        if 300 <= status < 400:
            return RedirectResponse("/state", status_code=status)
        return JSONResponse({"status": status}, status_code=status)

    @app.post("/stream/{key}")
    async def stream(key: str, session: SessionDep, wait: bool = False) -> StreamingResponse:
        session.set(key, "written")

        async def body() -> AsyncIterator[bytes]:
            yield b"first chunk\n"
            if wait:
                await app.state.release.wait()
            yield b"last chunk\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.post("/stream-late/{key}")
    async def stream_late(key: str, session: SessionDep) -> StreamingResponse:
        async def body() -> AsyncIterator[bytes]:
            yield b"started\n"
            session.set(key, "too late")  # after the response started: not saved
            yield b"done\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.post("/ended-meanwhile/{key}")
    async def ended_meanwhile(key: str, session: SessionDep) -> dict[str, Any]:
        session.set(key, "written")
        await manager.delete_session(session.session_id)  # as a logout in another tab would
        return {"saved": "the handler believes so"}

    @app.post("/login/{user_id}")
    async def login(user_id: str, handle: HandleDep) -> dict[str, Any]:
        session = await handle.regenerate_id()
        session.user_id = user_id
        session.set("logged_in", "yes")
        return {"user_id": user_id}

    @app.post("/logout")
    async def logout(handle: HandleDep) -> dict[str, Any]:
        await handle.destroy()
        return {"logged_out": True}

    @app.post("/logout-then-write/{key}")
    async def logout_then_write(key: str, handle: HandleDep) -> dict[str, Any]:
        await handle.destroy()
        fresh = await handle.load(create=True)
        fresh.set(key, "after logout")
        return {"ok": True}

    return app


def free_socket() -> socket.socket:
    """A listening-ready socket bound to a free port on 127.0.0.1 (no race on the port number)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on (connections are refused at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Run `app` under uvicorn on a free port, in this event loop; yield its base URL.

    Drives `uvicorn.Server`'s own startup and its lifespan, but stops it directly instead of
    through `serve()`'s main loop, which costs a 0.1 s tick plus a fixed 0.1 s sleep per server:
    a third of this suite's time. The client has closed its connections by then.
    """
    sock = free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on")
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)
    try:
        await server.startup(sockets=[sock])
    except SystemExit as exc:  # uvicorn exits when the app's startup (its lifespan) fails
        sock.close()
        raise RuntimeError(f"uvicorn failed to start (exit status {exc.code}; see its log)") from exc
    if server.should_exit:
        sock.close()
        raise RuntimeError("uvicorn failed to start (see its log)")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        for listener in server.servers:
            listener.close()
        for connection in list(server.server_state.connections):
            connection.shutdown()
        for listener in server.servers:
            await listener.wait_closed()
        await server.lifespan.shutdown()
        sock.close()


def no_cookie_jar() -> CookieJar:
    """A jar that keeps nothing: every test sends exactly the cookies it means to."""
    return CookieJar(policy=DefaultCookiePolicy(allowed_domains=[]))


@asynccontextmanager
async def open_client(app: Any, transport: str) -> AsyncIterator[httpx.AsyncClient]:
    """An httpx client to `app`: in-process ("asgi") or over a real socket to uvicorn ("socket")."""
    if transport == "asgi":
        asgi = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(
            transport=asgi, base_url="http://testserver", cookies=no_cookie_jar(), trust_env=False
        ) as client:
            yield client
    else:
        async with (
            serve(app) as base_url,
            # Plain HTTP on loopback: no TLS context to build, no proxy from the environment.
            httpx.AsyncClient(base_url=base_url, cookies=no_cookie_jar(), verify=False, trust_env=False) as client,
        ):
            yield client


def set_cookies(response: httpx.Response) -> list[str]:
    return response.headers.get_list("set-cookie")


def cookie_attributes(header: str) -> tuple[str, str, dict[str, str]]:
    """Split a Set-Cookie header into (name, value, {attribute lowercased: value})."""
    first, *rest = [part.strip() for part in header.split(";")]
    name, _, value = first.partition("=")
    attributes = {}
    for part in rest:
        key, _, val = part.partition("=")
        attributes[key.lower()] = val
    return name, value, attributes


def issued_id(response: httpx.Response, cookie_name: str = "session_id") -> str:
    """The session id of the response's single Set-Cookie for `cookie_name`."""
    matching = [cookie_attributes(h) for h in set_cookies(response)]
    matching = [m for m in matching if m[0] == cookie_name]
    assert len(matching) == 1, f"expected one Set-Cookie for {cookie_name}, got {set_cookies(response)}"
    return matching[0][1]


def cookie(session_id: str, name: str = "session_id") -> dict[str, str]:
    return {"Cookie": f"{name}={session_id}"}


async def asgi_call(
    app: Any,
    method: str,
    path: str,
    headers: list[tuple[bytes, bytes]] | None = None,
    *,
    on_message: Callable[[Message], Awaitable[None]] | None = None,
    scope_type: str = "http",
) -> list[Message]:
    """Call an ASGI app directly with raw header bytes; return every message it sent."""
    path_only, _, query = path.partition("?")
    scope = {
        "type": scope_type,
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path_only,
        "raw_path": path_only.encode(),
        "query_string": query.encode(),
        "root_path": "",
        "headers": headers or [],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[Message] = []
    request_sent = False

    async def receive() -> Message:
        nonlocal request_sent
        if not request_sent:
            request_sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.Event().wait()  # no disconnect: the app finishes on its own
        raise AssertionError("unreachable")

    async def send(message: Message) -> None:
        sent.append(message)
        if on_message is not None:
            await on_message(message)

    await app(scope, receive, send)
    return sent


def start_headers(messages: list[Message]) -> list[tuple[str, str]]:
    start = next(m for m in messages if m["type"] == "http.response.start")
    return [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in start.get("headers", [])]
