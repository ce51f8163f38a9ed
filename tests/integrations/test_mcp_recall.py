"""The MCP server serves the recall tool (`search_memory`) where the store searches history, bound
to the server's user: never another user's entries. On Redis it is not offered at all."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError

from agent_sessions import Session, SessionManager
from agent_sessions.integrations.mcp import create_server, served_tools
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.tools import session_tools

from ..backends import BACKENDS
from ..database.stores import closed_port
from ..support import FakeClock
from .mcp_support import manager_of, text_of


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def manager(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[SessionManager]:
    async with BACKENDS[str(request.param)](clock) as store:
        m = manager_of(store)
        yield m
        await m.stop()


async def said(manager: SessionManager, user_id: str, text: str) -> Session:
    session = await manager.create_session(user_id=user_id)
    return await manager.mutate(
        session.session_id, lambda s: s.add_history_entry("message", {"role": "user", "text": text})
    )


async def test_the_server_searches_its_users_history_and_never_another_users(manager: SessionManager) -> None:
    await said(manager, "alice", "Please remember that my cat is called Miso.")
    await said(manager, "bob", "My cat is called Tiger.")

    async with Client(create_server(manager, user_id="alice")) as client:
        listed = [t.name for t in (await client.list_tools()).tools]
        result = await client.call_tool("search_memory", {"query": "what is my cat called"})
        refused = await client.call_tool("search_memory", {"query": "cat", "user_id": "bob"})

    assert listed == session_tools.names() and "search_memory" in listed
    assert not result.is_error
    hits = result.structured_content["hits"]
    assert hits and any("Miso" in hit["text"] for hit in hits)
    assert "Tiger" not in text_of(result)
    assert refused.is_error  # the model cannot name whose history to search


async def test_on_redis_the_recall_tool_is_not_served() -> None:
    # No I/O happens before a call: the listing is decided by what the store can do.
    store = RedisSessionStore(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=0.2, retries=0)
    manager = manager_of(store)
    try:
        assert "search_memory" not in served_tools(manager, session_tools)
        assert "search_memory" in session_tools  # the shared registry is left as it was
        async with Client(create_server(manager, user_id="alice")) as client:
            listed = [t.name for t in (await client.list_tools()).tools]
            with pytest.raises(MCPError, match="unknown tool 'search_memory'"):
                await client.call_tool("search_memory", {"query": "cat"})
        assert "search_memory" not in listed and "get_user_preferences" in listed
    finally:
        await manager.stop()
