"""PostgreSQL faults the store must survive with typed errors and no double apply."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest
from sqlalchemy.engine import make_url

from agent_sessions import SessionManager, StoreUnavailable
from agent_sessions.stores.sql import DatabaseSessionStore, create_database_engine

from ..support import PG_URL
from .proxy import cutting_proxy
from .stores import pg_host_port, postgres_schema

pytestmark = pytest.mark.asyncio

#: The application name of the store under test: only its connections are terminated (other
#: tests may be running against the same server).
KILL_TAG = f"agent_sessions_kill_{uuid.uuid4().hex[:8]}"


async def test_a_save_whose_reply_is_lost_after_commit_is_applied_once_when_retried() -> None:
    host, port = pg_host_port()
    async with postgres_schema() as schema, cutting_proxy(host, port) as proxy:
        url = make_url(PG_URL).set(host="127.0.0.1", port=proxy.port)
        store = DatabaseSessionStore(url, schema=schema)
        manager = SessionManager(store, auto_cleanup=False)
        try:
            session = await manager.create_session("alice", {"n": 0})
            # A save of the same shape first, so the timed one is one statement already prepared.
            session.add_history_entry("message", {"text": "warm-up"})
            await manager.update_session(session)
            session.set("n", 1)
            session.add_history_entry("message", {"text": "once"})
            proxy.cut_next_reply()
            with pytest.raises(StoreUnavailable):
                await manager.update_session(session)
            assert proxy.cuts == 1
            await manager.update_session(session)  # the caller's retry, on a new connection
            loaded = await manager.get_session(session.session_id)
            assert loaded is not None
            assert [e["data"]["text"] for e in loaded.history] == ["warm-up", "once"]
            assert loaded.get("n") == 1 and loaded.version == 3
        finally:
            await store.close()


async def test_backends_terminated_under_load_surface_only_as_store_unavailable() -> None:
    """`pg_terminate_backend` on the store's connections while gets and mutates run: every
    failure is `StoreUnavailable` (never a driver error such as asyncpg's InternalClientError),
    and the store keeps working afterwards on fresh connections."""
    async with postgres_schema() as schema:
        settings = {"application_name": KILL_TAG, "statement_timeout": "30000"}
        store = DatabaseSessionStore(
            PG_URL, schema=schema, engine_options={"connect_args": {"server_settings": settings}}
        )
        manager = SessionManager(store, auto_cleanup=False)
        admin = create_database_engine(PG_URL, pool_size=1, max_overflow=0)
        try:
            sessions = [await manager.create_session(f"u{i}", {"n": 0}) for i in range(4)]
            unexpected: list[BaseException] = []
            unavailable = 0
            stop = asyncio.Event()

            async def worker(sid: str) -> None:
                nonlocal unavailable
                while not stop.is_set():
                    try:
                        await manager.get_session(sid)
                        await manager.mutate(sid, lambda s: s.set("n", s.get("n", 0) + 1))
                    except StoreUnavailable:
                        unavailable += 1
                    except BaseException as exc:  # the test's point: nothing else may escape
                        unexpected.append(exc)
                        return

            tasks = [asyncio.create_task(worker(s.session_id)) for s in sessions for _ in range(2)]
            for _ in range(30):
                await asyncio.sleep(0.02)
                async with admin.connect() as conn:
                    await conn.exec_driver_sql(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE application_name = '" + KILL_TAG + "' AND pid <> pg_backend_pid()"  # noqa: S608
                    )
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
            assert unexpected == [], [repr(e) for e in unexpected]
            assert unavailable > 0  # the kills were felt
            for session in sessions:  # and the store recovered
                saved = await manager.mutate(session.session_id, lambda s: s.set("after", True))
                assert saved.get("after") is True
        finally:
            with contextlib.suppress(Exception):
                await admin.dispose()
            await store.close()


async def test_a_value_postgres_refuses_is_recognised_as_a_data_error_through_sqlalchemy() -> None:
    """The classification the SQL conversation store shares with the session store: SQLSTATE
    class 22 behind SQLAlchemy's wrapper (which the conversation store sees) is a data error."""
    from sqlalchemy import exc as sa_exc

    from agent_sessions.stores.sql import is_data_error

    engine = create_database_engine(PG_URL, pool_size=1, max_overflow=0)
    try:
        async with engine.connect() as conn:
            with pytest.raises(sa_exc.DBAPIError) as refused:
                await conn.exec_driver_sql("SELECT CAST('abc' AS integer)")  # 22P02
            assert is_data_error(refused.value)
            with pytest.raises(sa_exc.DBAPIError) as other:
                await conn.exec_driver_sql("SELECT * FROM a_table_that_does_not_exist")
            assert not is_data_error(other.value)
    finally:
        await engine.dispose()
