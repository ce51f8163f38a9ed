"""Conversation ids PostgreSQL would refuse are refused the same way by every conversation
store we ship, before any I/O, as `SerializationError` (never `StoreUnavailable`, which a caller
retries)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from pydantic_ai.conversation_store import ConversationEntry, ConversationRecord, ConversationStore
from pydantic_ai.messages import ModelRequest, UserPromptPart

from agent_sessions import SerializationError
from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore, RedisConversationStore
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.stores.sql import DatabaseSessionStore

from ..backends import BACKENDS
from ..database.stores import closed_port
from ..support import FakeClock

pytestmark = pytest.mark.asyncio

BAD_IDS = ["x" * 300, "a\x00b", "\ud800lone", ""]


@pytest.fixture(params=["sqlite", "postgres", "redis", "redis_cluster"])
async def conversations(request: pytest.FixtureRequest) -> AsyncIterator[ConversationStore]:
    async with BACKENDS[request.param](FakeClock()) as session_store:
        if isinstance(session_store, DatabaseSessionStore):
            yield DatabaseConversationStore(session_store)
        else:
            yield RedisConversationStore(session_store)


def record(cid: str, *, head: str | None = None, scope: str | None = None) -> ConversationRecord:
    return ConversationRecord(
        conversation_id=cid, head_id=head, revision="r1", updated_at=datetime.now(UTC), scope=scope
    )


def entry(entry_id: str, parent: str | None = None) -> ConversationEntry:
    return ConversationEntry(id=entry_id, parent_id=parent, message=ModelRequest(parts=[UserPromptPart("hi")]))


@pytest.mark.parametrize("bad", BAD_IDS)
async def test_an_id_no_backend_can_hold_is_a_serialization_error(conversations: ConversationStore, bad: str) -> None:
    with pytest.raises(SerializationError):
        await conversations.read_record(bad)
    with pytest.raises(SerializationError):
        await conversations.write_record(record(bad), expected_revision=None)
    with pytest.raises(SerializationError):
        await conversations.write_record(record("ok", head=bad), new_entries=[entry(bad)], expected_revision=None)
    with pytest.raises(SerializationError):
        await conversations.delete_record(bad, expected_revision="r1")
    with pytest.raises(SerializationError):
        await conversations.read_entry(bad)
    with pytest.raises(SerializationError):
        await conversations.read_history(bad)
    assert await conversations.read_record("ok") is None  # nothing was written


async def test_a_scope_with_nul_is_a_serialization_error(conversations: ConversationStore) -> None:
    with pytest.raises(SerializationError):
        await conversations.write_record(record("ok", scope="a\x00b"), expected_revision=None)
    assert await conversations.read_record("ok") is None


async def test_ids_are_checked_before_any_io() -> None:
    """Against stores whose servers cannot be reached: the id error comes first."""
    port = closed_port()
    sql = DatabaseSessionStore(f"postgresql+asyncpg://root@127.0.0.1:{port}/test", connect_timeout=0.5)
    redis = RedisSessionStore(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=0.5)
    try:
        for conversations in (DatabaseConversationStore(sql), RedisConversationStore(redis)):
            with pytest.raises(SerializationError):
                await conversations.read_record("x" * 300)
    finally:
        await sql.close()
        await redis.close()
