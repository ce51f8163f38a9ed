"""The SQL store's connections and its one transaction runner per driver.

This module is the store's one fast path (DESIGN §9), kept in this one place, over SQLAlchemy's
pool: statements compiled once by SQLAlchemy (`statements.Statement`) run on the pooled
connection's driver (`driver_connection`); a SQLite transaction runs all its statements in ONE
call on aiosqlite's worker thread; and one connection stays checked out between operations
while the store is not saturated. Measured here (2 shared cores, medians of interleaved runs):
SQLAlchemy's `AsyncConnection` costs three or four thread hops per SQLite statement where
aiosqlite needs one; `engine.connect()` per operation cost 90-200 us on PostgreSQL where a get
takes 130-210 us; a pool check-out and check-in, 32-58 us per operation. Each is above 15%.

`rerun_aborted` runs a write transaction again while the server aborts it (deadlock,
serialization failure: nothing of it was written).
"""

from __future__ import annotations

import asyncio
import random
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection, QueuePool, SingletonThreadPool, StaticPool
from sqlalchemy.util.concurrency import greenlet_spawn

from .engine import DB_ERRORS, DatabaseFailure, TransactionAborted, classify, session_store_error
from .statements import Statement

__all__ = [
    "ABORTED_ATTEMPTS",
    "Connections",
    "Driver",
    "Outcome",
    "PostgresDriver",
    "SqliteDriver",
    "Step",
    "rerun_aborted",
]

