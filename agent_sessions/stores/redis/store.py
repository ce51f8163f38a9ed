"""`RedisSessionStore`: sessions on Redis or Redis Cluster through `redis.asyncio`.

Keys are named by `KeyLayout` (``keys.py``); the work is done by the Lua scripts of
``scripts/``, registered once with `register_script` (``scripts.py``) and called through the
client, so every connection comes from redis-py's pool and goes back to it. A record is one
string: a header line (version, history seq, last access, expiry, write token, user hash), the
user id, the encoded record; the scripts check version and expiry (against the store clock,
passed in) without decoding the record. A write's random token, kept in the header, makes a
save re-sent after a lost reply read as applied (`Result.ALREADY_APPLIED`), not as a conflict.

Round trips on one node: a get is one ``load.lua`` (record, history window, app scope and the
user scope, whose key the script builds from the user hash in the header); a save, a touch and
a delete are one script each, the user index, the expiry shard and scope changes included.

On a Cluster a script may only touch keys it declares, all in one slot, so a session's script
touches only the session's keys. A get pipelines ``load.lua`` with the app scope and, when the
store knows the owner (a bounded map, verified on every read), the user scope: one round trip;
for a session this store has not seen, the user scope key is learnt from the record, so that
get costs two. A save (a moving touch, a delete) is the script, then one pipelined call for
the index and scope keys of other slots (``indexes.py``); a failure of that call says the
record was saved.

Records of the previous release (``R1`` header, no user hash: `record.LEGACY_HEADER`) are read
and updated as before; Lua cannot compute their user hash, so a get of one with a user reads
its user scope in a second round trip, and a script needing the hash answers `Result.LEGACY`
and is sent again with it (``runner.py``). Its next save or touch rewrites it as R2.

Cleanup walks the 16 expiry shards in batches (``reap.lua`` deletes what expired under the
store clock; index entries of sessions Redis expired are pruned, live ones re-scored). No
``KEYS``: listing uses ``SCAN`` with a pattern from the prefix only. Driver errors become
`StoreUnavailable` (cause chained); every operation is bounded by `socket_timeout` as a whole
(``runner.py``). ``client.py`` builds the client from a URL.
"""

from __future__ import annotations

import heapq
import logging
import secrets
from bisect import bisect_right
from collections.abc import AsyncIterator
from typing import Any, Final

from ...errors import SearchUnavailable, SerializationError, SessionNotFound, StoreUnavailable
from ...ids import id_hash, is_valid_session_id
from ..base import SearchQuery, SearchRow, SessionStore
from ..primitives import ErasureReport, ScopeChange, SessionWrite, StoredSession, raise_conflict
from .client import endpoint, store_client
from .indexes import IndexCommands, scope_args
from .keys import KeyLayout
from .record import (
    NO_OWNER,
    OWNER_FIELD,
    hash_from_reply,
    index_score,
    is_legacy,
    pack_record,
    pack_row,
    scope_from_reply,
    split_rows,
    ttl_ms,
    unpack_record,
    user_hash_from_reply,
    window_rows,
)
from .runner import Command, Runner
from .scripts import Result, Scripts

try:
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "RedisSessionStore needs the 'redis' package (redis-py >= 5): pip install agent-sessions[redis]"
    ) from exc

