"""The `agent-sessions mcp` command over stdio, driven by real MCP clients.

The `mcp` client spawns ``python -m agent_sessions mcp`` as a desktop client would, on a
temporary SQLite file, a fresh PostgreSQL schema and a fresh Redis key prefix (restarting it to
see the memory kept); pydantic-ai's MCP client drives an `Agent` with a scripted
`FunctionModel` against the same command; and the config and commands that
`examples/mcp_server.md` shows are run.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from agent_sessions import create_store
from agent_sessions.cli import app
from agent_sessions.ids import id_hash
from agent_sessions.integrations.mcp import parse_store_options
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.tools import session_tools

from ..agent.scripted import Script
from ..database.stores import postgres_schema
from ..redis.stores import delete_prefix, redis_host_port, unique_prefix
from ..support import PG_URL, REDIS_START, REDIS_URL, require_service
from .mcp_support import ROOT, child_env, cli_runner, sqlite_url, stdio_params, text_of

EXAMPLE = ROOT / "examples" / "mcp_server.md"


# ---------------------------------------------------------------- stdio: the `agent-sessions mcp` command
async def test_the_stdio_command_serves_each_tool_and_reports_errors(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "sessions.db")
    # With -vv the library logs: a log line on stdout would break the protocol, so they must go to stderr.
    params = stdio_params(url, "--user", "alice", cwd=tmp_path, verbose=True)
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with Client(stdio_client(params, errlog=errlog)) as client:
            await exercise_every_tool(client)
    logged = (tmp_path / "stderr.log").read_text()
    assert "MCP server on stdio acts on session" in logged
    store = create_store(url)
    try:
        (session,) = await store.get_user_sessions("alice")
    finally:
        await store.close()
    assert session.session_id not in logged and id_hash(session.session_id) in logged


async def exercise_every_tool(client: Client) -> None:
    """Call each built-in tool once, then an invalid call and an unknown tool, over `client`."""
    assert client.server_info is not None and client.server_info.name == "agent-sessions"
    assert [t.name for t in (await client.list_tools()).tools] == session_tools.names()
    calls = [
        ("set_session_value", {"key": "user:city", "value": "Porto"}),
        ("get_session_value", {"key": "user:city"}),
        ("update_user_preferences", {"preferences": {"units": "metric"}}),
        ("get_user_preferences", {}),
        ("get_recent_history", {}),
        ("get_feature_flags", {}),
    ]
    results = {name: await client.call_tool(name, args) for name, args in calls}
    assert not any(r.is_error for r in results.values())
    assert results["get_session_value"].structured_content["value"] == "Porto"
    assert results["get_user_preferences"].structured_content == {"preferences": {"units": "metric"}}
    bad = await client.call_tool("get_session_value", {"key": "temp:scratch"})
    assert bad.is_error and "cannot be read by a tool" in text_of(bad)
    with pytest.raises(MCPError, match="unknown tool"):
        await client.call_tool("no_such_tool", {})
    # Still serving after a protocol error.
    assert not (await client.call_tool("get_feature_flags", {})).is_error


def _persistence_url(backend: str, tmp_path: Path) -> str:
    return (
        sqlite_url(tmp_path / "sessions.db") if backend == "sqlite" else PG_URL if backend == "postgres" else REDIS_URL
    )


@contextlib.asynccontextmanager
async def isolated(backend: str) -> AsyncIterator[list[str]]:
    """The --option flags giving the command a store of its own on `backend` (removed afterwards)."""
    if backend == "sqlite":
        yield []
    elif backend == "postgres":
        async with postgres_schema() as schema:
            yield ["--option", f"schema={schema}"]
    else:
        require_service("Redis", *redis_host_port(REDIS_URL), REDIS_START)
        prefix = unique_prefix()
        try:
            yield ["--option", f"prefix={prefix}"]
        finally:
            store = RedisSessionStore(REDIS_URL, prefix=prefix)
            try:
                await delete_prefix(store)
            finally:
                await store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis"])
async def test_a_users_memory_survives_a_restart_of_the_server(backend: str, tmp_path: Path) -> None:
    url = _persistence_url(backend, tmp_path)
    async with isolated(backend) as flags:
        params = stdio_params(url, "--user", "alice", *flags, cwd=tmp_path)
        async with Client(params) as client:
            await client.call_tool("set_session_value", {"key": "user:city", "value": "Kyoto"})
            await client.call_tool("set_session_value", {"key": "draft", "value": "half an idea"})
            await client.call_tool("update_user_preferences", {"preferences": {"tone": "warm"}})
        async with Client(params) as client:
            city = await client.call_tool("get_session_value", {"key": "user:city"})
            draft = await client.call_tool("get_session_value", {"key": "draft"})
            prefs = await client.call_tool("get_user_preferences", {})
        assert city.structured_content["value"] == "Kyoto"
        assert draft.structured_content["value"] == "half an idea"
        assert prefs.structured_content == {"preferences": {"tone": "warm"}}
        options = parse_store_options(flags[1:]) if flags else {}
        store = create_store(url, **options)
        try:
            (session,) = await store.get_user_sessions("alice")
            assert session.state["user:city"] == "Kyoto"
        finally:
            await store.close()


async def test_a_pydantic_ai_agent_uses_the_stdio_server_as_a_toolset(tmp_path: Path) -> None:
    from fastmcp.client import Client as FastMCPClient
    from fastmcp.client.transports import StdioTransport
    from pydantic_ai import Agent
    from pydantic_ai.mcp import MCPToolset

    url = sqlite_url(tmp_path / "sessions.db")
    transport = StdioTransport(
        command=sys.executable,
        args=["-m", "agent_sessions", "mcp", "--store", url, "--user", "alice"],
        env=child_env(),
        cwd=str(tmp_path),
        keep_alive=False,
    )
    script = Script(
        [("set_session_value", {"key": "app:banner", "value": "hijack"})],
        [("set_session_value", {"key": "user:airline", "value": "TAP"})],
        [("get_session_value", {"key": "user:airline"})],
        final="noted",
    )
    agent = Agent(script.model(), toolsets=[MCPToolset(FastMCPClient(transport))])
    async with agent:
        result = await agent.run("Remember that I fly TAP.")
    assert result.output == "noted"
    assert set(session_tools.names()) <= set(script.offered[0])
    (refusal,) = script.refused("set_session_value")
    assert "cannot be written by a tool" in refusal
    (read,) = script.returned("get_session_value")
    assert "TAP" in json.dumps(read)
    store = create_store(url)
    try:
        (session,) = await store.get_user_sessions("alice")
        assert session.state["user:airline"] == "TAP" and "app:banner" not in session.state
    finally:
        await store.close()


def test_the_command_refuses_bad_usage_with_a_message_and_no_output(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "sessions.db")
    cases = [
        (["mcp", "--store", url], 2, "needs an identity"),
        (["mcp", "--store", url, "--session", "short"], 2, "session id"),
        (["mcp", "--store", url, "--session", "A" * 43], 1, "does not exist or has expired"),
        (["mcp", "--store", url, "--user", "alice", "--option", "schema"], 2, "KEY=VALUE"),
        (["mcp", "--store", url, "--user", "alice", "--option", "no_such_option=1"], 2, "no_such_option"),
        (["mcp", "--store", "nosuch://x", "--user", "alice"], 2, "unknown store URL scheme"),
    ]
    for args, code, message in cases:
        result = cli_runner().invoke(app, args)
        assert result.exit_code == code, (args, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert result.stdout == "", args


# ---------------------------------------------------------------- examples/mcp_server.md
def example_config() -> dict[str, Any]:
    blocks = re.findall(r"```json\n(.*?)```", EXAMPLE.read_text(), flags=re.DOTALL)
    assert blocks, "examples/mcp_server.md shows no JSON config"
    config: dict[str, Any] = json.loads(blocks[0])
    return config


def example_commands() -> Iterator[list[str]]:
    for block in re.findall(r"```(?:sh|bash|console)\n(.*?)```", EXAMPLE.read_text(), flags=re.DOTALL):
        for line in block.splitlines():
            if line.startswith("agent-sessions "):
                yield line.split()


async def test_the_example_desktop_config_starts_a_working_server(tmp_path: Path) -> None:
    entry = example_config()["mcpServers"]["agent-sessions"]
    assert entry["command"] == "agent-sessions"
    args = list(entry["args"])
    # The example's store path is the reader's; the test puts it in a temporary folder.
    store_at = args.index("--store") + 1
    assert args[store_at].startswith("sqlite+aiosqlite:///")
    args[store_at] = sqlite_url(tmp_path / "sessions.db")
    params = StdioServerParameters(
        command=str(Path(sys.executable).with_name("agent-sessions")), args=args, env=child_env(), cwd=str(tmp_path)
    )
    async with Client(params) as client:
        saved = await client.call_tool("set_session_value", {"key": "user:editor", "value": "vim"})
    assert not saved.is_error


def test_the_example_commands_are_accepted_by_the_cli() -> None:
    commands = list(example_commands())
    assert commands, "examples/mcp_server.md shows no agent-sessions command"
    for command in commands:
        assert "mcp" in command, command
        # Click parses every option shown (an unknown one fails) before `--help` exits.
        result = cli_runner().invoke(app, [*command[1:], "--help"])
        assert result.exit_code == 0, (command, result.stderr)
        assert "Serve the session tools to an MCP client" in result.stdout
