"""`@tool`, `ToolRegistry` and the built-in `session_tools` (through the registry, every backend)."""

from __future__ import annotations

import json
import threading
from typing import Annotated, Any

import pytest
from pydantic import Field

from agent_sessions import (
    AgentSessionsError,
    ExecutionContext,
    SessionContextProvider,
    SessionManager,
    SessionNotFound,
    ToolArgumentsError,
    ToolNotFound,
    ToolRegistry,
    current_context,
    session_tools,
    tool,
)
from agent_sessions.tools import MAX_KEY_LENGTH, MAX_VALUE_BYTES, Tool

BUILT_INS = {
    "get_user_preferences",
    "update_user_preferences",
    "get_session_value",
    "set_session_value",
    "get_recent_history",
    "get_feature_flags",
    "search_memory",
}


async def enriched(manager: SessionManager, session_id: str) -> ExecutionContext:
    return await SessionContextProvider(manager).enrich_context(ExecutionContext(session_id=session_id))


# ----------------------------------------------------------------------------- the decorator
def test_tool_decorator_keeps_name_description_and_direct_calls() -> None:
    @tool(name="add", description="Add two numbers.")
    def add(ctx: ExecutionContext, a: int, b: int = 2) -> int:
        return a + b

    assert isinstance(add, Tool)
    assert add.name == "add" and add.description == "Add two numbers."
    assert add(ExecutionContext(), 1) == 3


def test_bare_tool_decorator_uses_function_name_and_docstring() -> None:
    @tool
    async def greet(ctx: ExecutionContext, who: str) -> str:
        """Say hello.

        Longer text that is not part of the description.
        """
        return f"hello {who}"

    assert greet.name == "greet"
    assert greet.description == "Say hello."


def test_tool_rejects_functions_a_model_cannot_call() -> None:
    with pytest.raises(TypeError, match="first parameter"):

        @tool
        def no_context() -> None:
            return None

    with pytest.raises(TypeError, match=r"\*args"):

        @tool
        def spread(ctx: ExecutionContext, *items: int) -> None:
            return None

    with pytest.raises(TypeError, match="ExecutionContext"):

        @tool
        def wrong(ctx: int) -> None:
            return None

    with pytest.raises(ValueError, match="tool name"):

        @tool(name="has spaces")
        def named(ctx: ExecutionContext) -> None:
            return None


# ----------------------------------------------------------------------------- the registry
async def test_registry_validates_and_coerces_arguments_from_the_signature() -> None:
    registry = ToolRegistry()

    @registry.tool(name="repeat")
    async def repeat(ctx: ExecutionContext, text: str, times: Annotated[int, Field(ge=1, le=3)] = 1) -> str:
        return text * times

    ctx = ExecutionContext()
    assert await registry.call("repeat", {"text": "ab", "times": "2"}, ctx) == "abab"
    assert await registry.call("repeat", '{"text": "x"}', ctx) == "x"
    with pytest.raises(ToolArgumentsError, match="times"):
        await registry.call("repeat", {"text": "x", "times": 9}, ctx)
    with pytest.raises(ToolArgumentsError, match="text"):
        await registry.call("repeat", {}, ctx)
    with pytest.raises(ToolArgumentsError, match="unexpected"):
        await registry.call("repeat", {"text": "x", "unexpected": 1}, ctx)
    with pytest.raises(ToolArgumentsError):
        await registry.call("repeat", "{not json", ctx)


async def test_registry_unknown_tool_raises_tool_not_found_naming_known_tools() -> None:
    registry = ToolRegistry()

    @registry.tool()
    def ping(ctx: ExecutionContext) -> str:
        return "pong"

    with pytest.raises(ToolNotFound, match="ping") as info:
        await registry.call("nope", {}, ExecutionContext())
    assert isinstance(info.value, AgentSessionsError) and isinstance(info.value, LookupError)
    assert issubclass(ToolArgumentsError, AgentSessionsError)


