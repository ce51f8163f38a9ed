"""Redis-specific guarantees of `RedisSessionStore` beyond the shared contract suite:
round trips, key layout and hash slots, TTLs, SCAN patterns, index pruning, script reloads,
idempotent re-sent saves, corrupt records and client handling."""

from __future__ import annotations

import asyncio
import math
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection

from agent_sessions import (
    SerializationError,
    Session,
    SessionManager,
    SessionNotFound,
    SessionStore,
    StoreUnavailable,
    create_store,
)
from agent_sessions.stores.base import Restore
from agent_sessions.stores.redis import KeyLayout, RedisSessionStore
from agent_sessions.stores.redis import store as store_module

from ..support import REDIS_START, REDIS_URL, FakeClock, require_service
from .servers import RedisServer
from .stores import delete_prefix, prefixed_store, redis_cluster_store, redis_host_port, redis_store

pytestmark = pytest.mark.asyncio

WEIRD_USER = "ünï {code}:*?[x] \\ }{"


def as_redis(store: SessionStore) -> RedisSessionStore:
    assert isinstance(store, RedisSessionStore)
    return store


@pytest.fixture(scope="module")
def private_redis() -> Iterator[RedisServer]:
    """A Redis server of this module's own: round-trip counts and script flushes disturb no one."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@asynccontextmanager
async def private_store(server: RedisServer, clock: FakeClock, **options: Any) -> AsyncIterator[SessionStore]:
    async with prefixed_store(server.url, clock, **options) as store:
        yield store


@pytest.fixture(params=["redis", "redis_cluster"])
def open_store(request: pytest.FixtureRequest, clock: FakeClock) -> Any:
    def make(**options: Any) -> AbstractAsyncContextManager[SessionStore]:
        if request.param == "redis":
            return private_store(request.getfixturevalue("private_redis"), clock, **options)
        return redis_cluster_store(clock, **options)

    return make


@pytest.fixture
async def single(private_redis: RedisServer, clock: FakeClock) -> AsyncIterator[RedisSessionStore]:
    async with private_store(private_redis, clock) as store:
        yield as_redis(store)


@pytest.fixture
async def cluster(clock: FakeClock) -> AsyncIterator[RedisSessionStore]:
    async with redis_cluster_store(clock) as store:
        yield as_redis(store)


class RoundTrips:
    """Counts the requests a client writes to Redis (a pipeline is one request)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        original = AbstractConnection.send_packed_command

        async def counting(conn: AbstractConnection, command: Any, check_health: bool = True) -> None:
            self.count += 1
            await original(conn, command, check_health)

        monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)

    def take(self) -> int:
        count, self.count = self.count, 0
        return count


@pytest.fixture
def round_trips(monkeypatch: pytest.MonkeyPatch) -> RoundTrips:
    return RoundTrips(monkeypatch)


# ---------------------------------------------------------------- round trips
async def test_a_get_and_a_save_are_one_round_trip_each(
    single: RedisSessionStore, round_trips: RoundTrips, clock: FakeClock
) -> None:
    manager = SessionManager(single, auto_cleanup=False)
    session = await manager.create_session(user_id="alice", data={"user:lang": "fr"})
    session.preferences["theme"] = "dark"
    await manager.update_session(session)
    await single.get(session.session_id)  # the first call of a script on a server also loads it
    round_trips.take()

    for turn in range(3):
        loaded = await single.get(session.session_id)
        assert round_trips.take() == 1
        assert loaded is not None and loaded.preferences == {"theme": "dark"}
        assert loaded.get("user:lang") == ("fr" if turn == 0 else f"l{turn - 1}")
        loaded.set("turn", turn)
        loaded.set("user:lang", f"l{turn}")  # a user-scope change rides in the same script
        loaded.add_history_entry("turn", {"i": turn})
        await single.set(loaded)
        assert round_trips.take() == 1


