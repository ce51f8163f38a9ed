"""The `Session` model: its fields and methods, a version, and change tracking.

A session remembers what it looked like when it was loaded (or last saved). `changes()` returns
the delta since then: keys set or deleted in `state`, `preferences`, `ai_context` and
`feature_flags`, replaced top-level fields, and history entries appended. The manager saves that
delta with a compare-and-set and, on a conflict, re-applies it to a fresh copy, so concurrent
writers of different keys all survive.

State key prefixes (scopes):

- ``user:`` — shared by every session of the same `user_id`;
- ``app:`` — shared by every session;
- ``temp:`` — lives in this object only, never persisted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from .codec import check_json, check_json_key, is_strict_json, json_clone
from .errors import SerializationError
from .ids import id_hash, new_session_id, validate_session_id

__all__ = [
    "APP_PREFIX",
    "TEMP_PREFIX",
    "USER_PREFIX",
    "HistoryPage",
    "Session",
    "SessionDelta",
]

USER_PREFIX: Final = "user:"
APP_PREFIX: Final = "app:"
TEMP_PREFIX: Final = "temp:"

#: The dict-valued fields whose changes are tracked per key.
TRACKED_MAPS: Final = ("state", "preferences", "ai_context", "feature_flags")
#: Top-level fields whose changes are tracked as whole-value replacements (`last_accessed_at` is
#: not: the manager sets it on every save).
TRACKED_FIELDS: Final = ("user_id", "expiry_at", "environment", "auth_info")


_MISSING: Final[Any] = object()
_NO_MAP: Final[dict[str, Any]] = {}
#: The baseline maps of a session never saved (never mutated).
_EMPTY_MAPS: Final[dict[str, dict[str, Any]]] = {name: _NO_MAP for name in TRACKED_MAPS}

#: The fields of `Session`, in declaration order (the order of `__dict__`, so of dumps and reprs).
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
_object_setattr = object.__setattr__
_object_new = object.__new__


def _private(session: Session) -> dict[str, Any]:
    # Private attributes straight from pydantic's slot: `session._snapshot` would go through
    # `BaseModel.__getattr__`, several times slower on the hot path.
    private = session.__pydantic_private__
    assert private is not None
    return private


def _set_field(session: Session, name: str, value: Any) -> None:
    """`setattr(session, name, value)` for a field of the model, as pydantic does it for a model
    without `validate_assignment` (its `_model_field_setattr_handler`: store the value, mark the
    field set), minus the handler lookup in `BaseModel.__setattr__`; for the hot paths, which
    set a field or two per call. `Session` must not enable `validate_assignment` (a test says so).
    """
    session.__dict__[name] = value
    session.__pydantic_fields_set__.add(name)


def _differs(old: Any, value: Any) -> bool:
    """`not _same(old, value)`, with scalars of one type compared by `==` and two empty
    containers (or zeros) of one type equal without a walk."""
    kind = type(value)
    if kind is not type(old):
        return True
    if kind is float or kind is str or kind is int:
        return bool(old != value)
    return bool(value or old) and not _same(old, value)


def _map_changes(
    name: str,
    current: dict[str, Any],
    before: dict[str, Any],
    all_sets: dict[str, dict[str, Any]],
    all_deletes: dict[str, set[str]],
) -> None:
    """The keys of one tracked map set or deleted since `before` (see `Session.changes`)."""
    if current:
        sets = None
        for key, value in current.items():
            old = before.get(key, _MISSING)
            # A baseline never shares a container with the live session, so `is` means an
            # unchanged scalar; the common case costs one lookup.
            if old is value:
                continue
            if old is not _MISSING:
                kind = type(value)
                # `_same`, inline for scalars of one type (a counter that moved: one `==`).
                if kind is type(old) and (
                    old == value if kind is int or kind is str or kind is float else _same(old, value)
                ):
                    continue
            elif name == "state" and type(key) is str and key.startswith(TEMP_PREFIX):
                continue
            if sets is None:
                sets = {key: value}
            else:
                sets[key] = value
        if sets is not None:
            all_sets[name] = sets
    # Deletions: a set difference only when some key of the baseline is gone (the subset test
    # of the key views runs in C and builds nothing).
    if before and (type(current) is not dict or not before.keys() <= current.keys()):
        deleted = {k for k in before if k not in current}
        if deleted:
            all_deletes[name] = deleted


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: `1 == True` in Python, but a change of type is a change.

    An explicit stack, not recursion: the live session may hold a value of any depth (checked
    only when it is saved). Anything but a JSON type counts as changed, without calling its
    `==`: the save then checks it, and refuses it with `SerializationError`."""
    if a is b:
        return True
    stack = [(a, b)]
    while stack:
        a, b = stack.pop()
        kind = type(a)
        if kind is not type(b):
            return False
        if kind is dict:
            if len(a) != len(b):
                return False
            for key, value in a.items():
                other = b.get(key, _MISSING)
                if other is not value:
                    if other is _MISSING:
                        return False
                    stack.append((value, other))
        elif kind is list:
            if len(a) != len(b):
                return False
            stack.extend((x, y) for x, y in zip(a, b, strict=True) if x is not y)
        elif kind is str or kind is int or kind is float or kind is bool:
            if a != b:
                return False
        elif a is not None:
            return False
    return True


