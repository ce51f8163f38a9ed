"""Cursor-paged listing (`SessionStore.list_sessions` over the `list_page` primitive), on every
backend: keyset order, limits, expiry, cursors, and exactly-once paging while sessions are
created and deleted."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from agent_sessions import (
    InvalidCursor,
    InvalidLimit,
    InvalidUserId,
    Session,
    SessionManager,
    SessionPage,
    SessionStore,
)
from agent_sessions.listing import MAX_PAGE_SIZE, encode_cursor, list_records
from agent_sessions.stores.base import Restore

from ..support import FakeClock

pytestmark = pytest.mark.asyncio


async def fill(store: SessionStore, clock: FakeClock, count: int, *, user: str | None = None) -> list[str]:
    """`count` sessions (of `user`, or alternating between u0 and u1 and none) via `restore_many`."""
    items = []
    for i in range(count):
        owner = user if user is not None else (None, "u0", "u1")[i % 3]
        s = Session(user_id=owner, created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 600)
        s.set("i", i)
        items.append(Restore(s, []))
    assert await store.restore_many(items) == [True] * count
    return [item.session.session_id for item in items]


async def every_page(store: SessionStore, user: str | None, limit: int) -> list[list[str]]:
    pages: list[list[str]] = []
    cursor = None
    while True:
        page = await store.list_sessions(user, limit=limit, cursor=cursor)
        assert isinstance(page, SessionPage)
        pages.append([s.session_id for s in page.sessions])
        if page.next_cursor is None:
            return pages
        cursor = page.next_cursor


async def test_paging_all_sessions_returns_each_once_in_one_stable_order(store: SessionStore, clock: FakeClock) -> None:
    ids = await fill(store, clock, 23)
    pages = await every_page(store, None, 5)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    listed = [sid for page in pages for sid in page]
    assert sorted(listed) == sorted(ids) and len(set(listed)) == len(ids)
    # The order is the backend's id order, whatever the page size.
    for limit in (1, 7, 23, 1000):
        assert [sid for page in await every_page(store, None, limit) for sid in page] == listed


async def test_sessions_come_back_whole(store: SessionStore, clock: FakeClock) -> None:
    s = Session(user_id="u0", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 600)
    s.set("k", "v")
    s.add_history_entry("turn", {"n": 1})
    await store.set(s)
    await store.write_scopes("u0", {"pref:theme": "dark", "app:motd": "hi"})
    page = await store.list_sessions("u0")
    assert len(page.sessions) == 1 and page.next_cursor is None
    loaded = page.sessions[0]
    assert loaded.session_id == s.session_id and loaded.get("k") == "v" and loaded.version == 1
    assert [e["data"] for e in loaded.history] == [{"n": 1}]
    assert loaded.preferences == {"theme": "dark"} and loaded.get("app:motd") == "hi"


async def test_a_listing_without_history_reads_no_window(store: SessionStore, clock: FakeClock) -> None:
    s = Session(user_id="u0", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 600)
    for n in range(3):
        s.add_history_entry("turn", {"n": n})
    s.set("k", 1)
    await store.set(s)
    for user in (None, "u0"):
        (bare,) = (await store.list_sessions(user, with_history=False)).sessions
        assert bare.history == [] and bare.history_seq == 3 and bare.get("k") == 1
    # Saved after a bare listing, the history goes on from where it was.
    bare.add_history_entry("turn", {"n": 3})
    await store.set(bare)
    page = await store.get_history(s.session_id, limit=10)
    assert [e["data"]["n"] for e in page.entries] == [0, 1, 2, 3]
    partial = await store.load_records([s.session_id], clock.now, window=2)
    assert [len(p.history) for p in partial] == [2]


async def test_paging_one_users_sessions_lists_only_theirs(store: SessionStore, clock: FakeClock) -> None:
    ids = await fill(store, clock, 30)
    theirs = [sid for i, sid in enumerate(ids) if i % 3 == 1]
    pages = await every_page(store, "u0", 4)
    assert [len(p) for p in pages] == [4, 4, 2]
    listed = [sid for page in pages for sid in page]
    assert sorted(listed) == sorted(theirs) and len(listed) == len(theirs)
    assert [sid for page in await every_page(store, "u0", 1000) for sid in page] == listed
    assert (await store.list_sessions("nobody")) == SessionPage([], None)
    assert sorted(s.session_id for s in await store.get_user_sessions("u0")) == sorted(theirs)


async def test_limit_edges(store: SessionStore, clock: FakeClock) -> None:
    assert await store.list_sessions() == SessionPage([], None)
    ids = await fill(store, clock, 4, user="u")
    exact = await store.list_sessions(limit=4)
    assert len(exact.sessions) == 4 and exact.next_cursor is None  # a full last page has no cursor
    one = await store.list_sessions("u", limit=1)
    assert len(one.sessions) == 1 and one.next_cursor is not None
    assert len((await store.list_sessions(limit=MAX_PAGE_SIZE)).sessions) == len(ids)
    for bad in (0, -1, MAX_PAGE_SIZE + 1, 1.5, "10", True, None):
        with pytest.raises(InvalidLimit):
            await store.list_sessions(limit=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidUserId):
        await store.list_sessions("")


async def test_expired_sessions_are_never_listed(store: SessionStore, clock: FakeClock) -> None:
    short = Session(user_id="u", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 10)
    lasting = Session(user_id="u", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 1000)
    forever = Session(user_id="u", created_at=clock.now, last_accessed_at=clock.now)
    for s in (short, lasting, forever):
        await store.set(s)
    clock.advance(11)  # expired under the store clock, not yet cleaned up
    live = {lasting.session_id, forever.session_id}
    for user in (None, "u"):
        for limit in (1, 2, 50):
            assert {sid for page in await every_page(store, user, limit) for sid in page} == live
    await store.cleanup_expired()
    assert {s.session_id for s in (await store.list_sessions()).sessions} == live


async def test_deleted_sessions_are_not_listed(store: SessionStore, clock: FakeClock) -> None:
    ids = await fill(store, clock, 12, user="u")
    for sid in ids[::2]:
        assert await store.delete(sid)
    for user in (None, "u"):
        assert sorted(sid for page in await every_page(store, user, 3) for sid in page) == sorted(ids[1::2])


async def test_bad_cursors_are_typed_errors(store: SessionStore, clock: FakeClock) -> None:
    await fill(store, clock, 3, user="u")
    good = (await store.list_sessions("u", limit=1)).next_cursor
    assert good is not None
    body = json.loads(base64.urlsafe_b64decode(good + "=" * (-len(good) % 4)))
    forged = dict(body, after="../" + body["after"][3:])

    def enc(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode()

    bad = ["", "not base64 !", "x" * 300, "é", enc([1]), enc({"v": 2, "after": body["after"], "user": None})]
    bad += [enc(forged), enc(dict(body, extra=1)), good[:-3], 42]
    for cursor in bad:
        with pytest.raises(InvalidCursor):
            await store.list_sessions("u", cursor=cursor)  # type: ignore[arg-type]
    with pytest.raises(InvalidCursor):  # another user's listing, or the listing of all sessions
        await store.list_sessions("v", cursor=good)
    with pytest.raises(InvalidCursor):
        await store.list_sessions(cursor=good)
    # A well-formed cursor only names a position: past the last id, the page is empty.
    assert await store.list_sessions("u", cursor=encode_cursor("z" * 43, "u")) == SessionPage([], None)


async def test_paging_while_sessions_are_created_and_deleted(store: SessionStore, clock: FakeClock) -> None:
    """Sessions present for the whole paging appear exactly once; sessions deleted before the
    paging started never appear; a session deleted during the paging never appears in a page
    fetched after its deletion returned; no id appears twice."""
    for user in (None, "u0"):
        stable = await fill(store, clock, 40, user=user)
        doomed_before = await fill(store, clock, 10, user=user)
        for sid in doomed_before:
            await store.delete(sid)
        churn = await fill(store, clock, 20, user=user)
        deleted: set[str] = set()
        seen: list[str] = []
        cursor = None
        step = 0
        while True:
            page = await store.list_sessions(user, limit=7, cursor=cursor)
            listed = [s.session_id for s in page.sessions]
            assert not deleted & set(listed)
            seen += listed
            # Between pages: create a few, delete a few of the churn set.
            await fill(store, clock, 3, user=user)
            for sid in churn[step * 2 : step * 2 + 2]:
                await store.delete(sid)
                deleted.add(sid)
            step += 1
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert len(seen) == len(set(seen))
        assert set(stable) <= set(seen)
        assert not set(doomed_before) & set(seen)
        for sid in await every_page(store, None, 1000):
            for one in sid:
                await store.delete(one)


async def test_paging_races_concurrent_writers(store: SessionStore, clock: FakeClock) -> None:
    """Concurrent tasks create and delete sessions while another pages: the stable ones are each
    listed exactly once."""
    stable = set(await fill(store, clock, 60, user="u"))
    stop = asyncio.Event()

    async def churn() -> None:
        while not stop.is_set():
            made = await fill(store, clock, 2, user="u")
            await store.delete(made[0])
            await asyncio.sleep(0)

    writers = [asyncio.create_task(churn()) for _ in range(3)]
    try:
        for user in ("u", None):
            seen = [sid for page in await every_page(store, user, 6) for sid in page]
            assert len(seen) == len(set(seen))
            assert stable <= set(seen)
    finally:
        stop.set()
        await asyncio.gather(*writers)


async def test_manager_list_sessions_pages_through_the_store(store: SessionStore, clock: FakeClock) -> None:
    manager = SessionManager(store, auto_cleanup=False)
    made = [await manager.create_session("m", {"n": n}) for n in range(5)]
    first = await manager.list_sessions("m", limit=3)
    assert len(first.sessions) == 3 and first.next_cursor is not None
    rest = await manager.list_sessions("m", limit=3, cursor=first.next_cursor)
    assert rest.next_cursor is None
    got = {s.session_id: s.get("n") for s in first.sessions + rest.sessions}
    assert got == {s.session_id: s.get("n") for s in made}
    assert len((await manager.list_sessions()).sessions) == 5


async def test_list_records_pages_like_list_sessions_without_tracked_sessions(
    store: SessionStore, clock: FakeClock
) -> None:
    ids = await fill(store, clock, 9, user="r")
    await store.write_scopes("r", {"user:lang": "fr"})
    gone = Session(user_id="r", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 5)
    await store.set(gone)
    clock.advance(6)
    records: list[dict[str, object]] = []
    cursor = None
    while True:
        page = await list_records(store, "r", limit=4, cursor=cursor)
        records += page.records
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert [r["session_id"] for r in records] == [sid for p in await every_page(store, "r", 4) for sid in p]
    assert sorted(str(r["session_id"]) for r in records) == sorted(ids)
    first = records[0]
    state = first["state"]
    assert isinstance(state, dict) and state["user:lang"] == "fr" and "i" in state
    assert first["history"] == [] and first["user_id"] == "r"
