"""The Google ADK session service on every backend, against the installed google-adk.

The behaviours ADK's own session-service tests check (ids scoped by user, the three state
scopes, temp state, bytes in events, recent-events config, ordering, user state) plus ours:
concurrent appends from tasks and processes all land, and a `Runner` with a scripted offline
model runs a multi-turn conversation.

Run as a script (``python -m tests.integrations.test_adk SPEC SESSION WORKER N BARRIER_DIR``) it is the
worker of the two-process test: it appends N events to one ADK session of the store in SPEC.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from google.adk.agents.llm_agent import LlmAgent
from google.adk.errors.already_exists_error import AlreadyExistsError
from google.adk.errors.session_not_found_error import SessionNotFoundError
from google.adk.events.event import Event
from google.adk.events.event_actions import EventActions
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from agent_sessions import AgentSessionsError, SerializationError, SessionManager, SessionStore
from agent_sessions.integrations.adk import (
    AdkSessionExists,
    AdkSessionNotFound,
    AgentSessionsService,
    InvalidAdkIdentifier,
    adk_session_id,
    adk_user_id,
    decode_event,
    encode_event,
    entry_event,
    event_entry,
)
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.stores.sql import DatabaseSessionStore

from ..database.stores import postgres_schema
from ..redis.stores import delete_prefix, unique_prefix
from ..support import PG_URL, REDIS_START, REDIS_URL, FakeClock, require_service

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def service(manager: SessionManager) -> AgentSessionsService:
    return AgentSessionsService(manager)


def full_event(**overrides: Any) -> Event:
    """An event with every kind of field ADK's own tests set, bytes included."""
    fields: dict[str, Any] = {
        "invocation_id": "invocation",
        "author": "user",
        "content": types.Content(
            role="user",
            parts=[
                types.Part(text="test_text"),
                types.Part.from_bytes(data=b"\x89PNG\x00\xff", mime_type="image/png"),
            ],
        ),
        "turn_complete": True,
        "partial": False,
        "actions": EventActions(artifact_delta={"file": 0}, transfer_to_agent="agent", escalate=True),
        "long_running_tool_ids": {"tool1"},
        "error_code": "error_code",
        "error_message": "error_message",
        "interrupted": True,
        "grounding_metadata": types.GroundingMetadata(
            web_search_queries=["query1"], search_entry_point=types.SearchEntryPoint(sdk_blob=b"sdk\x00blob")
        ),
        "usage_metadata": types.GenerateContentResponseUsageMetadata(
            prompt_token_count=1, candidates_token_count=1, total_token_count=2
        ),
        "citation_metadata": types.CitationMetadata(),
        "custom_metadata": {"custom_key": "custom_value", "raw": b"\x00\x01", "looks_tagged": {"$b64": "AA=="}},
        "timestamp": 1700000000.123,
        "input_transcription": types.Transcription(text="input transcription", finished=True),
        "output_transcription": types.Transcription(text="output transcription", finished=True),
    }
    fields.update(overrides)
    return Event(**fields)


# ---------------------------------------------------------------------- create / get / delete
async def test_create_then_get_returns_an_equal_session_and_delete_removes_it(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="test_user", state={"key": "value"})
    assert session.id and session.state == {"key": "value"} and session.events == []
    got = await service.get_session(app_name="my_app", user_id="test_user", session_id=session.id)
    assert got == session
    await service.delete_session(app_name="my_app", user_id="test_user", session_id=session.id)
    assert await service.get_session(app_name="my_app", user_id="test_user", session_id=session.id) is None
    # Deleting a missing session is not an error, as in ADK's services.
    await service.delete_session(app_name="my_app", user_id="test_user", session_id=session.id)


async def test_get_of_an_unknown_session_is_none(service: AgentSessionsService) -> None:
    assert await service.get_session(app_name="my_app", user_id="u", session_id="123") is None


async def test_creating_an_existing_id_raises_adk_already_exists(service: AgentSessionsService) -> None:
    await service.create_session(app_name="app", user_id="u", session_id="existing")
    with pytest.raises(AlreadyExistsError) as info:
        await service.create_session(app_name="app", user_id="u", session_id="existing")
    assert isinstance(info.value, AdkSessionExists) and isinstance(info.value, AgentSessionsError)


