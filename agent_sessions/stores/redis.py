"""`RedisSessionStore`: sessions on Redis or Redis Cluster through `redis.asyncio`.

Key layout (``P`` is the configured prefix; the part in braces is the Redis Cluster hash tag,
so the keys of one session, of one user or of one expiry shard share a slot):

- ``P{<sid>}:rec`` — the session as one string: a one-line header
  ``R1 <version> <history_seq> <last_accessed_at> <expiry_at|-> <write token> <user id bytes|-1>``,
  then the user id, then the record encoded by the store's codec. One string (not a hash) so a
  get is one ``GET`` and the Lua scripts can check the version and the expiry without decoding
  the record;
- ``P{<sid>}:hist`` — the history list, oldest first, capped at `max_history` (``LTRIM``).
  Its entries are numbered implicitly: the last one is ``history_seq``. Each row is stored with
  a 4-byte big-endian length prefix;
- ``P{<sid>}:win`` — the newest rows again, concatenated behind their 16-digit first ``seq``:
  the recent window a get needs, read with one ``GET`` and returned as one string (copying
  list elements into Lua and parsing an array of small replies both cost far more). The write
  script appends to it and rebuilds it from the list when it outgrows the window by a margin;
- ``P{~u:<h>}:idx`` — the per-user index, a sorted set of session ids scored by expiry
  (``+inf`` for none), where ``<h>`` is a hash of the user id: user ids may contain any
  printable character, ``{``, ``}`` and ``:`` included, and must never become part of a hash
  tag or of a ``SCAN`` pattern;
- ``P{~u:<h>}:scope`` — the user scope (``user:`` keys and ``pref:`` preferences; the field
  ``~owner`` holds the user id so scopes can be exported), ``P{~app}:scope`` — the app scope;
- ``P{~x:<n>}:exp`` for n in 0..15 — the expiry index, sharded: a sorted set of
  ``<sid>`` / ``<sid>:<h>`` members scored by expiry. A single global expiry set cannot be
  updated in the same script as a session on a cluster (other slot) and would be one hot key;
  sixteen shards spread the load and are each walked in batches by `cleanup_expired`.

Round trips. A get is one ``EVALSHA`` of a read-only script returning the record and the
recent history window atomically; the scopes are read in the same round trip: on one node
the script also reads them (their keys are declared in ``KEYS``), on a cluster they are
pipelined beside it (one request per node, sent concurrently). The user scope's key depends on
the user id, known only after reading the record, so the store remembers the owner of the
sessions it has seen (a bounded map, verified on every read; a miss costs a second round trip).

On a single node the script calls of gets and saves go out on connections the store keeps
from the client's pool (returned by `close`), skipping the per-call checkout and bookkeeping of
``execute_command``: about a third of the client's cost of a small command.

A save is one ``EVALSHA`` of the write script, registered once with `register_script`
(``EVALSHA``, falling back to ``SCRIPT LOAD`` on ``NOSCRIPT``). It checks existence, expiry and
version, writes the record with ``PX`` = ``expiry_at - clock()`` (at least 1 ms, never
``EX 0``; ``expiry_at`` is also checked against the store clock by every script, so an injected
clock works without waiting for Redis), appends and trims the history and sets its TTL. On a
single node the same script updates the user index, the expiry shard and the scopes: the
save is atomic. On a cluster those keys live in other slots, so they are updated right after
the script succeeded, in one pipelined call (concurrently per node): the record and its
history are still atomic, but a client dying between the two calls leaves the index or a
scope change behind. The next save of the session re-indexes it; cleanup repairs index
scores; a failure of that second call is raised as `StoreUnavailable` saying the record was
saved. Index updates that do not run inside the session's script use ``ZADD GT`` so that
reordered updates can only leave a score too high (cleanup later), never too low (a live
session missing from `get_user_sessions`).

Writes carry a random token stored in the header, so a write re-sent by the client's retry
policy after a lost reply is recognised as already applied instead of reported as a conflict.

The version-checked delete that ends a `rename` (`SessionManager.regenerate_id`) is the delete
script given the expected version: it checks the header and deletes in one step, so a save
racing the move either lands first (the delete refuses, the move starts over) or finds the
session gone (`SessionNotFound`); it is never silently lost.

A touch only moves ``last_accessed_at`` and the expiry forward (a stored "no expiry" is replaced
by any expiry, a new "no expiry" replaces any): a delayed touch never shortens the expiry, the
TTLs or the index scores a newer save or touch has set. It rewrites the whole record string:
the header fields have no fixed width (decimal numbers as Python wrote them), so ``SETRANGE``
cannot patch them in place without a new record format.

Cleanup. Redis expires the keys itself (their TTL is the session's expiry). `cleanup_expired`
walks each expiry shard with ``ZRANGEBYSCORE -inf now LIMIT 0 batch``: a member whose record is
gone (Redis expired it) has its index entries pruned; one whose record is expired under the
store clock is deleted with its history; one still live is re-scored with its real expiry.
The shard member carries the hash of the user id, so the user index can be pruned even when
the record is already gone. Nothing ever runs ``KEYS``; `get_all` / `iter_sessions` use
``SCAN`` (on every primary of a cluster) with a fixed pattern built from the configured prefix
only, glob characters escaped, and load the sessions found in batches: one script call per
batch on a single node, one pipeline per batch (split per node) on a cluster, where a multi-key
``MGET`` cannot span the slots of different sessions.

Failures. Connection errors, timeouts and cluster errors are raised as `StoreUnavailable`
with the cause chained. Every operation is bounded by `socket_timeout` as a whole (an
``asyncio.timeout`` around it, the driver's retries and reconnects included): a frozen server
costs at most that long. A client built from a URL retries a failed connection `retries` times
with a jittered backoff capped at 0.5 s, each connect bounded by `socket_connect_timeout`; it
has no socket timeout of its own, since redis-py would wrap every send in ``asyncio.wait_for``
(a task per command, about a third of the cost of a small command). A command cut off by the
deadline closes its connection, so no late reply is ever read as another command's. The
connection pool reconnects by itself when Redis returns.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import random
import secrets
import struct
import zlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Final, cast

from ..errors import SerializationError, SessionNotFound, StoreUnavailable
from ..ids import id_hash, is_valid_session_id
from .base import ScopeChange, SessionStore, SessionWrite, StoredSession, raise_conflict

try:
    from redis import exceptions as redis_errors
    from redis.asyncio import Redis
    from redis.asyncio.cluster import RedisCluster
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialWithJitterBackoff
    from redis.commands.core import AsyncScript
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "RedisSessionStore needs the 'redis' package (redis-py >= 5): pip install agent-sessions[redis]"
    ) from exc

__all__ = ["DEFAULT_PREFIX", "RedisSessionStore"]

logger = logging.getLogger(__name__)

DEFAULT_PREFIX: Final = "agent_sessions:"
#: Number of expiry-index shards; part of the key layout (every client must agree on it).
EXPIRY_SHARDS: Final = 16
_OWNER_FIELD: Final = b"~owner"
_OWNER_FIELD_STR: Final = "~owner"
_HEADER_MAGIC: Final = b"R1"
_GLOB_SPECIAL: Final = frozenset("*?[]\\")
_ROW_SIZE: Final = struct.Struct(">I")
_REDIS_ERRORS: Final = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)

# ---------------------------------------------------------------------------------- Lua
# Shared helpers. Floats are never formatted by Lua (it would round them): header fields are
# copied as the strings Python wrote, and only compared after `tonumber`.
_LUA_PRELUDE = r"""
local function header(rec)
  local v, s, la, e, tok, ul, pos = string.match(rec, '^R1 (%d+) (%d+) (%S+) (%S+) (%S+) (%-?%d+)\n()')
  if not v then return nil end
  return {'R1', v, s, la, e, tok, ul}, pos - 1
