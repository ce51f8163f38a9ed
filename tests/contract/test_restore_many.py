"""`SessionStore.restore_many` (the bulk path of import, migrate and the benchmark's pre-fill)
behaves like `restore` one by one, on every backend."""

from __future__ import annotations

import pytest

from agent_sessions import SerializationError, Session, SessionNotFound, SessionStore
from agent_sessions.stores.base import Restore

from ..support import FakeClock

pytestmark = pytest.mark.asyncio


def exported(clock: FakeClock, i: int, *, entries: int = 3) -> Restore:
    s = Session(
        user_id=f"u{i % 2}",
        created_at=clock.now,
        last_accessed_at=clock.now,
        expiry_at=clock.now + 600,
        state={"i": i},
        version=4,
    )
    history = [{"timestamp": clock.now + n, "type": "turn", "data": {"n": n}} for n in range(entries)]
    return Restore(s, history, history_seq=entries + 10)


async def test_restore_many_inserts_every_session_with_its_version_and_history(
    store: SessionStore, clock: FakeClock
) -> None:
    items = [exported(clock, i) for i in range(5)]
    assert await store.restore_many(items) == [True] * 5
    for i, item in enumerate(items):
        loaded = await store.get(item.session.session_id)
        assert loaded is not None and loaded.get("i") == i and loaded.user_id == f"u{i % 2}"
        assert loaded.version == 4 and loaded.history_seq == 13
        assert [e["data"]["n"] for e in loaded.history] == [0, 1, 2]
        page = await store.get_history(item.session.session_id, limit=10)
        assert [e["data"]["n"] for e in page.entries] == [0, 1, 2]
    assert sorted(s.session_id for s in await store.get_user_sessions("u0")) == sorted(
        items[i].session.session_id for i in (0, 2, 4)
    )


async def test_restore_many_leaves_an_existing_id_as_it_was_and_inserts_the_rest(
    store: SessionStore, clock: FakeClock
) -> None:
    existing = Session(state={"kept": True})
    await store.set(existing)
    clash = exported(clock, 0)
    clash.session.session_id = existing.session_id
    fresh = exported(clock, 1)
    twice = exported(clock, 2)
    again = Restore(twice.session.model_copy(deep=True), [], history_seq=0)
    again.session.set("second", True)
    assert await store.restore_many([clash, fresh, twice, again]) == [False, True, True, False]
    kept = await store.get(existing.session_id)
    assert kept is not None and kept.get("kept") is True and kept.get("i") is None and kept.history == []
    first = await store.get(twice.session.session_id)
    assert first is not None and first.get("second") is None and len(first.history) == 3
    assert await store.get(fresh.session.session_id) is not None


async def test_restore_many_checks_every_item_before_writing_any(store: SessionStore, clock: FakeClock) -> None:
    good = exported(clock, 0)
    expired = exported(clock, 1)
    expired.session.expiry_at = clock.now - 1
    with pytest.raises(SessionNotFound):
        await store.restore_many([good, expired])
    bad_seq = exported(clock, 2)
    bad_seq.history_seq = 1  # fewer than the entries given
    with pytest.raises(SerializationError):
        await store.restore_many([good, bad_seq])
    assert await store.get(good.session.session_id) is None
    assert await store.restore_many([]) == []


async def test_restore_many_keeps_only_the_newest_max_history_entries(store: SessionStore, clock: FakeClock) -> None:
    item = exported(clock, 0, entries=store.max_history + 5)
    item.history_seq = None
    assert await store.restore_many([item]) == [True]
    page = await store.get_history(item.session.session_id, limit=store.max_history + 10)
    assert len(page.entries) == store.max_history
    assert page.entries[-1]["data"]["n"] == store.max_history + 4
