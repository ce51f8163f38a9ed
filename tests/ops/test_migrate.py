"""Migration between every pair of backends: complete, batched, resumable, expiry-preserving."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from agent_sessions import SessionManager, SessionStore
from agent_sessions.ops import TransferReport, migrate

from ..backends import BACKENDS
from ..support import FakeClock
from .helpers import populate, scopes, snapshot

#: Every ordered pair of backends, for the full copy; the finer behaviours (resume, expiry,
#: re-runs) depend on the destination, so they run once per destination, from memory.
ALL_PAIRS = [f"{a}->{b}" for a, b in itertools.product(sorted(BACKENDS), repeat=2)]
INTO_EACH = [f"memory->{b}" for b in sorted(BACKENDS)]


@pytest.fixture
async def stores(request: pytest.FixtureRequest, clock: FakeClock) -> AsyncIterator[tuple[SessionStore, SessionStore]]:
    """A (source, destination) pair of fresh stores for the ordered pair of backends in the param."""
    src_name, dst_name = str(request.param).split("->")
    async with BACKENDS[src_name](clock) as src, BACKENDS[dst_name](clock) as dst:
        yield src, dst


def pairs(names: list[str]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("stores", names, indirect=True)


@pairs(ALL_PAIRS)
async def test_migrate_copies_every_session_history_and_scope(stores: tuple[SessionStore, SessionStore]) -> None:
    src, dst = stores
    ids = await populate(src, users=3, per_user=2, anonymous=2, history=3, long_history=src.history_window + 10)
    report = await migrate(src, dst, batch_size=3)
    assert (report.imported, report.skipped, report.expired) == (len(ids), 0, 0)
    assert report.scopes == 3 * 2 + 1  # user:plan and pref:tone per user, app:motd once
    assert await snapshot(dst) == await snapshot(src)
    assert await scopes(dst) == await scopes(src)
    for user in ("user-0", "user-1", "user-2"):
        assert {s.session_id for s in await dst.get_user_sessions(user)} == {
            s.session_id for s in await src.get_user_sessions(user)
        }


@pairs(INTO_EACH)
async def test_migrate_preserves_expiry_and_does_not_resurrect(
    stores: tuple[SessionStore, SessionStore], clock: FakeClock
) -> None:
    src, dst = stores
    manager = SessionManager(src, session_lifetime=100, auto_cleanup=False)
    dead = await manager.create_session("alice")
    manager.session_lifetime = 1000
    alive = await manager.create_session("alice")
    clock.advance(200)
    report = await migrate(src, dst)
    assert (report.imported, report.expired) == (1, 0)
    assert await dst.get(dead.session_id) is None
    copied = await dst.get(alive.session_id)
    assert copied is not None and copied.expiry_at == alive.expiry_at
    clock.advance(1000)
    assert await dst.get(alive.session_id) is None


@pairs(INTO_EACH)
async def test_interrupted_migration_resumes_and_is_idempotent(stores: tuple[SessionStore, SessionStore]) -> None:
    src, dst = stores
    ids = await populate(src, users=5, per_user=2, anonymous=0)

    def interrupt_after_four(report: TransferReport) -> None:
        if report.sessions_seen == 4:
            raise ConnectionError("network dropped")

    with pytest.raises(ConnectionError):
        await migrate(src, dst, batch_size=3, progress=interrupt_after_four)
    # Sessions are written in batches of 3: the interruption in the second batch leaves both
    # batches written whole (every session complete), the rest absent.
    copied = await snapshot(dst)
    source = await snapshot(src)
    assert len(copied) == 6
    assert all(copied[sid] == source[sid] for sid in copied)

    resumed = await migrate(src, dst, batch_size=3)
    assert (resumed.imported, resumed.skipped) == (len(ids) - 6, 6)
    assert await snapshot(dst) == await snapshot(src)

    again = await migrate(src, dst)
    assert (again.imported, again.replaced, again.skipped, again.scopes) == (0, 0, len(ids), 0)


@pairs(INTO_EACH)
async def test_rerun_picks_up_sessions_changed_since(stores: tuple[SessionStore, SessionStore]) -> None:
    src, dst = stores
    ids = await populate(src, users=2, per_user=1, anonymous=0)
    await migrate(src, dst)
    manager = SessionManager(src, auto_cleanup=False)
    await manager.mutate(ids[0], lambda s: s.set("changed", True))
    report = await migrate(src, dst)
    assert (report.replaced, report.skipped) == (1, 1)
    copied = await dst.get(ids[0])
    assert copied is not None and copied.state["changed"] is True and copied.version == 4
    assert await snapshot(dst) == await snapshot(src)


@pairs(INTO_EACH)
async def test_progress_sees_every_session(stores: tuple[SessionStore, SessionStore]) -> None:
    src, dst = stores
    ids = await populate(src, users=2, per_user=2, anonymous=1)
    seen: list[int] = []
    await migrate(src, dst, batch_size=2, progress=lambda r: seen.append(r.sessions_seen))
    assert seen == list(range(1, len(ids) + 1))


@pairs(["memory->memory"])
async def test_migrate_rejects_bad_arguments(stores: tuple[SessionStore, SessionStore]) -> None:
    src, dst = stores
    with pytest.raises(ValueError, match="batch_size"):
        await migrate(src, dst, batch_size=0)
    with pytest.raises(ValueError, match="on_conflict"):
        await migrate(src, dst, on_conflict="sometimes")  # type: ignore[arg-type]
