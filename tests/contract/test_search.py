"""`search_history` on every backend: ranking, filters, snippets, isolation, expiry, hostile
queries, and an index that stays consistent through every operation that touches history.

Redis has no full-text engine in the versions we target: there the contract is the typed
`SearchUnavailable` (an expected capability gap, asserted, not skipped).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from agent_sessions import (
    HistoryHit,
    InvalidSearchQuery,
    InvalidUserId,
    SearchUnavailable,
    Session,
    SessionManager,
    SessionStore,
)
from agent_sessions.ops import export_sessions, import_sessions, migrate

from ..backends import BACKENDS
from ..support import FakeClock

pytestmark = pytest.mark.asyncio

#: Backends with a full-text engine, and those whose contract is `SearchUnavailable`.
SEARCHABLE = ("memory", "postgres", "sqlite")
NO_ENGINE = ("redis", "redis_cluster")
searchable = pytest.mark.parametrize("backend", SEARCHABLE)
MakeStore = Callable[..., AbstractAsyncContextManager[SessionStore]]


async def test_every_backend_is_either_searchable_or_a_stated_capability_gap() -> None:
    assert sorted(SEARCHABLE + NO_ENGINE) == sorted(BACKENDS)


@pytest.fixture
async def mgr(store: SessionStore) -> AsyncIterator[SessionManager]:
    yield SessionManager(store, session_lifetime=3600, auto_cleanup=False, absolute_lifetime=None)


async def said(manager: SessionManager, user_id: str | None, *texts: str, kind: str = "message") -> Session:
    """A new session of `user_id` whose history holds one entry per text."""
    session = await manager.create_session(user_id)
    for text in texts:  # stamped by the store's clock (`add_history_entry` uses the wall clock)
        session.history.append({"timestamp": manager.clock(), "type": kind, "data": {"role": "user", "content": text}})
    return await manager.update_session(session)


def ids(hits: list[HistoryHit]) -> list[tuple[str, int]]:
    return [(hit.session_id, hit.seq) for hit in hits]


# ---------------------------------------------------------------------- the capability gap
@pytest.mark.parametrize("backend", NO_ENGINE)
async def test_redis_raises_search_unavailable_naming_what_to_use(mgr: SessionManager) -> None:
    await said(mgr, "alice", "I live in Lisbon")
    for user, kwargs in (("alice", {}), (None, {"session_id": "a" * 43}), ("alice", {"types": []})):
        with pytest.raises(SearchUnavailable, match="SQLite or PostgreSQL"):
            await mgr.search_history(user, "Lisbon", **kwargs)
    with pytest.raises(SearchUnavailable):
        await mgr.search_history("alice", "   ")


# ---------------------------------------------------------------------- ranking and hits
@searchable
async def test_hits_are_ranked_best_first_with_the_entry_and_a_highlighted_snippet(mgr: SessionManager) -> None:
    s = await said(
        mgr,
        "alice",
        "the weather is nice today",
        "I live in Lisbon now",
        "Lisbon, Lisbon: I love Lisbon",
        "my cat is called Lisbon and she lives in Porto with friends and family and many others",
        "nothing to see here",
    )
    hits = await mgr.search_history("alice", "Lisbon")
    assert {h.seq for h in hits} == {2, 3, 4}
    assert hits[0].seq == 3  # three occurrences in a short entry beat one
    assert hits[-1].seq == 4  # one occurrence in a long entry ranks last
    assert all(h.session_id == s.session_id for h in hits)
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    page = await mgr.get_history(s.session_id)
    assert (
        hits[1].entry
        == page.entries[1]
        == {
            "timestamp": page.entries[1]["timestamp"],
            "type": "message",
            "data": {"role": "user", "content": "I live in Lisbon now"},
        }
    )
    assert "**Lisbon**" in hits[1].snippet and "live" in hits[1].snippet
    both = await mgr.search_history("alice", "Lisbon Porto")
    assert both[0].seq == 4  # the only entry holding both terms
    assert await mgr.search_history("alice", "Madrid") == []


@searchable
async def test_search_is_case_insensitive_and_splits_on_punctuation(mgr: SessionManager) -> None:
    await said(mgr, "alice", "Contact: Jane-Doe@Example.org, tel. +351")
    for query in ("jane", "EXAMPLE", "doe.org", "351"):
        assert len(await mgr.search_history("alice", query)) == 1, query


@pytest.mark.parametrize("backend", ["memory", "sqlite"])
async def test_diacritics_are_folded_like_fts5_unicode61(mgr: SessionManager) -> None:
    # PostgreSQL's `simple` configuration keeps diacritics: there "cafe" does not find "Café"
    # (the README says so); a query with them finds them on every backend (next test).
    await said(mgr, "alice", "Un café à São Paulo")
    assert len(await mgr.search_history("alice", "cafe sao")) == 1


@searchable
async def test_a_query_with_diacritics_finds_them(mgr: SessionManager) -> None:
    await said(mgr, "alice", "Un café à São Paulo")
    hits = await mgr.search_history("alice", "Café")
    assert len(hits) == 1 and "**café**" in hits[0].snippet.lower()


@searchable
async def test_tool_entries_are_searchable_by_their_string_values_and_type(mgr: SessionManager) -> None:
    session = await mgr.create_session("alice")
    session.add_history_entry("tool_call", {"tool": "book_flight", "args": {"to": "Reykjavik", "seats": 2}})
    session.add_history_entry("message", {"content": "thanks"})
    await mgr.update_session(session)
    hits = await mgr.search_history("alice", "reykjavik")
    assert [h.entry["type"] for h in hits] == ["tool_call"]
    assert [h.entry["type"] for h in await mgr.search_history("alice", "tool_call")] == ["tool_call"]


@searchable
async def test_limit_keeps_the_best_hits(mgr: SessionManager) -> None:
    await said(mgr, "alice", *[f"note {i} about lisbon" for i in range(12)])
    assert len(await mgr.search_history("alice", "lisbon")) == 10
    assert len(await mgr.search_history("alice", "lisbon", limit=3)) == 3
    assert len(await mgr.search_history("alice", "lisbon", limit=50)) == 12


# ---------------------------------------------------------------------- filters
@searchable
async def test_types_since_and_session_id_filter_the_hits(mgr: SessionManager, clock: FakeClock) -> None:
    first = await said(mgr, "alice", "old lisbon message")
    clock.advance(100)
    cutoff = clock.now
    second = await said(mgr, "alice", "new lisbon message")
    second.history.append({"timestamp": clock.now, "type": "tool_result", "data": {"result": "lisbon weather: sunny"}})
    await mgr.update_session(second)
    assert len(await mgr.search_history("alice", "lisbon")) == 3
    assert [h.entry["type"] for h in await mgr.search_history("alice", "lisbon", types=["tool_result"])] == [
        "tool_result"
    ]
    assert len(await mgr.search_history("alice", "lisbon", types=["message", "tool_result"])) == 3
    assert await mgr.search_history("alice", "lisbon", types=[]) == []
    assert {h.session_id for h in await mgr.search_history("alice", "lisbon", since=cutoff)} == {second.session_id}
    only = await mgr.search_history("alice", "lisbon", session_id=first.session_id)
    assert ids(only) == [(first.session_id, 1)]
    anonymous = await mgr.search_history(None, "lisbon", session_id=second.session_id)
    assert {h.session_id for h in anonymous} == {second.session_id} and len(anonymous) == 2


# ---------------------------------------------------------------------- isolation
@searchable
async def test_a_search_never_returns_another_users_entries(mgr: SessionManager) -> None:
    alice = [await said(mgr, "alice", f"alice lives in lisbon {i}", "shared words everywhere") for i in range(3)]
    bob = [await said(mgr, "bob", f"bob lives in lisbon {i}", "shared words everywhere") for i in range(3)]
    anon = await said(mgr, None, "anonymous lives in lisbon", "shared words everywhere")
    alice_ids = {s.session_id for s in alice}
    for query in ("lisbon", "shared words everywhere", "bob", "anonymous lives"):
        for hit in await mgr.search_history("alice", query, limit=100):
            assert hit.session_id in alice_ids, query
            assert "bob" not in str(hit.entry) and "anonymous" not in str(hit.entry)
    assert await mgr.search_history("alice", "bob") == []
    # One user's session id with another user's id finds nothing; an anonymous search stays in it.
    assert await mgr.search_history("alice", "lisbon", session_id=bob[0].session_id) == []
    assert {h.session_id for h in await mgr.search_history(None, "lisbon", session_id=anon.session_id)} == {
        anon.session_id
    }
    assert await mgr.search_history("carol", "lisbon") == []


@searchable
async def test_expired_sessions_are_not_searched_before_cleanup(mgr: SessionManager, clock: FakeClock) -> None:
    old = await said(mgr, "alice", "lisbon in the old days")
    clock.advance(3000)
    fresh = await said(mgr, "alice", "lisbon today")
    clock.advance(1000)  # `old` is past its idle timeout, `fresh` is not
    assert ids(await mgr.search_history("alice", "lisbon")) == [(fresh.session_id, 1)]
    assert await mgr.search_history(None, "lisbon", session_id=old.session_id) == []


# ---------------------------------------------------------------------- queries
HOSTILE = [
    '"',
    '"lisbon',
    "lisbon\"'`",
    "NEAR(lisbon porto)",
    "lisbon NEAR porto",
    "lisb*",
    "*",
    "-lisbon",
    "lisbon -porto",
    "lisbon OR",
    "AND OR NOT",
    "(lisbon",
    "content:lisbon",
    "type:message",
    "{type}: lisbon",
    "^lisbon",
    "lisbon & porto | !madrid",
    "lisbon <-> porto",
    "'lisbon':*",
    "\\",
    "%_",
    "; DROP TABLE agent_sessions; --",
    "Lisbon 🇵🇹 ❤",
    "東京 lisbon",
    "x" * 1024,
]


@searchable
@pytest.mark.parametrize("query", HOSTILE)
async def test_any_string_is_a_valid_query(mgr: SessionManager, query: str) -> None:
    await said(mgr, "alice", "I live in Lisbon, near Porto", "東京 is far")
    hits = await mgr.search_history("alice", query)
    assert isinstance(hits, list)
    if "lisbon" in query.lower():
        assert any("Lisbon" in h.entry["data"]["content"] for h in hits)


@searchable
async def test_blank_queries_find_nothing_and_bad_arguments_are_typed_errors(mgr: SessionManager) -> None:
    s = await said(mgr, "alice", "lisbon")
    for blank in ("", "   ", "!?*()", "\n\t"):
        assert await mgr.search_history("alice", blank) == []
    bad: list[tuple[Any, dict[str, Any]]] = [
        ("lis\x00bon", {}),
        ("x" * 1025, {}),
        (b"lisbon", {}),
        (None, {}),
        ("lisbon", {"limit": 0}),
        ("lisbon", {"limit": 1001}),
        ("lisbon", {"limit": True}),
        ("lisbon", {"types": "message"}),
        ("lisbon", {"types": [1]}),
        ("lisbon", {"since": float("nan")}),
        ("lisbon", {"since": "yesterday"}),
    ]
    for query, kwargs in bad:
        with pytest.raises(InvalidSearchQuery):
            await mgr.search_history("alice", query, **kwargs)
    with pytest.raises(InvalidSearchQuery, match="user_id"):
        await mgr.search_history(None, "lisbon")
    with pytest.raises(InvalidUserId):
        await mgr.search_history("", "lisbon")
    assert len(await mgr.search_history("alice", "lisbon", session_id=s.session_id)) == 1


# ---------------------------------------------------------------------- index consistency
def marker(n: int) -> str:
    return f"marker{n}x"


async def add(manager: SessionManager, session: Session, *numbers: int) -> Session:
    for n in numbers:
        session.add_history_entry("message", {"content": f"entry {marker(n)} shared"})
    return await manager.update_session(session)


async def assert_index_consistent(store: SessionStore, user_id: str, *, gone: tuple[int, ...] = ()) -> None:
    """Every history entry of `user_id`'s live sessions is found by its marker word, at its
    session and seq, and nothing else is; the markers `gone` (of removed entries) find
    nothing; on SQL stores the engine's own index check passes too."""
    expected: dict[str, tuple[str, int, dict[str, Any]]] = {}
    for session in await store.get_user_sessions(user_id):
        entries = (await store.get_history(session.session_id, limit=100_000)).entries
        first = session.history_seq - len(entries) + 1
        for i, entry in enumerate(entries):
            word = entry["data"]["content"].split()[1]
            expected[word] = (session.session_id, first + i, entry)
    for word, (sid, seq, entry) in expected.items():
        hits = await store.search_history(user_id, word, limit=1000)
        assert [(h.session_id, h.seq, h.entry) for h in hits] == [(sid, seq, entry)], word
    shared = await store.search_history(user_id, "shared", limit=1000)
    assert sorted(ids(shared)) == sorted((sid, seq) for sid, seq, _ in expected.values())
    for n in gone:
        assert await store.search_history(user_id, marker(n)) == [], n
    check = getattr(store, "check_search_index", None)
    if check is not None:
        await check()


