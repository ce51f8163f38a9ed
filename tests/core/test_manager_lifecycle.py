"""SessionManager lifecycle, the original call patterns, encryption and the store factory."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from agent_sessions import (
    FernetCodec,
    MemorySessionStore,
    SerializationError,
    Session,
    SessionManager,
    SessionTooLarge,
    create_store,
)
from agent_sessions.ids import id_hash, is_valid_session_id, new_session_id

from ..support import FakeClock


async def test_seed_usage_memory_store_and_manager() -> None:
    """The original document's code paths through the public names."""
    session_store = MemorySessionStore()
    session_manager = SessionManager(session_store)
    await session_manager.start()
    session = await session_manager.create_session(user_id="u1", data={"k": "v"})
    session.preferences.update({"theme": "dark"})
    await session_manager.update_session(session)
    got = await session_manager.get_session(session.session_id)
    assert got is not None and got.preferences == {"theme": "dark"} and got.get("k") == "v"
    refreshed = await session_manager.refresh_session(session.session_id)
    assert refreshed is not None
    assert [s.session_id for s in await session_manager.get_user_sessions("u1")] == [session.session_id]
    assert await session_store.get_all(lambda s: s.user_id == "u1")
    await session_manager.delete_session(session.session_id)
    assert await session_manager.get_session(session.session_id) is None
    assert await session_manager.cleanup() == 0  # interval not elapsed
    await session_manager.stop()


async def test_background_cleanup_runs_and_stops_cleanly() -> None:
    clock = FakeClock()
    store = MemorySessionStore(clock=clock)
    manager = SessionManager(store, session_lifetime=10, cleanup_interval=0.02)
    async with manager:
        assert manager.cleanup_task is not None
        for _ in range(3):
            await manager.create_session()
        clock.advance(11)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if not [s async for s in store.iter_sessions()] and not store.sessions:
                break
        assert store.sessions == {}
        task = manager.cleanup_task
    assert manager.cleanup_task is None and task.done()
    await manager.stop()  # idempotent


async def test_cleanup_loop_survives_a_failing_store(caplog: pytest.LogCaptureFixture) -> None:
    store = MemorySessionStore()
    calls = 0

    async def failing_cleanup(now: float, batch_size: int) -> int:
        nonlocal calls
        calls += 1
        raise ConnectionError("store down")

    store.delete_expired = failing_cleanup  # type: ignore[method-assign]
    manager = SessionManager(store, cleanup_interval=0.01)
    with caplog.at_level(logging.ERROR, logger="agent_sessions.manager"):
        async with manager:
            for _ in range(100):
                await asyncio.sleep(0.01)
                if calls >= 2:
                    break
    assert calls >= 2  # kept going after the first failure
    assert "session cleanup failed" in caplog.text


def test_invalid_manager_settings_are_rejected() -> None:
    store = MemorySessionStore()
    for kwargs in ({"session_lifetime": 0}, {"cleanup_interval": 0}, {"absolute_lifetime": -1}, {"max_retries": 0}):
        with pytest.raises(ValueError):
            SessionManager(store, **kwargs)  # type: ignore[arg-type]


async def test_encryption_at_rest_hides_plaintext_and_round_trips() -> None:
    key = Fernet.generate_key()
    store = MemorySessionStore(codec=FernetCodec(key))
    manager = SessionManager(store, auto_cleanup=False)
    s = await manager.create_session(user_id="u", data={"secret": "PLAINTEXT-VALUE"})
    s.add_history_entry("msg", {"text": "PLAINTEXT-HISTORY"})
    await manager.update_session(s)
    entry = store._sessions[s.session_id]
    assert b"PLAINTEXT" not in entry.record
    assert all(b"PLAINTEXT" not in row.payload for row in entry.history)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.get("secret") == "PLAINTEXT-VALUE"
    assert loaded.history[-1]["data"]["text"] == "PLAINTEXT-HISTORY"
    other = MemorySessionStore(codec=FernetCodec(Fernet.generate_key()))
    other._sessions = store._sessions
    with pytest.raises(SerializationError):
        await other.get(s.session_id)


async def test_corrupt_record_is_reported_not_half_loaded(caplog: pytest.LogCaptureFixture) -> None:
    store = MemorySessionStore()
    s = Session()
    await store.set(s)
    store._sessions[s.session_id].record = b'{"state": "not a dict"'
    with caplog.at_level(logging.ERROR), pytest.raises(SerializationError):
        await store.get(s.session_id)
    assert s.session_id not in caplog.text and id_hash(s.session_id) in caplog.text
    store._sessions[s.session_id].record = b'{"state": ["not", "a", "dict"]}'
    with pytest.raises(SerializationError):
        await store.get(s.session_id)
    assert [x async for x in store.iter_sessions(on_corrupt="skip")] == []
    with pytest.raises(SerializationError):
        await store.get_all()


