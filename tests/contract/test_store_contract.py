"""The behaviour contract every backend must pass (DESIGN §3). Runs once per entry of BACKENDS."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import math
from typing import Any

import pytest

from agent_sessions import (
    InvalidSessionId,
    InvalidUserId,
    ScopeError,
    SerializationError,
    Session,
    SessionConflict,
    SessionManager,
    SessionNotFound,
    SessionStore,
    SessionTooLarge,
    new_session_id,
)

from ..support import FakeClock

pytestmark = pytest.mark.asyncio


def fields(s: Session) -> dict[str, Any]:
    data = s.model_dump()
    data["auth_info"] = s.auth_info
    return data


# ---------------------------------------------------------------- round trip
async def test_every_field_round_trips(store: SessionStore, clock: FakeClock) -> None:
    s = Session(
        user_id="alice",
        created_at=clock.now,
        last_accessed_at=clock.now + 1.5,
        expiry_at=clock.now + 600,
        state={"k": 1, "nested": {"a": [1, 2.5, "x", None, True]}, "unicode": "héllo ✓"},
        preferences={"theme": "dark"},
        auth_info={"token": "secret"},
        ai_context={"model": "m1", "temperature": 0.2},
        feature_flags={"beta": True},
        environment={"device": "phone"},
    )
    s.add_history_entry("message", {"text": "hi"})
    s.history[-1]["timestamp"] = clock.now
    await store.set(s)
    assert s.version == 1
    loaded = await store.get(s.session_id)
    assert loaded is not None
    assert fields(loaded) == fields(s)
    assert loaded.version == 1
    assert loaded.history == [{"timestamp": clock.now, "type": "message", "data": {"text": "hi"}}]


async def test_returned_session_is_a_copy(store: SessionStore) -> None:
    s = Session(state={"a": {"b": 1}})
    await store.set(s)
    loaded = await store.get(s.session_id)
    assert loaded is not None
    loaded.state["a"]["b"] = 2
    again = await store.get(s.session_id)
    assert again is not None and again.state == {"a": {"b": 1}}


async def test_returned_history_and_saved_values_are_copies(store: SessionStore) -> None:
    s = Session(state={"a": {"b": [1]}}, preferences={"p": {"q": 1}}, environment={"e": [1]})
    s.add_history_entry("message", {"text": "hi", "parts": [{"n": 1}]})
    await store.set(s)
    # The saving session's own objects are not the store's either.
    s.state["a"]["b"].append(2)
    s.preferences["p"]["q"] = 2
    s.environment["e"].append(2)
    s.history[-1]["data"]["parts"][0]["n"] = 2
    loaded = await store.get(s.session_id)
    assert loaded is not None
    assert loaded.state == {"a": {"b": [1]}} and loaded.preferences == {"p": {"q": 1}}
    assert loaded.environment == {"e": [1]}
    assert loaded.history[-1]["data"] == {"text": "hi", "parts": [{"n": 1}]}
    loaded.history[-1]["data"]["text"] = "changed"
    loaded.history[-1]["type"] = "changed"
    loaded.history.append({"timestamp": 1.0, "type": "x", "data": {}})
    loaded.state["a"]["b"].append(3)
    again = await store.get(s.session_id)
    assert again is not None and again.state == {"a": {"b": [1]}}
    assert again.history == [
        {"timestamp": s.history[0]["timestamp"], "type": "message", "data": {"text": "hi", "parts": [{"n": 1}]}}
    ]
    # The edits made to `s` after its save are still its changes.
    delta = s.changes()
    assert delta.sets == {"state": {"a": {"b": [1, 2]}}, "preferences": {"p": {"q": 2}}}
    assert delta.fields == {"environment": {"e": [1, 2]}}


async def test_version_bumps_on_each_save(store: SessionStore) -> None:
    s = Session()
    await store.set(s)
    s.set("x", 1)
    await store.set(s)
    s.set("x", 2)
    await store.set(s)
    loaded = await store.get(s.session_id)
    assert loaded is not None and loaded.version == 3 and loaded.get("x") == 2


async def test_missing_session_is_none(store: SessionStore) -> None:
    assert await store.get(new_session_id()) is None


async def test_auth_info_not_in_repr_or_to_dict(manager: SessionManager) -> None:
    s = await manager.create_session(user_id="u")
    s.auth_info = {"password_hash": "TOPSECRET"}
    await manager.update_session(s)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.auth_info == {"password_hash": "TOPSECRET"}
    assert "TOPSECRET" not in repr(loaded)
    assert "TOPSECRET" not in str(loaded.to_dict())
    assert "TOPSECRET" not in loaded.model_dump_json()


# ---------------------------------------------------------------- compare-and-set
async def test_insert_of_existing_id_conflicts(store: SessionStore) -> None:
    s = Session()
    await store.set(s)
    with pytest.raises(SessionConflict):
        await store.set(Session(session_id=s.session_id))


async def test_stale_save_conflicts_and_writes_nothing(store: SessionStore) -> None:
    s = Session()
    await store.set(s)
    a = await store.get(s.session_id)
    b = await store.get(s.session_id)
    assert a is not None and b is not None
    a.set("who", "a")
    await store.set(a)
    b.set("who", "b")
    with pytest.raises(SessionConflict):
        await store.set(b)
    loaded = await store.get(s.session_id)
    assert loaded is not None and loaded.get("who") == "a" and loaded.version == 2


async def test_save_never_recreates_a_deleted_session(store: SessionStore) -> None:
    s = Session()
    await store.set(s)
    await store.delete(s.session_id)
    s.set("x", 1)
    with pytest.raises(SessionNotFound):
        await store.set(s)
    assert await store.get(s.session_id) is None


async def test_delete_reports_existence(store: SessionStore) -> None:
    s = Session()
    await store.set(s)
    assert await store.delete(s.session_id) is True
    assert await store.delete(s.session_id) is False


# ---------------------------------------------------------------- concurrency through the manager
async def test_mutate_counters_are_exact_under_contention(manager: SessionManager) -> None:
    s = await manager.create_session(data={"n": 0})

    def inc(session: Session) -> None:
        session.set("n", session.get("n") + 1)

    async def worker() -> None:
        for _ in range(20):
            await manager.mutate(s.session_id, inc)

    await asyncio.gather(*(worker() for _ in range(50)))
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.get("n") == 1000


async def test_async_mutate_function(manager: SessionManager) -> None:
    s = await manager.create_session()

    async def set_flag(session: Session) -> None:
        await asyncio.sleep(0)
        session.feature_flags["on"] = True

    saved = await manager.mutate(s.session_id, set_flag)
    assert saved.feature_flags == {"on": True}
    assert saved.version == 2


async def test_concurrent_writers_of_different_keys_all_survive(manager: SessionManager) -> None:
    s = await manager.create_session()

    async def writer(i: int) -> None:
        session = await manager.get_session(s.session_id)
        assert session is not None
        await asyncio.sleep(0)
        session.set(f"key{i}", i)
        session.preferences[f"p{i}"] = i
        session.add_history_entry("write", {"i": i})
        await manager.update_session(session)
        assert session.get(f"key{i}") == i

    await asyncio.gather(*(writer(i) for i in range(50)))
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None
    assert {k: v for k, v in loaded.state.items()} == {f"key{i}": i for i in range(50)}
    assert loaded.preferences == {f"p{i}": i for i in range(50)}
    page = await manager.get_history(s.session_id, limit=100)
    assert sorted(e["data"]["i"] for e in page.entries) == list(range(50))


async def test_same_key_is_last_writer_wins(manager: SessionManager) -> None:
    s = await manager.create_session()
    a = await manager.get_session(s.session_id)
    b = await manager.get_session(s.session_id)
    assert a is not None and b is not None
    a.set("color", "red")
    b.set("color", "blue")
    b.set("other", 1)
    await manager.update_session(a)
    await manager.update_session(b)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.get("color") == "blue" and loaded.get("other") == 1
    assert b.version == loaded.version


async def test_deletes_replay_on_conflict(manager: SessionManager) -> None:
    s = await manager.create_session(data={"gone": 1, "kept": 2})
    a = await manager.get_session(s.session_id)
    b = await manager.get_session(s.session_id)
    assert a is not None and b is not None
    a.delete("gone")
    b.set("new", 3)
    await manager.update_session(b)
    await manager.update_session(a)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.state == {"kept": 2, "new": 3}


async def test_delete_racing_a_writer_stays_deleted(manager: SessionManager) -> None:
    s = await manager.create_session()
    copy = await manager.get_session(s.session_id)
    assert copy is not None
    await manager.delete_session(s.session_id)
    copy.set("x", 1)
    with pytest.raises(SessionNotFound):
        await manager.update_session(copy)
    with pytest.raises(SessionNotFound):
        await manager.mutate(s.session_id, lambda sess: sess.set("y", 1))
    assert await manager.get_session(s.session_id) is None


async def test_delete_during_conflict_replay_stays_deleted(manager: SessionManager) -> None:
    s = await manager.create_session()
    a = await manager.get_session(s.session_id)
    assert a is not None
    b = await manager.get_session(s.session_id)
    assert b is not None
    b.set("b", 1)
    await manager.update_session(b)  # a is now stale
    await manager.delete_session(s.session_id)
    a.set("a", 1)
    with pytest.raises(SessionNotFound):
        await manager.update_session(a)
    assert await manager.get_session(s.session_id) is None


async def test_concurrent_deletes_and_writes_never_resurrect(manager: SessionManager) -> None:
    ids = [(await manager.create_session()).session_id for _ in range(20)]

    async def writer(sid: str) -> None:
        with contextlib.suppress(SessionNotFound):
            await manager.mutate(sid, lambda sess: sess.set("w", 1))

    await asyncio.gather(*(writer(sid) for sid in ids), *(manager.delete_session(sid) for sid in ids))
    for sid in ids:
        assert await manager.get_session(sid) is None


# ---------------------------------------------------------------- expiry
async def test_idle_timeout_expires_and_reads_as_absent(manager: SessionManager, clock: FakeClock) -> None:
    s = await manager.create_session()
    clock.advance(3599)
    assert await manager.get_session(s.session_id) is not None  # access renews the idle deadline
    clock.advance(3599)
    assert await manager.get_session(s.session_id) is not None
    clock.advance(3601)
    assert await manager.get_session(s.session_id) is None
    assert await manager.store.get(s.session_id) is None


async def test_absolute_timeout_is_never_extended(manager: SessionManager, clock: FakeClock) -> None:
    s = await manager.create_session()
    for _ in range(9):  # 9 x 55 min > the 8 h absolute lifetime, each access within the idle timeout
        clock.advance(3300)
        got = await manager.get_session(s.session_id)
        if got is None:
            break
        assert got.expiry_at is not None and got.expiry_at <= s.created_at + 8 * 3600
        got.set("alive", True)
        await manager.update_session(got)
    assert clock.now - s.created_at >= 8 * 3600
    assert await manager.get_session(s.session_id) is None


async def test_store_expiry_is_the_earlier_deadline(manager: SessionManager, clock: FakeClock) -> None:
    s = await manager.create_session()
    assert s.expiry_at == pytest.approx(clock.now + 3600)
    clock.advance(8 * 3600 - 1000)  # the absolute deadline is now nearer than the idle one
    got = await manager.refresh_session(s.session_id)
    assert got is None  # idle timeout passed long ago
    s2 = await manager.create_session()
    for _ in range(15):
        clock.advance(1800)
        refreshed = await manager.refresh_session(s2.session_id)
        assert refreshed is not None
        if refreshed.expiry_at == pytest.approx(s2.created_at + 8 * 3600):
            break
    stored = await manager.store.get(s2.session_id)
    assert stored is not None and stored.expiry_at == pytest.approx(s2.created_at + 8 * 3600)


async def test_expired_session_cannot_be_saved(manager: SessionManager, clock: FakeClock) -> None:
    s = await manager.create_session()
    clock.advance(3601)
    s.set("x", 1)
    with pytest.raises(SessionNotFound):
        await manager.update_session(s)
    assert await manager.store.get(s.session_id) is None


async def test_reads_do_not_write_more_than_once_per_touch_interval(manager: SessionManager, clock: FakeClock) -> None:
    s = await manager.create_session()
    created = s.last_accessed_at
    for _ in range(5):
        clock.advance(60)  # well inside the touch interval (900 s)
        got = await manager.get_session(s.session_id)
        assert got is not None
    raw = await manager.store.get(s.session_id)
    assert raw is not None
    assert raw.last_accessed_at == created  # nothing persisted
    assert raw.version == 1  # and touches never bump the version
    clock.advance(900)
    await manager.get_session(s.session_id)
    raw = await manager.store.get(s.session_id)
    assert raw is not None
    assert raw.last_accessed_at == clock.now
    assert raw.expiry_at == pytest.approx(clock.now + 3600)
    assert raw.version == 1


async def test_cleanup_removes_exactly_the_expired(manager: SessionManager, clock: FakeClock) -> None:
    short = [await manager.create_session(user_id="u") for _ in range(7)]
    clock.advance(1800)
    long = [await manager.create_session(user_id="u") for _ in range(5)]
    clock.advance(1801 + 1)  # the first batch is past its idle deadline, the second is not
    removed = await manager.cleanup(force=True)
    assert removed == 7
    for s in short:
        assert await manager.store.get(s.session_id) is None
    for s in long:
        assert await manager.store.get(s.session_id) is not None
    assert {s.session_id for s in await manager.get_user_sessions("u")} == {s.session_id for s in long}
    assert await manager.cleanup(force=True) == 0


async def test_cleanup_in_small_batches(make_store: Any, clock: FakeClock) -> None:
    async with make_store() as store:
        for _ in range(23):
            await store.set(Session(created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 10))
        keep = Session(expiry_at=clock.now + 1000)
        await store.set(keep)
        clock.advance(11)
        assert await store.cleanup_expired(batch_size=5) == 23
        assert [s.session_id async for s in store.iter_sessions()] == [keep.session_id]


# ---------------------------------------------------------------- ids
BAD_IDS: list[Any] = [
    "",
    "x" * 4096,
    "*",
    "abc?",
    "[a-z]*",
    "../../etc/passwd",
    "a\x00b" + "c" * 40,
    "é" * 43,
    "ä" + "a" * 42,
    "a" * 42,
    "a" * 44,
    "a" * 42 + "*",
    "a" * 42 + "\n",
    None,
    42,
    b"a" * 43,
]


@pytest.mark.parametrize("bad", BAD_IDS, ids=lambda v: repr(v)[:20])
async def test_bad_ids_raise_before_any_io(
    store: SessionStore, manager: SessionManager, bad: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def no_io(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("I/O attempted with an invalid session id")

    for name in ("load_record", "write", "delete_record", "touch_record", "history_page", "load_records"):
        monkeypatch.setattr(store, name, no_io)
    with pytest.raises(InvalidSessionId) as info:
        await store.get(bad)
    if isinstance(bad, str) and len(bad) > 3:
        assert bad not in str(info.value)  # never echoed
    calls = [
        lambda: store.delete(bad),
        lambda: store.touch(bad, 0.0, None),
        lambda: store.get_history(bad),
        lambda: manager.get_session(bad),
        lambda: manager.get_session(bad, create_if_missing=True),
        lambda: manager.delete_session(bad),
        lambda: manager.mutate(bad, lambda s: None),
        lambda: manager.refresh_session(bad),
        lambda: manager.regenerate_id(bad),
        lambda: manager.get_history(bad),
    ]
    if isinstance(bad, str):
        calls.append(lambda: store.set(Session(session_id=bad)))
        calls.append(lambda: manager.update_session(Session(session_id=bad)))
    for call in calls:
        with pytest.raises(InvalidSessionId):
            await call()


async def test_bad_user_ids_rejected(manager: SessionManager) -> None:
    for bad in ("", "x" * 300, "a\nb", "nul\x00"):
        with pytest.raises(InvalidUserId):
            await manager.get_user_sessions(bad)
        with pytest.raises(InvalidUserId):
            await manager.create_session(user_id=bad)


async def test_new_ids_are_256_bit_tokens(manager: SessionManager) -> None:
    ids = {(await manager.create_session()).session_id for _ in range(20)}
    assert len(ids) == 20
    assert all(len(i) == 43 for i in ids)


async def test_unknown_id_is_never_adopted(manager: SessionManager) -> None:
    forged = new_session_id()
    s = await manager.get_session(forged, create_if_missing=True)
    assert s is not None and s.session_id != forged
    assert await manager.get_session(forged) is None


async def test_regenerate_id_moves_data_and_kills_old_id(manager: SessionManager) -> None:
    s = await manager.create_session(user_id="u", data={"k": "v"})
    for i in range(3):
        s.add_history_entry("turn", {"i": i})
    await manager.update_session(s)
    moved = await manager.regenerate_id(s.session_id)
    assert moved.session_id != s.session_id
    assert moved.get("k") == "v" and moved.user_id == "u"
    assert [e["data"]["i"] for e in (await manager.get_history(moved.session_id)).entries] == [0, 1, 2]
    assert await manager.get_session(s.session_id) is None
    assert [x.session_id for x in await manager.get_user_sessions("u")] == [moved.session_id]
    s.set("late", 1)
    with pytest.raises(SessionNotFound):
        await manager.update_session(s)


# ---------------------------------------------------------------- data
NON_JSON: list[Any] = [
    dt.datetime(2024, 1, 1),
    {1, 2},
    b"bytes",
    math.nan,
    math.inf,
    {1: "int key"},
    {"ok": {"deep": {2: "x"}}},
    (1, 2),
    object(),
]


@pytest.mark.parametrize("value", NON_JSON, ids=lambda v: type(v).__name__)
async def test_non_json_values_raise_at_set(value: Any) -> None:
    s = Session()
    with pytest.raises(SerializationError):
        s.set("k", value)
    assert "k" not in s.state


@pytest.mark.parametrize("value", NON_JSON, ids=lambda v: type(v).__name__)
async def test_non_json_values_raise_at_save_and_write_nothing(manager: SessionManager, value: Any) -> None:
    s = await manager.create_session(data={"good": 1})
    s.state["bad"] = value  # bypasses Session.set: caught at save
    s.state["good"] = 2
    with pytest.raises(SerializationError):
        await manager.update_session(s)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.state == {"good": 1} and loaded.version == 1


@pytest.mark.parametrize("where", ["state", "state-key", "history", "history-type", "preferences", "ai_context-key"])
async def test_text_that_utf8_cannot_encode_raises_at_save_and_writes_nothing(
    manager: SessionManager, where: str
) -> None:
    s = await manager.create_session(user_id="u", data={"good": 1})
    bad = "lone \ud800 surrogate"
    if where == "state":
        s.state["k"] = {"nested": [bad]}
    elif where == "state-key":
        s.state[bad] = 1
    elif where == "history":
        with pytest.raises(SerializationError):  # refused where it is added...
            s.add_history_entry("message", {"text": bad})
        s.history.append({"timestamp": 1.0, "type": "message", "data": {"text": bad}})  # ...and at save
    elif where == "history-type":
        s.history.append({"timestamp": 1.0, "type": bad, "data": {}})
    elif where == "preferences":
        s.preferences["p"] = bad
    else:
        s.ai_context[bad] = 1
    with pytest.raises(SerializationError):
        await manager.update_session(s)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.version == 1
    assert loaded.state == {"good": 1} and loaded.history == [] and loaded.preferences == {} and loaded.ai_context == {}


async def test_non_json_history_and_preferences_raise(manager: SessionManager) -> None:
    s = await manager.create_session(user_id="u")
    with pytest.raises(SerializationError):
        s.add_history_entry("x", {"when": dt.date.today()})
    s.preferences["p"] = {3}
    with pytest.raises(SerializationError):
        await manager.update_session(s)
    assert (await manager.store.load_scopes("u")).preferences == {}


async def test_oversize_session_raises_and_writes_nothing(make_store: Any) -> None:
    async with make_store(max_session_bytes=10_000) as store:
        manager = SessionManager(store, auto_cleanup=False)
        s = await manager.create_session()
        s.set("blob", "x" * 20_000)
        with pytest.raises(SessionTooLarge):
            await manager.update_session(s)
        loaded = await manager.get_session(s.session_id)
        assert loaded is not None and "blob" not in loaded.state
        with pytest.raises(SessionTooLarge):
            await store.set(Session(state={"blob": "y" * 20_000}))


async def test_default_limit_is_one_mib(store: SessionStore) -> None:
    with pytest.raises(SessionTooLarge):
        await store.set(Session(state={"blob": "z" * (1024 * 1024 + 1)}))
    ok = Session(state={"blob": "z" * (512 * 1024)})
    await store.set(ok)
    assert (await store.get(ok.session_id)) is not None


# ---------------------------------------------------------------- scopes
async def test_temp_keys_are_never_persisted(manager: SessionManager) -> None:
    s = await manager.create_session(data={"temp:scratch": 1, "kept": 2})
    assert s.get("temp:scratch") == 1
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.state == {"kept": 2}


async def test_temp_keys_survive_a_conflict_replay_in_memory(manager: SessionManager) -> None:
    s = await manager.create_session()
    other = await manager.get_session(s.session_id)
    assert other is not None
    other.set("o", 1)
    await manager.update_session(other)
    s.set("temp:mine", "x")
    s.set("k", 1)
    await manager.update_session(s)
    assert s.get("temp:mine") == "x" and s.get("o") == 1


async def test_user_scope_is_shared_by_the_users_sessions(manager: SessionManager) -> None:
    a = await manager.create_session(user_id="alice")
    a.set("user:language", "fr")
    a.set("local", 1)
    await manager.update_session(a)
    b = await manager.create_session(user_id="alice")
    assert b.get("user:language") == "fr" and "local" not in b.state
    other = await manager.create_session(user_id="bob")
    assert "user:language" not in other.state
    b.set("user:language", "de")
    await manager.update_session(b)
    again = await manager.get_session(a.session_id)
    assert again is not None and again.get("user:language") == "de"


async def test_app_scope_is_shared_by_all_sessions(manager: SessionManager) -> None:
    a = await manager.create_session()
    a.set("app:motd", "hello")
    await manager.update_session(a)
    b = await manager.create_session(user_id="zed")
    assert b.get("app:motd") == "hello"
    b.delete("app:motd")
    await manager.update_session(b)
    again = await manager.get_session(a.session_id)
    assert again is not None and "app:motd" not in again.state


async def test_preferences_follow_the_user(manager: SessionManager) -> None:
    a = await manager.create_session(user_id="carol")
    a.preferences["theme"] = "dark"
    await manager.update_session(a)
    b = await manager.create_session(user_id="carol")
    assert b.preferences == {"theme": "dark"}
    anon = await manager.create_session()
    assert anon.preferences == {}


async def test_user_scope_key_without_user_raises(manager: SessionManager) -> None:
    s = await manager.create_session()
    s.set("user:x", 1)
    with pytest.raises(ScopeError):
        await manager.update_session(s)


# ---------------------------------------------------------------- users
async def test_get_user_sessions_returns_exactly_the_users_live_sessions(
    manager: SessionManager, clock: FakeClock
) -> None:
    mine = [await manager.create_session(user_id="dave") for _ in range(3)]
    await manager.create_session(user_id="erin")
    await manager.create_session()
    gone = await manager.create_session(user_id="dave")
    await manager.delete_session(gone.session_id)
    expired = await manager.create_session(user_id="dave")
    assert expired.expiry_at is not None
    # expire just one session by touching the others
    clock.advance(3000)
    for s in mine:
        await manager.refresh_session(s.session_id)
    clock.advance(700)
    found = await manager.get_user_sessions("dave")
    assert sorted(s.session_id for s in found) == sorted(s.session_id for s in mine)
    assert await manager.get_user_sessions("nobody") == []


async def test_changing_user_moves_the_index(manager: SessionManager) -> None:
    s = await manager.create_session()
    s.user_id = "frank"
    await manager.update_session(s)
    assert [x.session_id for x in await manager.get_user_sessions("frank")] == [s.session_id]
    s.user_id = "gina"
    await manager.update_session(s)
    assert await manager.get_user_sessions("frank") == []
    assert [x.session_id for x in await manager.get_user_sessions("gina")] == [s.session_id]


async def test_get_all_with_filter_and_streaming(manager: SessionManager) -> None:
    made = [await manager.create_session(data={"i": i}) for i in range(12)]
    everything = await manager.store.get_all()
    assert {s.session_id for s in everything} == {s.session_id for s in made}
    odd = await manager.store.get_all(lambda s: s.get("i") % 2 == 1)
    assert sorted(s.get("i") for s in odd) == [1, 3, 5, 7, 9, 11]
    streamed = [s.session_id async for s in manager.store.iter_sessions(batch_size=5)]
    assert sorted(streamed) == sorted(s.session_id for s in made)


# ---------------------------------------------------------------- history
async def test_history_is_capped_and_paged(make_store: Any) -> None:
    async with make_store(max_history=25, history_window=10) as store:
        manager = SessionManager(store, auto_cleanup=False)
        s = await manager.create_session()
        for i in range(40):
            s.add_history_entry("turn", {"i": i})
            if i % 7 == 0:
                await manager.update_session(s)
        await manager.update_session(s)
        loaded = await manager.get_session(s.session_id)
        assert loaded is not None
        assert [e["data"]["i"] for e in loaded.history] == list(range(30, 40))
        first = await manager.get_history(s.session_id, limit=10)
        assert [e["data"]["i"] for e in first.entries] == list(range(30, 40))
        assert first.next_before is not None
        second = await manager.get_history(s.session_id, limit=10, before=first.next_before)
        assert [e["data"]["i"] for e in second.entries] == list(range(20, 30))
        third = await manager.get_history(s.session_id, limit=10, before=second.next_before)
        assert [e["data"]["i"] for e in third.entries] == list(range(15, 20))  # capped at 25
        assert third.next_before is None


async def test_history_keeps_the_original_shape(manager: SessionManager) -> None:
    s = await manager.create_session()
    s.add_history_entry("context", {"context_id": "c1", "tool_name": None, "duration": 0.5})
    await manager.update_session(s)
    page = await manager.get_history(s.session_id)
    (entry,) = page.entries
    assert set(entry) == {"timestamp", "type", "data"}
    assert entry["type"] == "context" and entry["data"]["duration"] == 0.5


async def test_loaded_history_entries_of_every_shape_are_private_copies(manager: SessionManager) -> None:
    s = await manager.create_session()
    shapes: list[dict[str, Any]] = [
        {"role": "user", "n": 1},  # a dict of scalars (the usual entry)
        {"parts": [{"n": 1}], "meta": {"k": [1]}},  # containers inside the data
        {},
    ]
    for data in shapes:
        s.add_history_entry("message", data)
    s.history.append({"timestamp": 1.0, "type": "raw", "data": {"n": 1}, "extra": [1, {"x": 1}]})
    s.history.append({"timestamp": 2.0, "type": "flat"})
    await manager.update_session(s)
    expected = json.loads(json.dumps(s.history))
    first = await manager.get_session(s.session_id)
    second = await manager.get_session(s.session_id)
    assert first is not None and second is not None
    assert first.history == second.history == expected
    # Every level of every entry of one reader is its own: the other reader and the store keep theirs.
    first.history[0]["data"]["role"] = "changed"
    first.history[0]["type"] = "changed"
    first.history[1]["data"]["parts"][0]["n"] = 2
    first.history[1]["data"]["meta"]["k"].append(2)
    first.history[2]["data"]["new"] = 1
    first.history[3]["data"]["n"] = 2
    first.history[3]["extra"][1]["x"] = 2
    first.history[4]["type"] = "changed"
    assert second.history == expected
    again = await manager.get_session(s.session_id)
    assert again is not None and again.history == expected


async def test_history_entries_edited_after_a_save_keep_what_was_saved(manager: SessionManager) -> None:
    s = await manager.create_session()
    s.add_history_entry("message", {"text": "hi", "meta": {"k": 1}})
    await manager.update_session(s)
    s.history[0]["data"]["text"] = "edited"
    s.history[0]["data"]["meta"]["k"] = 2
    s.history[0]["type"] = "edited"
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None
    assert loaded.history[0]["data"] == {"text": "hi", "meta": {"k": 1}} and loaded.history[0]["type"] == "message"


@pytest.mark.parametrize(
    "bad",
    [
        {"data": {"x": math.nan}},
        {"data": {"x": math.inf}},
        {"data": {1: "int key"}},
        {"data": {"deep": [{"x": (1, 2)}]}},
        {"data": {"when": dt.date(2020, 1, 1)}},
        {"extra": {2: "x"}},
        {"extra": {"s": {3}}},
        {"extra": -math.inf},
    ],
    ids=str,
)
async def test_a_history_entry_edited_into_non_json_raises_at_save_and_writes_nothing(
    manager: SessionManager, bad: dict[str, Any]
) -> None:
    s = await manager.create_session(data={"good": 1})
    s.add_history_entry("message", {"ok": 1})
    # Checked when added; edited afterwards, so only the save can catch it.
    entry = s.history[-1]
    for key, value in bad.items():
        if key == "data":
            entry["data"].update(value)
        else:
            entry[key] = value
    s.state["good"] = 2
    with pytest.raises(SerializationError):
        await manager.update_session(s)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.history == [] and loaded.state == {"good": 1} and loaded.version == 1


async def test_history_entry_size_limit_is_exact(make_store: Any) -> None:
    limit = 10_000
    async with make_store(max_session_bytes=limit) as store:
        manager = SessionManager(store, auto_cleanup=False)
        s = await manager.create_session()
        # Encoded, these are under the limit, though a per-character bound would say otherwise.
        s.add_history_entry("message", {"text": "é" * 4000})
        s.add_history_entry("message", {"text": "\n" * 4000})
        await manager.update_session(s)
        s.add_history_entry("message", {"text": "x" * limit})
        with pytest.raises(SessionTooLarge):
            await manager.update_session(s)
        loaded = await manager.get_session(s.session_id)
        assert loaded is not None and [len(e["data"]["text"]) for e in loaded.history] == [4000, 4000]


async def test_a_loaded_session_given_an_invalid_id_is_not_saved(manager: SessionManager) -> None:
    s = await manager.create_session(data={"n": 1})
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None
    loaded.session_id = "not a valid id"
    loaded.set("n", 2)
    with pytest.raises(InvalidSessionId):
        await manager.update_session(loaded)
    # The same characters in a new string object are checked again, and pass.
    loaded.session_id = "".join(list(s.session_id))
    await manager.update_session(loaded)
    again = await manager.get_session(s.session_id)
    assert again is not None and again.get("n") == 2


async def test_history_of_missing_session_is_empty(store: SessionStore) -> None:
    page = await store.get_history(new_session_id())
    assert page.entries == [] and page.next_before is None


async def test_appending_history_after_conflict_keeps_every_entry(manager: SessionManager) -> None:
    s = await manager.create_session()

    async def turn(i: int) -> None:
        got = await manager.get_session(s.session_id)
        assert got is not None
        await asyncio.sleep(0)
        got.add_history_entry("turn", {"i": i})
        await manager.update_session(got)

    await asyncio.gather(*(turn(i) for i in range(30)))
    page = await manager.get_history(s.session_id, limit=100)
    assert sorted(e["data"]["i"] for e in page.entries) == list(range(30))


# ---------------------------------------------------------------- misc manager behaviour
async def test_update_session_on_unsaved_session_inserts(manager: SessionManager, clock: FakeClock) -> None:
    s = Session(user_id="hal", created_at=clock.now)
    await manager.update_session(s)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.user_id == "hal" and loaded.expiry_at is not None


async def test_conflict_after_retries_run_out(store: SessionStore) -> None:
    manager = SessionManager(store, auto_cleanup=False, max_retries=2)
    s = await manager.create_session(data={"n": 0})

    async def always_bump(session: Session) -> None:
        # another writer saves between our read and our write, every time
        other = await store.get(s.session_id)
        assert other is not None
        other.set("n", other.get("n") + 1)
        await store.set(other)
        session.set("mine", 1)

    with pytest.raises(SessionConflict):
        await manager.mutate(s.session_id, always_bump)


async def test_a_save_racing_regenerate_id_is_not_lost(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await manager.create_session(user_id="u", data={"a": 1})
    store = manager.store
    original_restore = store.restore
    raced = False

    async def restore_after_a_racing_save(*args: Any, **kwargs: Any) -> None:
        nonlocal raced
        if not raced:  # another request saves the old id while the move is in flight
            raced = True
            await manager.mutate(s.session_id, lambda sess: sess.set("cart", ["book"]))
        await original_restore(*args, **kwargs)

    monkeypatch.setattr(store, "restore", restore_after_a_racing_save)
    moved = await manager.regenerate_id(s.session_id)
    # A backend that moves in one transaction has no window to race in (restore is not used).
    assert moved.get("cart") == (["book"] if raced else None) and moved.get("a") == 1
    assert await manager.get_session(s.session_id) is None
    with pytest.raises(SessionNotFound):
        await manager.mutate(s.session_id, lambda sess: sess.set("late", 1))
    assert [x.session_id for x in await manager.get_user_sessions("u")] == [moved.session_id]


async def test_clear_keeps_shared_scope_keys(manager: SessionManager) -> None:
    a = await manager.create_session(user_id="ann", data={"own": 1, "user:plan": "pro", "app:motd": "hi"})
    a.clear()
    assert a.state == {"user:plan": "pro", "app:motd": "hi"}
    await manager.update_session(a)
    b = await manager.create_session(user_id="ann")
    assert b.get("user:plan") == "pro" and b.get("app:motd") == "hi"
    again = await manager.get_session(a.session_id)
    assert again is not None and "own" not in again.state


async def test_a_nested_type_change_is_saved(manager: SessionManager) -> None:
    s = await manager.create_session(data={"opts": {"flag": 1}})
    s.state["opts"]["flag"] = True
    await manager.update_session(s)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.get("opts") == {"flag": True} and loaded.get("opts")["flag"] is True


async def test_nul_in_scope_keys_and_history_types_is_rejected_everywhere(manager: SessionManager) -> None:
    s = await manager.create_session(user_id="nul")
    s.set("user:a\x00b", 1)
    with pytest.raises(SerializationError):
        await manager.update_session(s)
    s.delete("user:a\x00b")
    s.add_history_entry("bad\x00type", {})
    with pytest.raises(SerializationError):
        await manager.update_session(s)
    s.history.pop()
    s.preferences["p\x00"] = 1
    with pytest.raises(SerializationError):
        await manager.update_session(s)
    loaded = await manager.get_session(s.session_id)
    assert loaded is not None and loaded.version == 1


async def test_a_late_touch_never_shortens_the_expiry(manager: SessionManager, clock: FakeClock) -> None:
    s = await manager.create_session()
    early = clock.now + 100
    clock.advance(1000)
    await manager.refresh_session(s.session_id)
    later = (await manager.store.get(s.session_id)).expiry_at  # type: ignore[union-attr]
    assert await manager.store.touch(s.session_id, clock.now - 900, early)  # a delayed touch lands late
    stored = await manager.store.get(s.session_id)
    assert stored is not None and stored.expiry_at == later


# ---------------------------------------------------------------- caller-chosen ids
async def test_server_side_caller_may_choose_an_id_of_the_issued_shape(manager: SessionManager) -> None:
    chosen = "A" * 43
    session = await manager.create_session("alice", {"k": 1}, session_id=chosen)
    assert session.session_id == chosen
    loaded = await manager.get_session(chosen)
    assert loaded is not None and loaded.get("k") == 1 and loaded.user_id == "alice"
    with pytest.raises(SessionConflict):
        await manager.create_session("bob", session_id=chosen)
    for bad in ("../etc/passwd", "A" * 42, "A" * 44, "A" * 42 + "*", ""):
        with pytest.raises(InvalidSessionId):
            await manager.create_session("alice", session_id=bad)