async def test_a_get_is_one_round_trip_even_for_a_store_that_never_saw_the_session(
    single: RedisSessionStore, round_trips: RoundTrips, clock: FakeClock
) -> None:
    manager = SessionManager(single, auto_cleanup=False)
    session = await manager.create_session(user_id="bob", data={"user:x": 1, "app:y": 2})
    warm_up = await manager.create_session(user_id="zed")
    # Another process, remembering no owner at all: the script reads the user scope itself.
    other = RedisSessionStore(single.client, prefix=single.prefix, clock=clock, owner_cache_size=0)
    assert await other.get(warm_up.session_id) is not None  # the first call of a script loads it
    round_trips.take()
    for _ in range(2):
        loaded = await other.get(session.session_id)
        assert round_trips.take() == 1
        assert loaded is not None and loaded.get("user:x") == 1 and loaded.get("app:y") == 2


async def test_load_many_reads_every_session_and_its_scopes_in_one_round_trip(
    single: RedisSessionStore, round_trips: RoundTrips, clock: FakeClock
) -> None:
    manager = SessionManager(single, auto_cleanup=False)
    made = [await manager.create_session(user_id=f"u{i % 2}", data={"user:n": i % 2}) for i in range(4)]
    await single.load_records([made[0].session_id], clock.now)
    round_trips.take()
    loaded = await single.load_records([s.session_id for s in made] + [Session().session_id], clock.now)
    assert round_trips.take() == 1
    assert [(s.session_id, s.user_id) for s in loaded] == [(s.session_id, s.user_id) for s in made]
    assert all(s.user_scope for s in loaded)


# ---------------------------------------------------------------- key layout
async def weird_user_session(store: RedisSessionStore, *, theme: str | None = None) -> tuple[SessionManager, Session]:
    """A saved session of `WEIRD_USER` with a user and an app scope key, a history entry and maybe a preference."""
    manager = SessionManager(store, auto_cleanup=False)
    session = await manager.create_session(user_id=WEIRD_USER, data={"user:lang": "fr", "app:motd": "hi"})
    session.add_history_entry("turn", {"i": 1})
    if theme is not None:
        session.preferences["theme"] = theme
    await manager.update_session(session)
    return manager, session


async def test_every_key_of_a_session_shares_one_slot_and_user_ids_never_reach_key_names(
    cluster: RedisSessionStore, clock: FakeClock
) -> None:
    manager, session = await weird_user_session(cluster, theme="dark")

    client = cluster.client
    assert isinstance(client, RedisCluster)
    keys = [key.decode() async for key in client.scan_iter(match=cluster.prefix + "*")]
    session_keys = [k for k in keys if session.session_id in k]
    assert sorted(k.rsplit(":", 1)[1] for k in session_keys) == ["hist", "rec", "win"]
    assert len({client.keyslot(k) for k in session_keys}) == 1
    assert all(WEIRD_USER not in k and "{code}" not in k for k in keys)

    assert [s.session_id for s in await manager.get_user_sessions(WEIRD_USER)] == [session.session_id]
    scopes = {(kind, owner): values async for kind, owner, values in cluster.iter_scopes()}
    assert scopes == {
        ("user", WEIRD_USER): {"user:lang": "fr", "pref:theme": "dark"},
        ("app", ""): {"app:motd": "hi"},
    }


async def test_key_layout_names_every_key_a_session_of_a_user_leaves_on_one_node(
    single: RedisSessionStore, clock: FakeClock
) -> None:
    _, session = await weird_user_session(single)
    sid = session.session_id
    layout = KeyLayout(single.prefix)
    keys = {key.decode() async for key in single.client.scan_iter(match=single.prefix + "*")}
    expected = {
        *layout.session(sid),
        layout.user_index(WEIRD_USER),
        layout.user_scope(WEIRD_USER),
        layout.app_scope,
        layout.expiry_shard(sid),
        layout.list_shard(sid),
    }
    assert keys == expected
    assert layout.expiry_shard(sid) in layout.expiry_shards
    assert layout.list_shard(sid) in layout.list_shards
    assert await single.client.zscore(layout.list_shard(sid), sid) == 0
    assert await single.client.zscore(layout.user_index(WEIRD_USER), sid) == session.expiry_at
    assert await single.client.zscore(layout.expiry_shard(sid), layout.shard_member(sid, WEIRD_USER)) == (
        session.expiry_at
    )
    assert await single.client.hget(layout.user_scope(WEIRD_USER), "~owner") == WEIRD_USER.encode()