@pytest.mark.parametrize(
    "corrupt",
    [
        {"state": "not a dict"},
        {"state": ["not", "a", "dict"]},
        {"created_at": "yesterday"},
        {"auth_info": [1]},
        {"environment": "not a dict"},
        {"ai_context": 7},
    ],
    ids=["state-str", "state-list", "created-str", "auth-list", "environment-str", "ai-context-int"],
)
async def test_a_record_field_of_the_wrong_shape_is_reported(
    corrupt: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    # A record that decodes but holds a field of the wrong type is corrupt: reported, never
    # half-loaded (the memory store keeps encoded records, as every backend does).
    store = MemorySessionStore()
    s = Session(state={"k": 1})
    await store.set(s)
    entry = store._sessions[s.session_id]
    record = json.loads(entry.record)
    record.update(corrupt)
    entry.record = json.dumps(record).encode()
    with caplog.at_level(logging.ERROR), pytest.raises(SerializationError):
        await store.get(s.session_id)
    assert id_hash(s.session_id) in caplog.text
    del record["preferences"]
    entry.record = json.dumps(record).encode()
    with pytest.raises(SerializationError):
        await store.get(s.session_id)


def test_create_store_schemes() -> None:
    assert isinstance(create_store("memory://"), MemorySessionStore)
    with pytest.raises(ValueError, match="unknown store URL scheme"):
        create_store("ftp://x")
    with pytest.raises(ValueError):
        create_store("no-scheme")


def test_ids() -> None:
    sid = new_session_id()
    assert is_valid_session_id(sid) and len(sid) == 43
    assert not is_valid_session_id(sid + "=")
    assert len(id_hash(sid)) == 12 and sid not in id_hash(sid)
    for bad in ("", "a" * 42, sid[:-1] + "*", sid + "\n"):
        assert not is_valid_session_id(bad)


async def test_memory_store_max_sessions_evicts_least_recently_saved() -> None:
    store = MemorySessionStore(max_sessions=3)
    manager = SessionManager(store, auto_cleanup=False)
    made = [await manager.create_session(user_id="u") for _ in range(3)]
    made[0].set("touched", 1)
    await manager.update_session(made[0])  # made[1] is now the least recently saved
    newest = await manager.create_session(user_id="u")
    assert await store.get(made[1].session_id) is None
    for s in (made[0], made[2], newest):
        assert await store.get(s.session_id) is not None
    assert len(await manager.get_user_sessions("u")) == 3


async def test_memory_expiry_heap_stays_bounded_by_the_sessions() -> None:
    store = MemorySessionStore()
    manager = SessionManager(store, auto_cleanup=False)
    s = await manager.create_session()
    for i in range(500):
        s.set("i", i)
        await manager.update_session(s)
    assert len(store._expiries) <= 2 * len(store._sessions) + 65


def test_new_ids_never_start_with_a_dash() -> None:
    # An id starting with "-" would be read as an option by `agent-sessions show ID`.
    assert all(new_session_id()[0] != "-" for _ in range(5000))


async def test_memory_size_limit_matches_a_real_backend(tmp_path: Path) -> None:
    # The memory store encodes every record as the real backends do: every save succeeds or
    # fails at max_session_bytes exactly as it does on SQLite.
    import random

    rng = random.Random(5)
    clock = FakeClock()
    memory = MemorySessionStore(max_session_bytes=4000, clock=clock)
    sqlite = create_store(f"sqlite+aiosqlite:///{tmp_path / 'limit.db'}", max_session_bytes=4000, clock=clock)
    managers = [SessionManager(store, auto_cleanup=False) for store in (memory, sqlite)]
    sessions = [await m.create_session() for m in managers]
    outcomes: list[list[str]] = [[], []]
    for step in range(300):
        action = rng.random()
        key = f"k{rng.randrange(12)}"
        text = "é" * rng.randrange(0, 400) if rng.random() < 0.3 else "x" * rng.randrange(0, 900)
        clock.advance(rng.choice([0.001, 0.1, 1.0, 7.25]))
        for i, (manager, session) in enumerate(zip(managers, sessions, strict=True)):
            if action < 0.5:
                session.state[key] = {"text": text, "n": step}
            elif action < 0.7:
                session.state.pop(key, None)
            elif action < 0.85:
                session.history.append({"timestamp": clock.now, "type": "message", "data": {"text": text * 5}})
            else:
                session.ai_context[key] = [step, 1.5, None, text[:50]]
            try:
                await manager.update_session(session)
                outcomes[i].append("ok")
            except SessionTooLarge:
                outcomes[i].append("too large")
                fresh = await manager.get_session(session.session_id)
                assert fresh is not None
                sessions[i] = fresh
    assert outcomes[0] == outcomes[1]
    assert "too large" in outcomes[0] and outcomes[0].count("ok") > 100
    a, b = [await m.get_session(s.session_id) for m, s in zip(managers, sessions, strict=True)]
    assert a is not None and b is not None
    assert (a.state, a.ai_context, a.history, a.version) == (b.state, b.ai_context, b.history, b.version)
    await sqlite.close()


async def test_memory_store_with_an_int_clock_loads_and_saves() -> None:
    # A touch or an injected clock can leave ints where the record has floats: such a record is
    # built through the checked path, and behaves as any other.
    now = [1_800_000_000]
    store = MemorySessionStore(clock=lambda: now[0])
    manager = SessionManager(store, auto_cleanup=False, touch_interval=0)
    s = await manager.create_session(user_id="u", data={"n": 1})
    s.add_history_entry("message", {"text": "hi"})
    await manager.update_session(s)
    now[0] += 10
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.get("n") == 1 and loaded.last_accessed_at == now[0]
    assert loaded.history[0]["data"] == {"text": "hi"}
    loaded.set("n", 2)
    await manager.update_session(loaded)
    again = await manager.get_session(s.session_id)
    assert again is not None and again.get("n") == 2 and again.version == 3


async def test_memory_cleanup_follows_expiries_that_move_later_and_earlier() -> None:
    # Saves that move an expiry later push nothing to the expiry heap: the earlier pair, when
    # its time comes, finds the session live and is replaced by one at its current expiry.
    clock = FakeClock()
    store = MemorySessionStore(clock=clock)
    manager = SessionManager(store, session_lifetime=100, auto_cleanup=False, absolute_lifetime=None)
    moving = await manager.create_session()
    for _ in range(5):
        clock.advance(50)
        moving.set("n", 1)
        await manager.update_session(moving)
    assert len(store._expiries) <= 2 * len(store._sessions) + 65
    shortened = await manager.create_session()
    shortened.expiry_at = clock.now + 10  # a later save that makes the expiry earlier
    assert await store.cleanup_expired() == 0
    await store.set(shortened)
    clock.advance(20)
    assert await store.cleanup_expired() == 1  # `shortened`, at its new, earlier expiry
    assert await manager.get_session(moving.session_id) is not None
    clock.advance(79)
    assert await store.cleanup_expired() == 0  # `moving` expires 100 s after its last save
    clock.advance(2)
    assert await store.cleanup_expired() == 1
    assert store._sessions == {} and await manager.get_session(moving.session_id) is None


# ---------------------------------------------------------------- mutate: a turn per session
async def test_mutates_of_one_session_take_turns_and_never_conflict() -> None:
    store = MemorySessionStore()
    manager = SessionManager(store, auto_cleanup=False, max_retries=1)  # one conflict would raise
    s = await manager.create_session(data={"n": 0})
    order: list[int] = []

    async def inc(i: int) -> None:
        async def fn(session: Session) -> None:
            n = session.get("n")
            await asyncio.sleep(0)  # let every other mutate run up to here if it could
            session.set("n", n + 1)
            order.append(i)

        await manager.mutate(s.session_id, fn)

    await asyncio.gather(*(inc(i) for i in range(30)))
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.get("n") == 30 and loaded.version == 31
    assert order == list(range(30))  # first come, first served


async def test_a_mutate_inside_a_mutate_of_the_same_session_does_not_wait_for_itself() -> None:
    manager = SessionManager(MemorySessionStore(), auto_cleanup=False)
    s = await manager.create_session(data={"n": 0})
    inner_done = False

    async def outer(session: Session) -> None:
        nonlocal inner_done
        if not inner_done:
            inner_done = True
            await manager.mutate(s.session_id, lambda inner: inner.set("inner", True))
        session.set("n", session.get("n") + 1)

    saved = await asyncio.wait_for(manager.mutate(s.session_id, outer), timeout=5)
    # The outer save lost to the inner one and ran again on the fresh copy: both changes kept.
    assert saved.get("n") == 1 and saved.get("inner") is True


async def test_mutates_through_two_managers_still_race_with_compare_and_set() -> None:
    store = MemorySessionStore()
    first, second = SessionManager(store, auto_cleanup=False), SessionManager(store, auto_cleanup=False)
    s = await first.create_session(data={"n": 0})

    async def inc(session: Session) -> None:
        n = session.get("n")
        await asyncio.sleep(0)
        session.set("n", n + 1)

    await asyncio.gather(*(m.mutate(s.session_id, inc) for m in (first, second) for _ in range(20)))
    loaded = await first.get_session(s.session_id)
    assert loaded is not None and loaded.get("n") == 40
