"""The `Session` model: its fields and methods, a version, and change tracking.

A session remembers what it looked like when it was loaded (or last saved): its `baseline`
(see `agent_sessions.tracking`). `changes()` returns the delta since then: keys set or deleted
in `state`, `preferences`, `ai_context` and `feature_flags`, replaced top-level fields, and
history entries appended. The manager saves that delta with a compare-and-set and, on a
conflict, re-applies it to a fresh copy, so concurrent writers of different keys all survive.

State key prefixes (scopes):

- ``user:`` — shared by every session of the same `user_id`;
- ``app:`` — shared by every session;
- ``temp:`` — lives in this object only, never persisted.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .codec import check_json, check_json_key, is_strict_json, json_clone
from .errors import SerializationError
from .ids import id_hash, new_session_id
from .tracking import (
    TEMP_PREFIX,
    TRACKED_FIELDS,
    TRACKED_MAPS,
    WRITE_LINEAGE,
    Baseline,
    PendingWrite,
    SessionDelta,
    baseline_of,
    diff,
)

__all__ = [
    "APP_PREFIX",
    "FIELD_NAMES",
    "TEMP_PREFIX",
    "TRACKED_FIELDS",
    "TRACKED_MAPS",
    "USER_PREFIX",
    "WRITE_LINEAGE",
    "Baseline",
    "HistoryPage",
    "PendingWrite",
    "Session",
    "SessionDelta",
]

USER_PREFIX: Final = "user:"
APP_PREFIX: Final = "app:"

#: The fields of `Session`, in declaration order.
FIELD_NAMES: Final = (
    "session_id",
    "user_id",
    "created_at",
    "last_accessed_at",
    "expiry_at",
    "state",
    "preferences",
    "history",
    "auth_info",
    "ai_context",
    "feature_flags",
    "environment",
    "version",
)
_FIELD_SET: Final = frozenset(FIELD_NAMES)
_MAP_FIELDS: Final = ("state", "preferences", "ai_context", "feature_flags", "environment")


@dataclass(slots=True)
class HistoryPage:
    """One page of a session's history, oldest to newest.

    `next_before` is the cursor for the next (older) page, or None when there is none.
    """

    entries: list[dict[str, Any]]
    next_before: int | None = None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.entries)

    def __len__(self) -> int:
        return len(self.entries)


class Session(BaseModel):
    """Session model with rich metadata: state, preferences, history, AI context, flags.

    Timestamps are float epoch seconds. `version` is bumped by every successful save.
    `auth_info` is persisted but never shown by `repr`, `to_dict()` or `model_dump()`.
    """

    model_config = ConfigDict(extra="forbid")

    session_id: str = Field(default_factory=new_session_id)
    user_id: str | None = None
    created_at: float = Field(default_factory=time.time)
    last_accessed_at: float = Field(default_factory=time.time)
    expiry_at: float | None = None
    state: dict[str, Any] = Field(default_factory=dict)
    preferences: dict[str, Any] = Field(default_factory=dict)
    history: list[dict[str, Any]] = Field(default_factory=list)
    auth_info: dict[str, Any] | None = Field(default=None, repr=False, exclude=True)
    ai_context: dict[str, Any] = Field(default_factory=dict)
    feature_flags: dict[str, Any] = Field(default_factory=dict)
    environment: dict[str, Any] = Field(default_factory=dict)
    version: int = 0

    # What the session looked like when loaded or last saved (None: never persisted).
    _baseline: Baseline | None = PrivateAttr(default=None)
    # Sequence number of the newest history entry already persisted (entries ever appended).
    _history_seq: int = PrivateAttr(default=0)
    # A save of this session whose outcome is unknown (see `PendingWrite`).
    _pending: PendingWrite | None = PrivateAttr(default=None)

    def __repr_args__(self) -> Any:
        # A session id is a bearer credential: reprs (and so logs, tracebacks) show a short hash.
        for name, value in super().__repr_args__():
            yield (name, f"#{id_hash(value)}" if name == "session_id" and isinstance(value, str) else value)

    # ----------------------------------------------------------------- state, history, expiry
    def get(self, key: str, default: Any = None) -> Any:
        """Get session state value."""
        return self.state.get(key, default)

    def set(self, key: str, value: Any) -> None:
        """Set session state value; raises `SerializationError` if it is not strict JSON (or
        nests deeper than `codec.DEFAULT_MAX_DEPTH`; a store checks its own `max_depth` at save)."""
        if type(key) is not str:
            raise SerializationError(f"state keys must be str, got {type(key).__name__}")
        if not key.isascii():
            check_json_key(key, "state")
        if not is_strict_json(value):
            check_json(value, f"state[{key!r}]")  # raises, naming the value
        self.state[key] = value
        self.touch()

    def delete(self, key: str) -> None:
        """Delete session state value."""
        if key in self.state:
            del self.state[key]
            self.touch()

    def has(self, key: str) -> bool:
        """Check if session state has key."""
        return key in self.state

    def clear(self) -> None:
        """Clear this session's own state.

        Shared ``user:`` and ``app:`` keys are kept: they belong to every session of the user
        (or app), so clearing one session must not wipe them; `delete` them explicitly.
        """
        shared = {k: v for k, v in self.state.items() if k.startswith((USER_PREFIX, APP_PREFIX))}
        self.state.clear()
        self.state.update(shared)
        self.touch()

    def touch(self) -> None:
        """Update last accessed time (in memory; the manager persists it, throttled)."""
        self.last_accessed_at = time.time()

    def is_expired(self, now: float | None = None) -> bool:
        """Check if session is expired (at `now`, default the wall clock)."""
        if self.expiry_at is None:
            return False
        return (time.time() if now is None else now) >= self.expiry_at

    def set_expiry(self, seconds: float) -> None:
        """Set session expiry time `seconds` from now."""
        self.expiry_at = time.time() + seconds

    def add_history_entry(self, entry_type: str, data: dict[str, Any]) -> None:
        """Append an entry ``{"timestamp", "type", "data"}``; `data` must be strict JSON."""
        if type(entry_type) is not str:
            raise SerializationError(f"history entry type must be str, got {type(entry_type).__name__}")
        if not is_strict_json(entry_type):
            check_json(entry_type, "history entry type")  # raises: a lone surrogate
        if not is_strict_json(data):
            check_json(data, f"history[{entry_type!r}].data")  # raises, naming the value
        self.history.append({"timestamp": time.time(), "type": entry_type, "data": data})

    def to_dict(self) -> dict[str, Any]:
        """A summary dictionary of the session (no state values, no auth_info)."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "created_at": self.created_at,
            "last_accessed_at": self.last_accessed_at,
            "expiry_at": self.expiry_at,
            "state_keys": list(self.state.keys()),
            "preferences": self.preferences,
            "history_count": len(self.history),
            "environment": self.environment,
        }

    def _repr_html_(self) -> str:
        """Jupyter display: an HTML summary, values escaped, `auth_info` never shown."""
        from .display import session_html

        return session_html(self)

    # ----------------------------------------------------------------- change tracking
    # Used by the stores and the manager (`agent_sessions.tracking` holds the diff and apply).
    def _tracked(self) -> dict[str, Any]:
        # The private attributes, through pydantic's documented `__pydantic_private__` dict:
        # `self._baseline` goes through `BaseModel.__getattr__`, about 2 µs a read (measured),
        # several times on every get and save.
        private = self.__pydantic_private__
        assert private is not None
        return private

    @property
    def baseline(self) -> Baseline | None:
        """What the session looked like when loaded or last saved (None: never); read-only."""
        baseline: Baseline | None = self._tracked()["_baseline"]
        return baseline

    @property
    def is_persisted(self) -> bool:
        """True once the session was loaded from, or saved to, a store."""
        return self._tracked()["_baseline"] is not None

    @property
    def history_seq(self) -> int:
        """Sequence number of the newest persisted history entry (0 when none)."""
        return int(self._tracked()["_history_seq"])

    @property
    def pending_write(self) -> PendingWrite | None:
        """The save of this session whose outcome is unknown, if any (see `PendingWrite`)."""
        pending: PendingWrite | None = self._tracked()["_pending"]
        return pending

    @pending_write.setter
    def pending_write(self, pending: PendingWrite | None) -> None:
        self._tracked()["_pending"] = pending

    def new_history(self) -> list[dict[str, Any]]:
        """History entries appended since the session was loaded or last saved."""
        baseline: Baseline | None = self._tracked()["_baseline"]
        return self.history[0 if baseline is None else baseline.history_len :]

    def changes(self) -> SessionDelta:
        """The delta since load (for a never-saved session: everything). `temp:` keys excluded.

        The values in the delta are the session's own (not copies).
        """
        return diff(self.__dict__, self._tracked()["_baseline"])

    def mark_clean(self, *, history_seq: int | None = None) -> None:
        """Make the current contents the persisted baseline (after a load; the write lineage
        is kept), and `history_seq` the newest persisted history entry if given."""
        tracked = self._tracked()
        old: Baseline | None = tracked["_baseline"]
        tracked["_baseline"] = baseline_of(self.__dict__, writes=() if old is None else old.writes)
        if history_seq is not None:
            tracked["_history_seq"] = history_seq

    def mark_saved(self, baseline: Baseline, history_seq: int, version: int) -> None:
        """After a successful save: `baseline` (`tracking.baseline_after` of the delta sent)
        becomes the baseline, and the session takes the saved `version` and `history_seq`."""
        self.version = version
        self._tracked().update(_baseline=baseline, _history_seq=history_seq, _pending=None)

    def mark_field_clean(self, name: str) -> None:
        """Make the current value of the tracked field `name` part of the baseline (after a
        touch persisted it)."""
        tracked = self._tracked()
        old: Baseline | None = tracked["_baseline"]
        if old is None:
            self.mark_clean()
            return
        fields = {**old.fields, name: json_clone(getattr(self, name))}
        tracked["_baseline"] = Baseline(old.maps, fields, old.history_len, old.writes)

    def adopt(self, other: Session) -> None:
        """Take over the contents and baseline of `other` (a fresher copy), keeping `temp:` keys."""
        temp = {k: v for k, v in self.state.items() if k.startswith(TEMP_PREFIX)}
        for name in FIELD_NAMES:
            setattr(self, name, getattr(other, name))
        self.state.update(temp)
        self._tracked().update(_baseline=other.baseline, _history_seq=other.history_seq)

    @classmethod
    def from_record(cls, values: dict[str, Any], *, history_seq: int, writes: tuple[str, ...]) -> Session:
        """A persisted session from the fields of a decoded store record (`values`, which
        becomes the session's own), clean: its baseline is what it holds, with the record's
        write lineage `writes`.

        Records this library wrote have every field with exactly the type the model declares:
        those are built without validation (`model_construct`); anything else is validated
        (pydantic's `ValidationError` for a record of the wrong shape).
        """
        session = cls.model_construct(**values) if _exact_types(values) else cls.model_validate(values)
        session._tracked().update(_baseline=baseline_of(session.__dict__, writes=writes), _history_seq=history_seq)
        return session


def _exact_types(values: dict[str, Any]) -> bool:
    """Whether `values` holds every field of `Session` with exactly its declared type."""
    return (
        values.keys() == _FIELD_SET
        and type(values["session_id"]) is str
        and type(values["created_at"]) is float
        and type(values["last_accessed_at"]) is float
        and type(values["version"]) is int
        and type(values["history"]) is list
        and all(type(entry) is dict for entry in values["history"])
        and ((user_id := values["user_id"]) is None or type(user_id) is str)
        and ((expiry := values["expiry_at"]) is None or type(expiry) is float)
        and ((auth := values["auth_info"]) is None or type(auth) is dict)
        and all(type(values[name]) is dict for name in _MAP_FIELDS)
    )
