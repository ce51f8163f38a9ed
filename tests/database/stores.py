"""Store factories for the contract suite: a temp SQLite file and the local PostgreSQL server.

Each PostgreSQL store gets a schema of its own, dropped (with everything in it) afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from agent_sessions import SessionStore
from agent_sessions.stores.sql import DatabaseSessionStore, create_database_engine

from ..support import PG_START, PG_URL, FakeClock, require_service


def pg_host_port(url: str = PG_URL) -> tuple[str, int]:
    parsed = make_url(url)
    return parsed.host or "127.0.0.1", parsed.port or 5432


def require_postgres() -> None:
    require_service("PostgreSQL", *pg_host_port(), PG_START)


def unique_schema() -> str:
    return f"agent_sessions_test_{uuid.uuid4().hex[:12]}"


async def drop_schema(schema: str) -> None:
    engine = create_database_engine(PG_URL, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await engine.dispose()


@asynccontextmanager
async def postgres_schema() -> AsyncIterator[str]:
    """A fresh schema name on the test server, dropped on exit."""
    require_postgres()
    schema = unique_schema()
    try:
        yield schema
    finally:
        await drop_schema(schema)


@asynccontextmanager
async def sqlite_store(clock: FakeClock, **options: Any) -> AsyncIterator[SessionStore]:
    with tempfile.TemporaryDirectory(prefix="agent_sessions_test_") as tmp:
        store = DatabaseSessionStore(f"sqlite+aiosqlite:///{Path(tmp) / 'sessions.db'}", clock=clock, **options)
        try:
            yield store
        finally:
            await store.close()


@asynccontextmanager
async def postgres_store(clock: FakeClock, **options: Any) -> AsyncIterator[SessionStore]:
    async with postgres_schema() as schema:
        store = DatabaseSessionStore(PG_URL, schema=schema, clock=clock, **options)
        try:
            yield store
        finally:
            await store.close()


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers (a hung database)."""
    held: list[asyncio.StreamWriter] = []

    async def hold(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(hold, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        for writer in held:
            writer.close()
        server.close()
        with contextlib.suppress(Exception):
            await server.wait_closed()
