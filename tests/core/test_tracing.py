"""OpenTelemetry spans: store operations, saves with their retry count, agent runs and tool calls.

Read with the SDK's in-memory exporter. Spans carry the backend and the hashed session id, never
the id itself; without OpenTelemetry installed everything still works.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent

from agent_sessions import Session, SessionManager, SessionStore
from agent_sessions.ids import id_hash
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds
from agent_sessions.tracing import ATTR_BACKEND, ATTR_RETRIES, ATTR_SESSION, ATTR_TOOL, set_tracer_provider

from ..agent.scripted import Script

EXPECTED_BACKEND = {
    "memory": "memory",
    "sqlite": "sqlite",
    "postgres": "postgresql",
    "redis": "redis",
    "redis_cluster": "redis",
}


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The library's spans, in memory, for one test (OpenTelemetry's global provider untouched, so
    no other test pays for recording spans)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    set_tracer_provider(provider)
    try:
        yield exporter
    finally:
        set_tracer_provider(None)
        provider.shutdown()


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [s for s in exporter.get_finished_spans() if s.name == name]


async def test_manager_operations_are_spans_with_the_backend_and_the_hashed_session_id(
    backend: str, manager: SessionManager, spans: InMemorySpanExporter
) -> None:
    session = await manager.create_session("alice")
    await manager.get_session(session.session_id)
    await manager.mutate(session.session_id, lambda s: s.set("k", 1))
    await manager.delete_session(session.session_id)

    for name in ("create_session", "get_session", "mutate", "delete_session"):
        [found] = named(spans, f"agent_sessions.{name}")
        assert found.attributes is not None
        assert found.attributes[ATTR_BACKEND] == EXPECTED_BACKEND[backend]
        if name != "create_session":
            assert found.attributes[ATTR_SESSION] == id_hash(session.session_id)
    for span in spans.get_finished_spans():
        assert session.session_id not in str(span.attributes), f"{span.name} carries the raw session id"


async def test_a_save_span_counts_the_compare_and_set_retries(
    manager: SessionManager, store: SessionStore, spans: InMemorySpanExporter
) -> None:
    session = await manager.create_session()
    # A second manager on the same store does not share the first one's per-session turn-taking,
    # so its save makes the first mutate's compare-and-set lose once.
    other = SessionManager(store, auto_cleanup=False)
    raced = False

    async def bump(s: Session) -> None:
        nonlocal raced
        if not raced:
            raced = True
            await other.mutate(session.session_id, lambda o: o.set("other", True))
        s.set("mine", True)

    saved = await manager.mutate(session.session_id, bump)

    assert saved.get("mine") is True and saved.get("other") is True
    outer, inner = sorted(named(spans, "agent_sessions.mutate"), key=lambda s: s.start_time or 0)
    assert outer.attributes is not None and outer.attributes[ATTR_RETRIES] == 1
    assert inner.attributes is not None and inner.attributes[ATTR_RETRIES] == 0


async def test_update_session_span_reports_no_retries_without_contention(
    manager: SessionManager, spans: InMemorySpanExporter
) -> None:
    session = await manager.create_session()
    session.set("k", "v")
    await manager.update_session(session)

    [found] = named(spans, "agent_sessions.update_session")
    assert found.attributes is not None and found.attributes[ATTR_RETRIES] == 0


async def test_a_failing_operation_records_its_error_on_the_span(
    manager: SessionManager, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(ValueError):
        await manager.get_session("not an issued id")

    [found] = named(spans, "agent_sessions.get_session")
    assert found.status.status_code is trace.StatusCode.ERROR
    assert [e.name for e in found.events] == ["exception"]


async def test_agent_runs_and_tool_calls_are_nested_spans(
    backend: str, manager: SessionManager, spans: InMemorySpanExporter
) -> None:
    session = await manager.create_session("alice")
    script = Script([("set_session_value", {"key": "city", "value": "Oslo"})])
    agent = Agent(script.model(), deps_type=SessionIds, capabilities=[SessionCapability(manager)])

    await agent.run("hi", deps=SessionIds(session.session_id, "alice"))

    [run] = named(spans, "agent_sessions.agent_run")
    [call] = named(spans, "agent_sessions.tool_call")
    assert run.attributes is not None and call.attributes is not None
    assert run.attributes[ATTR_SESSION] == id_hash(session.session_id)
    assert run.attributes[ATTR_BACKEND] == call.attributes[ATTR_BACKEND] == EXPECTED_BACKEND[backend]
    assert call.attributes[ATTR_TOOL] == "set_session_value"
    assert call.parent is not None and run.context is not None
    assert call.parent.span_id == run.context.span_id
    # The tool's save is a manager span inside the tool call (the run's write-back is another).
    assert call.context is not None
    parents = [m.parent.span_id for m in named(spans, "agent_sessions.mutate") if m.parent is not None]
    assert call.context.span_id in parents


async def test_no_span_is_started_until_a_provider_is_installed(manager: SessionManager) -> None:
    assert isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)  # nobody installed one
    session = await manager.create_session()
    inside: list[bool] = []

    await manager.mutate(session.session_id, lambda s: inside.append(trace.get_current_span().is_recording()))

    assert inside == [False]


def test_everything_works_without_opentelemetry_installed() -> None:
    code = textwrap.dedent(
        """
        import asyncio, sys
        sys.modules["opentelemetry"] = None  # as if the optional extra were not installed
        from agent_sessions import MemorySessionStore, SessionManager

        async def main():
            manager = SessionManager(MemorySessionStore(), auto_cleanup=False)
            session = await manager.create_session()
            saved = await manager.mutate(session.session_id, lambda s: s.set("n", 1))
            print(saved.get("n"))

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1"