async def test_sessions_spread_over_every_master_and_get_all_finds_them_all(cluster: RedisSessionStore) -> None:
    manager = SessionManager(cluster, auto_cleanup=False)
    made = {(await manager.create_session(data={"i": i})).session_id for i in range(30)}
    client = cluster.client
    assert isinstance(client, RedisCluster)
    owners = {client.get_node_from_key(cluster.keys.record(sid)).name for sid in made}
    assert len(owners) == 3
    assert {s.session_id async for s in cluster.iter_sessions(batch_size=4)} == made


async def test_ttl_is_the_expiry_relative_to_the_store_clock(single: RedisSessionStore, clock: FakeClock) -> None:
    session = Session(created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 600)
    session.add_history_entry("turn", {})
    await single.set(session)
    client = single.client
    for key in single.keys.session(session.session_id):
        assert 599_000 < await client.pttl(key) <= 600_000

    clock.advance(100)
    assert await single.touch(session.session_id, clock.now, clock.now + 900)
    for key in single.keys.session(session.session_id):
        assert 899_000 < await client.pttl(key) <= 900_000

    forever = Session(expiry_at=None)
    forever.add_history_entry("turn", {})
    await single.set(forever)
    for key in single.keys.session(forever.session_id):
        assert await client.pttl(key) == -1


async def test_expiry_under_the_store_clock_wins_over_a_live_redis_key(
    single: RedisSessionStore, clock: FakeClock
) -> None:
    session = Session(created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 10)
    await single.set(session)
    clock.advance(10)
    assert await single.client.exists(single.keys.record(session.session_id)) == 1
    assert await single.get(session.session_id) is None
    assert await single.touch(session.session_id, clock.now, clock.now + 100) is False
    assert (await single.get_history(session.session_id)).entries == []


async def test_a_late_touch_never_shortens_the_expiry_the_ttl_or_the_index_scores(
    open_store: Any, clock: FakeClock
) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        session = Session(user_id="ivy", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 600)
        session.add_history_entry("turn", {})
        await store.set(session)
        sid = session.session_id
        client = store.client
        shard_key = store.keys.expiry_shard(sid)
        idx_key = store.keys.user_index("ivy")
        start = clock.now

        async def check(expiry: float | None, accessed: float, ttl_ms: int) -> None:
            loaded = await store.get(sid)
            assert loaded is not None and loaded.expiry_at == expiry and loaded.last_accessed_at == accessed
            assert loaded.version == 1 and len(loaded.history) == 1
            for key in store.keys.session(sid):
                pttl = await client.pttl(key)
                assert pttl == -1 if ttl_ms < 0 else ttl_ms - 2_000 < pttl <= ttl_ms
            score = math.inf if expiry is None else expiry
            assert await client.zscore(idx_key, sid) == score
            assert await client.zscore(shard_key, store.keys.shard_member(sid, "ivy")) == score

        clock.advance(10)
        assert await store.touch(sid, start + 10, start + 900)  # moves forward
        await check(start + 900, start + 10, 890_000)
        assert await store.touch(sid, start + 5, start + 300)  # delayed: lands after the one above
        await check(start + 900, start + 10, 890_000)
        stranger = RedisSessionStore(client, prefix=store.prefix, clock=clock)  # owner unknown
        assert await stranger.touch(sid, start + 6, start + 400)
        await check(start + 900, start + 10, 890_000)
        assert await stranger.touch(sid, start + 11, start + 900)  # same expiry, later access
        await check(start + 900, start + 11, 890_000)
        assert await store.touch(sid, start + 12, None)  # a new "no expiry" always replaces
        await check(None, start + 12, -1)
        await stranger.close()


