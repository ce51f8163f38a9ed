"""Records of the previous release (``R1`` header, no user hash): read and updated as before,
rewritten as ``R2`` by their next save or touch, on one node and on a Cluster.

Every key is written here the way the previous release wrote it (its ``_pack`` header, its
key names, index and expiry-shard members), with names and hashes computed in this file.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest
from redis.asyncio.cluster import RedisCluster

from agent_sessions import Session, SessionConflict, SessionManager
from agent_sessions.stores.base import Restore
from agent_sessions.stores.redis import RedisSessionStore

from ..support import FakeClock
from .stores import redis_cluster_store, redis_store
from .test_redis_store import RoundTrips

pytestmark = pytest.mark.asyncio

USER = "ünï {old}:*?[x] \\ }{"


@pytest.fixture(params=["redis", "redis_cluster"])
async def store(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[RedisSessionStore]:
    opener = redis_store if request.param == "redis" else redis_cluster_store
    async with opener(clock) as opened:
        assert isinstance(opened, RedisSessionStore)
        yield opened


def old_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True)
class OldKeys:
    """The key names of the previous release, computed independently of `KeyLayout`."""

    prefix: str

    def rec(self, sid: str) -> str:
        return f"{self.prefix}{{{sid}}}:rec"

    def hist(self, sid: str) -> str:
        return f"{self.prefix}{{{sid}}}:hist"

    def win(self, sid: str) -> str:
        return f"{self.prefix}{{{sid}}}:win"

    def shard(self, sid: str) -> str:
        return f"{self.prefix}{{~x:{zlib.crc32(sid.encode()) % 16}}}:exp"

    def member(self, sid: str, user_id: str | None) -> str:
        return sid if user_id is None else f"{sid}:{old_hash(user_id)}"

    def idx(self, user_id: str) -> str:
        return f"{self.prefix}{{~u:{old_hash(user_id)}}}:idx"

    def scope(self, user_id: str) -> str:
        return f"{self.prefix}{{~u:{old_hash(user_id)}}}:scope"


def r1_record(version: int, seq: int, accessed: float, expiry: float | None, user_id: str | None, body: bytes) -> bytes:
    """The record string exactly as the previous release's ``_pack`` built it."""
    user = b"" if user_id is None else user_id.encode("utf-8", "surrogatepass")
    head = b"R1 %d %d %s %s %s %d\n" % (
        version,
        seq,
        repr(float(accessed)).encode(),
        b"-" if expiry is None else repr(float(expiry)).encode(),
        b"0123456789abcdef",
        -1 if user_id is None else len(user),
    )
    return head + user + body


async def write_r1(store: RedisSessionStore, session: Session, clock: FakeClock) -> OldKeys:
    """Replace the stored `session` by the keys the previous release wrote for it.

    The encoded record and history rows come from the store's codec (unchanged across the
    releases); the header, key names, index members and window are built here.
    """
    old = OldKeys(store.prefix)
    client, sid, user = store.client, session.session_id, session.user_id
    raw = await client.get(old.rec(sid))
    assert raw is not None and raw.startswith(b"R2 ")
    head, rest = raw.split(b"\n", 1)
    ulen = int(head.split(b" ")[-1])
    body = rest[max(ulen, 0) :]
    rows = await client.lrange(old.hist(sid), 0, -1)
    await client.delete(old.rec(sid), old.hist(sid), old.win(sid))
    await client.zrem(store.keys.expiry_shard(sid), store.keys.shard_member(sid, user))
    if user is not None:
        await client.zrem(store.keys.user_index(user), sid)

    expiry = session.expiry_at
    assert expiry is not None
    seq = len(rows)
    ttl_ms = int((expiry - clock.now) * 1000)
    record = r1_record(session.version, seq, session.last_accessed_at, expiry, user, body)
    await client.set(old.rec(sid), record, px=ttl_ms)
    if rows:
        await client.rpush(old.hist(sid), *rows)
        await client.pexpire(old.hist(sid), ttl_ms)
        await client.set(old.win(sid), b"%016d" % 1 + b"".join(rows), px=ttl_ms)
    await client.zadd(old.shard(sid), {old.member(sid, user): expiry})
    if user is not None:
        await client.zadd(old.idx(user), {sid: expiry})
    return old


async def legacy_session(
    store: RedisSessionStore, clock: FakeClock, user_id: str | None = USER
) -> tuple[SessionManager, Session, OldKeys]:
    manager = SessionManager(store, auto_cleanup=False)
    data = {"app:motd": "hi", "step": 1} | ({} if user_id is None else {"user:lang": "fr"})
    session = await manager.create_session(user_id=user_id, data=data)
    session.add_history_entry("turn", {"i": 1})
    session.add_history_entry("turn", {"i": 2})
    session = await manager.update_session(session)
    old = await write_r1(store, session, clock)
    return manager, session, old


async def header_magic(store: RedisSessionStore, old: OldKeys, sid: str) -> bytes:
    raw = await store.client.get(old.rec(sid))
    assert raw is not None
    return bytes(raw[:3])