def test_registry_refuses_duplicate_names_unless_replacing() -> None:
    registry = ToolRegistry()

    def first(ctx: ExecutionContext) -> int:
        return 1

    registry.register(tool(name="same")(first))
    with pytest.raises(ValueError, match="already registered"):
        registry.register(tool(name="same")(first))
    registry.register(tool(name="same", description="new")(first), replace=True)
    assert registry.get("same").description == "new"
    registry.unregister("same")
    assert "same" not in registry and len(registry) == 0


async def test_sync_tools_run_in_a_thread_with_the_context_current() -> None:
    seen: dict[str, Any] = {}

    @tool
    def where(ctx: ExecutionContext) -> str:
        seen["thread"] = threading.current_thread().name
        seen["current"] = current_context()
        return "ok"

    ctx = ExecutionContext()
    assert await ToolRegistry([where]).call("where", None, ctx) == "ok"
    assert seen["thread"] != threading.main_thread().name
    assert seen["current"] is ctx
    assert current_context() is None


async def test_async_tool_sees_its_context_as_current_context() -> None:
    @tool
    async def who(ctx: ExecutionContext) -> bool:
        return current_context() is ctx

    assert await ToolRegistry([who]).call("who", {}, ExecutionContext()) is True


def test_openai_export_has_the_function_calling_shape() -> None:
    registry = ToolRegistry()

    @registry.tool(description="Look a word up.")
    def lookup(ctx: ExecutionContext, word: str, limit: int = 5, json: bool = False) -> list[str]:
        return []

    (definition,) = registry.openai_tools()
    assert definition["type"] == "function"
    function = definition["function"]
    assert function["name"] == "lookup" and function["description"] == "Look a word up."
    params = function["parameters"]
    assert params["type"] == "object"
    assert params["required"] == ["word"]
    assert params["properties"]["word"]["type"] == "string"
    assert params["properties"]["limit"] == {"type": "integer", "default": 5}
    # A parameter named like a BaseModel attribute still works.
    assert "json" in params["properties"]
    assert params["additionalProperties"] is False
    json.dumps(registry.openai_tools())


def test_session_tools_hold_the_built_ins_and_no_tool_takes_a_session_id() -> None:
    assert set(session_tools.names()) == BUILT_INS
    for definition in session_tools.openai_tools():
        properties = definition["function"]["parameters"].get("properties", {})
        assert not any("session" in name or name.endswith("_id") for name in properties), definition


# ----------------------------------------------------------------------------- built-ins, every backend
async def test_every_built_in_tool_through_the_registry(manager: SessionManager) -> None:
    session = await manager.create_session("alice", preferences={"language": "en"})
    session.feature_flags["beta"] = True
    session.add_history_entry("note", {"text": "hello"})
    await manager.update_session(session)
    ctx = await enriched(manager, session.session_id)

    assert await session_tools.call("get_user_preferences", {}, ctx) == {"preferences": {"language": "en"}}
    updated = await session_tools.call("update_user_preferences", {"preferences": {"tone": "formal"}}, ctx)
    assert updated == {"status": "success", "preferences": {"language": "en", "tone": "formal"}}
    # The context shows the saved preferences to later tools and instructions.
    assert ctx.get_property("preferences") == {"language": "en", "tone": "formal"}

    assert await session_tools.call("set_session_value", {"key": "city", "value": {"name": "Lyon"}}, ctx) == {
        "status": "success",
        "key": "city",
        "value": {"name": "Lyon"},
    }
    assert await session_tools.call("get_session_value", {"key": "city"}, ctx) == {
        "key": "city",
        "found": True,
        "value": {"name": "Lyon"},
    }
    assert await session_tools.call("get_session_value", {"key": "absent"}, ctx) == {
        "key": "absent",
        "found": False,
        "value": None,
    }
    history = await session_tools.call("get_recent_history", {"limit": 5}, ctx)
    assert [e["type"] for e in history["entries"]] == ["note"]
    assert await session_tools.call("get_feature_flags", {}, ctx) == {"feature_flags": {"beta": True}}

    stored = await manager.get_session(session.session_id)
    assert stored is not None
    assert stored.preferences == {"language": "en", "tone": "formal"}
    assert stored.state["city"] == {"name": "Lyon"}
    # Preferences follow the user to a new session.
    later = await manager.create_session("alice")
    assert later.preferences == {"language": "en", "tone": "formal"}