@dataclass(slots=True)
class SessionDelta:
    """What changed in a session since it was loaded; `apply` replays it onto another copy."""

    sets: dict[str, dict[str, Any]] = field(default_factory=dict)
    deletes: dict[str, set[str]] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def is_empty(self) -> bool:
        """True when nothing changed."""
        return not (self.sets or self.deletes or self.fields or self.history)

    def without(self, sent: SessionDelta) -> SessionDelta:
        """What this delta changes beyond `sent` (an earlier delta of the same session, a
        prefix of this one): keys set to other values or deleted since, fields changed since,
        history entries appended after `sent`'s. Used when a save that `sent` described turns
        out to have been applied after all (`SessionManager.update_session`)."""
        sets: dict[str, dict[str, Any]] = {}
        for name, values in self.sets.items():
            before = sent.sets.get(name, _NO_MAP)
            extra = {k: v for k, v in values.items() if k not in before or not _same(before[k], v)}
            if extra:
                sets[name] = extra
        deletes: dict[str, set[str]] = {}
        for name, keys in self.deletes.items():
            extra_keys = keys - sent.deletes.get(name, set())
            if extra_keys:
                deletes[name] = extra_keys
        fields = {
            name: value
            for name, value in self.fields.items()
            if name not in sent.fields or _differs(sent.fields[name], value)
        }
        return SessionDelta(sets, deletes, fields, self.history[len(sent.history) :])

    def copy(self) -> SessionDelta:
        """A deep copy: the values of a delta are the session's own objects."""
        return SessionDelta(
            {name: json_clone(values) for name, values in self.sets.items()},
            {name: set(keys) for name, keys in self.deletes.items()},
            json_clone(self.fields),
            json_clone(self.history),
        )

    def apply(self, session: Session) -> None:
        """Replay this delta onto `session` (a fresher copy of the same session)."""
        for name, values in self.sets.items():
            getattr(session, name).update(json_clone(values))
        for name, keys in self.deletes.items():
            target: dict[str, Any] = getattr(session, name)
            for key in keys:
                target.pop(key, None)
        for name, value in self.fields.items():
            setattr(session, name, json_clone(value))
        session.history.extend(json_clone(entry) for entry in self.history)


@dataclass(slots=True)
class Baseline:
    """The persisted baseline change tracking compares against.

    Never mutated once built, nor are the values in it: a newer baseline is a new object, so
    baselines (and their values) can be shared between sessions, copies and a memory store.
    (Not a frozen dataclass only because that makes building one, on every load and save,
    several times slower.)

    `record_bound`, when known, is an upper bound on the encoded size of the store record
    this baseline describes (see `SessionStore._prepare_write`). `writes` is the record's
    write lineage: the ids of the last `WRITE_LINEAGE` saves that produced it, newest first
    (a retried save whose outcome was unknown finds its own id there: `PendingWrite`).
    """

    maps: dict[str, dict[str, Any]]
    fields: dict[str, Any]
    history_len: int
    record_bound: int | None = None
    writes: tuple[str, ...] = ()


#: How many write ids a record keeps (see `Baseline.writes`): a save reported as failed is
#: recognised as applied while fewer than this many saves landed on top of it since.
WRITE_LINEAGE: Final = 16


@dataclass(slots=True)
class PendingWrite:
    """A save of a session that raised `StoreUnavailable`: it may or may not have been applied.

    `write_id` is the id the save carried (kept in the record's write lineage if it landed);
    `sent` a copy of the delta it saved. The manager keeps one on the session, so that a retry
    of the save recognises its own earlier success instead of applying the delta twice.
    """

    write_id: str
    sent: SessionDelta


