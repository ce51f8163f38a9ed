"""Fail fast: `SessionManager.start()` (and ``async with``) checks the store once, so an app on an
unreachable store fails at startup with `StoreUnavailable` naming the host, never the password,
instead of answering 503 to every request."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from agent_sessions import SessionManager, SessionStore, StoreUnavailable, create_store
from examples.fastapi_app import create_app

from ..database.stores import closed_port
from .support import serve

PASSWORD = "s3cret-pw"
#: Seconds: refused connections are immediate; the bound only says "no hang, no long retry".
BOUND = 5.0

#: Store options that keep the drivers' retries short against a refused connection.
QUICK: dict[str, dict[str, Any]] = {
    "postgres": {"connect_timeout": 1},
    "redis": {"socket_connect_timeout": 0.5, "retries": 0},
    "redis_cluster": {"socket_connect_timeout": 0.5, "retries": 0},
}


def unreachable_url(kind: str, port: int) -> str:
    """A URL of `kind` with a password, pointing at `port` on 127.0.0.1 where nothing listens."""
    if kind == "postgres":
        return f"postgresql+asyncpg://root:{PASSWORD}@127.0.0.1:{port}/test"
    if kind == "redis":
        return f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    return f"redis+cluster://:{PASSWORD}@127.0.0.1:{port}"


@pytest.mark.parametrize("kind", sorted(QUICK))
@pytest.mark.parametrize("entry", ["start", "async with"])
async def test_start_on_an_unreachable_store_raises_naming_host_and_port_but_not_the_password(
    kind: str, entry: str
) -> None:
    port = closed_port()
    manager = SessionManager(create_store(unreachable_url(kind, port), **QUICK[kind]))
    begin = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as raised:
            if entry == "start":
                await manager.start()
            else:
                async with manager:
                    raise AssertionError("the body must not run on an unreachable store")
    finally:
        await manager.stop()
    message = str(raised.value)
    assert f"127.0.0.1:{port}" in message
    assert PASSWORD not in message and PASSWORD not in repr(raised.value.__cause__)
    assert manager.cleanup_task is None  # no background loop left running against nothing
    assert time.monotonic() - begin < BOUND


@pytest.mark.parametrize("kind", sorted(QUICK))
async def test_a_failed_async_with_closes_the_store_it_could_not_reach(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = create_store(unreachable_url(kind, closed_port()), **QUICK[kind])
    closes: list[str] = []
    close = store.close

    async def counting_close() -> None:
        closes.append(kind)
        await close()

    monkeypatch.setattr(store, "close", counting_close)
    with pytest.raises(StoreUnavailable):
        async with SessionManager(store):
            raise AssertionError("the body must not run on an unreachable store")
    assert closes == [kind]


async def test_start_on_an_sqlite_file_that_cannot_be_opened_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "missing-directory" / "sessions.db"
    manager = SessionManager(create_store(f"sqlite+aiosqlite:///{path}"))
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach the sqlite session store at") as raised:
            await manager.start()
    finally:
        await manager.stop()
    assert str(path) in str(raised.value)


async def test_start_succeeds_on_every_reachable_backend(store: SessionStore) -> None:
    manager = SessionManager(store, auto_cleanup=False)
    await manager.start()  # the fixture's store is up: the check passes and changes nothing
    assert [s async for s in store.iter_sessions()] == []


async def test_the_example_app_on_an_unreachable_store_fails_at_startup(
    monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    port = closed_port()
    monkeypatch.setenv("AGENT_SESSIONS_STORE", unreachable_url("redis", port))
    app = create_app()
    with pytest.raises(RuntimeError, match="uvicorn failed to start"):
        async with serve(app):
            raise AssertionError("the app must not serve on an unreachable store")
    log = capfd.readouterr().err
    assert f"StoreUnavailable: cannot reach the Redis session store at 127.0.0.1:{port}" in log
    assert PASSWORD not in log
