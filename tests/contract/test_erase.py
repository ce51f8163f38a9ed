"""`erase_user` and `export_user` on every backend: nothing of the user is left at the raw level
(the backend's own rows and keys, conversations included), erasing is idempotent, safe while 20
writers keep saving the user's sessions, and an export imports back into an empty store as the
user's data."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic_ai import Agent
from pydantic_ai.conversation_store import ConversationStore
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_sessions import (
    ErasureReport,
    MemorySessionStore,
    SessionDataHolder,
    SessionManager,
    SessionNotFound,
    SessionStore,
)
from agent_sessions.integrations.pydantic_ai import (
    DatabaseConversationStore,
    RedisConversationStore,
    conversation_id_for,
    run_turn,
)
from agent_sessions.ops import erase_user, export_user, import_sessions
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.stores.redis.keys import glob_escape, user_hash
from agent_sessions.stores.sql import DatabaseSessionStore

from ..support import FakeClock

pytestmark = pytest.mark.asyncio

USER = "erase-me@example.org"
OTHER = "keep-me@example.org"
WRITERS = 20


def conversation_store(store: SessionStore) -> ConversationStore | None:
    """The conversation store a deployment on this backend would use (none for memory)."""
    if isinstance(store, DatabaseSessionStore):
        return DatabaseConversationStore(store)
    if isinstance(store, RedisSessionStore):
        return RedisConversationStore(store)
    return None


async def raw_blobs(store: SessionStore, conversations: ConversationStore | None) -> list[bytes]:
    """Everything the backend holds, as raw bytes: every row of every table (SQL), every key
    under the prefix with its content (Redis), or the memory store's `contents()`."""
    if isinstance(store, MemorySessionStore):
        return [blob for _, blob in store.contents()]
    out: list[bytes] = []
    if isinstance(store, DatabaseSessionStore):
        tables = list(store.metadata.sorted_tables)
        if isinstance(conversations, DatabaseConversationStore):
            tables += [conversations.records, conversations.entries]
        async with store.engine.connect() as conn:
            if conn.dialect.name == "sqlite":  # the search index's FTS5 shadow tables too
                names = await conn.execute(sa.text("SELECT name FROM sqlite_master WHERE type = 'table'"))
                known = {table.name for table in tables}
                tables += [sa.table(name) for (name,) in names if name not in known and not name.startswith("sqlite_")]
            for table in tables:
                for row in (await conn.execute(sa.select(sa.text("*")).select_from(table))).all():
                    for value in row:
                        out.append(bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode())
        return out
    assert isinstance(store, RedisSessionStore)
    client: Any = store.client
    async for key in client.scan_iter(match=glob_escape(store.prefix) + "*", count=500):
        out.append(key)
        kind = (await client.type(key)).decode()
        if kind == "string":
            out.append(await client.get(key))
        elif kind == "list":
            out += await client.lrange(key, 0, -1)
        elif kind == "hash":
            out += [item for pair in (await client.hgetall(key)).items() for item in pair]
        elif kind == "zset":
            out += await client.zrange(key, 0, -1)
        elif kind == "set":
            out += list(await client.smembers(key))
        else:
            pytest.fail(f"unexpected Redis key type {kind}")
    return out


def planted(user_id: str) -> str:
    """A word only `user_id`'s history holds (one token for every search index)."""
    return "planted" + user_hash(user_id)[:10].lower()


def needles(user_id: str, session_ids: list[str]) -> list[bytes]:
    """What must not be left of a user: its id, its hash (Redis key names), its sessions' ids,
    their conversations' ids and a word of its history (search indexes keep words)."""
    found = [user_id.encode(), user_hash(user_id).encode(), planted(user_id).encode()]
    for sid in session_ids:
        found += [sid.encode(), conversation_id_for(sid).encode()]
    return found


def traces(blobs: list[bytes], user_id: str, session_ids: list[str]) -> list[bytes]:
    return [needle for needle in needles(user_id, session_ids) if any(needle in blob for blob in blobs)]


def echo_agent() -> Agent[Any, str]:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(f"reply {len(messages)}")])

    return Agent(FunctionModel(model))


async def user_with_data(manager: SessionManager, user_id: str, sessions: int = 3) -> list[str]:
    """Sessions of `user_id` with state, preferences, `user:` keys and history."""
    ids = []
    for i in range(sessions):
        s = await manager.create_session(user_id, {"i": i, f"user:seen{i}": True}, preferences={"lang": f"l{i}"})
        s.preferences["theme"] = "dark"
        for n in range(4):
            s.add_history_entry("turn", {"n": n, "who": user_id, "said": f"I said {planted(user_id)}"})
        await manager.update_session(s)
        ids.append(s.session_id)
    return ids


@pytest.fixture
async def erasing(manager: SessionManager) -> Any:
    conversations = conversation_store(manager.store)
    if conversations is not None:
        assert isinstance(conversations, SessionDataHolder)
        manager.register_data_holder(conversations)
    return conversations