def pending_write(session: Session) -> PendingWrite | None:
    """The save of `session` whose outcome is unknown, if any (see `PendingWrite`)."""
    pending: PendingWrite | None = _private(session).get("_pending")
    return pending


def set_pending_write(session: Session, pending: PendingWrite | None) -> None:
    """Remember (or, with None, forget) a save of `session` whose outcome is unknown."""
    _private(session)["_pending"] = pending


@dataclass(slots=True)
class HistoryPage:
    """One page of a session's history, oldest to newest.

    `next_before` is the cursor for the next (older) page, or None when there is none.
    """

    entries: list[dict[str, Any]]
    next_before: int | None = None

    def __iter__(self) -> Any:
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

    _snapshot: Baseline | None = PrivateAttr(default=None)
    # Sequence number of the newest history entry already persisted (entries ever appended).
    _history_seq: int = PrivateAttr(default=0)
    # The `session_id` string object last checked with `validate_session_id` (see `_tracking`).
    _valid_id: str | None = PrivateAttr(default=None)

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
        _set_field(self, "last_accessed_at", time.time())

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
    @property
    def baseline(self) -> Baseline | None:
        """What the session looked like when loaded or last saved (None: never); read-only."""
        baseline: Baseline | None = _private(self)["_snapshot"]
        return baseline

    @property
    def is_persisted(self) -> bool:
        """True once the session was loaded from, or saved to, a store."""
        return _private(self)["_snapshot"] is not None

    @property
    def history_seq(self) -> int:
        """Sequence number of the newest persisted history entry (0 when none)."""
        return int(_private(self)["_history_seq"])

    def new_history(self) -> list[dict[str, Any]]:
        """History entries appended since the session was loaded or last saved."""
        snap: Baseline | None = _private(self)["_snapshot"]
        base = 0 if snap is None else snap.history_len
        return self.history[base:]

    def changes(self) -> SessionDelta:
        """The delta since load (for a never-saved session: everything). `temp:` keys excluded.

        The values in the delta are the session's own (not copies).
        """
        return _delta_since(self.__dict__, _private(self)["_snapshot"])

    def _mark_clean(self, *, history_seq: int | None = None) -> None:
        """Record the current contents as the persisted baseline (after a load or a save)."""
        values = self.__dict__
        maps = {name: json_clone(values[name]) for name in TRACKED_MAPS}
        state = maps["state"]
        for key in [k for k in state if type(k) is str and k.startswith(TEMP_PREFIX)]:
            del state[key]
        old = _private(self).get("_snapshot")
        self._snapshot = Baseline(
            maps=maps,
            fields={name: json_clone(values[name]) for name in TRACKED_FIELDS},
            history_len=len(self.history),
            writes=() if old is None else old.writes,
        )
        if history_seq is not None:
            self._history_seq = history_seq

    def _baseline_after(self, delta: SessionDelta, record_bound: int | None = None) -> Baseline:
        """The baseline once `delta` (from `changes()`, just now) is saved.

        Only what changed is copied; the rest is shared with the current baseline (which is
        never mutated). Built before the save, so edits made while it runs stay changes.
        """
        return _next_baseline(_private(self)["_snapshot"], delta, record_bound)

    def _mark_saved(self, baseline: Baseline, history_seq: int, version: int) -> None:
        """After a successful save of the delta `baseline` was built from."""
        _mark_saved(self, baseline, history_seq, version)

    def _mark_id_valid(self, session_id: str) -> None:
        """Record that `session_id` (the very string object) passed `validate_session_id`."""
        private = self.__pydantic_private__
        assert private is not None
        private["_valid_id"] = session_id

    def _tracking(self) -> tuple[str, Baseline | None, int]:
        """`(validate_session_id(self.session_id), self.baseline, self.history_seq)` in one call,
        for a save. The id check is skipped when this very string object was checked already:
        a str is immutable, so the same object is the same valid id (an assignment to
        `session_id` puts another object there, which is checked)."""
        private = _private(self)
        sid: str = self.__dict__["session_id"]
        checked = sid is private.get("_valid_id")
        if not checked:
            sid = validate_session_id(sid)
            private["_valid_id"] = sid
        return sid, private["_snapshot"], int(private["_history_seq"])

    def _mark_field_clean(self, name: str) -> None:
        """Make the current value of the tracked field `name` part of the baseline (after a touch)."""
        snap: Baseline | None = _private(self)["_snapshot"]
        if snap is None:
            self._mark_clean()
            return
        fields = snap.fields.copy()
        fields[name] = json_clone(self.__dict__[name])
        _private(self)["_snapshot"] = Baseline(snap.maps, fields, snap.history_len, snap.record_bound, snap.writes)

    @classmethod
    def _from_record(cls, values: dict[str, Any], baseline: Baseline | None, history_seq: int) -> Session | None:
        """A session from a decoded store record, without pydantic validation; None unless
        `values` has every field with exactly the type the model declares (then validate).

        `values` (the dict itself when its keys are in declaration order, and the containers in
        it) becomes the session's own; `baseline` is shared with its owner if given (it is never
        mutated), else copied from `values`.
        """
        if tuple(values) != FIELD_NAMES:
            if values.keys() != _FIELD_SET:
                return None
            values = {name: values[name] for name in FIELD_NAMES}
        if not (
            type(values["session_id"]) is str
            and type(values["created_at"]) is float
            and type(values["last_accessed_at"]) is float
            and type(values["version"]) is int
            and type(values["history"]) is list
            and ((user_id := values["user_id"]) is None or type(user_id) is str)
            and ((expiry := values["expiry_at"]) is None or type(expiry) is float)
            and ((auth := values["auth_info"]) is None or type(auth) is dict)
            and type(values["state"]) is dict
            and type(values["preferences"]) is dict
            and type(values["ai_context"]) is dict
            and type(values["feature_flags"]) is dict
            and type(values["environment"]) is dict
        ):
            return None
        for entry in values["history"]:
            if type(entry) is not dict:
                return None
        # As `model_construct` does, minus its per-field loop: the values are complete and typed.
        if baseline is None:
            # A stored record holds no `temp:` keys: its maps are the baseline as they are.
            baseline = Baseline(
                {name: json_clone(values[name]) for name in TRACKED_MAPS},
                {
                    "user_id": user_id,
                    "expiry_at": expiry,
                    "environment": json_clone(values["environment"]),
                    "auth_info": None if auth is None else json_clone(auth),
                },
                len(values["history"]),
            )
        return cls._construct(values, baseline, history_seq)

    @classmethod
    def _construct(cls, values: dict[str, Any], baseline: Baseline, history_seq: int) -> Session:
        """A session whose `__dict__` is `values`, unchecked: the caller guarantees what
        `_from_record` checks (every field, in declaration order, with exactly its declared type;
        history entries are dicts) and that `values` and its containers are the session's own."""
        session = cls.__new__(cls)
        _object_setattr(session, "__dict__", values)
        _object_setattr(session, "__pydantic_fields_set__", set(_FIELD_SET))
        _object_setattr(session, "__pydantic_extra__", None)
        _object_setattr(
            session, "__pydantic_private__", {"_snapshot": baseline, "_history_seq": history_seq, "_valid_id": None}
        )
        return session

    def _adopt(self, other: Session) -> None:
        """Take over the contents and baseline of `other` (a fresher copy), keeping `temp:` keys."""
        temp = {k: v for k, v in self.state.items() if k.startswith(TEMP_PREFIX)}
        for name in type(self).model_fields:
            setattr(self, name, getattr(other, name))
        self.state.update(temp)
        self._snapshot = other._snapshot
        self._history_seq = other._history_seq


