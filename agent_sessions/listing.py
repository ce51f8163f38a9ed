"""Cursor-paged listing of sessions: `SessionPage`, the opaque cursor, and the paging loop.

Order: ascending session id (byte order; on PostgreSQL the session id column's collation, byte
order under ``C`` / ``C.UTF-8``). Keyset paging: each page asks the backend primitive
`SessionStore.list_page` for the ids after the last id of the previous page, from an index
(SQL: the primary key, or the ``(user_id, session_id)`` index; Redis: the listing shards, or
the user's index; memory: a sorted id list), never by skipping. So a session that exists for
the whole paging is listed exactly once, whatever is created or deleted meanwhile; a session
created meanwhile is listed if its id sorts after the cursor, one deleted is not listed once
its deletion has returned. Only live sessions are listed; the page's sessions are loaded with
the batched `SessionStore.load_records`.

The cursor is ``base64url(JSON)`` of ``{"v": 1, "after": <last id>, "user": <id_hash of the
user id or null>}``, unpadded. It is opaque to callers: one not produced by `list_sessions`
for the same user (malformed, altered, another user's) raises `InvalidCursor`.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import InvalidCursor, InvalidLimit
from .ids import id_hash, is_valid_session_id, validate_user_id
from .records import build_session
from .session import Session

if TYPE_CHECKING:
    from .stores.base import SessionStore

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "SessionPage",
    "check_limit",
    "decode_cursor",
    "encode_cursor",
    "list_sessions",
]

DEFAULT_PAGE_SIZE = 50
#: The largest page `list_sessions` returns.
MAX_PAGE_SIZE = 1000
_CURSOR_VERSION = 1
#: A cursor is ~110 characters; anything much longer is not one of ours (checked before decoding).
_MAX_CURSOR_LENGTH = 256


@dataclass(slots=True)
class SessionPage:
    """One page of `list_sessions`: the sessions in order, and the cursor of the next page
    (None: this is the last page)."""

    sessions: list[Session] = field(default_factory=list)
    next_cursor: str | None = None


def _user_tag(user_id: str | None) -> str | None:
    return None if user_id is None else id_hash(user_id)


def encode_cursor(after: str, user_id: str | None) -> str:
    """The opaque cursor of the page after session id `after` in the listing of `user_id`."""
    body = json.dumps({"v": _CURSOR_VERSION, "after": after, "user": _user_tag(user_id)}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode("ascii")).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: object, user_id: str | None) -> str:
    """The last session id of the previous page, from a cursor `encode_cursor` made for
    `user_id`; raises `InvalidCursor` for anything else (never echoing it)."""
    if not isinstance(cursor, str):
        raise InvalidCursor(f"a listing cursor is a str, got {type(cursor).__name__}")
    if not 0 < len(cursor) <= _MAX_CURSOR_LENGTH or not cursor.isascii():
        raise InvalidCursor(f"malformed listing cursor (length {len(cursor)}); start again without one")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        body = json.loads(raw.decode("ascii"))
    except (binascii.Error, ValueError) as exc:
        raise InvalidCursor("malformed listing cursor; start again without one") from exc
    if (
        type(body) is not dict
        or body.keys() != {"v", "after", "user"}
        or body["v"] != _CURSOR_VERSION
        or not is_valid_session_id(body["after"])
    ):
        raise InvalidCursor("not a listing cursor of this library; start again without one")
    if body["user"] != _user_tag(user_id):
        raise InvalidCursor("this cursor belongs to another listing (another user, or all sessions)")
    after: str = body["after"]
    return after


def check_limit(limit: object) -> int:
    """`limit` if it is an int from 1 to `MAX_PAGE_SIZE`, else `InvalidLimit`."""
    if type(limit) is not int or not 0 < limit <= MAX_PAGE_SIZE:
        raise InvalidLimit(f"limit must be an int from 1 to {MAX_PAGE_SIZE}, got {limit!r:.40}")
    return limit


async def list_sessions(
    store: SessionStore,
    user_id: str | None,
    *,
    limit: int = DEFAULT_PAGE_SIZE,
    cursor: str | None = None,
    with_history: bool = True,
) -> SessionPage:
    """One page of the live sessions of `store` (of `user_id` if given): see the module docstring.
    `with_history=False` leaves each session's history window out (`Session.history` empty,
    `history_seq` as stored): a listing that shows no history reads none.

    A page holds `limit` sessions unless it is the last; ids the index still holds for sessions
    that expired or were deleted since are skipped (the next ids are fetched to fill the page).
    A corrupt record raises `SerializationError`.
    """
    uid = None if user_id is None else validate_user_id(user_id)
    size = check_limit(limit)
    after = None if cursor is None else decode_cursor(cursor, uid)
    now = store.clock()
    sessions: list[Session] = []
    while True:
        wanted = size - len(sessions)
        ids = await store.list_page(uid, wanted + 1, after, now)
        more = len(ids) > wanted
        ids = ids[:wanted]
        if ids:
            found = await store.load_records(ids, now, window=None if with_history else 0)
            loaded = {stored.session_id: stored for stored in found}
            for sid in ids:
                stored = loaded.get(sid)
                if stored is None or (uid is not None and stored.user_id != uid):
                    continue  # gone (or moved to another user) since the index was read
                session = build_session(store.codec, stored, store.max_depth, now)
                if session is None:
                    continue
                sessions.append(session)
            after = ids[-1]
        if not more:
            return SessionPage(sessions, None)
        if len(sessions) >= size:  # `more`: `ids` held `wanted` >= 1 ids
            return SessionPage(sessions, encode_cursor(ids[-1], uid))
