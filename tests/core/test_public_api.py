"""The public API: `agent_sessions.__all__` is the core; services live in `agent_sessions.services`."""

from __future__ import annotations

import importlib

import agent_sessions
from agent_sessions import errors, services, tools
from agent_sessions.integrations import pydantic_ai


def test_every_name_in_all_resolves_and_has_a_docstring() -> None:
    for name in agent_sessions.__all__:
        value = getattr(agent_sessions, name)
        if callable(value):
            assert value.__doc__, f"agent_sessions.{name} has no docstring"


def test_all_holds_the_core_and_every_error() -> None:
    core = {
        "Session",
        "ExecutionContext",
        "current_context",
        "SessionIds",
        "SessionStore",
        "MemorySessionStore",
        "DatabaseSessionStore",
        "RedisSessionStore",
        "create_store",
        "SessionManager",
        "SessionContextProvider",
        "tool",
        "Tool",
        "ToolRegistry",
        "session_tools",
        "ToolError",
        "NoSessionManager",
    }
    assert core <= set(agent_sessions.__all__)
    assert set(errors.__all__) <= set(agent_sessions.__all__)


def test_the_container_and_services_live_in_services_and_stay_importable_from_the_top() -> None:
    for name in ("ContextAwareService", "SmartDependencyContainer", "SessionServiceConfigurator", "service"):
        assert name not in agent_sessions.__all__
        assert getattr(agent_sessions, name) is getattr(services, name)
    for module in ("container", "service", "configurator"):
        assert importlib.import_module(f"agent_sessions.services.{module}").__all__


def test_session_ids_and_tool_types_are_one_object_wherever_a_user_looks() -> None:
    assert pydantic_ai.SessionIds is agent_sessions.SessionIds
    assert tools.ToolError is agent_sessions.ToolError is errors.ToolError
    assert issubclass(errors.ToolArgumentsError, errors.ToolError)
    assert tools.Tool is agent_sessions.Tool
