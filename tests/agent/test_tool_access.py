"""Typed session access from a tool: `ctx.manager`, `await ctx.session()`, `await ctx.update(fn)`,
the same through `ToolRegistry.call` and pydantic-ai; own tools next to the built-ins."""

from __future__ import annotations

import pytest
from pydantic_ai import Agent

from agent_sessions import (
    ExecutionContext,
    NoSessionManager,
    Session,
    SessionContextProvider,
    SessionManager,
    SessionNotFound,
    Tool,
    ToolRegistry,
    session_tools,
    tool,
)
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds, session_toolset

from .scripted import Script


@tool
async def count_visit(ctx: ExecutionContext) -> int:
    """Count one more visit of this session."""

    def bump(session: Session) -> None:
        session.set("visits", session.get("visits", 0) + 1)

    saved = await ctx.update(bump)
    return int(saved.get("visits"))


async def test_ctx_manager_is_the_manager_the_provider_bound(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session()
    ctx = await SessionContextProvider(memory_manager).enrich_context(ExecutionContext(session_id=session.session_id))

    assert ctx.manager is memory_manager
    assert ctx.get_property("session_manager") is memory_manager  # the original spelling still works


async def test_ctx_manager_without_one_raises_a_typed_error() -> None:
    ctx = ExecutionContext(session_id="x" * 43)

    with pytest.raises(NoSessionManager, match="enrich_context"):
        _ = ctx.manager
    with pytest.raises(NoSessionManager):
        await ctx.session()


async def test_ctx_session_loads_the_live_session_and_raises_when_it_is_gone(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session(data={"city": "Oslo"})
    ctx = await SessionContextProvider(memory_manager).enrich_context(ExecutionContext(session_id=session.session_id))

    loaded = await ctx.session()
    assert loaded.get("city") == "Oslo"

    await memory_manager.delete_session(session.session_id)
    with pytest.raises(SessionNotFound):
        await ctx.session()


async def test_ctx_update_saves_through_mutate_and_shows_the_result_in_the_context(
    memory_manager: SessionManager,
) -> None:
    session = await memory_manager.create_session("alice")
    ctx = await SessionContextProvider(memory_manager).enrich_context(ExecutionContext(session_id=session.session_id))

    saved = await ctx.update(lambda s: s.preferences.update({"tone": "warm"}))

    assert saved.preferences == {"tone": "warm"}
    assert ctx.get_property("preferences") == {"tone": "warm"}
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None and stored.preferences == {"tone": "warm"}


async def test_a_custom_tool_updates_its_session_through_the_registry(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session()
    ctx = await SessionContextProvider(memory_manager).enrich_context(ExecutionContext(session_id=session.session_id))
    registry = ToolRegistry([count_visit])

    assert await registry.call("count_visit", {}, ctx) == 1
    assert await registry.call("count_visit", "{}", ctx) == 2
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None and stored.get("visits") == 2


async def test_a_custom_tool_updates_its_session_under_pydantic_ai_next_to_the_built_ins(
    memory_manager: SessionManager,
) -> None:
    session = await memory_manager.create_session()
    script = Script([("count_visit", {})], [("count_visit", {}), ("get_session_value", {"key": "visits"})])
    agent = Agent(
        script.model(), deps_type=SessionIds, capabilities=[SessionCapability(memory_manager, tools=[count_visit])]
    )

    await agent.run("hi", deps=SessionIds(session.session_id))

    assert script.offered[0] == [*session_tools.names(), "count_visit"]
    assert script.returned("count_visit") == [1, 2]
    assert script.retries == []
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None and stored.get("visits") == 2


def test_a_bare_registry_tool_decorator_registers_like_tool() -> None:
    registry = ToolRegistry()

    @registry.tool
    def greet(ctx: ExecutionContext, name: str) -> str:
        """Greet someone by name."""
        return f"hello {name}"

    assert isinstance(greet, Tool)
    assert registry.get("greet") is greet
    assert greet.description == "Greet someone by name."
    assert greet(ExecutionContext(), "ada") == "hello ada"


async def test_a_copy_of_the_built_ins_passed_as_tools_does_not_clash_with_them(
    memory_manager: SessionManager,
) -> None:
    registry = session_tools.copy()
    registry.register(count_visit)

    capability = SessionCapability(memory_manager, tools=registry)

    assert capability.tools.names() == [*session_tools.names(), "count_visit"]


async def test_an_own_tool_named_like_a_built_in_replaces_it(memory_manager: SessionManager) -> None:
    @tool(name="get_user_preferences")
    def mine(ctx: ExecutionContext) -> str:
        return "my own"

    capability = SessionCapability(memory_manager, tools=[mine])

    assert capability.tools.names() == session_tools.names()
    assert capability.tools.get("get_user_preferences") is mine


async def test_two_own_tools_with_one_name_are_refused(memory_manager: SessionManager) -> None:
    @tool(name="lookup")
    def first(ctx: ExecutionContext) -> str:
        return "first"

    @tool(name="lookup")
    def second(ctx: ExecutionContext) -> str:
        return "second"

    with pytest.raises(ValueError, match="two of the given tools"):
        SessionCapability(memory_manager, tools=[first, second])


async def test_a_custom_tool_reaches_its_session_through_the_toolset_alone(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session()
    script = Script([("count_visit", {})], [("count_visit", {})])
    toolset = session_toolset(memory_manager, registry=ToolRegistry([count_visit]))
    agent: Agent[SessionIds, str] = Agent(script.model(), deps_type=SessionIds, toolsets=[toolset])

    await agent.run("hi", deps=SessionIds(session.session_id))

    assert script.returned("count_visit") == [1, 2]
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None and stored.get("visits") == 2
