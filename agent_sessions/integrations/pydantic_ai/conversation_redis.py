"""`RedisConversationStore`: pydantic-ai conversations in Redis, beside the sessions.

Every key shares one hash tag (``<prefix>{conv}:...``), so the Lua scripts that make each write
atomic also run on Redis Cluster (all conversations then live in one slot). Keys:

- ``rec:<conversation id>`` — a hash: the record as JSON, its revision, lineage and scope index;
- ``ent:<entry id>`` — a hash: parent id, message JSON, lineage;
- ``idx`` and ``scope:<sha256 of scope>`` — sorted sets of conversation ids by last save time;
- ``lin:<lineage>`` / ``linrec:<lineage>`` — the entries and the conversations of a lineage.

A write checks the revision, the entry its history hangs from and that none of its new entries
exists yet, then stores entries and record, all in one script: a conflicting `write_record`
raises `ConversationConflict` and writes nothing. A history is walked server-side in one round
trip. Entries are shared by forks and grouped by lineage (the conversation a chain of forks
started from; a record is in the lineage of the entries it reaches, and a write hanging it from
another lineage's entry moves it there):
`delete_record` deletes the record at once, and the lineage's entries when its last
conversation is deleted or moved.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Collection, Sequence
from typing import Any, Final

from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)

from ...errors import StoreUnavailable
from ...lifecycle import ImportedItems
from ._records import check_id, check_write, decode_entry, decode_record, encode_message, encode_record
from .conversation_transfer import export_all_conversations, export_conversations, import_conversations
from .turn import conversation_id_for

try:
    from redis import exceptions as redis_exceptions
    from redis.asyncio import Redis
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("RedisConversationStore needs redis: pip install agent-sessions[redis]") from exc

__all__ = ["RedisConversationStore"]

#: Conversation ids asked of ``ZSCAN`` per page by a whole-store export (`export_all`).
_EXPORT_PAGE: Final = 200

# Drop a stored conversation (its record, index entries and, once no record of its lineage is
# left, the lineage's entries): the one body of _DELETE, _ERASE and a _WRITE moving a record.
_DROP: Final = """
local function drop_if_unused(base, lineage)
  if redis.call('SCARD', base .. 'linrec:' .. lineage) == 0 then
    for _, id in ipairs(redis.call('SMEMBERS', base .. 'lin:' .. lineage)) do
      redis.call('DEL', base .. 'ent:' .. id)
    end
    redis.call('DEL', base .. 'lin:' .. lineage)
  end
end

local function drop(base, rec, cid, index, lineage)
  local scope_key = redis.call('HGET', rec, 'sk')
  redis.call('DEL', rec)
  redis.call('ZREM', index, cid)
  if scope_key and scope_key ~= '' then redis.call('ZREM', scope_key, cid) end
  redis.call('SREM', base .. 'linrec:' .. lineage, cid)
  drop_if_unused(base, lineage)
end
"""

# KEYS: record, index, scope index ("" key name not allowed: the scope index is passed in ARGV).
# ARGV: base, conversation id, expected revision or "", record JSON, revision, score,
#       scope index key or "", anchor entry id or "", entry count, then (id, parent or "", message)*.
# Returns 0 (nothing written) if the revision or the anchor does not match, or if one of the new
# entries exists already (written meanwhile by another writer, as SQL's unique key refuses it).
# The record joins the anchor's lineage; a lineage left without a record loses its entries.
_WRITE: Final = (
    _DROP
    + """
local rec = KEYS[1]
local base = ARGV[1]
local cid = ARGV[2]
local cur = redis.call('HGET', rec, 'r')
if ARGV[3] == '' then
  if cur then return 0 end
elseif cur ~= ARGV[3] then
  return 0
end
local stored = false
if cur then stored = redis.call('HGET', rec, 'l') end
local lineage = stored
if ARGV[8] ~= '' then
  local anchor_lineage = redis.call('HGET', base .. 'ent:' .. ARGV[8], 'l')
  if not anchor_lineage then return 0 end
  lineage = anchor_lineage
