"""DatabaseSessionStore beyond the shared contract: persistence, schema, sharing a database
between processes, failures and corrupt rows, on SQLite files and the local PostgreSQL."""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import make_url

from agent_sessions import (
    SerializationError,
    Session,
    SessionConflict,
    SessionManager,
    SessionNotFound,
    StoreUnavailable,
    create_store,
)
from agent_sessions.stores.base import ScopeChange
from agent_sessions.stores.sql import SCHEMA_VERSION, DatabaseSessionStore, create_database_engine

from ..support import PG_URL, FakeClock
from .stores import closed_port, postgres_schema, require_postgres, silent_server

DIALECTS = ["sqlite", "postgres"]


@pytest.fixture(params=DIALECTS)
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def database(dialect: str, tmp_path: Path) -> AsyncIterator[Callable[..., DatabaseSessionStore]]:
    """A factory of stores on ONE database of the dialect under test (a file, or a fresh schema)."""
    opened: list[DatabaseSessionStore] = []
    if dialect == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'shared.db'}"

        def make(**options: Any) -> DatabaseSessionStore:
            store = DatabaseSessionStore(url, **options)
            opened.append(store)
            return store

        yield make
        for store in opened:
            await store.close()
        return
    async with postgres_schema() as schema:

        def make_pg(**options: Any) -> DatabaseSessionStore:
            store = DatabaseSessionStore(PG_URL, schema=schema, **options)
            opened.append(store)
            return store

        yield make_pg
        for store in opened:
            await store.close()


async def raw_execute(store: DatabaseSessionStore, sql: str, *params: Any) -> list[Any]:
    """Run one statement on the store's engine, bypassing the store (to corrupt or inspect rows)."""
    async with store.engine.begin() as conn:
        result = await conn.exec_driver_sql(sql, params)
        return list(result.all()) if result.returns_rows else []


def placeholder(store: DatabaseSessionStore, n: int) -> str:
    return f"${n}" if store.postgres else "?"


async def plant_history_row(store: DatabaseSessionStore, session_id: str, seq: int) -> None:
    """A history row where a save will write: its history insert then fails (a rolled-back save)."""
    table = store.table_names["history"]
    p = placeholder
    await raw_execute(
        store,
        f'INSERT INTO {table} (session_id, seq, "timestamp", "type", payload) '  # noqa: S608
        f"VALUES ({p(store, 1)}, {int(seq)}, 0, 'x', {p(store, 2)})",
        session_id,
        b'{"timestamp":0,"type":"x","data":{}}',
    )


# ---------------------------------------------------------------- one database, many managers
async def test_two_managers_on_one_postgres_database_lose_no_update() -> None:
    require_postgres()
    async with postgres_schema() as schema:
        first = DatabaseSessionStore(PG_URL, schema=schema)
        second = DatabaseSessionStore(PG_URL, schema=schema)
        assert first.engine is not second.engine
        try:
            a = SessionManager(first, auto_cleanup=False)
            b = SessionManager(second, auto_cleanup=False)
            session = await a.create_session(user_id="shared", data={"n": 0})

            def increment(s: Session) -> None:
                s.set("n", s.get("n") + 1)

            async def counter(manager: SessionManager) -> None:
                for _ in range(25):
                    await manager.mutate(session.session_id, increment)

            async def writer(manager: SessionManager, i: int) -> None:
                got = await manager.get_session(session.session_id)
                assert got is not None
                got.set(f"key{i}", i)
                got.add_history_entry("write", {"i": i})
                await manager.update_session(got)

            await asyncio.gather(
                *(counter(m) for m in (a, b) for _ in range(4)),
                *(writer(a if i % 2 else b, i) for i in range(30)),
            )
            for manager in (a, b):
                seen = await manager.get_session(session.session_id)
                assert seen is not None
                assert seen.get("n") == 2 * 4 * 25
                assert {k: v for k, v in seen.state.items() if k.startswith("key")} == {f"key{i}": i for i in range(30)}
            page = await b.get_history(session.session_id, limit=100)
            assert sorted(e["data"]["i"] for e in page.entries) == list(range(30))
        finally:
            await first.close()
            await second.close()