async def test_concurrent_creates_of_one_id_give_one_session_and_already_exists(service: AgentSessionsService) -> None:
    results = await asyncio.gather(
        *(service.create_session(app_name="app", user_id="u", session_id="race") for _ in range(5)),
        return_exceptions=True,
    )
    assert sum(not isinstance(r, BaseException) for r in results) == 1
    assert all(isinstance(r, AlreadyExistsError) for r in results if isinstance(r, BaseException))


async def test_the_same_id_under_two_users_is_two_sessions(service: AgentSessionsService) -> None:
    s1 = await service.create_session(app_name="app", user_id="u1", session_id="s1")
    await service.append_event(s1, Event(invocation_id="inv1", author="user"))
    await service.create_session(app_name="app", user_id="u2", session_id="s1")
    got = await service.get_session(app_name="app", user_id="u2", session_id="s1")
    assert got is not None and got.user_id == "u2" and got.events == []
    got1 = await service.get_session(app_name="app", user_id="u1", session_id="s1")
    assert got1 is not None and len(got1.events) == 1
    assert await service.get_session(app_name="other", user_id="u1", session_id="s1") is None


@pytest.mark.parametrize(
    "names",
    [
        {"app_name": "", "user_id": "u", "session_id": "s"},
        {"app_name": "a" * 101, "user_id": "u", "session_id": "s"},
        {"app_name": "app", "user_id": "u\n", "session_id": "s"},
        {"app_name": "app", "user_id": "u", "session_id": "s" * 129},
        {"app_name": "app", "user_id": "u", "session_id": "\ud800"},
    ],
)
async def test_bad_adk_names_raise_a_typed_error_before_any_io(names: dict[str, str]) -> None:
    class Unreachable(SessionManager):
        async def get_session(self, session_id: str, create_if_missing: bool = False) -> Any:
            raise AssertionError("reached the store")

    store = RedisSessionStore("redis://127.0.0.1:9/0", prefix="never:")  # a dead port: any I/O would fail
    service = AgentSessionsService(Unreachable(store, auto_cleanup=False))
    with pytest.raises(InvalidAdkIdentifier):
        await service.get_session(**names)
    with pytest.raises(InvalidAdkIdentifier):
        await service.create_session(**names)
    await store.close()


def test_ids_are_deterministic_43_characters_and_scoped_by_app_and_user() -> None:
    sid = adk_session_id("app", "u", "s")
    assert sid == adk_session_id("app", "u", "s") and len(sid) == 43
    assert len({sid, adk_session_id("app", "u2", "s"), adk_session_id("app2", "u", "s")}) == 3
    # Names with separators in them cannot forge another triple's id or user.
    assert adk_session_id("a:b", "c", "d") != adk_session_id("a", "b:c", "d")
    assert adk_user_id("a:b", "c") != adk_user_id("a", "b:c")


def test_without_google_adk_the_import_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "google.adk.errors.already_exists_error", None)
    monkeypatch.delitem(sys.modules, "agent_sessions.integrations.adk")
    with pytest.raises(ImportError, match=r"agent-sessions\[adk\]"):
        importlib.import_module("agent_sessions.integrations.adk")


async def test_an_id_key_makes_our_ids_unguessable_from_the_adk_names(manager: SessionManager) -> None:
    keyed = AgentSessionsService(manager, id_key="a shared secret")
    created = await keyed.create_session(app_name="app", user_id="u", session_id="session1")
    ours = keyed.session_id_for("app", "u", "session1")
    assert ours != adk_session_id("app", "u", "session1") and len(ours) == 43
    assert await manager.get_session(ours) is not None
    assert await AgentSessionsService(manager).get_session(app_name="app", user_id="u", session_id="session1") is None
    again = AgentSessionsService(manager, id_key=b"a shared secret")
    assert await again.get_session(app_name="app", user_id="u", session_id="session1") == created