async def test_a_get_reads_an_r1_session_with_its_scopes_history_and_user_listing(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    for user_id in (USER, None):
        manager, session, old = await legacy_session(store, clock, user_id)
        fresh = SessionManager(RedisSessionStore(store.client, prefix=store.prefix, clock=clock), auto_cleanup=False)
        for reader in (manager, fresh):  # a store that has seen the owner, and one that has not
            got = await reader.get_session(session.session_id)
            assert got is not None
            assert (got.user_id, got.version, got.expiry_at) == (user_id, session.version, session.expiry_at)
            assert got.last_accessed_at == session.last_accessed_at
            assert got.get("step") == 1 and got.get("app:motd") == "hi"
            assert got.get("user:lang") == ("fr" if user_id is not None else None)
            assert [e["data"] for e in got.history] == [{"i": 1}, {"i": 2}]
            page = await reader.get_history(session.session_id, limit=1)
            assert [e["data"] for e in page] == [{"i": 2}]
            assert [e["data"] for e in await reader.get_history(session.session_id, before=page.next_before)] == [
                {"i": 1}
            ]
        assert await header_magic(store, old, session.session_id) == b"R1 "  # a get does not rewrite
    listed = await manager.get_user_sessions(USER)
    assert [(s.user_id, s.get("step")) for s in listed] == [(USER, 1)]
    everything = [s async for s in store.iter_sessions()]
    assert sorted(s.user_id or "" for s in everything) == sorted([USER, ""])


async def test_a_save_updates_an_r1_session_at_its_version_and_rewrites_it_as_r2(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    manager, session, old = await legacy_session(store, clock)
    sid = session.session_id
    stale = await manager.get_session(sid)
    got = await manager.get_session(sid)
    assert got is not None and stale is not None
    got.set("step", 2)
    got.add_history_entry("turn", {"i": 3})
    clock.advance(10)
    saved = await manager.update_session(got)
    assert saved.version == session.version + 1
    assert await header_magic(store, old, sid) == b"R2 "
    stale.set("step", 99)
    with pytest.raises(SessionConflict):
        await store.set(stale)  # compare-and-set still refuses the old version

    again = await SessionManager(RedisSessionStore(store.client, prefix=store.prefix, clock=clock)).get_session(sid)
    assert again is not None and again.get("step") == 2 and again.get("user:lang") == "fr"
    assert [e["data"] for e in again.history] == [{"i": 1}, {"i": 2}, {"i": 3}]
    assert saved.expiry_at is not None
    assert await store.client.zscore(old.idx(USER), sid) == saved.expiry_at
    assert await store.client.zscore(old.shard(sid), old.member(sid, USER)) == saved.expiry_at
    assert await store.client.zcard(old.shard(sid)) == 1


async def test_a_save_moving_an_r1_session_to_another_user_unindexes_the_old_owner(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    manager, session, old = await legacy_session(store, clock)
    sid = session.session_id
    got = await manager.get_session(sid)
    assert got is not None
    got.user_id = "new-owner"
    await manager.update_session(got)
    assert await store.client.zscore(old.idx(USER), sid) is None
    assert await store.client.zscore(old.shard(sid), old.member(sid, USER)) is None
    assert await store.client.zscore(old.idx("new-owner"), sid) is not None
    assert await store.client.zscore(old.shard(sid), old.member(sid, "new-owner")) is not None
    assert await manager.get_user_sessions(USER) == []
    assert [s.session_id for s in await manager.get_user_sessions("new-owner")] == [sid]


async def test_a_touch_of_an_r1_session_moves_its_expiry_and_rewrites_it_as_r2(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    for user_id in (USER, None):
        manager, session, old = await legacy_session(store, clock, user_id)
        sid = session.session_id
        stranger = RedisSessionStore(store.client, prefix=store.prefix, clock=clock)
        assert session.expiry_at is not None
        # A touch that moves nothing leaves the record as it is.
        assert await stranger.touch(sid, session.last_accessed_at, session.expiry_at - 5)
        assert await header_magic(store, old, sid) == b"R1 "
        new_expiry = clock.now + 7200
        assert await stranger.touch(sid, clock.now + 5, new_expiry)
        assert await header_magic(store, old, sid) == b"R2 "
        assert await store.client.zscore(old.shard(sid), old.member(sid, user_id)) == new_expiry
        if user_id is not None:
            assert await store.client.zscore(old.idx(user_id), sid) == new_expiry
        got = await manager.get_session(sid)
        assert got is not None
        assert (got.user_id, got.version, got.expiry_at) == (user_id, session.version, new_expiry)
        assert got.get("user:lang") == ("fr" if user_id is not None else None)


async def test_a_delete_of_an_r1_session_removes_every_key_and_index_entry(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    manager, plain, old = await legacy_session(store, clock)
    _, checked, _ = await legacy_session(store, clock)
    stranger = RedisSessionStore(store.client, prefix=store.prefix, clock=clock)

    assert await stranger.delete(plain.session_id) is True
    assert await stranger.delete_if_version(checked.session_id, checked.version + 1) is False
    assert await header_magic(store, old, checked.session_id) == b"R1 "
    assert await stranger.delete_if_version(checked.session_id, checked.version) is True
    for sid in (plain.session_id, checked.session_id):
        assert await store.client.exists(old.rec(sid), old.hist(sid), old.win(sid)) == 0
        assert await store.client.zscore(old.shard(sid), old.member(sid, USER)) is None
    assert await store.client.exists(old.idx(USER)) == 0
    assert await manager.get_user_sessions(USER) == []


async def test_cleanup_deletes_expired_r1_sessions_and_their_index_entries(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    manager, named, old = await legacy_session(store, clock)
    _, anonymous, _ = await legacy_session(store, clock, None)
    assert named.expiry_at is not None and anonymous.expiry_at is not None
    clock.advance(max(named.expiry_at, anonymous.expiry_at) - clock.now + 1)
    stranger = RedisSessionStore(store.client, prefix=store.prefix, clock=clock)
    assert await stranger.cleanup_expired() == 2
    for sid, user_id in ((named.session_id, USER), (anonymous.session_id, None)):
        assert await store.client.exists(old.rec(sid), old.hist(sid), old.win(sid)) == 0
        assert await store.client.zscore(old.shard(sid), old.member(sid, user_id)) is None
    assert await store.client.exists(old.idx(USER)) == 0
    assert await manager.get_user_sessions(USER) == []


async def test_cleanup_leaves_a_live_r1_session_and_its_index_entries(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    manager, session, old = await legacy_session(store, clock)
    sid = session.session_id
    await store.client.zadd(old.shard(sid), {old.member(sid, USER): clock.now - 100})  # a stale score
    assert await manager.cleanup(force=True) == 0
    assert session.expiry_at is not None
    assert await store.client.zscore(old.shard(sid), old.member(sid, USER)) == session.expiry_at
    assert await store.client.zscore(old.idx(USER), sid) == session.expiry_at
    assert await manager.get_session(sid) is not None


async def test_a_save_of_an_r1_session_without_its_previous_owner_asks_redis_for_it(
    store: RedisSessionStore, clock: FakeClock
) -> None:
    """One node: a write whose `previous_user_id` does not name the R1 owner is answered with
    the owner and sent again, so the old owner's index entries still go. (On a Cluster the
    index updates in other slots follow `previous_user_id`, for R1 and R2 records alike.)"""
    if isinstance(store.client, RedisCluster):
        pytest.skip("the script reads no user hash on a Cluster")
    manager, session, old = await legacy_session(store, clock)
    sid = session.session_id
    got = await manager.get_session(sid)
    assert got is not None
    got.user_id = None
    got.state.pop("step")
    write, _ = store.prepare_write(got)
    await store.write(replace(write, previous_user_id="someone else"), clock.now)
    assert await header_magic(store, old, sid) == b"R2 "
    assert await store.client.zscore(old.idx(USER), sid) is None
    assert await store.client.zscore(old.shard(sid), old.member(sid, None)) == write.expiry_at
    loaded = await store.get(sid)
    assert loaded is not None and loaded.user_id is None and loaded.version == session.version + 1


async def test_restore_many_over_an_r1_id_leaves_it_as_it_was(store: RedisSessionStore, clock: FakeClock) -> None:
    manager, session, old = await legacy_session(store, clock)
    clash = Session(session_id=session.session_id, user_id="intruder", expiry_at=clock.now + 600)
    fresh = Session(user_id="intruder", expiry_at=clock.now + 600)
    assert await store.restore_many([Restore(clash, []), Restore(fresh, [])]) == [False, True]
    assert await header_magic(store, old, session.session_id) == b"R1 "
    kept = await manager.get_session(session.session_id)
    assert kept is not None and kept.user_id == USER and kept.get("step") == 1
    assert [s.session_id for s in await manager.get_user_sessions("intruder")] == [fresh.session_id]


async def test_a_get_of_an_r1_session_of_a_user_costs_one_more_round_trip_until_it_is_saved(
    store: RedisSessionStore, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    manager, session, _ = await legacy_session(store, clock)
    sid = session.session_id
    reader = RedisSessionStore(store.client, prefix=store.prefix, clock=clock)  # has not seen the owner
    await reader.get(sid)  # loads the scripts on every node
    trips = RoundTrips(monkeypatch)
    await RedisSessionStore(store.client, prefix=store.prefix, clock=clock).get(sid)
    legacy = trips.take()
    got = await manager.get_session(sid)
    assert got is not None
    got.set("step", 2)
    await manager.update_session(got)
    trips.take()
    loaded = await RedisSessionStore(store.client, prefix=store.prefix, clock=clock).get(sid)
    assert loaded is not None and loaded.get("user:lang") == "fr"
    if isinstance(store.client, RedisCluster):  # the owner is learnt from the record either way
        assert trips.take() == legacy
    else:  # the record, then (no user hash in it) the user scope; then one, as for any R2 session
        assert (legacy, trips.take()) == (2, 1)
