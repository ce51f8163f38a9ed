"""Fault injection on a Redis server the test owns: a crash mid-workload and a frozen server.

Operations during an outage raise `StoreUnavailable` within the configured bound, the store
recovers by itself when Redis is back, and no save acknowledged before a crash is lost or
corrupted (the server runs with ``appendfsync always``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from agent_sessions import Session, SessionManager, StoreUnavailable
from agent_sessions.stores.redis import RedisSessionStore

from .servers import RedisServer

pytestmark = [pytest.mark.asyncio, pytest.mark.slow]

SOCKET_TIMEOUT = 0.5  # the store's deadline for one operation, retries included
RETRIES = 1
OUTAGE_BOUND = SOCKET_TIMEOUT + 0.5  # slack for a loaded machine


@pytest.fixture
def durable_server() -> Iterator[RedisServer]:
    server = RedisServer("--appendonly", "yes", "--appendfsync", "always")
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


def bounded_store(server: RedisServer) -> RedisSessionStore:
    return RedisSessionStore(
        server.url, socket_timeout=SOCKET_TIMEOUT, socket_connect_timeout=SOCKET_TIMEOUT, retries=RETRIES
    )


async def expect_unavailable(operation: object) -> float:
    start = time.monotonic()
    with pytest.raises(StoreUnavailable) as info:
        await operation  # type: ignore[misc]
    assert info.value.__cause__ is not None  # the driver's error is chained
    return time.monotonic() - start


async def test_a_crash_mid_workload_loses_no_acknowledged_save_and_the_store_recovers(
    durable_server: RedisServer,
) -> None:
    store = bounded_store(durable_server)
    manager = SessionManager(store, auto_cleanup=False)
    sessions = [await manager.create_session(user_id=f"user{i % 3}", data={"n": 0}) for i in range(12)]
    acked = {s.session_id: 0 for s in sessions}
    failures: list[BaseException] = []
    crashed = asyncio.Event()

    async def worker(sid: str) -> None:
        while True:
            try:
                session = await manager.get_session(sid)
                assert session is not None
                n = session.get("n") + 1
                session.set("n", n)
                session.add_history_entry("turn", {"n": n, "text": "x" * 200})
                await manager.update_session(session)
            except StoreUnavailable as exc:
                if not crashed.is_set():
                    # Before the crash an fsync-always server on a loaded machine can miss the
                    # 0.5 s deadline; the save may or may not have landed (the next get tells).
                    continue
                failures.append(exc)
                return
            acked[sid] = n

    tasks = [asyncio.create_task(worker(sid)) for sid in acked]
    deadline = asyncio.get_running_loop().time() + 30
    while min(acked.values()) < 3:
        for task in tasks:
            if task.done():
                task.result()  # a worker that stopped before the crash: raise what stopped it
        assert asyncio.get_running_loop().time() < deadline, f"the workers did not progress: {acked}"
        await asyncio.sleep(0.01)
    crashed.set()
    durable_server.kill()  # SIGKILL: only what Redis fsynced survives
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=30)
    assert len(failures) == len(tasks)  # every worker saw the outage as StoreUnavailable

    sid = sessions[0].session_id
    assert await expect_unavailable(store.get(sid)) < OUTAGE_BOUND
    assert await expect_unavailable(store.set(Session())) < OUTAGE_BOUND
    assert await expect_unavailable(manager.get_user_sessions("user0")) < OUTAGE_BOUND
    assert await expect_unavailable(store.cleanup_expired()) < OUTAGE_BOUND

    durable_server.start()  # same port, same directory: the append-only file is replayed
    for sid, n_acked in acked.items():
        loaded = await store.get(sid)  # the same store object reconnects by itself
        assert loaded is not None
        n = loaded.get("n")
        assert n in (n_acked, n_acked + 1)  # the save in flight at the crash may or may not have landed
        assert loaded.version == n + 1
        page = await manager.get_history(sid, limit=1000)
        assert [e["data"]["n"] for e in page.entries] == list(range(1, n + 1))
    assert len(await manager.get_user_sessions("user0")) == 4
    fresh = await manager.create_session(user_id="after")
    fresh.set("ok", True)
    await manager.update_session(fresh)
    again = await manager.get_session(fresh.session_id)
    assert again is not None and again.get("ok") is True
    await store.close()


async def test_a_frozen_server_times_out_as_unavailable_and_the_store_recovers(
    durable_server: RedisServer,
) -> None:
    store = bounded_store(durable_server)
    manager = SessionManager(store, auto_cleanup=False)
    session = await manager.create_session(data={"n": 1})
    durable_server.pause()  # SIGSTOP: connections stay open, nothing answers
    try:
        assert await expect_unavailable(store.get(session.session_id)) < OUTAGE_BOUND
        assert await expect_unavailable(manager.mutate(session.session_id, lambda s: s.set("n", 2))) < OUTAGE_BOUND
    finally:
        durable_server.resume()
    # The write that timed out may still have been executed once the server woke up.
    loaded = await manager.get_session(session.session_id)
    assert loaded is not None and (loaded.get("n"), loaded.version) in ((1, 1), (2, 2))
    saved = await manager.mutate(session.session_id, lambda s: s.set("n", 3))
    assert saved.get("n") == 3
    await store.close()


async def test_a_conversation_store_sharing_the_client_is_bounded_by_the_store_deadline(
    durable_server: RedisServer,
) -> None:
    from agent_sessions.integrations.pydantic_ai import RedisConversationStore

    store = bounded_store(durable_server)
    conversations = RedisConversationStore(store)  # shares the client, which has no socket timeout
    assert await conversations.read_record("c1") is None
    durable_server.pause()
    try:
        assert await expect_unavailable(conversations.read_record("c1")) < OUTAGE_BOUND
    finally:
        durable_server.resume()
    assert await conversations.read_record("c1") is None
    await store.close()


async def test_a_save_applied_while_the_caller_timed_out_is_not_applied_again_by_its_retry(
    durable_server: RedisServer,
) -> None:
    """SIGSTOP the server, save (the request sits in the server's socket buffer, the caller times
    out), SIGCONT (the server applies it), retry the same save: the entry is there once."""
    store = bounded_store(durable_server)
    manager = SessionManager(store, auto_cleanup=False)
    session = await manager.create_session(user_id="alice", data={"n": 0})
    session.set("n", 1)
    session.add_history_entry("message", {"text": "once"})
    durable_server.pause()
    try:
        await expect_unavailable(manager.update_session(session))
    finally:
        durable_server.resume()
    seen = None
    for _ in range(100):  # the woken server executes the buffered script
        seen = await store.get(session.session_id)
        if seen is not None and seen.version == 2:
            break
        await asyncio.sleep(0.02)
    assert seen is not None and seen.version == 2, "the frozen server never applied the buffered save"
    await manager.update_session(session)  # the caller's retry
    loaded = await manager.get_session(session.session_id)
    assert loaded is not None
    assert [e["data"] for e in loaded.history] == [{"text": "once"}]
    assert loaded.get("n") == 1 and loaded.version == 2
    await store.close()