async def test_user_scoped_values_written_by_a_tool_reach_the_users_other_sessions(manager: SessionManager) -> None:
    first = await manager.create_session("bob")
    second = await manager.create_session("bob")
    ctx = await enriched(manager, first.session_id)
    await session_tools.call("set_session_value", {"key": "user:nickname", "value": "B"}, ctx)
    other = await enriched(manager, second.session_id)
    assert await session_tools.call("get_session_value", {"key": "user:nickname"}, other) == {
        "key": "user:nickname",
        "found": True,
        "value": "B",
    }


@pytest.mark.parametrize(
    ("tool_name", "args", "problem"),
    [
        ("set_session_value", {"key": "temp:scratch", "value": 1}, "cannot be written"),
        ("set_session_value", {"key": "app:motd", "value": 1}, "cannot be written"),
        ("set_session_value", {"key": "context:session_manager", "value": 1}, "cannot be written"),
        ("set_session_value", {"key": "service_config", "value": {}}, "cannot be written"),
        ("set_session_value", {"key": "_internal", "value": 1}, "cannot be written"),
        ("set_session_value", {"key": "", "value": 1}, "at least 1"),
        ("set_session_value", {"key": "k" * (MAX_KEY_LENGTH + 1), "value": 1}, f"at most {MAX_KEY_LENGTH}"),
        ("set_session_value", {"key": "big", "value": "x" * MAX_VALUE_BYTES}, "bytes as JSON"),
        ("set_session_value", {"key": "nan", "value": float("nan")}, "not allowed"),
        ("set_session_value", {"key": "line\nbreak", "value": 1}, "printable"),
        ("get_session_value", {"key": "temp:scratch"}, "cannot be read"),
        ("update_user_preferences", {"preferences": {f"p{i}": i for i in range(40)}}, "at most 32"),
        ("update_user_preferences", {"preferences": {"p": "x" * MAX_VALUE_BYTES}}, "bytes as JSON"),
        ("get_recent_history", {"limit": 500}, "less than or equal"),
        ("get_session_value", {"key": "x", "session_id": "A" * 43}, "Extra inputs"),
    ],
)
async def test_built_in_tools_refuse_unsafe_or_oversized_input(
    memory_manager: SessionManager, tool_name: str, args: dict[str, Any], problem: str
) -> None:
    session = await memory_manager.create_session("carol")
    ctx = await enriched(memory_manager, session.session_id)
    with pytest.raises(ToolArgumentsError, match=problem):
        await session_tools.call(tool_name, args, ctx)
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None and stored.state == {} and stored.preferences == {}


async def test_a_tool_only_sees_the_session_of_its_context(memory_manager: SessionManager) -> None:
    mine = await memory_manager.create_session("dave", data={"secret": "mine"})
    theirs = await memory_manager.create_session("erin", data={"secret": "theirs"}, preferences={"x": 1})
    ctx = await enriched(memory_manager, mine.session_id)
    assert (await session_tools.call("get_session_value", {"key": "secret"}, ctx))["value"] == "mine"
    assert await session_tools.call("get_user_preferences", {}, ctx) == {"preferences": {}}
    await session_tools.call("set_session_value", {"key": "secret", "value": "changed"}, ctx)
    other = await memory_manager.get_session(theirs.session_id)
    assert other is not None and other.state["secret"] == "theirs"


async def test_built_in_tools_need_a_session_and_a_manager(memory_manager: SessionManager) -> None:
    with pytest.raises(AgentSessionsError, match="no SessionManager"):
        await session_tools.call("get_user_preferences", {}, ExecutionContext(session_id="A" * 43))
    session = await memory_manager.create_session()
    ctx = await enriched(memory_manager, session.session_id)
    await memory_manager.delete_session(session.session_id)
    with pytest.raises(SessionNotFound):
        await session_tools.call("get_user_preferences", {}, ctx)
    with pytest.raises(SessionNotFound):
        await session_tools.call("set_session_value", {"key": "a", "value": 1}, ctx)
