"""``request.state.session`` is the `Session` before the handler runs (what the original usage
example 1 reads), under the same strict rules as `get_session`; ``lazy=True`` is the opposite.

The middleware logic does not depend on the backend: these run on the memory store and SQLite.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI, Request

from agent_sessions import Session, SessionManager, SessionStore, StoreUnavailable, new_session_id
from agent_sessions.integrations.asgi import RequestSession, SessionMiddleware

from ..support import FakeClock
from .support import HandleDep, SessionDep, StoreCalls, cookie, cookie_attributes, issued_id, open_client, set_cookies


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest) -> str:
    """Overrides the root fixture: two backends are enough for middleware logic."""
    return str(request.param)


def state_app(manager: SessionManager, **options: Any) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, session_manager=manager, **options)
    app.state.handler_calls = 0

    @app.get("/inspect")
    async def inspect(request: Request, via_dependency: SessionDep) -> dict[str, Any]:
        app.state.handler_calls += 1
        session = request.state.session
        handle = request.state.session_handle
        return {
            "is_session": isinstance(session, Session),
            "handle_is_handle": isinstance(handle, RequestSession),
            "dependency_same_object": via_dependency is session,
            "session_id_matches": session is not None and request.state.session_id == session.session_id,
            "state": session.state if session is not None else None,
        }

    @app.post("/set/{key}")
    async def set_value(key: str, value: str, request: Request) -> dict[str, Any]:
        app.state.handler_calls += 1
        session: Session | None = request.state.session
        if session is None:
            return {"error": "No session"}
        session.set(key, value)  # no explicit save: the middleware saves at response start
        return {"state": session.state}

    @app.post("/logout")
    async def logout(request: Request, handle: HandleDep) -> dict[str, Any]:
        await handle.destroy()
        return {"session_after_logout": request.state.session}

    return app


async def test_request_state_session_is_the_loaded_session_and_the_handle_is_beside_it(
    manager: SessionManager, store: SessionStore
) -> None:
    calls = StoreCalls(store)
    async with open_client(state_app(manager), "asgi") as client:
        response = await client.get("/inspect")
    assert response.json() == {
        "is_session": True,
        "handle_is_handle": True,
        "dependency_same_object": True,
        "session_id_matches": True,
        "state": {},
    }
    assert set_cookies(response) == []  # a new, untouched session: nothing written, no cookie
    assert "write" not in calls.calls
    assert [s async for s in store.iter_sessions()] == []


async def test_changes_to_request_state_session_are_saved_at_response_start(manager: SessionManager) -> None:
    async with open_client(state_app(manager, cookie_max_age=600), "asgi") as client:
        created = await client.post("/set/k", params={"value": "v"})
        sid = issued_id(created)
        again = await client.post("/set/k2", params={"value": "v2"}, headers=cookie(sid))
        read = await client.get("/inspect", headers=cookie(sid))
    assert cookie_attributes(set_cookies(created)[0])[2]["max-age"] == "600"
    assert again.json()["state"] == {"k": "v", "k2": "v2"}
    assert read.json()["state"] == {"k": "v", "k2": "v2"}
    stored = await manager.get_session(sid)
    assert stored is not None and stored.state == {"k": "v", "k2": "v2"}


async def test_unknown_malformed_and_duplicate_ids_are_never_adopted(manager: SessionManager) -> None:
    first = await manager.create_session(data={"owner": "first"})
    second = await manager.create_session(data={"owner": "second"})
    forged = new_session_id()
    cases = {
        "unknown": cookie(forged),
        "malformed": cookie("not-a-server-issued-id"),
        "duplicate": {"Cookie": f"session_id={first.session_id}; session_id={second.session_id}"},
    }
    async with open_client(state_app(manager), "asgi") as client:
        for label, headers in cases.items():
            read = await client.get("/inspect", headers=headers)
            assert read.json()["state"] == {}, label
            written = await client.post("/set/k", params={"value": label}, headers=headers)
            issued = issued_id(written)
            assert issued not in (forged, first.session_id, second.session_id), label
            saved = await manager.get_session(issued)
            assert saved is not None and saved.state == {"k": label}, label
    assert await manager.get_session(forged) is None
    for original in (first, second):
        stored = await manager.get_session(original.session_id)
        assert stored is not None and "k" not in stored.state


async def test_header_session_is_loaded_before_the_handler_and_never_comes_back_as_a_cookie(
    manager: SessionManager,
) -> None:
    existing = await manager.create_session(data={"via": "header"})
    async with open_client(state_app(manager), "asgi") as client:
        read = await client.get("/inspect", headers={"X-Session-ID": existing.session_id})
        fresh = await client.post("/set/k", params={"value": "v"}, headers={"X-Session-ID": new_session_id()})
    assert read.json()["state"] == {"via": "header"}
    assert set_cookies(read) == [] and set_cookies(fresh) == []
    assert fresh.headers["x-session-id"] != existing.session_id


async def test_create_session_false_gives_none_without_a_live_session(manager: SessionManager) -> None:
    existing = await manager.create_session(data={"k": "v"})
    async with open_client(state_app(manager, create_session=False), "asgi") as client:
        anonymous = await client.post("/set/k", params={"value": "v"})
        known = await client.get("/inspect", headers=cookie(existing.session_id))
    assert anonymous.json() == {"error": "No session"} and set_cookies(anonymous) == []
    assert known.json()["is_session"] is True and known.json()["state"] == {"k": "v"}


async def test_logout_through_the_handle_clears_request_state_session(manager: SessionManager) -> None:
    async with open_client(state_app(manager), "asgi") as client:
        sid = issued_id(await client.post("/set/k", params={"value": "v"}))
        logout = await client.post("/logout", headers=cookie(sid))
    assert logout.json() == {"session_after_logout": None}
    assert cookie_attributes(set_cookies(logout)[0])[2]["max-age"] == "0"
    assert await manager.get_session(sid) is None


async def test_store_outage_during_the_load_before_the_handler_answers_503_without_running_the_app(
    manager: SessionManager, store: SessionStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    existing = await manager.create_session(data={"k": "v"})

    async def down(*args: Any, **kwargs: Any) -> Any:
        raise StoreUnavailable("the store is down")

    monkeypatch.setattr(store, "load_record", down)
    app = state_app(manager)
    async with open_client(app, "asgi") as client:
        response = await client.get("/inspect", headers=cookie(existing.session_id))
        assert response.status_code == 503 and "session store" in response.text
        assert set_cookies(response) == []
        assert app.state.handler_calls == 0
        # A new visitor's session needs no read: the request does not notice the outage.
        anonymous = await client.get("/inspect")
    assert anonymous.status_code == 200 and anonymous.json()["state"] == {}
    assert app.state.handler_calls == 1


async def test_lazy_mode_reads_nothing_until_asked_and_then_sets_request_state_session(
    manager: SessionManager, store: SessionStore
) -> None:
    existing = await manager.create_session(data={"k": "v"})
    app = FastAPI()
    app.add_middleware(SessionMiddleware, session_manager=manager, lazy=True)
    seen: dict[str, Any] = {}

    @app.get("/peek")
    async def peek(request: Request) -> dict[str, Any]:
        seen["session"], seen["handle"] = request.state.session, request.state.session_handle
        seen["loaded"] = await request.state.session_handle.load()
        seen["after"] = request.state.session
        return {}

    calls = StoreCalls(store)
    async with open_client(app, "asgi") as client:
        await client.get("/peek", headers=cookie(existing.session_id))
    assert isinstance(seen["handle"], RequestSession) and seen["session"] is None
    assert isinstance(seen["loaded"], Session) and seen["after"] is seen["loaded"]
    assert seen["loaded"].state == {"k": "v"}
    assert calls.calls == ["load_record"]


async def test_a_new_visitors_session_is_built_without_io_and_its_first_write_is_one_save(
    manager: SessionManager, store: SessionStore
) -> None:
    calls = StoreCalls(store)
    async with open_client(state_app(manager), "asgi") as client:
        sid = issued_id(await client.post("/set/k", params={"value": "v"}))
    assert calls.calls == ["write"]
    stored = await manager.get_session(sid)
    assert stored is not None and stored.state == {"k": "v"}


async def test_app_scope_keys_show_in_a_new_visitors_session_from_its_second_request(
    manager: SessionManager,
) -> None:
    """The documented price of building a new visitor's session without I/O."""
    await manager.store.write_scopes(None, {"app:banner": "hello"})
    async with open_client(state_app(manager), "asgi") as client:
        first = await client.post("/set/k", params={"value": "v"})
        second = await client.get("/inspect", headers=cookie(issued_id(first)))
    assert first.json()["state"] == {"k": "v"}
    assert second.json()["state"] == {"app:banner": "hello", "k": "v"}