# ---------------------------------------------------------------- history window key
async def test_the_window_key_follows_appends_rebuilds_and_other_window_sizes(
    single: RedisSessionStore, clock: FakeClock
) -> None:
    async def turns(store: RedisSessionStore, sid: str, count: int, start: int) -> None:
        for i in range(start, start + count):
            loaded = await store.get(sid)
            assert loaded is not None
            loaded.add_history_entry("turn", {"i": i})
            await store.set(loaded)

    def numbers(session: Session | None) -> list[int]:
        assert session is not None
        return [e["data"]["i"] for e in session.history]

    small = RedisSessionStore(single.client, prefix=single.prefix, clock=clock, history_window=5, max_history=30)
    large = RedisSessionStore(single.client, prefix=single.prefix, clock=clock, history_window=25)
    blind = RedisSessionStore(single.client, prefix=single.prefix, clock=clock, history_window=0)
    session = Session()
    await small.set(session)
    await turns(small, session.session_id, 40, 0)  # the window key is rebuilt every few appends
    assert numbers(await small.get(session.session_id)) == list(range(35, 40))
    assert numbers(await large.get(session.session_id)) == list(range(15, 40))  # served from the list
    await turns(large, session.session_id, 3, 40)
    assert numbers(await small.get(session.session_id)) == list(range(38, 43))
    await turns(blind, session.session_id, 2, 43)  # a writer without a window drops the key
    assert await single.client.exists(single.keys.session(session.session_id)[2]) == 0
    assert numbers(await small.get(session.session_id)) == list(range(40, 45))
    assert numbers(await large.get(session.session_id)) == list(range(20, 45))
    page = await small.get_history(session.session_id, limit=100)
    assert [e["data"]["i"] for e in page.entries] == list(range(10, 45))  # `small` capped it at 30 rows


# ---------------------------------------------------------------- SCAN
async def test_get_all_scans_only_its_own_prefix_even_with_glob_characters_in_it(clock: FakeClock) -> None:
    require_service("Redis", *redis_host_port(REDIS_URL), REDIS_START)
    tag = uuid.uuid4().hex[:8]
    # Unescaped, "t<tag>*[a]?:" would match the other store's prefix "t<tag>ZZa1:".
    globby = RedisSessionStore(REDIS_URL, prefix=f"t{tag}*[a]?:", clock=clock)
    plain = RedisSessionStore(REDIS_URL, prefix=f"t{tag}ZZa1:", clock=clock)
    try:
        mine = Session()
        theirs = Session()
        await globby.set(mine)
        await plain.set(theirs)
        assert [s.session_id for s in await globby.get_all()] == [mine.session_id]
        assert [s.session_id for s in await plain.get_all()] == [theirs.session_id]
    finally:
        for store in (globby, plain):
            await delete_prefix(store)
            await store.close()


async def test_no_keys_command_is_ever_sent(clock: FakeClock) -> None:
    server = RedisServer()
    server.start()
    try:
        store = RedisSessionStore(server.url, clock=clock)
        manager = SessionManager(store, auto_cleanup=False)
        for i in range(5):
            s = await manager.create_session(user_id=f"u{i % 2}", data={"user:k": i, "app:k": i})
            s.add_history_entry("turn", {"i": i})
            await manager.update_session(s)
        await manager.get_user_sessions("u1")
        assert len(await store.get_all()) == 5
        assert [kind async for kind, _, _ in store.iter_scopes()].count("user") == 2
        clock.advance(4000)
        assert await manager.cleanup(force=True) == 5
        stats = await store.client.info("commandstats")
        assert "cmdstat_keys" not in stats
        assert "cmdstat_scan" in stats and "cmdstat_evalsha" in stats
        await store.close()
    finally:
        server.cleanup()