def _delta_since(values: dict[str, Any], snap: Baseline | None) -> SessionDelta:
    """`Session.changes` of the session whose `__dict__` is `values` and baseline `snap` (for
    the hot paths, which read a session's attributes once: each costs several plain ones, as
    `BaseModel.__getattr__` keeps the interpreter from specializing them)."""
    all_sets: dict[str, dict[str, Any]] = {}
    all_deletes: dict[str, set[str]] = {}
    maps = _EMPTY_MAPS if snap is None else snap.maps
    # The four maps, unrolled (most are empty on both sides: two lookups and a test each).
    current = values["state"]
    before = maps["state"]
    if current or before:
        _map_changes("state", current, before, all_sets, all_deletes)
    current = values["preferences"]
    before = maps["preferences"]
    if current or before:
        _map_changes("preferences", current, before, all_sets, all_deletes)
    current = values["ai_context"]
    before = maps["ai_context"]
    if current or before:
        _map_changes("ai_context", current, before, all_sets, all_deletes)
    current = values["feature_flags"]
    before = maps["feature_flags"]
    if current or before:
        _map_changes("feature_flags", current, before, all_sets, all_deletes)
    if snap is None:
        return SessionDelta(
            all_sets, all_deletes, {name: values[name] for name in TRACKED_FIELDS}, list(values["history"])
        )
    # The four fields, unrolled: each unchanged one is usually the baseline's own object
    # (`user_id`, `auth_info`); `expiry_at` changes on every save.
    fields = snap.fields
    changed: dict[str, Any] = {}
    value = values["user_id"]
    old = fields["user_id"]
    if old is not value and _differs(old, value):
        changed["user_id"] = value
    value = values["expiry_at"]
    old = fields["expiry_at"]
    if old is not value and (old != value if type(value) is float and type(old) is float else _differs(old, value)):
        changed["expiry_at"] = value
    value = values["environment"]
    old = fields["environment"]
    # Two empty dicts (the usual environment) are equal without a call.
    if old is not value and (value or old or type(value) is not type(old)) and _differs(old, value):
        changed["environment"] = value
    value = values["auth_info"]
    old = fields["auth_info"]
    if old is not value and _differs(old, value):
        changed["auth_info"] = value
    return SessionDelta(all_sets, all_deletes, changed, values["history"][snap.history_len :])