@searchable
async def test_index_consistent_after_inserts_and_appends(mgr: SessionManager) -> None:
    s = await add(mgr, await mgr.create_session("alice"), 1, 2)
    await add(mgr, s, 3)
    await add(mgr, await mgr.create_session("alice"), 4)
    await assert_index_consistent(mgr.store, "alice")


@searchable
async def test_index_consistent_after_cap_trimming(make_store: MakeStore) -> None:
    async with make_store(max_history=3, history_window=3) as store:
        mgr = SessionManager(store, auto_cleanup=False)
        s = await add(mgr, await mgr.create_session("alice"), 1, 2)
        s = await add(mgr, s, 3, 4)
        await add(mgr, s, 5)
        await assert_index_consistent(store, "alice", gone=(1, 2))
        assert len(await store.search_history("alice", "shared")) == 3


@searchable
async def test_index_consistent_after_delete(mgr: SessionManager) -> None:
    doomed = await add(mgr, await mgr.create_session("alice"), 1, 2)
    await add(mgr, await mgr.create_session("alice"), 3)
    await mgr.delete_session(doomed.session_id)
    await assert_index_consistent(mgr.store, "alice", gone=(1, 2))


@searchable
async def test_index_consistent_after_cleanup(mgr: SessionManager, clock: FakeClock) -> None:
    await add(mgr, await mgr.create_session("alice"), 1, 2)
    clock.advance(3000)
    await add(mgr, await mgr.create_session("alice"), 3)
    clock.advance(1000)
    assert await mgr.cleanup(force=True) == 1
    await assert_index_consistent(mgr.store, "alice", gone=(1, 2))