# ---------------------------------------------------------------------- state scopes
async def test_app_state_is_shared_by_all_users_of_the_app_and_isolated_by_app_name(
    service: AgentSessionsService,
) -> None:
    s1 = await service.create_session(app_name="my_app", user_id="u1", session_id="s1", state={"app:k1": "v1"})
    await service.append_event(
        s1, Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"app:k2": "v2"}))
    )
    s2 = await service.create_session(app_name="my_app", user_id="u2", session_id="s2")
    assert s2.state == {"app:k1": "v1", "app:k2": "v2"}
    got = await service.get_session(app_name="my_app", user_id="u1", session_id="s1")
    assert got is not None and got.state == {"app:k1": "v1", "app:k2": "v2"}
    other = await service.create_session(app_name="other_app", user_id="u1", session_id="s1")
    assert other.state == {}


async def test_user_state_is_shared_only_by_the_users_sessions_in_that_app(service: AgentSessionsService) -> None:
    s1 = await service.create_session(app_name="my_app", user_id="u1", session_id="s1", state={"user:k1": "v1"})
    await service.append_event(
        s1, Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"user:k2": "v2"}))
    )
    s1b = await service.create_session(app_name="my_app", user_id="u1", session_id="s1b")
    assert s1b.state == {"user:k1": "v1", "user:k2": "v2"}
    assert (await service.create_session(app_name="my_app", user_id="u2", session_id="s2")).state == {}
    assert (await service.create_session(app_name="app_b", user_id="u1", session_id="s3")).state == {}
    assert await service.get_user_state(app_name="my_app", user_id="u1") == {"k1": "v1", "k2": "v2"}
    assert await service.get_user_state(app_name="my_app", user_id="u2") == {}
    assert await service.get_user_state(app_name="app_b", user_id="u1") == {}


async def test_session_state_is_not_shared(service: AgentSessionsService) -> None:
    s1 = await service.create_session(app_name="my_app", user_id="u1", session_id="s1", state={"sk1": "v1"})
    await service.append_event(
        s1, Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"sk2": "v2"}))
    )
    got = await service.get_session(app_name="my_app", user_id="u1", session_id="s1")
    assert got is not None and got.state == {"sk1": "v1", "sk2": "v2"}
    assert (await service.create_session(app_name="my_app", user_id="u1", session_id="s1b")).state == {}


async def test_temp_state_reaches_the_in_memory_session_but_is_never_stored(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="u1", state={"temp:init": 1})
    assert session.state == {}
    event = Event(
        invocation_id="inv1", author="agent1", actions=EventActions(state_delta={"temp:k1": "v1", "sk": "v2"})
    )
    await service.append_event(session, event)
    assert session.state == {"temp:k1": "v1", "sk": "v2"}
    assert "temp:k1" not in event.actions.state_delta
    got = await service.get_session(app_name="my_app", user_id="u1", session_id=session.id)
    assert got is not None and got.state == {"sk": "v2"}
    assert got.events[0].actions.state_delta == {"sk": "v2"}


async def test_get_user_state_reflects_the_latest_write(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="u1")
    for value in (1, 2):
        await service.append_event(
            session, Event(author="system", actions=EventActions(state_delta={"user:counter": value, "sk": value}))
        )
    assert await service.get_user_state(app_name="my_app", user_id="u1") == {"counter": 2}


# ---------------------------------------------------------------------- events
async def test_events_with_bytes_and_every_field_round_trip_equal(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="user")
    event = full_event()
    await service.append_event(session, event)
    got = await service.get_session(app_name="my_app", user_id="user", session_id=session.id)
    assert got == session
    assert got is not None and got.events[0] == event
    assert got.events[0].content is not None and got.events[0].content.parts is not None
    assert got.events[0].content.parts[1].inline_data is not None
    assert got.events[0].content.parts[1].inline_data.data == b"\x89PNG\x00\xff"
    assert got.events[0].custom_metadata == {
        "custom_key": "custom_value",
        "raw": b"\x00\x01",
        "looks_tagged": {"$b64": "AA=="},
    }


