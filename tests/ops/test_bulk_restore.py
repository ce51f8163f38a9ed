"""Import and migration write sessions in batches (`SessionStore.restore_many`): the conflict
policies, the counts, expiry and per-session errors come out as if each session were written
alone, with conflicts at the start, middle and end of a batch and across batch boundaries."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import pytest

from agent_sessions import MemorySessionStore, Session, SessionConflict, SessionStore, SessionTooLarge, StoreUnavailable
from agent_sessions.ops import export_sessions, failed_line, import_sessions, migrate
from agent_sessions.stores.base import Restore, SessionWrite

from ..backends import BACKENDS
from ..support import FakeClock

MakeStore = Callable[..., AbstractAsyncContextManager[SessionStore]]

#: More sessions than one chunk of lines (256) and than one batch: conflicts span both.
MANY = 600
EXPORTED_VERSION = 3


def make_session(clock: FakeClock, i: int, *, lifetime: float = 3600, blob: str = "") -> Session:
    return Session(
        user_id=f"user-{i % 7}",
        created_at=clock.now,
        last_accessed_at=clock.now,
        expiry_at=clock.now + lifetime,
        state={"i": i, "blob": blob},
        version=EXPORTED_VERSION,
    )


def history(i: int) -> list[dict[str, Any]]:
    return [{"timestamp": 1.0 + k, "type": "message", "data": {"i": i, "k": k}} for k in range(i % 3)]


async def fill(store: SessionStore, sessions: list[Session]) -> None:
    items = [Restore(s, history(n)) for n, s in enumerate(sessions)]
    assert await store.restore_many(items) == [True] * len(items)


async def put_copy(dst: SessionStore, session: Session, version: int) -> None:
    """A different copy of `session` in `dst`, at `version` (1: older than the export, 9: newer)."""
    copy = session.model_copy(deep=True)
    copy.state = {"marker": "dst"}
    copy.version = version
    await dst.restore(copy, [], history_seq=0)


def line_of(index: int) -> int:
    """The export-file line of the session at `index` (no scopes: the header is line 1)."""
    return index + 2


@pytest.fixture
async def dst(make_store: MakeStore) -> AsyncIterator[SessionStore]:
    async with make_store() as s:
        yield s


async def exported(store: SessionStore, sessions: list[Session], path: Path) -> Path:
    await fill(store, sessions)
    await export_sessions(store, path)
    return path


def created_index(sessions: list[Session]) -> dict[str, int]:
    return {s.session_id: n for n, s in enumerate(sessions)}


def in_file_order(path: Path) -> list[str]:
    return [json.loads(x)["session"]["session_id"] for x in path.read_bytes().splitlines() if b'"kind":"session"' in x]


async def state_of(store: SessionStore, sid: str) -> dict[str, Any] | None:
    found = await store.get(sid)
    return None if found is None else dict(found.state)


# ---------------------------------------------------------------- import
@pytest.mark.parametrize(
    ("policy", "counts"),
    [
        ("skip", {"imported": MANY - 5, "replaced": 0, "skipped": 5}),
        ("newer", {"imported": MANY - 5, "replaced": 3, "skipped": 2}),
        ("overwrite", {"imported": MANY - 5, "replaced": 5, "skipped": 0}),
    ],
)
async def test_import_applies_the_policy_to_each_conflict_across_batches(
    store: SessionStore, dst: SessionStore, clock: FakeClock, tmp_path: Path, policy: str, counts: dict[str, int]
) -> None:
    sessions = [make_session(clock, i) for i in range(MANY)]
    path = await exported(store, sessions, tmp_path / "many.jsonl")
    ids = in_file_order(path)
    n = created_index(sessions)
    older, newer = [0, 255, 599], [256, 300]  # first, chunk edges, middle, last
    for i in older:
        await put_copy(dst, (await store.get(ids[i])) or pytest.fail("missing"), 1)
    for i in newer:
        await put_copy(dst, (await store.get(ids[i])) or pytest.fail("missing"), 9)
    report = await import_sessions(dst, path, on_conflict=policy)  # type: ignore[arg-type]
    assert {"imported": report.imported, "replaced": report.replaced, "skipped": report.skipped} == counts
    assert report.expired == 0
    written = [
        i for i in range(MANY) if policy == "overwrite" or i not in newer and (policy == "newer" or i not in older)
    ]
    assert report.history_entries == sum(len(history(n[ids[i]])) for i in written)
    for i in older + newer:
        state = await state_of(dst, ids[i])
        assert state == ({"i": n[ids[i]], "blob": ""} if i in written else {"marker": "dst"}), (policy, i)
    for i in (1, 254, 257, 598):
        assert await state_of(dst, ids[i]) == {"i": n[ids[i]], "blob": ""}
        page = await dst.get_history(ids[i], limit=10)
        assert page.entries == history(n[ids[i]])


async def test_error_policy_stops_at_the_conflict_in_the_middle_of_a_batch(
    store: SessionStore, dst: SessionStore, clock: FakeClock, tmp_path: Path
) -> None:
    path = await exported(store, [make_session(clock, i) for i in range(40)], tmp_path / "b.jsonl")
    ids = in_file_order(path)
    await put_copy(dst, (await store.get(ids[17])) or pytest.fail("missing"), 1)
    with pytest.raises(SessionConflict, match="already exists") as info:
        await import_sessions(dst, path, on_conflict="error")
    assert failed_line(info.value) == line_of(17)
    assert [await state_of(dst, sid) is not None for sid in ids] == [True] * 18 + [False] * 22
    assert await state_of(dst, ids[17]) == {"marker": "dst"}


async def test_a_session_the_store_refuses_stops_the_import_at_its_line(
    store: SessionStore, make_store: MakeStore, clock: FakeClock, tmp_path: Path
) -> None:
    sessions = [make_session(clock, i, blob="x" * (20_000 if i == 23 else 10)) for i in range(40)]
    path = await exported(store, sessions, tmp_path / "b.jsonl")
    ids = in_file_order(path)
    big = ids.index(sessions[23].session_id)
    async with make_store(max_session_bytes=8_000) as small:
        with pytest.raises(SessionTooLarge) as info:
            await import_sessions(small, path)
        assert failed_line(info.value) == line_of(big)
        present = [await small.get(sid) is not None for sid in ids]
    assert present == [True] * big + [False] * (40 - big)


async def test_expired_sessions_and_expired_rows_count_as_one_by_one(
    store: SessionStore, dst: SessionStore, clock: FakeClock, tmp_path: Path
) -> None:
    sessions = [make_session(clock, i, lifetime=100 if i in (5, 6, 39) else 10_000) for i in range(40)]
    path = await exported(store, sessions, tmp_path / "b.jsonl")
    ids = in_file_order(path)
    short = {ids.index(sessions[i].session_id) for i in (5, 6, 39)}
    stale = next(i for i in range(40) if i not in short)
    # An expired row cleanup has not removed yet: the import replaces it, counted as imported.
    expiring = (await store.get(ids[stale])) or pytest.fail("missing")
    expiring.expiry_at = clock.now + 50
    await put_copy(dst, expiring, 9)
    clock.advance(200)
    report = await import_sessions(dst, path, on_conflict="skip")
    assert (report.imported, report.expired, report.skipped, report.replaced) == (37, 3, 0, 0)
    assert await state_of(dst, ids[stale]) == {"i": created_index(sessions)[ids[stale]], "blob": ""}
    for i in short:
        assert await dst.get(ids[i]) is None


@pytest.mark.parametrize(("policy", "outcome"), [("skip", "skipped"), ("overwrite", "replaced")])
async def test_an_id_repeated_in_one_batch_meets_the_policy_like_any_existing_id(
    store: SessionStore, dst: SessionStore, clock: FakeClock, tmp_path: Path, policy: str, outcome: str
) -> None:
    path = await exported(store, [make_session(clock, i) for i in range(10)], tmp_path / "b.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    again = json.loads(lines[4])
    again["session"]["state"] = {"second": True}
    end = json.loads(lines[-1])
    end["sessions"] += 1
    end["history_entries"] += len(again["history"])
    path.write_bytes(b"".join([*lines[:-1], json.dumps(again).encode() + b"\n", json.dumps(end).encode() + b"\n"]))
    report = await import_sessions(dst, path, on_conflict=policy)  # type: ignore[arg-type]
    assert report.imported == 10
    assert (report.skipped, report.replaced) == ((1, 0) if outcome == "skipped" else (0, 1))
    state = await state_of(dst, again["session"]["session_id"])
    assert (state == {"second": True}) is (policy == "overwrite")


async def test_dry_run_counts_what_the_import_then_does_and_writes_nothing(
    store: SessionStore, dst: SessionStore, clock: FakeClock, tmp_path: Path
) -> None:
    path = await exported(store, [make_session(clock, i) for i in range(30)], tmp_path / "b.jsonl")
    ids = in_file_order(path)
    await put_copy(dst, (await store.get(ids[3])) or pytest.fail("missing"), 1)
    await put_copy(dst, (await store.get(ids[20])) or pytest.fail("missing"), 9)
    planned = await import_sessions(dst, path, on_conflict="newer", dry_run=True)
    assert await dst.get(ids[0]) is None
    done = await import_sessions(dst, path, on_conflict="newer")
    assert planned == done
    assert (done.imported, done.replaced, done.skipped) == (28, 1, 1)


class UnreachableForBatches(MemorySessionStore):
    """A store whose batched write fails as an unreachable backend does."""

    async def write_many(self, writes: list[SessionWrite], now: float) -> list[bool]:
        raise StoreUnavailable("the store went away")


async def test_an_unreachable_store_names_the_first_line_of_the_batch_and_retries_nothing(
    clock: FakeClock, tmp_path: Path
) -> None:
    async with MemorySessionStore(clock=clock) as src:
        path = await exported(src, [make_session(clock, i) for i in range(12)], tmp_path / "b.jsonl")
    async with UnreachableForBatches(clock=clock) as dst:
        with pytest.raises(StoreUnavailable) as info:
            await import_sessions(dst, path)
        assert failed_line(info.value) == line_of(0)
        assert [s async for s in dst.iter_sessions()] == []


# ---------------------------------------------------------------- migrate
@pytest.fixture(params=[f"memory->{b}" for b in sorted(BACKENDS)])
async def pair(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[tuple[SessionStore, SessionStore]]:
    src_name, dst_name = str(request.param).split("->")
    async with BACKENDS[src_name](clock) as src, BACKENDS[dst_name](clock) as dst:
        yield src, dst


async def test_migrate_applies_the_policy_to_conflicts_on_batch_edges(
    pair: tuple[SessionStore, SessionStore], clock: FakeClock
) -> None:
    src, dst = pair
    await fill(src, [make_session(clock, i) for i in range(40)])
    order = [s.session_id async for s in src.iter_sessions(batch_size=7)]
    older, newer = [0, 6, 7], [13, 39]  # batches of 7: first, last of one, first of the next
    for i in older + newer:
        await put_copy(dst, (await src.get(order[i])) or pytest.fail("missing"), 1 if i in older else 9)
    seen: list[int] = []
    report = await migrate(src, dst, batch_size=7, progress=lambda r: seen.append(r.sessions_seen))
    assert (report.imported, report.replaced, report.skipped, report.expired) == (35, 3, 2, 0)
    assert seen == list(range(1, 41))
    for i in older:
        assert (await state_of(dst, order[i])) == (await state_of(src, order[i]))
    for i in newer:
        assert await state_of(dst, order[i]) == {"marker": "dst"}
    with pytest.raises(SessionConflict):
        await migrate(src, dst, batch_size=7, on_conflict="error")