end
if not lineage then lineage = cid end
local n = tonumber(ARGV[9])
local i = 10
for _ = 1, n do
  if redis.call('EXISTS', base .. 'ent:' .. ARGV[i]) == 1 then return 0 end
  i = i + 3
end
if stored and stored ~= lineage then
  redis.call('SREM', base .. 'linrec:' .. stored, cid)
  drop_if_unused(base, stored)
end
i = 10
for _ = 1, n do
  redis.call('HSET', base .. 'ent:' .. ARGV[i], 'p', ARGV[i + 1], 'm', ARGV[i + 2], 'l', lineage)
  redis.call('SADD', base .. 'lin:' .. lineage, ARGV[i])
  i = i + 3
end
local old_scope = redis.call('HGET', rec, 'sk')
if old_scope and old_scope ~= '' and old_scope ~= ARGV[7] then redis.call('ZREM', old_scope, cid) end
redis.call('HSET', rec, 'd', ARGV[4], 'r', ARGV[5], 'l', lineage, 'sk', ARGV[7])
redis.call('SADD', base .. 'linrec:' .. lineage, cid)
redis.call('ZADD', KEYS[2], ARGV[6], cid)
if ARGV[7] ~= '' then redis.call('ZADD', ARGV[7], ARGV[6], cid) end
return 1
"""
)

# KEYS: record, index. ARGV: base, conversation id, expected revision.
_DELETE: Final = (
    _DROP
    + """
local cur = redis.call('HGET', KEYS[1], 'r')
if (not cur) or cur ~= ARGV[3] then return 0 end
drop(ARGV[1], KEYS[1], ARGV[2], KEYS[2], redis.call('HGET', KEYS[1], 'l'))
return 1
"""
)

# Erasure: the conversations of a user's scope index and those named in ARGV, as _DELETE does
# without the revision check. KEYS: index, scope index. ARGV: base, then conversation ids.
# Returns how many were deleted.
_ERASE: Final = (
    _DROP
    + """
local base = ARGV[1]
local ids = redis.call('ZRANGE', KEYS[2], 0, -1)
for i = 2, #ARGV do table.insert(ids, ARGV[i]) end
local deleted = 0
for _, cid in ipairs(ids) do
  local rec = base .. 'rec:' .. cid
  local lineage = redis.call('HGET', rec, 'l')
  if lineage then
    drop(base, rec, cid, KEYS[1], lineage)
    deleted = deleted + 1
  end
end
redis.call('DEL', KEYS[2])
return deleted
"""
)

# KEYS: the head entry (for routing). ARGV: base, head id, limit (-1: none).
# Returns {1, id, parent, message, ...} newest first, or {0, missing id}.
_HISTORY: Final = """
local base = ARGV[1]
local id = ARGV[2]
local limit = tonumber(ARGV[3])
local out = {1}
local count = 0
while id ~= '' and (limit < 0 or count < limit) do
  local v = redis.call('HMGET', base .. 'ent:' .. id, 'p', 'm')
  if not v[2] then return {0, id} end
  table.insert(out, id)
  table.insert(out, v[1])
  table.insert(out, v[2])
  count = count + 1
  id = v[1]
