"""`DatabaseSessionStore`: sessions in SQLite (the embedded default) or PostgreSQL.

SQLAlchemy 2 async, without the ORM: the engine (URLs, dialects, the pool, events), the schema
(`schema.Tables`) and the statements (`statements.Statements`, compiled once per dialect); the
statements run on the pooled connection's driver (`transaction`). A get is one statement (the
record, its recent history window and its scopes). A save is one compare-and-set on ``version``
with its history rows and scope changes: on PostgreSQL one statement, on SQLite one transaction
handed to aiosqlite's thread in one call. On PostgreSQL, gets and plain saves that queue while
every connection is busy are coalesced (`coalesce.Coalescer`), one statement for each batch.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import warnings
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine

from ... import records
from ...errors import SerializationError, SessionConflict, SessionNotFound, StoreUnavailable
from ...ids import id_hash, validate_session_id
from ...search import entry_text, highlight
from ...session import Session
from ..base import SearchQuery, SearchRow, SessionStore
from ..coalesce import Batch, Coalescer
from ..primitives import ErasureReport, ScopeChange, SessionWrite, StoredSession, raise_conflict
from .engine import (
    DB_ERRORS,
    DatabaseFailure,
    create_database_engine,
    install_reset_handler,
    session_store_error,
)
from .schema import Tables, create_schema
from .search import (
    SearchStatements,
    check_search_config,
    check_search_index,
    create_search_index,
    purge_deleted,
    upgrade_from_1,
)
from .statements import Statements, assemble, history_rows, save_params, scope_arrays, scope_change_rows, write_params
from .transaction import Connections, Driver, Step, rerun_aborted

__all__ = ["DatabaseSessionStore", "StoreNotClosedWarning"]

logger = logging.getLogger(__name__)

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INIT_ATTEMPTS = 5
_NO_CURSOR = 2**62  # "before" cursor meaning "from the newest entry"
_Load = tuple[str, float]
_Save = tuple[SessionWrite, float]


class StoreNotClosedWarning(RuntimeWarning):
    """A `DatabaseSessionStore` was garbage-collected without `close()` (no ``async with``)."""


@dataclass(slots=True)
class _LoopState:
    """The asyncio primitives of one event loop (a store may be used from several in turn)."""

    init: asyncio.Lock
    loads: Coalescer[_Load, StoredSession | None]
    saves: Coalescer[_Save, bool]


class DatabaseSessionStore(SessionStore):
    """Sessions in a SQL database through SQLAlchemy's async engine: SQLite or PostgreSQL.

    `url_or_engine` is a URL (``sqlite+aiosqlite:///agent_sessions.db``,
    ``postgresql+asyncpg://user@host/db``; plain ``sqlite://`` / ``postgresql://`` map to these
    drivers) or an `AsyncEngine` you own (the store then never disposes it; build it with
    `create_database_engine` to get WAL mode and bounded timeouts). The engine is public as
    `engine` so other components can share the pool. `schema` (PostgreSQL) and `table_prefix`
    isolate several apps or tests in one database. Connection, pool and timeout options go to
    `create_database_engine`; the remaining keyword options are `SessionStore`'s.

    `max_connections` caps this store's concurrent connections (default: the pool's capacity;
    callers beyond it queue first-come first-served). While the store is not saturated it keeps
    one connection between operations (`max_idle_connections=0`: none; more than one are not
    kept); `close()` returns it.

    Database failures raise `StoreUnavailable` with the driver's error chained; a failed save
    leaves nothing half-written. A write PostgreSQL aborts to break a deadlock or a
    serialization conflict (SQLSTATE 40P01, 40001) wrote nothing: the store runs it again a few
    times, then raises `SessionConflict` (which `SessionManager` retries). A value the database
    refuses (SQLSTATE class 22) raises `SerializationError`. Only a failed connection (socket,
    protocol, client-side timeout) is dropped from the pool.

    `search_config` is the PostgreSQL text-search configuration of `search_history` (default
    ``simple``: no language assumed; e.g. ``english`` stems), fixed when the index is created.
    """

    def __init__(
        self,
        url_or_engine: str | URL | AsyncEngine,
        *,
        schema: str | None = None,
        table_prefix: str = "agent_",
        create_tables: bool = True,
        pool_size: int | None = None,
        max_overflow: int | None = None,
        pool_timeout: float = 10.0,
        connect_timeout: float = 10.0,
        command_timeout: float | None = 30.0,
        busy_timeout: float = 5.0,
        engine_options: dict[str, Any] | None = None,
        max_idle_connections: int = 2,
        max_connections: int | None = None,
        search_config: str = "simple",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not _IDENT.fullmatch(table_prefix + "x"):
            raise ValueError("table_prefix must be letters, digits and underscores, starting with a letter or _")
        if schema is not None and not _IDENT.fullmatch(schema):
            raise ValueError("schema must be letters, digits and underscores, starting with a letter or _")
        self._owns_engine = not isinstance(url_or_engine, AsyncEngine)
        if isinstance(url_or_engine, AsyncEngine):
            self.engine = url_or_engine
        else:
            self.engine = create_database_engine(
                url_or_engine,
                pool_size=pool_size,
                max_overflow=max_overflow,
                pool_timeout=pool_timeout,
                connect_timeout=connect_timeout,
                command_timeout=command_timeout,
                busy_timeout=busy_timeout,
                **(engine_options or {}),
            )
        dialect = self.engine.dialect
        if (dialect.name, dialect.driver) not in (("sqlite", "aiosqlite"), ("postgresql", "asyncpg")):
            raise ValueError(
                f"unsupported engine {dialect.name}+{dialect.driver}: use sqlite+aiosqlite or postgresql+asyncpg"
            )
        self.postgres = dialect.name == "postgresql"
        if schema is not None and not self.postgres:
            raise ValueError("schema= is for PostgreSQL; isolate SQLite stores with table_prefix= or another file")
        #: The URL, password hidden.
        self.db_url = self.engine.url.render_as_string(hide_password=True)
        self.schema = schema
        self.table_prefix = table_prefix
        self.create_tables = create_tables
        self.tables = Tables.define(table_prefix, schema)
        self.metadata = self.tables.metadata
        self._sql = Statements(self.tables, dialect)
        self.search_config = check_search_config(search_config)
        self._search = SearchStatements(self.tables, dialect, self.search_config)
        install_reset_handler(self.engine)
        self._ready = False
        self._in_use = False  # connected since the last `close()` (see `__del__`)
        self._connections = Connections(
            self.engine, slots=max_connections, owns_engine=self._owns_engine, hold=max_idle_connections > 0
        )
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = weakref.WeakKeyDictionary()

    @property
    def table_names(self) -> dict[str, str]:
        """The tables this store uses: ``sessions``, ``history``, ``scopes``, ``schema_version``."""
        t = self.tables
        return {
            "sessions": t.sessions.fullname,
            "history": t.history.fullname,
            "scopes": t.scopes.fullname,
            "schema_version": t.versions.fullname,
        }

    async def ping(self) -> None:
        """Connect (creating the tables on first use) and read once; `StoreUnavailable` names
        the server's host and port (or the SQLite file), never the password."""
        try:
            await super().ping()
        except StoreUnavailable as exc:
            url = self.engine.url
            where = f"{url.host}:{url.port or 5432}" if self.postgres else str(url.database)
            raise StoreUnavailable(
                f"cannot reach the {url.get_backend_name()} session store at {where}: {exc}"
            ) from exc

    def __del__(self) -> None:
        # Used and never closed: the connection it holds would reach the garbage collector checked
        # out, and SQLAlchemy would log that as an error naming neither the cause nor the fix.
        # Say both, and hand the connection to the driver's own cleanup.
        if getattr(self, "_in_use", False) and self._owns_engine:
            warnings.warn(
                f"DatabaseSessionStore({self.db_url!r}) was not closed: use `async with SessionManager(store)` "
                "(or `await manager.stop()` / `await store.close()`) when you are done with it",
                StoreNotClosedWarning,
                stacklevel=2,
            )
        connections = getattr(self, "_connections", None)
        if connections is not None:
            connections.detach()

    # ================================================================ plumbing
    async def initialize(self) -> None:
        """Create the tables (if `create_tables`) and check the schema version. Idempotent;
        every operation calls it, so calling it yourself only moves the cost to startup."""
        if self._ready:
            return
        async with self._state().init:
            for attempt in range(_INIT_ATTEMPTS):
                if self._ready:
                    return
                self._in_use = True
                try:
                    async with self.engine.connect() as conn:
                        await create_schema(
                            conn,
                            self.tables,
                            create=self.create_tables,
                            on_create=lambda c: create_search_index(c, self.tables, self.search_config),
                            upgrades={1: lambda c: upgrade_from_1(c, self.tables, self.search_config, self._text_of)},
                        )
                        await conn.commit()
                    self._ready = True
                except StoreUnavailable:
                    raise
                except DB_ERRORS as exc:
                    # Processes opening a new SQLite file at once contend for the lock that WAL mode
                    # and the tables need, and SQLite can report "locked" without waiting for
                    # busy_timeout there: retry that case a bounded few times.
                    if self.postgres or "locked" not in str(exc) or attempt == _INIT_ATTEMPTS - 1:
                        failure = DatabaseFailure.UNAVAILABLE
                        raise session_store_error(failure, exc, self.engine.dialect.name) from exc
                    logger.info("SQLite database locked during first use; retrying (%d)", attempt + 1)
                    await asyncio.sleep(0.05 * (attempt + 1) + random.uniform(0, 0.05))

    def _state(self) -> _LoopState:
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            state = self._loops[loop] = _LoopState(
                asyncio.Lock(),
                Coalescer(self._load_batch),
                Coalescer(
                    self._save_batch, key=lambda item: item[0].session_id, rerun=(SessionConflict, SerializationError)
                ),
            )
        return state

    def _saturated(self) -> bool:
        return self.postgres and self._connections.saturated()

    @asynccontextmanager
    async def _connection(self, *, write: bool = False) -> AsyncIterator[Driver]:
        await self.initialize()
        async with self._connections.connect(write=write) as conn:
            yield conn

    async def _transaction(self, *steps: Step) -> list[int] | None:
        async with self._connection(write=True) as conn:
            outcome = await conn.transaction(steps)
        return None if outcome is None else outcome.counts

    def _ids(self, ids: list[str]) -> Any:
        return ids if self.postgres else json.dumps(ids)

    # ================================================================ reads
    async def load_record(self, session_id: str, now: float) -> StoredSession | None:
        if self._saturated():
            return await self._state().loads.submit((session_id, now), lambda: self._load_one(session_id, now))
        return await self._load_one(session_id, now)

    async def _load_one(self, session_id: str, now: float) -> StoredSession | None:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.load, {"id": session_id, "now": now, "window": self.history_window})
        found = assemble(rows, scopes=True)
        return found[0] if found else None

    async def _load_batch(self, batch: Batch[_Load]) -> list[StoredSession | None]:
        async with self._connection() as conn:
            batch.seal()
            ids = list(dict.fromkeys(sid for sid, _ in batch.items))
            now = min(when for _, when in batch.items)  # every caller checks expiry again at its own
            params = {"ids": self._ids(ids), "now": now, "window": self.history_window}
            rows = await conn.fetch(self._sql.load_many, params)
        found = {stored.session_id: stored for stored in assemble(rows, scopes=True)}
        return [found.get(sid) for sid, _ in batch.items]

    async def load_records(
        self, session_ids: list[str], now: float, *, window: int | None = None
    ) -> list[StoredSession]:
        if not session_ids:
            return []
        size = self.history_window if window is None else min(window, self.history_window)
        params = {"ids": self._ids(session_ids), "now": now, "window": size}
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.load_many, params)
        return assemble(rows, scopes=True)

    async def scan_records(self, batch_size: int, now: float) -> AsyncIterator[list[StoredSession]]:
        after = ""
        while True:
            params = {"after": after, "n": batch_size, "now": now, "window": self.history_window}
            async with self._connection() as conn:
                rows = await conn.fetch(self._sql.scan, params)
            batch = assemble(rows, scopes=False)
            if batch:
                yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1].session_id

    async def history_page(
        self, session_id: str, limit: int, before_seq: int | None, now: float
    ) -> list[tuple[int, bytes]] | None:
        before = _NO_CURSOR if before_seq is None else before_seq
        async with self._connection() as conn:
            rows = await conn.fetch(
                self._sql.history_page, {"id": session_id, "now": now, "before": before, "n": limit}
            )
        if not any(tag == 0 for tag, _, _ in rows):
            return None
        return sorted((seq, bytes(payload)) for tag, seq, payload in rows if tag == 1)

    async def user_session_ids(self, user_id: str, now: float) -> list[str]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.user_ids, {"uid": user_id, "now": now})
        return [row[0] for row in rows]

    async def list_page(self, user_id: str | None, limit: int, after: str | None, now: float) -> list[str]:
        params = {"uid": user_id, "after": after or "", "n": limit, "now": now}
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.list_all if user_id is None else self._sql.list_user, params)
        return [row[0] for row in rows]

    async def scope_rows(self, user_id: str | None) -> tuple[dict[str, bytes], dict[str, bytes]]:
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.scopes_of, {"uid": user_id})
        user: dict[str, bytes] = {}
        app: dict[str, bytes] = {}
        for kind, key, value in rows:
            (app if kind == "app" else user)[key] = bytes(value)
        return user, app

    async def iter_scope_rows(self) -> AsyncIterator[ScopeChange]:
        cursor = ("", "", "")
        current: ScopeChange | None = None
        while True:
            params = {"k": cursor[0], "o": cursor[1], "key": cursor[2], "n": 1000}
            async with self._connection() as conn:
                rows = await conn.fetch(self._sql.scope_page, params)
            for kind, owner, key, value in rows:
                if current is None or (current.kind, current.owner) != (kind, owner):
                    if current is not None:
                        yield current
                    current = ScopeChange(kind, owner)
                current.sets[key] = bytes(value)
            if len(rows) < 1000:
                break
            cursor = (rows[-1][0], rows[-1][1], rows[-1][2])
        if current is not None:
            yield current

    # ================================================================ writes
    async def write(self, write: SessionWrite, now: float) -> None:
        insert = write.expected_version == 0
        if not self.postgres:
            won = await self._transaction(*self._sqlite_save(write, now)) is not None
        elif not (insert or write.user_scope or write.app_scope) and self._saturated():
            won = await self._state().saves.submit((write, now), lambda: self._save_one(write, now))
        else:
            won = await self._save_one(write, now)
        if won:
            return
        if insert:
            raise raise_conflict(write.session_id)
        async with self._connection() as conn:
            state = await conn.fetch(self._sql.state, {"id": write.session_id})
        if not state or (state[0][1] is not None and state[0][1] <= now):
            raise SessionNotFound("the session was deleted or has expired; it is not re-created")
        raise raise_conflict(write.session_id)

    async def write_many(self, writes: list[SessionWrite], now: float) -> list[bool]:
        """Insert every write (all `expected_version == 0`) in one statement (PostgreSQL) or one
        transaction (SQLite); per write, True if inserted, False if its id existed (or came
        earlier in the batch)."""
        if any(w.expected_version != 0 for w in writes):
            raise ValueError("write_many inserts: every expected_version must be 0")
        first = {w.session_id: i for i, w in reversed(list(enumerate(writes)))}
        batch = [w for i, w in enumerate(writes) if first[w.session_id] == i]
        if not batch:
            return []
        if self.postgres:
            statement = self._sql.save(insert=True)

            async def attempt() -> set[str]:
                async with self._connection() as conn:
                    return {row[0] for row in await conn.fetch(statement, save_params(batch, now))}

            won = await rerun_aborted(attempt)
        else:
            counts = await self._transaction(
                *(step for w in batch for step in self._sqlite_save(w, now, requires=True))
            )
            won = {w.session_id for i, w in enumerate(batch) if counts and counts[2 * i]}
        return [first[w.session_id] == i and w.session_id in won for i, w in enumerate(writes)]

    def _sqlite_save(self, write: SessionWrite, now: float, *, requires: bool = False) -> list[Step]:
        """The steps of one SQLite save; the compare-and-set first (it takes the write lock, and when
        it loses nothing else runs). `requires`: the rest runs only if it won (no guard)."""
        sql = self._sql
        insert = write.expected_version == 0
        params = write_params(write, now)
        cas = Step(sql.insert if insert else sql.update, [params], guard=not requires)
        rows = history_rows(write, params["floor"])
        if requires:  # `write_many`: two steps per write, the second needing the first
            return [cas, Step(sql.add_history, rows, many=True, requires=-1)]
        steps = [cas, Step(sql.add_history, rows, many=True)]
        if write.history and params["floor"] > 0:
            steps.append(Step(sql.trim, [params]))
        sets, deletes = scope_change_rows([c for c in (write.user_scope, write.app_scope) if c is not None])
        return [*steps, Step(sql.upsert_scope, sets, many=True), Step(sql.delete_scope, deletes, many=True)]

    async def _save_one(self, write: SessionWrite, now: float) -> bool:
        """One PostgreSQL save as one statement (`Statements.save`), run again while aborted."""
        sets, deletes = scope_change_rows([c for c in (write.user_scope, write.app_scope) if c is not None])
        params = {**save_params([write], now), **scope_arrays(sets, deletes)}
        statement = self._sql.save(insert=write.expected_version == 0, sets=bool(sets), deletes=bool(deletes))

        async def attempt() -> bool:
            async with self._connection() as conn:
                return bool(await conn.fetch(statement, params))

        return await rerun_aborted(attempt)

    async def _save_batch(self, batch: Batch[_Save]) -> list[bool]:
        """Plain PostgreSQL saves (updates without scope changes, one per session) queued while
        every connection was busy: one statement, one round trip and one commit for all."""
        async with self._connection() as conn:
            batch.seal()
            params = save_params([write for write, _ in batch.items], [now for _, now in batch.items])
            won = {row[0] for row in await conn.fetch(self._sql.save(insert=False), params)}
        return [write.session_id in won for write, _ in batch.items]

    async def write_scope_rows(self, changes: list[ScopeChange]) -> None:
        sets, deletes = scope_change_rows(changes)
        if sets or deletes:
            steps = (Step(self._sql.upsert_scope, sets, many=True), Step(self._sql.delete_scope, deletes, many=True))
            await rerun_aborted(lambda: self._transaction(*steps))

    async def delete_record(self, session_id: str) -> bool:
        # Two statements in one transaction: the history delete runs after the session row is gone
        # (and its lock released by any writer), so no writer can add rows it would miss.
        params = [{"id": session_id}]
        steps = (Step(self._sql.delete_session, params), Step(self._sql.delete_history, params))
        counts = await rerun_aborted(lambda: self._transaction(*steps))
        return counts is not None and counts[0] > 0

    async def touch_record(self, session_id: str, last_accessed_at: float, expiry_at: float | None, now: float) -> bool:
        params = {"id": session_id, "la": last_accessed_at, "exp": expiry_at, "now": now}
        async with self._connection(write=True) as conn:
            return await conn.execute(self._sql.touch, params) > 0

    async def delete_expired(self, now: float, batch_size: int) -> int:
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")
        statements = self._sql.expire
        steps = [Step(st, [{"now": now, "n": batch_size}], returning=st is statements[-1]) for st in statements]

        async def batch() -> int:
            async with self._connection(write=True) as conn:
                outcome = await conn.transaction(steps)
            return len(outcome.rows) if outcome is not None else 0

        removed = 0
        while True:
            count = await rerun_aborted(batch)
            removed += count
            if count < batch_size:
                return removed

    async def rename(self, old_id: str, new_id: str) -> Session:
        """Move a session and its whole history to `new_id` in one transaction; the old id is gone
        at once. Raises `SessionNotFound` if the old session is absent or expired."""
        old = validate_session_id(old_id)
        new = validate_session_id(new_id)
        params = [{"old": old, "new": new, "now": self.clock()}]
        moved = await self._transaction(
            Step(self._sql.rename_session, params, guard=True), Step(self._sql.rename_history, params)
        )
        if moved is None:
            raise SessionNotFound("the session does not exist or has expired")
        session = await self.get(new)
        if session is None:
            raise SessionNotFound("the session expired while its id was being regenerated")
        logger.debug("session %s moved to %s", id_hash(old), id_hash(new))
        return session

    async def erase_user(self, user_id: str, now: float) -> ErasureReport:
        """The ids from the user index, then one transaction: the sessions still the user's,
        then (a statement after, as in `delete_record`: a save holding a row commits its
        history first) the history of those gone, then the user scope. A save waiting on a
        deleted row finds it gone and writes nothing (its scope changes included)."""
        async with self._connection() as conn:
            rows = await conn.fetch(self._sql.user_all_ids, {"uid": user_id})
        params = [{"ids": self._ids([row[0] for row in rows]), "uid": user_id}]
        sql = self._sql
        steps = (Step(sql.erase_sessions, params), Step(sql.erase_history, params), Step(sql.erase_scope, params))
        counts = await rerun_aborted(lambda: self._transaction(*steps))
        if counts is None:
            return ErasureReport()
        if counts[1]:  # the erased entries' words leave the search index too
            async with self.engine.begin() as conn:
                await purge_deleted(conn, self.tables)
        return ErasureReport(*counts)

    # ================================================================ search (`search.py`)
    async def search(self, query: SearchQuery, now: float) -> list[SearchRow]:
        statement, params = self._search.statement(query, now)
        async with self._connection() as conn:
            rows = await conn.fetch(statement, params)
        return [  # the statement returns the text; the snippet is made here (see search.py)
            SearchRow(sid, seq, bytes(payload), float(score), highlight(text, query.terms))
            for sid, seq, payload, score, text in rows
        ]

    def _text_of(self, session_id: str, payload: bytes) -> str:
        """The searchable text of a stored entry (schema upgrade); "" for a corrupt one (logged)."""
        try:
            return entry_text(records.decode_entry(self.codec, payload, session_id, self.max_depth))
        except SerializationError:
            return ""  # `decode_entry` logged it; the entry stays unsearchable, as it is unreadable

    async def check_search_index(self) -> None:
        """Raise `StoreUnavailable` if the search index disagrees with the history rows
        (SQLite: FTS5's ``integrity-check`` against its content; PostgreSQL: rows not indexed)."""
        await self.initialize()
        async with self.engine.connect() as conn:
            await check_search_index(conn, self.tables)

    async def rebuild_search_index(self) -> None:
        """Rebuild the search index from the history rows (SQLite; on PostgreSQL the index is a
        generated column and always in step)."""
        await self.initialize()
        async with self.engine.begin() as conn:
            await create_search_index(conn, self.tables, self.search_config, rebuild=True)

    async def close(self) -> None:
        """Dispose the engine's pool if this store created the engine. Idempotent; the store
        reconnects if it is used again."""
        self._in_use = False
        await self._connections.close()
        if self._owns_engine:
            await self.engine.dispose()