def test_event_encoding_is_strict_json_and_inverts_exactly() -> None:
    event = full_event()
    encoded = encode_event(event)
    assert decode_event(json.loads(json.dumps(encoded, allow_nan=False))) == event
    entry = event_entry(event)
    assert entry["id"] == event.id and entry["timestamp"] == event.timestamp
    assert entry_event(json.loads(json.dumps(entry))) == event


def test_a_corrupt_stored_event_is_a_serialization_error() -> None:
    with pytest.raises(SerializationError):
        entry_event({"id": "e", "timestamp": 1.0, "event": "{not json"})
    with pytest.raises(SerializationError):
        entry_event({"id": "e", "timestamp": 1.0, "event": json.dumps({"author": {"$b64": "not base64!"}})})
    with pytest.raises(SerializationError):
        entry_event({"id": "e", "timestamp": 1.0, "event": json.dumps({"timestamp": "never"})})


async def test_last_update_time_follows_the_appended_event(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="user")
    stamp = session.last_update_time + 10
    await service.append_event(session, Event(invocation_id="i", author="user", timestamp=stamp))
    assert session.last_update_time == stamp
    got = await service.get_session(app_name="my_app", user_id="user", session_id=session.id)
    assert got is not None and got.last_update_time == stamp


async def test_partial_events_are_not_stored(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="user")
    await service.append_event(session, Event(author="user", partial=True))
    got = await service.get_session(app_name="my_app", user_id="user", session_id=session.id)
    assert session.events == [] and got is not None and got.events == []


async def test_an_equal_re_delivery_of_an_event_is_stored_once(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="user")
    event = Event(id="e1", author="user", actions=EventActions(state_delta={"n": 1}))
    await service.append_event(session, event)
    await service.append_event(session, event.model_copy(deep=True))
    got = await service.get_session(app_name="my_app", user_id="user", session_id=session.id)
    assert got is not None and [e.id for e in got.events] == ["e1"]


async def test_append_to_a_deleted_session_raises_adk_session_not_found(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="user")
    await service.delete_session(app_name="my_app", user_id="user", session_id=session.id)
    with pytest.raises(SessionNotFoundError) as info:
        await service.append_event(session, Event(author="user"))
    assert isinstance(info.value, AdkSessionNotFound)


async def test_a_stale_session_copy_appends_without_error_and_both_deltas_survive(
    service: AgentSessionsService,
) -> None:
    original = await service.create_session(app_name="my_app", user_id="user")
    await service.append_event(
        original, Event(invocation_id="inv1", author="user", actions=EventActions(state_delta={"sk1": "v1"}))
    )
    updated = await service.get_session(app_name="my_app", user_id="user", session_id=original.id)
    assert updated is not None
    await service.append_event(
        updated, Event(invocation_id="inv2", author="user", actions=EventActions(state_delta={"sk2": "v2"}))
    )
    # ADK's DatabaseSessionService raises its stale-session error here (google/adk-python#1733).
    await service.append_event(
        original, Event(invocation_id="inv3", author="user", actions=EventActions(state_delta={"sk3": "v3"}))
    )
    final = await service.get_session(app_name="my_app", user_id="user", session_id=original.id)
    assert final is not None
    assert [e.invocation_id for e in final.events] == ["inv1", "inv2", "inv3"]
    assert final.state == {"sk1": "v1", "sk2": "v2", "sk3": "v3"}


async def test_twenty_concurrent_appends_on_one_session_all_land(service: AgentSessionsService) -> None:
    created = await service.create_session(app_name="my_app", user_id="user", session_id="busy")

    async def one(i: int) -> None:
        copy = await service.get_session(app_name="my_app", user_id="user", session_id="busy")
        assert copy is not None
        delta = {f"k{i}": i, "user:last": i, "app:seen": i}
        await service.append_event(
            copy, Event(invocation_id=f"inv{i}", author="user", actions=EventActions(state_delta=delta))
        )

    await asyncio.gather(*(one(i) for i in range(20)))
    final = await service.get_session(app_name="my_app", user_id="user", session_id=created.id)
    assert final is not None
    assert sorted(e.invocation_id for e in final.events) == sorted(f"inv{i}" for i in range(20))
    assert all(final.state[f"k{i}"] == i for i in range(20))
    assert final.state["user:last"] in range(20) and final.state["app:seen"] in range(20)