@searchable
async def test_index_consistent_after_regenerate_id(mgr: SessionManager) -> None:
    s = await add(mgr, await mgr.create_session("alice"), 1, 2)
    moved = await mgr.regenerate_id(s.session_id)
    await add(mgr, moved, 3)
    await assert_index_consistent(mgr.store, "alice")
    assert {h.session_id for h in await mgr.search_history("alice", "shared")} == {moved.session_id}
    assert await mgr.search_history(None, "shared", session_id=s.session_id) == []


@searchable
async def test_index_consistent_after_user_change(mgr: SessionManager) -> None:
    s = await add(mgr, await mgr.create_session(None), 1)
    s.user_id = "alice"
    await add(mgr, s, 2)
    await assert_index_consistent(mgr.store, "alice")
    s.user_id = "bob"
    await mgr.update_session(s)
    assert await mgr.search_history("alice", "shared") == []
    await assert_index_consistent(mgr.store, "bob")


@searchable
async def test_index_consistent_after_import(mgr: SessionManager, make_store: MakeStore, tmp_path: Path) -> None:
    await add(mgr, await mgr.create_session("alice"), 1, 2)
    await add(mgr, await mgr.create_session("alice"), 3)
    path = tmp_path / "sessions.jsonl"
    await export_sessions(mgr.store, path)
    async with make_store() as other:
        await import_sessions(other, path)
        await assert_index_consistent(other, "alice")
        assert len(await other.search_history("alice", "shared")) == 3


