"""The original document's usage example 1 ("Basic Session Usage in FastAPI"), run as written,
on the memory store and on SQLite, under uvicorn (which runs its startup and shutdown handlers).

Differences from the original text, both deliberate:

- imports (the original shows only FastAPI's);
- the store is a parameter (the original's ``MemorySessionStore()``, and also SQLite).

The example's own dependency returns ``request.state.session`` and reads
``session.preferences`` from it: the middleware puts the `Session` itself there by default.

``@app.on_event("startup")`` / ``("shutdown")`` are kept as written: this FastAPI still runs them
(with a DeprecationWarning, silenced here; `lifespan=` is the supported equivalent).
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any, Dict  # noqa: UP035 - the original example's spelling

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from agent_sessions import MemorySessionStore, Session, SessionManager, SessionStore, create_store, new_session_id
from agent_sessions.integrations.asgi import SessionMiddleware

from .support import cookie, cookie_attributes, issued_id, no_cookie_jar, serve, set_cookies

pytestmark = pytest.mark.filterwarnings("ignore:\\s*on_event is deprecated:DeprecationWarning")


def seed_usage_example_1(session_store: SessionStore) -> tuple[FastAPI, SessionManager]:
    """The original usage example 1 (see the module docstring for the two differences)."""
    app = FastAPI()

    # Create session manager
    session_manager = SessionManager(session_store)

    # Add session middleware
    app.add_middleware(
        SessionMiddleware,
        session_manager=session_manager,
        cookie_name="session_id",
        cookie_max_age=3600,
        cookie_secure=False,
        cookie_httponly=True,
    )

    # Start session manager
    @app.on_event("startup")
    async def startup():
        await session_manager.start()

    # Stop session manager
    @app.on_event("shutdown")
    async def shutdown():
        await session_manager.stop()

    # Session dependency
    async def get_session(request: Request):
        if hasattr(request.state, "session"):
            return request.state.session
        return None

    # Endpoint with session
    @app.get("/api/user/preferences")
    async def get_preferences(session: Session = Depends(get_session)):  # noqa: B008
        if not session:
            return {"preferences": {}}

        return {"preferences": session.preferences}

    # Update preferences endpoint
    @app.post("/api/user/preferences")
    async def update_preferences(
        preferences: Dict[str, Any],  # noqa: UP006
        session: Session = Depends(get_session),  # noqa: B008
    ):
        if not session:
            return {"error": "No session"}

        # Update preferences
        session.preferences.update(preferences)

        # Update session
        await session_manager.update_session(session)

        return {"status": "success", "preferences": session.preferences}

    return app, session_manager


StoreFactory = Callable[[Path], SessionStore]
STORES: dict[str, StoreFactory] = {
    "memory": lambda _: MemorySessionStore(),
    "sqlite": lambda tmp: create_store(f"sqlite+aiosqlite:///{tmp / 'seed.db'}"),
}


@pytest.fixture(params=sorted(STORES))
def session_store(request: pytest.FixtureRequest, tmp_path: Path) -> SessionStore:
    return STORES[str(request.param)](tmp_path)


async def _count(store: SessionStore) -> int:
    return len(await store.get_all())


async def test_preferences_persist_across_requests_through_the_cookie(session_store: SessionStore) -> None:
    app, session_manager = seed_usage_example_1(session_store)
    async with serve(app) as base_url:
        assert session_manager.cleanup_task is not None  # the startup handler ran
        async with httpx.AsyncClient(base_url=base_url, cookies=no_cookie_jar(), trust_env=False) as client:
            empty = await client.get("/api/user/preferences")
            saved = await client.post("/api/user/preferences", json={"theme": "dark", "language": "en"})
            sid = issued_id(saved)
            more = await client.post("/api/user/preferences", json={"language": "fr"}, headers=cookie(sid))
            read = await client.get("/api/user/preferences", headers=cookie(sid))
        assert empty.status_code == 200 and empty.json() == {"preferences": {}}
        assert set_cookies(empty) == []  # an untouched new session is never written
        assert saved.json() == {"status": "success", "preferences": {"theme": "dark", "language": "en"}}
        _, _, attributes = cookie_attributes(set_cookies(saved)[0])
        assert attributes["max-age"] == "3600" and "httponly" in attributes and "secure" not in attributes
        assert more.json() == {"status": "success", "preferences": {"theme": "dark", "language": "fr"}}
        assert read.json() == {"preferences": {"theme": "dark", "language": "fr"}}
        stored = await session_manager.get_session(sid)
        assert stored is not None and stored.preferences == {"theme": "dark", "language": "fr"}
        assert await _count(session_store) == 1
    assert session_manager.cleanup_task is None  # the shutdown handler ran


async def test_an_id_the_server_did_not_issue_is_not_adopted(session_store: SessionStore) -> None:
    app, session_manager = seed_usage_example_1(session_store)
    forged = new_session_id()
    async with serve(app) as base_url:
        async with httpx.AsyncClient(base_url=base_url, cookies=no_cookie_jar(), trust_env=False) as client:
            read = await client.get("/api/user/preferences", headers=cookie(forged))
            saved = await client.post("/api/user/preferences", json={"theme": "light"}, headers=cookie(forged))
        assert read.json() == {"preferences": {}} and set_cookies(read) == []
        issued = issued_id(saved)
        assert issued != forged
        assert await session_manager.get_session(forged) is None
        assert await _count(session_store) == 1


async def test_a_browser_with_a_cookie_jar_keeps_its_preferences(session_store: SessionStore) -> None:
    app, _ = seed_usage_example_1(session_store)
    async with (
        serve(app) as base_url,
        httpx.AsyncClient(base_url=base_url, trust_env=False) as client,  # keeps cookies
    ):
        await client.post("/api/user/preferences", json={"theme": "solarized"})
        read = await client.get("/api/user/preferences")
    assert read.json() == {"preferences": {"theme": "solarized"}}
