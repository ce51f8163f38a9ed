"""The original document's usage example 2 (tools reading `ctx.get_property("session_manager")`) runs."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Dict  # noqa: UP035 - the original example's spelling

from pydantic_ai import Agent

from agent_sessions import ExecutionContext, SessionContextProvider, SessionManager, ToolRegistry, tool
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds

from .scripted import Script

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "tool_usage.py"


# The original example, verbatim apart from its import line.
@tool(name="get_user_preferences")
async def get_user_preferences(ctx: ExecutionContext):
    """Get user preferences from session."""
    if not ctx.session_id:
        return {"preferences": {}}

    # Get session manager
    session_manager = ctx.get_property("session_manager")

    if not session_manager:
        return {"error": "Session manager not available"}

    # Get session
    session = await session_manager.get_session(ctx.session_id)

    if not session:
        return {"preferences": {}}

    return {"preferences": session.preferences}


@tool(name="update_user_preferences")
async def update_user_preferences(ctx: ExecutionContext, preferences: Dict[str, Any]):  # noqa: UP006
    """Update user preferences in session."""
    if not ctx.session_id:
        return {"error": "No session"}

    # Get session manager
    session_manager = ctx.get_property("session_manager")

    if not session_manager:
        return {"error": "Session manager not available"}

    # Get session
    session = await session_manager.get_session(ctx.session_id)

    if not session:
        return {"error": "Session not found"}

    # Update preferences
    session.preferences.update(preferences)

    # Update session
    await session_manager.update_session(session)

    return {"status": "success", "preferences": session.preferences}


async def test_seed_example_tools_run_through_a_registry_on_an_enriched_context(manager: SessionManager) -> None:
    session = await manager.create_session("ursula", preferences={"language": "en"})
    ctx = await SessionContextProvider(manager).enrich_context(ExecutionContext(session_id=session.session_id))
    registry = ToolRegistry([get_user_preferences, update_user_preferences])

    assert await registry.call("get_user_preferences", {}, ctx) == {"preferences": {"language": "en"}}
    assert await registry.call("update_user_preferences", {"preferences": {"units": "metric"}}, ctx) == {
        "status": "success",
        "preferences": {"language": "en", "units": "metric"},
    }
    stored = await manager.get_session(session.session_id)
    assert stored is not None and stored.preferences == {"language": "en", "units": "metric"}


async def test_seed_example_tools_report_a_missing_session_or_manager_as_the_original_does() -> None:
    assert await get_user_preferences(ExecutionContext()) == {"preferences": {}}
    assert await update_user_preferences(ExecutionContext(), {"a": 1}) == {"error": "No session"}
    assert await get_user_preferences(ExecutionContext(session_id="x" * 43)) == {
        "error": "Session manager not available"
    }


async def test_seed_example_tools_run_in_a_pydantic_ai_agent(manager: SessionManager) -> None:
    session = await manager.create_session("victor")
    registry = ToolRegistry([get_user_preferences, update_user_preferences])
    script = Script(
        [("update_user_preferences", {"preferences": {"theme": "dark"}})],
        [("get_user_preferences", {})],
    )
    agent = Agent(script.model(), deps_type=SessionIds, capabilities=[SessionCapability(manager, tools=registry)])
    await agent.run("dark mode please", deps=SessionIds(session.session_id, "victor"))
    assert script.returned("get_user_preferences") == [{"preferences": {"theme": "dark"}}]
    # The manager is available to the tools but never written into the session.
    stored = await manager.get_session(session.session_id)
    assert stored is not None and stored.preferences == {"theme": "dark"}
    assert "session_manager" not in stored.state


async def test_examples_tool_usage_script_runs_offline() -> None:
    spec = importlib.util.spec_from_file_location("tool_usage_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    preferences = await module.main("memory://")
    assert preferences == {"language": "en", "theme": "dark", "units": "metric"}
