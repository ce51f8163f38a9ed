"""`AgentsSession`: the OpenAI Agents SDK `Session` protocol over our sessions, on every backend.

Runs go through the real `agents.Runner` with a scripted offline model (`ScriptedModel`), with
tracing disabled, so nothing needs a key or the network.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from agents import Runner, set_tracing_disabled
from agents.memory.session import Session as SdkSession

from agent_sessions import InvalidSessionId, SerializationError, SessionManager, SessionNotFound, SessionStore
from agent_sessions.integrations.openai_agents import (
    CLEAR_TYPE,
    ITEM_TYPE,
    POP_TYPE,
    AgentsSession,
    InvalidSessionSettings,
    drop_orphan_outputs,
)
from agent_sessions.stores.sql import DatabaseSessionStore

from ..support import REDIS_URL, FakeClock
from .openai_agents_scripted import ScriptedModel, open_store, weather_agent

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _no_tracing() -> Iterator[None]:
    set_tracing_disabled(True)
    yield


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def call(call_id: str) -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": "get_weather", "arguments": "{}"}


def output(call_id: str) -> dict[str, Any]:
    return {"type": "function_call_output", "call_id": call_id, "output": "sunny"}


def contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


# ---------------------------------------------------------------- the protocol through Runner.run
async def test_agents_session_satisfies_the_sdk_session_protocol(manager: SessionManager) -> None:
    session = await AgentsSession.create(manager)
    assert isinstance(session, SdkSession)
    assert session.session_settings is not None and session.session_settings.limit is None


async def test_runner_run_persists_the_conversation_with_its_tool_call_on_every_backend(
    manager: SessionManager,
) -> None:
    session = await AgentsSession.create(manager, user_id="traveller")
    first = ScriptedModel([("get_weather", {"city": "Paris"})], final="It is sunny in Paris.", name="a")
    result = await Runner.run(weather_agent(first), "Weather in Paris?", session=session)
    assert result.final_output == "It is sunny in Paris."

    items = await AgentsSession(manager, session.session_id).get_items()
    assert [item.get("type", "message") for item in items] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]
    assert items[0] == {"role": "user", "content": "Weather in Paris?"}
    assert items[2]["output"] == "sunny in Paris"  # type: ignore[typeddict-item]

    second = ScriptedModel(final="You are welcome.", name="b")
    await Runner.run(weather_agent(second), "Thanks!", session=session)
    # The second run's model saw the whole first turn, then the new input.
    assert second.inputs[0][:4] == items
    assert second.inputs[0][4] == {"role": "user", "content": "Thanks!"}
    assert len(await session.get_items()) == 6


async def test_items_live_beside_the_users_index_state_preferences_and_ttl(
    manager: SessionManager, clock: FakeClock
) -> None:
    session = await AgentsSession.create(manager, user_id="ana", data={"plan": "pro"}, preferences={"tone": "brief"})
    await Runner.run(weather_agent(ScriptedModel(final="Hi Ana.")), "Hello", session=session)

    ours = await session.load()
    assert ours.user_id == "ana"
    assert ours.get("plan") == "pro"
    assert ours.preferences == {"tone": "brief"}
    listed = await AgentsSession.for_user(manager, "ana")
    assert [s.session_id for s in listed] == [session.session_id]
    assert len(await listed[0].get_items()) == 2

    # Every write renews the idle timeout; an idle session then expires with its items.
    clock.advance(manager.session_lifetime * 0.8)
    await session.add_items([user("still here")])
    clock.advance(manager.session_lifetime * 0.8)
    assert len(await session.get_items()) == 3
    assert len(await session.get_items()) == 3  # the session this read loaded is reused by a write...
    clock.advance(manager.session_lifetime + 1)
    with pytest.raises(SessionNotFound):  # ...but never revives it once expired
        await session.add_items([user("too late")])
    assert await session.get_items() == []
    with pytest.raises(SessionNotFound):
        await session.add_items([user("too late")])
    assert await manager.get_user_sessions("ana") == []


async def test_session_settings_limit_bounds_what_the_model_is_given(manager: SessionManager) -> None:
    session = await AgentsSession.create(manager, session_settings={"limit": 2})
    await session.add_items([user(f"old {i}") for i in range(5)])
    model = ScriptedModel(final="ok")
    await Runner.run(weather_agent(model), "new", session=session)
    assert contents(model.inputs[0]) == ["old 3", "old 4", "new"]


# ---------------------------------------------------------------- get_items / pop_item / clear_session
async def test_get_items_pages_back_beyond_the_history_window(make_store: Any) -> None:
    async with make_store(history_window=5) as store:
        manager = SessionManager(store, auto_cleanup=False)
        session = await AgentsSession.create(manager)
        paged = AgentsSession(manager, session.session_id, page_size=7)
        for start in range(0, 30, 10):
            await session.add_items([user(str(i)) for i in range(start, start + 10)])
        assert contents(await paged.get_items(20)) == [str(i) for i in range(10, 30)]
        assert contents(await paged.get_items()) == [str(i) for i in range(30)]
        assert contents(await paged.get_items(1)) == ["29"]
        assert await paged.get_items(0) == []


async def test_pop_item_removes_the_newest_items_in_stack_order(manager: SessionManager) -> None:
    session = await AgentsSession.create(manager)
    assert await session.pop_item() is None
    await session.add_items([user("a"), user("b")])
    assert await session.pop_item() == user("b")
    await session.add_items([user("c")])
    assert contents(await session.get_items()) == ["a", "c"]
    assert await session.pop_item() == user("c")
    assert await session.pop_item() == user("a")
    assert await session.pop_item() is None
    assert await session.get_items() == []
    await session.add_items([user("d")])
    assert contents(await session.get_items()) == ["d"]
    # Removals are append-only entries of their own beside the items.
    history = await manager.get_history(session.session_id, limit=100)
    assert [e["type"] for e in history] == [ITEM_TYPE, ITEM_TYPE, POP_TYPE, ITEM_TYPE, POP_TYPE, POP_TYPE, ITEM_TYPE]


async def test_random_adds_pops_and_clears_read_back_like_a_list_across_pages(make_store: Any) -> None:
    rng = random.Random(16)
    async with make_store(history_window=4, max_history=500) as store:
        manager = SessionManager(store, auto_cleanup=False)
        session = await AgentsSession.create(manager)
        paged = AgentsSession(manager, session.session_id, page_size=3)
        model: list[str] = []
        for step in range(60):
            action = rng.choices(["add", "pop", "clear"], weights=[6, 3, 1])[0]
            if action == "add":
                batch = [f"{step}.{k}" for k in range(rng.randint(1, 3))]
                await session.add_items([user(text) for text in batch])
                model.extend(batch)
            elif action == "pop":
                got = await session.pop_item()
                assert got == (user(model.pop()) if model else None)
            else:
                await session.clear_session()
                model.clear()
            limit = rng.randint(1, 12)
            assert contents(await paged.get_items()) == model, step
            assert contents(await paged.get_items(limit)) == model[-limit:], step


async def test_clear_session_forgets_the_items_and_keeps_the_session(manager: SessionManager) -> None:
    session = await AgentsSession.create(manager, user_id="ana", data={"plan": "pro"})
    await session.add_items([user("a"), user("b")])
    await session.clear_session()
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.add_items([user("c")])
    assert contents(await session.get_items()) == ["c"]
    assert (await session.load()).get("plan") == "pro"
    history = await manager.get_history(session.session_id, limit=100)
    assert CLEAR_TYPE in [e["type"] for e in history]


async def test_other_history_entries_are_not_items(manager: SessionManager) -> None:
    session = await AgentsSession.create(manager)
    await session.add_items([user("a")])

    def note(s: Any) -> None:
        s.add_history_entry("context", {"note": "written by the provider"})

    await manager.mutate(session.session_id, note)
    await session.add_items([user("b")])
    assert contents(await session.get_items()) == ["a", "b"]
    assert await session.pop_item() == user("b")
    assert contents(await session.get_items()) == ["a"]


async def test_a_gone_session_has_no_items_and_is_never_recreated(manager: SessionManager) -> None:
    session = await AgentsSession.create(manager)
    await session.add_items([user("a")])
    await manager.delete_session(session.session_id)
    with pytest.raises(SessionNotFound):  # the copy the last write kept is not saved back
        await session.add_items([user("b")])
    assert await session.get_items() == []
    assert await session.pop_item() is None
    await session.clear_session()
    with pytest.raises(SessionNotFound):
        await session.add_items([user("b")])
    with pytest.raises(SessionNotFound):
        await AgentsSession.open(manager, session.session_id)
    assert await manager.get_session(session.session_id) is None


# ---------------------------------------------------------------- the history cap and tool calls
def test_drop_orphan_outputs_keeps_every_call_with_its_result_and_drops_results_without_call() -> None:
    parallel = [call("x"), call("y"), output("x"), output("y"), {"role": "assistant", "content": "done"}]
    assert drop_orphan_outputs(parallel) == parallel
    assert drop_orphan_outputs(parallel[1:]) == [call("y"), output("y"), parallel[4]]
    assert drop_orphan_outputs(parallel[2:]) == [parallel[4]]


async def test_limit_never_splits_a_tool_call_from_its_result(manager: SessionManager) -> None:
    session = await AgentsSession.create(manager)
    await session.add_items([user("q"), call("c1"), output("c1"), user("thanks")])
    # The newest 2 items would start with the result of a call left outside: it is dropped.
    assert await session.get_items(2) == [user("thanks")]
    assert await session.get_items(3) == [call("c1"), output("c1"), user("thanks")]


async def test_the_history_cap_drops_the_oldest_items_and_never_leaves_a_result_without_its_call(
    make_store: Any,
) -> None:
    async with make_store(max_history=4, history_window=4) as store:
        manager = SessionManager(store, auto_cleanup=False)
        session = await AgentsSession.create(manager)
        await session.add_items([user("q1"), call("c1"), output("c1"), user("q2"), call("c2"), output("c2")])
        # The cap kept the newest 4 entries: call c1 was dropped, its result is not returned.
        raw = await manager.get_history(session.session_id, limit=100)
        assert len(raw) == 4 and raw.entries[0]["data"] == output("c1")
        assert await session.get_items() == [user("q2"), call("c2"), output("c2")]


# ---------------------------------------------------------------- bad input
async def test_bad_input_gets_a_typed_error_and_writes_nothing(manager: SessionManager) -> None:
    with pytest.raises(InvalidSessionId):
        AgentsSession(manager, "not-an-issued-id")
    session = await AgentsSession.create(manager)
    await session.add_items([user("kept")])
    with pytest.raises(SerializationError):
        await session.add_items([user("fine"), {"role": "user", "content": {1, 2}}])  # type: ignore[list-item]
    with pytest.raises(SerializationError):
        await session.add_items(["not a dict"])  # type: ignore[list-item]
    with pytest.raises(InvalidSessionSettings):
        await session.get_items(-1)
    for settings in ({"limit": -1}, {"limit": "many"}, {"bogus": 1}):
        with pytest.raises(InvalidSessionSettings):
            AgentsSession(manager, session.session_id, session_settings=settings)
    with pytest.raises(InvalidSessionSettings):
        AgentsSession(manager, session.session_id, page_size=0)
    assert contents(await session.get_items()) == ["kept"]


def test_a_missing_sdk_is_an_import_error_naming_the_extra() -> None:
    code = (
        "import sys; sys.modules['agents'] = None\n"
        "try:\n    import agent_sessions.integrations.openai_agents\n"
        "except ImportError as e:\n    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "pip install agent-sessions[openai-agents]" in out.stdout


# ---------------------------------------------------------------- concurrency
@pytest.mark.parametrize("managers", [1, 2], ids=["one-manager", "two-managers"])
async def test_two_concurrent_runs_on_one_session_lose_no_item(store: SessionStore, managers: int) -> None:
    # With two managers the runs share no lock: their writes race with compare-and-set only.
    pool = [SessionManager(store, auto_cleanup=False) for _ in range(managers)]
    session = await AgentsSession.create(pool[0])
    runs = [AgentsSession(pool[-i], session.session_id) for i in range(2)]
    models = [ScriptedModel([("get_weather", {"city": c})], final=f"sunny in {c}", name=c) for c in ("Oslo", "Rome")]
    await asyncio.gather(
        *(Runner.run(weather_agent(m), f"Weather in {m.name}?", session=s) for m, s in zip(models, runs, strict=True))
    )
    items = await session.get_items()
    assert len(items) == 8
    for city in ("Oslo", "Rome"):
        mine = [i for i in items if city in json.dumps(i)]
        assert len(mine) == 4, city


async def test_concurrent_writers_through_two_managers_lose_no_item_and_never_pop_one_twice(
    store: SessionStore,
) -> None:
    # Two managers do not share their per-session lock: they race with compare-and-set only.
    first, second = (SessionManager(store, auto_cleanup=False) for _ in range(2))
    created = await AgentsSession.create(first)
    a, b = AgentsSession(first, created.session_id), AgentsSession(second, created.session_id)

    async def add(session: AgentsSession, name: str) -> None:
        for i in range(8):
            await session.add_items([user(f"{name}{i}"), user(f"{name}{i}+")])

    await asyncio.gather(add(a, "a"), add(b, "b"))
    added = contents(await a.get_items())
    assert sorted(added) == sorted(f"{n}{i}{s}" for n in "ab" for i in range(8) for s in ("", "+"))
    # Each call's items are saved together, in order.
    assert all(added[k + 1] == added[k] + "+" for k in range(0, len(added), 2))
    popped = await asyncio.gather(*(s.pop_item() for s in (a, b) * 5))
    left = contents(await b.get_items())
    assert len(left) == 22
    assert len({p["content"] for p in popped if p is not None}) == 10  # type: ignore[index]
    assert set(left).isdisjoint(p["content"] for p in popped if p is not None)  # type: ignore[index]


# ---------------------------------------------------------------- across processes
def store_spec(backend: str, store: SessionStore) -> dict[str, Any]:
    """How another process opens the same data as `store`."""
    if isinstance(store, DatabaseSessionStore):
        return {"kind": "sql", "url": store.db_url, "schema": store.schema}
    from agent_sessions.stores.redis import RedisSessionStore

    from ..redis.servers import shared_cluster

    assert isinstance(store, RedisSessionStore)
    url = shared_cluster().url if backend == "redis_cluster" else REDIS_URL
    return {"kind": "redis", "url": url, "prefix": store.prefix}


def run_turn_in_subprocess(spec: dict[str, Any], session_id: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.integrations.openai_agents_scripted", json.dumps(spec), session_id],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("backend", ["sqlite", "postgres", "redis", "redis_cluster"])  # memory: one process
async def test_a_run_persists_across_processes(backend: str, store: SessionStore) -> None:
    spec = store_spec(backend, store)
    first = await asyncio.to_thread(run_turn_in_subprocess, spec, "new")
    assert first["seen"] == 1  # a new session: only the new input
    second = await asyncio.to_thread(run_turn_in_subprocess, spec, first["session_id"])
    assert second == {"session_id": first["session_id"], "seen": 5}  # turn one's 4 items, then the input
    # A third process (this one, on a store of its own with the wall clock) reads both turns.
    async with open_store(spec) as reader:
        manager = SessionManager(reader, auto_cleanup=False)
        session = await AgentsSession.open(manager, first["session_id"])
        items = await session.get_items()
        assert (await session.load()).user_id == "traveller"
    assert len(items) == 8
    assert [i.get("type", "message") for i in items[:4]] == [
        "message",
        "function_call",
        "function_call_output",
        "message",
    ]


# ---------------------------------------------------------------- the example
def test_the_example_tells_the_same_conversation_on_every_run(tmp_path: Path) -> None:
    from ..examples.test_examples import offline_env

    def run() -> list[str]:
        done = subprocess.run(
            [sys.executable, str(ROOT / "examples" / "openai_agents_app.py")],
            cwd=tmp_path,
            env=offline_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        return done.stdout.splitlines()

    first = run()
    assert first[:2] == [
        "turn 1: Forecast: sunny and 21 °C in Lisbon.",
        "turn 2: You asked 2 questions so far. (the model was given 5 items)",
    ]
    assert "popped: assistant -> 5 items left" in first
    assert run() == first
    assert list(tmp_path.iterdir()) == []  # the embedded store lived in a temporary folder


# ---------------------------------------------------------------- the peer benchmark
async def test_the_peer_benchmark_runs_and_verifies_the_same_turns_on_both_sides() -> None:
    from types import SimpleNamespace

    from benchmarks.harness import WORKLOADS, one_run
    from benchmarks.peers_openai_agents import PEERS, adapter_side, peer_side

    sqlite = next(p for p in PEERS if p.name == "sqlite")
    args = SimpleNamespace(sessions=3, turns=2, reads=4)
    for make in (adapter_side(sqlite), peer_side(sqlite)):
        samples = await one_run(make, args)  # raises if a session does not read back 2 items
        assert set(samples) == set(WORKLOADS)
        assert all(sample.ops > 0 for sample in samples.values())