__all__ = ["DEFAULT_PREFIX", "RedisSessionStore"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "agent_sessions:"
_CORRUPT_HEADER: Final = "a stored Redis session record has an unreadable header; delete it"
#: Sessions per ``erase.lua`` call (one node: each call is atomic and blocks the server meanwhile).
_ERASE_BATCH: Final = 500


class RedisSessionStore(SessionStore):
    """Sessions on Redis (one node or a Redis Cluster): one round trip per get and per save.

    `url_or_client` is a ``redis://`` / ``rediss://`` URL, a ``redis+cluster://`` /
    ``rediss+cluster://`` URL (any node of the cluster), or a `redis.asyncio.Redis` /
    `redis.asyncio.cluster.RedisCluster` created with ``decode_responses=False``. A client
    passed in stays the caller's: `close` does not close it.

    `socket_timeout` bounds every operation (seconds, retries included), whatever the client.
    `socket_connect_timeout` and `retries` configure clients built from a URL, as do
    `client_options` (passed on to ``from_url``).

    Every key starts with `prefix` (`keys` is its `KeyLayout`); use one prefix per application
    sharing a Redis. `owner_cache_size` bounds how many sessions' owners the store remembers
    on a cluster, where a known owner lets a get read the user scope in the same round trip.
    Other keyword options are those of `SessionStore`. Needs Redis 6.2 or later.
    """

    indexes_history_text = False  # no full-text engine: `search` raises `SearchUnavailable`

    def __init__(
        self,
        url_or_client: str | Redis | RedisCluster,
        *,
        prefix: str = DEFAULT_PREFIX,
        socket_timeout: float = 2.0,
        socket_connect_timeout: float = 1.0,
        retries: int = 2,
        client_options: dict[str, Any] | None = None,
        owner_cache_size: int = 10_000,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.keys = KeyLayout(prefix)
        if socket_timeout <= 0 or socket_connect_timeout <= 0 or retries < 0:
            raise ValueError("socket timeouts must be > 0 and retries >= 0")
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self._owns_client = isinstance(url_or_client, str)
        self.client = store_client(url_or_client, socket_connect_timeout, retries, client_options or {})
        self._cluster = isinstance(self.client, RedisCluster)
        self._closed = False
        self._owners: dict[str, str | None] = {}  # Cluster only: session id -> user id
        self._owner_cache_size = max(0, owner_cache_size)
        self.scripts = Scripts(self.client)
        self._runner = Runner(self.client, self.scripts, self.keys, lambda: self.socket_timeout)
        self._indexes = IndexCommands(self.keys, self.scripts, self._runner, cluster=self._cluster)

    async def ping(self) -> None:
        """Send ``PING``; `StoreUnavailable` names the server's (or the cluster's startup nodes')
        host and port, never the password."""
        try:
            await self._runner.call(self.client.execute_command("PING"), "answer PING")
        except StoreUnavailable as exc:
            where = endpoint(self.client)  # host and port or socket path, never the password
            raise StoreUnavailable(f"cannot reach the Redis session store at {where}: {exc}") from exc

    # ------------------------------------------------------------------------- owners
    def _remember(self, sid: str, user_id: str | None) -> None:
        owners = self._owners
        if not self._cluster or self._owner_cache_size == 0:
            return
        if sid not in owners and len(owners) >= self._owner_cache_size:
            del owners[next(iter(owners))]
        owners[sid] = user_id

    # ------------------------------------------------------------------------- reads
    async def _fetch(
        self, sids: list[str], now: float, *, scopes: bool, window: int | None = None
    ) -> list[StoredSession | None]:
        """Load sessions (None for absent or expired) with `window` history rows (None: the
        store's `history_window`): one round trip (see the module docstring)."""
        window = self.history_window if window is None else min(window, self.history_window)
        if self._cluster:
            calls = [Scripts.command(self.scripts.load, self.keys.session(sid), [window]) for sid in sids]
            hinted = sorted({u for sid in sids if (u := self._owners.get(sid)) is not None}) if scopes else []
            if scopes:
                calls += [("HGETALL", self.keys.app_scope), *(("HGETALL", self.keys.user_scope(u)) for u in hinted)]
            replies = await self._runner.pipeline(calls, "load sessions")
            triples = [item for reply in replies[: len(sids)] for item in reply]
            app_reply = replies[len(sids)] if scopes else []
            user_scopes = {u: scope_from_reply(r) for u, r in zip(hinted, replies[len(sids) + 1 :], strict=True)}
        else:
            keys = [key for sid in sids for key in self.keys.session(sid)]
            if scopes:
                keys.append(self.keys.app_scope)
            reply = await self._runner.script(self.scripts.load, keys, [window], "load sessions")
            triples, app_reply, user_scopes = reply, reply[-1] if scopes else [], {}

        out: list[StoredSession | None] = []
        for i, sid in enumerate(sids):
            raw, rows, user_scope = triples[3 * i : 3 * i + 3]
            if raw is None:
                self._owners.pop(sid, None)
                out.append(None)
                continue
            stored = unpack_record(sid, raw)
            stored.history = window_rows(sid, rows, stored.history_seq, window) if window else []
            if stored.expiry_at is not None and stored.expiry_at <= now:
                out.append(None)
                continue
            stored.scopes_loaded = scopes
            if scopes and stored.user_id is not None and not self._cluster and not is_legacy(raw):
                user_scopes[stored.user_id] = scope_from_reply(user_scope)  # an R1 one is read below
            out.append(stored)
        if not scopes:
            return out

        app = scope_from_reply(app_reply)
        missing = sorted({s.user_id for s in out if s is not None and s.user_id is not None} - user_scopes.keys())
        if missing:  # Cluster: owners this store had not seen; both: owners of R1 records
            replies = await self._runner.pipeline(
                [("HGETALL", self.keys.user_scope(u)) for u in missing], "load user scopes"
            )
            user_scopes.update({u: scope_from_reply(r) for u, r in zip(missing, replies, strict=True)})
        for found in out:
            if found is not None:
                self._remember(found.session_id, found.user_id)
                found.app_scope = app
                if found.user_id is not None:
                    found.user_scope = user_scopes[found.user_id]
        return out

    async def load_record(self, session_id: str, now: float) -> StoredSession | None:
        return (await self._fetch([session_id], now, scopes=True))[0]

    async def load_records(
        self, session_ids: list[str], now: float, *, window: int | None = None
    ) -> list[StoredSession]:
        if not session_ids:
            return []
        return [s for s in await self._fetch(session_ids, now, scopes=True, window=window) if s is not None]

    async def history_page(
        self, session_id: str, limit: int, before_seq: int | None, now: float
    ) -> list[tuple[int, bytes]] | None:
        keys = [self.keys.record(session_id), self.keys.history(session_id)]
        args = [repr(now), limit, "" if before_seq is None else before_seq]
        reply = await self._runner.script(self.scripts.history, keys, args, "read history")
        if reply[0] == Result.ABSENT:
            return None
        if reply[0] == Result.CORRUPT:
            raise SerializationError(_CORRUPT_HEADER)
        seq = int(reply[1])
        rows = [split_rows(session_id, row) for row in reply[2:]]
        if any(len(row) != 1 for row in rows):
            raise SerializationError("a stored Redis history row is malformed")
        last = seq if before_seq is None else min(seq, before_seq - 1)
        first = last - len(rows) + 1
        return [(first + i, row[0]) for i, row in enumerate(rows)]

    async def user_session_ids(self, user_id: str, now: float) -> list[str]:
        command = self.client.execute_command("ZRANGEBYSCORE", self.keys.user_index(user_id), f"({now!r}", "+inf")
        members: list[bytes] = await self._runner.call(command, "read the user index")
        return [m.decode() for m in members]

    async def list_page(self, user_id: str | None, limit: int, after: str | None, now: float) -> list[str]:
        """Without a user: ``ZRANGEBYLEX`` on each listing shard in one round trip, merged; with one:
        the user's index (its live members, sorted here: a user has few sessions). The listing
        shards may still hold a session that expired under the store clock: the caller drops it."""
        if user_id is not None:
            ids = sorted(await self.user_session_ids(user_id, now))
            return ids[bisect_right(ids, after) if after is not None else 0 :][:limit]
        low = "-" if after is None else "(" + after
        calls: list[Command] = [("ZRANGEBYLEX", key, low, "+", "LIMIT", 0, limit) for key in self.keys.list_shards]
        replies = await self._runner.pipeline(calls, "read the listing index")
        return heapq.nsmallest(limit, (m.decode() for reply in replies for m in reply))

    async def rebuild_listing_index(self, *, batch_size: int = 500) -> int:
        """Add every stored session to the listing shards (``SCAN`` of the prefix, idempotent);
        returns how many were seen. Run once after upgrading from a release without listing:
        its sessions enter the shards only at their next save or touch. A session deleted
        meanwhile may leave an id there, which listing skips."""
        seen = 0
        async for keys in self._runner.scan_batches(self.keys.record_pattern, batch_size):
            sids = [sid for key in keys if (sid := self.keys.session_id_of(key)) and is_valid_session_id(sid)]
            if sids:
                await self._runner.pipeline(
                    [self._indexes.list_call(sid) for sid in sids], "index sessions for listing"
                )
                seen += len(sids)
        return seen

    async def scope_rows(self, user_id: str | None) -> tuple[dict[str, bytes], dict[str, bytes]]:
        keys = [self.keys.app_scope] if user_id is None else [self.keys.app_scope, self.keys.user_scope(user_id)]
        replies = await self._runner.pipeline([("HGETALL", key) for key in keys], "load scopes")
        return (scope_from_reply(replies[1]) if user_id is not None else {}), scope_from_reply(replies[0])

    async def scan_records(self, batch_size: int, now: float) -> AsyncIterator[list[StoredSession]]:
        async for keys in self._runner.scan_batches(self.keys.record_pattern, batch_size):
            sids = [sid for key in keys if (sid := self.keys.session_id_of(key)) and is_valid_session_id(sid)]
            if sids:
                yield await self._scan_batch(sids, now)

    async def _scan_batch(self, sids: list[str], now: float) -> list[StoredSession]:
        try:
            loaded = await self._fetch(sids, now, scopes=False)
        except SerializationError:
            # One unreadable header must not hide the batch: load one by one, and hand the
            # corrupt ones to `iter_sessions` as undecodable records (it raises or skips them).
            loaded = []
            for sid in sids:
                try:
                    loaded.extend(await self._fetch([sid], now, scopes=False))
                except SerializationError:
                    loaded.append(StoredSession(sid, None, 0, 0.0, None, b"", [], 0, scopes_loaded=False))
        return [s for s in loaded if s is not None]

    async def iter_scope_rows(self) -> AsyncIterator[ScopeChange]:
        async def flush(keys: list[bytes]) -> list[ScopeChange]:
            replies = await self._runner.pipeline([("HGETALL", key) for key in keys], "read user scopes")
            changes = []
            for key, reply in zip(keys, replies, strict=True):
                raw = hash_from_reply(reply)
                owner = raw.get(OWNER_FIELD)
                if owner is None:
                    logger.error("user scope without an owner field skipped (key hash %s)", id_hash(key.hex()))
                    continue
                rows = scope_from_reply(raw)
                if rows:
                    changes.append(ScopeChange("user", owner.decode("utf-8", "surrogatepass"), rows))
            return changes

        async for keys in self._runner.scan_batches(self.keys.user_scope_pattern, 200):
            for change in await flush(keys):
                yield change
        app = (await self.scope_rows(None))[1]
        if app:
            yield ScopeChange("app", "", app)

    # ------------------------------------------------------------------------- writes
    def _write_call(self, write: SessionWrite, now: float) -> tuple[list[str], list[Any]]:
        """The KEYS and ARGV of ``write.lua`` for one save (documented at the top of the script)."""
        sid = write.session_id
        keys = self._indexes.script_keys(sid)
        value = pack_record(write, secrets.token_hex(8), self._indexes.user_hash(write.user_id) or "-")
        ttl = ttl_ms(write.expiry_at, now)
        args: list[Any] = [repr(now), write.expected_version, value, ttl, write.max_history, self.history_window]
        args.append(len(write.history))
        args += [pack_row(row.payload) for row in write.history]
        changes = [] if self._cluster else [c for c in (write.user_scope, write.app_scope) if c is not None]
        args.append(len(changes))
        for change in changes:
            keys.append(self.keys.app_scope if change.kind == "app" else self.keys.user_scope(change.owner))
            args += scope_args(change)
        args += self._runner.owner_args(write.previous_user_id) if write.expected_version != 0 else NO_OWNER
        return keys, args

    @staticmethod
    def _written(code: int, sid: str) -> bool:
        """True if a write landed (now or before, re-sent); False for an insert over an existing id."""
        if code in (Result.DONE, Result.ALREADY_APPLIED):
            return True
        if code == Result.CONFLICT:
            return False
        if code == Result.ABSENT:
            raise SessionNotFound("the session was deleted or has expired; it is not re-created")
        raise SerializationError(_CORRUPT_HEADER)

    async def write(self, write: SessionWrite, now: float) -> None:
        keys, args = self._write_call(write, now)
        code = await self._runner.script(self.scripts.write, keys, args, "save the session")
        if not self._written(code, write.session_id):
            raise raise_conflict(write.session_id)
        if self._cluster:
            self._remember(write.session_id, write.user_id)
            await self._indexes.side_effects(self._indexes.after_write(write), write.session_id, "saved")

    async def write_many(self, writes: list[SessionWrite], now: float) -> list[bool]:
        """Inserts in one pipelined round trip (on a cluster, a second one for the indexes)."""
        codes = await self._runner.script_many(
            self.scripts.write, [self._write_call(w, now) for w in writes], "save sessions"
        )
        inserted, failure = [], None
        for code, w in zip(codes, writes, strict=True):
            try:
                inserted.append(self._written(code, w.session_id))
            except (SessionNotFound, SerializationError) as exc:  # raised once the rest is indexed
                inserted.append(False)
                failure = failure or exc
        if self._cluster:
            after = [
                call for w, ok in zip(writes, inserted, strict=True) if ok for call in self._indexes.after_write(w)
            ]
            if after:
                await self._indexes.side_effects(after, writes[0].session_id, "saved with its batch")
        if failure is not None:
            raise failure
        return inserted

    async def touch_record(self, session_id: str, last_accessed_at: float, expiry_at: float | None, now: float) -> bool:
        keys = self._indexes.script_keys(session_id)
        args: list[Any] = [
            repr(now),
            repr(float(last_accessed_at)),
            "-" if expiry_at is None else repr(float(expiry_at)),
            ttl_ms(expiry_at, now),
            *NO_OWNER,
        ]
        reply = await self._runner.script(self.scripts.touch, keys, args, "touch the session")
        if reply[0] == Result.CORRUPT:
            raise SerializationError(_CORRUPT_HEADER)
        if reply[0] == Result.ABSENT:
            self._owners.pop(session_id, None)
            return False
        if reply[2]:  # Cluster, the expiry moved: re-score the indexes in other slots
            calls = self._indexes.index_calls(
                session_id, user_hash_from_reply(reply[1]), index_score(expiry_at), add=False
            )
            await self._indexes.side_effects(calls, session_id, "touched")
        return True

    async def delete_record(self, session_id: str) -> bool:
        return await self._delete_checked(session_id, None)

    async def delete_if_version(self, session_id: str, version: int) -> bool:
        """Atomic: ``delete.lua`` checks the version in the header and deletes the session's
        keys (and, on one node, its index entries) in one step; on a cluster the index entries
        in other slots are removed right after."""
        return await self._delete_checked(session_id, version)

    async def _delete_checked(self, session_id: str, version: int | None) -> bool:
        keys = self._indexes.script_keys(session_id)
        args = ["" if version is None else str(version), *NO_OWNER]
        reply = await self._runner.script(self.scripts.delete, keys, args, "delete the session")
        if reply[0] == Result.CORRUPT:
            logger.error("corrupt Redis session header %s: version-checked delete refused", id_hash(session_id))
            raise SerializationError(_CORRUPT_HEADER)
        if reply[0] == Result.CONFLICT:
            return False
        self._owners.pop(session_id, None)
        if reply[0] == Result.ABSENT:
            return False
        if self._cluster and len(reply) > 1:
            await self._indexes.side_effects(
                self._indexes.index_calls(session_id, user_hash_from_reply(reply[1]), None), session_id, "deleted"
            )
        return True

    async def write_scope_rows(self, changes: list[ScopeChange]) -> None:
        calls = [self._indexes.scope_call(change) for change in changes if not change.is_empty()]
        if calls:
            await self._runner.pipeline(calls, "write scopes")

    # ------------------------------------------------------------------------- cleanup
    async def delete_expired(self, now: float, batch_size: int) -> int:
        removed = 0
        pending = list(self.keys.expiry_shards)
        previous: dict[str, list[bytes]] = {}
        while pending:
            # One round trip asks every shard still in play for its next batch of due members.
            replies = await self._runner.pipeline(
                [("ZRANGEBYSCORE", key, "-inf", repr(now), "LIMIT", 0, batch_size) for key in pending],
                "read the expiry index",
            )
            again = []
            for shard_key, members in zip(pending, replies, strict=True):
                if not members or members == previous.get(shard_key):  # done, or no progress possible
                    continue
                previous[shard_key] = members
                removed += await self._reap(shard_key, members, now)
                again.append(shard_key)
            pending = again
        return removed

    async def _reap(self, shard_key: str, members: list[bytes], now: float) -> int:
        """Delete the expired sessions among `members` of one shard and repair their index entries."""
        found: list[tuple[bytes, str, str | None]] = []
        calls: list[Command] = []
        for member in members:
            sid, _, hashed = member.decode("ascii", "replace").partition(":")
            if is_valid_session_id(sid):
                found.append((member, sid, hashed or None))
            else:
                calls.append(("ZREM", shard_key, member))
        replies = await self._runner.script_many(
            self.scripts.reap,
            [(self.keys.session(sid), [repr(now), *NO_OWNER]) for _, sid, _ in found],
            "delete expired sessions",
        )
        removed = 0
        for (member, sid, member_hash), reply in zip(found, replies, strict=True):
            status = reply[0]
            real_hash = user_hash_from_reply(reply[1]) if status in (Result.DONE, Result.LIVE) else None
            if status != Result.LIVE or member_hash != real_hash:
                calls.append(("ZREM", shard_key, member))
                if member_hash is not None:
                    calls.append(("ZREM", self.keys.user_keys_of_hash(member_hash).index, sid))
            if status in (Result.DONE, Result.ABSENT):
                calls.append(("ZREM", self.keys.list_shard(sid), sid))
            if status == Result.DONE:
                removed += 1
                self._owners.pop(sid, None)
                if real_hash is not None and real_hash != member_hash:
                    calls.append(("ZREM", self.keys.user_keys_of_hash(real_hash).index, sid))
            elif status == Result.LIVE:
                score = index_score(None if reply[2] == b"-" else float(reply[2]))
                calls += self._indexes.index_calls(sid, real_hash, score, add=member_hash != real_hash)
            elif status == Result.CORRUPT:
                logger.error("corrupt Redis session header %s left in place by cleanup", id_hash(sid))
        if calls:
            await self._runner.pipeline(calls, "prune the indexes")
        return removed

    async def erase_user(self, user_id: str, now: float) -> ErasureReport:
        """Through the user index (``erase.lua``). One node: one atomic script per batch of
        sessions, their index entries and the user scope included. Cluster: the sessions'
        scripts in one pipelined round trip, then their expiry-shard entries and, in the user's
        slot, the index entries and the scope; a save racing it writes nothing back there
        (`IndexCommands.after_write`)."""
        user = self.keys.user(user_id)
        members = await self._runner.call(
            self.client.execute_command("ZRANGE", user.index, 0, -1), "read the user index"
        )
        sids = [sid for m in members if is_valid_session_id(sid := m.decode("ascii", "replace"))]
        owner = user_id.encode("utf-8", "surrogatepass")
        batches = [sids[i : i + _ERASE_BATCH] for i in range(0, len(sids), _ERASE_BATCH)] or [[]]
        totals = [0, 0, 0, 0]
        for batch in batches:
            if not self._cluster:
                keys = [key for sid in batch for key in self._indexes.script_keys(sid)] + [user.index, user.scope]
                replies = [
                    await self._runner.script(self.scripts.erase, keys, [4, 1, owner, user.hash], "erase a user")
                ]
            else:
                calls = [(self.keys.session(sid), [3, 0, owner, user.hash]) for sid in batch]
                replies = await self._runner.script_many(self.scripts.erase, calls, "erase a user's sessions")
                done = [sid for sid, reply in zip(batch, replies, strict=True) if not int(reply[3])]
                tail = [("ZREM", self.keys.expiry_shard(sid), f"{sid}:{user.hash}") for sid in done]
                erased = [sid for sid, reply in zip(batch, replies, strict=True) if int(reply[0])]
                tail += [("ZREM", self.keys.list_shard(sid), sid) for sid in erased]
                tail.append(
                    Scripts.command(self.scripts.erase, [user.index, user.scope], [3, 1, owner, user.hash, *done])
                )
                replies.append((await self._runner.pipeline(tail, "erase a user's index entries and scope"))[-1])
            for reply in replies:
                totals = [total + int(n) for total, n in zip(totals, reply, strict=True)]
            for sid in batch:
                self._owners.pop(sid, None)
        if totals[3]:
            logger.error("erase_user left %d unreadable session records of user %s", totals[3], id_hash(user_id))
        return ErasureReport(totals[0], totals[1], totals[2])

    async def search(self, query: SearchQuery, now: float) -> list[SearchRow]:
        """Always raises `SearchUnavailable`: Redis 6.2-7.x has no full-text engine (RediSearch
        is a separate module), and scanning every entry of a user is not a search."""
        raise SearchUnavailable(
            "Redis has no full-text engine in the versions we target; use SQLite or PostgreSQL for "
            "search_history (agent-sessions migrate copies the sessions there), or keep the facts a "
            "user gives in preferences or user: state, which every session of the user loads"
        )

    async def close(self) -> None:
        """Close the client if this store created it (a client passed in stays open). Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._owners.clear()
        if self._owns_client:
            await self._runner.call(self.client.aclose(), "close the connection")
