"""The record string of `RedisSessionStore`, its history and scope rows, as Redis returns them.

A record is a one-line header, the user id, then the record encoded by the store's codec:
``R2 <version> <history seq> <last access> <expiry|-> <write token> <user hash|-> <user id bytes|-1>``
(``scripts/prelude.lua`` reads it). `LEGACY_HEADER`: records of the previous release start
``R1`` and have no user hash field; they are read as they are and rewritten as R2 by their next
save or touch. A history row is stored behind its 4-byte big-endian length;
the window key holds the newest rows concatenated behind the 16-digit seq of the first.
A scope is a hash of its rows; a user scope's `OWNER_FIELD` holds the user id.
"""

from __future__ import annotations

import logging
import math
import struct
from typing import Any, Final

from ...errors import SerializationError
from ...ids import id_hash
from ..primitives import SessionWrite, StoredSession

__all__ = [
    "LEGACY_HEADER",
    "NO_OWNER",
    "OWNER_FIELD",
    "hash_from_reply",
    "index_score",
    "is_legacy",
    "pack_record",
    "pack_row",
    "scope_from_reply",
    "split_rows",
    "ttl_ms",
    "unpack_record",
    "user_hash_from_reply",
    "window_rows",
]

logger = logging.getLogger(__name__)

_ROW_SIZE: Final = struct.Struct(">I")

#: The magic of the previous release's header, the R2 one without the user hash:
#: ``R1 <version> <history seq> <last access> <expiry|-> <write token> <user id bytes|-1>``.
#: Lua cannot compute sha256, so for such a record with a user a get reads the user scope in a
#: second round trip, and a script needing the hash answers `Result.LEGACY` with the owner and
#: is called again with the owner's hash (one more round trip, once: the save or touch makes it
#: R2; a save passes the hash of `SessionWrite.previous_user_id` up front, saving that trip).
LEGACY_HEADER: Final = b"R1"

#: The last two ARGV of a script that may need an R1 record's user hash, when none is known.
NO_OWNER: Final = ("", "")
#: The field of a user scope hash that holds the user id (not a scope row).
OWNER_FIELD: Final = b"~owner"


def is_legacy(raw: bytes) -> bool:
    """True for a record with the `LEGACY_HEADER` (no user hash in it)."""
    return raw.startswith(LEGACY_HEADER + b" ")


def index_score(expiry_at: float | None) -> str:
    """The score of a session in the indexes: its expiry, ``+inf`` for none."""
    return "+inf" if expiry_at is None or expiry_at == math.inf else repr(float(expiry_at))


def ttl_ms(expiry_at: float | None, now: float) -> int:
    """The key TTL in ms (0 = none): `expiry_at` relative to the store clock, at least 1 ms."""
    if expiry_at is None or expiry_at == math.inf:
        return 0
    if math.isnan(expiry_at):
        raise SerializationError("expiry_at must be a number, not NaN")
    return max(1, math.ceil((expiry_at - now) * 1000))


def pack_record(write: SessionWrite, token: str, user_hash: str) -> bytes:
    """The record string: header line, user id, encoded record (see ``prelude.lua``)."""
    user = b"" if write.user_id is None else write.user_id.encode("utf-8", "surrogatepass")
    expiry = "-" if write.expiry_at is None else repr(float(write.expiry_at))
    head = (
        f"R2 {write.new_version} {write.history_seq} {float(write.last_accessed_at)!r} {expiry} {token} "
        f"{user_hash} {-1 if write.user_id is None else len(user)}\n"
    )
    return head.encode() + user + write.record


def unpack_record(sid: str, raw: bytes) -> StoredSession:
    try:
        nl = raw.index(b"\n")
        fields = raw[:nl].split(b" ")
        if fields[0] == LEGACY_HEADER and len(fields) == 7:
            fields = [b"R2", *fields[1:6], b"-", fields[6]]  # the user hash is not read here
        magic, version, seq, accessed, expiry, _token, _hash, ulen = fields
        if magic != b"R2":
            raise ValueError("unknown record format")
        size = int(ulen)
        user = None if size < 0 else raw[nl + 1 : nl + 1 + size].decode("utf-8", "surrogatepass")
        return StoredSession(
            session_id=sid,
            user_id=user,
            version=int(version),
            last_accessed_at=float(accessed),
            expiry_at=None if expiry == b"-" else float(expiry),
            record=raw[nl + 1 + max(size, 0) :],
            history=[],
            history_seq=int(seq),
        )
    except (ValueError, UnicodeDecodeError) as exc:
        logger.error("corrupt Redis session header %s", id_hash(sid))
        raise SerializationError("a stored Redis session record has an unreadable header") from exc


def split_rows(sid: str, blob: bytes, pos: int = 0) -> list[bytes]:
    """History rows from concatenated stored rows (each a 4-byte big-endian length, then the row)."""
    rows = []
    size = len(blob)
    while pos < size:
        start = pos + 4
        end = start + _ROW_SIZE.unpack_from(blob, pos)[0]
        if end > size:
            logger.error("malformed history rows for session %s", id_hash(sid))
            raise SerializationError("a stored Redis history row is truncated")
        rows.append(blob[start:end])
        pos = end
    return rows


def pack_row(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def window_rows(sid: str, blob: bytes, history_seq: int, window: int) -> list[bytes]:
    """The newest `window` rows from the load script's ``"<16-digit first seq><rows>"``."""
    if not blob:
        return []
    rows = split_rows(sid, blob, 16)
    if int(blob[:16]) + len(rows) - 1 != history_seq:
        logger.error("history window out of step with the record of session %s", id_hash(sid))
        raise SerializationError("a stored Redis history window is out of step with its session record")
    return rows[-window:]


def user_hash_from_reply(reply: Any) -> str | None:
    """A user hash as a script returns it ('-' for none)."""
    return None if reply in (b"-", None) else bytes(reply).decode("ascii")


def hash_from_reply(reply: Any) -> dict[bytes, bytes]:
    """A HGETALL reply: a dict from a command, a flat list from a script."""
    if isinstance(reply, dict):
        return reply
    return dict(zip(reply[::2], reply[1::2], strict=True))


def scope_from_reply(reply: Any) -> dict[str, bytes]:
    """The rows of a scope hash (a HGETALL reply), without the `OWNER_FIELD`."""
    return {k.decode(): v for k, v in hash_from_reply(reply).items() if k != OWNER_FIELD}
