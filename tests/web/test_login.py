"""`RequestSession.login` through the middleware, on every backend, in-process and over uvicorn:
the cookie (or header) carries the new id, the old one is dead, the visitor's choices follow
the user to another device."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from agent_sessions import InvalidKeepPolicy, SessionManager, SessionOwnedByAnotherUser
from agent_sessions.integrations.asgi import SessionMiddleware

from .support import HandleDep, SessionDep, asgi_call, cookie, issued_id, open_client, set_cookies


def login_app(manager: SessionManager) -> FastAPI:
    app = FastAPI()
    app.add_middleware(SessionMiddleware, session_manager=manager)

    @app.post("/choose/{theme}")
    async def choose(theme: str, session: SessionDep) -> dict[str, Any]:
        session.preferences["theme"] = theme
        session.set("cart", ["book"])
        return {"ok": True}

    @app.post("/login/{user_id}")
    async def login(
        user_id: str, request: Request, handle: HandleDep, keep: str = "session", theme: str | None = None
    ) -> JSONResponse:
        session = await handle.load(create=True)
        if theme is not None:
            session.preferences["theme"] = theme  # chosen in this very request: not saved yet
        session.set("temp:step", "login")
        try:
            logged = await handle.login(user_id, keep=keep)  # type: ignore[arg-type]
        except SessionOwnedByAnotherUser:
            return JSONResponse({"error": "someone else is signed in"}, status_code=409)
        except InvalidKeepPolicy:
            return JSONResponse({"error": "bad keep"}, status_code=422)
        return JSONResponse(
            {
                "same_object": logged is session,
                "user_id": logged.user_id,
                "preferences": logged.preferences,
                "state": logged.state,
                "phase": handle.phase.value,
                "request_state_follows": request.state.session_id == logged.session_id,
            }
        )

    @app.get("/me")
    async def me(session: SessionDep) -> dict[str, Any]:
        return {"user_id": session.user_id, "preferences": session.preferences, "state": session.state}

    return app


async def test_login_sends_the_new_id_kills_the_old_and_carries_the_visitors_choices(
    manager: SessionManager, transport: str
) -> None:
    async with open_client(login_app(manager), transport) as client:
        visitor = issued_id(await client.post("/choose/light"))
        login = await client.post("/login/alice", headers=cookie(visitor))
        alice = issued_id(login)
        me = await client.get("/me", headers=cookie(alice))
        old = await client.get("/me", headers=cookie(visitor))
        laptop = await client.post("/login/alice")  # another device, no cookie
        laptop_me = await client.get("/me", headers=cookie(issued_id(laptop)))
    assert login.status_code == 200 and alice != visitor
    assert login.json() == {
        "same_object": True,
        "user_id": "alice",
        "preferences": {"theme": "light"},
        "state": {"cart": ["book"], "temp:step": "login"},  # temp: keys stay on the request's object
        "phase": "rotated",
        "request_state_follows": True,
    }
    assert me.json() == {"user_id": "alice", "preferences": {"theme": "light"}, "state": {"cart": ["book"]}}
    assert old.json() == {"user_id": None, "preferences": {}, "state": {}}  # the old id is never adopted
    assert await manager.get_session(visitor) is None
    assert laptop_me.json() == {"user_id": "alice", "preferences": {"theme": "light"}, "state": {}}


async def test_login_keep_user_lets_the_stored_users_values_win(manager: SessionManager, transport: str) -> None:
    await manager.create_session(user_id="alice", preferences={"theme": "dark"})
    async with open_client(login_app(manager), transport) as client:
        visitor = issued_id(await client.post("/choose/light"))
        login = await client.post("/login/alice?keep=user", headers=cookie(visitor))
        refused = await client.post("/login/alice?keep=visitor", headers=cookie(issued_id(login)))
    assert login.json()["preferences"] == {"theme": "dark"}
    assert refused.status_code == 422 and set_cookies(refused) == []
    assert (await manager.create_session(user_id="alice")).preferences == {"theme": "dark"}


async def test_a_choice_made_in_the_login_request_itself_is_carried(manager: SessionManager, transport: str) -> None:
    async with open_client(login_app(manager), transport) as client:
        login = await client.post("/login/alice?theme=solarized")  # a first request: no session yet
        alice = issued_id(login)
        me = await client.get("/me", headers=cookie(alice))
    assert login.json()["phase"] == "rotated"
    assert me.json() == {"user_id": "alice", "preferences": {"theme": "solarized"}, "state": {}}
    assert [s.session_id for s in await manager.get_user_sessions("alice")] == [alice]
    assert (await manager.create_session(user_id="alice")).preferences == {"theme": "solarized"}


async def test_a_header_client_gets_its_new_id_in_the_header(manager: SessionManager, transport: str) -> None:
    visitor = await manager.create_session(preferences={"theme": "light"})
    async with open_client(login_app(manager), transport) as client:
        login = await client.post("/login/alice", headers={"X-Session-ID": visitor.session_id})
    new_id = login.headers["x-session-id"]
    assert set_cookies(login) == [] and new_id != visitor.session_id
    logged = await manager.get_session(new_id)
    assert logged is not None and logged.user_id == "alice" and logged.preferences == {"theme": "light"}


async def test_login_into_another_users_session_is_refused_and_changes_nothing(
    manager: SessionManager, transport: str
) -> None:
    bobs = await manager.create_session(user_id="bob", preferences={"theme": "dark"})
    async with open_client(login_app(manager), transport) as client:
        refused = await client.post("/login/alice", headers=cookie(bobs.session_id))
    assert refused.status_code == 409 and set_cookies(refused) == []
    still = await manager.get_session(bobs.session_id)
    assert still is not None and still.user_id == "bob"
    assert await manager.get_user_sessions("alice") == []


async def test_the_example_app_carries_a_visitors_theme_to_the_users_other_devices(
    manager: SessionManager, transport: str
) -> None:
    from examples.fastapi_app import create_app

    async with open_client(create_app(manager), transport) as client:
        visitor = issued_id(await client.post("/api/user/preferences", json={"theme": "solarized"}))
        login = await client.post("/api/login", json={"user_id": "alice"}, headers=cookie(visitor))
        alice = issued_id(login)
        laptop = await client.post("/api/login", json={"user_id": "alice"})
        # Bob signs in on alice's browser: she is logged out first, he gets a session of his own.
        bob = await client.post("/api/login", json={"user_id": "bob"}, headers=cookie(alice))
        bob_me = await client.get("/api/me", headers=cookie(issued_id(bob)))
    assert login.json() == {"status": "logged in", "user_id": "alice", "preferences": {"theme": "solarized"}}
    assert laptop.json()["preferences"] == {"theme": "solarized"}
    assert bob.status_code == 200 and bob_me.json() == {"user_id": "bob", "preferences": {}}
    assert await manager.get_session(visitor) is None and await manager.get_session(alice) is None
    assert [s.user_id for s in await manager.get_user_sessions("alice")] == ["alice"]  # the laptop's


async def test_login_after_the_response_started_is_refused_and_writes_nothing(manager: SessionManager) -> None:
    errors: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        handle = scope["state"]["session_handle"]
        (await handle.load()).preferences["theme"] = "light"
        await send({"type": "http.response.start", "status": 200, "headers": []})
        try:
            await handle.login("alice")
        except RuntimeError as exc:
            errors.append(str(exc))
        await send({"type": "http.response.body", "body": b""})

    await asgi_call(SessionMiddleware(app, manager), "GET", "/")
    assert len(errors) == 1 and "cannot log in after the response has started" in errors[0]
    assert await manager.get_user_sessions("alice") == []
    assert (await manager.store.load_scopes("alice")).user == {}
