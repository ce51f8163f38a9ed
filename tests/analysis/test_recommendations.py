"""RecommendationService: the algorithms on tiny hand-checked cases, exclusion, cold start,
per-session configuration and the index built from session history."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from agent_sessions import ExecutionContext, SessionManager
from agent_sessions.analysis import (
    InteractionIndex,
    RecommendationService,
    interactions_from_history,
    item_vector,
    record_interaction,
)
from agent_sessions.errors import InvalidServiceConfig, SerializationError, StoreUnavailable
from agent_sessions.services import SessionServiceConfigurator, SmartDependencyContainer


def tiny_index() -> InteractionIndex:
    """u1: a b · u2: a b c · u3: a c · u4: d · u5: d e.

    Users per item: a 3, b 2, c 2, d 2, e 1. Co-occurrences: a-b 2, a-c 2, b-c 1, d-e 1.
    Cosine: a-b = a-c = 2/sqrt(6) = 0.8165, b-c = 1/sqrt(4) = 0.5, d-e = 1/sqrt(2) = 0.7071.
    """
    index = InteractionIndex()
    for user, items in {"u1": "ab", "u2": "abc", "u3": "ac", "u4": "d", "u5": "de"}.items():
        for item in items:
            index.add(user, item)
    return index


def ids(recs: list[dict[str, object]]) -> list[object]:
    return [r["item_id"] for r in recs]


def test_item_item_similarity_is_the_cosine_of_co_occurrence() -> None:
    index = tiny_index()
    assert index.neighbours("a") == pytest.approx({"b": 2 / math.sqrt(6), "c": 2 / math.sqrt(6)})
    assert index.neighbours("b") == pytest.approx({"a": 2 / math.sqrt(6), "c": 0.5})
    assert index.neighbours("e") == pytest.approx({"d": 1 / math.sqrt(2)})
    assert index.popularity() == [("a", 3), ("b", 2), ("c", 2), ("d", 2), ("e", 1)]


async def test_collaborative_scores_neighbours_of_the_users_items_and_excludes_them() -> None:
    index = tiny_index()
    index.add("u6", "b")
    service = RecommendationService(interactions=index)
    recs = await service.get_recommendations("u6", limit=4)
    # u6 makes b liked by 3 users: a-b = 2/sqrt(3*3) = 0.6667, b-c = 1/sqrt(3*2) = 0.4082;
    # then filled by popularity (d, then e), never b itself.
    assert ids(recs) == ["a", "c", "d", "e"]
    assert [r["algorithm"] for r in recs] == ["collaborative", "collaborative", "popularity", "popularity"]
    assert [r["score"] for r in recs[:2]] == pytest.approx([2 / 3, 1 / math.sqrt(6)], abs=1e-6)
    assert recs[0]["because"] == ["b"] and "b" in recs[0]["reason"]


async def test_a_users_own_items_are_never_recommended() -> None:
    service = RecommendationService(interactions=tiny_index())
    for user in ("u1", "u2", "u3", "u4", "u5"):
        own = set(tiny_index().items_of(user))
        assert own.isdisjoint(ids(await service.get_recommendations(user, limit=10)))


async def test_cold_start_falls_back_to_popularity() -> None:
    service = RecommendationService(interactions=tiny_index())
    recs = await service.get_recommendations("newcomer", limit=3)
    assert ids(recs) == ["a", "b", "c"]
    assert all(r["algorithm"] == "popularity" and r["reason"].startswith("cold start") for r in recs)


async def test_a_disliked_item_is_excluded_but_does_not_seed_recommendations() -> None:
    index = tiny_index()
    index.add("u7", "e", -1.0)
    service = RecommendationService(interactions=index)
    recs = await service.get_recommendations("u7", limit=3)
    assert "e" not in ids(recs)
    assert all(r["algorithm"] == "popularity" for r in recs)  # nothing liked: a cold start


async def test_similar_items_without_personalisation_ignore_the_user() -> None:
    service = RecommendationService(interactions=tiny_index())
    service.configure({"personalization_enabled": False})
    recs = await service.get_recommendations("u1", item_id="c", limit=2)
    # Similar to c: a (0.8165) then b (0.5) -- even though u1 already has both.
    assert ids(recs) == ["a", "b"]


CATALOGUE = {
    "dune": {"genre": "scifi", "tags": ["space", "classic"]},
    "foundation": {"genre": "scifi", "tags": ["space", "classic"]},
    "neuromancer": {"genre": "scifi", "tags": ["space", "cyber"]},
    "emma": {"genre": "romance", "tags": ["classic"]},
    "persuasion": {"genre": "romance", "tags": ["classic"]},
}


def test_item_vectors_are_one_hot_for_strings_multi_hot_for_tags_and_normalised() -> None:
    vector = item_vector({"genre": "scifi", "tags": ["space", "classic"], "new": True, "old": False})
    assert vector == pytest.approx({"genre=scifi": 0.5, "tags=space": 0.5, "tags=classic": 0.5, "new": 0.5})
    assert item_vector([3.0, 4.0]) == pytest.approx({"0": 0.6, "1": 0.8})
    with pytest.raises(ValueError, match="attribute 'bad'"):
        item_vector({"bad": {"nested": 1}})  # type: ignore[dict-item]


async def test_content_based_ranks_items_by_attribute_similarity_to_the_users_history() -> None:
    index = InteractionIndex()
    index.add("reader", "dune")
    service = RecommendationService(interactions=index, catalogue=CATALOGUE)
    service.configure({"algorithm": "content_based"})
    recs = await service.get_recommendations("reader", limit=4)
    # dune = {scifi, space, classic}/sqrt3: foundation (same attributes) 1.0,
    # neuromancer {scifi, space, cyber}/sqrt3 2/3, emma and persuasion {romance, classic}/sqrt2 1/sqrt6.
    assert ids(recs) == ["foundation", "neuromancer", "emma", "persuasion"]
    assert [r["score"] for r in recs] == pytest.approx([1.0, 2 / 3, 1 / math.sqrt(6), 1 / math.sqrt(6)], abs=1e-6)
    assert recs[0]["because"] == ["dune"]


async def test_content_based_cold_start_is_popularity() -> None:
    service = RecommendationService(interactions=tiny_index(), catalogue=CATALOGUE)
    service.configure({"algorithm": "content_based"})
    recs = await service.get_recommendations("nobody", limit=2)
    assert ids(recs) == ["a", "b"] and {r["algorithm"] for r in recs} == {"popularity"}


async def test_popularity_excludes_the_users_items() -> None:
    service = RecommendationService(interactions=tiny_index(), default_algorithm="popularity")
    assert ids(await service.get_recommendations("u1", limit=3)) == ["c", "d", "e"]


def test_configuration_is_validated() -> None:
    service = RecommendationService(interactions=tiny_index())
    with pytest.raises(InvalidServiceConfig, match="algorithm must be one of"):
        service.configure({"algorithm": "magic"})
    with pytest.raises(InvalidServiceConfig, match="needs a catalogue"):
        service.configure({"algorithm": "content_based"})
    with pytest.raises(InvalidServiceConfig, match="personalization_enabled must be true or false"):
        service.configure({"personalization_enabled": "yes"})
    with pytest.raises(InvalidServiceConfig, match=r"unknown config key\(s\) \['colour'\]"):
        service.configure({"colour": "red"})
    with pytest.raises(ValueError, match="default_algorithm"):
        RecommendationService(default_algorithm="magic")


def test_interactions_are_read_from_history_entries_with_action_weights() -> None:
    from agent_sessions import Session

    session = Session(user_id="ana")
    record_interaction(session, "dune", "purchase")
    record_interaction(session, "emma", "dislike")
    record_interaction(session, "foundation", "view", weight=0.5, source="search")
    session.add_history_entry("message", {"content": "hi"})
    found = [(i.item_id, i.action, i.weight, i.user) for i in interactions_from_history(session.history, "ana")]
    assert found == [
        ("dune", "purchase", 3.0, "ana"),
        ("emma", "dislike", -1.0, "ana"),
        ("foundation", "view", 0.5, "ana"),
    ]
    assert session.history[2]["data"]["source"] == "search"
    with pytest.raises(SerializationError, match="interaction entry 0"):
        list(interactions_from_history([{"timestamp": 1.0, "type": "interaction", "data": {}}], "x"))


async def _shopper(
    manager: SessionManager, user: str | None, items: str, config: dict[str, object] | None = None
) -> str:
    session = await manager.create_session(user, {"service_config": config} if config else None)
    for item in items:
        record_interaction(session, item, "purchase")
    await manager.update_session(session)
    return session.session_id


async def test_the_index_is_built_from_session_histories_and_pools_a_users_sessions(manager: SessionManager) -> None:
    await _shopper(manager, "u1", "a")
    await _shopper(manager, "u1", "b")
    await _shopper(manager, "u2", "abc")
    anonymous = await _shopper(manager, None, "c")
    index = await InteractionIndex.from_store(manager)
    assert index.items_of("u1") == {"a": 3.0, "b": 3.0}
    assert index.items_of(f"session:{anonymous}") == {"c": 3.0}
    assert dict(index.popularity()) == {"a": 2, "b": 2, "c": 2}


async def test_the_current_sessions_fresh_interactions_are_excluded_before_the_index_refreshes(
    manager: SessionManager,
) -> None:
    for user, items in {"u1": "ab", "u2": "abc", "u3": "ac"}.items():
        await _shopper(manager, user, items)
    sid = await _shopper(manager, "me", "b")
    service = RecommendationService(session_manager=manager, refresh_interval=3600)
    ctx = ExecutionContext(session_id=sid, user_id="me")
    bound = await service.with_context(ctx)
    assert ids(await bound.get_recommendations("me", limit=2)) == ["a", "c"]
    # A purchase in this session, after the index was built: excluded at once, and it seeds too.
    session = await manager.get_session(sid)
    assert session is not None
    record_interaction(session, "a", "purchase")
    await manager.update_session(session)
    assert ids(await bound.get_recommendations("me", limit=1)) == ["c"]
    assert (await service.interactions()).items_of("me") == {"b": 3.0}  # the index itself is still the old one
    assert (await service.refresh_index()).items_of("me") == {"a": 3.0, "b": 3.0}


async def test_two_sessions_configured_differently_get_different_algorithms(manager: SessionManager) -> None:
    for user, items in {"u1": "ab", "u2": "abc", "u3": "ac"}.items():
        await _shopper(manager, user, items)
    collaborative = await _shopper(manager, "ana", "b", {"RecommendationService": {"algorithm": "collaborative"}})
    popular = await _shopper(
        manager, "bob", "b", {"RecommendationService": {"algorithm": "popularity", "personalization_enabled": False}}
    )
    container = SmartDependencyContainer()
    container.register_instance(SessionManager, manager)
    container.register(RecommendationService)
    configurator = SessionServiceConfigurator(manager, container)

    async def run(sid: str, user: str) -> list[dict[str, object]]:
        svc = await configurator.get_service("recommendations", ExecutionContext(session_id=sid, user_id=user))
        return await svc.get_recommendations(user, limit=3)  # type: ignore[no-any-return]

    ana, bob = await run(collaborative, "ana"), await run(popular, "bob")
    assert {r["algorithm"] for r in ana[:2]} == {"collaborative"}
    assert [r["algorithm"] for r in bob] == ["popularity"] * 3
    assert "b" in ids(bob) and "b" not in ids(ana)  # personalisation off: bob's own item is not filtered
    shared = await container.resolve(RecommendationService)
    assert shared.algorithm == "collaborative" and shared.personalization_enabled is True
    assert shared.session_manager is manager


# ---------------------------------------------------------------- index refresh in the background
class GatedScans:
    """Replaces `InteractionIndex.from_store`: each scan waits for `release`, and can be made to fail."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.original = InteractionIndex.from_store
        self.started = asyncio.Event()
        self.release = asyncio.Event()
        self.scans = 0
        self.cancelled = 0
        self.fail_next = False
        monkeypatch.setattr(InteractionIndex, "from_store", self.from_store)

    async def from_store(self, source: Any, **options: Any) -> InteractionIndex:
        self.scans += 1
        self.started.set()
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        if self.fail_next:
            self.fail_next = False
            raise StoreUnavailable("the store went away mid-scan")
        return await self.original(source, **options)