end
local function live(f, now)
  return f[5] == '-' or tonumber(f[5]) > now
end
local function owner(rec, f, nl)
  local n = tonumber(f[7])
  if n < 0 then return false end
  return string.sub(rec, nl + 1, nl + n)
end
local function guessed(user, guess)
  if guess == '' then return false end
  if guess == 'a' then return user == false end
  return user ~= false and ('u' .. user) == guess
end
local function set_ttl(key, pttl)
  if pttl > 0 then redis.call('PEXPIRE', key, pttl) else redis.call('PERSIST', key) end
end
local function apply_ops(first)
  local n = tonumber(ARGV[first])
  local i = first + 1
  for _ = 1, n do
    local code, key, a, b = ARGV[i], KEYS[tonumber(ARGV[i + 1])], ARGV[i + 2], ARGV[i + 3]
    if code == 'Z' then redis.call('ZADD', key, a, b)
    elseif code == 'G' then redis.call('ZADD', key, 'GT', a, b)
    elseif code == 'R' then redis.call('ZREM', key, a)
    elseif code == 'H' then redis.call('HSET', key, a, b)
    elseif code == 'D' then redis.call('HDEL', key, a)
    elseif code == 'T' then
      if redis.call('HLEN', key) <= 1 and redis.call('HEXISTS', key, a) == 1 then redis.call('DEL', key) end
    else error('agent_sessions: unknown index operation') end
    i = i + 4
  end
