"""The search index on SQL: a version-1 database (the previous release's tables, built here with
explicit DDL) is upgraded on first use with its history indexed; the SQLite index survives
``VACUUM``, can be checked and rebuilt; and the query plans stay index-backed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet

from agent_sessions import FernetCodec, JsonCodec, MemorySessionStore, Session, StoreUnavailable
from agent_sessions.codec import Codec
from agent_sessions.search import SearchQuery
from agent_sessions.stores.sql import SCHEMA_VERSION, DatabaseSessionStore, create_database_engine
from agent_sessions.stores.sql.search import SearchStatements

from ..support import PG_URL
from .stores import postgres_schema

pytestmark = pytest.mark.asyncio

V1_TABLES = [
    "CREATE TABLE {p}agent_sessions (session_id VARCHAR(64) NOT NULL PRIMARY KEY, user_id VARCHAR(256), "
    "version BIGINT NOT NULL, history_seq BIGINT NOT NULL, created_at {f} NOT NULL, last_accessed_at {f} NOT NULL, "
    "expiry_at {f}, record {b} NOT NULL)",
    "CREATE INDEX ix_agent_sessions_user_id ON {p}agent_sessions (user_id)",
    "CREATE INDEX ix_agent_sessions_expiry_at ON {p}agent_sessions (expiry_at)",
    'CREATE TABLE {p}agent_session_history (session_id VARCHAR(64) NOT NULL, seq BIGINT NOT NULL, "timestamp" {f} '
    'NOT NULL, "type" TEXT NOT NULL, payload {b} NOT NULL, CONSTRAINT pk_agent_session_history PRIMARY KEY '
    "(session_id, seq))",
    'CREATE TABLE {p}agent_session_scopes (kind VARCHAR(8) NOT NULL, owner VARCHAR(256) NOT NULL, "key" TEXT '
    'NOT NULL, value {b} NOT NULL, CONSTRAINT pk_agent_session_scopes PRIMARY KEY (kind, owner, "key"))',
    "CREATE TABLE {p}agent_schema_version (component VARCHAR(64) NOT NULL PRIMARY KEY, version INTEGER NOT NULL)",
    "INSERT INTO {p}agent_schema_version (component, version) VALUES ('sessions', 1)",
]


@pytest.fixture(params=["sqlite", "postgres"])
async def v1_url(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """An empty version-1 database: its URL and the store options that open it."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'v1.db'}", {}
        return
    async with postgres_schema() as schema:
        yield PG_URL, {"schema": schema}


@asynccontextmanager
async def opened(url: str, **options: Any) -> AsyncIterator[DatabaseSessionStore]:
    store = DatabaseSessionStore(url, **options)
    try:
        yield store
    finally:
        await store.close()


async def build_v1(url: str, options: dict[str, Any], sessions: list[tuple[Codec, Session]]) -> None:
    """The previous release's tables holding `sessions`, each encoded by its codec."""
    schema = options.get("schema")
    postgres = schema is not None
    prefix = f'"{schema}".' if postgres else ""
    kinds = {"f": "DOUBLE PRECISION" if postgres else "FLOAT", "b": "BYTEA" if postgres else "BLOB", "p": prefix}
    engine = create_database_engine(url)
    try:
        async with engine.begin() as conn:
            if postgres:
                await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
            for ddl in V1_TABLES:
                await conn.exec_driver_sql(ddl.format(**kinds))
            mark = ["$1", "$2", "$3", "$4", "$5", "$6", "$7", "$8"] if postgres else ["?"] * 8
            for codec, session in sessions:
                write, _ = MemorySessionStore(codec=codec).prepare_write(session)
                await conn.exec_driver_sql(
                    f"INSERT INTO {prefix}agent_sessions VALUES ({', '.join(mark)})",
                    (
                        write.session_id,
                        write.user_id,
                        1,
                        write.history_seq,
                        write.created_at,
                        write.last_accessed_at,
                        write.expiry_at,
                        write.record,
                    ),
                )
                for row in write.history:
                    await conn.exec_driver_sql(
                        f"INSERT INTO {prefix}agent_session_history VALUES ({', '.join(mark[:5])})",
                        (write.session_id, row.seq, row.timestamp, row.type, row.payload),
                    )
    finally:
        await engine.dispose()


def user_session(user_id: str, *texts: str) -> Session:
    session = Session(user_id=user_id)
    session.expiry_at = session.created_at + 3600
    for text in texts:
        session.add_history_entry("message", {"content": text})
    return session


CODECS: dict[str, Callable[[], Codec]] = {
    "json": JsonCodec,
    "fernet": lambda: FernetCodec(Fernet.generate_key()),
}


