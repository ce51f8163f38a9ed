"""`SessionDeps` and `session_toolset`: the session tools as a pydantic-ai `FunctionToolset`.

A run's deps carry ids only (`SessionDeps`); the `SessionManager` lives on the toolset. Each tool
runs in the `ExecutionContext` the `SessionCapability` made current for the call, or, when the
toolset is used on its own, in a fresh context for the session named by the deps. Either way the
context's session is the deps' session: the model never chooses a session id.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any, Protocol, runtime_checkable

from pydantic_ai import FunctionToolset, ModelRetry, RunContext, Tool

from ...context import ExecutionContext, SessionIds, current_context
from ...errors import ToolError
from ...ids import validate_session_id
from ...manager import SessionManager
from ...provider import SESSION_MANAGER_PROPERTY
from ...tools import Tool as SessionTool
from ...tools import ToolRegistry, session_tools

__all__ = ["SessionDeps", "SessionIds", "session_toolset"]


@runtime_checkable
class SessionDeps(Protocol):
    """What a run's deps must provide: the session's id and the user's (ids only, no manager)."""

    @property
    def session_id(self) -> str: ...

    @property
    def user_id(self) -> str | None: ...


def context_for_call(ctx: RunContext[SessionDeps], manager: SessionManager, tool_name: str) -> ExecutionContext:
    """The context a tool call runs in: the current one if it belongs to the deps' session and
    this manager, else a fresh one for the deps' session."""
    deps = ctx.deps
    session_id = validate_session_id(deps.session_id)
    current = current_context()
    if (
        current is not None
        and current.session_id == session_id
        and current.get_property(SESSION_MANAGER_PROPERTY) is manager
    ):
        return current
    fresh = ExecutionContext(session_id=session_id, user_id=deps.user_id, tool_name=tool_name)
    fresh.add_property(SESSION_MANAGER_PROPERTY, manager)
    return fresh


def _pydantic_ai_tool(
    registry: ToolRegistry, spec: SessionTool[Any, Any], manager: SessionManager
) -> Tool[SessionDeps]:
    name = spec.name

    async def run(ctx: RunContext[SessionDeps], **args: Any) -> Any:
        context = context_for_call(ctx, manager, name)
        owned = context is not current_context()
        try:
            return await registry.call(name, args, context)
        except ToolError as exc:
            # Bad arguments and refused writes are the model's to fix: tell it what was wrong
            # and let it retry (nothing was written); the run goes on.
            raise ModelRetry(str(exc)) from exc
        finally:
            if owned:
                context.finish()

    function: Callable[..., Coroutine[Any, Any, Any]] = run
    return Tool[SessionDeps].from_schema(
        function, name=name, description=spec.description, json_schema=spec.parameters_schema(), takes_ctx=True
    )


def session_toolset(
    manager: SessionManager,
    *,
    registry: ToolRegistry | None = None,
    id: str | None = "agent_sessions_tools",
) -> FunctionToolset[SessionDeps]:
    """The tools of `registry` (default: the built-in `session_tools`) as a `FunctionToolset`.

    Arguments are validated by the registry; invalid ones, and calls the session refuses (a
    ``user:`` key without a user, a value that would make the session too large), go back to the
    model as a retry prompt (`ModelRetry`) and nothing is written.
    Pass your own `ToolRegistry` (e.g. ``session_tools.copy()`` plus your `@tool` functions) to
    expose your tools the same way.
    """
    source = session_tools if registry is None else registry
    return FunctionToolset([_pydantic_ai_tool(source, spec, manager) for spec in source], id=id)
