"""`run_turn`: one agent turn for a session, with its conversation loaded, saved, and merged on conflict."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.conversation_store import ConversationStore, InMemoryConversationStore
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

from agent_sessions import SessionManager, SessionNotFound
from agent_sessions.integrations.pydantic_ai import (
    DatabaseConversationStore,
    SessionCapability,
    SessionIds,
    conversation_id_for,
    run_turn,
)


@pytest.fixture(params=["memory", "sqlite"])
async def conversations(request: pytest.FixtureRequest, tmp_path: Any) -> AsyncIterator[ConversationStore]:
    if request.param == "memory":
        yield InMemoryConversationStore()
        return
    store = DatabaseConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'turns.db'}")
    try:
        yield store
    finally:
        await store.close()


def prompts_seen(messages: list[ModelMessage]) -> list[str]:
    return [
        str(part.content)
        for message in messages
        if isinstance(message, ModelRequest)
        for part in message.parts
        if isinstance(part, UserPromptPart)
    ]


async def test_turns_continue_the_sessions_conversation(
    memory_manager: SessionManager, conversations: ConversationStore
) -> None:
    session = await memory_manager.create_session("wendy")
    seen: list[list[str]] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        seen.append(prompts_seen(messages))
        return ModelResponse(parts=[TextPart(f"turn {len(seen)}")])

    agent: Agent[Any, str] = Agent(FunctionModel(model))
    first = await run_turn(agent, memory_manager, session.session_id, "hello", conversation_store=conversations)
    second = await run_turn(agent, memory_manager, session.session_id, "again", conversation_store=conversations)

    assert (first.output, second.output) == ("turn 1", "turn 2")
    assert seen == [["hello"], ["hello", "again"]]
    cid = conversation_id_for(session.session_id)
    assert session.session_id not in cid
    stored = await conversations.load(cid, scope="wendy")
    assert stored is not None and prompts_seen(stored.messages) == ["hello", "again"]
    assert [r.conversation_id for r in await conversations.list_conversations(scope="wendy")] == [cid]
    history = await memory_manager.get_history(session.session_id)
    assert [e["data"]["tool_name"] for e in history.entries] == [None, None]


async def test_concurrent_turns_of_one_conversation_are_both_kept_and_tools_run_once(
    memory_manager: SessionManager, conversations: ConversationStore
) -> None:
    session = await memory_manager.create_session("xavier")
    arrived = 0
    both_running = asyncio.Event()
    tool_runs: list[str] = []

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal arrived
        prompt = prompts_seen(messages)[-1]
        if isinstance(messages[-1], ModelRequest) and any(isinstance(p, UserPromptPart) for p in messages[-1].parts):
            arrived += 1
            if arrived == 2:
                both_running.set()
            await both_running.wait()  # both turns loaded the same revision before either saves
            return ModelResponse(parts=[ToolCallPart("set_session_value", {"key": prompt, "value": True})])
        tool_runs.append(prompt)
        return ModelResponse(parts=[TextPart(f"done {prompt}")])

    agent: Agent[Any, str] = Agent(FunctionModel(model))
    results = await asyncio.gather(
        run_turn(agent, memory_manager, session.session_id, "left", conversation_store=conversations),
        run_turn(agent, memory_manager, session.session_id, "right", conversation_store=conversations),
    )

    assert sorted(r.output for r in results) == ["done left", "done right"]
    assert sorted(tool_runs) == ["left", "right"]
    stored = await conversations.load(conversation_id_for(session.session_id))
    assert stored is not None
    assert sorted(prompts_seen(stored.messages)) == ["left", "right"]
    assert len(stored.messages) == 8  # two turns of prompt, tool call, tool return, answer
    assert stored.usage.requests == 4
    saved = await memory_manager.get_session(session.session_id)
    assert saved is not None and saved.state == {"left": True, "right": True}


async def test_a_turn_without_a_conversation_store_still_runs_with_the_session(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session("yara", preferences={"tone": "dry"})
    instructions: list[str | None] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        instructions.append(info.instructions)
        return ModelResponse(parts=[TextPart("ok")])

    result = await run_turn(Agent(FunctionModel(model)), memory_manager, session.session_id, "hi")
    assert result.output == "ok"
    assert instructions[0] is not None and '{"tone": "dry"}' in instructions[0]


async def test_a_turn_for_a_missing_session_raises_session_not_found(memory_manager: SessionManager) -> None:
    gone = await memory_manager.create_session()
    await memory_manager.delete_session(gone.session_id)
    with pytest.raises(SessionNotFound):
        await run_turn(
            Agent(FunctionModel(lambda m, i: ModelResponse(parts=[TextPart("x")]))),
            memory_manager,
            gone.session_id,
            "hi",
        )
    with pytest.raises(ValueError, match="max_save_attempts"):
        await run_turn(Agent("test"), memory_manager, gone.session_id, "hi", max_save_attempts=0)


async def test_the_turns_capability_replaces_an_agent_level_one_instead_of_doubling_it(
    memory_manager: SessionManager,
) -> None:
    session = await memory_manager.create_session("zed")
    agent: Agent[SessionIds, str] = Agent(
        TestModel(call_tools=["set_session_value"]),
        deps_type=SessionIds,
        capabilities=[SessionCapability(memory_manager)],
    )
    await run_turn(agent, memory_manager, session.session_id, "hi")
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None
    # One tool call entry and one run entry: a single capability ran.
    assert [e["data"]["tool_name"] for e in stored.history] == ["set_session_value", None]
