"""Session id generation and the one validation pattern used for every id from outside."""

from __future__ import annotations

import hashlib
import re
import secrets

from .errors import InvalidSessionId, InvalidUserId

__all__ = [
    "SESSION_ID_PATTERN",
    "id_hash",
    "is_valid_session_id",
    "new_session_id",
    "new_write_id",
    "validate_session_id",
    "validate_user_id",
]

#: `secrets.token_urlsafe(32)`: 32 random bytes, base64url without padding, exactly 43 characters.
SESSION_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{43}")


def new_session_id() -> str:
    """Return a fresh 256-bit session id (never starting with "-", so a shell command line
    does not mistake it for an option; that leaves out 1/64 of the space, 0.02 bits)."""
    while True:
        sid = secrets.token_urlsafe(32)
        if sid[0] != "-":
            return sid


def new_write_id() -> str:
    """A fresh id for one save (96 random bits): kept in the record's write lineage, so a retry
    of a save whose outcome was unknown can tell whether it was applied."""
    return secrets.token_urlsafe(12)


def is_valid_session_id(value: object) -> bool:
    """True when `value` is a string of the exact shape `new_session_id` produces."""
    return isinstance(value, str) and SESSION_ID_PATTERN.fullmatch(value) is not None


def validate_session_id(value: object) -> str:
    """Return `value` unchanged if it is a well-formed session id, else raise `InvalidSessionId`.

    The error message describes the value (type, length) but never echoes it.
    """
    if isinstance(value, str):
        if SESSION_ID_PATTERN.fullmatch(value) is not None:
            return value
        raise InvalidSessionId(f"invalid session id (length {len(value)}): expected 43 characters of [A-Za-z0-9_-]")
    raise InvalidSessionId(f"invalid session id: expected str, got {type(value).__name__}")


def id_hash(session_id: str) -> str:
    """A short, non-reversible tag for a session id, safe to write to logs."""
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:12]


MAX_USER_ID_LENGTH = 256


def validate_user_id(value: object) -> str:
    """Return `value` if it is a usable user id (1-256 printable characters), else raise."""

    if not isinstance(value, str):
        raise InvalidUserId(f"invalid user id: expected str, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_USER_ID_LENGTH or not value.isprintable():
        raise InvalidUserId(
            f"invalid user id (length {len(value)}): expected 1-{MAX_USER_ID_LENGTH} printable characters"
        )
    return value