async def test_a_save_the_handler_makes_through_the_manager_renews_the_cookie(
    manager: SessionManager, clock: FakeClock
) -> None:
    """The original example saves with `session_manager.update_session(session)` itself: the
    expiry it extends in the store must reach the cookie's Max-Age, even within the touch interval
    (when loading the session renewed nothing)."""
    app = state_app(manager, cookie_max_age=3600)

    @app.post("/save-directly/{key}")
    async def save_directly(key: str, request: Request) -> dict[str, Any]:
        session: Session = request.state.session
        session.set(key, "v")
        await manager.update_session(session)
        return {"state": session.state}

    async with open_client(app, "asgi") as client:
        sid = issued_id(await client.post("/save-directly/a"))
        clock.advance(manager.touch_interval / 2)
        saved = await client.post("/save-directly/b", headers=cookie(sid))
        saved_at = clock.now
        clock.advance(1)
        quiet = await client.get("/inspect", headers=cookie(sid))
    stored = await manager.store.get(sid)
    assert stored is not None and stored.expiry_at == saved_at + manager.session_lifetime
    assert issued_id(saved) == sid
    assert cookie_attributes(set_cookies(saved)[0])[2]["max-age"] == "3600"
    assert set_cookies(quiet) == []  # a read within the touch interval still sends nothing