async def test_erase_user_leaves_no_trace_at_the_raw_level(
    manager: SessionManager, clock: FakeClock, erasing: ConversationStore | None
) -> None:
    store = manager.store
    ids = await user_with_data(manager, USER)
    kept = await user_with_data(manager, OTHER, sessions=1)
    # A session of the user that expired without being cleaned up is erased too.
    short = SessionManager(store, session_lifetime=5, auto_cleanup=False)
    expired = await short.create_session(USER, {"old": True})
    expired.add_history_entry("turn", {"old": True})
    await short.update_session(expired)
    clock.advance(10)
    ids.append(expired.session_id)
    if erasing is not None:
        agent = echo_agent()
        for sid in [ids[0], ids[1], kept[0]]:
            await run_turn(agent, manager, sid, f"hello from {sid[:6]}", conversation_store=erasing)
    history = 1 + sum([len((await store.get_history(sid, limit=1000)).entries) for sid in ids[:3]])
    scope_keys = len((await store.load_scopes(USER)).user)
    assert scope_keys == 3 + 2  # user:seen0..2, pref:lang, pref:theme
    before = await raw_blobs(store, erasing)
    # The raw read sees the user: its id, every session id (the expired one too), conversations.
    seen = {USER.encode(), planted(USER).encode(), *(sid.encode() for sid in ids)}
    if erasing is not None:
        seen |= {conversation_id_for(sid).encode() for sid in ids[:2]}
    assert seen <= set(traces(before, USER, ids))

    report = await manager.erase_user(USER)

    conversations = 2 if erasing is not None else 0
    assert report == ErasureReport(4, history, scope_keys, conversations)
    after = await raw_blobs(store, erasing)
    assert traces(after, USER, ids) == []
    assert {OTHER.encode(), kept[0].encode()} <= set(traces(after, OTHER, kept))  # the rest is there
    assert await manager.get_user_sessions(USER) == []
    assert (await store.load_scopes(USER)).user == {}
    fresh = await manager.create_session(USER)
    assert fresh.preferences == {} and fresh.get("user:seen0") is None
    other = await manager.get_session(kept[0])
    assert other is not None and other.preferences == {"lang": "l0", "theme": "dark"}
    if erasing is not None:
        assert await erasing.load(conversation_id_for(kept[0]), scope=OTHER) is not None
        assert await erasing.load(conversation_id_for(ids[0]), scope=USER) is None


async def test_erase_user_is_idempotent(manager: SessionManager, erasing: ConversationStore | None) -> None:
    await user_with_data(manager, USER, sessions=2)
    first = await manager.erase_user(USER)
    assert first.sessions == 2
    assert await manager.erase_user(USER) == ErasureReport()
    assert await erase_user(manager.store, "never-seen") == ErasureReport()


async def test_erase_user_racing_20_writers_leaves_nothing_written_before(
    manager: SessionManager, erasing: ConversationStore | None
) -> None:
    store = manager.store
    ids = await user_with_data(manager, USER, sessions=WRITERS)
    started = asyncio.Event()
    saves = [0] * WRITERS
    refused = [0] * WRITERS

    async def writer(n: int) -> None:
        sid = ids[n]
        session = await manager.get_session(sid)
        assert session is not None
        while True:
            session.set(f"user:w{n}", saves[n])
            session.preferences[f"p{n}"] = saves[n]
            session.add_history_entry("turn", {"w": n, "k": saves[n]})
            try:
                session = await manager.update_session(session)
            except SessionNotFound:
                refused[n] += 1
                return
            saves[n] += 1
            if saves[n] == 3:
                started.set()
            await asyncio.sleep(0)

    tasks = [asyncio.create_task(writer(n)) for n in range(WRITERS)]
    await started.wait()
    report = await manager.erase_user(USER)
    # After the call returns: nothing of the user is left, and a save of theirs is refused.
    left = traces(await raw_blobs(store, erasing), USER, ids)
    await asyncio.wait_for(asyncio.gather(*tasks), 30)
    assert report.sessions == WRITERS and sum(saves) >= 3
    assert refused == [1] * WRITERS  # every writer's next save failed: no session came back
    assert left == []
    assert traces(await raw_blobs(store, erasing), USER, ids) == []
    for sid in ids:
        assert await store.get(sid) is None
    assert (await store.load_scopes(USER)).user == {}


