"""Store factories for the contract suite: the local Redis and a test-owned Redis Cluster.

Each store gets a key prefix of its own, and every key under it is deleted afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agent_sessions import SessionStore
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.stores.redis.keys import glob_escape

from ..support import REDIS_START, REDIS_URL, FakeClock, require_service
from .servers import shared_cluster


def redis_host_port(url: str) -> tuple[str, int]:
    netloc = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    return host or "127.0.0.1", int(port or 6379)


def unique_prefix() -> str:
    return f"agent_sessions_test:{uuid.uuid4().hex[:12]}:"


async def delete_prefix(store: RedisSessionStore) -> None:
    """Delete every key under the store's prefix (on every node of a cluster)."""
    pattern = glob_escape(store.prefix) + "*"
    keys = [key async for key in store.client.scan_iter(match=pattern, count=500)]
    for key in keys:
        await store.client.delete(key)


@asynccontextmanager
async def prefixed_store(url: str, clock: FakeClock, **options: Any) -> AsyncIterator[SessionStore]:
    """A store on `url` under a fresh key prefix; every key under it is deleted afterwards."""
    store = RedisSessionStore(url, prefix=unique_prefix(), clock=clock, **options)
    try:
        yield store
    finally:
        try:
            await delete_prefix(store)
        finally:
            await store.close()


@asynccontextmanager
async def redis_store(clock: FakeClock, **options: Any) -> AsyncIterator[SessionStore]:
    require_service("Redis", *redis_host_port(REDIS_URL), REDIS_START)
    async with prefixed_store(REDIS_URL, clock, **options) as store:
        yield store


@asynccontextmanager
async def redis_cluster_store(clock: FakeClock, **options: Any) -> AsyncIterator[SessionStore]:
    async with prefixed_store(shared_cluster().url, clock, **options) as store:
        yield store