# ---------------------------------------------------------------- cleanup and indexes
async def test_cleanup_prunes_index_entries_of_sessions_redis_already_expired(
    open_store: Any, clock: FakeClock
) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        manager = SessionManager(store, auto_cleanup=False)
        gone = await manager.create_session(user_id="carol")
        kept = await manager.create_session(user_id="carol")
        client = store.client
        sid = gone.session_id
        for key in (store.keys.record(sid), store.keys.history(sid)):
            await client.pexpire(key, 1)
        while await client.exists(store.keys.record(sid)):
            await asyncio.sleep(0.005)  # Redis expires it on its own clock

        shard_key = store.keys.expiry_shard(sid)
        idx_key = store.keys.user_index("carol")
        member = store.keys.shard_member(sid, "carol")
        assert await client.zscore(shard_key, member) is not None
        assert await client.zscore(idx_key, sid) is not None

        clock.advance(3601)  # past the indexed expiry of both
        kept_refreshed = await manager.refresh_session(kept.session_id)
        assert kept_refreshed is None  # idle timeout passed: it is expired under the store clock too
        assert await manager.cleanup(force=True) == 1  # `kept` deleted by cleanup; `gone` was Redis's
        assert await client.zscore(shard_key, member) is None
        assert await client.zscore(idx_key, sid) is None
        assert await client.exists(idx_key) == 0
        assert all([await client.zcard(k) == 0 for k in store.keys.expiry_shards])


async def test_cleanup_rescores_a_live_session_with_a_stale_index_score(open_store: Any, clock: FakeClock) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        manager = SessionManager(store, auto_cleanup=False)
        session = await manager.create_session(user_id="dan")
        sid = session.session_id
        shard_key = store.keys.expiry_shard(sid)
        idx_key = store.keys.user_index("dan")
        await store.client.zadd(shard_key, {store.keys.shard_member(sid, "dan"): clock.now - 100})
        assert await manager.cleanup(force=True) == 0
        assert await store.get(sid) is not None
        assert await store.client.zscore(shard_key, store.keys.shard_member(sid, "dan")) == session.expiry_at
        assert await store.client.zscore(idx_key, sid) == session.expiry_at


async def test_a_store_that_never_saw_a_session_keeps_the_indexes_right_on_touch_and_delete(
    single: RedisSessionStore, clock: FakeClock
) -> None:
    manager = SessionManager(single, auto_cleanup=False)
    session = await manager.create_session(user_id="erin")
    sid = session.session_id
    stranger = RedisSessionStore(single.client, prefix=single.prefix, clock=clock)
    shard_key = single.keys.expiry_shard(sid)
    idx_key = single.keys.user_index("erin")

    assert await stranger.touch(sid, clock.now + 5, clock.now + 7200)
    assert await single.client.zscore(idx_key, sid) == clock.now + 7200
    assert await single.client.zscore(shard_key, single.keys.shard_member(sid, "erin")) == clock.now + 7200

    other = RedisSessionStore(single.client, prefix=single.prefix, clock=clock)
    assert await other.delete(sid) is True
    assert await single.client.zscore(idx_key, sid) is None
    assert await single.client.zscore(shard_key, single.keys.shard_member(sid, "erin")) is None
    assert await manager.get_user_sessions("erin") == []


async def test_emptied_user_scope_leaves_no_key_behind(single: RedisSessionStore) -> None:
    await single.write_scopes("frank", {"user:a": 1, "pref:b": 2})
    scope_key = single.keys.user_scope("frank")
    assert await single.client.hget(scope_key, "~owner") == b"frank"
    await single.write_scopes("frank", {}, delete=["user:a", "pref:b"])
    assert await single.client.exists(scope_key) == 0
    assert (await single.load_scopes("frank")).user == {}


