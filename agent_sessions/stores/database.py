"""`DatabaseSessionStore`: sessions in SQLite (the embedded default) or PostgreSQL.

Built on SQLAlchemy 2 async, without the ORM: SQLAlchemy provides the engine (URLs, dialects,
the connection pool, reconnects, events) and the schema (Core `Table` objects and
`create_all`). The statements are plain SQL, compiled once per store to the driver's parameter
style and sent to the pooled connection's driver (`PoolProxiedConnection.driver_connection`):
measured here, SQLAlchemy's aiosqlite adapter costs three or four thread hops per statement
where aiosqlite needs one, and `exec_driver_sql` on asyncpg added ~70 us per statement.
Tables, with the default ``table_prefix="agent_"`` (and, on PostgreSQL, an optional ``schema=``):

- ``agent_sessions`` — one row per session: ``session_id`` (primary key), ``user_id``
  (indexed), ``expiry_at`` (indexed), ``version``, ``history_seq``, ``created_at``,
  ``last_accessed_at`` and ``record`` (the codec's bytes);
- ``agent_session_history`` — one row per history entry: ``session_id``, ``seq``,
  ``timestamp``, ``type``, ``payload``; primary key ``(session_id, seq)``, where ``seq`` is
  the append order, so the key is also the per-session time index;
- ``agent_session_scopes`` — user and app scope values: ``kind``, ``owner``, ``key``,
  ``value``; primary key ``(kind, owner, key)``;
- ``agent_schema_version`` — ``component``, ``version``: the row ``("sessions", 1)`` lets a
  later release migrate.

Tables are created on first use (serialised between processes by an advisory lock on
PostgreSQL and ``BEGIN IMMEDIATE`` on SQLite). A save is one compare-and-set on ``version``
with its history rows and scope upserts in the same transaction — on PostgreSQL a single
statement (data-modifying CTEs), on SQLite one short transaction handed to aiosqlite's thread in
one call. A get is one statement (``UNION ALL`` of the record, its recent history window and its
scope rows); on PostgreSQL, gets that queue for a connection while every one is busy are
coalesced into one statement for all of them.

Invariant the queries rely on: a session's history ``seq`` values are contiguous (saves number
new entries from the stored ``history_seq``; trimming drops a prefix), so the recent window of
a session is ``seq > history_seq - history_window``.
"""

# SQL is assembled from table names checked against `_IDENT` and quoted; values are always bound.
# ruff: noqa: S608

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import random
import re
import sqlite3
import warnings
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import aiosqlite
from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    event,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolProxiedConnection, PoolResetState, QueuePool, SingletonThreadPool, StaticPool
from sqlalchemy.util.concurrency import await_only, greenlet_spawn

from ..errors import SerializationError, SessionConflict, SessionNotFound, StoreUnavailable
from ..ids import id_hash, validate_session_id
from ..session import Session
from .base import ScopeChange, SessionStore, SessionWrite, StoredSession, raise_conflict

__all__ = [
    "SCHEMA_VERSION",
    "DatabaseSessionStore",
    "StoreNotClosedWarning",
    "create_database_engine",
    "install_reset_handler",
    "is_data_error",
]

logger = logging.getLogger(__name__)

#: The schema version this release writes and reads.
SCHEMA_VERSION = 1
_COMPONENT = "sessions"
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PARAM = re.compile(r"(?<![:\w]):([A-Za-z_]\w*)")
# Everything that means "the database could not do it": driver and pool errors, sockets, timeouts.
_DB_ERRORS = (SQLAlchemyError, OSError, TimeoutError)
_INIT_ATTEMPTS = 5
_NO_CURSOR = 2**62  # "before" cursor meaning "from the newest entry"
# A write the server aborted (deadlock, serialization failure) is re-run this many times in all
# before the caller gets `SessionConflict`: nothing of it was written, so re-running is exact.
_ABORTED_ATTEMPTS = 3

_T = TypeVar("_T")

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


def _normalise_url(url: str | URL) -> URL:
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: use sqlite+aiosqlite:///path.db "
            "or postgresql+asyncpg://user@host/db"
        )
    return parsed.set(drivername=driver)


def create_database_engine(
    url: str | URL,
    *,
    pool_size: int | None = None,
    max_overflow: int | None = None,
    pool_timeout: float = 10.0,
    connect_timeout: float = 10.0,
    command_timeout: float | None = 30.0,
    busy_timeout: float = 5.0,
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL", "EXTRA"] = "NORMAL",
    **engine_options: Any,
) -> AsyncEngine:
    """An `AsyncEngine` set up the way `DatabaseSessionStore` expects; share it with other stores.

    Plain ``sqlite://`` and ``postgresql://`` / ``postgres://`` URLs map to the async drivers.
    Every wait is bounded: `connect_timeout` (PostgreSQL connect), `command_timeout` (one
    PostgreSQL statement: the server's ``statement_timeout``, so a timed-out save is rolled
    back, plus a client-side timeout one second later for a server that stops answering — after
    that one the outcome of a save is unknown, and retrying it conflicts rather than applying
    twice), `pool_timeout` (waiting for a pooled connection) and `busy_timeout` (SQLite waiting
    for the write lock). SQLite files run in WAL mode with
    ``synchronous=NORMAL`` (durable across crashes of the process; the last transactions can
    be lost on power failure — pass ``sqlite_synchronous="FULL"`` if that matters).
    """
    parsed = _normalise_url(url)
    options: dict[str, Any] = {"pool_timeout": pool_timeout}
    connect_args: dict[str, Any] = dict(engine_options.pop("connect_args", {}))
    if parsed.drivername == "postgresql+asyncpg":
        # A fixed pool (connections above pool_size would be closed on every check-in) of five,
        # SQLAlchemy's default size: gets and saves queued for a connection are coalesced, so
        # under load fewer connections carry larger batches. W1 at concurrency 50 (2 cores): 5
        # connections gave x1.24 the throughput of 10 (median of 4 interleaved runs), and 10 had
        # beaten 20 or 30 before coalescing. Raise it for work that cannot be coalesced
        # (creates, scope writes) at high concurrency, or for a server far away.
        options["pool_size"] = 5 if pool_size is None else pool_size
        options["max_overflow"] = 0 if max_overflow is None else max_overflow
        connect_args.setdefault("timeout", connect_timeout)
        settings = {"application_name": "agent_sessions"}
        if command_timeout is not None:
            # The server cancels a statement past the timeout, so the outcome is known (rolled
            # back); the client-side timeout, a second later, only catches a server that hangs.
            settings["statement_timeout"] = str(max(1, int(command_timeout * 1000)))
            connect_args.setdefault("command_timeout", command_timeout + 1.0)
        connect_args.setdefault("server_settings", settings)
        try:
            import asyncpg  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "PostgreSQL support needs the asyncpg driver: pip install agent-sessions[postgres]"
            ) from exc
    else:
        memory = parsed.database in (None, "", ":memory:")
        if memory:
            options.pop("pool_timeout")
        else:
            # One writer at a time (an in-process lock), readers in parallel on their own threads.
            options["pool_size"] = 8 if pool_size is None else pool_size
            options["max_overflow"] = 0 if max_overflow is None else max_overflow
        # No blind ROLLBACK (a thread hop) on every check-in: `_rollback_dangling` rolls back
        # only a connection that is really inside a transaction.
        options["pool_reset_on_return"] = None
        connect_args.setdefault("timeout", busy_timeout)
    options.update(engine_options)
    engine = create_async_engine(parsed, connect_args=connect_args, **options)
    install_reset_handler(engine)
    if parsed.drivername == "sqlite+aiosqlite":
        _install_sqlite_pragmas(engine, busy_timeout, sqlite_synchronous)
    return engine


def _install_sqlite_pragmas(engine: AsyncEngine, busy_timeout: float, synchronous: str) -> None:
    if synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("sqlite_synchronous must be one of OFF, NORMAL, FULL, EXTRA")

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute(f"PRAGMA synchronous = {synchronous}")
        finally:
            cursor.close()


