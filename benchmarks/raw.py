"""Raw baselines: the benchmark's work done with the bare client, the simplest correct way.

Each keeps a session as one JSON record with a version (checked on save) and its history as
separate rows, reads the record plus the newest `HISTORY_WINDOW` entries and decodes them —
the same work the library does, without the library.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from .harness import HISTORY_WINDOW


def new_record(user_id: str) -> dict[str, Any]:
    return {"user_id": user_id, "state": {}, "preferences": {}}


class DictClient:
    """Records as dicts in a dict: no copies, no encoding."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}

    async def create(self, session_id: str, user_id: str) -> None:
        self.records[session_id] = {"version": 1, "record": new_record(user_id), "history": []}

    async def turn(self, session_id: str, entry: dict[str, Any]) -> None:
        stored = self.records[session_id]
        record, _window = stored["record"], stored["history"][-HISTORY_WINDOW:]
        record["state"]["turn_count"] = record["state"].get("turn_count", 0) + 1
        stored["history"].append(entry)
        stored["version"] += 1

    async def read(self, session_id: str) -> tuple[int, int]:
        stored = self.records[session_id]
        return len(stored["history"][-HISTORY_WINDOW:]), stored["record"]["state"].get("turn_count", 0)

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None:
        for session_id, user_id in sessions:
            self.records[session_id] = {"version": 1, "record": new_record(user_id), "history": list(history)}


@asynccontextmanager
async def dict_client() -> AsyncIterator[DictClient]:
    yield DictClient()


SQL_SCHEMA = (
    "CREATE TABLE sessions (session_id TEXT PRIMARY KEY, user_id TEXT, version INTEGER NOT NULL, "
    "history_seq INTEGER NOT NULL, record TEXT NOT NULL)",
    "CREATE INDEX ix_sessions_user ON sessions (user_id)",
    "CREATE TABLE history (session_id TEXT NOT NULL, seq INTEGER NOT NULL, payload TEXT NOT NULL, "
    "PRIMARY KEY (session_id, seq))",
)


class AiosqliteClient:
    """One aiosqlite connection (WAL, synchronous=NORMAL like the store); a lock keeps each
    turn's transaction to itself when tasks share the connection."""

    def __init__(self, db: Any) -> None:
        self.db = db
        self.lock = asyncio.Lock()

    async def create(self, session_id: str, user_id: str) -> None:
        async with self.lock:
            await self.db.execute(
                "INSERT INTO sessions VALUES (?, ?, 1, 0, ?)", (session_id, user_id, json.dumps(new_record(user_id)))
            )
            await self.db.commit()

    async def _load(self, session_id: str) -> tuple[int, int, dict[str, Any], list[Any]]:
        rows = await self.db.execute_fetchall(
            "SELECT version, history_seq, record FROM sessions WHERE session_id = ?", (session_id,)
        )
        version, seq, record = rows[0]
        payloads = await self.db.execute_fetchall(
            "SELECT payload FROM history WHERE session_id = ? ORDER BY seq DESC LIMIT ?", (session_id, HISTORY_WINDOW)
        )
        return version, seq, json.loads(record), [json.loads(p) for (p,) in reversed(list(payloads))]

    async def turn(self, session_id: str, entry: dict[str, Any]) -> None:
        async with self.lock:
            version, seq, record, _history = await self._load(session_id)
            record["state"]["turn_count"] = record["state"].get("turn_count", 0) + 1
            cursor = await self.db.execute(
                "UPDATE sessions SET version = ?, history_seq = ?, record = ? WHERE session_id = ? AND version = ?",
                (version + 1, seq + 1, json.dumps(record), session_id, version),
            )
            if cursor.rowcount != 1:
                raise RuntimeError("raw baseline lost a compare-and-set")
            await self.db.execute("INSERT INTO history VALUES (?, ?, ?)", (session_id, seq + 1, json.dumps(entry)))
            await self.db.commit()

    async def read(self, session_id: str) -> tuple[int, int]:
        async with self.lock:
            _, _, record, history = await self._load(session_id)
        return len(history), record["state"].get("turn_count", 0)

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None:
        """`executemany` in one transaction."""
        payloads = [json.dumps(entry) for entry in history]
        async with self.lock:
            await self.db.executemany(
                "INSERT INTO sessions VALUES (?, ?, 1, ?, ?)",
                [(sid, uid, len(payloads), json.dumps(new_record(uid))) for sid, uid in sessions],
            )
            await self.db.executemany(
                "INSERT INTO history VALUES (?, ?, ?)",
                [(sid, seq, p) for sid, _ in sessions for seq, p in enumerate(payloads, 1)],
            )
            await self.db.commit()