# ---------------------------------------------------------------- bulk inserts
def restore_items(clock: FakeClock, count: int) -> list[Restore]:
    items = []
    for i in range(count):
        session = Session(
            user_id=f"bulk{i % 3}", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 600
        )
        session.set("n", i)
        items.append(Restore(session, [{"type": "turn", "data": {"i": j}, "timestamp": clock.now} for j in range(i)]))
    return items


async def test_restore_many_inserts_a_batch_and_leaves_an_existing_id_as_it_was(
    open_store: Any, clock: FakeClock
) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        existing = Session(user_id="bulk0", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 60)
        existing.set("n", "kept")
        await store.set(existing)
        items = restore_items(clock, 6)
        clash = Session(session_id=existing.session_id, user_id="intruder", expiry_at=clock.now + 600)
        clash.set("n", "clash")
        items.insert(2, Restore(clash, []))

        assert await store.restore_many(items) == [True, True, False, True, True, True, True]
        kept = await store.get(existing.session_id)
        assert kept is not None and kept.get("n") == "kept" and kept.user_id == "bulk0"
        assert await store.get_user_sessions("intruder") == []
        for item in items[:2] + items[3:]:
            loaded = await store.get(item.session.session_id)
            assert loaded is not None and loaded.get("n") == item.session.get("n")
            assert [e["data"]["i"] for e in loaded.history] == [e["data"]["i"] for e in item.history]
            assert loaded.expiry_at == item.session.expiry_at
        users = {u: {s.session_id for s in await store.get_user_sessions(u)} for u in ("bulk0", "bulk1", "bulk2")}
        restored_bulk0 = {i.session.session_id for i in items if i.session.user_id == "bulk0"}
        assert users["bulk0"] == {existing.session_id} | restored_bulk0
        assert sum(len(v) for v in users.values()) == 7
        clock.advance(601)
        assert await store.cleanup_expired() == 7  # every inserted session is in the expiry index


async def test_restore_many_is_one_round_trip_per_batch_on_one_node(
    single: RedisSessionStore, round_trips: RoundTrips, clock: FakeClock
) -> None:
    await single.restore_many(restore_items(clock, 1))  # loads the script
    round_trips.take()
    assert await single.restore_many(restore_items(clock, 50)) == [True] * 50
    assert round_trips.take() == 1


