"""The backends the contract suite runs on: one entry per backend, each a factory that yields
a fresh, isolated store using the given clock and options, and cleans up after itself.

Adding a backend to every contract test = adding one entry to `BACKENDS`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from agent_sessions import MemorySessionStore, SessionStore

from .database.stores import postgres_store, sqlite_store
from .redis.stores import redis_cluster_store, redis_store
from .support import FakeClock

StoreFactory = Callable[..., AbstractAsyncContextManager[SessionStore]]


@asynccontextmanager
async def memory_store(clock: FakeClock, **options: Any) -> AsyncIterator[SessionStore]:
    store = MemorySessionStore(clock=clock, **options)
    try:
        yield store
    finally:
        await store.close()


BACKENDS: dict[str, StoreFactory] = {
    "memory": memory_store,
    "sqlite": sqlite_store,
    "postgres": postgres_store,
    "redis": redis_store,
    "redis_cluster": redis_cluster_store,
}
