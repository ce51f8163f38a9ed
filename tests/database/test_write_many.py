"""`DatabaseSessionStore.write_many`: a batch of inserts is one statement on PostgreSQL and one
transaction (one hop to aiosqlite's thread) on SQLite, with per-write outcomes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from agent_sessions import Session
from agent_sessions.stores.base import Restore, SessionWrite
from agent_sessions.stores.sql import DatabaseSessionStore
from agent_sessions.stores.sql.transaction import PostgresDriver

from ..support import PG_URL
from .stores import postgres_schema
from .test_database_store import HopCounter


def items(n: int) -> list[Restore]:
    history = [{"timestamp": 1.0, "type": "turn", "data": {"n": k}} for k in range(3)]
    return [Restore(Session(state={"i": i}), list(history)) for i in range(n)]


async def check_batch(store: DatabaseSessionStore, batch: list[Restore]) -> None:
    for item in batch:
        loaded = await store.get(item.session.session_id)
        assert loaded is not None and loaded.get("i") == item.session.get("i")
        assert [e["data"]["n"] for e in loaded.history] == [0, 1, 2]


async def test_a_sqlite_batch_of_inserts_is_one_transaction_in_one_hop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with DatabaseSessionStore(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}") as store:
        existing = Session()
        await store.set(existing)
        batch = items(50)
        batch[7].session.session_id = existing.session_id
        hops = HopCounter(monkeypatch)
        outcomes = await store.restore_many(batch)
        assert hops.calls == 1
        assert outcomes == [i != 7 for i in range(50)]
        batch.pop(7)
        loaded = await store.get(existing.session_id)
        assert loaded is not None and loaded.history == []  # the existing session kept as it was
        await check_batch(store, batch)
        for item in batch:
            item.session.set("i", -1)
        assert await store.restore_many(batch) == [False] * 49  # all there already: nothing changes
        loaded = await store.get(batch[0].session.session_id)
        assert loaded is not None and loaded.get("i") == 0


async def test_a_postgres_batch_of_inserts_is_one_statement(monkeypatch: pytest.MonkeyPatch) -> None:
    async with postgres_schema() as schema, DatabaseSessionStore(PG_URL, schema=schema) as store:
        existing = Session()
        await store.set(existing)
        statements = 0
        real_fetch = PostgresDriver.fetch

        async def counting(self: Any, stmt: Any, params: Any) -> Any:
            nonlocal statements
            statements += 1
            return await real_fetch(self, stmt, params)

        monkeypatch.setattr(PostgresDriver, "fetch", counting)
        batch = items(50)
        batch[3].session.session_id = existing.session_id
        outcomes = await store.restore_many(batch)
        assert statements == 1
        assert outcomes == [i != 3 for i in range(50)]
        batch.pop(3)
        monkeypatch.undo()
        await check_batch(store, batch)
        loaded = await store.get(existing.session_id)
        assert loaded is not None and loaded.history == []


async def test_write_many_refuses_an_update(tmp_path: Path) -> None:
    async with DatabaseSessionStore(f"sqlite+aiosqlite:///{tmp_path / 'bulk.db'}") as store:
        now = store.clock()
        write = SessionWrite(Session().session_id, None, None, 1, 2, now, now, None, b"{}", [], 0, 10)
        with pytest.raises(ValueError, match="inserts"):
            await store.write_many([write], store.clock())
