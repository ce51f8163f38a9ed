"""The example app (`examples/fastapi_app.py`): the original usage example 1, login and logout,
on every backend, in-process and over a real socket."""

from __future__ import annotations

import httpx
import pytest

from agent_sessions import SessionManager, SessionStore
from examples.fastapi_app import create_app

from ..support import FakeClock
from .support import StoreCalls, cookie, cookie_attributes, issued_id, open_client, serve, set_cookies


async def test_original_preferences_endpoints_round_trip_through_the_session_cookie(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(create_app(manager), transport) as client:
        empty = await client.get("/api/user/preferences")
        saved = await client.post("/api/user/preferences", json={"theme": "dark", "language": "en"})
        sid = issued_id(saved)
        more = await client.post("/api/user/preferences", json={"language": "fr"}, headers=cookie(sid))
        read = await client.get("/api/user/preferences", headers=cookie(sid))
    assert empty.json() == {"preferences": {}}
    assert set_cookies(empty) == []
    assert saved.json() == {"status": "success", "preferences": {"theme": "dark", "language": "en"}}
    _, _, attributes = cookie_attributes(set_cookies(saved)[0])
    assert attributes["max-age"] == "3600" and "httponly" in attributes and attributes["samesite"] == "Lax"
    assert issued_id(more) == sid  # a save refreshes the expiry, and the cookie with it
    assert read.json() == {"preferences": {"theme": "dark", "language": "fr"}}
    stored = await manager.get_session(sid)
    assert stored is not None and stored.preferences == {"theme": "dark", "language": "fr"}


async def test_page_is_served_without_touching_the_session(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    calls = StoreCalls(store)
    async with open_client(create_app(manager), transport) as client:
        page = await client.get("/")
    assert page.status_code == 200 and "preferences-form" in page.text
    assert set_cookies(page) == []
    assert calls.calls == []


async def test_login_issues_a_new_id_bound_to_the_user_and_logout_ends_it(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(create_app(manager), transport) as client:
        anonymous = issued_id(await client.post("/api/user/preferences", json={"theme": "dark"}))
        login = await client.post("/api/login", json={"user_id": "alice"}, headers=cookie(anonymous))
        alice = issued_id(login)
        prefs = await client.get("/api/user/preferences", headers=cookie(alice))
        logout = await client.post("/api/logout", headers=cookie(alice))
        replay = await client.get("/api/user/preferences", headers=cookie(alice))
    assert alice != anonymous
    assert prefs.json() == {"preferences": {"theme": "dark"}}
    assert cookie_attributes(set_cookies(logout)[0])[2]["max-age"] == "0"
    assert replay.json() == {"preferences": {}}
    assert await manager.get_session(anonymous) is None
    assert await manager.get_session(alice) is None


async def test_login_rejects_an_invalid_user_id_without_touching_the_session(
    manager: SessionManager, store: SessionStore, transport: str
) -> None:
    calls = StoreCalls(store)
    async with open_client(create_app(manager), transport) as client:
        response = await client.post("/api/login", json={"user_id": ""})
    assert response.status_code == 422
    assert set_cookies(response) == []
    assert calls.calls == []


async def test_app_without_a_manager_builds_one_from_the_environment_and_runs_its_lifespan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AGENT_SESSIONS_STORE", "memory://")
    app = create_app()
    manager: SessionManager = app.state.session_manager
    async with serve(app) as base_url:
        assert manager.cleanup_task is not None and not manager.cleanup_task.done()  # started by the lifespan
        async with httpx.AsyncClient(base_url=base_url, verify=False, trust_env=False) as client:
            saved = await client.post("/api/user/preferences", json={"theme": "dark"})
            read = await client.get("/api/user/preferences")  # the client's jar sends the cookie back
    assert saved.status_code == 200
    assert read.json() == {"preferences": {"theme": "dark"}}
    assert manager.cleanup_task is None  # stopped by the lifespan


async def test_agent_turn_changes_the_visitors_session_and_starts_one_for_a_new_visitor(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(create_app(manager), transport) as client:
        chat = await client.post("/api/agent/chat", json={"message": "Switch me to the dark theme, please"})
        sid = issued_id(chat)
        asked = await client.post(
            "/api/agent/chat", json={"message": "What do you know about me?"}, headers=cookie(sid)
        )
        read = await client.get("/api/user/preferences", headers=cookie(sid))
    assert chat.json() == {"reply": 'Saved: {"theme": "dark"}', "preferences": {"theme": "dark"}}
    assert asked.json()["reply"] == 'Your preferences: {"theme": "dark"}'
    assert read.json() == {"preferences": {"theme": "dark"}}
    stored = await manager.get_session(sid)
    assert stored is not None
    assert [e["data"].get("tool_name") for e in stored.history if e["data"].get("tool_name")] == [
        "update_user_preferences",
        "get_user_preferences",
    ]


async def test_agent_turn_renews_the_cookie_with_the_expiry_it_extended(
    manager: SessionManager, clock: FakeClock, transport: str
) -> None:
    async with open_client(create_app(manager), transport) as client:
        sid = issued_id(await client.post("/api/user/preferences", json={"theme": "light"}))
        clock.advance(60)  # within the touch interval: a plain read would not renew anything
        read = await client.get("/api/user/preferences", headers=cookie(sid))
        chat = await client.post("/api/agent/chat", json={"message": "dark theme please"}, headers=cookie(sid))
    assert set_cookies(read) == []
    assert issued_id(chat) == sid
    stored = await manager.get_session(sid)
    assert stored is not None and stored.expiry_at == clock.now + manager.session_lifetime
    assert cookie_attributes(set_cookies(chat)[0])[2]["max-age"] == "3600"


async def test_the_page_sees_who_is_signed_in_and_a_users_preferences_follow_them_to_the_next_login(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(create_app(manager), transport) as client:
        visitor = await client.get("/api/me")
        alice = issued_id(await client.post("/api/login", json={"user_id": "alice"}))
        saved = await client.post("/api/user/preferences", json={"theme": "dark"}, headers=cookie(alice))
        signed_in = await client.get("/api/me", headers=cookie(alice))
        await client.post("/api/logout", headers=cookie(alice))
        after_logout = await client.get("/api/me", headers=cookie(alice))
        again = issued_id(await client.post("/api/login", json={"user_id": "alice"}))
        next_login = await client.get("/api/me", headers=cookie(again))
    assert visitor.json() == {"user_id": None, "preferences": {}}
    assert set_cookies(visitor) == []
    assert saved.status_code == 200
    assert signed_in.json() == {"user_id": "alice", "preferences": {"theme": "dark"}}
    assert after_logout.json() == {"user_id": None, "preferences": {}}
    assert again != alice
    assert next_login.json() == {"user_id": "alice", "preferences": {"theme": "dark"}}