async def test_sessions_of_one_user_writing_shared_keys_in_any_order_never_fail(
    database: Callable[..., DatabaseSessionStore],
) -> None:
    # Each save writes the same 30 user:/pref: rows in its own order: unsorted, two saves lock
    # the rows in opposite orders and PostgreSQL aborts one with a deadlock.
    store = database()
    manager = SessionManager(store, auto_cleanup=False)
    sessions = [await manager.create_session(user_id="shared-user") for _ in range(8)]
    state_keys = [f"user:k{i}" for i in range(20)]
    pref_keys = [f"p{i}" for i in range(10)]

    def write_all(s: Session, tag: str, rng: random.Random) -> None:
        order = [("state", k) for k in state_keys] + [("preferences", k) for k in pref_keys]
        rng.shuffle(order)
        for field, key in order:
            target = s.state if field == "state" else s.preferences
            target.pop(key, None)  # re-inserted, so the save's key order is the shuffled one
            target[key] = tag

    async def writer(index: int, session: Session) -> None:
        rng = random.Random(index)
        for n in range(15):
            tag = f"{index}-{n}"
            if n % 2:
                await manager.mutate(session.session_id, functools.partial(write_all, tag=tag, rng=rng))
            else:
                fresh = await manager.get_session(session.session_id)
                assert fresh is not None
                write_all(fresh, tag, rng)
                await manager.update_session(fresh)

    await asyncio.gather(*(writer(i, s) for i, s in enumerate(sessions)))
    scopes = await store.load_scopes("shared-user")
    # Every save wrote all 30 rows in one transaction, so the last one to commit owns them all.
    tags = {scopes.state[k] for k in state_keys} | {scopes.preferences[k] for k in pref_keys}
    assert len(tags) == 1
    (tag,) = tags
    assert tag.endswith("-14")
    for s in sessions:
        loaded = await manager.get_session(s.session_id)
        assert loaded is not None
        assert {loaded.state[k] for k in state_keys} == {tag}
        assert {loaded.preferences[k] for k in pref_keys} == {tag}