def _next_baseline(snap: Baseline | None, delta: SessionDelta, record_bound: int | None) -> Baseline:
    """`Session._baseline_after` for a session whose baseline is `snap`."""
    if snap is None:
        maps: dict[str, dict[str, Any]] = {name: {} for name in TRACKED_MAPS}
    elif delta.sets or delta.deletes:
        maps = snap.maps.copy()  # the unchanged maps stay shared (never mutated)
    else:
        maps = snap.maps  # nothing changed in them: the whole dict is shared (never mutated)
    for name in {**delta.sets, **delta.deletes} if delta.sets and delta.deletes else delta.sets or delta.deletes:
        after = maps[name].copy()
        sets = delta.sets.get(name)
        if sets is not None:
            for key, value in sets.items():
                after[key] = json_clone(value) if type(value) is dict or type(value) is list else value
        deleted = delta.deletes.get(name)
        if deleted is not None:
            for key in deleted:
                del after[key]
        maps[name] = after
    if snap is None:
        fields = {name: json_clone(value) for name, value in delta.fields.items()}
    elif delta.fields:
        fields = snap.fields.copy()
        for name, value in delta.fields.items():
            fields[name] = json_clone(value)
    else:
        fields = snap.fields
    base = 0 if snap is None else snap.history_len
    return Baseline(maps, fields, base + len(delta.history), record_bound, () if snap is None else snap.writes)


def _mark_saved(session: Session, baseline: Baseline, history_seq: int, version: int) -> None:
    """`Session._mark_saved` (the store calls this once per save)."""
    # `_set_field(session, "version", version)`, inline.
    session.__dict__["version"] = version
    session.__pydantic_fields_set__.add("version")
    private = _private(session)
    private["_snapshot"] = baseline
    private["_history_seq"] = history_seq


def _stamp_access(session: Session, last_accessed_at: float, expiry_at: float | None) -> Baseline | None:
    """Set `last_accessed_at` and `expiry_at` as `_set_field` does (the manager does on every
    save); returns the session's baseline (None: never persisted)."""
    values = session.__dict__
    values["last_accessed_at"] = last_accessed_at
    values["expiry_at"] = expiry_at
    fields_set = session.__pydantic_fields_set__
    fields_set.add("last_accessed_at")
    fields_set.add("expiry_at")
    baseline: Baseline | None = _private(session)["_snapshot"]
    return baseline


def _construct_session(
    values: dict[str, Any], baseline: Baseline, history_seq: int, valid_id: str | None = None
) -> Session:
    """`Session._construct`, plus the id `valid_id` known valid (see `Session._tracking`)."""
    session = _object_new(Session)  # BaseModel defines no __new__; the class attribute lookup is slow
    _object_setattr(session, "__dict__", values)
    _object_setattr(session, "__pydantic_fields_set__", set(_FIELD_SET))
    _object_setattr(session, "__pydantic_extra__", None)
    _object_setattr(
        session, "__pydantic_private__", {"_snapshot": baseline, "_history_seq": history_seq, "_valid_id": valid_id}
    )
    return session
