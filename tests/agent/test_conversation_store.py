"""pydantic-ai `ConversationStore` backends: the scenario pydantic-ai's in-memory store passes.

Every test runs on `InMemoryConversationStore` (the reference: proves the scenario itself is
right) and on our SQLite, PostgreSQL, Redis and Redis Cluster backends.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
    InMemoryConversationStore,
)
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from sqlalchemy.ext.asyncio import create_async_engine

from agent_sessions import StoreUnavailable
from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore, RedisConversationStore
from agent_sessions.stores.sql import create_database_engine

from ..backends import BACKENDS
from ..database.stores import closed_port, postgres_schema, silent_server
from ..support import PG_URL, FakeClock

CONVERSATION_BACKENDS = ["memory", "sqlite", "postgres", "redis", "redis_cluster"]


@pytest.fixture(params=CONVERSATION_BACKENDS)
async def conversations(request: pytest.FixtureRequest) -> AsyncIterator[ConversationStore]:
    kind = request.param
    if kind == "memory":
        yield InMemoryConversationStore()
        return
    if kind not in BACKENDS:
        pytest.fail(f"no {kind} session store registered in tests/backends.py")
    async with BACKENDS[kind](FakeClock()) as session_store:
        # Shares the session store's engine (and schema, table prefix) or client (and key prefix),
        # so the session store's cleanup removes the conversations too.
        if kind in ("sqlite", "postgres"):
            yield DatabaseConversationStore(session_store)
        else:
            yield RedisConversationStore(session_store)


def echo_agent() -> Agent[None, str]:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt = next(
            part.content
            for message in reversed(messages)
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, UserPromptPart)
        )
        return ModelResponse(parts=[TextPart(f"echo: {prompt}")])

    return Agent(FunctionModel(model))


def texts(conversation: Conversation) -> list[str]:
    out: list[str] = []
    for message in conversation.messages:
        for part in message.parts:
            if isinstance(part, UserPromptPart | TextPart):
                out.append(str(part.content))
    return out


async def turn(store: ConversationStore, agent: Agent[None, str], cid: str, prompt: str, **save: Any) -> Conversation:
    conversation = await store.load(cid, scope=save.get("scope")) or Conversation(conversation_id=cid)
    result = await agent.run(prompt, conversation=conversation)
    await store.save(result, **save)
    return result.conversation


async def test_save_then_load_returns_the_same_conversation(conversations: ConversationStore) -> None:
    agent = echo_agent()
    assert await conversations.load("c1") is None
    result = await agent.run("hello", conversation=Conversation(conversation_id="c1"))
    entries = await conversations.save(result, scope="alice")
    assert [e.message for e in entries] == result.new_messages()
    assert [e.parent_id for e in entries] == [None, entries[0].id]

    loaded = await conversations.load("c1", scope="alice")
    assert loaded is not None
    assert loaded.messages == result.all_messages()
    assert loaded.revision == result.conversation.revision is not None
    assert loaded.usage == result.usage
    assert await conversations.load("c1", scope="bob") is None
    assert [e.id for e in await conversations.load_entries("c1") or []] == [e.id for e in entries]


async def test_a_second_turn_appends_only_the_new_messages(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "one")
    loaded = await conversations.load("c1")
    assert loaded is not None
    result = await agent.run("two", conversation=loaded)
    entries = await conversations.save(result)
    assert len(entries) == 2
    again = await conversations.load("c1")
    assert again is not None and texts(again) == ["one", "echo: one", "two", "echo: two"]
    window = await conversations.load("c1", limit=2)
    assert window is not None and texts(window) == ["two", "echo: two"]
    with pytest.raises(UserError):
        await conversations.load("c1", limit=-1)


async def test_a_concurrent_save_conflicts_writes_nothing_and_succeeds_on_retry(
    conversations: ConversationStore,
) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "start")
    first = await conversations.load("c1")
    second = await conversations.load("c1")
    assert first is not None and second is not None
    won = await agent.run("first", conversation=first)
    lost = await agent.run("second", conversation=second)
    await conversations.save(won)
    with pytest.raises(ConversationConflict):
        await conversations.save(lost)
    stored = await conversations.load("c1")
    assert stored is not None and texts(stored) == ["start", "echo: start", "first", "echo: first"]

    # Retry: load again, run again, save.
    retried = await agent.run("second", conversation=stored)
    await conversations.save(retried)
    final = await conversations.load("c1")
    assert final is not None and texts(final)[-2:] == ["second", "echo: second"]


async def test_racing_saves_of_one_revision_let_exactly_one_win(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "start")
    loaded = [await conversations.load("c1") for _ in range(4)]
    results = [await agent.run(f"writer {i}", conversation=c) for i, c in enumerate(loaded) if c is not None]
    outcomes = await asyncio.gather(*(conversations.save(r) for r in results), return_exceptions=True)
    assert sum(1 for o in outcomes if isinstance(o, ConversationConflict)) == 3
    assert sum(1 for o in outcomes if isinstance(o, list)) == 1
    stored = await conversations.load("c1")
    assert stored is not None and len(stored.messages) == 4


async def test_creating_an_existing_conversation_conflicts(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "mine")
    stranger = await agent.run("theirs", conversation=Conversation(conversation_id="c1"))
    with pytest.raises(ConversationConflict):
        await conversations.save(stranger)
    stored = await conversations.load("c1")
    assert stored is not None and texts(stored) == ["mine", "echo: mine"]


async def test_a_conflicting_write_record_writes_no_entries(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "start")
    record = await conversations.read_record("c1")
    assert record is not None
    entry = ConversationEntry(parent_id=record.head_id, message=ModelRequest(parts=[UserPromptPart("sneaky")]))
    updated = ConversationRecord(conversation_id="c1", head_id=entry.id, scope=record.scope)
    with pytest.raises(ConversationConflict):
        await conversations.write_record(updated, new_entries=[entry], expected_revision="stale-revision")
    with pytest.raises(KeyError):
        await conversations.read_entry(entry.id)
    # A head that names an entry nobody has is a conflict too.
    dangling = ConversationRecord(conversation_id="c9", head_id="no-such-entry")
    with pytest.raises(ConversationConflict):
        await conversations.write_record(dangling, expected_revision=None)
    assert await conversations.read_record("c9") is None


async def test_branch_continues_from_an_earlier_point_and_can_branch_back(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "one")
    await turn(conversations, agent, "c1", "two")
    loaded = await conversations.load("c1")
    assert loaded is not None
    old_record = await conversations.read_record("c1")
    assert old_record is not None and old_record.head_id is not None

    with pytest.raises(ConversationConflict):
        await conversations.branch("c1", at=2, expected_revision="stale")
    branched = await conversations.branch("c1", at=2, expected_revision=loaded.revision)
    assert texts(branched) == ["one", "echo: one"]
    record = await conversations.read_record("c1")
    assert record is not None and record.branches == [old_record.head_id]

    result = await agent.run("other two", conversation=branched)
    await conversations.save(result)
    current = await conversations.load("c1")
    assert current is not None and texts(current) == ["one", "echo: one", "other two", "echo: other two"]

    back = await conversations.branch("c1", from_entry=old_record.head_id, expected_revision=current.revision)
    assert texts(back) == ["one", "echo: one", "two", "echo: two"]
    with pytest.raises(UserError):
        await conversations.branch("c1", at=99, expected_revision=back.revision)


async def test_fork_starts_a_new_conversation_sharing_the_history(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "one", scope="alice")
    await turn(conversations, agent, "c1", "two", scope="alice")

    fork = await conversations.fork("c1", at=2, new_conversation_id="c2")
    assert texts(fork) == ["one", "echo: one"]
    record = await conversations.read_record("c2")
    assert record is not None and record.forked_from == "c1" and record.scope == "alice"
    with pytest.raises(ConversationConflict):
        await conversations.fork("c1", new_conversation_id="c2")

    result = await agent.run("fork two", conversation=fork)
    await conversations.save(result)
    forked = await conversations.load("c2")
    original = await conversations.load("c1")
    assert forked is not None and texts(forked) == ["one", "echo: one", "fork two", "echo: fork two"]
    assert original is not None and texts(original) == ["one", "echo: one", "two", "echo: two"]
    whole = await conversations.fork("c1", scope="bob")
    assert texts(whole) == texts(original)
    assert (await conversations.read_record(whole.conversation_id)) is not None


async def test_list_conversations_by_scope_most_recent_first(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "a1", "x", scope="alice")
    await turn(conversations, agent, "b1", "x", scope="bob")
    await turn(conversations, agent, "a2", "x", scope="alice")
    await turn(conversations, agent, "a1", "y", scope="alice")

    alice = await conversations.list_conversations(scope="alice")
    assert [r.conversation_id for r in alice] == ["a1", "a2"]
    assert [r.conversation_id for r in await conversations.list_conversations(scope="bob")] == ["b1"]
    assert [r.conversation_id for r in await conversations.list_conversations()] == ["a1", "a2", "b1"]
    assert [r.conversation_id for r in await conversations.list_conversations(limit=1)] == ["a1"]
    assert await conversations.list_conversations(scope="nobody") == []


async def test_delete_respects_scope_and_keeps_entries_a_fork_still_uses(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "one", scope="alice")
    await turn(conversations, agent, "c1", "two", scope="alice")
    await conversations.fork("c1", at=2, new_conversation_id="c2")

    await conversations.delete("c1", scope="bob")
    assert await conversations.load("c1") is not None

    await conversations.delete("c1")
    assert await conversations.load("c1") is None
    assert [r.conversation_id for r in await conversations.list_conversations()] == ["c2"]
    fork = await conversations.load("c2")
    assert fork is not None and texts(fork) == ["one", "echo: one"]

    await conversations.delete("c2")
    assert await conversations.load("c2") is None
    assert await conversations.list_conversations(scope="alice") == []
    await conversations.delete("c2")  # deleting what is gone is a no-op


async def test_delete_then_recreate_does_not_accept_a_stale_revision(conversations: ConversationStore) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "old")
    stale = await conversations.load("c1")
    assert stale is not None
    await conversations.delete("c1")
    await turn(conversations, agent, "c1", "new")
    result = await agent.run("late", conversation=stale)
    with pytest.raises(ConversationConflict):
        await conversations.save(result)


async def stored_entry_count(store: ConversationStore) -> int:
    if isinstance(store, DatabaseConversationStore):
        async with store.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(store.entries))).scalar_one())
    if isinstance(store, RedisConversationStore):
        pattern = f"{store.prefix}{{conv}}:ent:*"  # test-owned prefix: no glob characters in it
        return len([key async for key in store.client.scan_iter(match=pattern, count=500)])
    assert isinstance(store, InMemoryConversationStore)
    return len(store._entries)


async def test_deleting_the_last_conversation_of_a_lineage_deletes_its_entries(
    conversations: ConversationStore,
) -> None:
    agent = echo_agent()
    await turn(conversations, agent, "c1", "one")
    await turn(conversations, agent, "c1", "two")
    fork = await conversations.fork("c1", at=2, new_conversation_id="c2")
    await conversations.save(await agent.run("fork", conversation=fork))
    await turn(conversations, agent, "other", "unrelated")
    assert await stored_entry_count(conversations) == 4 + 2 + 2

    await conversations.delete("c1")
    fork_history = await conversations.load("c2")
    assert fork_history is not None and len(fork_history.messages) == 4
    await conversations.delete("c2")
    assert await stored_entry_count(conversations) == 2
    await conversations.delete("other")
    assert await stored_entry_count(conversations) == 0


async def test_the_sql_store_also_takes_a_url_or_an_engine(tmp_path: Path) -> None:
    agent = echo_agent()
    from_url = DatabaseConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'own.db'}", table_prefix="mine_")
    try:
        await turn(from_url, agent, "c1", "hello")
        loaded = await from_url.load("c1")
        assert loaded is not None and texts(loaded) == ["hello", "echo: hello"]
        assert from_url.records.name == "mine_conversations"
    finally:
        await from_url.close()

    async with postgres_schema() as schema:
        engine = create_async_engine(PG_URL)
        try:
            # The schema does not exist yet: the store creates it with its tables.
            on_engine = DatabaseConversationStore(engine, schema=schema)
            await turn(on_engine, agent, "c1", "hello")
            assert [r.conversation_id for r in await on_engine.list_conversations()] == ["c1"]
            await on_engine.close()  # a shared engine stays usable
            async with engine.connect() as conn:
                assert (await conn.execute(sa.select(sa.func.count()).select_from(on_engine.entries))).scalar() == 2
        finally:
            await engine.dispose()


def test_the_stores_refuse_what_they_cannot_use() -> None:
    with pytest.raises(TypeError, match="DatabaseSessionStore"):
        DatabaseConversationStore(42)
    with pytest.raises(ValueError, match="table_prefix"):
        DatabaseConversationStore("sqlite+aiosqlite:///x.db", table_prefix="bad-prefix")
    with pytest.raises(TypeError, match="RedisSessionStore"):
        RedisConversationStore(42)


async def test_an_unreachable_backend_raises_store_unavailable_with_the_cause() -> None:
    sql = DatabaseConversationStore("postgresql+asyncpg://root@127.0.0.1:1/test")
    redis = RedisConversationStore("redis://127.0.0.1:1/0")
    try:
        for store in (sql, redis):
            with pytest.raises(StoreUnavailable) as info:
                await store.load("c1")
            assert info.value.__cause__ is not None
    finally:
        await sql.close()
        await redis.close()


async def test_a_sql_store_from_a_url_times_out_on_a_hung_server() -> None:
    async with silent_server() as port:
        store = DatabaseConversationStore(f"postgresql+asyncpg://root@127.0.0.1:{port}/test", connect_timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(StoreUnavailable) as info:
                await store.load("c1")
        finally:
            await store.close()
        assert time.monotonic() - started < 3
        assert isinstance(info.value.__cause__, TimeoutError | OSError)
    refused = DatabaseConversationStore(f"postgresql://root@127.0.0.1:{closed_port()}/test", connect_timeout=2)
    try:
        with pytest.raises(StoreUnavailable):
            await refused.load("c1")
    finally:
        await refused.close()


async def test_a_sql_store_waiting_too_long_for_a_pooled_connection_is_unavailable(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}", pool_size=1, pool_timeout=0.2)
    store = DatabaseConversationStore(engine)
    try:
        await turn(store, echo_agent(), "c1", "hello")
        async with engine.connect():  # holds the pool's only connection
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await store.load("c1")
            assert time.monotonic() - started < 2
            assert isinstance(info.value.__cause__, sa.exc.TimeoutError)
            with pytest.raises(StoreUnavailable):
                await turn(store, echo_agent(), "c1", "again")
        loaded = await store.load("c1")
        assert loaded is not None and texts(loaded) == ["hello", "echo: hello"]
    finally:
        await engine.dispose()


async def test_any_other_database_error_of_the_sql_store_is_unavailable_with_the_cause() -> None:
    async with postgres_schema() as schema:
        engine = create_database_engine(PG_URL)
        try:
            # No tables and none created: PostgreSQL reports an undefined table (a ProgrammingError).
            store = DatabaseConversationStore(engine, schema=schema, create_tables=False)
            with pytest.raises(StoreUnavailable) as info:
                await store.load("c1")
            assert isinstance(info.value.__cause__, sa.exc.ProgrammingError)
            with pytest.raises(StoreUnavailable) as info:
                await turn(store, echo_agent(), "c1", "hello")
            assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
        finally:
            await engine.dispose()


def test_timeouts_are_for_an_engine_the_sql_store_creates() -> None:
    engine = create_database_engine("sqlite+aiosqlite://")
    with pytest.raises(ValueError, match="connect_timeout"):
        DatabaseConversationStore(engine, connect_timeout=1)


async def test_a_sql_write_of_entries_that_exist_already_conflicts_and_writes_nothing(tmp_path: Path) -> None:
    store = DatabaseConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    try:
        await turn(store, echo_agent(), "c1", "start")
        record = await store.read_record("c1")
        assert record is not None
        entry = ConversationEntry(parent_id=record.head_id, message=ModelRequest(parts=[UserPromptPart("one")]))
        first = ConversationRecord(conversation_id="c2", head_id=entry.id)
        await store.write_record(first, new_entries=[entry], expected_revision=None)
        # The same entry again, under a new conversation: the entry id is taken.
        second = ConversationRecord(conversation_id="c3", head_id=entry.id)
        with pytest.raises(ConversationConflict):
            await store.write_record(second, new_entries=[entry], expected_revision=None)
        assert await store.read_record("c3") is None  # the record insert was rolled back with it
        assert await stored_entry_count(store) == 3
    finally:
        await store.close()