async def test_export_user_imports_into_an_empty_store_as_the_users_data(
    manager: SessionManager,
    make_store: Callable[..., AbstractAsyncContextManager[SessionStore]],
    tmp_path: Path,
) -> None:
    store = manager.store
    ids = await user_with_data(manager, USER)
    await user_with_data(manager, OTHER, sessions=1)
    await store.write_scopes(None, {"app:banner": "hi"})
    path = tmp_path / "user.jsonl"

    exported = await manager.export_user(USER, path)

    assert exported.sessions == 3 and exported.scopes == 1 and exported.history_entries == 12
    async with make_store() as empty:
        imported = await import_sessions(empty, path)
        assert imported.imported == 3
        assert sorted(s.session_id for s in await empty.get_user_sessions(USER)) == sorted(ids)
        assert await empty.get_user_sessions(OTHER) == []
        assert (await empty.load_scopes(USER)).user == (await store.load_scopes(USER)).user
        assert (await empty.load_scopes(None)).app == {}  # the app scope is nobody's data
        for sid in ids:
            mine, theirs = await store.get(sid), await empty.get(sid)
            assert mine is not None and theirs is not None
            own = {k: v for k, v in mine.state.items() if not k.startswith("app:")}
            assert theirs.state == own and theirs.preferences == mine.preferences
            assert theirs.version == mine.version and theirs.history_seq == mine.history_seq
            full_mine = await store.get_history(sid, limit=100)
            assert (await empty.get_history(sid, limit=100)).entries == full_mine.entries
    again = await export_user(store, USER, tmp_path / "again.jsonl.gz")
    assert again.sessions == 3 and again.compressed


async def user_conversations(manager: SessionManager, conversations: ConversationStore, ids: list[str]) -> list[str]:
    """Conversations of the sessions `ids` (two turns each), one of them branched and one
    forked (a fork shares its source's entries): the conversation ids, sorted."""
    agent = echo_agent()
    for sid in ids:
        for turn in range(2):
            await run_turn(agent, manager, sid, f"turn {turn} of {sid[:6]}", conversation_store=conversations)
    first = conversation_id_for(ids[0])
    loaded = await conversations.load(first)
    assert loaded is not None
    branched = await conversations.branch(first, at=2, expected_revision=loaded.revision)
    await conversations.save((await agent.run("again", conversation=branched)), scope=None)
    fork = await conversations.fork(first, at=1, new_conversation_id=f"fork-{ids[0][:8]}")
    await conversations.save(await agent.run("forked", conversation=fork))
    return sorted([*(conversation_id_for(sid) for sid in ids), f"fork-{ids[0][:8]}"])


async def test_export_user_carries_the_users_conversations_into_an_empty_conversation_store(
    manager: SessionManager,
    erasing: ConversationStore | None,
    make_store: Callable[..., AbstractAsyncContextManager[SessionStore]],
    tmp_path: Path,
) -> None:
    if erasing is None:
        pytest.skip("no conversation store on this backend")
    ids = await user_with_data(manager, USER, sessions=2)
    others = await user_with_data(manager, OTHER, sessions=1)
    mine = await user_conversations(manager, erasing, ids)
    theirs = await user_conversations(manager, erasing, others)
    path = tmp_path / "user.jsonl"

    exported = await manager.export_user(USER, path)

    assert exported.conversations == len(mine) == 3 and exported.not_exported == []
    lines = [line for line in path.read_text().splitlines()]
    assert '"format_version":2' in lines[0]
    assert not any(cid in line for line in lines for cid in theirs)  # another user's never exported
    async with make_store() as empty:
        target = conversation_store(empty)
        assert isinstance(target, SessionDataHolder)
        imported = await import_sessions(empty, path, holders=[target])
        assert imported.imported == 2 and imported.conversations == 3
        assert imported.conversations_skipped_reason is None
        assert sorted(r.conversation_id for r in await target.read_records()) == mine
        assert target is not None
        for cid in mine:
            record = await erasing.read_record(cid)
            assert record is not None and await target.read_record(cid) == record
            assert await target.load_entries(cid) == await erasing.load_entries(cid)
            for tip in record.branches:
                assert await target.read_history(tip) == await erasing.read_history(tip)
        loaded = await target.load(conversation_id_for(ids[0]), scope=USER)
        assert loaded is not None and len(loaded.messages) == 4  # a turn continues from it
        # Importing again: the conversations are there already.
        again = await import_sessions(empty, path, holders=[target])
        assert again.conversations_skipped == 3 and again.conversations == 0
        replaced = await import_sessions(empty, path, holders=[target], on_conflict="overwrite")
        assert replaced.conversations_replaced == 3
        for cid in mine:
            assert await target.load_entries(cid) == await erasing.load_entries(cid)
        # Erasing the user there removes what was imported, as it would at the source.
        assert (await erase_user(empty, USER, holders=[target])).conversations == 3
        assert await target.read_records() == []


async def test_export_user_names_a_holder_that_cannot_export(
    manager: SessionManager, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class EraseOnly:
        async def erase_sessions(self, user_id: str, session_ids: Any) -> int:
            return 0

    await user_with_data(manager, USER, sessions=1)
    manager.register_data_holder(EraseOnly())
    with caplog.at_level("WARNING", logger="agent_sessions"):
        report = await manager.export_user(USER, tmp_path / "user.jsonl")
    assert report.not_exported == ["EraseOnly"] and report.sessions == 1
    assert "EraseOnly cannot export" in caplog.text and USER not in caplog.text
