"""Change tracking: what a session looked like when persisted (`Baseline`), and what changed since
(`SessionDelta`).

A session is compared with its baseline key by key in the tracked maps (`state`, `preferences`,
`ai_context`, `feature_flags`) and value by value in the tracked fields (`user_id`, `expiry_at`,
`environment`, `auth_info`); history is append-only, so its delta is the entries past the
baseline's length. `diff` is the one loop that compares; `apply_delta` the one loop that
replays a delta, onto a session's maps (a conflict's fresh copy) or onto a baseline's (the
baseline after a save). ``temp:`` state keys are never part of either.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .codec import json_clone

__all__ = [
    "TEMP_PREFIX",
    "TRACKED_FIELDS",
    "TRACKED_MAPS",
    "WRITE_LINEAGE",
    "Baseline",
    "PendingWrite",
    "SessionDelta",
    "apply_delta",
    "baseline_after",
    "baseline_of",
    "diff",
    "same_json",
]

#: State keys with this prefix live in one `Session` object only: never tracked nor persisted.
TEMP_PREFIX: Final = "temp:"

#: The dict-valued fields whose changes are tracked per key.
TRACKED_MAPS: Final = ("state", "preferences", "ai_context", "feature_flags")
#: Top-level fields whose changes are tracked as whole-value replacements (`last_accessed_at` is
#: not: the manager sets it on every save).
TRACKED_FIELDS: Final = ("user_id", "expiry_at", "environment", "auth_info")

#: How many write ids a record keeps (see `Baseline.writes`): a save reported as failed is
#: recognised as applied while fewer than this many saves landed on top of it since.
WRITE_LINEAGE: Final = 16

_MISSING: Final[Any] = object()
_NO_MAP: Final[dict[str, Any]] = {}


def same_json(a: Any, b: Any) -> bool:
    """Equal as JSON values: `1 == True` in Python, but a change of type is a change.

    An explicit stack, not recursion: the live session may hold a value of any depth (checked
    only when it is saved). Anything but a JSON type counts as changed, without calling its
    `==`: the save then checks it, and refuses it with `SerializationError`."""
    if a is b:  # an unchanged value is usually the very object of the baseline's copy or a scalar
        return True
    stack = [(a, b)]
    while stack:
        a, b = stack.pop()
        if a is b:
            continue
        kind = type(a)
        if kind is not type(b):
            return False
        if kind is dict:
            if len(a) != len(b):
                return False
            for key, value in a.items():
                other = b.get(key, _MISSING)
                if other is _MISSING:
                    return False
                stack.append((value, other))
        elif kind is list:
            if len(a) != len(b):
                return False
            stack.extend(zip(a, b, strict=True))
        elif kind is str or kind is int or kind is float or kind is bool:
            if a != b:
                return False
        elif a is not None:
            return False
    return True


@dataclass(slots=True)
class SessionDelta:
    """What changed in a session since its baseline; `apply` replays it onto another copy.

    `sets` / `deletes`: per tracked map, the keys set (to the session's own values, not
    copies) or deleted; `fields`: the tracked fields replaced; `history`: entries appended.
    """

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
            extra = {k: v for k, v in values.items() if k not in before or not same_json(before[k], v)}
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
            if name not in sent.fields or not same_json(sent.fields[name], value)
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

    def apply(self, session: Any) -> None:
        """Replay this delta onto `session` (a fresher copy of the same session)."""
        apply_delta(self, {name: getattr(session, name) for name in TRACKED_MAPS})
        for name, value in self.fields.items():
            setattr(session, name, json_clone(value))
        session.history.extend(json_clone(entry) for entry in self.history)


@dataclass(slots=True)
class Baseline:
    """The persisted baseline change tracking compares against.

    Never mutated once built, nor are the values in it: a newer baseline is a new object, so a
    baseline (and its values) can be shared between a session and its copies. `maps` and
    `fields` hold copies of the tracked maps and fields, `history_len` how many entries of
    `Session.history` were persisted. `writes` is the record's write lineage: the ids of the
    last `WRITE_LINEAGE` saves that produced it, newest first (a retried save whose outcome
    was unknown finds its own id there: `PendingWrite`).
    """

    maps: dict[str, dict[str, Any]]
    fields: dict[str, Any]
    history_len: int
    writes: tuple[str, ...] = ()


@dataclass(slots=True)
class PendingWrite:
    """A save of a session that raised `StoreUnavailable`: it may or may not have been applied.

    `write_id` is the id the save carried (kept in the record's write lineage if it landed);
    `sent` a copy of the delta it saved. The manager keeps one on the session, so that a retry
    of the save recognises its own earlier success instead of applying the delta twice.
    """

    write_id: str
    sent: SessionDelta


def diff(values: Mapping[str, Any], baseline: Baseline | None) -> SessionDelta:
    """The delta from `baseline` (None: never persisted, so everything) to the session whose
    fields are `values`. The values in the delta are the session's own, not copies."""
    delta = SessionDelta()
    for name in TRACKED_MAPS:
        current: dict[str, Any] = values[name]
        before = _NO_MAP if baseline is None else baseline.maps[name]
        sets = {
            key: value
            for key, value in current.items()
            if not (same_json(before[key], value) if key in before else _is_temp(name, key))
        }
        if sets:
            delta.sets[name] = sets
        # A set difference only when some key of the baseline is gone (the subset test of the
        # key views builds nothing).
        if before and (type(current) is not dict or not before.keys() <= current.keys()):
            delta.deletes[name] = {key for key in before if key not in current}
    for name in TRACKED_FIELDS:
        value = values[name]
        if baseline is None or not same_json(baseline.fields[name], value):
            delta.fields[name] = value
    start = 0 if baseline is None else baseline.history_len
    delta.history = values["history"][start:]
    return delta


def _is_temp(name: str, key: Any) -> bool:
    return name == "state" and type(key) is str and key.startswith(TEMP_PREFIX)


def apply_delta(delta: SessionDelta, maps: Mapping[str, dict[str, Any]]) -> None:
    """Set and delete the keys `delta` changed in `maps` (tracked map name -> dict, changed in
    place), with copies of the delta's values."""
    for name, values in delta.sets.items():
        maps[name].update(json_clone(values))
    for name, keys in delta.deletes.items():
        target = maps[name]
        for key in keys:
            target.pop(key, None)


def baseline_of(values: Mapping[str, Any], *, writes: tuple[str, ...] = ()) -> Baseline:
    """A baseline holding copies of the tracked maps and fields of `values` as they are now
    (``temp:`` keys left out), with `writes` as its write lineage."""
    maps = {name: json_clone(values[name]) for name in TRACKED_MAPS}
    state = maps["state"]
    for key in [k for k in state if _is_temp("state", k)]:
        del state[key]
    fields = {name: json_clone(values[name]) for name in TRACKED_FIELDS}
    return Baseline(maps, fields, len(values["history"]), writes)


def baseline_after(baseline: Baseline | None, delta: SessionDelta, writes: tuple[str, ...]) -> Baseline:
    """The baseline once `delta` (`diff` against `baseline`, just now) is saved by the save
    whose write lineage is `writes`.

    Only the maps that changed are copied; the rest are shared with `baseline` (never mutated).
    Built before the save, so edits made while it runs stay changes.
    """
    if baseline is None:
        maps: dict[str, dict[str, Any]] = {name: {} for name in TRACKED_MAPS}
        fields: dict[str, Any] = {}
        history_len = 0
    else:
        maps = {
            name: (dict(m) if name in delta.sets or name in delta.deletes else m) for name, m in baseline.maps.items()
        }
        fields = dict(baseline.fields)
        history_len = baseline.history_len
    apply_delta(delta, maps)
    fields.update(json_clone(delta.fields))
    return Baseline(maps, fields, history_len + len(delta.history), writes)
