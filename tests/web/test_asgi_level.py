"""The middleware at the ASGI message level: raw header bytes, message order, scope pass-through."""

from __future__ import annotations

from typing import Any

import pytest
from starlette.requests import Request

from agent_sessions import SessionManager, SessionStore
from agent_sessions.ids import is_valid_session_id
from agent_sessions.integrations.asgi import SessionMiddleware, get_session

from .support import StoreCalls, asgi_call, build_app, cookie_attributes, start_headers

Message = dict[str, Any]


@pytest.mark.parametrize(
    "raw",
    [
        b"session_id=" + b"A" * 20 + b"\r\nSet-Cookie: evil=1",
        b"session_id=" + b"A" * 43 + b"\nX-Injected: evil",
        b"session_id=" + b"A" * 43 + b"\x00",
        b'session_id="\\012\\015Set-Cookie: evil=1"',
    ],
    ids=["crlf", "lf", "nul", "quoted-octal-crlf"],
)
async def test_control_characters_in_the_cookie_are_rejected_before_io_and_never_reflected(
    raw: bytes, manager: SessionManager, store: SessionStore
) -> None:
    calls = StoreCalls(store)
    messages = await asgi_call(build_app(manager), "POST", "/state/k?value=v", [(b"cookie", raw)])
    headers = start_headers(messages)
    assert "load_record" not in calls.calls
    assert all("evil" not in value and "\n" not in value and "\r" not in value for _, value in headers)
    [(name, value, _)] = [cookie_attributes(v) for k, v in headers if k == "set-cookie"]
    assert name == "session_id" and is_valid_session_id(value)


async def test_streaming_response_start_carries_the_cookie_and_the_session_is_saved_by_then(
    manager: SessionManager,
) -> None:
    seen: list[tuple[str, bool]] = []

    async def on_message(message: Message) -> None:
        if message["type"] == "http.response.start":
            cookies = [v.decode() for k, v in message["headers"] if k == b"set-cookie"]
            sid = cookie_attributes(cookies[0])[1]
            saved = await manager.get_session(sid)
            seen.append(("start", saved is not None and saved.get("k") == "written"))
        else:
            seen.append(("body", bool(message.get("body"))))

    await asgi_call(build_app(manager), "POST", "/stream/k", on_message=on_message)
    assert seen[0] == ("start", True)
    assert [kind for kind, _ in seen[1:]] == ["body", "body", "body"]


async def test_existing_vary_header_is_extended_not_replaced(manager: SessionManager) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await get_session(Request(scope))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"vary", b"Accept-Encoding")]})
        await send({"type": "http.response.body", "body": b""})

    messages = await asgi_call(SessionMiddleware(app, manager), "GET", "/")
    assert [v for k, v in start_headers(messages) if k == "vary"] == ["Accept-Encoding, Cookie, X-Session-ID"]


@pytest.mark.parametrize("scope_type", ["websocket", "lifespan"])
async def test_websocket_and_lifespan_scopes_pass_through_untouched(
    scope_type: str, manager: SessionManager, store: SessionStore
) -> None:
    calls = StoreCalls(store)
    received: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        received.append((scope, receive, send))

    scope: dict[str, Any] = {"type": scope_type, "headers": [(b"cookie", b"session_id=" + b"A" * 43)]}
    snapshot = dict(scope)

    async def receive() -> Message:
        return {}

    async def send(message: Message) -> None:
        return None

    await SessionMiddleware(app, manager)(scope, receive, send)
    assert received == [(scope, receive, send)]
    assert scope == snapshot  # no state, no session handle added
    assert calls.calls == []


async def test_get_session_without_the_middleware_explains_what_is_missing() -> None:
    request = Request({"type": "http", "headers": [], "method": "GET", "path": "/"})
    with pytest.raises(RuntimeError, match="add SessionMiddleware"):
        await get_session(request)


async def test_handle_refuses_rotation_and_logout_once_the_response_has_started(manager: SessionManager) -> None:
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        handle = scope["state"]["session_handle"]
        (await handle.load()).set("k", "v")
        await send({"type": "http.response.start", "status": 200, "headers": []})
        for action in (handle.regenerate_id, handle.destroy):
            try:
                await action()
            except RuntimeError as exc:
                errors.append(str(exc))
        await send({"type": "http.response.body", "body": b""})

    await asgi_call(SessionMiddleware(app, manager), "GET", "/")
    assert len(errors) == 2 and all("after the response has started" in e for e in errors)