#: A write the server aborted (deadlock, serialization failure) runs this many times in all before
#: the caller gets `SessionConflict`: nothing of it was written, so running it again is exact.
ABORTED_ATTEMPTS = 3
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a transaction, run once per row of `rows` (`many`: one `executemany`).

    A `guard` must change a row, or the whole transaction is rolled back (the runner returns
    None). `requires` (an index into the steps before, as a list: -1 is the one just before)
    runs this one only if that step changed a row.
    `returning`: its rows go to `Outcome.rows`.
    """

    statement: Statement
    rows: Sequence[Mapping[str, Any]]
    many: bool = False
    guard: bool = False
    requires: int | None = None
    returning: bool = False


@dataclass(slots=True)
class Outcome:
    """What a committed transaction did: the rows each step changed, and the rows returned."""

    counts: list[int] = field(default_factory=list)
    rows: list[Any] = field(default_factory=list)


class Driver(Protocol):
    """The calls the store makes on a connection: a read, one autocommitted write, a transaction."""

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Any]: ...

    async def execute(self, statement: Statement, params: Mapping[str, Any]) -> int: ...

    async def transaction(self, steps: Sequence[Step]) -> Outcome | None: ...


def _sqlite_transaction(conn: Any, plan: list[tuple[str, list[tuple[Any, ...]], Step]]) -> Outcome | None:
    """The SQLite runner, on aiosqlite's worker thread: every way out commits or rolls back, so
    the connection never goes back with a transaction open, even if the awaiting task was
    cancelled meanwhile. Python's sqlite3 opens the transaction at the first write statement
    (callers put the one that decides first, so the write lock is taken at once)."""
    outcome = Outcome()
    try:
        for sql, args, step in plan:
            if (step.requires is not None and outcome.counts[step.requires] == 0) or not args:
                outcome.counts.append(0)
            elif step.many:
                conn.executemany(sql, args)
                outcome.counts.append(0)
            else:
                cursor = conn.execute(sql, args[0])
                if step.returning:
                    outcome.rows.extend(cursor.fetchall())
                outcome.counts.append(cursor.rowcount)
                if step.guard and cursor.rowcount == 0:
                    conn.rollback()
                    return None
        conn.commit()
    except BaseException:
        conn.rollback()
        raise
    return outcome


class SqliteDriver:
    """aiosqlite: one hop to its worker thread per read and per transaction. `transaction` hands
    the whole of it to the thread in one call (`Connection._execute`, aiosqlite's queueing
    method since 0.17; `Connection._conn` is its sqlite3 connection), where one call per
    statement would cost a hop each and one more for the commit (~25-100 us each, most of a save).
    """

    __slots__ = ("_db",)

    def __init__(self, db: Any) -> None:
        self._db = db

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Any]:
        return list(await self._db.execute_fetchall(statement.sql, statement.args(params)))

    async def execute(self, statement: Statement, params: Mapping[str, Any]) -> int:
        outcome = await self.transaction([Step(statement, [params])])
        return outcome.counts[0] if outcome is not None else 0

    async def transaction(self, steps: Sequence[Step]) -> Outcome | None:
        plan = [(step.statement.sql, [step.statement.args(row) for row in step.rows], step) for step in steps]
        result: Outcome | None = await self._db._execute(_sqlite_transaction, self._db._conn, plan)
        return result


class PostgresDriver:
    """asyncpg: prepared statements from its own cache, one round trip per statement."""

    __slots__ = ("_conn",)

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    async def fetch(self, statement: Statement, params: Mapping[str, Any]) -> Sequence[Any]:
        return list(await self._conn.fetch(statement.sql, *statement.args(params)))

    async def execute(self, statement: Statement, params: Mapping[str, Any]) -> int:
        status: str = await self._conn.execute(statement.sql, *statement.args(params))
        count = status.rsplit(" ", 1)[-1]
        return int(count) if count.isdigit() else 0

    async def transaction(self, steps: Sequence[Step]) -> Outcome | None:
        outcome = Outcome()
        transaction = self._conn.transaction()
        await transaction.start()
        try:
            for step in steps:
                if (step.requires is not None and outcome.counts[step.requires] == 0) or not step.rows:
                    outcome.counts.append(0)
                elif step.many:
                    await self._conn.executemany(step.statement.sql, [step.statement.args(r) for r in step.rows])
                    outcome.counts.append(0)
                elif step.returning:
                    rows = await self.fetch(step.statement, step.rows[0])
                    outcome.rows.extend(rows)
                    outcome.counts.append(len(rows))
                else:
                    outcome.counts.append(await self.execute(step.statement, step.rows[0]))
                if step.guard and outcome.counts[-1] == 0:
                    # Not an error swallowed: the guard (the compare-and-set) matched no row, so
                    # nothing is kept and None tells the caller the save lost (`SessionConflict`).
                    await transaction.rollback()
                    return None
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
        return outcome


class Connections:
    """The store's connections: from SQLAlchemy's pool, at most `slots` at once (callers queue
    first-come first-served; the asyncio pool's own queue lets newcomers overtake waiters), SQLite
    writers one at a time behind an in-process lock (SQLite has one writer; no sleeping in its
    busy handler), and one connection held between operations (the fast path above).

    Database errors leave as the session store's errors (`session_store_error`); a failed
    connection is dropped, one the server reported an error on is kept.
    """

    def __init__(self, engine: AsyncEngine, *, slots: int | None, owns_engine: bool, hold: bool = True) -> None:
        pool = engine.sync_engine.pool
        capacity = pool.size() + max(0, pool.overflow()) if isinstance(pool, QueuePool) else 64
        self.slots = (
            slots if slots is not None else 1 if isinstance(pool, StaticPool | SingletonThreadPool) else capacity
        )
        if self.slots <= 0:
            raise ValueError("max_connections must be > 0")
        self.engine = engine
        self.postgres = engine.dialect.name == "postgresql"
        self._owns_engine = owns_engine
        self._hold = hold
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[asyncio.Semaphore, asyncio.Lock]]
        self._loops = weakref.WeakKeyDictionary()
        self._held: tuple[asyncio.AbstractEventLoop, PoolProxiedConnection] | None = None
        self._generation = 0  # bumped by `close()`: connections from before it are not kept

    def _sync(self) -> tuple[asyncio.Semaphore, asyncio.Lock]:
        # asyncio primitives belong to one event loop; a store may be used from several in turn.
        loop = asyncio.get_running_loop()
        sync = self._loops.get(loop)
        if sync is None:
            sync = self._loops[loop] = (asyncio.Semaphore(self.slots), asyncio.Lock())
        return sync

    def saturated(self) -> bool:
        """Whether every slot is taken (a newcomer would queue)."""
        return self._sync()[0].locked()

    @asynccontextmanager
    async def connect(self, *, write: bool = False) -> AsyncIterator[Driver]:
        """A connection's driver (`write`: the caller runs a write transaction on it)."""
        slots, writer = self._sync()
        generation = self._generation
        loop = asyncio.get_running_loop()
        async with AsyncExitStack() as stack:
            if write and not self.postgres:
                await stack.enter_async_context(writer)
            await stack.enter_async_context(slots)
            raw, self._held = (self._held[1], None) if self._held and self._held[0] is loop else (None, self._held)
            try:
                raw = raw or await self.engine.raw_connection()
            except DB_ERRORS as exc:
                lost = classify(exc) or DatabaseFailure.UNAVAILABLE
                raise session_store_error(lost, exc, self.engine.dialect.name) from exc
            drop = False
            try:
                driver: Any = raw.driver_connection
                yield PostgresDriver(driver) if self.postgres else SqliteDriver(driver)
            except BaseException as exc:
                failure = classify(exc)
                if failure is None:
                    raise
                drop = failure is DatabaseFailure.BROKEN or (self.postgres and driver.is_closed())
                raise session_store_error(failure, exc, self.engine.dialect.name) from exc
            finally:
                # After `close()` disposed the pool meanwhile, a connection from before is closed.
                drop = drop or (generation != self._generation and self._owns_engine)
                if drop:
                    await greenlet_spawn(raw.invalidate)
                elif self._hold and self._held is None and generation == self._generation and not slots.locked():
                    self._held = (loop, raw)
                else:
                    await greenlet_spawn(raw.close)

    async def close(self) -> None:
        """Return the held connection; connections in use are closed when their operation ends."""
        self._generation += 1
        held, self._held = self._held, None
        if held is not None:
            await greenlet_spawn(held[1].close)

    def detach(self) -> None:
        """Hand the held connection to the driver's own cleanup (a store never closed)."""
        held, self._held = self._held, None
        if held is not None:
            held[1].detach()


async def rerun_aborted(attempt: Callable[[], Awaitable[_T]]) -> _T:
    """Run a write, and again (briefly backing off) while the server aborts it
    (`TransactionAborted`), at most `ABORTED_ATTEMPTS` times in all."""
    failures = 0
    while True:
        try:
            return await attempt()
        except TransactionAborted:
            failures += 1
            if failures >= ABORTED_ATTEMPTS:
                raise
            await asyncio.sleep(random.uniform(0, 0.002 * 2**failures))
