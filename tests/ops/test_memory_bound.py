"""Export and import stream: the memory they use does not grow with the number of sessions.

Modest sizes keep the suite fast; `python -m benchmarks.export_rss` measures 100,000 sessions.
"""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from agent_sessions import Session, SessionStore
from agent_sessions.ops import export_sessions, import_sessions

from ..support import FakeClock

MakeStore = Callable[..., AbstractAsyncContextManager[SessionStore]]

SESSIONS = 1500
PAYLOAD = "x" * 4000  # ~4 KB per session: ~6 MB of session data in all
BATCH = 50
TRANSIENT_LIMIT = 2_500_000  # bytes of Python allocations beyond what the store itself keeps


async def fill(store: SessionStore, clock: FakeClock, n: int) -> None:
    for i in range(n):
        session = Session(
            user_id=f"user-{i % 100}",
            created_at=clock.now,
            last_accessed_at=clock.now,
            expiry_at=clock.now + 3600,
            state={"blob": PAYLOAD, "i": i},
        )
        history = [{"timestamp": clock.now, "type": "message", "data": {"i": i, "text": "hello"}} for _ in range(3)]
        await store.restore(session, history)


@pytest.fixture
async def big_store(store: SessionStore, clock: FakeClock) -> SessionStore:
    await fill(store, clock, SESSIONS)
    return store


async def test_export_memory_does_not_grow_with_the_store(big_store: SessionStore, tmp_path: Path) -> None:
    path = tmp_path / "big.jsonl.gz"
    tracemalloc.start()
    try:
        report = await export_sessions(big_store, path, batch_size=BATCH)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert report.sessions == SESSIONS
    # The whole store's data is ~6 MB; the export never holds more than a batch of it.
    assert peak < TRANSIENT_LIMIT, f"export peaked at {peak} bytes"


async def test_import_memory_is_bounded_by_what_the_store_keeps(
    big_store: SessionStore, make_store: MakeStore, tmp_path: Path
) -> None:
    path = tmp_path / "big.jsonl"
    await export_sessions(big_store, path, batch_size=BATCH)
    assert path.stat().st_size > SESSIONS * len(PAYLOAD)
    async with make_store() as dst:
        tracemalloc.start()
        try:
            report = await import_sessions(dst, path)
            retained, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert report.imported == SESSIONS
    # `retained` is what the destination keeps (everything, for the memory store; little for
    # the others); the import itself only ever holds a chunk of lines beyond that.
    assert peak - retained < TRANSIENT_LIMIT, f"import peaked {peak - retained} bytes above what it kept"
