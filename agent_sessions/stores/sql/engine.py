"""The engine `DatabaseSessionStore` expects, and what a database error means.

`create_database_engine` maps plain URLs to the async drivers and bounds every wait;
`classify` turns a driver's (or SQLAlchemy's) exception into one `DatabaseFailure`, shared by
the session store and the SQL conversation store so both map a refused value, a conflict and an
outage the same way.
"""

from __future__ import annotations

import enum
import logging
import sqlite3
from functools import cache
from typing import Any, Literal

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import PoolResetState
from sqlalchemy.util.concurrency import await_only

from ...errors import AgentSessionsError, SerializationError, SessionConflict, StoreUnavailable

__all__ = [
    "DB_ERRORS",
    "DatabaseFailure",
    "classify",
    "create_database_engine",
    "install_reset_handler",
    "is_data_error",
]

logger = logging.getLogger(__name__)

#: Everything that means "the database could not do it": driver and pool errors, sockets, timeouts.
DB_ERRORS: tuple[type[BaseException], ...] = (SQLAlchemyError, sqlite3.Error, OSError, TimeoutError)

_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+asyncpg",
    "postgresql": "postgresql+asyncpg",
    "postgresql+asyncpg": "postgresql+asyncpg",
}


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
    for the write lock). SQLite files run in WAL mode with ``synchronous=NORMAL`` (durable
    across crashes of the process; the last transactions can be lost on power failure — pass
    ``sqlite_synchronous="FULL"`` if that matters). PostgreSQL connections (12 or later) run
    prepared statements on their generic plan (``plan_cache_mode = force_generic_plan``), as
    the stores' statements want; pass ``connect_args={"server_settings": {...}}`` to choose
    the connection's settings yourself (those above are then yours to set too).
    """
    parsed = make_url(url)
    driver = _DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ValueError(
            f"unsupported database URL scheme {parsed.drivername!r}: use sqlite+aiosqlite:///path.db "
            "or postgresql+asyncpg://user@host/db"
        )
    if sqlite_synchronous not in ("OFF", "NORMAL", "FULL", "EXTRA"):
        raise ValueError("sqlite_synchronous must be one of OFF, NORMAL, FULL, EXTRA")
    parsed = parsed.set(drivername=driver)
    options: dict[str, Any] = {"pool_timeout": pool_timeout}
    connect_args: dict[str, Any] = dict(engine_options.pop("connect_args", {}))
    if driver == "postgresql+asyncpg":
        try:
            import asyncpg  # noqa: F401
        except ImportError as exc:
            raise ImportError(
                "PostgreSQL support needs the asyncpg driver: pip install agent-sessions[postgres]"
            ) from exc
        # A fixed pool of five (SQLAlchemy's default size): gets and saves queued for a connection
        # are coalesced, so under load fewer connections carry larger batches. W1 at concurrency
        # 50 (2 cores): 5 connections gave x1.24 the throughput of 10.
        options["pool_size"] = 5 if pool_size is None else pool_size
        options["max_overflow"] = 0 if max_overflow is None else max_overflow
        connect_args.setdefault("timeout", connect_timeout)
        # The stores' statements are keyed lookups and keyset pages (and one full-text search)
        # whose best plan does not depend on the values, so asyncpg's prepared statements run
        # their generic plan; left to choose, PostgreSQL re-planned every get on a table of
        # 100,000 sessions: 0.28 ms a query, 0.165 ms generic (search p50 at 100,000 entries:
        # 0.64-0.68 ms generic, 0.67-0.70 ms re-planned). PostgreSQL 12 or later.
        settings = {"application_name": "agent_sessions", "plan_cache_mode": "force_generic_plan"}
        if command_timeout is not None:
            # The server cancels a statement past the timeout, so the outcome is known (rolled
            # back); the client-side timeout, a second later, only catches a server that hangs.
            settings["statement_timeout"] = str(max(1, int(command_timeout * 1000)))
            connect_args.setdefault("command_timeout", command_timeout + 1.0)
        connect_args.setdefault("server_settings", settings)
    else:
        if parsed.database in (None, "", ":memory:"):
            options.pop("pool_timeout")
        else:
            # One writer at a time (an in-process lock), readers in parallel on their own threads.
            options["pool_size"] = 8 if pool_size is None else pool_size
            options["max_overflow"] = 0 if max_overflow is None else max_overflow
        # No blind ROLLBACK (a thread hop) on every check-in: the reset handler rolls back only a
        # connection that is really inside a transaction.
        options["pool_reset_on_return"] = None
        connect_args.setdefault("timeout", busy_timeout)
    options.update(engine_options)
    engine = create_async_engine(parsed, connect_args=connect_args, **options)
    install_reset_handler(engine)
    if driver == "sqlite+aiosqlite":
        pragmas = (
            f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}",
            "PRAGMA journal_mode = WAL",
            f"PRAGMA synchronous = {sqlite_synchronous}",
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                for pragma in pragmas:
                    cursor.execute(pragma)
            finally:
                cursor.close()

    return engine


def _rollback_dangling(dbapi_connection: Any, _record: Any, reset_state: PoolResetState) -> None:
    """Pool "reset" hook: roll back a transaction left open on the driver (a cancelled task).

    The session store runs its statements on the driver connection, so SQLAlchemy does not know
    about its transactions; without this a cancelled save could hand an open transaction on.
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


