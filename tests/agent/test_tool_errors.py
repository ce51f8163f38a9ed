"""A model's mistake goes back to the model: refused tool calls never end the run, nothing is written.

Every case runs on every backend: a ``user:`` key on a session without a user (the store refuses
the scope write), a refused prefix (argument validation), and a value that would make the session
larger than the store allows.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from pydantic_ai import Agent

from agent_sessions import (
    ExecutionContext,
    ScopeError,
    SessionContextProvider,
    SessionManager,
    SessionStore,
    SessionTooLarge,
    ToolArgumentsError,
    ToolError,
    session_tools,
)
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds

from .scripted import Script

MakeStore = Callable[..., AbstractAsyncContextManager[SessionStore]]


async def run_refused_then_valid(manager: SessionManager, session_id: str, refused: dict[str, Any]) -> Script:
    """The model calls `set_session_value` with `refused`, then with a valid key; returns the script."""
    script = Script(
        [("set_session_value", refused)],
        [("set_session_value", {"key": "city", "value": "Oslo"})],
    )
    agent = Agent(script.model(), deps_type=SessionIds, capabilities=[SessionCapability(manager)])
    result = await agent.run("remember", deps=SessionIds(session_id))
    assert result.output == "done"
    return script


async def test_a_user_key_on_an_anonymous_session_is_returned_to_the_model_and_the_run_goes_on(
    manager: SessionManager,
) -> None:
    session = await manager.create_session()  # no user: `user:` keys have nowhere to go

    script = await run_refused_then_valid(manager, session.session_id, {"key": "user:city", "value": "Rome"})

    [message] = script.refused("set_session_value")
    assert "user:city" in message and "user_id" in message
    assert script.returned("set_session_value") == [{"status": "success", "key": "city", "value": "Oslo"}]
    stored = await manager.get_session(session.session_id)
    assert stored is not None
    assert stored.get("city") == "Oslo"
    assert "user:city" not in stored.state


async def test_a_refused_prefix_is_returned_to_the_model_and_the_run_goes_on(manager: SessionManager) -> None:
    session = await manager.create_session("alice")

    script = await run_refused_then_valid(manager, session.session_id, {"key": "app:banner", "value": "hi"})

    [message] = script.refused("set_session_value")
    assert "'app:'" in message
    stored = await manager.get_session(session.session_id)
    assert stored is not None
    assert stored.get("city") == "Oslo"
    assert "app:banner" not in stored.state
    other = await manager.create_session("bob")
    assert "app:banner" not in other.state  # nothing reached the app scope either


async def test_a_value_that_would_overflow_the_session_is_returned_to_the_model_and_the_run_goes_on(
    make_store: MakeStore,
) -> None:
    async with make_store(max_session_bytes=4096) as store:
        manager = SessionManager(store, auto_cleanup=False)
        session = await manager.create_session()
        big = "x" * 8000  # within a tool value's 16 KiB, beyond the session's 4 KiB

        script = await run_refused_then_valid(manager, session.session_id, {"key": "notes", "value": big})

        [message] = script.refused("set_session_value")
        assert "4096" in message
        stored = await manager.get_session(session.session_id)
        assert stored is not None
        assert stored.get("city") == "Oslo"
        assert "notes" not in stored.state


async def enriched(manager: SessionManager, session_id: str) -> ExecutionContext:
    return await SessionContextProvider(manager).enrich_context(ExecutionContext(session_id=session_id))


async def test_registry_call_raises_a_typed_tool_error_for_a_scope_refusal_and_writes_nothing(
    manager: SessionManager,
) -> None:
    session = await manager.create_session()
    ctx = await enriched(manager, session.session_id)

    with pytest.raises(ToolError) as caught:
        await session_tools.call("set_session_value", {"key": "user:city", "value": "Rome"}, ctx)

    assert isinstance(caught.value.__cause__, ScopeError)
    assert caught.value.to_result() == {"error": "ScopeError", "message": str(caught.value)}
    stored = await manager.get_session(session.session_id)
    assert stored is not None and stored.state == {}


async def test_registry_call_raises_a_typed_tool_error_for_an_oversized_value_and_writes_nothing(
    make_store: MakeStore,
) -> None:
    async with make_store(max_session_bytes=4096) as store:
        manager = SessionManager(store, auto_cleanup=False)
        session = await manager.create_session()
        ctx = await enriched(manager, session.session_id)

        with pytest.raises(ToolError) as caught:
            await session_tools.call("set_session_value", {"key": "notes", "value": "x" * 8000}, ctx)

        assert isinstance(caught.value.__cause__, SessionTooLarge)
        assert caught.value.to_result()["error"] == "SessionTooLarge"
        stored = await manager.get_session(session.session_id)
        assert stored is not None and stored.state == {}


async def test_registry_call_reports_a_refused_prefix_as_a_tool_error(manager: SessionManager) -> None:
    session = await manager.create_session("alice")
    ctx = await enriched(manager, session.session_id)

    with pytest.raises(ToolError) as caught:
        await session_tools.call("set_session_value", {"key": "context:session_manager", "value": 1}, ctx)

    assert isinstance(caught.value, ToolArgumentsError)
    assert caught.value.to_result()["error"] == "ToolArgumentsError"
    stored = await manager.get_session(session.session_id)
    assert stored is not None and stored.state == {}
