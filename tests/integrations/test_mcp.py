"""The MCP server of the session tools, driven in-process by the official `mcp` client.

The identity binding, every tool and every kind of error, on the memory store (one test on
every backend); and the streamable HTTP app, served by uvicorn on a free localhost port.
`test_mcp_stdio.py` runs the `agent-sessions mcp` command as a desktop client would.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from mcp import Client
from mcp.shared.exceptions import MCPError

from agent_sessions import ExecutionContext, MemorySessionStore, SessionManager, SessionStore
from agent_sessions.errors import (
    InvalidServiceConfig,
    InvalidSessionId,
    InvalidUserId,
    ServiceNotRegistered,
    SessionNotFound,
)
from agent_sessions.integrations.mcp import (
    McpIdentityError,
    SessionBinding,
    create_server,
    parse_store_options,
    streamable_http_app,
)
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.tools import session_tools

from ..database.stores import closed_port
from ..support import FakeClock
from .mcp_support import child_env, manager_of, text_of


@pytest.fixture
async def memory_manager(clock: FakeClock) -> AsyncIterator[SessionManager]:
    manager = manager_of(MemorySessionStore(clock=clock))
    yield manager
    await manager.stop()


# ---------------------------------------------------------------- identity
def test_a_server_needs_a_user_or_a_session_to_act_as(memory_manager: SessionManager) -> None:
    with pytest.raises(McpIdentityError, match="needs an identity"):
        create_server(memory_manager)


def test_malformed_ids_are_refused_before_any_lookup(memory_manager: SessionManager) -> None:
    with pytest.raises(InvalidSessionId):
        create_server(memory_manager, session_id="not-an-issued-id")
    with pytest.raises(InvalidUserId):
        create_server(memory_manager, user_id="")


async def test_a_user_binding_resumes_the_users_latest_live_session(
    memory_manager: SessionManager, clock: FakeClock
) -> None:
    await memory_manager.create_session("alice")
    clock.advance(10)
    latest = await memory_manager.create_session("alice")
    await memory_manager.create_session("bob")
    binding = SessionBinding(memory_manager, user_id="alice")
    assert await binding.resolve() == latest.session_id
    assert binding.user_id == "alice"


async def test_a_user_binding_creates_a_session_for_a_new_user(memory_manager: SessionManager) -> None:
    binding = SessionBinding(memory_manager, user_id="carol")
    session_id = await binding.resolve()
    created = await memory_manager.get_session(session_id)
    assert created is not None and created.user_id == "carol"
    assert [s.session_id for s in await memory_manager.get_user_sessions("carol")] == [session_id]


async def test_a_session_binding_must_name_a_live_session_of_the_given_user(memory_manager: SessionManager) -> None:
    bobs = await memory_manager.create_session("bob")
    with pytest.raises(SessionNotFound, match="not a session of the given user"):
        await SessionBinding(memory_manager, user_id="alice", session_id=bobs.session_id).resolve()
    await memory_manager.delete_session(bobs.session_id)
    with pytest.raises(SessionNotFound, match="does not exist or has expired"):
        await SessionBinding(memory_manager, session_id=bobs.session_id).resolve()


def test_store_options_parse_scalars_and_keep_other_values_as_strings() -> None:
    assert parse_store_options(["schema=tenant_a", "prefix=app:1:", "max_session_bytes=65536", "flag=true"]) == {
        "schema": "tenant_a",
        "prefix": "app:1:",
        "max_session_bytes": 65536,
        "flag": True,
    }
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_store_options(["schema"])
    with pytest.raises(ValueError, match="given twice"):
        parse_store_options(["schema=a", "schema=b"])


# ---------------------------------------------------------------- in-process: tools and their errors
async def test_every_session_tool_is_listed_with_its_json_schema(memory_manager: SessionManager) -> None:
    async with Client(create_server(memory_manager, user_id="alice")) as client:
        listed = (await client.list_tools()).tools
    assert [t.name for t in listed] == session_tools.names()
    for tool in listed:
        spec = session_tools.get(tool.name)
        assert tool.description == spec.description
        assert tool.input_schema == spec.parameters_schema()
        assert "session_id" not in json.dumps(tool.input_schema)


async def test_each_tool_acts_on_the_bound_session_on_every_backend(store: SessionStore) -> None:
    manager = manager_of(store)
    session = await manager.create_session("alice")
    await manager.mutate(session.session_id, lambda s: s.feature_flags.update({"beta": True}))
    async with Client(create_server(manager, user_id="alice", session_id=session.session_id)) as client:
        saved = await client.call_tool("set_session_value", {"key": "user:city", "value": "Lisbon"})
        assert not saved.is_error and saved.structured_content == {
            "status": "success",
            "key": "user:city",
            "value": "Lisbon",
        }
        read = await client.call_tool("get_session_value", {"key": "user:city"})
        assert read.structured_content == {"key": "user:city", "found": True, "value": "Lisbon"}
        assert json.loads(text_of(read)) == read.structured_content
        prefs = await client.call_tool("update_user_preferences", {"preferences": {"units": "metric"}})
        assert prefs.structured_content["preferences"] == {"units": "metric"}
        got = await client.call_tool("get_user_preferences", {})
        assert got.structured_content == {"preferences": {"units": "metric"}}
        flags = await client.call_tool("get_feature_flags", {})
        assert flags.structured_content == {"feature_flags": {"beta": True}}
        history = await client.call_tool("get_recent_history", {"limit": 5})
        assert not history.is_error and history.structured_content == {"entries": []}
    stored = await manager.get_session(session.session_id)
    assert stored is not None and stored.state["user:city"] == "Lisbon"
    assert stored.preferences == {"units": "metric"}


async def test_invalid_arguments_come_back_as_tool_errors_the_model_can_read(memory_manager: SessionManager) -> None:
    async with Client(create_server(memory_manager, user_id="alice")) as client:
        missing = await client.call_tool("set_session_value", {"key": "note"})
        assert missing.is_error and "invalid arguments for tool 'set_session_value'" in text_of(missing)
        assert "value" in text_of(missing)
        shared = await client.call_tool("set_session_value", {"key": "app:motd", "value": "hi"})
        assert shared.is_error and "cannot be written by a tool" in text_of(shared)
        huge = await client.call_tool("set_session_value", {"key": "note", "value": "x" * 20_000})
        assert huge.is_error and "at most 16384 are allowed" in text_of(huge)
        limit = await client.call_tool("get_recent_history", {"limit": 500})
        assert limit.is_error and "limit" in text_of(limit)
        # The server keeps serving after errors.
        ok = await client.call_tool("set_session_value", {"key": "note", "value": "kept"})
        assert not ok.is_error


async def test_the_model_cannot_choose_the_session(memory_manager: SessionManager) -> None:
    other = await memory_manager.create_session("bob")
    async with Client(create_server(memory_manager, user_id="alice")) as client:
        result = await client.call_tool(
            "set_session_value", {"key": "note", "value": "x", "session_id": other.session_id}
        )
    assert result.is_error and "session_id" in text_of(result)
    untouched = await memory_manager.get_session(other.session_id)
    assert untouched is not None and "note" not in untouched.state


async def test_a_user_key_on_a_session_without_a_user_is_a_tool_error(memory_manager: SessionManager) -> None:
    anonymous = await memory_manager.create_session()
    async with Client(create_server(memory_manager, session_id=anonymous.session_id)) as client:
        result = await client.call_tool("set_session_value", {"key": "user:city", "value": "Oslo"})
        assert result.is_error and "scope key 'user:city' needs a user_id" in text_of(result)
        plain = await client.call_tool("set_session_value", {"key": "city", "value": "Oslo"})
        assert not plain.is_error
    stored = await memory_manager.get_session(anonymous.session_id)
    assert stored is not None and stored.state == {"city": "Oslo"}


async def test_a_session_too_large_is_a_tool_error_and_nothing_is_written(clock: FakeClock) -> None:
    manager = manager_of(MemorySessionStore(clock=clock, max_session_bytes=4096))
    try:
        async with Client(create_server(manager, user_id="alice")) as client:
            first = await client.call_tool("set_session_value", {"key": "a", "value": "x" * 3000})
            assert not first.is_error
            second = await client.call_tool("set_session_value", {"key": "b", "value": "y" * 3000})
            assert second.is_error and "over max_session_bytes=4096" in text_of(second)
            read = await client.call_tool("get_session_value", {"key": "b"})
            assert read.structured_content == {"key": "b", "found": False, "value": None}
    finally:
        await manager.stop()


async def test_a_client_on_the_handshake_era_protocol_gets_the_same_tools_and_errors(
    memory_manager: SessionManager,
) -> None:
    async with Client(create_server(memory_manager, user_id="alice"), mode="legacy") as client:
        assert client.protocol_version < "2026"
        assert [t.name for t in (await client.list_tools()).tools] == session_tools.names()
        saved = await client.call_tool("set_session_value", {"key": "user:city", "value": "Turin"})
        refused = await client.call_tool("set_session_value", {"key": "temp:x", "value": 1})
    assert saved.structured_content == {"status": "success", "key": "user:city", "value": "Turin"}
    assert refused.is_error and "cannot be written by a tool" in text_of(refused)


async def test_an_unknown_tool_is_a_protocol_error(memory_manager: SessionManager) -> None:
    async with Client(create_server(memory_manager, user_id="alice")) as client:
        with pytest.raises(MCPError, match="unknown tool 'drop_tables'") as raised:
            await client.call_tool("drop_tables", {})
    assert raised.value.code == -32602


async def test_an_unreachable_store_is_a_tool_error_and_the_server_keeps_serving() -> None:
    store = RedisSessionStore(f"redis://127.0.0.1:{closed_port()}/0", socket_connect_timeout=0.2, retries=0)
    manager = manager_of(store)
    try:
        async with Client(create_server(manager, user_id="alice")) as client:
            for _ in range(2):
                result = await client.call_tool("get_user_preferences", {})
                assert result.is_error and "the session store is unavailable" in text_of(result)
            # Every tool but search_memory: Redis cannot search history.
            assert [t.name for t in (await client.list_tools()).tools] == [
                name for name in session_tools.names() if name != "search_memory"
            ]
    finally:
        await manager.stop()


async def test_an_expired_user_session_is_replaced_and_the_users_memory_kept(
    memory_manager: SessionManager, clock: FakeClock
) -> None:
    async with Client(create_server(memory_manager, user_id="alice")) as client:
        await client.call_tool("set_session_value", {"key": "user:city", "value": "Rome"})
        await client.call_tool("set_session_value", {"key": "draft", "value": "session only"})
        await client.call_tool("update_user_preferences", {"preferences": {"tone": "brief"}})
        first = [s.session_id for s in await memory_manager.get_user_sessions("alice")]
        clock.advance(3601)
        city = await client.call_tool("get_session_value", {"key": "user:city"})
        draft = await client.call_tool("get_session_value", {"key": "draft"})
        prefs = await client.call_tool("get_user_preferences", {})
    assert city.structured_content == {"key": "user:city", "found": True, "value": "Rome"}
    assert draft.structured_content == {"key": "draft", "found": False, "value": None}
    assert prefs.structured_content == {"preferences": {"tone": "brief"}}
    now = [s.session_id for s in await memory_manager.get_user_sessions("alice")]
    assert len(now) == 1 and now != first


async def test_an_expired_session_binding_reports_a_tool_error(
    memory_manager: SessionManager, clock: FakeClock
) -> None:
    session = await memory_manager.create_session()
    async with Client(create_server(memory_manager, session_id=session.session_id)) as client:
        assert not (await client.call_tool("get_feature_flags", {})).is_error
        clock.advance(3601)
        result = await client.call_tool("get_feature_flags", {})
    assert result.is_error and "has expired" in text_of(result)


async def test_a_custom_registry_is_served_with_its_own_tools(memory_manager: SessionManager) -> None:
    registry = session_tools.copy()

    @registry.tool(name="count_letters")
    def count_letters(ctx: ExecutionContext, word: str) -> dict[str, int]:
        """Count the letters of a word."""
        return {"letters": len(word)}

    async with Client(create_server(memory_manager, user_id="alice", registry=registry)) as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
        result = await client.call_tool("count_letters", {"word": "lisbon"})
    assert listed["count_letters"].input_schema == registry.get("count_letters").parameters_schema()
    assert result.structured_content == {"letters": 6}


async def test_a_custom_tool_reaches_its_session_through_the_typed_accessors(memory_manager: SessionManager) -> None:
    """`ctx.session()` and `ctx.update(fn)` work over MCP as under pydantic-ai and the registry."""
    registry = session_tools.copy()

    @registry.tool(name="count_visit")
    async def count_visit(ctx: ExecutionContext) -> dict[str, int]:
        """Count one more visit of the bound session."""
        saved = await ctx.update(lambda s: s.set("visits", s.get("visits", 0) + 1))
        seen = await ctx.session()
        return {"visits": saved.get("visits"), "seen": seen.get("visits")}

    async with Client(create_server(memory_manager, user_id="alice", registry=registry)) as client:
        first = await client.call_tool("count_visit", {})
        second = await client.call_tool("count_visit", {})
    assert first.structured_content == {"visits": 1, "seen": 1}
    assert second.structured_content == {"visits": 2, "seen": 2}
    (session,) = await memory_manager.get_user_sessions("alice")
    assert session.get("visits") == 2


@pytest.mark.parametrize("error", [RuntimeError, ServiceNotRegistered], ids=["bug", "operator_error"])
async def test_a_failure_not_of_the_callers_making_is_an_internal_error_that_leaks_nothing(
    memory_manager: SessionManager, caplog: pytest.LogCaptureFixture, error: type[Exception]
) -> None:
    registry = session_tools.copy()

    @registry.tool(name="broken")
    def broken(ctx: ExecutionContext) -> str:
        """Always fails."""
        raise error("internal detail")

    async with Client(create_server(memory_manager, user_id="alice", registry=registry)) as client:
        with pytest.raises(MCPError) as raised:
            await client.call_tool("broken", {})
        assert not (await client.call_tool("get_feature_flags", {})).is_error
    assert raised.value.code == -32603 and "internal detail" not in str(raised.value)
    # Not swallowed: the SDK logs it with its traceback, for the operator.
    assert any(r.exc_info and "internal detail" in str(r.exc_info[1]) for r in caplog.records)


async def test_bad_input_raised_by_any_tool_is_a_tool_error(memory_manager: SessionManager) -> None:
    registry = session_tools.copy()

    @registry.tool(name="configure")
    def configure(ctx: ExecutionContext) -> str:
        """Refuses its configuration."""
        raise InvalidServiceConfig("service 'search' does not accept the key 'colour'")

    async with Client(create_server(memory_manager, user_id="alice", registry=registry)) as client:
        result = await client.call_tool("configure", {})
    assert result.is_error and text_of(result) == "service 'search' does not accept the key 'colour'"


def test_a_missing_mcp_sdk_names_the_extra_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['mcp'] = None\n"
        "try:\n    import agent_sessions.integrations.mcp\n"
        "except ImportError as exc:\n    print(exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=os.environ | child_env(), capture_output=True, text=True
    )
    assert "install agent-sessions[mcp]" in done.stdout, done.stderr


# ---------------------------------------------------------------- streamable HTTP
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    task = asyncio.create_task(server.serve())
    try:
        while not server.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def test_the_streamable_http_app_serves_the_tools_to_an_mcp_client(memory_manager: SessionManager) -> None:
    app = streamable_http_app(memory_manager, user_id="alice")
    async with serving(app) as base, Client(f"{base}/mcp") as client:
        assert [t.name for t in (await client.list_tools()).tools] == session_tools.names()
        saved = await client.call_tool("set_session_value", {"key": "user:lang", "value": "pt"})
        refused = await client.call_tool("set_session_value", {"key": "context:x", "value": 1})
    assert not saved.is_error
    assert refused.is_error and "cannot be written by a tool" in text_of(refused)
    (session,) = await memory_manager.get_user_sessions("alice")
    assert session.state["user:lang"] == "pt"


async def test_the_http_app_mounts_inside_another_starlette_app(memory_manager: SessionManager) -> None:
    from contextlib import asynccontextmanager

    from starlette.applications import Starlette
    from starlette.routing import Mount

    mcp_app = streamable_http_app(memory_manager, user_id="alice")

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    outer = Starlette(routes=[Mount("/tools", app=mcp_app)], lifespan=lifespan)
    async with serving(outer) as base, Client(f"{base}/tools/mcp") as client:
        result = await client.call_tool("get_user_preferences", {})
    assert result.structured_content == {"preferences": {}}
