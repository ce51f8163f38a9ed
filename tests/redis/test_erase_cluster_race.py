"""Redis Cluster: a save's index and scope updates in other slots are a second call after the
session's script. A save whose script landed before `erase_user` deleted the session, and whose
second call arrives after the erase returned, must write nothing back: not the user scope, not
an index or expiry-shard entry (held back here on purpose, deterministically)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_sessions import SessionManager
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.stores.redis.keys import glob_escape, user_hash

from ..support import FakeClock
from .stores import redis_cluster_store

pytestmark = pytest.mark.asyncio

USER = "racing-user"


async def keys_and_values(store: RedisSessionStore) -> list[bytes]:
    client: Any = store.client
    out: list[bytes] = []
    async for key in client.scan_iter(match=glob_escape(store.prefix) + "*", count=500):
        out.append(key)
        kind = (await client.type(key)).decode()
        if kind == "zset":
            out += await client.zrange(key, 0, -1)
        elif kind == "hash":
            out += [item for pair in (await client.hgetall(key)).items() for item in pair]
    return out


@pytest.mark.parametrize("touch", [False, True], ids=["save", "touch"])
async def test_a_save_held_back_across_an_erase_writes_nothing_back(clock: FakeClock, touch: bool) -> None:
    async with redis_cluster_store(clock) as store:
        assert isinstance(store, RedisSessionStore)
        manager = SessionManager(store, auto_cleanup=False, touch_interval=1)
        session = await manager.create_session(USER, {"user:a": 1}, preferences={"lang": "fr"})
        sid = session.session_id
        held, release = asyncio.Event(), asyncio.Event()
        side_effects = store._indexes.side_effects

        async def late(calls: list[Any], who: str, what: str) -> None:
            held.set()
            await release.wait()  # the session's script has landed; its other slots wait
            await side_effects(calls, who, what)

        store._indexes.side_effects = late  # type: ignore[method-assign]
        if touch:
            clock.advance(5)
            pending = asyncio.create_task(manager.get_session(sid))  # a moving touch
        else:
            session.set("user:b", 2)
            session.preferences["theme"] = "dark"
            pending = asyncio.create_task(manager.update_session(session))
        await held.wait()
        store._indexes.side_effects = side_effects  # type: ignore[method-assign]
        report = await manager.erase_user(USER)
        release.set()
        await pending

        assert report.sessions == 1
        left = await keys_and_values(store)
        for needle in (sid.encode(), USER.encode(), user_hash(USER).encode()):
            assert not any(needle in blob for blob in left), needle
        assert await store.get(sid) is None
        assert (await store.load_scopes(USER)).user == {}


async def test_a_save_adds_back_an_index_entry_an_earlier_failed_call_lost(clock: FakeClock) -> None:
    async with redis_cluster_store(clock) as store:
        assert isinstance(store, RedisSessionStore)
        manager = SessionManager(store, auto_cleanup=False)
        session = await manager.create_session(USER)
        client: Any = store.client
        await client.zrem(store.keys.user_index(USER), session.session_id)  # as if the call had failed
        session.preferences["lang"] = "de"
        await manager.update_session(session)
        assert [s.session_id for s in await store.get_user_sessions(USER)] == [session.session_id]
        assert (await store.load_scopes(USER)).preferences == {"lang": "de"}
