"""Store outages seen through the middleware: a 503 with no cookie change, within a bounded time.

The store is a real `RedisSessionStore` on a Redis server the test owns (killed or frozen
mid-request), or a `RedisSessionStore` / PostgreSQL `DatabaseSessionStore` on a port nothing
listens on.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from agent_sessions import SessionManager, SessionStore, new_session_id
from agent_sessions.integrations.asgi import SessionMiddleware
from agent_sessions.stores.redis import RedisSessionStore

from ..redis.servers import RedisServer
from ..support import FakeClock
from .support import SessionDep, closed_port, cookie, open_client, set_cookies

#: Generous for a loaded 2-core machine; the point is "seconds, not a hang".
BOUND = 5.0

Hook = Callable[[], Awaitable[None]]


def outage_app(manager: SessionManager, before_return: Hook, **options: Any) -> FastAPI:
    """Endpoints that change the session, then run `before_return` (which breaks the store)."""
    app = FastAPI()
    app.add_middleware(SessionMiddleware, session_manager=manager, **options)

    @app.get("/read")
    async def read(session: SessionDep) -> dict[str, Any]:
        return {"state": session.state}

    @app.post("/write/{key}")
    async def write(key: str, session: SessionDep) -> dict[str, Any]:
        session.set(key, "v")
        await before_return()
        return {"ok": True}

    @app.post("/stream/{key}")
    async def stream(key: str, session: SessionDep) -> StreamingResponse:
        session.set(key, "v")
        await before_return()

        async def body() -> AsyncIterator[bytes]:
            yield b"this body must never reach the client\n"

        return StreamingResponse(body())

    return app


async def nothing() -> None:
    return None


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def bounded_store(url: str, clock: FakeClock) -> RedisSessionStore:
    return RedisSessionStore(url, socket_timeout=0.5, socket_connect_timeout=0.5, retries=1, clock=clock)


def assert_unavailable(response: Any, elapsed: float) -> None:
    assert response.status_code == 503
    assert set_cookies(response) == []
    assert "session store" in response.text
    assert elapsed < BOUND


def unreachable_store(kind: str, clock: FakeClock) -> SessionStore:
    """A real store pointed at a port nothing listens on."""
    if kind == "redis":
        return bounded_store(f"redis://127.0.0.1:{closed_port()}/0", clock)
    from agent_sessions.stores.sql import DatabaseSessionStore

    return DatabaseSessionStore(
        f"postgresql+asyncpg://root@127.0.0.1:{closed_port()}/test", connect_timeout=1, clock=clock
    )


@pytest.mark.parametrize("kind", ["redis", "postgresql"])
async def test_unreachable_store_answers_503_without_a_cookie_within_a_bounded_time(
    kind: str, clock: FakeClock, transport: str
) -> None:
    store = unreachable_store(kind, clock)
    manager = SessionManager(store, auto_cleanup=False)
    try:
        async with open_client(outage_app(manager, nothing), transport) as client:
            for headers in ({}, cookie(new_session_id())):
                start = time.monotonic()
                response = await client.post("/write/k", headers=headers)
                assert_unavailable(response, time.monotonic() - start)
            # A request that never touches the session does not notice the outage.
            static = await client.get("/docs")
            assert static.status_code == 200
    finally:
        await store.close()


async def test_store_dying_before_the_save_turns_the_response_into_503_without_a_cookie(
    redis_server: RedisServer, clock: FakeClock, transport: str
) -> None:
    store = bounded_store(redis_server.url, clock)
    manager = SessionManager(store, auto_cleanup=False)

    async def kill() -> None:
        redis_server.kill()

    try:
        async with open_client(outage_app(manager, kill, cookie_max_age=600), transport) as client:
            start = time.monotonic()
            new = await client.post("/write/k")  # a new session: its first save fails
            assert_unavailable(new, time.monotonic() - start)
            redis_server.start()  # the data is gone with the process (no persistence): recreate
            existing = await manager.create_session(data={"k": "before"})
            start = time.monotonic()
            old = await client.post("/write/k", headers=cookie(existing.session_id))
            assert_unavailable(old, time.monotonic() - start)
    finally:
        await store.close()


async def test_streaming_response_is_replaced_by_503_when_the_save_fails(
    redis_server: RedisServer, clock: FakeClock, transport: str
) -> None:
    store = bounded_store(redis_server.url, clock)
    manager = SessionManager(store, auto_cleanup=False)

    async def kill() -> None:
        redis_server.kill()

    try:
        async with open_client(outage_app(manager, kill), transport) as client:
            start = time.monotonic()
            response = await client.post("/stream/k")
        assert_unavailable(response, time.monotonic() - start)
        assert "must never reach" not in response.text
    finally:
        await store.close()


async def test_frozen_store_is_cut_off_by_store_timeout_with_a_503(
    redis_server: RedisServer, clock: FakeClock, transport: str
) -> None:
    # The driver alone would wait (retries + 1) x 5 s; the middleware's store_timeout bounds it.
    store = RedisSessionStore(redis_server.url, socket_timeout=5, socket_connect_timeout=5, retries=2, clock=clock)
    manager = SessionManager(store, auto_cleanup=False)
    try:
        existing = await manager.create_session(data={"k": "v"})
        redis_server.pause()
        async with open_client(outage_app(manager, nothing, store_timeout=0.5), transport) as client:
            start = time.monotonic()
            response = await client.get("/read", headers=cookie(existing.session_id))
            elapsed = time.monotonic() - start
        assert_unavailable(response, elapsed)
        assert elapsed < 3.0
    finally:
        redis_server.resume()
        await store.close()