end
return out
"""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class RedisConversationStore(ConversationStore):
    """A pydantic-ai `ConversationStore` in the Redis of a `RedisSessionStore`.

    `source` is a `RedisSessionStore` (its client and key prefix are shared), a
    `redis.asyncio` client (``Redis`` or ``RedisCluster``), or a ``redis://`` URL (the store then
    owns the client and `close()` closes it). `prefix` defaults to the session store's prefix, or
    ``agent_sessions:``.
    """

    def __init__(self, source: Any, *, prefix: str | None = None) -> None:
        self._owns_client = isinstance(source, str)
        # A RedisSessionStore's client has no socket timeout (the store bounds each operation
        # itself), so operations on the shared client get the store's deadline here.
        self._timeout: float | None = getattr(source, "socket_timeout", None) if hasattr(source, "client") else None
        if isinstance(source, str):
            self.client: Any = Redis.from_url(source, socket_timeout=10, socket_connect_timeout=5)
            default_prefix = "agent_sessions:"
        elif hasattr(source, "client") and hasattr(source, "prefix"):
            self.client = source.client
            default_prefix = str(source.prefix)
        elif hasattr(source, "evalsha"):
            self.client = source
            default_prefix = "agent_sessions:"
        else:
            raise TypeError("source must be a RedisSessionStore, a redis.asyncio client or a redis:// URL")
        self.prefix = default_prefix if prefix is None else prefix
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError("the key prefix must not contain '{' or '}' (the store adds its own hash tag)")
        self._base = f"{self.prefix}{{conv}}:"
        self._write_script = self.client.register_script(_WRITE)
        self._delete_script = self.client.register_script(_DELETE)
        self._history_script = self.client.register_script(_HISTORY)
        self._erase_script = self.client.register_script(_ERASE)

    async def close(self) -> None:
        """Close the client if this store created it (a shared client is left open)."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> RedisConversationStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ keys
    def _record_key(self, conversation_id: str) -> str:
        return f"{self._base}rec:{conversation_id}"

    def _index_key(self) -> str:
        return f"{self._base}idx"

    def _scope_key(self, scope: str | None) -> str:
        if scope is None:
            return ""
        return f"{self._base}scope:{hashlib.sha256(scope.encode()).hexdigest()[:32]}"

    async def _run(self, awaitable: Any) -> Any:
        try:
            async with asyncio.timeout(self._timeout):
                return await awaitable
        except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"conversation store unavailable: {exc}") from exc

    # ------------------------------------------------------------------ primitives
    async def read_record(self, conversation_id: str) -> ConversationRecord | None:
        check_id(conversation_id, "conversation id")
        data = await self._run(self.client.hget(self._record_key(conversation_id), "d"))
        return None if data is None else decode_record(data)

    async def read_records(self, *, scope: str | None = None, limit: int | None = None) -> Sequence[ConversationRecord]:
        if limit == 0:
            return []
        index = self._index_key() if scope is None else self._scope_key(scope)
        ids = await self._run(self.client.zrevrange(index, 0, -1 if limit is None else limit - 1))
        if not ids:
            return []
        pipe = self.client.pipeline(transaction=False)
        for cid in ids:
            pipe.hget(self._record_key(_text(cid)), "d")
        found = await self._run(pipe.execute())
        records = [decode_record(data) for data in found if data is not None]
        # A scope index is keyed by a hash of the scope: check the scope itself too.
        return [r for r in records if scope is None or r.scope == scope]

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
        anchor = record.head_id if record.head_id not in new_ids else new_entries[0].parent_id
        args: list[Any] = [
            self._base,
            cid,
            expected_revision or "",
            encode_record(record),
            record.revision,
            record.updated_at.timestamp(),
            self._scope_key(record.scope),
            anchor or "",
            len(new_entries),
        ]
        for entry in new_entries:
            args.extend((entry.id, entry.parent_id or "", encode_message(entry)))
        written = await self._run(self._write_script(keys=[self._record_key(cid), self._index_key()], args=args))
        if not written:
            raise ConversationConflict(cid)

    async def delete_record(self, conversation_id: str, *, expected_revision: str) -> None:
        check_id(conversation_id, "conversation id")
        check_id(expected_revision, "expected revision")
        deleted = await self._run(
            self._delete_script(
                keys=[self._record_key(conversation_id), self._index_key()],
                args=[self._base, conversation_id, expected_revision],
            )
        )
        if not deleted:
            raise ConversationConflict(conversation_id)

    async def read_entry(self, entry_id: str) -> ConversationEntry:
        check_id(entry_id, "entry id")
        parent, message = await self._run(self.client.hmget(f"{self._base}ent:{entry_id}", ["p", "m"]))
        if message is None:
            raise KeyError(entry_id)
        return decode_entry(entry_id, _text(parent) or None, message)

    async def read_history(self, head_id: str | None, *, limit: int | None = None) -> list[ConversationEntry]:
        """The chain up to `head_id`, walked server-side in one call; `KeyError` if an entry is missing."""
        if head_id is not None:
            check_id(head_id, "head id")
        if head_id is None or limit == 0:
            return []
        # The head's key routes the call to the conversations' slot on a cluster.
        out = await self._run(
            self._history_script(
                keys=[f"{self._base}ent:{head_id}"], args=[self._base, head_id, -1 if limit is None else limit]
            )
        )
        if int(out[0]) == 0:
            raise KeyError(_text(out[1]))
        rows = out[1:]
        entries = [
            decode_entry(_text(rows[i]), _text(rows[i + 1]) or None, rows[i + 2]) for i in range(0, len(rows), 3)
        ]
        entries.reverse()
        return entries

    # ------------------------------------------------------------------ erasure
    async def erase_sessions(self, user_id: str, session_ids: Sequence[str]) -> int:
        """Delete the conversations of a user being erased (`SessionDataHolder`, register with
        `SessionManager.register_data_holder`): those scoped to `user_id` (as `run_turn` saves
        them) and those of `session_ids` (`conversation_id_for`), with the entries of every
        lineage left without a conversation. One atomic script; returns how many were deleted."""
        args = [self._base, *(conversation_id_for(sid) for sid in session_ids)]
        keys = [self._index_key(), self._scope_key(user_id)]
        return int(await self._run(self._erase_script(keys=keys, args=args)))

    # ------------------------------------------------------------------ export / import
    async def export_sessions(self, user_id: str, session_ids: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
        """The conversations `erase_sessions` would delete, one JSON-safe item each, with every
        entry they reach (`ExportableDataHolder`; the format is `conversation_transfer`'s)."""
        async for item in export_conversations(self, user_id, session_ids):
            yield item

    async def export_all(self) -> AsyncIterator[dict[str, Any]]:
        """Every conversation, one item each (`FullyExportableDataHolder`), read in pages of
        the conversation index (``ZSCAN``: a conversation kept throughout is exported exactly
        once). The ids already exported are remembered, as ``ZSCAN`` may return one twice: the
        one part of an export that grows with the store, about 100 bytes a conversation."""
        async for item in export_all_conversations(self, self._record_pages()):
            yield item

    async def _record_pages(self) -> AsyncIterator[list[ConversationRecord]]:
        seen: set[str] = set()
        cursor = 0
        while True:
            cursor, members = await self._run(self.client.zscan(self._index_key(), cursor, count=_EXPORT_PAGE))
            ids = [cid for cid in dict.fromkeys(_text(member) for member, _ in members) if cid not in seen]
            seen.update(ids)
            if ids:
                pipe = self.client.pipeline(transaction=False)
                for cid in ids:
                    pipe.hget(self._record_key(cid), "d")
                found = await self._run(pipe.execute())
                yield [decode_record(data) for data in found if data is not None]  # None: deleted meanwhile
            if cursor == 0:
                return

    async def import_items(
        self, items: Sequence[dict[str, Any]], on_conflict: str, *, dry_run: bool = False
    ) -> ImportedItems:
        """Write back items of `export_sessions` (`ExportableDataHolder`): each conversation one
        atomic script, under the import's `on_conflict` (see `conversation_transfer`)."""
        return await import_conversations(self, self._known_entries, items, on_conflict, dry_run=dry_run)

    async def _known_entries(self, entry_ids: Collection[str]) -> dict[str, ConversationEntry]:
        ids = list(entry_ids)
        if not ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        for entry_id in ids:
            pipe.hmget(f"{self._base}ent:{entry_id}", ["p", "m"])
        found = await self._run(pipe.execute())
        return {
            entry_id: decode_entry(entry_id, _text(parent) or None, message)
            for entry_id, (parent, message) in zip(ids, found, strict=True)
            if message is not None
        }