# ---------------------------------------------------------------- version-checked delete (regenerate_id)
async def test_a_version_checked_delete_never_loses_a_save_landing_during_it(
    open_store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        manager = SessionManager(store, auto_cleanup=False)
        session = await manager.create_session(user_id="hal", data={"a": 1})
        sid = session.session_id
        other = RedisSessionStore(store.client, prefix=store.prefix, clock=clock)  # another process
        saved: list[bool] = []

        async def racing_save() -> None:
            racer = await other.get(sid)
            if racer is None:
                saved.append(False)
                return
            racer.set("cart", ["book"])
            try:
                await other.set(racer)
            except SessionNotFound:
                saved.append(False)
            else:
                saved.append(True)

        original = store.scripts.delete

        async def delete_then_race(*args: Any, **kwargs: Any) -> Any:
            reply = await original(*args, **kwargs)
            if not saved:  # the other process saves right after the delete script's round trip
                await racing_save()
            return reply

        monkeypatch.setattr(store.scripts, "delete", delete_then_race)
        deleted = await store.delete_if_version(sid, session.version)
        monkeypatch.undo()
        assert saved, "the racing save did not run"
        # Either the delete won (the racing writer is told the session is gone) or the save won
        # (the session stays, with the save in it): never both succeed, never a silent loss.
        assert not (deleted and saved[0])
        survivor = await store.get(sid)
        if deleted:
            assert survivor is None
        else:
            assert survivor is not None and survivor.get("cart") == ["book"]
        await other.close()


async def test_a_stale_version_does_not_delete_and_the_current_one_deletes_every_key_and_index_entry(
    open_store: Any, clock: FakeClock
) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        manager = SessionManager(store, auto_cleanup=False)
        session = await manager.create_session(user_id=WEIRD_USER, data={"a": 1})
        session.add_history_entry("turn", {"i": 1})
        await manager.update_session(session)
        sid = session.session_id
        client = store.client
        shard_key = store.keys.expiry_shard(sid)
        idx_key = store.keys.user_index(WEIRD_USER)
        member = store.keys.shard_member(sid, WEIRD_USER)

        assert await store.delete_if_version(sid, session.version - 1) is False
        loaded = await store.get(sid)
        assert loaded is not None and loaded.version == session.version and loaded.get("a") == 1
        assert [e["data"] for e in loaded.history] == [{"i": 1}]
        assert all([await client.exists(key) == 1 for key in store.keys.session(sid)])
        assert await client.zscore(idx_key, sid) is not None
        assert await client.zscore(shard_key, member) is not None

        stranger = RedisSessionStore(client, prefix=store.prefix, clock=clock)  # does not know the owner
        assert await stranger.delete_if_version(sid, session.version) is True
        assert await store.get(sid) is None
        assert all([await client.exists(key) == 0 for key in store.keys.session(sid)])
        assert await client.zscore(idx_key, sid) is None
        assert await client.zscore(shard_key, member) is None
        assert await stranger.delete_if_version(sid, session.version) is False  # already gone
        await stranger.close()


async def test_a_version_checked_delete_of_a_corrupt_header_raises_and_deletes_nothing(
    single: RedisSessionStore,
) -> None:
    session = Session()
    await single.set(session)
    await single.client.set(single.keys.record(session.session_id), b"not a session record")
    with pytest.raises(SerializationError):
        await single.delete_if_version(session.session_id, 1)
    assert await single.client.exists(single.keys.record(session.session_id)) == 1


# ---------------------------------------------------------------- robustness
async def test_a_resent_save_is_recognised_as_applied_not_as_a_conflict(
    open_store: Any, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        session = Session(created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 60)
        await store.set(session)
        session.set("k", 1)
        session.add_history_entry("turn", {"i": 1})
        resent = session.model_copy(deep=True)  # the same save, as a client retry re-sends it
        monkeypatch.setattr(store_module.secrets, "token_hex", lambda n: "ab" * n)
        await store.set(session)
        await store.set(resent)  # the reply of the first was "lost"; the client resends
        loaded = await store.get(session.session_id)
        assert loaded is not None and loaded.version == 2 and loaded.get("k") == 1
        assert [e["data"] for e in loaded.history] == [{"i": 1}]


async def test_scripts_are_reloaded_after_the_server_forgets_them(open_store: Any, clock: FakeClock) -> None:
    async with open_store() as raw_store:
        store = as_redis(raw_store)
        manager = SessionManager(store, auto_cleanup=False)
        session = await manager.create_session(user_id="gus")
        await store.client.script_flush()
        loaded = await manager.get_session(session.session_id)
        assert loaded is not None
        loaded.set("after", "flush")
        await manager.update_session(loaded)
        await store.client.script_flush()
        assert [s.get("after") for s in await manager.get_user_sessions("gus")] == ["flush"]
        await store.client.script_flush()
        clock.advance(4000)
        assert await manager.cleanup(force=True) == 1


async def test_a_corrupt_record_raises_or_is_skipped_when_streaming(single: RedisSessionStore) -> None:
    good = Session()
    bad = Session()
    await single.set(good)
    await single.set(bad)
    await single.client.set(single.keys.record(bad.session_id), b"not a session record")
    with pytest.raises(SerializationError):
        await single.get(bad.session_id)
    with pytest.raises(SerializationError):
        await single.get_all()
    skipped = [s.session_id async for s in single.iter_sessions(on_corrupt="skip")]
    assert skipped == [good.session_id]


# ---------------------------------------------------------------- construction
@pytest.fixture
def local_redis() -> Iterator[None]:
    require_service("Redis", *redis_host_port(REDIS_URL), REDIS_START)
    yield


async def test_client_is_checked_and_a_passed_client_stays_open(local_redis: None) -> None:
    decoding = Redis.from_url(REDIS_URL, decode_responses=True)
    with pytest.raises(ValueError, match="decode_responses"):
        RedisSessionStore(decoding)
    await decoding.aclose()
    with pytest.raises(ValueError, match="hash tags"):
        RedisSessionStore(REDIS_URL, prefix="app{1}:")
    with pytest.raises(TypeError):
        RedisSessionStore(42)  # type: ignore[arg-type]

    client = Redis.from_url(REDIS_URL)
    store = RedisSessionStore(client, prefix=f"agent_sessions_test:{uuid.uuid4().hex[:12]}:")
    assert store.client is client
    assert await store.get(Session().session_id) is None
    await asyncio.gather(*(store.get(Session().session_id) for _ in range(5)))  # holds a few connections
    await store.close()
    await store.close()
    assert not client.connection_pool._in_use_connections  # every held connection went back
    assert await client.ping()
    await client.aclose()


async def test_connections_come_from_the_pool_and_none_is_left_open_after_close(
    private_redis: RedisServer, clock: FakeClock
) -> None:
    watcher = Redis.from_url(private_redis.url)

    async def clients() -> int:
        return len(await watcher.client_list())

    before = await clients()
    store = RedisSessionStore(private_redis.url, prefix=f"agent_sessions_test:{uuid.uuid4().hex[:12]}:", clock=clock)
    manager = SessionManager(store, auto_cleanup=False)
    made = [await manager.create_session(user_id="pool") for _ in range(5)]
    await asyncio.gather(*(store.get(s.session_id) for s in made for _ in range(4)))
    assert before < await clients() <= before + 20  # concurrent gets took several pooled connections
    await delete_prefix(store)
    await store.close()
    for _ in range(100):
        if await clients() == before:
            break
        await asyncio.sleep(0.01)  # the server notices a closed socket on its next event loop turn
    assert await clients() == before
    await watcher.aclose()


async def test_create_store_routes_redis_and_cluster_urls(local_redis: None) -> None:
    store = create_store(REDIS_URL, prefix="agent_sessions_test:routing:")
    assert isinstance(store, RedisSessionStore) and isinstance(store.client, Redis)
    assert store.prefix == "agent_sessions_test:routing:"
    await store.close()
    cluster_store = create_store("redis+cluster://127.0.0.1:7000")  # built lazily: no connection yet
    assert isinstance(cluster_store, RedisSessionStore) and isinstance(cluster_store.client, RedisCluster)
    await cluster_store.close()


async def test_rebuild_listing_index_lists_sessions_an_earlier_release_saved(single: RedisSessionStore) -> None:
    sessions = [Session() for _ in range(3)]
    for session in sessions:
        await single.set(session)
    layout = KeyLayout(single.prefix)
    for session in sessions[:2]:  # as a release without listing left them
        await single.client.zrem(layout.list_shard(session.session_id), session.session_id)
    assert [s.session_id for s in (await single.list_sessions()).sessions] == [sessions[2].session_id]
    assert await single.rebuild_listing_index(batch_size=2) == 3
    listed = [s.session_id for s in (await single.list_sessions()).sessions]
    assert listed == sorted(s.session_id for s in sessions)


async def test_a_socket_timeout_set_after_the_store_was_built_bounds_the_next_call() -> None:
    # The deadline is read from the store at each call (as before the runner split), not copied.
    async with redis_store(FakeClock()) as store:
        redis = as_redis(store)
        await redis.ping()
        redis.socket_timeout = 1e-9
        with pytest.raises(StoreUnavailable, match="in time"):
            await redis.ping()
        redis.socket_timeout = 2.0
        await redis.ping()