# ---------------------------------------------------------------------- GetSessionConfig
async def test_get_session_config_filters_like_adk(service: AgentSessionsService) -> None:
    session = await service.create_session(app_name="my_app", user_id="user")
    for i in range(1, 6):
        await service.append_event(session, Event(author="user", timestamp=i))

    async def stamps(config: GetSessionConfig | None) -> list[float]:
        got = await service.get_session(app_name="my_app", user_id="user", session_id=session.id, config=config)
        assert got is not None
        return [e.timestamp for e in got.events]

    assert await stamps(None) == [1, 2, 3, 4, 5]
    assert await stamps(GetSessionConfig(num_recent_events=0)) == []
    assert await stamps(GetSessionConfig(num_recent_events=3)) == [3, 4, 5]
    assert await stamps(GetSessionConfig(after_timestamp=4.0)) == [4, 5]
    assert await stamps(GetSessionConfig(after_timestamp=50.0)) == []
    assert await stamps(GetSessionConfig(after_timestamp=4.0, num_recent_events=3)) == [4, 5]


class CountingManager(SessionManager):
    """Counts the history pages read beyond the window a load brings."""

    pages = 0

    async def get_history(self, session_id: str, *, limit: int = 50, before: int | None = None) -> Any:
        self.pages += 1
        return await super().get_history(session_id, limit=limit, before=before)


async def test_recent_events_come_from_the_window_and_older_ones_are_paged(
    make_store: Any,
) -> None:
    async with make_store(history_window=10, max_history=200) as store:
        manager = CountingManager(store, auto_cleanup=False)
        service = AgentSessionsService(manager)
        session = await service.create_session(app_name="my_app", user_id="user")
        for i in range(1, 41):
            await service.append_event(session, Event(author="user", timestamp=i))
        got = await service.get_session(
            app_name="my_app", user_id="user", session_id=session.id, config=GetSessionConfig(num_recent_events=5)
        )
        assert got is not None and [e.timestamp for e in got.events] == [36, 37, 38, 39, 40]
        assert manager.pages == 0
        got = await service.get_session(
            app_name="my_app", user_id="user", session_id=session.id, config=GetSessionConfig(num_recent_events=25)
        )
        assert got is not None and [e.timestamp for e in got.events] == list(range(16, 41))
        got = await service.get_session(
            app_name="my_app", user_id="user", session_id=session.id, config=GetSessionConfig(after_timestamp=3)
        )
        assert got is not None and [e.timestamp for e in got.events] == list(range(3, 41))
        got = await service.get_session(app_name="my_app", user_id="user", session_id=session.id)
        assert got is not None and [e.timestamp for e in got.events] == list(range(1, 41))
        assert manager.pages >= 3


# ---------------------------------------------------------------------- list
async def test_list_sessions_of_a_user_and_of_all_users_with_merged_state_oldest_update_first(
    service: AgentSessionsService,
) -> None:
    for user, sid, stamp in [("user1", "a", 30.0), ("user1", "b", 10.0), ("user2", "c", 20.0)]:
        created = await service.create_session(
            app_name="my_app", user_id=user, session_id=sid, state={"key": f"value{sid}", "user:who": user}
        )
        await service.append_event(created, Event(author="user", timestamp=stamp))
    await service.create_session(app_name="other_app", user_id="user1", session_id="z")

    listed = (await service.list_sessions(app_name="my_app", user_id="user1")).sessions
    assert [s.id for s in listed] == ["b", "a"]
    assert all(s.events == [] for s in listed)
    assert {s.id: s.state for s in listed} == {
        "a": {"key": "valuea", "user:who": "user1"},
        "b": {"key": "valueb", "user:who": "user1"},
    }
    everyone = (await service.list_sessions(app_name="my_app")).sessions
    assert [(s.user_id, s.id) for s in everyone] == [("user1", "b"), ("user2", "c"), ("user1", "a")]
    assert (await service.list_sessions(app_name="my_app", user_id="nobody")).sessions == []


