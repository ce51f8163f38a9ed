"""The benchmark's backends: one `Backend` entry per row group (interface: `benchmarks.harness`)."""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from agent_sessions import MemorySessionStore, SessionStore
from agent_sessions.stores.sql import DatabaseSessionStore, create_database_engine

from .harness import Backend
from .raw import AsyncpgClient, aiosqlite_client, asyncpg_client, dict_client
from .redis_backend import redis_available, redis_raw, redis_store

PG_URL = os.environ.get("AGENT_SESSIONS_BENCH_PG", "postgresql+asyncpg://root@127.0.0.1:5432/test")


def reachable(url: str, default_port: int) -> str | None:
    parsed = make_url(url)
    host, port = parsed.host or "127.0.0.1", parsed.port or default_port
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return None
    except OSError as exc:
        return f"{host}:{port} unreachable ({exc})"


@asynccontextmanager
async def memory_store(**options: Any) -> AsyncIterator[SessionStore]:
    async with MemorySessionStore(**options) as store:
        yield store


@asynccontextmanager
async def sqlite_store(**options: Any) -> AsyncIterator[SessionStore]:
    with tempfile.TemporaryDirectory(prefix="agent_sessions_bench_") as tmp:
        async with DatabaseSessionStore(f"sqlite+aiosqlite:///{Path(tmp) / 'store.db'}", **options) as store:
            yield store


@asynccontextmanager
async def postgres_store(**options: Any) -> AsyncIterator[SessionStore]:
    schema = f"bench_store_{uuid.uuid4().hex[:10]}"
    try:
        async with DatabaseSessionStore(PG_URL, schema=schema, **options) as store:
            yield store
    finally:
        engine = create_database_engine(PG_URL, pool_size=1, max_overflow=0)
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await engine.dispose()


def postgres_raw() -> AbstractAsyncContextManager[AsyncpgClient]:
    return asyncpg_client(make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False))


BACKENDS: list[Backend] = [
    Backend(
        name="memory",
        raw_label="dict of records",
        available=lambda: None,
        library=memory_store,
        raw=dict_client,
        targets={"W1 c1": 0.02},
    ),
    Backend(
        name="sqlite",
        raw_label="aiosqlite",
        available=lambda: None,
        library=sqlite_store,
        raw=aiosqlite_client,
        targets={"W1 c1": 1.15, "W2": 1.3},
    ),
    Backend(
        name="postgres",
        raw_label="asyncpg",
        available=lambda: reachable(PG_URL, 5432),
        library=postgres_store,
        raw=postgres_raw,
        targets={"W1 c1": 1.4, "W1 c50": 1.8, "W2": 1.6},
    ),
    Backend(
        name="redis",
        raw_label="redis-py",
        available=redis_available,
        library=redis_store,
        raw=redis_raw,
        targets={"W1 c1": 1.0, "W2": 1.35},
    ),
]