def install_reset_handler(engine: AsyncEngine) -> None:
    """Make `engine`'s pool roll back transactions left open on its driver connections. Idempotent."""
    target = engine.sync_engine
    if not event.contains(target, "reset", _rollback_dangling):
        event.listen(target, "reset", _rollback_dangling)


class DatabaseFailure(enum.Enum):
    """What a database error means for the operation and for its connection."""

    #: A constraint failed (a concurrent insert of the same row): a conflict.
    CONFLICT = "conflict"
    #: The server aborted the transaction (deadlock, serialization failure): nothing was written.
    ABORTED = "aborted"
    #: The server refused a value (text with NUL, out of range; SQLSTATE class 22).
    DATA = "data"
    #: The connection itself failed (socket, protocol, client-side timeout): drop it.
    BROKEN = "broken"
    #: Any other database error: the store is unavailable; the connection still works.
    UNAVAILABLE = "unavailable"


_BY_SQLSTATE = {"23": DatabaseFailure.CONFLICT, "22": DatabaseFailure.DATA, "08": DatabaseFailure.BROKEN}
_SQLSTATES = {
    "40P01": DatabaseFailure.ABORTED,  # deadlock detected
    "40001": DatabaseFailure.ABORTED,  # serialization failure
    "57P01": DatabaseFailure.BROKEN,  # admin shutdown: the server is going away
    "57P02": DatabaseFailure.BROKEN,  # crash shutdown
    "57P03": DatabaseFailure.BROKEN,  # cannot connect now
}


@cache
def _asyncpg_broken() -> tuple[type[BaseException], ...]:
    try:
        import asyncpg
    except ImportError:
        return ()
    # The client side (connection closed, unusable), or the protocol stuck in another operation.
    return (asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError)


def classify(exc: BaseException) -> DatabaseFailure | None:
    """What `exc` means, looking through SQLAlchemy's wrappers to the driver's error; None when
    it is not a database error at all."""
    seen: set[int] = set()
    current: BaseException | None = exc
    found: DatabaseFailure | None = None
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, AgentSessionsError):
            return None  # already one of ours
        sqlstate = getattr(current, "sqlstate", None)
        if isinstance(sqlstate, str) and sqlstate:
            return _SQLSTATES.get(sqlstate) or _BY_SQLSTATE.get(sqlstate[:2], DatabaseFailure.UNAVAILABLE)
        if isinstance(current, sqlite3.IntegrityError | IntegrityError):
            return DatabaseFailure.CONFLICT
        if isinstance(current, sqlite3.DataError | DataError):
            return DatabaseFailure.DATA
        if isinstance(current, (*_asyncpg_broken(), OSError, TimeoutError)):
            return DatabaseFailure.BROKEN
        if isinstance(current, sqlite3.Error | SQLAlchemyError):
            found = DatabaseFailure.UNAVAILABLE  # the wrapped driver error may say more
        current = getattr(current, "orig", None) or current.__cause__
    return found


def is_data_error(exc: BaseException) -> bool:
    """Whether `exc` (a driver error, or SQLAlchemy's wrapper of one) is the database refusing a
    value (SQLSTATE class 22): a `SerializationError` for every SQL store, never `StoreUnavailable`."""
    return classify(exc) is DatabaseFailure.DATA


class TransactionAborted(SessionConflict):
    """The server aborted the transaction (deadlock, serialization failure); nothing was written,
    so the session store runs it again a few times, and `SessionManager` reloads and re-applies."""


def session_store_error(failure: DatabaseFailure, exc: BaseException, dialect: str) -> AgentSessionsError:
    """The session store's error for a database failure (the caller chains `exc`)."""
    if failure is DatabaseFailure.CONFLICT:
        return SessionConflict("a concurrent write created the same row; reload and retry")
    if failure is DatabaseFailure.ABORTED:
        logger.debug("database transaction aborted by the server: %s", type(exc).__name__)
        return TransactionAborted(f"the database aborted the transaction ({type(exc).__name__}); retry")
    if failure is DatabaseFailure.DATA:
        # The base class checks values before any I/O; this is the database's own check.
        logger.warning("the database refused a value: %s", type(exc).__name__)
        return SerializationError(f"the database refused a value: {type(exc).__name__}: {exc}")
    logger.warning("database operation failed: %s", type(exc).__name__)
    return StoreUnavailable(f"the {dialect} database failed: {type(exc).__name__}: {exc}")
