"""The Redis rows of the store benchmark: `RedisSessionStore` next to a bare redis-py baseline.

The baseline does the work the simplest way, one command per step: ``GET`` the JSON record
and ``LRANGE`` the history window (decoded), then ``SET`` the record and ``RPUSH`` the new
entry. It checks no version (that needs ``WATCH``/``MULTI`` or a script, which is what the
library does), so it does strictly less work than the library: the comparison favours it.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from redis.asyncio import Redis

from agent_sessions import SessionStore
from agent_sessions.stores.redis import RedisSessionStore

from .harness import HISTORY_WINDOW

REDIS_URL = os.environ.get("AGENT_SESSIONS_BENCH_REDIS", "redis://127.0.0.1:6379/0")


def redis_available() -> str | None:
    netloc = REDIS_URL.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1]
    host, _, port = netloc.partition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port or 6379)), timeout=1.0):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


async def delete_prefix(client: Redis, prefix: str) -> None:
    keys = [key async for key in client.scan_iter(match=prefix + "*", count=1000)]
    for start in range(0, len(keys), 500):
        await client.delete(*keys[start : start + 500])


@asynccontextmanager
async def redis_store(**options: Any) -> AsyncIterator[SessionStore]:
    prefix = f"bench_store_{uuid.uuid4().hex[:10]}:"
    store = RedisSessionStore(REDIS_URL, prefix=prefix, **options)
    try:
        yield store
    finally:
        try:
            client = store.client
            assert isinstance(client, Redis)
            await delete_prefix(client, prefix)
        finally:
            await store.close()


class RedisRawClient:
    """redis-py, one command per step: GET + LRANGE to read, SET + RPUSH to save."""

    def __init__(self, client: Redis, prefix: str) -> None:
        self.client = client
        self.prefix = prefix

    async def create(self, session_id: str, user_id: str) -> None:
        record = {"version": 1, "user_id": user_id, "state": {}, "preferences": {}}
        await self.client.set(self.prefix + session_id, json.dumps(record))

    async def _load(self, session_id: str) -> tuple[dict[str, Any], list[Any]]:
        raw = await self.client.get(self.prefix + session_id)
        if raw is None:
            raise AssertionError("a benchmark session vanished")
        rows = await self.client.lrange(self.prefix + session_id + ":history", -HISTORY_WINDOW, -1)
        return json.loads(raw), [json.loads(row) for row in rows]

    async def turn(self, session_id: str, entry: dict[str, Any]) -> None:
        record, _history = await self._load(session_id)
        record["state"]["turn_count"] = record["state"].get("turn_count", 0) + 1
        record["version"] += 1
        await self.client.set(self.prefix + session_id, json.dumps(record))
        await self.client.rpush(self.prefix + session_id + ":history", json.dumps(entry))

    async def read(self, session_id: str) -> tuple[int, int]:
        record, history = await self._load(session_id)
        return len(history), record["state"].get("turn_count", 0)

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None:
        """SET + RPUSH per session, in pipelines of 500 sessions."""
        payloads = [json.dumps(entry) for entry in history]
        for start in range(0, len(sessions), 500):
            pipe = self.client.pipeline(transaction=False)
            for session_id, user_id in sessions[start : start + 500]:
                record = {"version": 1, "user_id": user_id, "state": {}, "preferences": {}}
                pipe.set(self.prefix + session_id, json.dumps(record))
                if payloads:
                    pipe.rpush(self.prefix + session_id + ":history", *payloads)
            await pipe.execute()


@asynccontextmanager
async def redis_raw() -> AsyncIterator[RedisRawClient]:
    prefix = f"bench_raw_{uuid.uuid4().hex[:10]}:"
    client = Redis.from_url(REDIS_URL)
    try:
        yield RedisRawClient(client, prefix)
    finally:
        try:
            await delete_prefix(client, prefix)
        finally:
            await client.aclose()
