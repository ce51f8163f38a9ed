"""`DatabaseConversationStore`: pydantic-ai conversations in SQLite or PostgreSQL (SQLAlchemy 2 async).

Two tables beside the session tables (same schema and table prefix as the `DatabaseSessionStore`
it shares an engine with, default ``agent_``): ``<prefix>conversations`` (one row per conversation: its
record as JSON, revision, scope, last save time) and ``<prefix>conversation_entries`` (one row per
message, pointing at its parent). A history is read in one recursive query.

Every write is one transaction with a compare-and-set on the revision, so a conflicting
`write_record` raises `ConversationConflict` and writes nothing. SQLite transactions take the
write lock up front (``BEGIN IMMEDIATE``); PostgreSQL locks the rows it checks.

Entries are shared by forks, so they are grouped by *lineage* (the conversation a chain of forks
started from); a record is in the lineage of the entries it reaches (a write that hangs it from
another lineage's entry moves it there). `delete_record` removes the record at once, and the
lineage's entries when its last conversation is deleted or moved: until then, entries only a
deleted (or rewritten) conversation used are kept.

Failures: a database that cannot be reached, times out (connecting, a statement, waiting for a
pooled connection) or reports an error raises `StoreUnavailable`; a value the database refuses
raises `SerializationError`; the driver's error is chained either way.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
from collections.abc import AsyncIterator, Collection, Sequence
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ...errors import SerializationError, StoreUnavailable
from ...lifecycle import ImportedItems
from ...stores.sql.engine import DB_ERRORS, DatabaseFailure, classify, create_database_engine
from ._records import check_id, check_write, decode_entry, decode_record, encode_message, encode_record
from .conversation_transfer import decode_item, export_all_conversations, export_conversations, import_conversations
from .turn import conversation_id_for

__all__ = ["DatabaseConversationStore"]

logger = logging.getLogger(__name__)

_ID = sa.String(255)
#: Entry ids per ``IN (...)`` when looking for the ones an import already has.
_ID_CHUNK = 500
#: Conversation records read per page by a whole-store export (`export_all`).
_EXPORT_PAGE = 200
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _failed(exc: BaseException, doing: str) -> SerializationError | StoreUnavailable:
    """The typed error for a database failure (the caller chains `exc` as its cause)."""
    logger.warning("conversation store: %s failed: %s", doing, type(exc).__name__)
    # The driver's own message: SQLAlchemy's adds the statement and its parameters (messages).
    driver = exc.orig if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None else exc
    if classify(exc) is DatabaseFailure.DATA:
        return SerializationError(f"the database refused a value while {doing}: {driver}")
    return StoreUnavailable(f"conversation store unavailable while {doing}: {type(driver).__name__}: {driver}")


def _tables(metadata: sa.MetaData, prefix: str) -> tuple[sa.Table, sa.Table]:
    records = sa.Table(
        f"{prefix}conversations",
        metadata,
        sa.Column("conversation_id", _ID, primary_key=True),
        sa.Column("lineage", _ID, nullable=False, index=True),
        sa.Column("scope", sa.Text, nullable=True),
        sa.Column("revision", _ID, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("data", sa.Text, nullable=False),
        sa.Index(f"ix_{prefix}conversations_scope_updated", "scope", "updated_at"),
        sa.Index(f"ix_{prefix}conversations_updated", "updated_at"),
    )
    entries = sa.Table(
        f"{prefix}conversation_entries",
        metadata,
        sa.Column("entry_id", _ID, primary_key=True),
        sa.Column("parent_id", _ID, nullable=True),
        sa.Column("lineage", _ID, nullable=False, index=True),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    return records, entries


class DatabaseConversationStore(ConversationStore):
    """A pydantic-ai `ConversationStore` on the SQL database of a `DatabaseSessionStore`.

    `source` is a `DatabaseSessionStore` (its engine is shared), an `AsyncEngine`, or a URL
    (``sqlite+aiosqlite:///app.db``, ``postgresql+asyncpg://...``; the store then owns the engine
    and `close()` disposes of it). Tables are created on first use.

    An engine made from a URL is `create_database_engine`'s, so every wait is bounded:
    `connect_timeout` (PostgreSQL connect), `command_timeout` (one PostgreSQL statement),
    `pool_timeout` (waiting for a pooled connection), `busy_timeout` (SQLite waiting for the
    write lock). With an engine or a session store, its own settings apply (passing these
    options then is a `ValueError`).
    """

    def __init__(
        self,
        source: Any,
        *,
        table_prefix: str | None = None,
        schema: str | None = None,
        create_tables: bool = True,
        connect_timeout: float | None = None,
        command_timeout: float | None = None,
        pool_timeout: float | None = None,
        busy_timeout: float | None = None,
    ) -> None:
        if table_prefix is not None and not _IDENT.fullmatch(table_prefix + "x"):
            raise ValueError("table_prefix must be letters, digits and underscores, starting with a letter or _")
        if schema is not None and not _IDENT.fullmatch(schema):
            raise ValueError("schema must be letters, digits and underscores, starting with a letter or _")
        timeouts: dict[str, Any] = {
            name: value
            for name, value in (
                ("connect_timeout", connect_timeout),
                ("command_timeout", command_timeout),
                ("pool_timeout", pool_timeout),
                ("busy_timeout", busy_timeout),
            )
            if value is not None
        }
        self._owns_engine = isinstance(source, str | URL)
        if timeouts and not self._owns_engine:
            raise ValueError(
                f"{', '.join(timeouts)}: only for an engine this store creates from a URL; "
                "set them on your engine (see create_database_engine)"
            )
        shared_prefix: str | None = None
        shared_schema: str | None = None
        if isinstance(source, str | URL):
            # pool_pre_ping: a conversation store is used a few times per agent run, so a
            # connection the server dropped meanwhile is replaced before the statement fails.
            # hide_parameters: errors (and logs of them) never show the messages being written.
            self.engine: AsyncEngine = create_database_engine(
                source, pool_pre_ping=True, hide_parameters=True, **timeouts
            )
        elif isinstance(source, AsyncEngine):
            self.engine = source
        elif isinstance(getattr(source, "engine", None), AsyncEngine):
            # A DatabaseSessionStore: same engine, and by default the same schema and table prefix.
            self.engine = source.engine
            shared_prefix = getattr(source, "table_prefix", None)
            shared_schema = getattr(source, "schema", None)
        else:
            raise TypeError("source must be a DatabaseSessionStore, an AsyncEngine or a database URL")
        prefix = table_prefix if table_prefix is not None else shared_prefix or "agent_"
        self.schema = schema if schema is not None else shared_schema
        self.table_prefix = prefix
        self._metadata = sa.MetaData(schema=self.schema)
        self.records, self.entries = _tables(self._metadata, prefix)
        self._create_tables = create_tables
        self._ready = False
        self._ready_lock = asyncio.Lock()
        self._sqlite = self.engine.dialect.name == "sqlite"

    async def close(self) -> None:
        """Dispose of the engine if this store created it (a shared engine is left open)."""
        if self._owns_engine:
            await self.engine.dispose()

    async def __aenter__(self) -> DatabaseConversationStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ plumbing
    async def _ensure_tables(self) -> None:
        if self._ready or not self._create_tables:
            return
        async with self._ready_lock:
            if self._ready:
                return
            try:
                async with self.engine.connect() as conn:
                    if self._sqlite:
                        # Another process creating the tables at the same time waits for this one.
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                    else:
                        name = f"{self.schema or ''}.{self.table_prefix}conversations".encode()
                        key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
                        await conn.execute(sa.select(sa.func.pg_advisory_xact_lock(key)))
                        if self.schema is not None:
                            quoted = self.engine.dialect.identifier_preparer.quote(self.schema)
                            await conn.exec_driver_sql(f"CREATE SCHEMA IF NOT EXISTS {quoted}")
                    await conn.run_sync(self._metadata.create_all, checkfirst=True)
                    await conn.commit()
            except DB_ERRORS as exc:
                raise _failed(exc, "creating the conversation tables") from exc
            self._ready = True

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[AsyncConnection]:
        await self._ensure_tables()
        try:
            async with self.engine.connect() as conn:
                yield conn
        except DB_ERRORS as exc:
            raise _failed(exc, "reading") from exc

    @asynccontextmanager
    async def _writing(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction: committed when the block ends, rolled back if it raises."""
        await self._ensure_tables()
        try:
            async with self.engine.connect() as conn:
                if self._sqlite:
                    # Take the write lock now: a read that later upgrades can fail on a busy database.
                    raw = await conn.get_raw_connection()
                    if not getattr(raw.driver_connection, "in_transaction", False):
                        await conn.exec_driver_sql("BEGIN IMMEDIATE")
                yield conn
                await conn.commit()
        except DB_ERRORS as exc:
            raise _failed(exc, "writing") from exc

    # ------------------------------------------------------------------ primitives
    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        check_id(conversation_id, "conversation id")
        async with self._reading() as conn:
            data = (
                await conn.execute(
                    sa.select(self.records.c.data).where(self.records.c.conversation_id == conversation_id)
                )
            ).scalar_one_or_none()
        return None if data is None else decode_record(data)

    async def read_records(self, *, scope: str | None = None, limit: int | None = None) -> Sequence[ConversationRecord]:
        query = sa.select(self.records.c.data).order_by(self.records.c.updated_at.desc())
        if scope is not None:
            query = query.where(self.records.c.scope == scope)
        if limit is not None:
            query = query.limit(limit)
        async with self._reading() as conn:
            rows = (await conn.execute(query)).scalars().all()
        return [decode_record(data) for data in rows]

    async def write_record(
        self,
        record: ConversationRecord,
        *,
        new_entries: Sequence[ConversationEntry] = (),
        expected_revision: str | None,
    ) -> None:
        check_write(record, new_entries, expected_revision)
        cid = record.conversation_id
        new_ids = {entry.id for entry in new_entries}
        # The stored entry the record's history hangs from: its head, or the parent of the first new entry.
        anchor = record.head_id if record.head_id not in new_ids else new_entries[0].parent_id
        r, e = self.records.c, self.entries.c
        values = {
            "scope": record.scope,
            "revision": record.revision,
            "updated_at": record.updated_at.timestamp(),
            "data": encode_record(record),
        }
        async with self._writing() as conn:
            anchor_lineage: str | None = None
            if anchor is not None:
                # FOR SHARE: a concurrent delete of the lineage waits for this transaction (PostgreSQL).
                anchor_lineage = (
                    await conn.execute(sa.select(e.lineage).where(e.entry_id == anchor).with_for_update(read=True))
                ).scalar_one_or_none()
                if anchor_lineage is None:
                    raise ConversationConflict(cid)
            if expected_revision is None:
                lineage = anchor_lineage or cid
                try:
                    await conn.execute(self.records.insert().values(conversation_id=cid, lineage=lineage, **values))
                except sa_exc.IntegrityError as exc:
                    # The id exists: nothing of this transaction is committed.
                    raise ConversationConflict(cid) from exc
            else:
                stored_lineage = (
                    await conn.execute(
                        sa.select(r.lineage)
                        .where(r.conversation_id == cid, r.revision == expected_revision)
                        .with_for_update()
                    )
                ).scalar_one_or_none()
                if stored_lineage is None:
                    raise ConversationConflict(cid)
                # The record joins the lineage of the entry it hangs from (the same one, for a
                # turn; another for an import replacing it with a fork's history).
                lineage = anchor_lineage or str(stored_lineage)
                await conn.execute(
                    self.records.update().where(r.conversation_id == cid).values(lineage=lineage, **values)
                )
                if lineage != stored_lineage:
                    await self._drop_if_unused(conn, str(stored_lineage))
            if new_entries:
                try:
                    await conn.execute(
                        self.entries.insert(),
                        [
                            {
                                "entry_id": entry.id,
                                "parent_id": entry.parent_id,
                                "lineage": lineage,
                                "kind": entry.kind,
                                "message": encode_message(entry),
                            }
                            for entry in new_entries
                        ],
                    )
                except sa_exc.IntegrityError as exc:
                    # Entries with these ids exist already (written by someone else): nothing of
                    # this transaction is committed.
                    raise ConversationConflict(cid) from exc

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        check_id(conversation_id, "conversation id")
        check_id(expected_revision, "expected revision")
        r = self.records.c
        async with self._writing() as conn:
            lineage = (
                await conn.execute(
                    sa.select(r.lineage)
                    .where(r.conversation_id == conversation_id, r.revision == expected_revision)
                    .with_for_update()
                )
            ).scalar_one_or_none()
            if lineage is None:
                raise ConversationConflict(conversation_id)
            await conn.execute(self.records.delete().where(r.conversation_id == conversation_id))
            await self._drop_if_unused(conn, str(lineage))

    async def _drop_if_unused(self, conn: AsyncConnection, lineage: str) -> None:
        """Within a write: delete the lineage's entries if no conversation of it is left."""
        r, e = self.records.c, self.entries.c
        # Lock the lineage's entries, waiting out any fork still attaching to them, then look again.
        await conn.execute(sa.select(e.entry_id).where(e.lineage == lineage).with_for_update())
        remaining = (
            await conn.execute(sa.select(r.conversation_id).where(r.lineage == lineage).limit(1))
        ).scalar_one_or_none()
        if remaining is None:
            await conn.execute(self.entries.delete().where(e.lineage == lineage))

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        check_id(entry_id, "entry id")
        e = self.entries.c
        async with self._reading() as conn:
            row = (await conn.execute(sa.select(e.parent_id, e.message).where(e.entry_id == entry_id))).one_or_none()
        if row is None:
            raise KeyError(entry_id)
        return decode_entry(entry_id, row.parent_id, row.message)

    async def read_history(self, head_id: str | None, *, limit: int | None = None) -> list[ConversationEntry]:
        """The chain up to `head_id` in one recursive query; `KeyError` if an entry is missing."""
        if head_id is not None:
            check_id(head_id, "head id")
        if head_id is None or limit == 0:
            return []
        e = self.entries.c
        chain = (
            sa.select(e.entry_id, e.parent_id, e.message, sa.literal(1).label("depth"))
            .where(e.entry_id == head_id)
            .cte("chain", recursive=True)
        )
        step = sa.select(e.entry_id, e.parent_id, e.message, (chain.c.depth + 1).label("depth")).join(
            chain, e.entry_id == chain.c.parent_id
        )
        if limit is not None:
            step = step.where(chain.c.depth < limit)
        chain = chain.union_all(step)
        async with self._reading() as conn:
            rows = (await conn.execute(sa.select(chain).order_by(chain.c.depth.desc()))).all()
        if not rows:
            raise KeyError(head_id)
        oldest = rows[0]
        if oldest.parent_id is not None and (limit is None or len(rows) < limit):
            raise KeyError(oldest.parent_id)
        return [decode_entry(row.entry_id, row.parent_id, row.message) for row in rows]

    # ------------------------------------------------------------------ erasure
    async def erase_sessions(self, user_id: str, session_ids: Sequence[str]) -> int:
        """Delete the conversations of a user being erased (`SessionDataHolder`, register with
        `SessionManager.register_data_holder`): those scoped to `user_id` (as `run_turn` saves
        them) and those of `session_ids` (`conversation_id_for`), with the entries of every
        lineage left without a conversation. One transaction; returns how many were deleted."""
        ids = [conversation_id_for(sid) for sid in session_ids]
        r, e = self.records.c, self.entries.c
        mine = sa.or_(r.scope == user_id, r.conversation_id.in_(ids)) if ids else r.scope == user_id
        async with self._writing() as conn:
            rows = (await conn.execute(sa.select(r.conversation_id, r.lineage).where(mine).with_for_update())).all()
            if not rows:
                return 0
            await conn.execute(self.records.delete().where(r.conversation_id.in_([row[0] for row in rows])))
            lineages = sorted({str(row[1]) for row in rows})
            # As in `delete_record`: lock the lineages' entries, then drop those no conversation uses.
            await conn.execute(sa.select(e.entry_id).where(e.lineage.in_(lineages)).with_for_update())
            used = set((await conn.execute(sa.select(r.lineage).where(r.lineage.in_(lineages)))).scalars())
            unused = [lineage for lineage in lineages if lineage not in used]
            if unused:
                await conn.execute(self.entries.delete().where(e.lineage.in_(unused)))
        return len(rows)

    # ------------------------------------------------------------------ export / import
    async def export_sessions(self, user_id: str, session_ids: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
        """The conversations `erase_sessions` would delete, one JSON-safe item each, with every
        entry they reach (`ExportableDataHolder`; the format is `conversation_transfer`'s)."""
        async for item in export_conversations(self, user_id, session_ids):
            yield item

    async def export_all(self) -> AsyncIterator[dict[str, Any]]:
        """Every conversation, one item each (`FullyExportableDataHolder`), read in pages of
        `_EXPORT_PAGE` records in conversation id order (keyset: a conversation kept throughout
        is exported exactly once)."""
        async for item in export_all_conversations(self, self._record_pages()):
            yield item

    async def _record_pages(self) -> AsyncIterator[list[ConversationRecord]]:
        r = self.records.c
        after: str | None = None
        while True:
            query = sa.select(r.conversation_id, r.data).order_by(r.conversation_id).limit(_EXPORT_PAGE)
            if after is not None:
                query = query.where(r.conversation_id > after)
            async with self._reading() as conn:
                rows = (await conn.execute(query)).all()
            if not rows:
                return
            after = rows[-1][0]
            yield [decode_record(data) for _, data in rows]
            if len(rows) < _EXPORT_PAGE:
                return

    async def import_items(
        self, items: Sequence[dict[str, Any]], on_conflict: str, *, dry_run: bool = False
    ) -> ImportedItems:
        """Write back items of `export_sessions` (`ExportableDataHolder`): each conversation one
        transaction, under the import's `on_conflict` (see `conversation_transfer`). The tables
        are created as on first use, except by a dry run (which writes nothing)."""
        if dry_run and not self._ready and not await self._has_tables():
            for item in items:
                decode_item(item)  # checked all the same; against no tables, every one is new
            return ImportedItems(imported=len(items))
        return await import_conversations(self, self._known_entries, items, on_conflict, dry_run=dry_run)

    async def _has_tables(self) -> bool:
        table = self.records
        try:
            async with self.engine.connect() as conn:
                found: bool = await conn.run_sync(
                    lambda sync: sa.inspect(sync).has_table(table.name, schema=self.schema)
                )
        except DB_ERRORS as exc:
            raise _failed(exc, "looking for the conversation tables") from exc
        return found

    async def _known_entries(self, entry_ids: Collection[str]) -> dict[str, ConversationEntry]:
        ids = list(entry_ids)
        if not ids:
            return {}
        e = self.entries.c
        found: dict[str, ConversationEntry] = {}
        async with self._reading() as conn:
            for start in range(0, len(ids), _ID_CHUNK):
                chunk = ids[start : start + _ID_CHUNK]
                query = sa.select(e.entry_id, e.parent_id, e.message).where(e.entry_id.in_(chunk))
                for row in await conn.execute(query):
                    found[row.entry_id] = decode_entry(row.entry_id, row.parent_id, row.message)
        return found