@pytest.mark.parametrize("codec_name", sorted(CODECS))
async def test_a_version_1_database_is_upgraded_on_first_use_with_its_history_searchable(
    v1_url: tuple[str, dict[str, Any]], codec_name: str
) -> None:
    url, options = v1_url
    codec = CODECS[codec_name]()
    alice = user_session("alice", "I moved to Lisbon last year", "my cat is called Miso")
    bob = user_session("bob", "Lisbon is lovely", *[f"filler entry {i}" for i in range(600)])  # > one batch
    await build_v1(url, options, [(codec, alice), (codec, bob)])
    async with opened(url, codec=codec, **options) as store:
        hits = await store.search_history("alice", "lisbon")
        assert [(h.session_id, h.seq, h.entry["data"]["content"]) for h in hits] == [
            (alice.session_id, 1, "I moved to Lisbon last year")
        ]
        assert "**Lisbon**" in hits[0].snippet
        assert len(await store.search_history("bob", "filler", limit=1000)) == 600
        await store.check_search_index()
        # New writes are indexed like the migrated rows, and the version row says 2.
        loaded = await store.get(alice.session_id)
        assert loaded is not None
        loaded.add_history_entry("message", {"content": "Lisbon again"})
        await store.set(loaded)
        assert len(await store.search_history("alice", "lisbon")) == 2
        table = store.table_names["schema_version"]
        async with store.engine.connect() as conn:
            rows = (await conn.exec_driver_sql(f"SELECT component, version FROM {table}")).all()  # noqa: S608
        assert [tuple(r) for r in rows] == [("sessions", SCHEMA_VERSION)] and SCHEMA_VERSION == 2


async def test_a_corrupt_row_does_not_stop_the_upgrade(v1_url: tuple[str, dict[str, Any]]) -> None:
    url, options = v1_url
    key = Fernet.generate_key()
    alice = user_session("alice", "Lisbon")
    other = user_session("alice", "Porto")  # encrypted with a key the store does not have
    await build_v1(url, options, [(FernetCodec(key), alice), (FernetCodec(Fernet.generate_key()), other)])
    async with opened(url, codec=FernetCodec(key), **options) as store:
        assert [h.session_id for h in await store.search_history("alice", "lisbon")] == [alice.session_id]
        assert await store.search_history("alice", "porto") == []  # unreadable: not indexed


async def test_a_version_1_database_opened_without_create_tables_says_how_to_upgrade(
    v1_url: tuple[str, dict[str, Any]],
) -> None:
    url, options = v1_url
    await build_v1(url, options, [])
    async with opened(url, create_tables=False, **options) as store:
        with pytest.raises(StoreUnavailable, match="create_tables=True"):
            await store.search_history("alice", "lisbon")


async def test_sqlite_index_survives_vacuum_and_can_be_checked_and_rebuilt(tmp_path: Path) -> None:
    async with opened(f"sqlite+aiosqlite:///{tmp_path / 'search.db'}") as store:
        sessions = [user_session("alice", *[f"entry {i} word{i}" for i in range(20)]) for _ in range(5)]
        for session in sessions:
            await store.set(session)
        for session in sessions[::2]:
            await store.delete(session.session_id)  # holes in the rowids, which VACUUM could close
        async with store.engine.connect() as conn:
            await conn.exec_driver_sql("VACUUM")
        await store.check_search_index()
        assert len(await store.search_history("alice", "word7")) == 2
        # A broken index (rows planted behind the triggers' back) is reported, and rebuilt.
        fts = "agent_session_search"
        async with store.engine.begin() as conn:
            await conn.exec_driver_sql(f"INSERT INTO {fts} (rowid, type, search_text) VALUES (999999, 'x', 'ghost')")
        with pytest.raises(StoreUnavailable, match="rebuild_search_index"):
            await store.check_search_index()
        await store.rebuild_search_index()
        await store.check_search_index()
        assert len(await store.search_history("alice", "word7")) == 2


async def test_the_sqlite_search_plan_starts_from_the_fts5_index(tmp_path: Path) -> None:
    async with opened(f"sqlite+aiosqlite:///{tmp_path / 'plan.db'}") as store:
        await store.set(user_session("alice", "Lisbon"))
        statements = SearchStatements(store.tables, store.engine.dialect, "simple")
        query = SearchQuery("alice", None, ("lisbon",), 10)
        statement, params = statements.statement(query, 0.0)
        async with store.engine.connect() as conn:
            plan = (await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement.sql, statement.args(params))).all()
        details = [str(row[-1]) for row in plan]
        # The FTS5 match drives; each hit is one rowid lookup in history and one key lookup in sessions.
        assert details[:2] == ["MATERIALIZE hits", "SCAN agent_session_search VIRTUAL TABLE INDEX 0:M2"], details
        assert any("SEARCH h USING INTEGER PRIMARY KEY (rowid=?)" in d for d in details), details
        assert any("SEARCH s USING INDEX sqlite_autoindex_agent_sessions_1 (session_id=?)" in d for d in details), (
            details
        )