@dataclass(frozen=True, slots=True)
class _Stmt:
    """A SQL statement in the driver's own parameter style, with the order of its parameters."""

    sql: str
    names: tuple[str, ...]

    def args(self, params: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(params[name] for name in self.names)


def _compile(sql: str, paramstyle: str) -> _Stmt:
    """Turn ``:name`` placeholders into the driver's style once, so executing skips compilation."""
    names: list[str] = []
    if paramstyle == "qmark":

        def qmark(match: re.Match[str]) -> str:
            names.append(match.group(1))
            return "?"

        return _Stmt(_PARAM.sub(qmark, sql), tuple(names))
    if paramstyle == "numeric_dollar":
        index: dict[str, int] = {}

        def dollar(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in index:
                index[name] = len(index) + 1
                names.append(name)
            return f"${index[name]}"

        return _Stmt(_PARAM.sub(dollar, sql), tuple(names))
    raise ValueError(f"unsupported driver parameter style {paramstyle!r}")


def _tables(metadata: MetaData, prefix: str, schema: str | None) -> tuple[Table, Table, Table, Table]:
    sessions = Table(
        f"{prefix}sessions",
        metadata,
        Column("session_id", String(64), primary_key=True),
        Column("user_id", String(256), nullable=True),
        Column("version", BigInteger, nullable=False),
        Column("history_seq", BigInteger, nullable=False),
        Column("created_at", Double, nullable=False),
        Column("last_accessed_at", Double, nullable=False),
        Column("expiry_at", Double, nullable=True),
        Column("record", LargeBinary, nullable=False),
        Index(f"ix_{prefix}sessions_user_id", "user_id"),
        Index(f"ix_{prefix}sessions_expiry_at", "expiry_at"),
        schema=schema,
    )
    history = Table(
        f"{prefix}session_history",
        metadata,
        Column("session_id", String(64), nullable=False),
        Column("seq", BigInteger, nullable=False),
        Column("timestamp", Double, nullable=False),
        Column("type", Text, nullable=False),
        Column("payload", LargeBinary, nullable=False),
        PrimaryKeyConstraint("session_id", "seq", name=f"pk_{prefix}session_history"),
        schema=schema,
    )
    scopes = Table(
        f"{prefix}session_scopes",
        metadata,
        Column("kind", String(8), nullable=False),
        Column("owner", String(256), nullable=False),
        Column("key", Text, nullable=False),
        Column("value", LargeBinary, nullable=False),
        PrimaryKeyConstraint("kind", "owner", "key", name=f"pk_{prefix}session_scopes"),
        schema=schema,
    )
    versions = Table(
        f"{prefix}schema_version",
        metadata,
        Column("component", String(64), primary_key=True),
        Column("version", Integer, nullable=False),
        schema=schema,
    )
    return sessions, history, scopes, versions


class _Driver(Protocol):
    """The three calls the store makes on a pooled connection's driver."""

    async def fetch(self, stmt: _Stmt, params: Mapping[str, Any]) -> Sequence[Any]: ...

    async def execute(self, stmt: _Stmt, params: Mapping[str, Any]) -> int: ...

    async def execute_many(self, stmt: _Stmt, rows: Sequence[Mapping[str, Any]]) -> None: ...

    async def transaction(self, steps: Sequence[_Step]) -> list[int] | None:
        """Run `steps` as one transaction and commit; the rows each changed (an `executemany`
        step counts 0). A `guard` step that changes no row rolls everything back: None."""
        ...


@dataclass(frozen=True, slots=True)
class _Step:
    """One statement of a `_Driver.transaction`: run once with `params`, or (`many`) once per
    row of `rows`; a `guard` must change a row or the transaction is rolled back."""

    stmt: _Stmt
    params: Mapping[str, Any] | None = None
    rows: Sequence[Mapping[str, Any]] = ()
    many: bool = False
    guard: bool = False


def _sqlite_transaction(db: Any, steps: Sequence[tuple[str, Any, bool, bool]]) -> list[int] | None:
    """`_Driver.transaction` on the sqlite3 connection, in aiosqlite's worker thread.

    Python's sqlite3 opens the transaction implicitly at the first write statement (callers put
    the one that decides first, so the write lock is taken at once); every way out commits or
    rolls back here, so the connection never goes back with a transaction open, even if the
    awaiting task was cancelled meanwhile.
    """
    conn = db._conn  # aiosqlite's sqlite3 connection, used here on its own worker thread
    counts: list[int] = []
    try:
        for sql, args, many, guard in steps:
            if many:
                if args:
                    conn.executemany(sql, args)
                counts.append(0)
                continue
            changed = conn.execute(sql, args).rowcount
            if guard and changed == 0:
                conn.rollback()
                return None
            counts.append(changed)
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return counts


class _AiosqliteDriver:
    """aiosqlite: one hop to its thread per call (SQLAlchemy's adapter makes three or four), and
    one per transaction: `transaction` runs all its statements in a single call on aiosqlite's
    worker thread (`Connection._execute`), where separate calls would cost a hop per statement
    and one more for the commit (~25-100 us each here, most of a save). `_execute` is
    aiosqlite's internal queueing method (unchanged since 0.17); when a release lacks it the
    statements go one call at a time instead (`ONE_HOP` is then False).
    """

    __slots__ = ("_db",)

    ONE_HOP: bool = callable(getattr(aiosqlite.Connection, "_execute", None)) and isinstance(
        getattr(aiosqlite.Connection, "_conn", None), property
    )

    def __init__(self, db: Any) -> None:
        self._db = db

    async def transaction(self, steps: Sequence[_Step]) -> list[int] | None:
        if self.ONE_HOP:
            plan = [
                (
                    step.stmt.sql,
                    [step.stmt.args(row) for row in step.rows] if step.many else step.stmt.args(step.params or {}),
                    step.many,
                    step.guard,
                )
                for step in steps
            ]
            result: list[int] | None = await self._db._execute(_sqlite_transaction, self._db, plan)
            return result
        try:
            counts = await _run_steps(self, steps)
            if counts is None:
                await self._db.rollback()
                return None
        except BaseException:
            await self._db.rollback()
            raise
        await self._db.commit()
        return counts

    async def fetch(self, stmt: _Stmt, params: Mapping[str, Any]) -> Sequence[Any]:
        return list(await self._db.execute_fetchall(stmt.sql, stmt.args(params)))

    async def execute(self, stmt: _Stmt, params: Mapping[str, Any]) -> int:
        cursor = await self._db.execute(stmt.sql, stmt.args(params))
        return int(cursor.rowcount)

    async def execute_many(self, stmt: _Stmt, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self._db.executemany(stmt.sql, [stmt.args(r) for r in rows])


class _AsyncpgDriver:
    """asyncpg: prepared statements from its own cache, one round trip per call."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, stmt: _Stmt, params: Mapping[str, Any]) -> Sequence[Any]:
        return list(await self._conn.fetch(stmt.sql, *stmt.args(params)))

    async def execute(self, stmt: _Stmt, params: Mapping[str, Any]) -> int:
        status: str = await self._conn.execute(stmt.sql, *stmt.args(params))
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def execute_many(self, stmt: _Stmt, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            await self._conn.executemany(stmt.sql, [stmt.args(r) for r in rows])

    async def transaction(self, steps: Sequence[_Step]) -> list[int] | None:
        transaction = self._conn.transaction()
        await transaction.start()
        try:
            counts = await _run_steps(self, steps)
        except BaseException:
            await transaction.rollback()
            raise
        if counts is None:
            await transaction.rollback()
            return None
        await transaction.commit()
        return counts


async def _run_steps(conn: _Driver, steps: Sequence[_Step]) -> list[int] | None:
    """The steps of a transaction one call at a time (the caller commits or rolls back)."""
    counts: list[int] = []
    for step in steps:
        if step.many:
            await conn.execute_many(step.stmt, step.rows)
            counts.append(0)
            continue
        changed = await conn.execute(step.stmt, step.params or {})
        if step.guard and changed == 0:
            return None
        counts.append(changed)
    return counts


class _TransactionAborted(SessionConflict):
    """The server aborted the transaction to break a deadlock or a serialization conflict.

    Nothing of it was written, so the same write can simply run again (the store does, a few
    times); as a `SessionConflict` it also makes `SessionManager` reload and re-apply.
    """


@dataclass(frozen=True, slots=True)
class _Errors:
    """The driver's exceptions by what they mean for the operation and for the connection."""

    #: A constraint failed (a concurrent insert of the same row): `SessionConflict`.
    integrity: tuple[type[BaseException], ...]
    #: The server aborted the transaction (deadlock, serialization failure): run it again.
    aborted: tuple[type[BaseException], ...]
    #: The server refused a value (text with NUL, too long for its column): `SerializationError`.
    data: tuple[type[BaseException], ...]
    #: The connection itself failed (socket, protocol, client-side timeout): drop it.
    broken: tuple[type[BaseException], ...]
    #: Any other database error: `StoreUnavailable`; the connection still works.
    other: tuple[type[BaseException], ...]


def _driver_errors(postgres: bool) -> _Errors:
    if postgres:
        import asyncpg
        from asyncpg import exceptions as pg

        return _Errors(
            integrity=(asyncpg.IntegrityConstraintViolationError, IntegrityError),
            # SQLSTATE 40P01 and 40001.
            aborted=(pg.DeadlockDetectedError, pg.SerializationError),
            data=(pg.DataError,),  # SQLSTATE class 22
            broken=(
                asyncpg.InterfaceError,  # the client side: connection closed, in an unusable state
                # The protocol is stuck in another operation (a backend terminated while the
                # connection sat idle left it consuming an error): never reuse the connection.
                pg.InternalClientError,
                pg.PostgresConnectionError,  # SQLSTATE class 08
                pg.AdminShutdownError,  # 57P01-57P03: the server is going away
                pg.CrashShutdownError,
                pg.CannotConnectNowError,
                OSError,
                TimeoutError,  # the client-side command timeout: the statement may still be running
            ),
            other=(asyncpg.PostgresError, *_DB_ERRORS),
        )
    return _Errors(
        integrity=(sqlite3.IntegrityError, IntegrityError),
        aborted=(),
        data=(sqlite3.DataError,),
        broken=(),
        other=(sqlite3.Error, *_DB_ERRORS),
    )


def is_data_error(exc: BaseException) -> bool:
    """Whether `exc` (a driver error, or SQLAlchemy's wrapper of one) is the database refusing
    a value: SQLSTATE class 22 (text with NUL, too long for its column, out of range). Shared by
    every SQL store, so a refused value is `SerializationError` everywhere, never `StoreUnavailable`."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate.startswith("22"):
            return True
        if isinstance(current, sqlite3.DataError):
            return True
        current = getattr(current, "orig", None) or current.__cause__
    return False


def _rollback_dangling(dbapi_connection: Any, _record: Any, reset_state: PoolResetState) -> None:
    """Pool "reset" hook: roll back a transaction left open on the driver (a cancelled task).

    The store talks to the driver connection directly, so SQLAlchemy does not know about its
    transactions; without this a cancelled save could hand an open transaction to the next user.
    """
    if reset_state.transaction_was_reset or not reset_state.asyncio_safe:
        return
    driver = dbapi_connection.driver_connection
    if hasattr(driver, "is_in_transaction"):  # asyncpg
        if driver.is_in_transaction():
            dbapi_connection.rollback()
            if driver.is_in_transaction():
                await_only(driver.execute("ROLLBACK"))
    elif driver.in_transaction:  # aiosqlite
        dbapi_connection.rollback()


def _driver_closed(driver: Any) -> bool:
    """Whether an asyncpg connection is closed (it closes itself when the protocol breaks)."""
    is_closed = getattr(driver, "is_closed", None)
    return bool(is_closed()) if callable(is_closed) else False


def install_reset_handler(engine: AsyncEngine) -> None:
    """Make `engine`'s pool roll back transactions left open on its driver connections. Idempotent."""
    target = engine.sync_engine
    if not event.contains(target, "reset", _rollback_dangling):
        event.listen(target, "reset", _rollback_dangling)


#: A read waiting in a batch of coalesced reads gets this when the batch's runner was cancelled
#: (through no fault of the read's): it then reads on its own.
_ALONE: Any = object()
#: At most this many session ids are read by one coalesced statement.
_MAX_COALESCED = 64


@dataclass(slots=True)
class _LoopSync:
    init: asyncio.Lock
    write: asyncio.Lock
    slots: asyncio.Semaphore
    #: The coalesced read still taking ids (see `DatabaseSessionStore._load_coalesced`).
    reads: dict[str, list[asyncio.Future[Any]]] | None = None
    #: The coalesced save still taking writes (see `DatabaseSessionStore._write_coalesced`).
    writes: dict[str, _PendingWrite] | None = None


@dataclass(frozen=True, slots=True)
class _PendingWrite:
    """A save waiting in a coalesced batch: its parameters and where its outcome goes."""

    params: dict[str, Any]
    rows: list[Any]
    future: asyncio.Future[Any]


def _pool_capacity(engine: AsyncEngine) -> int:
    """How many connections the engine's pool hands out at most (a static pool: one)."""
    pool = engine.sync_engine.pool
    if isinstance(pool, QueuePool):
        return pool.size() + max(0, getattr(pool, "_max_overflow", 0))
    return 1 if isinstance(pool, StaticPool | SingletonThreadPool) else 64


_LIVE = "(expiry_at IS NULL OR expiry_at > :now)"


class _Sql:
    """Every statement the store runs, written once per dialect and compiled to the driver's style."""

    def __init__(self, *, postgres: bool, paramstyle: str, s: str, h: str, sc: str, v: str) -> None:
        self.postgres = postgres
        self.paramstyle = paramstyle
        self.s, self.h, self.sc = s, h, sc
        c = self._c
        ids = "(SELECT unnest(CAST(:ids AS text[])))" if postgres else "(SELECT value FROM json_each(:ids))"
        self.ids_source = ids
        greatest = "GREATEST" if postgres else "max"

        self.load = c(
            f"""
SELECT 0, user_id, version, history_seq, last_accessed_at, expiry_at, record
  FROM {s} WHERE session_id = :id AND {_LIVE}
UNION ALL
SELECT 1, NULL, seq, NULL, NULL, NULL, payload FROM (
  SELECT seq, payload FROM {h} WHERE session_id = :id ORDER BY seq DESC LIMIT :window) AS w
UNION ALL
SELECT 2, "key", NULL, NULL, NULL, NULL, value FROM {sc}
  WHERE kind = 'user' AND owner = (SELECT user_id FROM {s} WHERE session_id = :id)
UNION ALL
SELECT 3, "key", NULL, NULL, NULL, NULL, value FROM {sc} WHERE kind = 'app' AND owner = ''"""
        )
        self.load_many = c(self._batch(ids, with_scopes=True))
        self.scan = c(
            f"WITH page AS (SELECT session_id FROM {s} WHERE session_id > :after AND {_LIVE} "
            f"ORDER BY session_id LIMIT :n) " + self._batch("(SELECT session_id FROM page)", with_scopes=False)
        )
        self.state = c(f"SELECT version, expiry_at FROM {s} WHERE session_id = :id")
        self.insert = c(
            f"INSERT INTO {s} (session_id, user_id, version, history_seq, created_at, last_accessed_at, "
            "expiry_at, record) VALUES (:id, :uid, :newv, :hseq, :created, :la, :exp, :rec) "
            "ON CONFLICT (session_id) DO NOTHING"
        )
        self.update = c(
            f"UPDATE {s} SET user_id = :uid, version = :newv, history_seq = :hseq, last_accessed_at = :la, "
            f"expiry_at = :exp, record = :rec WHERE session_id = :id AND version = :expv AND {_LIVE}"
        )
        self.add_history = c(
            f'INSERT INTO {h} (session_id, seq, "timestamp", "type", payload) VALUES (:id, :seq, :ts, :kind, :payload)'
        )
        self.trim = c(f"DELETE FROM {h} WHERE session_id = :id AND seq <= :floor")
        self.upsert_scope = c(
            f'INSERT INTO {sc} (kind, owner, "key", value) VALUES (:kind, :owner, :key, :value) '
            'ON CONFLICT (kind, owner, "key") DO UPDATE SET value = excluded.value'
        )
        self.delete_scope = c(f'DELETE FROM {sc} WHERE kind = :kind AND owner = :owner AND "key" = :key')
        self.delete_session = c(f"DELETE FROM {s} WHERE session_id = :id")
        self.delete_history = c(f"DELETE FROM {h} WHERE session_id = :id")
        # A touch only moves both columns forward, so a delayed touch never shortens the expiry a
        # newer save or touch set. NULL is "never expires": a new NULL replaces any expiry and a
        # stored NULL is replaced by any (as in the memory and Redis stores).
        exp = "CAST(:exp AS double precision)" if postgres else ":exp"
        self.touch = c(
            f"UPDATE {s} SET last_accessed_at = {greatest}(last_accessed_at, :la), expiry_at = CASE "
            f"WHEN {exp} IS NULL OR expiry_at IS NULL OR {exp} > expiry_at THEN {exp} ELSE expiry_at END "
            f"WHERE session_id = :id AND {_LIVE}"
        )
        self.user_scopes = c(
            f'SELECT kind, "key", value FROM {sc} '
            "WHERE (kind = 'user' AND owner = :uid) OR (kind = 'app' AND owner = '')"
        )
        self.app_scope = c(f"SELECT kind, \"key\", value FROM {sc} WHERE kind = 'app' AND owner = ''")
        self.iter_scopes = c(
            f'SELECT kind, owner, "key", value FROM {sc} WHERE (kind, owner, "key") > (:k, :o, :key) '
            'ORDER BY kind, owner, "key" LIMIT :n'
        )
        self.history_page = c(
            f"""
SELECT 0, NULL, NULL FROM {s} WHERE session_id = :id AND {_LIVE}
UNION ALL
SELECT 1, seq, payload FROM (
  SELECT seq, payload FROM {h} WHERE session_id = :id AND seq < :before ORDER BY seq DESC LIMIT :n) AS p"""
        )
        self.user_ids = c(f"SELECT session_id FROM {s} WHERE user_id = :uid AND {_LIVE}")
        lock = " FOR UPDATE SKIP LOCKED" if postgres else ""
        self.expire = c(
            f"DELETE FROM {s} WHERE session_id IN (SELECT session_id FROM {s} WHERE expiry_at <= :now "
            f"ORDER BY expiry_at LIMIT :n{lock}) AND expiry_at <= :now RETURNING session_id"
        )
        self.delete_histories = c(f"DELETE FROM {h} WHERE session_id IN {ids}")
        self.rename_session = c(f"UPDATE {s} SET session_id = :new WHERE session_id = :old AND {_LIVE}")
        self.rename_history = c(f"UPDATE {h} SET session_id = :new WHERE session_id = :old")
        self.read_version = c(f"SELECT version FROM {v} WHERE component = :component")
        self.write_version = c(f"INSERT INTO {v} (component, version) VALUES (:component, :version)")
        self._pg_writes: dict[tuple[bool, bool, bool, bool, bool], _Stmt] = {}
        self._pg_writes_many: _Stmt | None = None

    def _c(self, sql: str) -> _Stmt:
        return _compile(sql.strip(), self.paramstyle)

    def _batch(self, ids: str, *, with_scopes: bool) -> str:
        s, h, sc = self.s, self.h, self.sc
        sql = f"""
SELECT 0, session_id, user_id, version, history_seq, last_accessed_at, expiry_at, record
  FROM {s} WHERE session_id IN {ids} AND {_LIVE}
UNION ALL
SELECT 1, hh.session_id, NULL, hh.seq, NULL, NULL, NULL, hh.payload
  FROM {h} AS hh JOIN {s} AS ss ON ss.session_id = hh.session_id
  WHERE ss.session_id IN {ids} AND hh.seq > ss.history_seq - :window"""
        if with_scopes:
            sql += f"""
UNION ALL
SELECT 2, owner, "key", NULL, NULL, NULL, NULL, value FROM {sc}
  WHERE kind = 'user' AND owner IN (SELECT user_id FROM {s} WHERE session_id IN {ids})
UNION ALL
SELECT 3, owner, "key", NULL, NULL, NULL, NULL, value FROM {sc} WHERE kind = 'app' AND owner = ''"""
        return sql

    def pg_write_many(self) -> _Stmt:
        """Several PostgreSQL updates (no scope changes) as one statement: a compare-and-set per
        session (distinct ids), then history rows and trimming for the sessions that won.
        Returns the ids that won."""
        stmt = self._pg_writes_many
        if stmt is not None:
            return stmt
        s, h = self.s, self.h
        stmt = self._pg_writes_many = self._c(
            f"""
WITH w AS (
  SELECT * FROM unnest(CAST(:ids AS text[]), CAST(:uids AS text[]), CAST(:expvs AS bigint[]),
    CAST(:newvs AS bigint[]), CAST(:hseqs AS bigint[]), CAST(:las AS float8[]), CAST(:exps AS float8[]),
    CAST(:recs AS bytea[]), CAST(:floors AS bigint[]), CAST(:nows AS float8[]))
    AS w(id, uid, expv, newv, hseq, la, exp, rec, floor, now)),
cas AS (
  UPDATE {s} AS x SET user_id = w.uid, version = w.newv, history_seq = w.hseq, last_accessed_at = w.la,
    expiry_at = w.exp, record = w.rec
  FROM w WHERE x.session_id = w.id AND x.version = w.expv AND (x.expiry_at IS NULL OR x.expiry_at > w.now)
  RETURNING x.session_id),
hist AS (
  INSERT INTO {h} (session_id, seq, "timestamp", "type", payload)
  SELECT t.id, t.seq, t.ts, t.kind, t.payload FROM unnest(CAST(:h_ids AS text[]), CAST(:h_seqs AS bigint[]),
    CAST(:h_tss AS float8[]), CAST(:h_kinds AS text[]), CAST(:h_payloads AS bytea[])) AS t(id, seq, ts, kind, payload)
  WHERE t.id IN (SELECT session_id FROM cas)),
trim AS (
  DELETE FROM {h} AS y USING w WHERE y.session_id = w.id AND w.floor > 0 AND y.seq <= w.floor
    AND w.id IN (SELECT session_id FROM cas))
SELECT session_id FROM cas"""
        )
        return stmt

    def pg_write(self, insert: bool, history: bool, trim: bool, sets: bool, deletes: bool) -> _Stmt:
        """The whole PostgreSQL save as one statement: CAS on the record, then (only if it won)
        history rows, trimming and scope changes — one round trip, atomic by itself."""
        key = (insert, history, trim, sets, deletes)
        stmt = self._pg_writes.get(key)
        if stmt is not None:
            return stmt
        s, h, sc = self.s, self.h, self.sc
        if insert:
            cas = (
                f"INSERT INTO {s} (session_id, user_id, version, history_seq, created_at, last_accessed_at, "
                "expiry_at, record) VALUES (:id, :uid, :newv, :hseq, :created, :la, :exp, :rec) "
                "ON CONFLICT (session_id) DO NOTHING RETURNING 1"
            )
        else:
            cas = (
                f"UPDATE {s} SET user_id = :uid, version = :newv, history_seq = :hseq, last_accessed_at = :la, "
                f"expiry_at = :exp, record = :rec WHERE session_id = :id AND version = :expv AND {_LIVE} RETURNING 1"
            )
        ctes = [f"cas AS ({cas})"]
        won = "EXISTS (SELECT 1 FROM cas)"
        if history:
            ctes.append(
                f'hist AS (INSERT INTO {h} (session_id, seq, "timestamp", "type", payload) '
                "SELECT CAST(:id AS varchar), t.seq, t.ts, t.kind, t.payload FROM unnest(CAST(:seqs AS bigint[]), "
                "CAST(:tss AS float8[]), CAST(:kinds AS text[]), CAST(:payloads AS bytea[])) "
                "AS t(seq, ts, kind, payload) "
                f"WHERE {won})"
            )
        if trim:
            ctes.append(f"trim AS (DELETE FROM {h} WHERE session_id = :id AND seq <= :floor AND {won})")
        if sets:
            ctes.append(
                f'sset AS (INSERT INTO {sc} (kind, owner, "key", value) SELECT t.kind, t.owner, t.key, t.value '
                "FROM unnest(CAST(:set_kinds AS text[]), CAST(:set_owners AS text[]), CAST(:set_keys AS text[]), "
                f"CAST(:set_values AS bytea[])) AS t(kind, owner, key, value) WHERE {won} "
                'ON CONFLICT (kind, owner, "key") DO UPDATE SET value = excluded.value)'
            )
        if deletes:
            ctes.append(
                f"sdel AS (DELETE FROM {sc} AS x USING unnest(CAST(:del_kinds AS text[]), CAST(:del_owners AS text[]), "
                "CAST(:del_keys AS text[])) AS d(kind, owner, key) "
                f'WHERE x.kind = d.kind AND x.owner = d.owner AND x."key" = d.key AND {won})'
            )
        stmt = self._c("WITH " + ", ".join(ctes) + " SELECT count(*) FROM cas")
        self._pg_writes[key] = stmt
        return stmt


def _scope_rows(changes: Sequence[ScopeChange]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The scope rows to upsert and to delete, each sorted by ``(kind, owner, key)``.

    Writers lock scope rows in the order they write them; two sessions of one user saving the
    same keys in different orders would otherwise deadlock. Upserts run before deletes, so a save
    that sets a key another save deletes (and vice versa) can still deadlock; PostgreSQL then
    aborts one of them, which `_rerun_aborted` (and the manager) run again.
    """
    sets = sorted(
        ({"kind": c.kind, "owner": c.owner, "key": k, "value": v} for c in changes for k, v in c.sets.items()),
        key=lambda row: (row["kind"], row["owner"], row["key"]),
    )
    deletes = sorted(
        ({"kind": c.kind, "owner": c.owner, "key": k} for c in changes for k in c.deletes),
        key=lambda row: (row["kind"], row["owner"], row["key"]),
    )
    return sets, deletes


def _quoted(engine: AsyncEngine, schema: str | None, name: str) -> str:
    quote = engine.dialect.identifier_preparer.quote
    return f"{quote(schema)}.{quote(name)}" if schema else quote(name)


class StoreNotClosedWarning(RuntimeWarning):
    """A `DatabaseSessionStore` was garbage-collected without `close()` (no ``async with``)."""


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
    callers beyond it queue first-come first-served). `max_idle_connections` connections stay
    checked out between operations at low concurrency (`close()` returns them).

    Database failures raise `StoreUnavailable` with the driver's error chained; a failed save
    leaves nothing half-written. A write PostgreSQL aborts to break a deadlock or a
    serialization conflict (SQLSTATE 40P01, 40001) wrote nothing: the store runs it again a few
    times, then raises `SessionConflict` (which `SessionManager` retries). A value the database
    refuses (SQLSTATE class 22) raises `SerializationError`. Only a failed
    connection (socket, protocol, client-side timeout) is dropped from the pool; after an error
    the server reported, the connection is reused.
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
        **options: Any,
    ) -> None:
        super().__init__(**options)
        if not _IDENT.fullmatch(table_prefix + "x"):
            raise ValueError("table_prefix must be letters, digits and underscores, starting with a letter or _")
        if schema is not None and not _IDENT.fullmatch(schema):
            raise ValueError("schema must be letters, digits and underscores, starting with a letter or _")
        if isinstance(url_or_engine, AsyncEngine):
            self.engine = url_or_engine
            self._owns_engine = False
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
            self._owns_engine = True
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
        self.metadata = MetaData()
        self.sessions_table, self.history_table, self.scopes_table, self.version_table = _tables(
            self.metadata, table_prefix, schema
        )
        self._sql = _Sql(
            postgres=self.postgres,
            paramstyle=dialect.paramstyle,
            s=_quoted(self.engine, schema, self.sessions_table.name),
            h=_quoted(self.engine, schema, self.history_table.name),
            sc=_quoted(self.engine, schema, self.scopes_table.name),
            v=_quoted(self.engine, schema, self.version_table.name),
        )
        self._errors = _driver_errors(self.postgres)
        install_reset_handler(self.engine)
        self._ready = False
        self._idle: list[PoolProxiedConnection] = []
        self._idle_loop: asyncio.AbstractEventLoop | None = None
        self._max_idle = max_idle_connections
        # Bumped by `close()`: a connection checked out before then is never kept idle afterwards
        # (its pool may have been disposed meanwhile).
        self._generation = 0
        self._active = 0
        self._loop_sync: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopSync] = weakref.WeakKeyDictionary()
        self._batch_tasks: set[asyncio.Task[None]] = set()  # coalesced saves in flight
        self._slots = max_connections if max_connections is not None else _pool_capacity(self.engine)
        if self._slots <= 0:
            raise ValueError("max_connections must be > 0")

    @property
    def table_names(self) -> dict[str, str]:
        """The tables this store uses: ``sessions``, ``history``, ``scopes``, ``schema_version``."""
        return {
            "sessions": self.sessions_table.fullname,
            "history": self.history_table.fullname,
            "scopes": self.scopes_table.fullname,
            "schema_version": self.version_table.fullname,
        }

    async def ping(self) -> None:
        """Connect (creating the tables on first use) and read once; `StoreUnavailable` names
        the server's host and port (or the SQLite file), never the password."""
        try:
            await super().ping()
        except StoreUnavailable as exc:
            url = self.engine.url
            where = f"{url.host}:{url.port or 5432}" if self.postgres else str(url.database)
            name = url.get_backend_name()
            raise StoreUnavailable(f"cannot reach the {name} session store at {where}: {exc}") from exc

    def __del__(self) -> None:
        # Never closed: the connections it keeps between operations would reach the garbage
        # collector checked out, and SQLAlchemy would log that as an error ("non-checked-in
        # connection") naming neither the cause nor the fix. Say both, and hand them over to the
        # driver's own cleanup (detached, SQLAlchemy has nothing left to report).
        idle = getattr(self, "_idle", None)
        if not idle:
            return
        warnings.warn(
            f"DatabaseSessionStore({self.db_url!r}) was not closed: use `async with SessionManager(store)` "
            "(or `await manager.stop()` / `await store.close()`) when you are done with it",
            StoreNotClosedWarning,
            stacklevel=2,
        )
        for raw in idle:
            raw.detach()
        idle.clear()

    # ================================================================ plumbing
    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        logger.warning("database operation failed: %s", type(exc).__name__)
        return StoreUnavailable(f"the {self.engine.dialect.name} database failed: {type(exc).__name__}: {exc}")

    async def initialize(self) -> None:
        """Create the tables (if `create_tables`) and check the schema version. Idempotent;
        every operation calls it, so calling it yourself only moves the cost to startup."""
        if self._ready:
            return
        async with self._sync().init:
            if self._ready:
                return
            for attempt in range(_INIT_ATTEMPTS):
                try:
                    async with self.engine.connect() as conn:
                        await self._create_schema(conn)
                        await conn.commit()
                    break
                except StoreUnavailable:
                    raise
                except _DB_ERRORS as exc:
                    # Several processes opening a new SQLite file at once contend for the lock that
                    # switching it to WAL and creating the tables need; SQLite can report "locked"
                    # without waiting for busy_timeout there. Retry that case a bounded few times.
                    if self.postgres or "locked" not in str(exc) or attempt == _INIT_ATTEMPTS - 1:
                        raise self._unavailable(exc) from exc
                    logger.info("SQLite database locked during first use; retrying (%d)", attempt + 1)
                    await asyncio.sleep(0.05 * (attempt + 1) + random.uniform(0, 0.05))
            self._ready = True

    async def _create_schema(self, conn: AsyncConnection) -> None:
        if self.postgres:
            name = f"{self.schema or ''}.{self.table_prefix}".encode()
            key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
            await conn.exec_driver_sql("SELECT pg_advisory_xact_lock($1)", (key,))
            if self.schema is not None and self.create_tables:
                await conn.exec_driver_sql(
                    f"CREATE SCHEMA IF NOT EXISTS {self.engine.dialect.identifier_preparer.quote(self.schema)}"
                )
        else:
            # Takes the write lock first, so a concurrent first use in another process waits.
            await conn.exec_driver_sql("BEGIN IMMEDIATE")
        if self.create_tables:
            await conn.run_sync(self.metadata.create_all, checkfirst=True)
        stmt = self._sql.read_version
        row = (await conn.exec_driver_sql(stmt.sql, stmt.args({"component": _COMPONENT}))).first()
        if row is None:
            stmt = self._sql.write_version
            await conn.exec_driver_sql(stmt.sql, stmt.args({"component": _COMPONENT, "version": SCHEMA_VERSION}))
        elif row[0] != SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the session tables are at schema version {row[0]}, this release of agent-sessions uses "
                f"{SCHEMA_VERSION}; upgrade agent-sessions or migrate the data"
            )

    def _sync(self) -> _LoopSync:
        # asyncio primitives belong to one event loop; a store may be used from several in turn.
        loop = asyncio.get_running_loop()
        sync = self._loop_sync.get(loop)
        if sync is None:
            sync = self._loop_sync[loop] = _LoopSync(asyncio.Lock(), asyncio.Lock(), asyncio.Semaphore(self._slots))
        return sync

    @asynccontextmanager
    async def _conn(self, *, transaction: bool = False, write: bool = False) -> AsyncIterator[_Driver]:
        """A pooled connection: single statements autocommit, or (`transaction`) one
        transaction; `write`: the caller writes in a transaction of its own (`_transaction`).

        Callers queue first-come first-served on a semaphore sized like the pool (SQLAlchemy's
        asyncio pool queue lets newcomers overtake waiters: a few waited seconds at 50 tasks on
        30 connections). SQLite write transactions also queue on an in-process lock (SQLite has
        one writer anyway) instead of sleeping in SQLite's busy handler; other processes are
        still handled by `busy_timeout`.
        """
        await self.initialize()
        sync = self._sync()
        if (transaction or write) and not self.postgres:
            async with sync.write, sync.slots, self._checkout(transaction) as conn:
                yield conn
        else:
            async with sync.slots, self._checkout(transaction) as conn:
                yield conn

    @asynccontextmanager
    async def _checkout(self, transaction: bool) -> AsyncIterator[_Driver]:
        # A raw pooled connection: SQLAlchemy's pool, events and reconnects, with statements sent
        # straight to the driver (see `_AiosqliteDriver`); `_rollback_dangling` guards check-in.
        errors = self._errors
        generation = self._generation
        raw = self._take_idle()
        if raw is None:
            try:
                raw = await self.engine.raw_connection()
            except (*errors.broken, *errors.other) as exc:
                raise self._unavailable(exc) from exc
        driver: Any = raw.driver_connection
        clean = False
        broken = False
        self._active += 1
        try:
            if self.postgres:
                conn: _Driver = _AsyncpgDriver(driver)
                if transaction:
                    async with driver.transaction():
                        yield conn
                else:
                    yield conn
            else:
                conn = _AiosqliteDriver(driver)
                if not transaction:
                    yield conn
                else:
                    try:
                        yield conn
                    except BaseException:
                        await driver.rollback()
                        raise
                    await driver.commit()
            clean = True
        except errors.integrity as exc:
            clean = True  # the statement failed, the transaction was rolled back: still usable
            raise SessionConflict("a concurrent write created the same row; reload and retry") from exc
        except errors.aborted as exc:
            clean = True  # the server rolled the transaction back and the connection is fine
            logger.debug("database transaction aborted by the server: %s", type(exc).__name__)
            raise _TransactionAborted(
                f"the database aborted the transaction ({type(exc).__name__}); nothing was written, retry"
            ) from exc
        except errors.data as exc:
            # The base class checks values before any I/O; this is the database's own check.
            clean = True  # the statement failed, the transaction was rolled back: still usable
            logger.warning("the database refused a value: %s", type(exc).__name__)
            raise SerializationError(f"the database refused a value: {type(exc).__name__}: {exc}") from exc
        except errors.broken as exc:
            broken = True  # a broken connection, or one still mid-statement after a client timeout
            raise self._unavailable(exc) from exc
        except errors.other as exc:
            # The server reported an error and the connection is still in a known state (the
            # driver rolled back): keep it, unless the driver closed it meanwhile.
            broken = self.postgres and _driver_closed(driver)
            clean = self.postgres and not broken
            raise self._unavailable(exc) from exc
        finally:
            self._active -= 1
            if broken:
                raw.invalidate()
            elif generation != self._generation:
                await self._discard(raw)  # `close()` ran meanwhile: keep nothing from before it
            elif not (clean and self._keep_idle(raw)):
                await greenlet_spawn(raw.close)
            while len(self._idle) > self._max_idle and not self._saturated():
                await greenlet_spawn(self._idle.pop(0).close)

    # Connections stay checked out between operations while this store can use them: a pool
    # check-out and check-in cost about as much as a query (greenlet switches and the pool's
    # bookkeeping, ~35 us). Up to `max_idle_connections` are kept at low concurrency; while every
    # slot is busy a released connection goes straight to the next caller; when the rush is over
    # the extra ones go back to the pool for other users of the engine.
    def _saturated(self) -> bool:
        return self._sync().slots.locked()

    def _take_idle(self) -> PoolProxiedConnection | None:
        if self._idle and self._idle_loop is asyncio.get_running_loop():
            return self._idle.pop()
        return None

    def _keep_idle(self, raw: PoolProxiedConnection) -> bool:
        loop = asyncio.get_running_loop()
        if self._idle and self._idle_loop is not loop:
            return False
        if not self._saturated() and (len(self._idle) >= self._max_idle or self._active >= self._max_idle):
            return False
        self._idle_loop = loop
        self._idle.append(raw)
        return True

    async def _discard(self, raw: PoolProxiedConnection) -> None:
        """Let go of a connection from before a `close()`: closed outright if this store disposed
        its pool (checked in there it would stay open, outside every live pool), else returned."""
        await greenlet_spawn(raw.invalidate if self._owns_engine else raw.close)

    async def _transaction(self, *steps: _Step) -> list[int] | None:
        """Run `steps` in one transaction (see `_Driver.transaction`): on SQLite one hop to
        aiosqlite's thread for all of them, on PostgreSQL one round trip per statement."""
        async with self._conn(write=True) as conn:
            return await conn.transaction(steps)

    def _ids(self, ids: list[str]) -> Any:
        return ids if self.postgres else json.dumps(ids)

    # ================================================================ reads
    async def load_record(self, session_id: str, now: float) -> StoredSession | None:
        if self.postgres and self._saturated():
            return await self._load_coalesced(session_id, now)
        return await self._load_one(session_id, now)

    async def _load_one(self, session_id: str, now: float) -> StoredSession | None:
        params = {"id": session_id, "now": now, "window": self.history_window}
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql.load, params)
        stored: StoredSession | None = None
        history: list[tuple[int, bytes]] = []
        user: dict[str, bytes] = {}
        app: dict[str, bytes] = {}
        for tag, key, n1, n2, f1, f2, blob in rows:
            if tag == 0:
                stored = StoredSession(session_id, key, n1, f1, f2, bytes(blob), [], n2)
            elif tag == 1:
                history.append((n1, bytes(blob)))
            elif tag == 2:
                user[key] = bytes(blob)
            else:
                app[key] = bytes(blob)
        if stored is None:
            return None
        history.sort()
        stored.history = [payload for _, payload in history]
        stored.user_scope = user
        stored.app_scope = app
        return stored

    async def _load_coalesced(self, session_id: str, now: float) -> StoredSession | None:
        """`_load` while every connection is busy: reads that arrive while one waits for a
        connection join it and go as one statement (`load_many`), one round trip for all.

        Under load this turns N queued reads into one query (each would wait for a connection
        anyway); alone, a read never waits for others. Each read still sees the database as of
        some moment during its own call: the statement runs after every joined read began.
        The batch filters with the first read's `now`; every caller's `_build` checks expiry
        again at its own `now`.
        """
        sync = self._sync()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        batch = sync.reads
        if batch is not None and len(batch) < _MAX_COALESCED:
            batch.setdefault(session_id, []).append(future)
            result = await future
            if result is _ALONE:
                return await self._load_one(session_id, now)
            stored: StoredSession | None = result
            return stored
        batch = sync.reads = {session_id: [future]}
        try:
            async with self._conn() as conn:
                if sync.reads is batch:
                    sync.reads = None  # from here on, new reads start a batch of their own
                params = {"ids": list(batch), "now": now, "window": self.history_window}
                rows = await conn.fetch(self._sql.load_many, params)
            found = {stored.session_id: stored for stored in self._assemble(rows, with_scopes=True)}
        except BaseException as exc:
            if sync.reads is batch:
                sync.reads = None
            alone = isinstance(exc, asyncio.CancelledError)
            for waiters in batch.values():
                for waiter in waiters:
                    if waiter is future or waiter.done():
                        continue
                    if alone:
                        waiter.set_result(_ALONE)
                    else:
                        waiter.set_exception(exc)
            raise
        for sid, waiters in batch.items():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(found.get(sid))
        return found.get(session_id)

    @staticmethod
    def _assemble(rows: Sequence[Any], *, with_scopes: bool) -> list[StoredSession]:
        sessions: dict[str, StoredSession] = {}
        history: dict[str, list[tuple[int, bytes]]] = {}
        users: dict[str, dict[str, bytes]] = {}
        app: dict[str, bytes] = {}
        for tag, sid, key, n1, n2, f1, f2, blob in rows:
            if tag == 0:
                sessions[sid] = StoredSession(sid, key, n1, f1, f2, bytes(blob), [], n2, scopes_loaded=with_scopes)
            elif tag == 1:
                history.setdefault(sid, []).append((n1, bytes(blob)))
            elif tag == 2:
                users.setdefault(sid, {})[key] = bytes(blob)
            else:
                app[key] = bytes(blob)
        out = []
        for sid in sorted(sessions):
            stored = sessions[sid]
            stored.history = [payload for _, payload in sorted(history.get(sid, ()))]
            if with_scopes:
                stored.user_scope = dict(users.get(stored.user_id, {})) if stored.user_id is not None else {}
                stored.app_scope = dict(app)
            out.append(stored)
        return out

    async def load_records(self, session_ids: list[str], now: float) -> list[StoredSession]:
        if not session_ids:
            return []
        params = {"ids": self._ids(session_ids), "now": now, "window": self.history_window}
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql.load_many, params)
        return self._assemble(rows, with_scopes=True)

    async def scan_records(self, batch_size: int, now: float) -> AsyncIterator[list[StoredSession]]:
        after = ""
        while True:
            params = {"after": after, "n": batch_size, "now": now, "window": self.history_window}
            async with self._conn() as conn:
                rows = await conn.fetch(self._sql.scan, params)
            batch = self._assemble(rows, with_scopes=False)
            if batch:
                yield batch
            if len(batch) < batch_size:
                return
            after = batch[-1].session_id

    async def history_page(
        self, session_id: str, limit: int, before_seq: int | None, now: float
    ) -> list[tuple[int, bytes]] | None:
        params = {
            "id": session_id,
            "now": now,
            "before": _NO_CURSOR if before_seq is None else before_seq,
            "n": limit,
        }
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql.history_page, params)
        if not any(tag == 0 for tag, _, _ in rows):
            return None
        return sorted((seq, bytes(payload)) for tag, seq, payload in rows if tag == 1)

    async def user_session_ids(self, user_id: str, now: float) -> list[str]:
        async with self._conn() as conn:
            rows = await conn.fetch(self._sql.user_ids, {"uid": user_id, "now": now})
        return [row[0] for row in rows]

    async def scope_rows(self, user_id: str | None) -> tuple[dict[str, bytes], dict[str, bytes]]:
        async with self._conn() as conn:
            if user_id is None:
                rows = await conn.fetch(self._sql.app_scope, {})
            else:
                rows = await conn.fetch(self._sql.user_scopes, {"uid": user_id})
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
            async with self._conn() as conn:
                rows = await conn.fetch(self._sql.iter_scopes, params)
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
        floor = write.history_seq - write.max_history
        rows = [r for r in write.history if r.seq > floor]
        trim = bool(write.history) and floor > 0
        sets, deletes = _scope_rows([c for c in (write.user_scope, write.app_scope) if c is not None])
        params: dict[str, Any] = {
            "id": write.session_id,
            "uid": write.user_id,
            "expv": write.expected_version,
            "newv": write.new_version,
            "hseq": write.history_seq,
            "created": write.created_at,
            "la": write.last_accessed_at,
            "exp": write.expiry_at,
            "rec": write.record,
            "now": now,
            "floor": floor,
        }
        insert = write.expected_version == 0
        if self.postgres:

            async def alone() -> bool:
                return await self._rerun_aborted(lambda: self._write_postgres(write, params, rows, trim, sets, deletes))

            if not (insert or sets or deletes) and self._saturated():
                won = await self._write_coalesced(params, rows, alone)
            else:
                won = await alone()
        else:
            won = await self._write_sqlite(params, rows, trim, sets, deletes, insert)
        if won:
            return
        if insert:
            raise raise_conflict(write.session_id)
        async with self._conn() as conn:
            state = await conn.fetch(self._sql.state, params)
        if not state or (state[0][1] is not None and state[0][1] <= now):
            raise SessionNotFound("the session was deleted or has expired; it is not re-created")
        raise raise_conflict(write.session_id)

    async def _write_coalesced(
        self, params: dict[str, Any], rows: list[Any], alone: Callable[[], Awaitable[bool]]
    ) -> bool:
        """A PostgreSQL save while every connection is busy: saves that queue meanwhile go as
        one statement (`_Sql.pg_write_many`), one round trip and one commit for all of them.

        Only updates without scope changes, one per session id, join a batch. The batch runs in
        a task of its own, so a caller that gives up (is cancelled) does not take the others'
        saves with it (its own may still be written, as with any save cancelled in flight). If
        the batch fails, each of its saves runs again alone, so an error belongs to the save
        that caused it and an aborted transaction is retried as usual.
        """
        sync = self._sync()
        loop = asyncio.get_running_loop()
        pending = _PendingWrite(params, rows, loop.create_future())
        batch = sync.writes
        if batch is not None and len(batch) < _MAX_COALESCED and params["id"] not in batch:
            batch[params["id"]] = pending
        else:
            batch = sync.writes = {params["id"]: pending}
            task = loop.create_task(self._run_write_batch(sync, batch))
            self._batch_tasks.add(task)
            task.add_done_callback(self._batch_tasks.discard)
        outcome = await pending.future
        if outcome is _ALONE:
            return await alone()
        won: bool = outcome
        return won

    async def _run_write_batch(self, sync: _LoopSync, batch: dict[str, _PendingWrite]) -> None:
        try:
            async with self._conn() as conn:
                if sync.writes is batch:
                    sync.writes = None  # from here on, new saves start a batch of their own
                rows = await conn.fetch(self._sql.pg_write_many(), self._batch_params(batch))
            won = {row[0] for row in rows}
        except BaseException as exc:
            if sync.writes is batch:
                sync.writes = None
            # Rolled back for certain (a conflict, an aborted transaction, a refused value): each
            # save runs again alone. Anything else (the connection failed mid-statement) leaves
            # the outcome unknown, as for a single save: every caller gets the error.
            rerun = isinstance(exc, SessionConflict | SerializationError)
            for pending in batch.values():
                if pending.future.done():
                    continue
                if rerun:
                    pending.future.set_result(_ALONE)
                else:
                    error = StoreUnavailable(f"a coalesced save failed: {type(exc).__name__}: {exc}")
                    error.__cause__ = exc
                    pending.future.set_exception(error)
            if not isinstance(exc, Exception):
                raise
            logger.debug("a coalesced save of %d sessions failed: %s", len(batch), type(exc).__name__)
            return
        for sid, pending in batch.items():
            if not pending.future.done():
                pending.future.set_result(sid in won)

    @staticmethod
    def _batch_params(batch: dict[str, _PendingWrite]) -> dict[str, Any]:
        columns: dict[str, list[Any]] = {
            name: [] for name in ("ids", "uids", "expvs", "newvs", "hseqs", "las", "exps", "recs", "floors", "nows")
        }
        history: dict[str, list[Any]] = {name: [] for name in ("h_ids", "h_seqs", "h_tss", "h_kinds", "h_payloads")}
        for pending in batch.values():
            p = pending.params
            for name, key in (
                ("ids", "id"),
                ("uids", "uid"),
                ("expvs", "expv"),
                ("newvs", "newv"),
                ("hseqs", "hseq"),
                ("las", "la"),
                ("exps", "exp"),
                ("recs", "rec"),
                ("nows", "now"),
            ):
                columns[name].append(p[key])
            columns["floors"].append(p["floor"] if pending.rows else 0)  # trim only with new history
            for row in pending.rows:
                history["h_ids"].append(p["id"])
                history["h_seqs"].append(row.seq)
                history["h_tss"].append(row.timestamp)
                history["h_kinds"].append(row.type)
                history["h_payloads"].append(row.payload)
        return {**columns, **history}

    async def _write_postgres(
        self,
        write: SessionWrite,
        params: dict[str, Any],
        rows: list[Any],
        trim: bool,
        sets: list[dict[str, Any]],
        deletes: list[dict[str, Any]],
    ) -> bool:
        if rows:
            params["seqs"] = [r.seq for r in rows]
            params["tss"] = [r.timestamp for r in rows]
            params["kinds"] = [r.type for r in rows]
            params["payloads"] = [r.payload for r in rows]
        if sets:
            params["set_kinds"] = [s["kind"] for s in sets]
            params["set_owners"] = [s["owner"] for s in sets]
            params["set_keys"] = [s["key"] for s in sets]
            params["set_values"] = [s["value"] for s in sets]
        if deletes:
            params["del_kinds"] = [d["kind"] for d in deletes]
            params["del_owners"] = [d["owner"] for d in deletes]
            params["del_keys"] = [d["key"] for d in deletes]
        stmt = self._sql.pg_write(write.expected_version == 0, bool(rows), trim, bool(sets), bool(deletes))
        async with self._conn() as conn:
            result = await conn.fetch(stmt, params)
        return bool(result[0][0])

    async def _write_sqlite(
        self,
        params: dict[str, Any],
        rows: list[Any],
        trim: bool,
        sets: list[dict[str, Any]],
        deletes: list[dict[str, Any]],
        insert: bool,
    ) -> bool:
        sql = self._sql
        sid = params["id"]
        # The compare-and-set goes first: it writes, so the transaction takes the write lock at
        # once, and when it loses nothing else runs.
        steps = [_Step(sql.insert if insert else sql.update, params, guard=True)]
        if rows:
            history = [{"id": sid, "seq": r.seq, "ts": r.timestamp, "kind": r.type, "payload": r.payload} for r in rows]
            steps.append(_Step(sql.add_history, rows=history, many=True))
        if trim:
            steps.append(_Step(sql.trim, params))
        if sets:
            steps.append(_Step(sql.upsert_scope, rows=sets, many=True))
        if deletes:
            steps.append(_Step(sql.delete_scope, rows=deletes, many=True))
        return await self._transaction(*steps) is not None

    async def write_scope_rows(self, changes: list[ScopeChange]) -> None:
        sets, deletes = _scope_rows(changes)
        if not (sets or deletes):
            return

        async def attempt() -> None:
            await self._transaction(
                _Step(self._sql.upsert_scope, rows=sets, many=True),
                _Step(self._sql.delete_scope, rows=deletes, many=True),
            )

        await self._rerun_aborted(attempt)

    @staticmethod
    async def _rerun_aborted(attempt: Callable[[], Awaitable[_T]]) -> _T:
        """Run a write, and run it again (briefly backing off) when the server aborted it."""
        failures = 0
        while True:
            try:
                return await attempt()
            except _TransactionAborted:
                failures += 1
                if failures >= _ABORTED_ATTEMPTS:
                    raise
                await asyncio.sleep(random.uniform(0, 0.002 * 2**failures))

    async def delete_record(self, session_id: str) -> bool:
        # Two statements in one transaction: the history delete runs after the session row is gone
        # (and its lock released by any writer), so no writer can add rows it would miss.
        async def attempt() -> bool:
            params = {"id": session_id}
            counts = await self._transaction(
                _Step(self._sql.delete_session, params), _Step(self._sql.delete_history, params)
            )
            return counts is not None and counts[0] > 0

        return await self._rerun_aborted(attempt)

    async def touch_record(self, session_id: str, last_accessed_at: float, expiry_at: float | None, now: float) -> bool:
        params = {"id": session_id, "la": last_accessed_at, "exp": expiry_at, "now": now}
        if self.postgres:  # one statement: autocommit
            async with self._conn() as conn:
                return await conn.execute(self._sql.touch, params) > 0
        return await self._transaction(_Step(self._sql.touch, params, guard=True)) is not None

    async def delete_expired(self, now: float, batch_size: int) -> int:
        if batch_size <= 0:
            raise ValueError("batch_size must be > 0")

        async def batch() -> list[str]:
            async with self._conn(transaction=True) as conn:
                rows = await conn.fetch(self._sql.expire, {"now": now, "n": batch_size})
                ids = [row[0] for row in rows]
                if ids:
                    await conn.execute(self._sql.delete_histories, {"ids": self._ids(ids)})
            return ids

        removed = 0
        while True:
            ids = await self._rerun_aborted(batch)
            removed += len(ids)
            if len(ids) < batch_size:
                return removed

    async def rename(self, old_id: str, new_id: str) -> Session:
        """Move a session and its whole history to `new_id` in one transaction; the old id is gone
        at once. Raises `SessionNotFound` if the old session is absent or expired."""
        old = validate_session_id(old_id)
        new = validate_session_id(new_id)
        params = {"old": old, "new": new, "now": self.clock()}
        moves = await self._transaction(
            _Step(self._sql.rename_session, params, guard=True), _Step(self._sql.rename_history, params)
        )
        if moves is None:
            raise SessionNotFound("the session does not exist or has expired")
        moved = await self.get(new)
        if moved is None:
            raise SessionNotFound("the session expired while its id was being regenerated")
        logger.debug("session %s moved to %s", id_hash(old), id_hash(new))
        return moved

    async def close(self) -> None:
        """Return the connections this store holds and dispose the engine's pool if this store
        created the engine. Idempotent; the store reconnects if it is used again.

        Operations still running keep nothing: when they end, their connections are closed (or
        returned to a pool this store does not own) instead of being kept for the next operation.
        """
        self._generation += 1
        idle, self._idle = self._idle, []
        for raw in idle:
            await greenlet_spawn(raw.close)  # back to the pool, which `dispose` then closes
        if self._owns_engine:
            await self.engine.dispose()
        # Operations that started while the pool was being disposed may have kept a connection.
        self._generation += 1
        idle, self._idle = self._idle, []
        for raw in idle:
            await self._discard(raw)