@asynccontextmanager
async def pg_connection() -> AsyncIterator[Any]:
    """A plain asyncpg connection to the test server, outside any store."""
    import asyncpg

    conn = await asyncpg.connect(make_url(PG_URL).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        yield conn
    finally:
        await conn.close()


def count_invalidations(store: DatabaseSessionStore) -> list[object]:
    """A list that grows each time the store's pool invalidates (drops) a connection."""
    dropped: list[object] = []
    event.listen(store.engine.sync_engine, "invalidate", lambda *args: dropped.append(args))
    return dropped


async def test_a_save_aborted_by_a_deadlock_runs_again_on_the_same_connection() -> None:
    require_postgres()
    async with postgres_schema() as schema, pg_connection() as blocker, pg_connection() as monitor:
        store = DatabaseSessionStore(PG_URL, schema=schema, max_connections=1)
        try:
            manager = SessionManager(store, auto_cleanup=False)
            s = await manager.create_session(user_id="u", data={"user:a": 0, "user:b": 0})
            dropped = count_invalidations(store)
            table = store.table_names["scopes"]
            await blocker.execute("SET deadlock_timeout = '10s'")  # the save's backend detects it, at 1 s
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(f"UPDATE {table} SET value = $1 WHERE \"key\" = 'user:b'", b'"blocker"')  # noqa: S608
            s.set("user:a", 1)
            s.set("user:b", 1)
            save = asyncio.create_task(manager.update_session(s))  # locks user:a, then waits for user:b
            blocker_pid = blocker.get_server_pid()
            for _ in range(500):
                waiting = "SELECT count(*) FROM pg_locks WHERE NOT granted AND $1 = ANY(pg_blocking_pids(pid))"
                if await monitor.fetchval(waiting, blocker_pid):
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the save never waited for the blocker's row lock")
            # Closing the cycle: PostgreSQL aborts the save, which runs again once the blocker commits.
            await blocker.execute(f"UPDATE {table} SET value = $1 WHERE \"key\" = 'user:a'", b'"blocker"')  # noqa: S608
            await tx.commit()
            saved = await asyncio.wait_for(save, 10)
            assert saved.version == 2
            loaded = await store.get(s.session_id)
            assert loaded is not None and loaded.get("user:a") == 1 and loaded.get("user:b") == 1
            assert dropped == []  # the connection that saw the deadlock was kept
        finally:
            await store.close()


async def test_a_value_postgres_refuses_is_a_serialization_error_on_a_kept_connection() -> None:
    require_postgres()
    async with postgres_schema() as schema:
        store = DatabaseSessionStore(PG_URL, schema=schema, max_connections=1)
        try:
            await store.initialize()
            dropped = count_invalidations(store)
            # The base class refuses these before any I/O; below it, the database's refusal
            # (CharacterNotInRepertoireError, StringDataRightTruncationError) is still a data error.
            with pytest.raises(SerializationError) as info:
                await store.write_scope_rows([ScopeChange("user", "u", sets={"user:a\x00b": b"1"})])
            assert type(info.value.__cause__).__name__ == "CharacterNotInRepertoireError"
            with pytest.raises(SerializationError) as info:
                await store.write_scope_rows([ScopeChange("user", "u" * 300, sets={"user:a": b"1"})])
            assert type(info.value.__cause__).__name__ == "StringDataRightTruncationError"
            assert dropped == []
            s = Session(user_id="u", state={"user:a": 1})
            await store.set(s)  # the same connection goes on working
            loaded = await store.get(s.session_id)
            assert loaded is not None and loaded.get("user:a") == 1
        finally:
            await store.close()


async def test_stores_on_one_database_see_each_others_saves(database: Callable[..., DatabaseSessionStore]) -> None:
    one, two = database(), database()
    s = Session(user_id="u", state={"x": 1})
    await one.set(s)
    seen = await two.get(s.session_id)
    assert seen is not None and seen.get("x") == 1
    seen.set("x", 2)
    await two.set(seen)
    s.set("x", 3)
    with pytest.raises(SessionConflict):
        await one.set(s)


# ---------------------------------------------------------------- persistence and schema
async def test_sqlite_file_survives_close_and_reopen(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sessions.db'}"
    store = DatabaseSessionStore(url)
    manager = SessionManager(store, auto_cleanup=False)
    s = await manager.create_session(user_id="ada", data={"plan": "pro"}, preferences={"tone": "brief"})
    s.set("user:language", "fr")
    s.set("app:motd", "hello")
    for i in range(3):
        s.add_history_entry("turn", {"i": i})
    await manager.update_session(s)
    await store.close()

    reopened = DatabaseSessionStore(url)
    try:
        loaded = await reopened.get(s.session_id)
        assert loaded is not None
        assert loaded.get("plan") == "pro" and loaded.get("user:language") == "fr" and loaded.get("app:motd") == "hello"
        assert loaded.preferences == {"tone": "brief"}
        assert [e["data"]["i"] for e in loaded.history] == [0, 1, 2]
        assert loaded.version == s.version
        assert [x.session_id for x in await reopened.get_user_sessions("ada")] == [s.session_id]
    finally:
        await reopened.close()


async def test_sqlite_runs_in_wal_mode(tmp_path: Path) -> None:
    store = DatabaseSessionStore(f"sqlite:///{tmp_path / 'wal.db'}")
    try:
        await store.set(Session())
        assert (await raw_execute(store, "PRAGMA journal_mode"))[0][0] == "wal"
        assert (await raw_execute(store, "PRAGMA busy_timeout"))[0][0] == 5000
    finally:
        await store.close()


async def test_postgres_connections_plan_the_stores_statements_once() -> None:
    """Generic plans for the prepared statements: left to choose, PostgreSQL re-planned each
    get on a table of 100,000 sessions (0.28 ms a query instead of 0.165, see engine.py)."""
    require_postgres()
    async with postgres_schema() as schema:
        store = DatabaseSessionStore(PG_URL, schema=schema)
        try:
            await store.set(Session())
            assert (await raw_execute(store, "SHOW plan_cache_mode"))[0][0] == "force_generic_plan"
            assert (await raw_execute(store, "SHOW application_name"))[0][0] == "agent_sessions"
        finally:
            await store.close()


async def test_schema_version_row_is_written_on_first_use(database: Callable[..., DatabaseSessionStore]) -> None:
    store = database()
    await store.initialize()
    table = store.table_names["schema_version"]
    rows = await raw_execute(store, f"SELECT component, version FROM {table}")  # noqa: S608
    assert rows == [("sessions", SCHEMA_VERSION)]
    await store.initialize()  # idempotent: still one row
    assert len(await raw_execute(store, f"SELECT component FROM {table}")) == 1  # noqa: S608


async def test_a_newer_schema_version_is_refused(database: Callable[..., DatabaseSessionStore]) -> None:
    old = database()
    await old.initialize()
    table = old.table_names["schema_version"]
    await raw_execute(old, f"UPDATE {table} SET version = {SCHEMA_VERSION + 1}")  # noqa: S608
    newer = database()
    with pytest.raises(StoreUnavailable, match=rf"^the session tables are at schema version {SCHEMA_VERSION + 1}"):
        await newer.get(Session().session_id)


async def test_concurrent_first_use_creates_the_tables_once(database: Callable[..., DatabaseSessionStore]) -> None:
    stores = [database() for _ in range(6)]  # six engines racing to create the schema
    await asyncio.gather(*(s.set(Session(state={"i": i})) for i, s in enumerate(stores)))
    everything = await stores[0].get_all()
    assert sorted(s.get("i") for s in everything) == list(range(6))


def test_concurrent_first_use_across_processes_on_one_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'race.db'}"
    script = (
        "import asyncio, sys\n"
        "from agent_sessions import Session\n"
        "from agent_sessions.stores.sql import DatabaseSessionStore\n"
        "async def main():\n"
        "    async with DatabaseSessionStore(sys.argv[1]) as store:\n"
        "        await store.set(Session())\n"
        "asyncio.run(main())\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, url], stderr=subprocess.PIPE) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err.decode()

    async def count() -> int:
        async with DatabaseSessionStore(url) as store:
            return len(await store.get_all())

    assert asyncio.run(count()) == 4


async def test_table_prefixes_isolate_apps_in_one_database(database: Callable[..., DatabaseSessionStore]) -> None:
    app_a, app_b = database(table_prefix="app_a_"), database(table_prefix="app_b_")
    s = Session(user_id="u")
    await app_a.set(s)
    assert await app_b.get(s.session_id) is None
    assert await app_b.get_user_sessions("u") == []
    assert app_a.table_names["sessions"].endswith("app_a_sessions")


async def test_plain_urls_map_to_the_async_drivers(tmp_path: Path) -> None:
    for url in (f"sqlite:///{tmp_path / 'a.db'}", f"sqlite+aiosqlite:///{tmp_path / 'b.db'}"):
        store = create_store(url)
        assert isinstance(store, DatabaseSessionStore) and store.engine.dialect.driver == "aiosqlite"
        await store.close()
    for url in ("postgresql://u@localhost/db", "postgres://u@localhost/db", "postgresql+asyncpg://u@localhost/db"):
        store = create_store(url)
        assert isinstance(store, DatabaseSessionStore) and store.engine.dialect.driver == "asyncpg"
        await store.close()
    with pytest.raises(ValueError, match="unsupported database URL"):
        DatabaseSessionStore("mysql://u@localhost/db")
    with pytest.raises(ValueError, match="schema= is for PostgreSQL"):
        DatabaseSessionStore(f"sqlite:///{tmp_path / 'c.db'}", schema="x")
    with pytest.raises(ValueError, match="table_prefix"):
        DatabaseSessionStore(f"sqlite:///{tmp_path / 'd.db'}", table_prefix="x; drop table")


async def test_a_shared_engine_is_not_disposed_by_the_store(tmp_path: Path) -> None:
    engine = create_database_engine(f"sqlite:///{tmp_path / 'shared.db'}")
    try:
        store = DatabaseSessionStore(engine)
        assert store.engine is engine
        s = Session()
        await store.set(s)
        await store.close()
        again = DatabaseSessionStore(engine)
        assert await again.get(s.session_id) is not None
        await again.close()
    finally:
        await engine.dispose()


async def test_an_operation_running_through_close_keeps_no_connection_of_the_disposed_pool() -> None:
    require_postgres()
    async with postgres_schema() as schema, pg_connection() as blocker:
        store = DatabaseSessionStore(PG_URL, schema=schema)
        opened: list[Any] = []  # every driver connection the store's pools hand out
        event.listen(store.engine.sync_engine, "checkout", lambda dbapi, *_: opened.append(dbapi.driver_connection))
        try:
            s = Session(state={"n": 0})
            await store.set(s)
            table = store.table_names["sessions"]
            tx = blocker.transaction()
            await tx.start()
            await blocker.execute(f"SELECT 1 FROM {table} WHERE session_id = $1 FOR UPDATE", s.session_id)  # noqa: S608
            s.set("n", 1)
            save = asyncio.create_task(store.set(s))  # waits for the row lock, its connection in hand
            for _ in range(500):
                if store.engine.sync_engine.pool.checkedout():  # type: ignore[attr-defined]
                    break
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)
            await store.close()  # disposes the pool while the save still holds one of its connections
            await tx.rollback()
            await asyncio.wait_for(save, 10)
            loaded = await store.get(s.session_id)  # the store reconnects, from the new pool
            assert loaded is not None and loaded.get("n") == 1
        finally:
            await store.close()
        assert opened and all(conn.is_closed() for conn in opened)  # none left open, outside every pool


# ---------------------------------------------------------------- atomicity
async def test_a_failed_save_leaves_nothing_half_written(database: Callable[..., DatabaseSessionStore]) -> None:
    store = database()
    s = Session(state={"v": 1})
    await store.set(s)
    await plant_history_row(store, s.session_id, 1)  # the next save's second statement fails
    s.set("v", 2)
    s.add_history_entry("turn", {"n": 1})
    with pytest.raises(SessionConflict):
        await store.set(s)
    loaded = await store.get(s.session_id)
    assert loaded is not None and loaded.get("v") == 1 and loaded.version == 1


async def test_a_touch_moves_the_expiry_only_forward_and_null_means_never(
    database: Callable[..., DatabaseSessionStore],
) -> None:
    clock = FakeClock()
    store = database(clock=clock)
    t = clock.now
    s = Session(created_at=t, last_accessed_at=t, expiry_at=t + 600)
    await store.set(s)

    async def columns() -> tuple[float, float | None]:
        loaded = await store.get(s.session_id)
        assert loaded is not None
        return loaded.last_accessed_at, loaded.expiry_at

    assert await store.touch(s.session_id, t + 10, t + 300)  # an earlier expiry is ignored
    assert await columns() == (t + 10, t + 600)
    assert await store.touch(s.session_id, t + 5, t + 900)  # a later one wins; the access time stays
    assert await columns() == (t + 10, t + 900)
    assert await store.touch(s.session_id, t + 20, None)  # a new "never expires" replaces any expiry
    assert await columns() == (t + 20, None)
    assert await store.touch(s.session_id, t + 30, t + 100)  # a stored "never" is replaced by any
    assert await columns() == (t + 30, t + 100)


async def test_cleanup_deletes_history_rows_with_their_sessions(database: Callable[..., DatabaseSessionStore]) -> None:
    clock = FakeClock()
    store = database(clock=clock)
    doomed = [Session(expiry_at=clock.now + 10, created_at=clock.now, last_accessed_at=clock.now) for _ in range(7)]
    for s in doomed:
        s.add_history_entry("turn", {})
        await store.set(s)
    kept = Session(expiry_at=clock.now + 1000)
    kept.add_history_entry("turn", {})
    await store.set(kept)
    clock.advance(11)
    assert await store.cleanup_expired(batch_size=3) == 7
    table = store.table_names["history"]
    rows = await raw_execute(store, f"SELECT session_id FROM {table}")  # noqa: S608
    assert [r[0] for r in rows] == [kept.session_id]


async def test_rename_moves_every_history_row_at_once(database: Callable[..., DatabaseSessionStore]) -> None:
    store = database(max_history=500, history_window=5)
    s = Session()
    for i in range(40):
        s.add_history_entry("turn", {"i": i})
    await store.set(s)
    new_id = Session().session_id
    moved = await store.rename(s.session_id, new_id)
    assert moved.session_id == new_id and [e["data"]["i"] for e in moved.history] == [35, 36, 37, 38, 39]
    page = await store.get_history(new_id, limit=100)
    assert [e["data"]["i"] for e in page.entries] == list(range(40))
    table = store.table_names["history"]
    assert await raw_execute(store, f"SELECT seq FROM {table} WHERE session_id = '{s.session_id}'") == []  # noqa: S608
    with pytest.raises(SessionNotFound):
        await store.rename(s.session_id, Session().session_id)


async def test_a_cancelled_operation_returns_no_open_transaction_to_the_pool(
    database: Callable[..., DatabaseSessionStore],
) -> None:
    store = database(max_connections=1, max_idle_connections=0)
    await store.initialize()
    table = store.table_names["sessions"]
    raw = await store.engine.raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    # Leave a write transaction open on the driver, as a task cancelled mid-save would.
    if store.postgres:
        await driver.execute("BEGIN")
        await driver.execute(f"DELETE FROM {table}")  # noqa: S608
        assert driver.is_in_transaction()
    else:
        await driver.execute(f"DELETE FROM {table}")  # noqa: S608
        assert driver.in_transaction
    from sqlalchemy.util.concurrency import greenlet_spawn

    await greenlet_spawn(raw.close)
    again = await store.engine.raw_connection()
    try:
        driver = again.driver_connection
        assert driver is not None
        assert not (driver.is_in_transaction() if store.postgres else driver.in_transaction)
    finally:
        await greenlet_spawn(again.close)
    s = Session()
    await store.set(s)  # the write lock is free: nothing was left holding it
    assert await store.get(s.session_id) is not None


# ---------------------------------------------------------------- corrupt rows
async def test_a_corrupt_record_raises_or_is_skipped_with_a_log(
    database: Callable[..., DatabaseSessionStore], caplog: pytest.LogCaptureFixture
) -> None:
    store = database()
    good, bad = Session(state={"ok": True}), Session(state={"ok": False})
    await store.set(good)
    await store.set(bad)
    table = store.table_names["sessions"]
    p = placeholder
    await raw_execute(
        store,
        f"UPDATE {table} SET record = {p(store, 1)} WHERE session_id = {p(store, 2)}",  # noqa: S608
        b"{not json",
        bad.session_id,
    )
    with caplog.at_level(logging.ERROR, logger="agent_sessions"), pytest.raises(SerializationError):
        await store.get(bad.session_id)
    assert bad.session_id not in caplog.text  # only a hash is logged
    with pytest.raises(SerializationError):
        await store.get_all()
    survivors = [s.session_id async for s in store.iter_sessions(on_corrupt="skip")]
    assert survivors == [good.session_id]
    assert (await store.get(good.session_id)) is not None


async def test_a_corrupt_history_entry_is_reported(database: Callable[..., DatabaseSessionStore]) -> None:
    store = database()
    s = Session()
    for i in range(3):
        s.add_history_entry("turn", {"i": i})
    await store.set(s)
    table = store.table_names["history"]
    p = placeholder
    await raw_execute(
        store,
        f"UPDATE {table} SET payload = {p(store, 1)} WHERE session_id = {p(store, 2)} AND seq = 2",  # noqa: S608
        b"1,2",
        s.session_id,
    )
    with pytest.raises(SerializationError):
        await store.get(s.session_id)
    with pytest.raises(SerializationError):
        await store.get_history(s.session_id)


# ---------------------------------------------------------------- unavailable servers
async def test_unreachable_postgres_raises_store_unavailable_quickly() -> None:
    store = DatabaseSessionStore(f"postgresql://root@127.0.0.1:{closed_port()}/test", connect_timeout=2)
    started = time.monotonic()
    try:
        with pytest.raises(StoreUnavailable) as info:
            await store.get(Session().session_id)
    finally:
        await store.close()
    assert time.monotonic() - started < 5
    assert isinstance(info.value.__cause__, OSError | ConnectionError)


async def test_a_hung_postgres_server_times_out_as_store_unavailable() -> None:
    async with silent_server() as port:
        store = DatabaseSessionStore(f"postgresql://root@127.0.0.1:{port}/test", connect_timeout=0.5)
        started = time.monotonic()
        try:
            with pytest.raises(StoreUnavailable):
                await store.set(Session())
        finally:
            await store.close()
        assert time.monotonic() - started < 3


async def test_a_blocked_postgres_statement_times_out_as_store_unavailable() -> None:
    require_postgres()
    async with postgres_schema() as schema:
        store = DatabaseSessionStore(PG_URL, schema=schema, command_timeout=0.5)
        blocker = DatabaseSessionStore(PG_URL, schema=schema)
        try:
            s = Session()
            await store.set(s)
            table = store.table_names["sessions"]
            async with blocker.engine.begin() as conn:
                # Hold the row lock so the save's compare-and-set has to wait.
                await conn.exec_driver_sql(f"SELECT 1 FROM {table} WHERE session_id = $1 FOR UPDATE", (s.session_id,))  # noqa: S608
                s.set("x", 1)
                started = time.monotonic()
                with pytest.raises(StoreUnavailable) as info:
                    await store.set(s)
                assert time.monotonic() - started < 3
                assert type(info.value.__cause__).__name__ == "QueryCanceledError"  # by the server
            loaded = await store.get(s.session_id)  # the store recovers once the lock is gone
            assert loaded is not None and loaded.version == 1 and "x" not in loaded.state  # rolled back
        finally:
            await store.close()
            await blocker.close()


async def test_a_locked_sqlite_file_is_store_unavailable_after_the_busy_timeout(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'locked.db'}"
    store = DatabaseSessionStore(url, busy_timeout=0.3)
    other = DatabaseSessionStore(url)
    try:
        s = Session()
        await store.set(s)
        raw = await other.engine.raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await driver.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        try:
            s.set("x", 1)
            started = time.monotonic()
            with pytest.raises(StoreUnavailable) as info:
                await store.set(s)
            assert time.monotonic() - started < 3
            assert "locked" in str(info.value.__cause__)
        finally:
            await driver.rollback()
            from sqlalchemy.util.concurrency import greenlet_spawn

            await greenlet_spawn(raw.close)
        await store.set(s)  # and works again once the lock is released
    finally:
        await store.close()
        await other.close()


# ---------------------------------------------------------------- SQLite: a transaction per hop
class HopCounter:
    """Counts the calls queued to aiosqlite's worker thread (each is a hop between threads)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        import aiosqlite

        self.calls = 0
        original = aiosqlite.Connection._execute

        async def counting(conn: Any, fn: Any, *args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return await original(conn, fn, *args, **kwargs)

        monkeypatch.setattr(aiosqlite.Connection, "_execute", counting)


async def test_the_installed_aiosqlite_runs_a_save_in_one_hop(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with DatabaseSessionStore(f"sqlite+aiosqlite:///{tmp_path / 'hops.db'}", max_history=3) as store:
        s = Session(user_id="u1", state={"n": 0})
        await store.set(s)
        hops = HopCounter(monkeypatch)
        s.set("n", 1)
        s.set("user:plan", "pro")
        for i in range(5):  # more than max_history: the save also trims
            s.add_history_entry("turn", {"i": i})
        await store.set(s)
        assert hops.calls == 1
        loaded = await store.get(s.session_id)
        assert hops.calls == 2
        assert loaded is not None and loaded.get("n") == 1 and loaded.get("user:plan") == "pro"
        assert [e["data"]["i"] for e in loaded.history] == [2, 3, 4]


async def test_sqlite_writes_in_one_hop_transactions_are_atomic(tmp_path: Path) -> None:
    clock = FakeClock()
    async with DatabaseSessionStore(f"sqlite+aiosqlite:///{tmp_path / 'tx.db'}", clock=clock, max_history=2) as store:
        s = Session(user_id="u1", created_at=clock.now, last_accessed_at=clock.now, expiry_at=clock.now + 100)
        s.set("app:motd", "hi")
        s.preferences["lang"] = "fr"
        await store.set(s)
        for i in range(3):
            s.add_history_entry("turn", {"i": i})
        s.set("user:plan", "pro")
        await store.set(s)
        stale = await store.get(s.session_id)
        assert stale is not None
        s.set("k", 1)
        await store.set(s)
        stale.set("k", 2)  # a lost compare-and-set writes nothing
        with pytest.raises(SessionConflict):
            await store.set(stale)
        # A statement failing after the compare-and-set rolls the whole save back.
        table = store.table_names["history"]
        await plant_history_row(store, s.session_id, 4)
        s.set("k", 3)
        s.add_history_entry("turn", {"i": 3})
        with pytest.raises(SessionConflict):
            await store.set(s)
        await raw_execute(store, f"DELETE FROM {table} WHERE seq = 4")  # noqa: S608
        loaded = await store.get(s.session_id)
        assert loaded is not None and loaded.get("k") == 1 and loaded.version == 3
        assert [e["data"]["i"] for e in loaded.history] == [1, 2]
        assert loaded.get("user:plan") == "pro" and loaded.get("app:motd") == "hi"
        assert loaded.preferences == {"lang": "fr"}
        assert await store.touch(s.session_id, clock.now + 1, clock.now + 500)
        assert not await store.touch(Session().session_id, clock.now + 1, clock.now + 500)
        await store.write_scopes("u1", {}, delete=["user:plan"])
        new_id = Session().session_id
        moved = await store.rename(s.session_id, new_id)
        assert moved.expiry_at == clock.now + 500 and moved.get("user:plan") is None
        with pytest.raises(SessionNotFound):
            await store.rename(s.session_id, Session().session_id)
        assert await store.delete(new_id)
        assert not await store.delete(new_id)
        assert await raw_execute(store, f"SELECT seq FROM {table} WHERE session_id = ?", new_id) == []  # noqa: S608
        conn = await store.engine.raw_connection()
        try:
            assert not conn.driver_connection.in_transaction  # every way out committed or rolled back
        finally:
            from sqlalchemy.util.concurrency import greenlet_spawn

            await greenlet_spawn(conn.close)


# ---------------------------------------------------------------- PostgreSQL: coalesced reads
@asynccontextmanager
async def busy_postgres_store(**options: Any) -> AsyncIterator[tuple[DatabaseSessionStore, asyncio.Event]]:
    """A PostgreSQL store with one connection; `hold_the_connection` keeps it busy until the
    yielded event is set."""
    async with postgres_schema() as schema:
        store = DatabaseSessionStore(PG_URL, schema=schema, max_connections=1, **options)
        release = asyncio.Event()
        try:
            await store.initialize()
            yield store, release
        finally:
            release.set()
            await store.close()


async def hold_the_connection(store: DatabaseSessionStore, release: asyncio.Event, held: asyncio.Event) -> None:
    """Keep the store's only connection busy: a save of its own waits for a row lock held outside."""
    blocked = Session(state={"blocked": True})
    await store.set(blocked)
    table = store.table_names["sessions"]
    async with pg_connection() as blocker:
        tx = blocker.transaction()
        await tx.start()
        await blocker.execute(f"SELECT 1 FROM {table} WHERE session_id = $1 FOR UPDATE", blocked.session_id)  # noqa: S608
        blocked.set("n", 1)
        save = asyncio.create_task(store.set(blocked))
        for _ in range(500):
            if store.engine.sync_engine.pool.checkedout():  # type: ignore[attr-defined]
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # the save's statement is waiting for the lock
        held.set()
        await release.wait()
        await tx.rollback()
        await save


async def test_reads_queued_for_a_connection_go_as_one_statement_with_correct_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent_sessions.stores.sql.transaction import PostgresDriver

    clock = FakeClock()
    async with busy_postgres_store(clock=clock) as (store, release):
        sessions = []
        for i in range(6):
            s = Session(user_id=f"u{i % 2}", state={"i": i}, expiry_at=clock.now + (5 if i == 5 else 100))
            s.add_history_entry("turn", {"i": i})
            await store.set(s)
            sessions.append(s)
        await store.write_scopes("u1", {"user:plan": "pro", "app:motd": "hi"})
        clock.advance(10)  # session 5 has expired
        statements = 0
        real_fetch = PostgresDriver.fetch

        async def counting(self: Any, stmt: Any, params: Any) -> Any:
            nonlocal statements
            statements += "window" in params  # reads (not the save holding the connection)
            return await real_fetch(self, stmt, params)

        monkeypatch.setattr(PostgresDriver, "fetch", counting)
        held = asyncio.Event()
        holder = asyncio.create_task(hold_the_connection(store, release, held))
        await held.wait()
        ids = [s.session_id for s in sessions] + [sessions[0].session_id, Session().session_id]
        reads = [asyncio.create_task(store.get(sid)) for sid in ids]
        await asyncio.sleep(0.05)
        assert not any(r.done() for r in reads)  # all queued behind the held connection
        release.set()
        results = await asyncio.gather(*reads)
        await holder
        assert statements == 1
        for i, loaded in enumerate(results[:5]):
            assert loaded is not None and loaded.get("i") == i and [e["data"] for e in loaded.history] == [{"i": i}]
            assert loaded.get("app:motd") == "hi"
            assert loaded.get("user:plan") == ("pro" if i % 2 else None)
        assert results[5] is None  # expired
        assert results[6] is not None and results[6].get("i") == 0 and results[6] is not results[0]
        assert results[7] is None  # never existed


async def test_a_cancelled_read_leaves_the_reads_queued_with_it_to_read_alone() -> None:
    async with busy_postgres_store() as (store, release):
        a, b = Session(state={"n": "a"}), Session(state={"n": "b"})
        await store.set(a)
        await store.set(b)
        held = asyncio.Event()
        holder = asyncio.create_task(hold_the_connection(store, release, held))
        await held.wait()
        first = asyncio.create_task(store.get(a.session_id))  # waits for the connection, for both
        await asyncio.sleep(0.01)
        second = asyncio.create_task(store.get(b.session_id))
        await asyncio.sleep(0.01)
        first.cancel()
        await asyncio.sleep(0.01)
        release.set()
        loaded = await second
        assert loaded is not None and loaded.get("n") == "b"
        with pytest.raises(asyncio.CancelledError):
            await first
        await holder


async def test_a_failed_coalesced_read_fails_every_read_queued_with_it() -> None:
    async with busy_postgres_store() as (store, release):
        s = Session()
        await store.set(s)
        held = asyncio.Event()
        holder = asyncio.create_task(hold_the_connection(store, release, held))
        await held.wait()
        reads = [asyncio.create_task(store.get(s.session_id)) for _ in range(3)]
        await asyncio.sleep(0.01)
        # The statement fails on the server (its table is gone): every queued read gets the error.
        await raw_execute(store, f"DROP TABLE {store.table_names['scopes']}")  # noqa: S608
        release.set()
        results = await asyncio.gather(*reads, return_exceptions=True)
        await holder
        assert all(isinstance(r, StoreUnavailable) for r in results), results


# ---------------------------------------------------------------- PostgreSQL: coalesced saves
async def test_saves_queued_for_a_connection_go_as_one_statement_with_correct_outcomes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from agent_sessions.stores.sql.transaction import PostgresDriver

    clock = FakeClock()
    async with busy_postgres_store(clock=clock, max_history=3) as (store, release):
        sessions = []
        for i in range(5):
            s = Session(user_id="u1", state={"i": i}, expiry_at=clock.now + (5 if i == 4 else 100))
            for n in range(3):
                s.add_history_entry("turn", {"n": n})
            await store.set(s)
            sessions.append(s)
        stale = await store.get(sessions[2].session_id)
        assert stale is not None
        sessions[2].set("won", True)
        await store.set(sessions[2])  # `stale` will lose its compare-and-set
        clock.advance(10)  # sessions[4] has expired in the store
        sessions[4].expiry_at = clock.now + 100  # (a save extends the expiry, as the manager's do)
        statements: list[str] = []
        real_fetch = PostgresDriver.fetch

        async def counting(self: Any, stmt: Any, params: Any) -> Any:
            statements.append("many" if len(params.get("recs", ())) > 1 else "one")
            return await real_fetch(self, stmt, params)

        monkeypatch.setattr(PostgresDriver, "fetch", counting)
        held = asyncio.Event()
        holder = asyncio.create_task(hold_the_connection(store, release, held))
        await held.wait()
        for i, s in enumerate(sessions):
            s.set("i", i * 10)
            s.add_history_entry("turn", {"n": 3})
        stale.set("lost", True)
        twice = sessions[0].model_copy(deep=True)  # a second save of session 0, queued with the first
        twice.set("again", True)
        scoped = sessions[1]
        scoped.set("user:plan", "pro")  # scope changes never join a batch
        saves = [asyncio.create_task(store.set(s)) for s in [*sessions, stale, twice]]
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in saves)
        release.set()
        outcomes = await asyncio.gather(*saves, return_exceptions=True)
        await holder
        assert outcomes[:4] == [None] * 4
        assert isinstance(outcomes[4], SessionNotFound)
        assert isinstance(outcomes[5], SessionConflict)
        assert isinstance(outcomes[6], SessionConflict)  # the same version as the first save of session 0
        # Session 2's second save (`stale`) cannot join the batch holding its first: it starts a
        # second batch, which `twice` joins; the rest went in the first. Batches run in order.
        assert statements.count("many") == 2
        for i in range(4):
            loaded = await store.get(sessions[i].session_id)
            assert loaded is not None and loaded.get("i") == i * 10 and loaded.version == sessions[i].version
            assert [e["data"]["n"] for e in loaded.history] == [1, 2, 3]  # trimmed to max_history
            assert loaded.get("lost") is None and loaded.get("again") is None
        page = await store.get_history(sessions[0].session_id, limit=10)
        assert [e["data"]["n"] for e in page.entries] == [1, 2, 3]  # older rows deleted, not just hidden
        loaded = await store.get(sessions[1].session_id)
        assert loaded is not None and loaded.get("user:plan") == "pro"


async def test_a_coalesced_save_that_fails_reruns_each_save_alone() -> None:
    async with busy_postgres_store() as (store, release):
        a, b = Session(state={"n": 0}), Session(state={"n": 0})
        await store.set(a)
        await store.set(b)
        await plant_history_row(store, b.session_id, 1)  # the batch fails, then b alone does
        held = asyncio.Event()
        holder = asyncio.create_task(hold_the_connection(store, release, held))
        await held.wait()
        for s in (a, b):
            s.set("n", 1)
            s.add_history_entry("turn", {})
        saves = [asyncio.create_task(store.set(s)) for s in (a, b)]
        await asyncio.sleep(0.02)
        saves[0].cancel()  # a caller giving up does not take the batch with it
        release.set()
        outcomes = await asyncio.gather(*saves, return_exceptions=True)
        await holder
        assert isinstance(outcomes[0], asyncio.CancelledError)
        assert isinstance(outcomes[1], SessionConflict)
        loaded_b = await store.get(b.session_id)
        assert loaded_b is not None and loaded_b.get("n") == 0 and loaded_b.version == 1
