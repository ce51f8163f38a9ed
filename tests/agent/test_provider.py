"""`SessionContextProvider`: the original mapping both ways, and write-back without lost updates."""

from __future__ import annotations

import asyncio

import pytest

from agent_sessions import ExecutionContext, SerializationError, SessionContextProvider, SessionManager
from agent_sessions.provider import SESSION_MANAGER_PROPERTY


async def test_enrich_maps_the_session_into_the_context(manager: SessionManager) -> None:
    session = await manager.create_session(
        "alice", data={"context:mood": "curious", "plain": 1}, preferences={"language": "fr"}
    )
    session.ai_context["summary"] = "likes cheese"
    session.feature_flags["beta"] = True
    await manager.update_session(session)

    ctx = ExecutionContext(session_id=session.session_id)
    returned = await SessionContextProvider(manager).enrich_context(ctx)

    assert returned is ctx
    assert ctx.user_id == "alice"
    assert ctx.get_property("mood") == "curious"
    assert not ctx.has_property("plain") and not ctx.has_property("context:mood")
    assert ctx.get_property("preferences") == {"language": "fr"}
    assert ctx.ai_metadata == {"summary": "likes cheese"}
    assert ctx.get_property("feature_flags") == {"beta": True}
    assert ctx.get_property(SESSION_MANAGER_PROPERTY) is manager


async def test_enrich_leaves_a_context_without_a_live_session_unchanged(memory_manager: SessionManager) -> None:
    provider = SessionContextProvider(memory_manager)
    bare = ExecutionContext(user_id="u")
    assert await provider.enrich_context(bare) is bare and bare.properties == {}
    gone = await memory_manager.create_session()
    await memory_manager.delete_session(gone.session_id)
    ctx = ExecutionContext(session_id=gone.session_id)
    await provider.enrich_context(ctx)
    assert ctx.properties == {} and ctx.user_id is None


async def test_a_stored_context_key_cannot_replace_the_session_manager(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session(data={"context:session_manager": "evil"})
    ctx = await SessionContextProvider(memory_manager).enrich_context(ExecutionContext(session_id=session.session_id))
    assert ctx.get_property(SESSION_MANAGER_PROPERTY) is memory_manager


async def test_update_maps_the_context_back_with_a_context_history_entry(manager: SessionManager) -> None:
    session = await manager.create_session()
    provider = SessionContextProvider(manager)
    ctx = await provider.enrich_context(ExecutionContext(session_id=session.session_id, tool_name="search"))
    ctx.user_id = "bob"
    ctx.add_property("session:last_query", "cheese")
    ctx.add_property("not_persisted", "x")
    ctx.add_property("preferences", {"units": "metric"})
    ctx.ai_metadata["topic"] = "food"
    ctx.finish()

    saved = await provider.update_session_from_context(ctx)

    assert saved is not None
    stored = await manager.get_session(session.session_id)
    assert stored is not None
    assert stored.user_id == "bob"
    assert stored.state == {"last_query": "cheese"}
    assert stored.preferences == {"units": "metric"}
    assert stored.ai_context == {"topic": "food"}
    assert SESSION_MANAGER_PROPERTY not in stored.state
    (entry,) = stored.history
    assert entry["type"] == "context"
    assert entry["data"] == {"context_id": ctx.context_id, "tool_name": "search", "duration": ctx.duration()}


async def test_update_without_a_session_returns_none(memory_manager: SessionManager) -> None:
    provider = SessionContextProvider(memory_manager)
    assert await provider.update_session_from_context(ExecutionContext()) is None
    gone = await memory_manager.create_session()
    ctx = await provider.enrich_context(ExecutionContext(session_id=gone.session_id))
    await memory_manager.delete_session(gone.session_id)
    assert await provider.update_session_from_context(ctx) is None
    assert await memory_manager.get_session(gone.session_id) is None


async def test_update_refuses_values_that_are_not_json_and_writes_nothing(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session()
    provider = SessionContextProvider(memory_manager)
    ctx = await provider.enrich_context(ExecutionContext(session_id=session.session_id))
    ctx.add_property("session:when", {1, 2})
    with pytest.raises(SerializationError):
        await provider.update_session_from_context(ctx)
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None and stored.state == {} and stored.history == []


async def test_write_back_keeps_what_a_concurrent_writer_saved(manager: SessionManager) -> None:
    """A web request saves while a run holds an enriched context: neither change is lost."""
    session = await manager.create_session("carol", preferences={"language": "en", "theme": "light"})
    provider = SessionContextProvider(manager)
    ctx = await provider.enrich_context(ExecutionContext(session_id=session.session_id))

    # Meanwhile, another writer changes a preference the context holds but did not touch.
    other = await manager.get_session(session.session_id)
    assert other is not None
    other.preferences["theme"] = "dark"
    other.set("cart", ["apple"])
    await manager.update_session(other)

    ctx.get_property("preferences")["language"] = "de"
    ctx.add_property("session:step", 2)
    await provider.update_session_from_context(ctx)

    stored = await manager.get_session(session.session_id)
    assert stored is not None
    assert stored.preferences == {"language": "de", "theme": "dark"}
    assert stored.state == {"cart": ["apple"], "step": 2}


async def test_concurrent_write_backs_of_many_contexts_all_survive(manager: SessionManager) -> None:
    session = await manager.create_session("dave")
    provider = SessionContextProvider(manager)
    contexts = [await provider.enrich_context(ExecutionContext(session_id=session.session_id)) for _ in range(8)]
    for i, ctx in enumerate(contexts):
        ctx.add_property(f"session:k{i}", i)
        ctx.ai_metadata[f"m{i}"] = i

    await asyncio.gather(*(provider.update_session_from_context(ctx) for ctx in contexts))

    stored = await manager.get_session(session.session_id)
    assert stored is not None
    assert stored.state == {f"k{i}": i for i in range(8)}
    assert stored.ai_context == {f"m{i}": i for i in range(8)}
    page = await manager.get_history(session.session_id, limit=50)
    assert sorted(e["data"]["context_id"] for e in page.entries) == sorted(c.context_id for c in contexts)


async def test_a_second_write_back_does_not_rewrite_unchanged_values(memory_manager: SessionManager) -> None:
    session = await memory_manager.create_session(preferences={"language": "en"})
    provider = SessionContextProvider(memory_manager)
    ctx = await provider.enrich_context(ExecutionContext(session_id=session.session_id))
    ctx.get_property("preferences")["language"] = "it"
    await provider.update_session_from_context(ctx)

    other = await memory_manager.get_session(session.session_id)
    assert other is not None
    other.preferences["language"] = "es"
    await memory_manager.update_session(other)

    await provider.update_session_from_context(ctx)
    stored = await memory_manager.get_session(session.session_id)
    assert stored is not None and stored.preferences == {"language": "es"}