@asynccontextmanager
async def aiosqlite_client() -> AsyncIterator[AiosqliteClient]:
    import aiosqlite

    with tempfile.TemporaryDirectory(prefix="agent_sessions_bench_") as tmp:
        db = await aiosqlite.connect(Path(tmp) / "raw.db", timeout=5.0)
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")
            for ddl in SQL_SCHEMA:
                await db.execute(ddl)
            await db.commit()
            yield AiosqliteClient(db)
        finally:
            await db.close()


class AsyncpgClient:
    """An asyncpg pool (up to 20 connections, like the store's engine); one connection per turn."""

    def __init__(self, pool: Any) -> None:
        self.pool = pool

    async def create(self, session_id: str, user_id: str) -> None:
        await self.pool.execute(
            "INSERT INTO sessions VALUES ($1, $2, 1, 0, $3)", session_id, user_id, json.dumps(new_record(user_id))
        )

    @staticmethod
    async def _load(conn: Any, session_id: str) -> tuple[int, int, dict[str, Any], list[Any]]:
        row = await conn.fetchrow("SELECT version, history_seq, record FROM sessions WHERE session_id = $1", session_id)
        payloads = await conn.fetch(
            "SELECT payload FROM history WHERE session_id = $1 ORDER BY seq DESC LIMIT $2", session_id, HISTORY_WINDOW
        )
        history = [json.loads(p["payload"]) for p in reversed(payloads)]
        return row["version"], row["history_seq"], json.loads(row["record"]), history

    async def turn(self, session_id: str, entry: dict[str, Any]) -> None:
        async with self.pool.acquire() as conn:
            version, seq, record, _history = await self._load(conn, session_id)
            record["state"]["turn_count"] = record["state"].get("turn_count", 0) + 1
            async with conn.transaction():
                status = await conn.execute(
                    "UPDATE sessions SET version = $1, history_seq = $2, record = $3 "
                    "WHERE session_id = $4 AND version = $5",
                    version + 1,
                    seq + 1,
                    json.dumps(record),
                    session_id,
                    version,
                )
                if status != "UPDATE 1":
                    raise RuntimeError("raw baseline lost a compare-and-set")
                await conn.execute("INSERT INTO history VALUES ($1, $2, $3)", session_id, seq + 1, json.dumps(entry))

    async def read(self, session_id: str) -> tuple[int, int]:
        async with self.pool.acquire() as conn:
            _, _, record, history = await self._load(conn, session_id)
        return len(history), record["state"].get("turn_count", 0)

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None:
        """`executemany` (pipelined by asyncpg) in one transaction."""
        payloads = [json.dumps(entry) for entry in history]
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.executemany(
                "INSERT INTO sessions VALUES ($1, $2, 1, $3, $4)",
                [(sid, uid, len(payloads), json.dumps(new_record(uid))) for sid, uid in sessions],
            )
            await conn.executemany(
                "INSERT INTO history VALUES ($1, $2, $3)",
                [(sid, seq, p) for sid, _ in sessions for seq, p in enumerate(payloads, 1)],
            )


@asynccontextmanager
async def asyncpg_client(dsn: str) -> AsyncIterator[AsyncpgClient]:
    import asyncpg

    schema = f"bench_raw_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE SCHEMA "{schema}"')
        pool = await asyncpg.create_pool(dsn, min_size=10, max_size=20, server_settings={"search_path": schema})
        try:
            async with pool.acquire() as conn:
                for ddl in SQL_SCHEMA:
                    await conn.execute(ddl.replace("INTEGER", "BIGINT"))
            yield AsyncpgClient(pool)
        finally:
            await pool.close()
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()
