"""SessionMiddleware over HTTP, on every registered backend, in-process and over a real socket.

The root fixtures give a fresh store per backend (`store`, with the FakeClock `clock`) and a
`manager` on it (idle timeout 3600 s, so touches are throttled to every 900 s).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_sessions import SessionManager, SessionStore, new_session_id
from agent_sessions.ids import is_valid_session_id

from ..support import FakeClock
from .support import (
    StoreCalls,
    build_app,
    cookie,
    cookie_attributes,
    issued_id,
    open_client,
    set_cookies,
)

# ---------------------------------------------------------------------------- store I/O


async def test_request_without_a_session_id_does_no_store_io_and_sets_no_cookie(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    calls = StoreCalls(store)
    async with open_client(build_app(manager), transport) as client:
        for headers in ({}, cookie("not-a-server-issued-id"), {"X-Session-ID": "*"}):
            for path in ("/static", "/state", "/request-state"):
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, path
                assert set_cookies(response) == [], path
                # The handler may have used the (new, empty) session: a cache must not share it.
                assert "Cookie" in response.headers["vary"], path
    assert calls.calls == []


async def test_request_with_a_session_id_reads_the_store_once_before_the_handler_and_sets_no_cookie(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    calls = StoreCalls(store)
    async with open_client(build_app(manager), transport) as client:
        for headers in (cookie(existing.session_id), {"X-Session-ID": existing.session_id}):
            calls.reset()
            response = await client.get("/request-state", headers=headers)
            assert response.json() == {"state": {"k": "v"}, "is_session": True}
            assert set_cookies(response) == []
            assert calls.calls == ["load_record"]


async def test_lazy_mode_does_no_store_io_for_a_request_that_never_asks_for_the_session(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    calls = StoreCalls(store)
    async with open_client(build_app(manager, lazy=True), transport) as client:
        for headers in ({}, cookie(existing.session_id), {"X-Session-ID": existing.session_id}):
            response = await client.get("/static", headers=headers)
            assert response.status_code == 200
            assert set_cookies(response) == []
            assert "cookie" not in response.headers.get("vary", "").lower()
            unloaded = await client.get("/request-state", headers=headers)
            assert unloaded.json() == {"state": None}  # nothing awaited the load
            loaded = await client.get("/state", headers=headers)
            assert loaded.json()["state"] == ({"k": "v"} if headers else {})
    assert calls.calls == ["load_record", "load_record"]  # only the two `get_session` loads with an id


async def test_reading_without_a_session_writes_no_record_and_sets_no_cookie_but_varies_on_cookie(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    calls = StoreCalls(store)
    async with open_client(build_app(manager), transport) as client:
        response = await client.get("/state")
    assert response.json()["state"] == {}
    assert set_cookies(response) == []
    assert "Cookie" in response.headers["vary"]
    assert "write" not in calls.calls
    assert [s async for s in store.iter_sessions()] == []


async def test_first_write_creates_the_session_with_a_secure_default_cookie(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    async with open_client(build_app(manager), transport) as client:
        response = await client.post("/state/color", params={"value": "blue"})
    [header] = set_cookies(response)
    name, value, attributes = cookie_attributes(header)
    assert name == "session_id"
    assert is_valid_session_id(value)
    assert "httponly" in attributes
    assert attributes["samesite"] == "Lax"
    assert attributes["path"] == "/"
    assert "secure" not in attributes
    assert "max-age" not in attributes  # cookie_max_age=None: a browser-session cookie
    saved = await manager.get_session(value)
    assert saved is not None and saved.get("color") == "blue"


async def test_session_persists_across_requests_through_the_cookie(manager: SessionManager, transport: str) -> None:
    async with open_client(build_app(manager), transport) as client:
        sid = issued_id(await client.post("/state/a", params={"value": "1"}))
        second = await client.post("/state/b", params={"value": "2"}, headers=cookie(sid))
        third = await client.get("/state", headers=cookie(sid))
    assert third.json()["state"] == {"a": "1", "b": "2"}
    # Same session, no expiry refresh to announce (cookie_max_age is None): no new cookie.
    assert set_cookies(second) == []
    assert set_cookies(third) == []


async def test_request_state_holds_the_session_before_the_handler_runs_and_lazy_mode_only_once_loaded(
    manager: SessionManager, transport: str
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    async with open_client(build_app(manager), transport) as client:
        default = await client.get("/ids", headers=cookie(existing.session_id))
    async with open_client(build_app(manager, lazy=True), transport) as client:
        lazy = await client.get("/ids", headers=cookie(existing.session_id))
    assert default.json() == {"before": [existing.session_id, True], "after_matches": True}
    assert lazy.json() == {"before": [None, False], "after_matches": True}


async def test_original_depends_form_of_get_session_works(manager: SessionManager, transport: str) -> None:
    existing = await manager.create_session(preferences={"theme": "dark"})
    async with open_client(build_app(manager), transport) as client:
        response = await client.get("/original", headers=cookie(existing.session_id))
    assert response.json() == {"preferences": {"theme": "dark"}}


async def test_create_session_false_gives_handlers_none_and_writes_nothing(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    async with open_client(build_app(manager, create_session=False), transport) as client:
        response = await client.get("/state")
    assert response.json() == {"state": None}
    assert set_cookies(response) == []
    assert [s async for s in store.iter_sessions()] == []


# ---------------------------------------------------------------------------- strict ids

ATTACKER_ID = "A" * 43  # the right shape, but never issued by the server

MALFORMED = {
    "empty": "",
    "too-short": "abc",
    "one-char-too-long": "A" * 44,
    "overlong-8k": "A" * 8192,
    "glob-star": "*",
    "glob-prefix": "session:*",
    "glob-class": "[A-Za-z0-9_-]*",
    "quoted-octal": '"\\012' + "A" * 40 + '"',
    "quoted-valid-shape": '"' + "B" * 43 + '"',
    "percent-crlf": "%0D%0ASet-Cookie:%20evil=1",
    "path-traversal": "../../etc/passwd",
    "sql": "x' OR '1'='1",
    "non-ascii": "é" * 43,
}


async def test_attacker_chosen_id_is_never_adopted_and_a_different_id_is_issued(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    async with open_client(build_app(manager), transport) as client:
        read = await client.get("/state", headers=cookie(ATTACKER_ID))
        written = await client.post("/state/k", params={"value": "v"}, headers=cookie(ATTACKER_ID))
    assert read.json()["state"] == {}
    issued = issued_id(written)
    assert issued != ATTACKER_ID
    assert await store.get(ATTACKER_ID) is None
    assert (await manager.get_session(issued)) is not None


async def test_malformed_cookie_values_are_rejected_before_any_store_lookup_and_never_reflected(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    calls = StoreCalls(store)
    async with open_client(build_app(manager), transport) as client:
        for label, value in MALFORMED.items():
            calls.reset()
            raw = f"session_id={value}".encode()
            response = await client.post("/state/k", params={"value": "v"}, headers=[(b"cookie", raw)])
            assert response.status_code == 200, label
            assert "load_record" not in calls.calls, f"{label}: the id was looked up"
            issued = issued_id(response)
            assert issued != value and is_valid_session_id(issued), label
            for name, header_value in response.headers.multi_items():
                assert not value or value not in header_value, f"{label}: client value reflected in {name}"


async def test_duplicate_session_cookies_are_ambiguous_and_neither_is_adopted(
    manager: SessionManager, transport: str
) -> None:
    first = await manager.create_session(data={"owner": "first"})
    second = await manager.create_session(data={"owner": "second"})
    both = {"Cookie": f"session_id={first.session_id}; other=1; session_id={second.session_id}"}
    async with open_client(build_app(manager), transport) as client:
        read = await client.get("/state", headers=both)
        written = await client.post("/state/k", params={"value": "v"}, headers=both)
    assert read.json()["state"] == {}
    assert issued_id(written) not in (first.session_id, second.session_id)
    for original in (first, second):
        stored = await manager.get_session(original.session_id)
        assert stored is not None and "k" not in stored.state


async def test_cookie_takes_precedence_over_the_header(manager: SessionManager, transport: str) -> None:
    by_cookie = await manager.create_session(data={"via": "cookie"})
    by_header = await manager.create_session(data={"via": "header"})
    async with open_client(build_app(manager), transport) as client:
        header = {"X-Session-ID": by_header.session_id}
        both = await client.get("/state", headers={**cookie(by_cookie.session_id), **header})
        # A session cookie, even a bad one, means the header is not consulted at all.
        bad_cookie = await client.get("/state", headers={**cookie("garbage"), **header})
    assert both.json()["state"] == {"via": "cookie"}
    assert bad_cookie.json()["state"] == {}


async def test_header_session_is_used_without_a_cookie_and_never_comes_back_as_a_cookie(
    manager: SessionManager, transport: str
) -> None:
    existing = await manager.create_session(data={"via": "header"})
    headers = {"X-Session-ID": existing.session_id}
    async with open_client(build_app(manager, cookie_max_age=3600), transport) as client:
        written = await client.post("/state/k", params={"value": "v"}, headers=headers)
        read = await client.get("/state", headers=headers)
    assert read.json()["state"] == {"via": "header", "k": "v"}
    assert set_cookies(written) == []
    assert "x-session-id" not in written.headers  # the client's own id is never echoed
    assert "X-Session-ID" in read.headers["vary"]


async def test_unknown_header_id_gets_a_fresh_id_in_the_header_not_a_cookie(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(build_app(manager), transport) as client:
        written = await client.post("/state/k", params={"value": "v"}, headers={"X-Session-ID": ATTACKER_ID})
    assert set_cookies(written) == []
    fresh = written.headers["x-session-id"]
    assert fresh != ATTACKER_ID and is_valid_session_id(fresh)
    saved = await manager.get_session(fresh)
    assert saved is not None and saved.get("k") == "v"


async def test_conflicting_session_headers_are_ambiguous(manager: SessionManager, transport: str) -> None:
    existing = await manager.create_session(data={"k": "v"})
    headers = [(b"x-session-id", existing.session_id.encode()), (b"x-session-id", new_session_id().encode())]
    async with open_client(build_app(manager), transport) as client:
        response = await client.get("/state", headers=headers)
    assert response.json()["state"] == {}


# ---------------------------------------------------------------------------- cookie attributes


async def test_cookie_attributes_follow_the_configuration(manager: SessionManager, transport: str) -> None:
    app = build_app(
        manager,
        cookie_name="sid",
        cookie_secure=True,
        cookie_samesite="strict",
        cookie_path="/app",
        cookie_domain="example.test",
        cookie_max_age=600,
    )
    async with open_client(app, transport) as client:
        response = await client.post("/state/k", params={"value": "v"})
    [header] = set_cookies(response)
    name, value, attributes = cookie_attributes(header)
    assert name == "sid" and is_valid_session_id(value)
    assert attributes["path"] == "/app"
    assert attributes["domain"] == "example.test"
    assert attributes["samesite"] == "Strict"
    assert attributes["max-age"] == "600"
    assert "secure" in attributes and "httponly" in attributes


def test_invalid_cookie_configuration_is_refused_at_startup(manager: SessionManager) -> None:
    from agent_sessions.integrations.asgi import SessionMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="requires cookie_secure"):
        SessionMiddleware(app, manager, cookie_samesite="none")
    with pytest.raises(ValueError, match="cookie_name"):
        SessionMiddleware(app, manager, cookie_name="bad name;")
    with pytest.raises(ValueError, match="cookie_path"):
        SessionMiddleware(app, manager, cookie_path="/a; Domain=evil.test")
    with pytest.raises(ValueError, match="header_name"):
        SessionMiddleware(app, manager, header_name="X Session")


# ---------------------------------------------------------------------------- login and logout


async def test_login_rotates_the_id_and_the_old_id_dies_at_once(manager: SessionManager, transport: str) -> None:
    async with open_client(build_app(manager), transport) as client:
        before = issued_id(await client.post("/state/cart", params={"value": "3 items"}))
        login = await client.post("/login/alice", headers=cookie(before))
        after = issued_id(login)
        old = await client.get("/state", headers=cookie(before))
        new = await client.get("/state", headers=cookie(after))
    assert after != before
    assert await manager.get_session(before) is None
    assert old.json()["state"] == {}
    assert new.json()["state"] == {"cart": "3 items", "logged_in": "yes"}
    assert new.json()["user_id"] == "alice"


async def test_logout_deletes_the_session_with_an_identically_scoped_deletion_cookie(
    manager: SessionManager, transport: str
) -> None:
    app = build_app(manager, cookie_secure=True, cookie_domain="example.test", cookie_max_age=600)
    async with open_client(app, transport) as client:
        created = await client.post("/state/k", params={"value": "v"})
        sid = issued_id(created)
        logout = await client.post("/logout", headers=cookie(sid))
        replay = await client.get("/state", headers=cookie(sid))
        replay_write = await client.post("/state/k2", params={"value": "v2"}, headers=cookie(sid))
    assert await manager.get_session(sid) is None
    [deletion] = set_cookies(logout)
    name, value, attributes = cookie_attributes(deletion)
    _, _, issued_attributes = cookie_attributes(set_cookies(created)[0])
    assert (name, value) == ("session_id", "")
    assert attributes.pop("max-age") == "0"
    assert "1970" in attributes.pop("expires")
    issued_attributes.pop("max-age")
    assert attributes == issued_attributes
    # Replaying the logged-out id: an empty session, and a new id once written.
    assert replay.json()["state"] == {}
    fresh = issued_id(replay_write)
    assert fresh != sid
    saved = await manager.get_session(fresh)
    assert saved is not None and saved.state == {"k2": "v2"}


async def test_writing_after_logout_in_the_same_request_issues_a_new_session(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(build_app(manager), transport) as client:
        sid = issued_id(await client.post("/state/k", params={"value": "v"}))
        response = await client.post("/logout-then-write/flash", headers=cookie(sid))
    fresh = issued_id(response)
    assert fresh != sid
    assert await manager.get_session(sid) is None
    saved = await manager.get_session(fresh)
    assert saved is not None and saved.state == {"flash": "after logout"}


# ---------------------------------------------------------------------------- expiry


async def test_expired_session_is_not_adopted_and_a_new_id_is_issued(
    manager: SessionManager, clock: FakeClock, transport: str
) -> None:
    async with open_client(build_app(manager), transport) as client:
        sid = issued_id(await client.post("/state/k", params={"value": "v"}))
        clock.advance(manager.session_lifetime + 1)
        read = await client.get("/state", headers=cookie(sid))
        written = await client.post("/state/k2", params={"value": "v2"}, headers=cookie(sid))
    assert read.json()["state"] == {}
    assert issued_id(written) != sid


async def test_cookie_expiry_is_refreshed_only_when_the_store_expiry_is(
    manager: SessionManager, clock: FakeClock, transport: str
) -> None:
    async with open_client(build_app(manager, cookie_max_age=3600), transport) as client:
        sid = issued_id(await client.post("/state/k", params={"value": "v"}))
        clock.advance(manager.touch_interval / 2)
        quiet = await client.get("/state", headers=cookie(sid))
        clock.advance(manager.touch_interval)
        touched = await client.get("/state", headers=cookie(sid))
        stored = await manager.store.get(sid)
    assert set_cookies(quiet) == []  # within the touch interval nothing is written, nothing re-sent
    assert issued_id(touched) == sid
    _, _, attributes = cookie_attributes(set_cookies(touched)[0])
    assert stored is not None and stored.expiry_at is not None
    assert int(attributes["max-age"]) == min(3600, round(stored.expiry_at - clock.now))


async def test_cookie_max_age_never_outlives_the_absolute_lifetime(
    store: SessionStore, clock: FakeClock, transport: str
) -> None:
    manager = SessionManager(store, session_lifetime=3600, absolute_lifetime=5000, auto_cleanup=False)
    async with open_client(build_app(manager, cookie_max_age=3600), transport) as client:
        sid = issued_id(await client.post("/state/k", params={"value": "v"}))
        clock.advance(3000)  # idle deadline would be 6600 s after creation; the absolute one is 5000 s
        response = await client.post("/state/k", params={"value": "w"}, headers=cookie(sid))
    assert issued_id(response) == sid
    _, _, attributes = cookie_attributes(set_cookies(response)[0])
    assert int(attributes["max-age"]) == 2000


# ---------------------------------------------------------------------------- failures


async def test_unhandled_exception_saves_nothing_and_sets_no_cookie(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    async with open_client(build_app(manager), transport) as client:
        failed_existing = await client.post("/fail/exception/x", headers=cookie(existing.session_id))
        failed_new = await client.post("/fail/exception/x")
    assert failed_existing.status_code == failed_new.status_code == 500
    assert set_cookies(failed_existing) == set_cookies(failed_new) == []
    stored = await manager.get_session(existing.session_id)
    assert stored is not None and stored.state == {"k": "v"}
    assert [s.session_id async for s in store.iter_sessions()] == [existing.session_id]


@pytest.mark.parametrize("status", [500, 503])
async def test_5xx_response_saves_nothing(
    status: int, manager: SessionManager, store: SessionStore, transport: str
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    async with open_client(build_app(manager), transport) as client:
        response = await client.post(f"/fail/status/{status}/x", headers=cookie(existing.session_id))
        new = await client.post(f"/fail/status/{status}/x")
    assert response.status_code == new.status_code == status
    assert set_cookies(response) == set_cookies(new) == []
    stored = await manager.get_session(existing.session_id)
    assert stored is not None and stored.state == {"k": "v"}
    assert len([s async for s in store.iter_sessions()]) == 1


@pytest.mark.parametrize("status", [400, 404, 409, 302, 303, 307])
async def test_4xx_and_redirect_responses_save(status: int, manager: SessionManager, transport: str) -> None:
    async with open_client(build_app(manager), transport) as client:
        response = await client.post(f"/fail/status/{status}/x")
    assert response.status_code == status
    saved = await manager.get_session(issued_id(response))
    assert saved is not None and saved.get("x") == "written"


async def test_session_deleted_by_another_request_before_the_save_answers_409_and_stays_deleted(
    manager: SessionManager, transport: str
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    async with open_client(build_app(manager), transport) as client:
        response = await client.post("/ended-meanwhile/x", headers=cookie(existing.session_id))
    assert response.status_code == 409
    assert "nothing was saved" in response.text
    assert set_cookies(response) == []
    assert await manager.get_session(existing.session_id) is None


# ---------------------------------------------------------------------------- concurrency


async def test_twenty_concurrent_requests_each_adding_a_key_lose_no_update(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(build_app(manager), transport) as client:
        sid = issued_id(await client.post("/state/start", params={"value": "0"}))
        responses = await asyncio.gather(
            *(client.post(f"/state/key-{i}", params={"value": str(i)}, headers=cookie(sid)) for i in range(20))
        )
        final = await client.get("/state", headers=cookie(sid))
    assert all(r.status_code == 200 for r in responses)
    assert final.json()["state"] == {"start": "0", **{f"key-{i}": str(i) for i in range(20)}}


# ---------------------------------------------------------------------------- streaming


async def test_streaming_response_gets_its_cookie_before_the_first_body_byte_over_a_socket(
    manager: SessionManager, backend: str
) -> None:
    app = build_app(manager)
    async with (
        open_client(app, "socket") as client,
        client.stream("POST", "/stream/k", params={"wait": "true"}) as response,
    ):
        # Headers are in, the body is held open by the handler: the session is already saved.
        sid = issued_id(response)
        saved = await manager.get_session(sid)
        assert saved is not None and saved.get("k") == "written"
        chunks = response.aiter_bytes()
        first = await anext(chunks)
        app.state.release.set()
        rest = b"".join([chunk async for chunk in chunks])
    assert (first + rest) == b"first chunk\nlast chunk\n"


async def test_session_changes_after_the_response_started_are_not_saved_and_are_logged(
    manager: SessionManager, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    with caplog.at_level("WARNING", logger="agent_sessions.integrations.asgi"):
        async with open_client(build_app(manager), transport) as client:
            response = await client.post("/stream-late/late", headers=cookie(existing.session_id))
    assert response.text == "started\ndone\n"
    stored = await manager.get_session(existing.session_id)
    assert stored is not None and "late" not in stored.state
    assert any("after the response started" in r.getMessage() for r in caplog.records)


async def test_client_cannot_inject_headers_through_the_raw_cookie_bytes(manager: SessionManager) -> None:
    """CRLF cannot be sent through httpx; a raw socket shows the server and middleware hold."""
    app = build_app(manager)
    async with open_client(app, "socket") as client:
        host, port = client.base_url.host, client.base_url.port
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(
            b"POST /state/k?value=v HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n"
            b"Cookie: session_id=" + b"A" * 20 + b"\rSet-Cookie: evil=1\r\nConnection: close\r\n\r\n"
        )
        await writer.drain()
        raw = await asyncio.wait_for(reader.read(), timeout=5)
        writer.close()
    head = raw.split(b"\r\n\r\n", 1)[0].lower()
    assert b"evil" not in head
    assert not head.startswith(b"http/1.1 5")
