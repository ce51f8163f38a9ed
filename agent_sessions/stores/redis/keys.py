"""`KeyLayout`: the name of every Redis key a `RedisSessionStore` writes under one prefix.

``P`` is the prefix; the part in braces is the Redis Cluster hash tag, so the keys of one
session, of one user or of one expiry shard share a slot:

- ``P{<sid>}:rec`` — the session record: a one-line header, the user id, the encoded record;
- ``P{<sid>}:hist`` — the history list, oldest first, capped at `max_history`;
- ``P{<sid>}:win`` — the newest history rows again in one string, behind the 16-digit ``seq``
  of the first: the recent window a get reads with one ``GET``;
- ``P{~u:<h>}:idx`` — a user's sessions, a sorted set of ids scored by expiry (``+inf``: none);
- ``P{~u:<h>}:scope`` — the user scope (``user:`` keys, ``pref:`` preferences; field ``~owner``
  holds the user id), ``P{~app}:scope`` — the app scope;
- ``P{~x:<n>}:exp`` for n in 0..15 — the expiry index, sharded: ``<sid>`` / ``<sid>:<h>``
  members scored by expiry (one global set would be one hot key in another slot).
- ``P{~x:<n>}:ids`` for n in 0..15 — the listing index, sharded like the expiry index (same
  shard, same slot): session ids, all scored 0, so ``ZRANGEBYLEX`` pages them in id order.

``<h>`` is `user_hash` of the user id: a user id may hold any character (``{``, ``}``, ``:``,
glob characters) and never becomes part of a key name, a hash tag or a ``SCAN`` pattern. The
scripts build a user's keys from the hash kept in the record header (`user_key` in
``scripts/prelude.lua`` mirrors `user_index` / `user_scope`).
"""

from __future__ import annotations

import hashlib
import zlib
from dataclasses import dataclass
from typing import Final

__all__ = ["EXPIRY_SHARDS", "KeyLayout", "UserKeys", "glob_escape", "user_hash"]

#: Number of expiry-index shards; part of the key layout (every client must agree on it).
EXPIRY_SHARDS: Final = 16
_GLOB_SPECIAL: Final = frozenset("*?[]\\")
_USER_CACHE: Final = 4096


def glob_escape(text: str) -> str:
    """`text` with the ``SCAN MATCH`` glob characters escaped."""
    return "".join("\\" + ch if ch in _GLOB_SPECIAL else ch for ch in text)


def user_hash(user_id: str) -> str:
    """The 32-hex-digit name of a user in key names."""
    return hashlib.sha256(user_id.encode("utf-8", "surrogatepass")).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class UserKeys:
    """A user's hash, session index key and scope key."""

    hash: str
    index: str
    scope: str


class KeyLayout:
    """Key names under `prefix` (see the module docstring for the layout)."""

    def __init__(self, prefix: str) -> None:
        if not isinstance(prefix, str) or "{" in prefix or "}" in prefix:
            raise ValueError("prefix must be a str without '{' or '}' (they would break the cluster hash tags)")
        self.prefix = prefix
        self.app_scope: Final = f"{prefix}{{~app}}:scope"
        self.expiry_shards: Final = [f"{prefix}{{~x:{n}}}:exp" for n in range(EXPIRY_SHARDS)]
        self.list_shards: Final = [f"{prefix}{{~x:{n}}}:ids" for n in range(EXPIRY_SHARDS)]
        #: ``SCAN`` patterns (glob characters of the prefix escaped) of records and user scopes.
        self.record_pattern: Final = glob_escape(prefix) + "{*}:rec"
        self.user_scope_pattern: Final = glob_escape(prefix) + "{~u:*}:scope"
        self._users: dict[str, UserKeys] = {}

    def record(self, session_id: str) -> str:
        return f"{self.prefix}{{{session_id}}}:rec"

    def history(self, session_id: str) -> str:
        return f"{self.prefix}{{{session_id}}}:hist"

    def window(self, session_id: str) -> str:
        return f"{self.prefix}{{{session_id}}}:win"

    def session(self, session_id: str) -> list[str]:
        """Record, history and window: the keys every session script declares first."""
        head = f"{self.prefix}{{{session_id}}}:"
        return [head + "rec", head + "hist", head + "win"]

    def session_id_of(self, record_key: bytes) -> str | None:
        """The session id in a record key found by ``SCAN``, or None if it is not one of ours."""
        head = self.prefix.encode() + b"{"
        if not record_key.startswith(head) or not record_key.endswith(b"}:rec"):
            return None
        return record_key[len(head) : -len(b"}:rec")].decode("ascii", "replace")

    def user_keys_of_hash(self, hashed: str) -> UserKeys:
        return UserKeys(hashed, f"{self.prefix}{{~u:{hashed}}}:idx", f"{self.prefix}{{~u:{hashed}}}:scope")

    def user(self, user_id: str) -> UserKeys:
        """The keys of a user, memoised (every get and save of a user's session needs them)."""
        found = self._users.get(user_id)
        if found is None:
            if len(self._users) >= _USER_CACHE:
                self._users.clear()
            found = self._users[user_id] = self.user_keys_of_hash(user_hash(user_id))
        return found

    def user_index(self, user_id: str) -> str:
        return self.user(user_id).index

    def user_scope(self, user_id: str) -> str:
        return self.user(user_id).scope

    def expiry_shard(self, session_id: str) -> str:
        """The expiry-index shard key of a session."""
        return self.expiry_shards[zlib.crc32(session_id.encode()) % EXPIRY_SHARDS]

    def list_shard(self, session_id: str) -> str:
        """The listing-index shard key of a session (the slot of its expiry shard; `list_key` in
        ``prelude.lua`` derives it from the expiry shard's name)."""
        return self.list_shards[zlib.crc32(session_id.encode()) % EXPIRY_SHARDS]

    def shard_member(self, session_id: str, user_id: str | None) -> str:
        """The session's member in its expiry shard: ``<sid>``, or ``<sid>:<user hash>``."""
        return session_id if user_id is None else f"{session_id}:{self.user(user_id).hash}"
