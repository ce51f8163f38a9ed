"""ExecutionContext: properties, child contexts, timing and current_context()."""

from __future__ import annotations

import asyncio

from agent_sessions import ExecutionContext, current_context


def test_property_helpers() -> None:
    ctx = ExecutionContext(session_id="s", user_id="u")
    ctx.add_property("a", 1)
    assert ctx.get_property("a") == 1 and ctx.has_property("a")
    assert ctx.get_property("b", "d") == "d" and not ctx.has_property("b")


def test_child_shares_properties_but_has_its_own_identity() -> None:
    parent = ExecutionContext(session_id="s", user_id="u")
    child = parent.child(tool_name="search", extra=True)
    assert child.parent_id == parent.context_id and child.context_id != parent.context_id
    assert child.session_id == "s" and child.user_id == "u" and child.tool_name == "search"
    child.add_property("session:x", 1)
    child.ai_metadata["m"] = 1
    assert parent.get_property("session:x") == 1 and parent.get_property("extra") is True
    assert parent.ai_metadata == {"m": 1}


def test_duration_runs_until_finished() -> None:
    ctx = ExecutionContext(start_time=100.0)
    ctx.end_time = 102.5
    assert ctx.duration() == 2.5
    ctx.finish()  # the first end time wins
    assert ctx.end_time == 102.5 and ctx.finished
    running = ExecutionContext()
    assert running.duration() >= 0.0 and not running.finished


async def test_current_context_is_per_task_and_restored() -> None:
    assert current_context() is None
    outer = ExecutionContext()
    with outer:
        assert current_context() is outer
        inner = outer.child(tool_name="t")
        with inner:
            assert current_context() is inner

            async def other_task() -> ExecutionContext | None:
                return current_context()

            # a task started inside inherits; setting in it does not leak back
            assert await asyncio.create_task(other_task()) is inner
        assert current_context() is outer and inner.finished
    assert current_context() is None and outer.finished


def test_activate_and_deactivate_tokens() -> None:
    ctx = ExecutionContext()
    token = ctx.activate()
    assert current_context() is ctx
    ExecutionContext.deactivate(token)
    assert current_context() is None