# ---------------------------------------------------------------------- a Runner, offline
class ScriptedLlm(BaseLlm):
    """A model that answers from a script: a tool call on a turn's first request, then text."""

    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        last = llm_request.contents[-1]
        parts = last.parts or []
        if any(p.function_response is not None for p in parts):
            count = next(p.function_response.response for p in parts if p.function_response is not None)
            text = f"noted, {count}"
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=text)]))
            return
        said = "".join(p.text or "" for p in parts)
        call = types.FunctionCall(name="remember", args={"fact": said})
        yield LlmResponse(content=types.Content(role="model", parts=[types.Part(function_call=call)]))


def remember(fact: str, tool_context: ToolContext) -> dict[str, Any]:
    """Remember a fact for this user."""
    facts = [*tool_context.state.get("user:facts", []), fact]
    tool_context.state["user:facts"] = facts
    tool_context.state["turns"] = tool_context.state.get("turns", 0) + 1
    return {"count": len(facts)}


async def test_a_runner_with_a_scripted_model_keeps_a_multi_turn_conversation(service: AgentSessionsService) -> None:
    agent = LlmAgent(name="helper", model=ScriptedLlm(), instruction="Remember facts.", tools=[remember])
    runner = Runner(app_name="facts_app", agent=agent, session_service=service)
    session = await service.create_session(app_name="facts_app", user_id="ada")
    replies = []
    for said in ("I like tea", "I live in Paris", "I have a cat"):
        message = types.Content(role="user", parts=[types.Part(text=said)])
        async for event in runner.run_async(user_id="ada", session_id=session.id, new_message=message):
            if event.content and event.content.parts and event.content.parts[0].text and event.author == "helper":
                replies.append(event.content.parts[0].text)
    assert replies == ["noted, {'count': 1}", "noted, {'count': 2}", "noted, {'count': 3}"]
    stored = await service.get_session(app_name="facts_app", user_id="ada", session_id=session.id)
    assert stored is not None
    assert stored.state == {"user:facts": ["I like tea", "I live in Paris", "I have a cat"], "turns": 3}
    # Per turn: the user message, the tool call, the tool response, the reply.
    assert len(stored.events) == 12
    assert [e.author for e in stored.events[:4]] == ["user", "helper", "helper", "helper"]
    # A second session of the same user starts with the user's facts.
    again = await service.create_session(app_name="facts_app", user_id="ada")
    assert again.state == {"user:facts": ["I like tea", "I live in Paris", "I have a cat"]}


