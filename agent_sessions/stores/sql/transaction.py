"""One transaction runner per driver, on the driver connection of a pooled SQLAlchemy connection.

The store's fast path (DESIGN §9), in this one place: statements compiled once by SQLAlchemy
(`statements.Statement`) run on the pooled connection's driver (`driver_connection`), and a
SQLite transaction runs all its statements in ONE call on aiosqlite's worker thread. Measured
on this machine (one get or save, c=1, `benchmarks.micro` figures in `ARCHITECTURE.md`):
SQLAlchemy's `AsyncConnection.execute` costs three or four thread hops per SQLite statement where
aiosqlite needs one, and ~70 us more per asyncpg statement — far above the 15% bar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .statements import Statement

__all__ = ["Driver", "Outcome", "PostgresDriver", "SqliteDriver", "Step"]


@dataclass(frozen=True, slots=True)
class Step:
    """One statement of a transaction, run once per row of `rows` (`many`: one `executemany`).

    A `guard` must change a row, or the whole transaction is rolled back (the runner returns
    None). `requires` (a step's index) runs this one only if that step changed a row.
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
                    await transaction.rollback()
                    return None
        except BaseException:
            await transaction.rollback()
            raise
        await transaction.commit()
        return outcome
