"""A save whose outcome is unknown (the store failed after the request was sent) and that the
caller retries is applied at most once (DESIGN §3, Concurrency), on every backend.

The outcome is made unknown by wrapping the backend's write primitive: the real write runs,
then the call fails as a lost connection would make it fail. The real-fault versions (a frozen
Redis server, a PostgreSQL connection cut after the statement is sent) are in tests/redis and
tests/database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from agent_sessions import SessionManager, SessionStore, StoreUnavailable

pytestmark = pytest.mark.asyncio


@contextmanager
def lost_reply(store: SessionStore, *, applied: bool) -> Iterator[None]:
    """The next save reaches the backend (`applied`) or not, and fails as if the reply was lost."""
    original = store.write  # type: ignore[attr-defined]

    async def write(*args: Any) -> None:
        store.write = original  # type: ignore[attr-defined]  # only the next save
        if applied:
            await original(*args)
        raise StoreUnavailable("injected: connection lost after the request was sent")

    store.write = write  # type: ignore[attr-defined]
    try:
        yield
    finally:
        store.write = original  # type: ignore[attr-defined]


async def saved_once(manager: SessionManager) -> tuple[str, Any]:
    session = await manager.create_session("alice", {"n": 0})
    session.set("n", 1)
    session.add_history_entry("message", {"text": "once"})
    return session.session_id, session


async def test_retried_save_that_had_landed_is_not_applied_twice(store: SessionStore, manager: SessionManager) -> None:
    sid, session = await saved_once(manager)
    with lost_reply(store, applied=True), pytest.raises(StoreUnavailable):
        await manager.update_session(session)
    await manager.update_session(session)  # the caller's retry
    stored = await manager.get_session(sid)
    assert stored is not None
    assert [e["data"] for e in stored.history] == [{"text": "once"}]
    assert stored.get("n") == 1
    assert session.version == stored.version == 2


async def test_retried_save_that_never_landed_is_applied(store: SessionStore, manager: SessionManager) -> None:
    sid, session = await saved_once(manager)
    with lost_reply(store, applied=False), pytest.raises(StoreUnavailable):
        await manager.update_session(session)
    await manager.update_session(session)
    stored = await manager.get_session(sid)
    assert stored is not None
    assert [e["data"] for e in stored.history] == [{"text": "once"}]
    assert stored.get("n") == 1


async def test_changes_made_after_the_lost_reply_are_saved_by_the_retry(
    store: SessionStore, manager: SessionManager
) -> None:
    sid, session = await saved_once(manager)
    with lost_reply(store, applied=True), pytest.raises(StoreUnavailable):
        await manager.update_session(session)
    session.set("n", 2)
    session.set("extra", "yes")
    session.add_history_entry("message", {"text": "second"})
    await manager.update_session(session)
    stored = await manager.get_session(sid)
    assert stored is not None
    assert [e["data"]["text"] for e in stored.history] == ["once", "second"]
    assert (stored.get("n"), stored.get("extra")) == (2, "yes")


async def test_landed_save_is_recognised_after_other_writers_saved_on_top(
    store: SessionStore, manager: SessionManager
) -> None:
    sid, session = await saved_once(manager)
    with lost_reply(store, applied=True), pytest.raises(StoreUnavailable):
        await manager.update_session(session)
    for i in range(5):  # other writers: the landed save is no longer the newest in the lineage
        await manager.mutate(sid, lambda s, i=i: s.set(f"other{i}", i))
    await manager.update_session(session)
    stored = await manager.get_session(sid)
    assert stored is not None
    assert [e["data"] for e in stored.history] == [{"text": "once"}]
    assert stored.get("n") == 1 and stored.get("other4") == 4
    assert session.get("other4") == 4  # the retry took the stored copy


async def test_retried_insert_that_had_landed_is_not_a_conflict(store: SessionStore, manager: SessionManager) -> None:
    session = await manager.new_session("alice", {"k": "v"})
    session.add_history_entry("message", {"text": "first"})
    with lost_reply(store, applied=True), pytest.raises(StoreUnavailable):
        await manager.update_session(session)
    await manager.update_session(session)
    stored = await manager.get_session(session.session_id)
    assert stored is not None and stored.get("k") == "v"
    assert [e["data"] for e in stored.history] == [{"text": "first"}]


async def test_merged_retry_whose_reply_is_lost_is_recognised(store: SessionStore, manager: SessionManager) -> None:
    """The first try loses a compare-and-set, the merged second try's reply is lost."""
    sid, session = await saved_once(manager)
    await manager.mutate(sid, lambda s: s.set("rival", True))  # makes the first try conflict
    original = store.write  # type: ignore[attr-defined]
    calls = 0

    async def write(*args: Any) -> None:
        nonlocal calls
        calls += 1
        await original(*args)  # the first call loses the CAS (raises); the second lands
        if calls == 2:
            raise StoreUnavailable("injected: reply lost")

    store.write = write  # type: ignore[attr-defined]
    try:
        with pytest.raises(StoreUnavailable):
            await manager.update_session(session)
    finally:
        store.write = original  # type: ignore[attr-defined]
    await manager.update_session(session)
    stored = await manager.get_session(sid)
    assert stored is not None
    assert [e["data"] for e in stored.history] == [{"text": "once"}]
    assert stored.get("rival") is True and stored.get("n") == 1