# ---------------------------------------------------------------------- two processes
@asynccontextmanager
async def shared_store_spec(kind: str, tmp_path: Path) -> AsyncIterator[dict[str, str]]:
    """A store two processes can open: a SQLite file, a PostgreSQL schema or a Redis prefix."""
    if kind == "sqlite":
        yield {"kind": "sqlite", "url": f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"}
    elif kind == "postgres":
        async with postgres_schema() as schema:
            yield {"kind": "postgres", "url": PG_URL, "schema": schema}
    else:
        require_service("Redis", "127.0.0.1", 6379, REDIS_START)
        spec = {"kind": "redis", "url": REDIS_URL, "prefix": unique_prefix()}
        try:
            yield spec
        finally:
            store = open_store(spec)
            try:
                assert isinstance(store, RedisSessionStore)
                await delete_prefix(store)
            finally:
                await store.close()


def open_store(spec: dict[str, str], clock: FakeClock | None = None) -> SessionStore:
    options: dict[str, Any] = {} if clock is None else {"clock": clock}
    if spec["kind"] == "redis":
        return RedisSessionStore(spec["url"], prefix=spec["prefix"], **options)
    return DatabaseSessionStore(spec["url"], schema=spec.get("schema"), **options)


async def wait_for(path: Path) -> None:
    """Poll for a file (the start barrier between the test and its worker processes)."""
    for _ in range(6000):
        if path.exists():
            return
        await asyncio.sleep(0.01)
    raise TimeoutError(f"{path.name} never appeared")


async def worker(spec: dict[str, str], session_id: str, name: str, count: int, barrier: Path) -> None:
    async with SessionManager(open_store(spec), auto_cleanup=False, absolute_lifetime=None) as manager:
        service = AgentSessionsService(manager)
        # Both workers start appending together (each has imported ADK and opened the store).
        (barrier / f"ready-{name}").touch()
        await wait_for(barrier / "go")
        for i in range(count):
            session = await service.get_session(app_name="app", user_id="user", session_id=session_id)
            assert session is not None
            delta = {f"{name}-{i}": i, "user:last_writer": name}
            await service.append_event(
                session, Event(invocation_id=f"{name}-{i}", author="user", actions=EventActions(state_delta=delta))
            )


@pytest.mark.parametrize("kind", ["sqlite", "postgres", "redis"])
async def test_two_processes_appending_to_one_session_both_land(kind: str, tmp_path: Path) -> None:
    count = 25
    async with (
        shared_store_spec(kind, tmp_path) as spec,
        SessionManager(open_store(spec), auto_cleanup=False, absolute_lifetime=None) as manager,
    ):
        service = AgentSessionsService(manager)
        await service.create_session(app_name="app", user_id="user", session_id="shared")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.integrations.test_adk",
                json.dumps(spec),
                "shared",
                name,
                str(count),
                str(tmp_path),
                cwd=str(ROOT),
                env=env,
                stderr=asyncio.subprocess.PIPE,
            )
            for name in ("p1", "p2")
        ]
        for name in ("p1", "p2"):
            await wait_for(tmp_path / f"ready-{name}")
        (tmp_path / "go").touch()
        results = [await asyncio.wait_for(p.communicate(), 120) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err.decode()[-2000:] for _, err in results]
        final = await service.get_session(app_name="app", user_id="user", session_id="shared")
        assert final is not None
        expected = {f"{name}-{i}" for name in ("p1", "p2") for i in range(count)}
        assert {e.invocation_id for e in final.events} == expected and len(final.events) == 2 * count
        assert all(final.state[key] == int(key.split("-")[1]) for key in expected)


# ---------------------------------------------------------------------- the peer benchmark
async def test_the_adk_peer_benchmark_measures_every_workload_and_reports_a_peer_failure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from benchmarks import peers_adk

    monkeypatch.setattr(peers_adk, "LIST_SESSIONS", 30)
    monkeypatch.setattr(peers_adk, "LONG_SESSION", 60)
    args = peers_adk.parse(["--runs", "1", "--sessions", "4", "--turns", "3", "--reads", "10", "--no-write"])

    @asynccontextmanager
    async def failing_peer() -> AsyncIterator[Any]:
        # Like ADK's SQLite service: fine one at a time, "database is locked" under concurrency.
        async with peers_adk.adk_memory() as service:
            real = service.append_event
            running = 0

            async def append_event(session: Any, event: Event) -> Event:
                nonlocal running
                running += 1
                try:
                    await asyncio.sleep(0)
                    if running > 1:
                        raise RuntimeError("database is locked")
                    return await real(session, event)
                finally:
                    running -= 1

            service.append_event = append_event
            yield service

    memory = next(p for p in peers_adk.PAIRS if p.name == "memory")
    pair = peers_adk.Pair("memory", memory.peer_label, memory.available, memory.ours, failing_peer)
    figures = await peers_adk.measure(pair, args)
    body = peers_adk.table({"memory": figures}, [pair], 1)
    rows = [line for line in body.splitlines() if line.startswith("| memory |")]
    assert len(rows) == 6
    failed = [row for row in rows if "failed: RuntimeError (database is locked)" in row]
    assert len(failed) == 1 and "W1 c50" in failed[0]


if __name__ == "__main__":
    spec_arg, session_arg, name_arg, count_arg, barrier_arg = sys.argv[1:6]
    asyncio.run(worker(json.loads(spec_arg), session_arg, name_arg, int(count_arg), Path(barrier_arg)))
