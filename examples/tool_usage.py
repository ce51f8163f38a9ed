"""Session integration with tool execution: tools that read and write the user's session.

The first two tools find the `SessionManager` by name, in the context property
``session_manager`` that `SessionContextProvider.enrich_context` sets (code written that way keeps
working). The third, `remember_city`, uses the typed accessors instead: ``await ctx.update(fn)``
saves through `SessionManager.mutate`. The script calls the tools through a `ToolRegistry` (with
argument validation), then lets a pydantic-ai agent call them (offline, scripted model), and
shows that a refused call goes back to the model as a typed `ToolError`.

    python examples/tool_usage.py                      # in memory
    python examples/tool_usage.py sqlite+aiosqlite:///example.db
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any, Dict  # noqa: UP035 - kept as such code is often written

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_sessions import (
    ExecutionContext,
    Session,
    SessionContextProvider,
    SessionManager,
    ToolError,
    ToolRegistry,
    create_store,
    tool,
)
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds


# --------------------------------------------------------------------------- tools that look the manager up
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


# --------------------------------------------------------------------------- a tool with typed access
@tool
async def remember_city(ctx: ExecutionContext, city: str) -> dict[str, Any]:
    """Remember the user's city (``user:`` keys follow the user to every session)."""

    def apply(session: Session) -> None:
        session.set("user:city", city)

    saved = await ctx.update(apply)  # SessionManager.mutate on the context's session
    return {"status": "success", "city": saved.get("user:city")}


# --------------------------------------------------------------------------- running it
registry = ToolRegistry([get_user_preferences, update_user_preferences, remember_city])


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Stands in for an LLM: update a preference, read them back, then answer."""
    done = [p.tool_name for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
    if not done:
        return ModelResponse(parts=[ToolCallPart("update_user_preferences", {"preferences": {"units": "metric"}})])
    if done == ["update_user_preferences"]:
        return ModelResponse(parts=[ToolCallPart("get_user_preferences", {})])
    return ModelResponse(parts=[TextPart("Saved: you prefer metric units.")])


async def main(store_url: str = "memory://") -> dict[str, Any]:
    async with SessionManager(create_store(store_url), auto_cleanup=False) as manager:
        session = await manager.create_session("example-user", preferences={"language": "en"})

        # 1. Through the registry: arguments are validated against each tool's signature.
        ctx = await SessionContextProvider(manager).enrich_context(ExecutionContext(session_id=session.session_id))
        print(await registry.call("update_user_preferences", {"preferences": {"theme": "dark"}}, ctx))
        print(await registry.call("get_user_preferences", {}, ctx))
        print(registry.openai_tools()[1]["function"]["parameters"])
        print(await registry.call("remember_city", {"city": "Oslo"}, ctx))

        # A refused call is a typed error the model can read; nothing is written.
        anonymous = await manager.create_session()
        anonymous_ctx = await SessionContextProvider(manager).enrich_context(
            ExecutionContext(session_id=anonymous.session_id)
        )
        try:
            await registry.call("remember_city", {"city": "Rome"}, anonymous_ctx)
        except ToolError as error:
            print(error.to_result()["error"])

        # 2. Through a pydantic-ai agent: the same tools, offered by the session capability.
        agent = Agent(
            FunctionModel(scripted_model),
            deps_type=SessionIds,
            capabilities=[SessionCapability(manager, tools=registry)],
        )
        result = await agent.run("Use metric units, please.", deps=SessionIds(session.session_id, "example-user"))
        print(result.output)

        stored = await manager.get_session(session.session_id)
        assert stored is not None
        print("stored preferences:", stored.preferences)
        return stored.preferences


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:2]))
