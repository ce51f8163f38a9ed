"""The session tables (SQLAlchemy Core `Table` objects) and their creation on first use.

With the default ``table_prefix="agent_"`` (and, on PostgreSQL, an optional ``schema=``):

- ``agent_sessions`` — one row per session: ``session_id`` (primary key), ``user_id`` and
  ``expiry_at`` (indexed), ``version``, ``history_seq``, ``created_at``, ``last_accessed_at``
  and ``record`` (the codec's bytes);
- ``agent_session_history`` — one row per entry, primary key ``(session_id, seq)`` where ``seq``
  is the append order, so the key is also the per-session time index; ``search_text`` is the
  entry's searchable text, indexed for full-text search (`search`: an FTS5 table on SQLite, a
  ``tsvector`` column on PostgreSQL);
- ``agent_session_scopes`` — user and app scope values, primary key ``(kind, owner, key)``;
- ``agent_schema_version`` — the row ``("sessions", 2)`` lets a later release migrate
  (version 1 had no search: the store upgrades it on first use, `search.upgrade_from_1`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

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
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.schema import CreateSchema

from ...errors import StoreUnavailable

__all__ = ["SCHEMA_VERSION", "SchemaStep", "Tables", "create_schema"]

#: The schema version this release writes and reads.
SCHEMA_VERSION = 2
_COMPONENT = "sessions"


@dataclass(frozen=True, slots=True)
class Tables:
    """The four tables of one store (one prefix and schema)."""

    metadata: MetaData
    sessions: Table
    history: Table
    scopes: Table
    versions: Table

    @classmethod
    def define(cls, prefix: str, schema: str | None) -> Tables:
        metadata = MetaData()
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
            Column("search_text", Text, nullable=False, server_default=""),
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
        return cls(metadata, sessions, history, scopes, versions)


#: A step of schema creation or upgrade, run in the creating transaction.
SchemaStep = Callable[[AsyncConnection], Awaitable[None]]


async def create_schema(
    conn: AsyncConnection,
    tables: Tables,
    *,
    create: bool,
    on_create: SchemaStep | None = None,
    upgrades: Mapping[int, SchemaStep] | None = None,
) -> None:
    """Create the tables (if `create`) and check the schema version, in `conn`'s transaction.

    `on_create` runs after the tables are created (what `create_all` cannot make: the search
    index); `upgrades[v]` takes tables at version `v` to `v + 1` (only if `create`). Tables at a
    version with no path to `SCHEMA_VERSION` raise `StoreUnavailable`.

    Serialised between processes: by an advisory lock on PostgreSQL, by ``BEGIN IMMEDIATE`` (the
    write lock, taken first) on SQLite. The caller commits.
    """
    schema = tables.sessions.schema
    if conn.dialect.name == "postgresql":
        name = f"{schema or ''}.{tables.sessions.name.removesuffix('sessions')}".encode()
        key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
        await conn.execute(select(func.pg_advisory_xact_lock(key)))
        if schema is not None and create:
            await conn.execute(CreateSchema(schema, if_not_exists=True))
    else:
        await conn.exec_driver_sql("BEGIN IMMEDIATE")  # text: SQLAlchemy has no construct for it
    if create:
        await conn.run_sync(tables.metadata.create_all, checkfirst=True)
    versions = tables.versions
    stored = (await conn.execute(select(versions.c.version).where(versions.c.component == _COMPONENT))).first()
    steps = upgrades or {}
    if stored is None:
        if create and on_create is not None:
            await on_create(conn)
        await conn.execute(insert(versions).values(component=_COMPONENT, version=SCHEMA_VERSION))
        return
    version = stored[0]
    while create and version < SCHEMA_VERSION and version in steps:
        await steps[version](conn)
        version += 1
        await conn.execute(update(versions).where(versions.c.component == _COMPONENT).values(version=version))
    if version != SCHEMA_VERSION:
        fix = (
            "open them once with create_tables=True to upgrade them"
            if version < SCHEMA_VERSION
            else ("upgrade agent-sessions or migrate the data")
        )
        raise StoreUnavailable(
            f"the session tables are at schema version {version}, this release of agent-sessions uses "
            f"{SCHEMA_VERSION}; {fix}"
        )