async def _eventually(check: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(5):
        while not await check():
            await asyncio.sleep(0.01)


async def test_a_stale_index_is_served_at_once_while_it_is_rebuilt_then_replaced(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    for user in ("u1", "u2"):
        await _shopper(manager, user, "ab")
    service = RecommendationService(session_manager=manager, refresh_interval=0)  # stale as soon as built
    assert ids(await service.get_recommendations("me", limit=3)) == ["a", "b"]  # no index yet: built inline
    old = await service.interactions()
    for user in ("u3", "u4", "u5"):
        await _shopper(manager, user, "c")  # c becomes the most popular item
    scans = GatedScans(monkeypatch)

    # The index is stale: the call starts a rebuild (blocked mid-scan) and answers from the old index.
    async with asyncio.timeout(1):
        stale = await service.get_recommendations("me", limit=3)
        await scans.started.wait()
        again = await service.get_recommendations("me", limit=3)
        assert await service.interactions() is old
    assert ids(stale) == ids(again) == ["a", "b"]
    assert scans.scans == 1  # one rebuild at a time, however many calls see the stale index

    scans.release.set()

    async def replaced() -> bool:
        return await service.interactions() is not old

    await _eventually(replaced)
    assert ids(await service.get_recommendations("me", limit=3)) == ["c", "a", "b"]
    await service.aclose()


async def test_a_failed_background_rebuild_is_logged_and_the_next_call_retries(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    await _shopper(manager, "u1", "a")
    service = RecommendationService(session_manager=manager, refresh_interval=0)
    await service.interactions()  # built inline
    await _shopper(manager, "u2", "bb")
    scans = GatedScans(monkeypatch)
    scans.release.set()
    scans.fail_next = True
    caplog.set_level(logging.ERROR, logger="agent_sessions.analysis.recommendations")
    first = await service.interactions()

    await _eventually(lambda: asyncio.sleep(0, result=any(r.exc_info for r in caplog.records)))
    failure = next(r for r in caplog.records if r.exc_info)
    assert (
        failure.levelno == logging.ERROR and "rebuilding the recommendation interaction index failed" in failure.message
    )
    assert failure.exc_info is not None and isinstance(failure.exc_info[1], StoreUnavailable)
    assert await service.interactions() is first  # the stale index is still served; this call retried

    async def rebuilt() -> bool:
        return "b" in (await service.interactions()).items

    await _eventually(rebuilt)
    assert scans.scans >= 2
    await service.aclose()


async def test_aclose_cancels_a_running_rebuild_and_the_container_calls_it(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    await _shopper(manager, "u1", "a")
    container = SmartDependencyContainer()
    container.register(
        RecommendationService, factory=lambda: RecommendationService(session_manager=manager, refresh_interval=0)
    )
    service = await container.resolve(RecommendationService)
    index = await service.interactions()  # built inline
    scans = GatedScans(monkeypatch)
    async with asyncio.timeout(1):
        assert await service.interactions() is index  # stale: rebuild started, blocked in the scan
    await asyncio.wait_for(scans.started.wait(), 5)

    await container.aclose()  # disposes the singleton: RecommendationService.aclose()

    assert scans.cancelled == 1
    scans.release.set()
    # After close a stale index is rebuilt inline, with no task left behind.
    await _shopper(manager, "u2", "b")
    assert "b" in (await service.interactions()).items
