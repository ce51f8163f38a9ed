"""Records of the previous release (``R1`` header, no user hash): read and updated as before,
rewritten as ``R2`` by their next save or touch, on one node and on a Cluster.

Every key is written here the way the previous release wrote it (its ``_pack`` header, its
key names, index and expiry-shard members), with names and hashes computed in this file.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest

from agent_sessions import Session, SessionConflict, SessionManager
from agent_sessions.stores.redis import RedisSessionStore

from ..support import FakeClock
from .stores import redis_cluster_store, redis_store

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