end
"""

# KEYS: n triples (record, history, window), then hashes read whole. ARGV: history window, n.
# Returns per session the record and its newest rows as one string "<16-digit first seq><rows>":
# the window key when it holds enough rows (one GET), else rebuilt from the list.
_LUA_LOAD = r"""
local window = tonumber(ARGV[1])
local n = tonumber(ARGV[2])
local out = {}
for i = 1, n do
  local rec = redis.call('GET', KEYS[3 * i - 2])
  out[#out + 1] = rec
  local rows = ''
  local hseq = rec and window > 0 and tonumber(string.match(rec, '^R1 %d+ (%d+) '))
  if hseq and hseq > 0 then
    local win = redis.call('GET', KEYS[3 * i])
    local first = win and tonumber(string.sub(win, 1, 16))
    local count = first and hseq - first + 1
    if first and (count >= window or first == 1 or redis.call('LLEN', KEYS[3 * i - 1]) <= count) then
      rows = win
    else
      local list = redis.call('LRANGE', KEYS[3 * i - 1], -window, -1)
      if #list > 0 then rows = string.format('%016d', hseq - #list + 1) .. table.concat(list) end
    end
  end
  out[#out + 1] = rows
end
for j = 3 * n + 1, #KEYS do out[#out + 1] = redis.call('HGETALL', KEYS[j]) end
return out
"""

# KEYS: record, history, window, then (single node) expiry shard, user index, scope keys.
# ARGV[1]: "<now> <expected version> <new version> <token> <pttl> <max history> <rows> <index>
# <score> <user hash> <history seq> <keep> <cap>" in one string (every argument costs the client
# encoding time), where <index> is '-' (indexes updated by the caller), 's' (expiry shard) or
# 'u' (shard and user index), <user hash> is '-' without a user, and the window key is rebuilt
# with the newest <keep> rows once it would hold more than <cap> (else the new rows are
# appended). ARGV[2]: the value; then the history rows, then further index/scope operations.
# Returns 1 written, 2 already written by this very call (a retry), 0 conflict,
# -1 absent or expired, -3 corrupt header.
_LUA_WRITE = (
    _LUA_PRELUDE
    + r"""
local now, expected, version, token, pttl, maxh, nh, index, score, uhash, hseq, keep, cap = string.match(
  ARGV[1], '^(%S+) (%d+) (%d+) (%S+) (%d+) (%d+) (%d+) (%S) (%S+) (%S+) (%d+) (%d+) (%d+)$')
now, pttl, nh, hseq, keep = tonumber(now), tonumber(pttl), tonumber(nh), tonumber(hseq), tonumber(keep)
local rec = redis.call('GET', KEYS[1])
if rec then
  local f = header(rec)
  if not f then return -3 end
  if f[2] == version and f[6] == token then return 2 end
  if expected == '0' then return 0 end
  if not live(f, now) then return -1 end
  if f[2] ~= expected then return 0 end
elseif expected ~= '0' then
  return -1
else
  redis.call('DEL', KEYS[2], KEYS[3])
end
if pttl > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', pttl)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
local i = 3
local len = 0
while i <= 2 + nh do
  local j = math.min(i + 999, 2 + nh)
  len = redis.call('RPUSH', KEYS[2], unpack(ARGV, i, j))
  i = j + 1
end
if len > tonumber(maxh) then redis.call('LTRIM', KEYS[2], '-' .. maxh, '-1') end
if nh > 0 then
  local head = rec and redis.call('GETRANGE', KEYS[3], 0, 15)
  local first = head and #head == 16 and tonumber(head)
  if keep == 0 then
    redis.call('DEL', KEYS[3])
  elseif first and hseq - first + 1 <= tonumber(cap) then
    redis.call('APPEND', KEYS[3], table.concat(ARGV, '', 3, 2 + nh))
  else
    local rows = redis.call('LRANGE', KEYS[2], -keep, -1)
    redis.call('SET', KEYS[3], string.format('%016d', hseq - #rows + 1) .. table.concat(rows))
  end
end
set_ttl(KEYS[2], pttl)
set_ttl(KEYS[3], pttl)
if index ~= '-' then
  local sid = string.match(KEYS[1], '{(.-)}')
  if index == 'u' then
    redis.call('ZADD', KEYS[4], score, sid .. ':' .. uhash)
    redis.call('ZADD', KEYS[5], score, sid)
  else
    redis.call('ZADD', KEYS[4], score, sid)
  end
end
apply_ops(3 + nh)
return 1
"""
)

# KEYS: record, history, window, index keys. ARGV: now, last_accessed_at, expiry ('-'), pttl,
# owner guess ('' none, 'a' anonymous, 'u'..user id), index operations (applied only when the
# guess is right). Both times only move forward, so a delayed touch never undoes a newer save
# or touch: the expiry is replaced only by a later one or by '-' (none), and a stored '-' by
# any; otherwise the record keeps its expiry and every key its TTL (and the indexes their
# scores). Returns {0} absent/expired, {-3} corrupt, {1, user id or nil, applied}, where
# applied = 1 also when the indexes need no update.
_LUA_TOUCH = (
    _LUA_PRELUDE
    + r"""
local now = tonumber(ARGV[1])
local rec = redis.call('GET', KEYS[1])
if not rec then return {0} end
local f, nl = header(rec)
if not f then return {-3} end
if not live(f, now) then return {0} end
local la = ARGV[2]
if tonumber(f[4]) >= tonumber(la) then la = f[4] end
local expiry = ARGV[3]
local moved = expiry == '-' or f[5] == '-' or tonumber(expiry) > tonumber(f[5])
if not moved then expiry = f[5] end
local user = owner(rec, f, nl)
if not moved and la == f[4] then return {1, user, 1} end
local value = table.concat({'R1', f[2], f[3], la, expiry, f[6], f[7]}, ' ') .. string.sub(rec, nl)
if not moved then
  redis.call('SET', KEYS[1], value, 'KEEPTTL')
  return {1, user, 1}
end
local pttl = tonumber(ARGV[4])
if pttl > 0 then
  redis.call('SET', KEYS[1], value, 'PX', pttl)
else
  redis.call('SET', KEYS[1], value)
end
set_ttl(KEYS[2], pttl)
set_ttl(KEYS[3], pttl)
if guessed(user, ARGV[5]) then
  apply_ops(6)
  return {1, user, 1}
end
return {1, user, 0}
"""
)

# KEYS: record, history, window, index keys. ARGV: expected version ('' = delete whatever the
# version), owner guess, index operations. With an expected version, the session is deleted
# only if its header holds that version, checked and deleted in this one script (no save can
# land in between). Returns {0} absent, {3} another version (nothing deleted), {-3} unreadable
# header with an expected version (nothing deleted), {2} deleted with an unreadable header,
# {1, user id or nil, applied}.
_LUA_DELETE = (
    _LUA_PRELUDE
    + r"""
local rec = redis.call('GET', KEYS[1])
local f, nl
if rec then f, nl = header(rec) end
if ARGV[1] ~= '' and rec then
  if not f then return {-3} end
  if f[2] ~= ARGV[1] then return {3} end
end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
if not rec then return {0} end
if not f then return {2} end
local user = owner(rec, f, nl)
if guessed(user, ARGV[2]) then
  apply_ops(3)
  return {1, user, 1}
end
return {1, user, 0}
"""
)

# KEYS: record, history. ARGV: now, limit, before ('' = newest).
# Returns nil if absent/expired, -3 if corrupt, else {history_seq, rows...} (oldest first).
_LUA_HISTORY = (
    _LUA_PRELUDE
    + r"""
local now = tonumber(ARGV[1])
local rec = redis.call('GET', KEYS[1])
if not rec then return false end
local f = header(rec)
if not f then return -3 end
if not live(f, now) then return false end
local hseq = tonumber(f[3])
local last = hseq
if ARGV[3] ~= '' then last = math.min(last, tonumber(ARGV[3]) - 1) end
local first = math.max(hseq - redis.call('LLEN', KEYS[2]) + 1, last - tonumber(ARGV[2]) + 1)
if last < first then return {f[3]} end
local rows = redis.call('LRANGE', KEYS[2], first - hseq - 1, last - hseq - 1)
table.insert(rows, 1, f[3])
return rows
"""
)

# KEYS: record, history, window. ARGV: now. Deletes the session if it is expired at `now`.
# Returns {0} absent, {-3} corrupt, {1, user id or nil} deleted, {2, user id or nil, expiry} live.
_LUA_REAP = (
    _LUA_PRELUDE
    + r"""
local now = tonumber(ARGV[1])
local rec = redis.call('GET', KEYS[1])
if not rec then
  redis.call('DEL', KEYS[2], KEYS[3])
  return {0}
end
local f, nl = header(rec)
if not f then return {-3} end
local user = owner(rec, f, nl)
if live(f, now) then return {2, user, f[5]} end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
return {1, user}
"""
)

# KEYS: the keys the operations name. ARGV: index operations.
_LUA_OPS = _LUA_PRELUDE + "\napply_ops(1)\nreturn 1\n"


@dataclass(frozen=True, slots=True)
class _Op:
    """One index or scope update: ZADD (Z, GT: G), ZREM (R), HSET (H), HDEL (D), drop-if-empty (T)."""

    tag: str
    key: str
    code: str
    a: bytes | str
    b: bytes | str = ""


class _Unknown:
    """Marker: this store has not seen the session, so its owner is not known."""


_UNKNOWN: Final = _Unknown()
Owner = str | None


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def _score(expiry_at: float | None) -> str:
    if expiry_at is None or expiry_at == math.inf:
        return "+inf"
    return repr(float(expiry_at))


def _user_hash(user_id: str) -> str:
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _unavailable(exc: BaseException, action: str) -> StoreUnavailable:
    if isinstance(exc, TimeoutError):  # the store's own deadline (`socket_timeout`)
        return StoreUnavailable(f"Redis did not {action} in time (socket_timeout)")
    return StoreUnavailable(f"Redis could not {action}: {type(exc).__name__}: {exc}")


class RedisSessionStore(SessionStore):
    """Sessions on Redis (one node or a Redis Cluster): one round trip per get and per save.

    `url_or_client` is a ``redis://`` / ``rediss://`` URL, a ``redis+cluster://`` /
    ``rediss+cluster://`` URL (any node of the cluster), or a `redis.asyncio.Redis` /
    `redis.asyncio.cluster.RedisCluster` created with ``decode_responses=False``. A client
    passed in stays the caller's: `close` does not close it.

    `socket_timeout` bounds every operation (seconds, retries included), whatever the client.
    `socket_connect_timeout` and `retries` configure clients built from a URL, as do
    `client_options` (passed on to ``from_url``).

    Every key starts with `prefix`; use one prefix per application sharing a Redis.
    `owner_cache_size` bounds how many sessions' owners the store remembers (a known owner lets
    a get read the user scope in the same round trip). Other keyword options are those of
    `SessionStore` (codec, limits, history window, clock). Needs Redis 6.2 or later.
    """

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
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ValueError("prefix must be a str without '{' or '}' (they would break the cluster hash tags)")
        if socket_timeout <= 0 or socket_connect_timeout <= 0 or retries < 0:
            raise ValueError("socket timeouts must be > 0 and retries >= 0")
        self.prefix = prefix
        self.socket_timeout = socket_timeout
        self._owns_client = isinstance(url_or_client, str)
        if isinstance(url_or_client, str):
            self.client: Redis | RedisCluster = self._client_from_url(
                url_or_client, socket_connect_timeout, retries, client_options or {}
            )
        elif isinstance(url_or_client, Redis | RedisCluster):
            self.client = url_or_client
        else:
            raise TypeError(
                "RedisSessionStore needs a redis:// or redis+cluster:// URL, a redis.asyncio.Redis "
                f"or a redis.asyncio.cluster.RedisCluster, not {type(url_or_client).__name__}"
            )
        if self._connection_kwargs().get("decode_responses"):
            raise ValueError("RedisSessionStore needs a client created with decode_responses=False")
        self._cluster = isinstance(self.client, RedisCluster)
        self._retries = retries
        single = isinstance(self.client, Redis) and self.client.connection is None
        self._pool = self.client.connection_pool if single and isinstance(self.client, Redis) else None
        self._direct = self._pool is not None
        self._idle: list[Any] = []  # connections held for `_evalsha_direct`
        self._closed = False
        self._owners: dict[str, Owner] = {}
        self._users: dict[str, tuple[str, str, str, str]] = {}
        self._owner_cache_size = max(0, owner_cache_size)
        register = self.client.register_script
        self._load_script = register(_LUA_LOAD)
        self._write_script = register(_LUA_WRITE)
        self._touch_script = register(_LUA_TOUCH)
        self._delete_script = register(_LUA_DELETE)
        self._history_script = register(_LUA_HISTORY)
        self._reap_script = register(_LUA_REAP)
        self._ops_script = register(_LUA_OPS)
        self._scripts = (
            self._load_script,
            self._write_script,
            self._touch_script,
            self._delete_script,
            self._history_script,
            self._reap_script,
            self._ops_script,
        )
        self._app_key = f"{prefix}{{~app}}:scope"
        self._shard_keys = [f"{prefix}{{~x:{n}}}:exp" for n in range(EXPIRY_SHARDS)]

    @staticmethod
    def _client_from_url(url: str, connect_timeout: float, retries: int, extra: dict[str, Any]) -> Redis | RedisCluster:
        scheme, rest = url.split("://", 1) if "://" in url else ("", url)
        scheme = scheme.lower()
        settings: dict[str, Any] = {
            # No socket timeout in the driver: redis-py wraps every send in `asyncio.wait_for`
            # (a task per command, about a third of a small command's cost). The store bounds
            # each operation with `asyncio.timeout(socket_timeout)` instead, retries included.
            "socket_timeout": None,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries),
            **extra,
            "decode_responses": False,
        }
        if scheme in ("redis+cluster", "rediss+cluster"):
            return RedisCluster.from_url(f"{scheme.split('+')[0]}://{rest}", **settings)
        if scheme in ("redis", "rediss", "unix"):
            return Redis.from_url(url, **settings)
        raise ValueError(f"not a Redis URL: scheme {scheme!r} (use redis://, rediss:// or redis+cluster://)")

    async def ping(self) -> None:
        """Send ``PING``; `StoreUnavailable` names the server's (or the cluster's startup nodes')
        host and port, never the password."""
        try:
            await self._command("answer PING", "PING")
        except StoreUnavailable as exc:
            if isinstance(self.client, RedisCluster):
                where = ", ".join(f"{node.host}:{node.port}" for node in self.client.startup_nodes)
            else:
                kwargs = self._connection_kwargs()
                where = kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}"
            raise StoreUnavailable(f"cannot reach the Redis session store at {where}: {exc}") from exc

    def _connection_kwargs(self) -> dict[str, Any]:
        if isinstance(self.client, RedisCluster):
            return dict(self.client.get_connection_kwargs())
        return dict(self.client.connection_pool.connection_kwargs)

    # ------------------------------------------------------------------------- keys
    def _rec_key(self, sid: str) -> str:
        return f"{self.prefix}{{{sid}}}:rec"

    def _hist_key(self, sid: str) -> str:
        return f"{self.prefix}{{{sid}}}:hist"

    def _session_keys(self, sid: str) -> list[str]:
        """Record, history list and history window: the keys every session script declares."""
        head = f"{self.prefix}{{{sid}}}:"
        return [head + "rec", head + "hist", head + "win"]

    def _shard(self, sid: str) -> tuple[str, str]:
        n = zlib.crc32(sid.encode()) % EXPIRY_SHARDS
        return f"~x:{n}", self._shard_keys[n]

    def _user_keys(self, user_hash: str) -> tuple[str, str, str]:
        """(hash tag, index key, scope key) of the user with this id hash."""
        tag = f"~u:{user_hash}"
        return tag, f"{self.prefix}{{{tag}}}:idx", f"{self.prefix}{{{tag}}}:scope"

    def _user(self, user_id: str) -> tuple[str, str, str, str]:
        """(id hash, hash tag, index key, scope key) of a user, memoised: every get and save needs them."""
        found = self._users.get(user_id)
        if found is None:
            user_hash = _user_hash(user_id)
            found = (user_hash, *self._user_keys(user_hash))
            if len(self._users) >= 4096:
                self._users.clear()
            self._users[user_id] = found
        return found

    def _member(self, sid: str, user_id: Owner) -> str:
        return sid if user_id is None else f"{sid}:{self._user(user_id)[0]}"

    # ------------------------------------------------------------------------- owners
    def _remember(self, sid: str, user_id: Owner) -> None:
        if self._owner_cache_size == 0:
            return
        owners = self._owners
        if sid not in owners and len(owners) >= self._owner_cache_size:
            del owners[next(iter(owners))]
        owners[sid] = user_id

    @staticmethod
    def _guess_arg(guess: Owner | _Unknown) -> str:
        if isinstance(guess, _Unknown):
            return ""
        return "a" if guess is None else "u" + guess

    # ------------------------------------------------------------------------- calls
    async def _script(self, script: AsyncScript, keys: list[str], args: Sequence[Any], action: str) -> Any:
        """``EVALSHA`` the registered script; on ``NOSCRIPT`` load it and call once more."""
        command = self._evalsha_direct if self._direct else self.client.execute_command
        try:
            async with asyncio.timeout(self.socket_timeout):
                try:
                    return await command("EVALSHA", script.sha, len(keys), *keys, *args)
                except redis_errors.NoScriptError:
                    await self.client.script_load(script.script)
                    return await command("EVALSHA", script.sha, len(keys), *keys, *args)
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc, action) from exc

    async def _evalsha_direct(self, *command: Any) -> Any:
        """Send one script call on a connection this store keeps (single node only).

        The hot path (every get and save) skips `Redis.execute_command`'s per-call pool
        checkout, locking and bookkeeping, about a third of the client's cost of a command.
        The connections come from the client's pool and go back on `close`. redis-py closes a
        connection whose command failed or was cut off (no late reply is ever read as another
        command's); it reconnects on its next use. Failed connections are retried `retries`
        times with a jittered backoff, within the `socket_timeout` deadline.
        """
        pool = self._pool
        if pool is None:  # only called for a single-node client without a pinned connection
            raise RuntimeError("direct script calls need the client's connection pool")
        failures = 0
        while True:
            conn = None
            try:
                conn = self._idle.pop() if self._idle else await cast(Any, pool).get_connection()
                await conn.send_command(*command)
                return await conn.read_response()
            except (redis_errors.ConnectionError, redis_errors.TimeoutError):
                failures += 1
                if failures > self._retries:
                    raise
            finally:
                if conn is not None:
                    self._idle.append(conn)
            await asyncio.sleep(random.uniform(0, min(0.5, 0.05 * 2**failures)))

    async def _command(self, action: str, *args: Any) -> Any:
        try:
            async with asyncio.timeout(self.socket_timeout):
                return await self.client.execute_command(*args)
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc, action) from exc

    async def _pipeline(self, calls: list[tuple[Any, ...]], action: str) -> list[Any]:
        """Run `calls` in one round trip (per node, concurrently, on a cluster).

        A script missing from a server's cache (``NOSCRIPT``: restart, failover) is loaded and
        only the calls that failed for that reason are sent again.
        """
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        try:
            async with asyncio.timeout(self.socket_timeout):
                for attempt in range(2):
                    pipe = self.client.pipeline(transaction=False)
                    for i in todo:
                        pipe.execute_command(*calls[i])
                    replies = await pipe.execute(raise_on_error=False)
                    again: list[int] = []
                    for i, reply in zip(todo, replies, strict=True):
                        if isinstance(reply, redis_errors.NoScriptError) and attempt == 0:
                            again.append(i)
                        elif isinstance(reply, BaseException):
                            raise reply
                        else:
                            results[i] = reply
                    if not again:
                        break
                    for script in self._scripts:
                        await self.client.script_load(script.script)
                    todo = again
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc, action) from exc
        return results

    def _evalsha(self, script: AsyncScript, keys: list[str], args: Sequence[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", script.sha, len(keys), *keys, *args)

    def _encode_ops(self, ops: list[_Op], keys: list[str], *, gt: bool = False) -> list[Any]:
        """Append the keys `ops` name to `keys` and return the operations as script arguments."""
        index = {key: i for i, key in enumerate(keys, 1)}
        argv: list[Any] = [len(ops)]
        for op in ops:
            i = index.get(op.key)
            if i is None:
                keys.append(op.key)
                i = index[op.key] = len(keys)
            argv += ["G" if gt and op.code == "Z" else op.code, i, op.a, op.b]
        return argv

    async def _apply_ops(self, ops: list[_Op], *, gt: bool, action: str) -> None:
        """Apply index/scope operations: one script per slot group, all in one round trip."""
        if not ops:
            return
        groups: dict[str, list[_Op]] = {}
        for op in ops:
            groups.setdefault(op.tag if self._cluster else "", []).append(op)
        calls = []
        for group in groups.values():
            keys: list[str] = []
            argv = self._encode_ops(group, keys, gt=gt)
            calls.append(self._evalsha(self._ops_script, keys, argv))
        await self._pipeline(calls, action)

    # ------------------------------------------------------------------------- index ops
    def _index_ops(self, sid: str, user_id: Owner, expiry_at: float | None) -> list[_Op]:
        tag, shard_key = self._shard(sid)
        score = _score(expiry_at)
        ops = [_Op(tag, shard_key, "Z", score, self._member(sid, user_id))]
        if user_id is not None:
            _, utag, idx_key, _ = self._user(user_id)
            ops.append(_Op(utag, idx_key, "Z", score, sid))
        return ops

    def _unindex_ops(self, sid: str, user_id: Owner) -> list[_Op]:
        tag, shard_key = self._shard(sid)
        ops = [_Op(tag, shard_key, "R", self._member(sid, user_id))]
        if user_id is not None:
            _, utag, idx_key, _ = self._user(user_id)
            ops.append(_Op(utag, idx_key, "R", sid))
        return ops

    def _scope_ops(self, change: ScopeChange) -> list[_Op]:
        if change.kind == "app":
            tag, key, owner = "~app", self._app_key, None
        else:
            _, tag, _, key = self._user(change.owner)
            owner = change.owner
        ops = [] if owner is None or not change.sets else [_Op(tag, key, "H", _OWNER_FIELD_STR, owner)]
        ops += [_Op(tag, key, "H", field, value) for field, value in change.sets.items()]
        ops += [_Op(tag, key, "D", field) for field in change.deletes]
        if change.deletes:
            ops.append(_Op(tag, key, "T", _OWNER_FIELD_STR))
        return ops

    # ------------------------------------------------------------------------- records
    @staticmethod
    def _pack(write: SessionWrite, token: bytes) -> bytes:
        user = b"" if write.user_id is None else write.user_id.encode("utf-8", "surrogatepass")
        expiry = b"-" if write.expiry_at is None else repr(float(write.expiry_at)).encode()
        head = b"R1 %d %d %s %s %s %d\n" % (
            write.new_version,
            write.history_seq,
            repr(float(write.last_accessed_at)).encode(),
            expiry,
            token,
            -1 if write.user_id is None else len(user),
        )
        return head + user + write.record

    @staticmethod
    def _unpack(sid: str, raw: bytes, history: list[bytes]) -> StoredSession:
        try:
            nl = raw.index(b"\n")
            magic, version, hseq, accessed, expiry, _token, ulen = raw[:nl].split(b" ")
            if magic != _HEADER_MAGIC:
                raise ValueError("unknown record format")
            start = nl + 1
            size = int(ulen)
            user = None if size < 0 else raw[start : start + size].decode("utf-8", "surrogatepass")
            return StoredSession(
                session_id=sid,
                user_id=user,
                version=int(version),
                last_accessed_at=float(accessed),
                expiry_at=None if expiry == b"-" else float(expiry),
                record=raw[start + max(size, 0) :],
                history=history,
                history_seq=int(hseq),
            )
        except (ValueError, UnicodeDecodeError) as exc:
            logger.error("corrupt Redis session header %s", id_hash(sid))
            raise SerializationError("a stored Redis session record has an unreadable header") from exc

    @staticmethod
    def _split_rows(sid: str, blob: bytes, pos: int = 0) -> list[bytes]:
        """History rows from concatenated stored rows (each a 4-byte big-endian length, then the row)."""
        rows = []
        size = len(blob)
        unpack = _ROW_SIZE.unpack_from
        while pos < size:
            start = pos + 4
            end = start + unpack(blob, pos)[0]
            if end > size:
                logger.error("malformed history rows for session %s", id_hash(sid))
                raise SerializationError("a stored Redis history row is truncated")
            rows.append(blob[start:end])
            pos = end
        return rows

    def _window_rows(self, sid: str, blob: bytes, history_seq: int) -> list[bytes]:
        """The newest `history_window` rows from the load script's ``"<16-digit first seq><rows>"``."""
        if not blob:
            return []
        rows = self._split_rows(sid, blob, 16)
        if int(blob[:16]) + len(rows) - 1 != history_seq:
            logger.error("history window out of step with the record of session %s", id_hash(sid))
            raise SerializationError("a stored Redis history window is out of step with its session record")
        return rows[-self.history_window :]

    @staticmethod
    def _ttl_ms(expiry_at: float | None, now: float) -> int:
        """The key TTL in ms (0 = none): `expiry_at` relative to the store clock, at least 1 ms."""
        if expiry_at is None or expiry_at == math.inf:
            return 0
        if math.isnan(expiry_at):
            raise SerializationError("expiry_at must be a number, not NaN")
        return max(1, math.ceil((expiry_at - now) * 1000))

    @staticmethod
    def _hash(reply: Any) -> dict[bytes, bytes]:
        """A HGETALL reply: a dict from a pipeline, a flat list from a script."""
        if isinstance(reply, dict):
            return reply
        return dict(zip(reply[::2], reply[1::2], strict=True))

    @staticmethod
    def _scope_rows(raw: dict[bytes, bytes]) -> dict[str, bytes]:
        return {k.decode(): v for k, v in raw.items() if k != _OWNER_FIELD}

    # ------------------------------------------------------------------------- reads
    async def _fetch(self, sids: list[str], now: float, *, scopes: bool) -> list[StoredSession | None]:
        """Load sessions (None for absent or expired) in one round trip, two on an owner miss."""
        hinted: list[str] = []
        if scopes:
            for sid in sids:
                owner = self._owners.get(sid)
                if owner is not None and owner not in hinted:
                    hinted.append(owner)
        scope_keys = [self._app_key, *(self._user(u)[3] for u in hinted)] if scopes else []
        if self._cluster:
            calls = [
                self._evalsha(self._load_script, self._session_keys(sid), [self.history_window, 1]) for sid in sids
            ]
            calls += [("HGETALL", key) for key in scope_keys]
            replies = await self._pipeline(calls, "load sessions")
            pairs = [item for reply in replies[: len(sids)] for item in reply]
            hashes = replies[len(sids) :]
        else:
            keys = [k for sid in sids for k in self._session_keys(sid)]
            reply = await self._script(
                self._load_script, keys + scope_keys, [self.history_window, len(sids)], "load sessions"
            )
            pairs, hashes = reply[: 2 * len(sids)], reply[2 * len(sids) :]

        out: list[StoredSession | None] = []
        for i, sid in enumerate(sids):
            raw = pairs[2 * i]
            if raw is None:
                self._owners.pop(sid, None)
                out.append(None)
                continue
            loaded = self._unpack(sid, raw, [])
            loaded.history = self._window_rows(sid, pairs[2 * i + 1], loaded.history_seq)
            out.append(None if loaded.expiry_at is not None and loaded.expiry_at <= now else loaded)
        if not scopes:
            for stored in out:
                if stored is not None:
                    stored.scopes_loaded = False
            return out

        app = self._scope_rows(self._hash(hashes[0]))
        user_rows = {u: self._scope_rows(self._hash(h)) for u, h in zip(hinted, hashes[1:], strict=True)}
        missing = sorted({s.user_id for s in out if s is not None and s.user_id is not None} - user_rows.keys())
        if missing:
            replies = await self._pipeline([("HGETALL", self._user(u)[3]) for u in missing], "load user scopes")
            user_rows.update({u: self._scope_rows(self._hash(h)) for u, h in zip(missing, replies, strict=True)})
        for stored in out:
            if stored is not None:
                self._remember(stored.session_id, stored.user_id)
                stored.app_scope = app
                if stored.user_id is not None:
                    stored.user_scope = user_rows[stored.user_id]
        return out

    async def load_record(self, session_id: str, now: float) -> StoredSession | None:
        return (await self._fetch([session_id], now, scopes=True))[0]

    async def load_records(self, session_ids: list[str], now: float) -> list[StoredSession]:
        if not session_ids:
            return []
        return [s for s in await self._fetch(session_ids, now, scopes=True) if s is not None]

    async def history_page(
        self, session_id: str, limit: int, before_seq: int | None, now: float
    ) -> list[tuple[int, bytes]] | None:
        keys = [self._rec_key(session_id), self._hist_key(session_id)]
        args = [repr(now), limit, "" if before_seq is None else before_seq]
        reply = await self._script(self._history_script, keys, args, "read history")
        if reply is None:
            return None
        if reply == -3:
            raise SerializationError("a stored Redis session record has an unreadable header")
        hseq = int(reply[0])
        rows = [self._split_rows(session_id, row) for row in reply[1:]]
        if any(len(row) != 1 for row in rows):
            raise SerializationError("a stored Redis history row is malformed")
        last = hseq if before_seq is None else min(hseq, before_seq - 1)
        first = last - len(rows) + 1
        return [(first + i, row[0]) for i, row in enumerate(rows)]

    async def user_session_ids(self, user_id: str, now: float) -> list[str]:
        idx_key = self._user(user_id)[2]
        members: list[bytes] = await self._command("read the user index", "ZRANGEBYSCORE", idx_key, f"({now!r}", "+inf")
        return [m.decode() for m in members]

    async def scope_rows(self, user_id: str | None) -> tuple[dict[str, bytes], dict[str, bytes]]:
        keys = [self._app_key] if user_id is None else [self._app_key, self._user(user_id)[3]]
        replies = await self._pipeline([("HGETALL", key) for key in keys], "load scopes")
        app = self._scope_rows(self._hash(replies[0]))
        user = self._scope_rows(self._hash(replies[1])) if user_id is not None else {}
        return user, app

    async def _scan_keys(self, pattern: str, count: int) -> AsyncIterator[bytes]:
        keys = self.client.scan_iter(match=pattern, count=count)
        while True:
            try:
                async with asyncio.timeout(self.socket_timeout):
                    key = await anext(keys)
            except StopAsyncIteration:
                return
            except _REDIS_ERRORS as exc:
                raise _unavailable(exc, "scan keys") from exc
            yield key

    async def scan_records(self, batch_size: int, now: float) -> AsyncIterator[list[StoredSession]]:
        head = self.prefix.encode() + b"{"
        pattern = _glob_escape(self.prefix) + "{*}:rec"
        seen: set[str] = set()  # SCAN may return a key twice while Redis resizes its table
        batch: list[str] = []
        async for key in self._scan_keys(pattern, max(batch_size, 10)):
            sid = key[len(head) : -len(b"}:rec")].decode("ascii", "replace")
            if not key.startswith(head) or not is_valid_session_id(sid) or sid in seen:
                continue
            seen.add(sid)
            batch.append(sid)
            if len(batch) >= batch_size:
                yield await self._scan_batch(batch, now)
                batch = []
        if batch:
            yield await self._scan_batch(batch, now)

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
        pattern = _glob_escape(self.prefix) + "{~u:*}:scope"
        batch: list[bytes] = []

        async def flush(keys: list[bytes]) -> list[ScopeChange]:
            replies = await self._pipeline([("HGETALL", key) for key in keys], "read user scopes")
            changes = []
            for key, reply in zip(keys, replies, strict=True):
                raw = self._hash(reply)
                owner = raw.get(_OWNER_FIELD)
                rows = self._scope_rows(raw)
                if owner is None:
                    logger.error("user scope without an owner field skipped (key hash %s)", id_hash(key.hex()))
                    continue
                if rows:
                    changes.append(ScopeChange("user", owner.decode("utf-8", "surrogatepass"), rows))
            return changes

        async for key in self._scan_keys(pattern, 200):
            batch.append(key)
            if len(batch) >= 200:
                for change in await flush(batch):
                    yield change
                batch = []
        if batch:
            for change in await flush(batch):
                yield change
        app = (await self.scope_rows(None))[1]
        if app:
            yield ScopeChange("app", "", app)

    # ------------------------------------------------------------------------- writes
    async def write(self, write: SessionWrite, now: float) -> None:
        sid = write.session_id
        token = secrets.token_hex(8)
        keys = self._session_keys(sid)
        ops: list[_Op] = []
        if write.expected_version != 0 and write.previous_user_id != write.user_id:
            ops += self._unindex_ops(sid, write.previous_user_id)  # the shard member changes with the owner
        for change in (write.user_scope, write.app_scope):
            if change is not None:
                ops += self._scope_ops(change)
        user_hash = "-" if write.user_id is None else self._user(write.user_id)[0]
        if self._cluster:
            index = "-"
            ops += self._index_ops(sid, write.user_id, write.expiry_at)
        else:
            # Every save re-scores the session in its expiry shard and user index: on one node
            # the script does it, through fixed KEYS slots.
            index = "s" if write.user_id is None else "u"
            keys.append(self._shard(sid)[1])
            if write.user_id is not None:
                keys.append(self._user(write.user_id)[2])
        keep = min(self.history_window, write.max_history)
        cap = min(keep + max(8, keep // 4), write.max_history)
        scalars = (
            f"{now!r} {write.expected_version} {write.new_version} {token} {self._ttl_ms(write.expiry_at, now)} "
            f"{write.max_history} {len(write.history)} {index} {_score(write.expiry_at)} {user_hash} "
            f"{write.history_seq} {keep} {cap}"
        )
        args: list[Any] = [
            scalars,
            self._pack(write, token.encode()),
            *(len(row.payload).to_bytes(4, "big") + row.payload for row in write.history),
        ]
        args += self._encode_ops(ops, keys) if ops and not self._cluster else [0]
        code = await self._script(self._write_script, keys, args, "save the session")
        if code == 0:
            raise raise_conflict(sid)
        if code == -1:
            raise SessionNotFound("the session was deleted or has expired; it is not re-created")
        if code == -3:
            raise SerializationError("the stored Redis session record has an unreadable header; delete it")
        self._remember(sid, write.user_id)
        if self._cluster:
            try:
                await self._apply_ops(ops, gt=True, action="update the indexes and scopes")
            except StoreUnavailable as exc:
                raise StoreUnavailable(
                    f"session {id_hash(sid)} was saved, but its user index / scope changes could not be applied: {exc}"
                ) from exc

    async def touch_record(self, session_id: str, last_accessed_at: float, expiry_at: float | None, now: float) -> bool:
        guess = _UNKNOWN if self._cluster else self._owners.get(session_id, _UNKNOWN)
        keys = self._session_keys(session_id)
        args: list[Any] = [
            repr(now),
            repr(float(last_accessed_at)),
            "-" if expiry_at is None else repr(float(expiry_at)),
            self._ttl_ms(expiry_at, now),
            self._guess_arg(guess),
        ]
        if isinstance(guess, _Unknown):
            args.append(0)
        else:
            args += self._encode_ops(self._index_ops(session_id, guess, expiry_at), keys)
        reply = await self._script(self._touch_script, keys, args, "touch the session")
        if reply[0] == -3:
            raise SerializationError("the stored Redis session record has an unreadable header; delete it")
        if reply[0] == 0:
            self._owners.pop(session_id, None)
            return False
        user = None if reply[1] is None else reply[1].decode("utf-8", "surrogatepass")
        self._remember(session_id, user)
        if not reply[2]:
            await self._apply_ops(self._index_ops(session_id, user, expiry_at), gt=True, action="update the indexes")
        return True

    async def delete_record(self, session_id: str) -> bool:
        return await self._delete_checked(session_id, None)

    async def delete_if_version(self, session_id: str, version: int) -> bool:
        """Atomic: the delete script checks the version in the record header and deletes the
        session's keys (and, on one node, its index entries) in one step; on a cluster the
        index entries in other slots are removed right after, as by `_delete`."""
        return await self._delete_checked(session_id, version)

    async def _delete_checked(self, session_id: str, version: int | None) -> bool:
        guess = _UNKNOWN if self._cluster else self._owners.get(session_id, _UNKNOWN)
        keys = self._session_keys(session_id)
        args: list[Any] = ["" if version is None else str(version), self._guess_arg(guess)]
        if isinstance(guess, _Unknown):
            args.append(0)
        else:
            args += self._encode_ops(self._unindex_ops(session_id, guess), keys)
        if version is None:
            self._owners.pop(session_id, None)
        reply = await self._script(self._delete_script, keys, args, "delete the session")
        if reply[0] == -3:
            logger.error("corrupt Redis session header %s: version-checked delete refused", id_hash(session_id))
            raise SerializationError("the stored Redis session record has an unreadable header; delete it")
        if reply[0] == 3:
            return False
        self._owners.pop(session_id, None)
        if reply[0] == 0:
            return False
        if reply[0] == 1 and not reply[2]:
            user = None if reply[1] is None else reply[1].decode("utf-8", "surrogatepass")
            await self._apply_ops(self._unindex_ops(session_id, user), gt=False, action="update the indexes")
        return True

    async def write_scope_rows(self, changes: list[ScopeChange]) -> None:
        ops = [op for change in changes for op in self._scope_ops(change)]
        await self._apply_ops(ops, gt=False, action="write scopes")

    # ------------------------------------------------------------------------- cleanup
    async def delete_expired(self, now: float, batch_size: int) -> int:
        removed = 0
        pending = list(self._shard_keys)
        previous: dict[str, list[bytes]] = {}
        while pending:
            # One round trip asks every shard still in play for its next batch of due members.
            replies = await self._pipeline(
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
        tag = shard_key[len(self.prefix) + 1 : shard_key.index("}", len(self.prefix))]
        parsed: list[tuple[bytes, str, str | None]] = []
        ops: list[_Op] = []
        for member in members:
            text = member.decode("ascii", "replace")
            sid, _, member_hash = text.partition(":")
            if not is_valid_session_id(sid):
                ops.append(_Op(tag, shard_key, "R", member))
                continue
            parsed.append((member, sid, member_hash or None))
        replies = await self._pipeline(
            [self._evalsha(self._reap_script, self._session_keys(sid), [repr(now)]) for _, sid, _ in parsed],
            "delete expired sessions",
        )
        removed = 0
        for (member, sid, user_hash), reply in zip(parsed, replies, strict=True):
            status = reply[0]
            user = None if status not in (1, 2) or reply[1] is None else reply[1].decode("utf-8", "surrogatepass")
            real_hash = None if user is None else self._user(user)[0]
            stale_user_entry = user_hash is not None and (status != 2 or user_hash != real_hash)
            if status != 2 or user_hash != real_hash:
                ops.append(_Op(tag, shard_key, "R", member))
            if stale_user_entry and user_hash is not None:
                utag, idx_key, _ = self._user_keys(user_hash)
                ops.append(_Op(utag, idx_key, "R", sid))
            if status == 1:
                removed += 1
                self._owners.pop(sid, None)
                if real_hash is not None and real_hash != user_hash:
                    utag, idx_key, _ = self._user_keys(real_hash)
                    ops.append(_Op(utag, idx_key, "R", sid))
            elif status == 2:
                expiry = None if reply[2] == b"-" else float(reply[2])
                ops += [_Op(op.tag, op.key, "G", op.a, op.b) for op in self._index_ops(sid, user, expiry)]
            elif status == -3:
                logger.error("corrupt Redis session header %s left in place by cleanup", id_hash(sid))
        await self._apply_ops(ops, gt=False, action="prune the indexes")
        return removed

    async def close(self) -> None:
        """Close the client if this store created it (a client passed in stays open). Idempotent."""
        if self._closed:
            return
        self._closed = True
        idle, self._idle = self._idle, []
        if self._pool is not None:
            for conn in idle:
                await self._pool.release(conn)
        if self._owns_client:
            try:
                await self.client.aclose()
            except _REDIS_ERRORS as exc:
                raise _unavailable(exc, "close the connection") from exc
