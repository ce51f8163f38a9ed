"""Session <-> store records: the value checks, the record bytes, history rows and scope rows.

What every backend stores, defined once (`stores.base.SessionStore` and `stores.writes` call these):

- a session is one *record*: every field but `history`, with `user:`/`app:`/`temp:` state keys
  removed, plus its write lineage, encoded by the store's codec (`encode_record`);
- history is append-only entries ``{"timestamp", "type", "data"}`` encoded one by one
  (`check_history_entry`, `decode_history`);
- scope data is per key (`scope_of`): the user scope of a `user_id` holds its ``user:`` state
  keys and its preferences (as ``pref:<name>``), the app scope holds the ``app:`` keys.

`build_session` turns what a backend returns back into a `Session`, scopes merged. Every value
check raises `SerializationError` or `SessionTooLarge` before anything is written; a stored
value that fails them on the way back is a corrupt record (`SerializationError`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import ValidationError

from .codec import (
    Codec,
    JsonCodec,
    check_json,
    check_json_key,
    decode_bounded,
    encode_checked,
    is_strict_json,
    json_size_bound,
)
from .errors import ScopeError, SerializationError, SessionTooLarge
from .ids import id_hash
from .session import APP_PREFIX, FIELD_NAMES, TEMP_PREFIX, USER_PREFIX, Session
from .tracking import SessionDelta, diff

if TYPE_CHECKING:
    from .stores.primitives import StoredSession

__all__ = [
    "MAX_COLUMN_TEXT",
    "MAX_TIMESTAMP",
    "PREF_PREFIX",
    "RECORD_FORMAT",
    "ScopeData",
    "build_session",
    "check_column_text",
    "check_delta",
    "check_history_entry",
    "check_scope_growth",
    "check_shape",
    "check_timestamp",
    "decode_entry",
    "decode_record",
    "decode_history",
    "decode_scope",
    "encode_record",
    "encode_value",
    "is_scoped_key",
    "scope_of",
    "scope_size",
    "scope_view",
    "scope_view_size",
]

logger = logging.getLogger(__name__)

#: Preferences of a user are kept in the user scope under this key prefix.
PREF_PREFIX: Final = "pref:"
RECORD_FORMAT: Final = 1
#: The longest text kept in an indexed column (scope keys, history types).
MAX_COLUMN_TEXT: Final = 1024
#: Timestamps are epoch seconds within this many of 0 (about the year 287,000): every backend
#: keeps them to the millisecond (Redis in doubles, and as integer milliseconds for its TTLs).
MAX_TIMESTAMP: Final = 2.0**53 / 1000

#: The keys of a record `encode_record` writes: every field but `history` and `version`, plus
#: the format number and the write lineage.
RECORD_KEYS: Final = frozenset(FIELD_NAMES) - {"history", "version"} | {"format", "writes"}
_MAPS: Final = ("state", "preferences", "ai_context", "feature_flags", "environment")
_NOT_RECORDED: Final = (USER_PREFIX, APP_PREFIX, TEMP_PREFIX)


# ---------------------------------------------------------------------- value checks
def check_timestamp(value: Any, name: str) -> float:
    """`value` as a float timestamp; `SerializationError` unless it is a number (not a bool)
    within ±`MAX_TIMESTAMP` (so finite; an int compares exactly, however large)."""
    if (type(value) is not float and type(value) is not int) or not -MAX_TIMESTAMP <= value <= MAX_TIMESTAMP:
        raise SerializationError(
            f"{name} must be a finite number of seconds within ±{MAX_TIMESTAMP:.0f}, got {value!r:.40}"
        )
    return float(value)


def check_column_text(value: str, what: str) -> None:
    """Text that backends keep in an indexed column (scope keys, history types): every backend
    must accept the same values, and PostgreSQL text cannot hold NUL (nor UTF-8 a lone surrogate)."""
    if "\x00" in value or len(value) > MAX_COLUMN_TEXT:
        raise SerializationError(f"{what} must not contain NUL and be at most {MAX_COLUMN_TEXT} characters")
    if not value.isascii():
        check_json_key(value, what)


def check_shape(values: dict[str, Any]) -> None:
    """The record fields of the session whose fields are `values` must have the types the
    model declares (pydantic does not check assignments): a record of another shape could be
    written but never loaded again."""
    for name in _MAPS:
        if type(values[name]) is not dict:
            raise SerializationError(f"{name} must be a dict, got {type(values[name]).__name__}")
    auth = values["auth_info"]
    if auth is not None and type(auth) is not dict:
        raise SerializationError(f"auth_info must be a dict or None, got {type(auth).__name__}")
    for name in ("created_at", "last_accessed_at", "expiry_at"):
        value = values[name]
        if value is None and name == "expiry_at":
            continue
        if type(value) is not float or not -MAX_TIMESTAMP <= value <= MAX_TIMESTAMP:
            check_timestamp(value, name)


def check_delta(delta: SessionDelta, max_depth: int) -> None:
    """Strict JSON, nested at most `max_depth` deep, for every value that changed since the
    baseline (the rest already was)."""
    for name, values in delta.sets.items():
        for key, value in values.items():
            if type(key) is not str:
                raise SerializationError(f"{name} keys must be str, got {type(key).__name__}")
            if not key.isascii():
                check_json_key(key, name)
            if not is_strict_json(value, max_depth):
                check_json(value, f"{name}[{key!r:.40}]", max_depth)
    # `environment` and `auth_info` are maps of values: one level more than a value.
    for name, value in delta.fields.items():
        if name != "user_id" and not is_strict_json(value, max_depth + 1):
            check_json(value, name, max_depth + 1)


def check_history_entry(entry: Any, seq: int, max_depth: int) -> tuple[float, str]:
    """Check a history entry to save as number `seq`; returns its (timestamp, type)."""
    if not isinstance(entry, dict):
        raise SerializationError("history entries must be dicts like {'timestamp', 'type', 'data'}")
    # The entry wraps its data in one dict: one level more than a value may nest.
    if not is_strict_json(entry, max_depth + 1):
        check_json(entry, f"history[{seq}]", max_depth + 1)
    timestamp = entry.get("timestamp")
    kind = entry.get("type")
    if not isinstance(timestamp, int | float) or isinstance(timestamp, bool) or not isinstance(kind, str):
        raise SerializationError("history entries need a numeric 'timestamp' and a str 'type'")
    check_column_text(kind, "history entry type")
    return check_timestamp(timestamp, f"history[{seq}] timestamp"), kind


# ---------------------------------------------------------------------- scopes
@dataclass(slots=True)
class ScopeData:
    """Decoded scope values: `user` holds ``user:`` keys and ``pref:`` preferences."""

    user: dict[str, Any] = field(default_factory=dict)
    app: dict[str, Any] = field(default_factory=dict)

    @property
    def preferences(self) -> dict[str, Any]:
        n = len(PREF_PREFIX)
        return {k[n:]: v for k, v in self.user.items() if k.startswith(PREF_PREFIX)}

    @property
    def state(self) -> dict[str, Any]:
        merged = {k: v for k, v in self.user.items() if k.startswith(USER_PREFIX)}
        merged.update(self.app)
        return merged


def is_scoped_key(key: str) -> bool:
    """Whether a state key lives in a scope (``user:`` or ``app:``) rather than the record."""
    return key.startswith((USER_PREFIX, APP_PREFIX))


def scope_of(key: Any, user_id: str | None) -> Literal["user", "app"]:
    """The scope a scope key (``user:x``, ``pref:x``, ``app:x``) lives in; `ScopeError` for
    another key, or a user-scope key without a `user_id`."""
    if type(key) is not str:
        raise ScopeError(f"scope keys are str, got {type(key).__name__}")
    check_column_text(key, "scope key")
    if key.startswith(APP_PREFIX):
        return "app"
    if key.startswith((USER_PREFIX, PREF_PREFIX)):
        if user_id is None:
            raise ScopeError(f"scope key {key!r} needs a user_id")
        return "user"
    raise ScopeError(f"scope keys start with {USER_PREFIX!r}, {PREF_PREFIX!r} or {APP_PREFIX!r}; got {key!r}")


def scope_size(rows: dict[str, bytes]) -> int:
    """The encoded size of a scope: its keys (UTF-8) and values."""
    return sum(len(key.encode("utf-8", "surrogatepass")) + len(raw) for key, raw in rows.items())


def scope_view(kind: Literal["user", "app"], state: dict[str, Any], prefs: dict[str, Any]) -> dict[str, Any]:
    """The rows of the `kind` scope as a session holding `state` and `prefs` sees them."""
    prefix = APP_PREFIX if kind == "app" else USER_PREFIX
    rows = {k: v for k, v in state.items() if type(k) is str and k.startswith(prefix)}
    if kind == "user":
        rows.update((PREF_PREFIX + k, v) for k, v in prefs.items())
    return rows


def scope_view_size(
    codec: Codec,
    rows: dict[str, Any],
    encoded: dict[str, bytes],
    *,
    max_scope_bytes: int,
    max_bytes: int,
    max_depth: int,
) -> int:
    """The encoded size of the scope `rows` (key -> value; the values in `encoded` are already
    encoded), or an upper bound on it when that bound is within `max_scope_bytes`."""
    if type(codec) is JsonCodec:
        # An upper bound first (keys at most 4 bytes a character in UTF-8): usually enough,
        # and it spares encoding the whole scope on every save that changes a key of it.
        bound = 0
        for key, value in rows.items():
            raw = encoded.get(key)
            size = len(raw) if raw is not None else json_size_bound(value, max_depth)
            if size is None:
                break
            bound += 4 * len(key) + size
        else:
            if bound <= max_scope_bytes:
                return bound
    sized = {
        key: encode_value(codec, value, key, max_bytes=max_bytes, max_depth=max_depth, checked=True)
        for key, value in rows.items()
        if key not in encoded
    }
    sized.update((key, raw) for key, raw in encoded.items() if key in rows)
    return scope_size(sized)


def check_scope_growth(kind: Literal["user", "app"], before: int, after: int, max_scope_bytes: int) -> None:
    """Raise `SessionTooLarge` if a scope grows from `before` to `after` bytes, past
    `max_scope_bytes`. A change that does not grow a scope is always accepted, so an oversized
    scope can be cleaned up."""
    if after > max_scope_bytes and after > before:
        where = "the app scope" if kind == "app" else "the user scope"
        raise SessionTooLarge(
            f"{where} would be {after} bytes encoded, over max_scope_bytes={max_scope_bytes}; "
            "every new session loads it: delete keys or keep large data elsewhere"
        )


# ---------------------------------------------------------------------- encoding
def encode_value(
    codec: Codec, value: Any, where: str, *, max_bytes: int, max_depth: int, checked: bool = False
) -> bytes:
    """Encode one value, at most `max_bytes`; `checked`: the caller has run `check_json` on it."""
    if not checked and not is_strict_json(value, max_depth):
        check_json(value, where, max_depth)  # raises, naming the value
    data = encode_checked(codec, value)
    if len(data) > max_bytes:
        raise SessionTooLarge(f"{where}: {len(data)} bytes encoded exceeds max_session_bytes={max_bytes}")
    return data


def encode_record(
    codec: Codec, session: Session, *, writes: tuple[str, ...], max_bytes: int, max_depth: int, checked: bool
) -> bytes:
    """The session's record (no history, no scoped or ``temp:`` state keys), at most `max_bytes`.

    `checked`: every value that changed since the session's baseline has passed `check_delta`
    (the rest was checked when it was saved, or decoded from a store), so the record is encoded
    without walking it again. Otherwise every value is checked here (value by value, so the
    error names the value).
    """
    values = session.__dict__
    if not checked:
        check_shape(values)
        full = diff(values, None)
        full.history = []
        check_delta(full, max_depth)
    state = {}
    for key, value in session.state.items():
        if type(key) is not str:
            raise SerializationError(f"state keys must be str, got {type(key).__name__}")
        if not key.startswith(_NOT_RECORDED):
            state[key] = value
    record = {
        "format": RECORD_FORMAT,
        "session_id": session.session_id,
        "user_id": session.user_id,
        "created_at": float(session.created_at),
        "last_accessed_at": float(session.last_accessed_at),
        "expiry_at": session.expiry_at,
        "state": state,
        "preferences": session.preferences,
        "auth_info": session.auth_info,
        "ai_context": session.ai_context,
        "feature_flags": session.feature_flags,
        "environment": session.environment,
        "writes": list(writes),
    }
    data = encode_checked(codec, record)
    if len(data) > max_bytes:
        raise SessionTooLarge(
            f"session record is {len(data)} bytes encoded, over max_session_bytes={max_bytes}; "
            "keep large data elsewhere and store a reference"
        )
    return data


# ---------------------------------------------------------------------- decoding
def decode_scope(codec: Codec, rows: dict[str, bytes], max_depth: int) -> dict[str, Any]:
    """Decode scope rows; a value nested deeper than `max_depth` is corrupt."""
    return {key: decode_bounded(codec, raw, max_depth) for key, raw in rows.items()}


def decode_entry(codec: Codec, payload: bytes, session_id: str, max_depth: int) -> dict[str, Any]:
    """Decode one history entry (a JSON object); a corrupt one is logged and raised."""
    try:
        # An entry wraps its data in one dict: one level more than a value.
        entry = decode_bounded(codec, payload, max_depth + 1)
    except SerializationError:
        logger.error("corrupt history entry in session %s", id_hash(session_id))
        raise
    if not isinstance(entry, dict):
        logger.error("corrupt history entry in session %s", id_hash(session_id))
        raise SerializationError("a stored history entry is not a JSON object")
    return entry


def decode_history(codec: Codec, payloads: list[bytes], session_id: str, max_depth: int) -> list[dict[str, Any]]:
    """Decode a history window, oldest first.

    With the plain JSON codec the window is one `json.loads` of the joined payloads (a corrupt
    entry changes the element count or fails; then each is decoded alone, which reports it).
    """
    if len(payloads) > 1 and type(codec) is JsonCodec:
        # The joined list is one level deeper than its entries: `max_depth + 2` in all. The most
        # lists plus the most dicts any one entry opens bounds each entry's depth (counted in
        # C): the usual entries open few, and then no depth is measured (measuring the joined
        # list instead doubles the cost of a 50-entry window, measured).
        joined = b"[" + b",".join(payloads) + b"]"
        limit = max_depth + 1
        try:
            if max(map(bytes.count, payloads, repeat(b"["))) + max(map(bytes.count, payloads, repeat(b"{"))) <= limit:
                entries = codec.decode(joined)
            else:
                entries = decode_bounded(codec, joined, limit + 1)
        except SerializationError:
            entries = None
        if type(entries) is list and len(entries) == len(payloads) and all(type(e) is dict for e in entries):
            return entries
    return [decode_entry(codec, payload, session_id, max_depth) for payload in payloads]


def build_session(codec: Codec, stored: StoredSession, max_depth: int, now: float) -> Session | None:
    """The `Session` a backend's `StoredSession` holds (history window, scopes merged, clean),
    or None if it expired at `now`. Raises `SerializationError` (logged, with the session's
    id hash) for a corrupt record."""
    record, writes = decode_record(codec, stored, max_depth)
    try:
        session = Session.from_record(record, history_seq=stored.history_seq, writes=writes)
    except (ValidationError, TypeError, AttributeError, RecursionError) as exc:
        logger.error("corrupt session record %s: %s", id_hash(stored.session_id), type(exc).__name__)
        raise SerializationError(f"stored session record is invalid: {exc}") from exc
    if session.is_expired(now):
        return None
    return session


def decode_record(codec: Codec, stored: StoredSession, max_depth: int) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The fields of the `Session` `stored` holds, as plain decoded values (scopes merged into
    ``state`` / ``preferences``, the backend's columns applied, ``history`` the decoded window),
    and its write lineage: what `build_session` builds from, for readers that need no tracked
    `Session` (listings). Not checked against the model; raises `SerializationError` (logged)
    for a record that does not decode."""
    try:
        # A record wraps each value in two dicts (the record, then `state` or another map).
        record = decode_bounded(codec, stored.record, max_depth + 2)
        if not isinstance(record, dict):
            raise SerializationError("the stored record is not a JSON object")
        writes = record.pop("writes", [])
        if type(writes) is not list or not all(type(w) is str for w in writes):
            raise SerializationError("the stored record's write lineage is not a list of ids")
        if record.keys() | {"writes"} != RECORD_KEYS:
            # Not a record this library wrote (an older format): validated in full.
            record.pop("format", None)
        else:
            del record["format"]
        state = record.setdefault("state", {})
        prefs = record.setdefault("preferences", {})
        for key, raw in stored.user_scope.items():
            if key.startswith(PREF_PREFIX):
                prefs[key[len(PREF_PREFIX) :]] = decode_bounded(codec, raw, max_depth)
            else:
                state[key] = decode_bounded(codec, raw, max_depth)
        for key, raw in stored.app_scope.items():
            state[key] = decode_bounded(codec, raw, max_depth)
        # The backend's columns win over the record's copy (touches update only the columns).
        record["session_id"] = stored.session_id
        record["user_id"] = stored.user_id
        record["last_accessed_at"] = stored.last_accessed_at
        record["expiry_at"] = stored.expiry_at
        record["version"] = stored.version
        record["history"] = decode_history(codec, stored.history, stored.session_id, max_depth)
    except (SerializationError, TypeError, AttributeError, RecursionError) as exc:
        logger.error("corrupt session record %s: %s", id_hash(stored.session_id), type(exc).__name__)
        if isinstance(exc, SerializationError):
            raise
        raise SerializationError(f"stored session record is invalid: {exc}") from exc
    return record, tuple(writes)