@searchable
async def test_index_consistent_after_migrate(mgr: SessionManager, make_store: MakeStore) -> None:
    await add(mgr, await mgr.create_session("alice"), 1, 2)
    await add(mgr, await mgr.create_session("alice"), 3)
    async with make_store() as other:
        await migrate(mgr.store, other)
        await assert_index_consistent(other, "alice")
        assert len(await other.search_history("alice", "shared")) == 3


@searchable
async def test_values_under_secret_looking_keys_are_not_indexed(mgr: SessionManager) -> None:
    session = await mgr.create_session("alice")
    session.add_history_entry("login", {"token": "zebra", "user": {"password": "zebra"}, "note": "hello zebra"})
    await mgr.update_session(session)
    hits = await mgr.search_history("alice", "zebra")
    assert len(hits) == 1 and hits[0].snippet == "hello **zebra**"
    assert hits[0].entry["data"]["token"] == "zebra"  # the entry itself is returned whole


@searchable
async def test_index_consistent_after_login(mgr: SessionManager) -> None:
    visitor = await add(mgr, await mgr.create_session(None), 1, 2)
    session = await mgr.login(visitor.session_id, "alice")
    await assert_index_consistent(mgr.store, "alice")
    assert {h.session_id for h in await mgr.search_history("alice", "shared")} == {session.session_id}
    assert await mgr.search_history(None, "shared", session_id=visitor.session_id) == []


@searchable
async def test_a_store_opened_without_index_history_keeps_no_text_and_says_so(make_store: MakeStore) -> None:
    async with make_store(index_history=False) as store:
        mgr = SessionManager(store, auto_cleanup=False)
        session = await add(mgr, await mgr.create_session("alice"), 1)
        session.add_history_entry("message", {"content": "secret plans"})
        write, _ = store.prepare_write(session)
        assert [row.text for row in write.history] == [""]
        with pytest.raises(SearchUnavailable, match="index_history=False"):
            await mgr.search_history("alice", "marker1x")
