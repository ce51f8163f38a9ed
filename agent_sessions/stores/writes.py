"""Write preparation: a `Session` checked and encoded into the `SessionWrite` a backend applies.

Everything a save (or a restore) checks before any I/O lives here: the id, version and history
counters, strict JSON of the delta, `max_session_bytes` per record and value, `max_depth`, and
the bound on how far a save may grow a scope (`max_scope_bytes`, against what the saving session
holds of it). `SessionStore.prepare_write`, `set`, `restore`, `restore_many` and `write_scopes`
call these with the store itself as the `WriteLimits` (its public options, read at each call).
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

from .. import records
from ..codec import MAX_COUNTER, Codec
from ..errors import SerializationError, SessionNotFound
from ..ids import new_write_id, validate_session_id, validate_user_id
from ..records import PREF_PREFIX
from ..search import entry_text
from ..session import Session
from ..tracking import WRITE_LINEAGE, Baseline, baseline_after, diff
from .primitives import HistoryRow, ScopeChange, ScopeChanges, SessionWrite

__all__ = [
    "WriteLimits",
    "encode_record",
    "encode_value",
    "history_row",
    "prepare_write",
    "restore_write",
]


class WriteLimits(Protocol):
    """What preparing a write reads from a store: its codec and limits (`SessionStore`'s options)."""

    codec: Codec
    max_session_bytes: int
    max_scope_bytes: int
    max_depth: int
    max_history: int
    index_history: bool
    indexes_history_text: bool


def encode_value(limits: WriteLimits, value: Any, where: str, *, checked: bool = False) -> bytes:
    """Encode one value, at most `max_session_bytes`; `checked`: `check_json` passed on it."""
    return records.encode_value(
        limits.codec, value, where, max_bytes=limits.max_session_bytes, max_depth=limits.max_depth, checked=checked
    )


def encode_record(limits: WriteLimits, session: Session, writes: tuple[str, ...], *, checked: bool) -> bytes:
    """The record bytes of `session` with the write lineage `writes`, at most `max_session_bytes`."""
    return records.encode_record(
        limits.codec,
        session,
        writes=writes,
        max_bytes=limits.max_session_bytes,
        max_depth=limits.max_depth,
        checked=checked,
    )


def history_row(limits: WriteLimits, entry: Any, seq: int, session_id: str) -> HistoryRow:
    """The checked, encoded history row of `entry` numbered `seq` (with its searchable text
    when the store indexes history)."""
    stamp, kind = records.check_history_entry(entry, seq, limits.max_depth)
    payload = encode_value(limits, entry, f"history entry {seq}", checked=True)
    indexed = limits.indexes_history_text and limits.index_history
    return HistoryRow(seq, stamp, kind, payload, entry_text(entry) if indexed else "")


def prepare_write(limits: WriteLimits, session: Session) -> tuple[SessionWrite, Baseline]:
    """The `SessionWrite` of a save of `session` and its baseline once it lands (see
    `SessionStore.prepare_write`). Only the delta is checked for strict JSON."""
    sid = validate_session_id(session.session_id)
    user_id = session.user_id
    if user_id is not None:
        user_id = validate_user_id(user_id)
    version = session.version
    if type(version) is not int or not 0 <= version < MAX_COUNTER:
        raise SerializationError(f"version must be an int from 0 to 2**53 - 2 to save, got {version!r:.40}")
    values = session.__dict__
    records.check_shape(values)
    baseline = session.baseline
    delta = diff(values, baseline)
    records.check_delta(delta, limits.max_depth)
    write_id = new_write_id()
    writes = (write_id,) if baseline is None else (write_id, *baseline.writes[: WRITE_LINEAGE - 1])
    record = encode_record(limits, session, writes, checked=True)
    seq = session.history_seq
    rows = []
    for entry in delta.history:
        seq += 1
        rows.append(history_row(limits, entry, seq, sid))
    if seq > MAX_COUNTER:
        raise SerializationError("the history sequence number would pass 2**53 - 1")

    scopes = ScopeChanges(user_id)
    for key, value in delta.sets.get("state", {}).items():
        if records.is_scoped_key(key):
            change = scopes.route(key)  # before encoding: a key without its scope is a `ScopeError`
            change.sets[key] = encode_value(limits, value, f"state[{key!r}]", checked=True)
    for key in delta.deletes.get("state", ()):
        if records.is_scoped_key(key):
            scopes.route(key).deletes.append(key)
    if user_id is not None:
        for key, value in delta.sets.get("preferences", {}).items():
            records.check_column_text(key, "preference key")
            scopes.user.sets[PREF_PREFIX + key] = encode_value(limits, value, f"preferences[{key!r}]", checked=True)
        scopes.user.deletes.extend(PREF_PREFIX + key for key in delta.deletes.get("preferences", ()))
    for change in (scopes.user, scopes.app):
        if change.sets:
            _check_scope_view(limits, change, values, baseline)

    write = SessionWrite(
        session_id=sid,
        user_id=user_id,
        previous_user_id=baseline.fields["user_id"] if baseline is not None and version > 0 else None,
        expected_version=version,
        new_version=version + 1,
        created_at=values["created_at"],
        last_accessed_at=values["last_accessed_at"],
        expiry_at=values["expiry_at"],
        record=record,
        history=rows,
        history_seq=seq,
        max_history=limits.max_history,
        user_scope=None if scopes.user.is_empty() else scopes.user,
        app_scope=None if scopes.app.is_empty() else scopes.app,
        write_id=write_id,
    )
    return write, baseline_after(baseline, delta, writes)


def restore_write(
    limits: WriteLimits, session: Session, history: list[dict[str, Any]], history_seq: int | None, now: float
) -> SessionWrite:
    """The insert of `session` as exported (its version, its last `max_history` entries of
    `history`), for `SessionStore.restore` / `restore_many`."""
    sid = validate_session_id(session.session_id)
    if session.expiry_at is not None and session.expiry_at <= now:
        raise SessionNotFound("the session has expired; it is not restored")
    kept = history[-limits.max_history :]
    last_seq = history_seq if history_seq is not None else len(history)
    if type(last_seq) is not int or not len(history) <= last_seq <= MAX_COUNTER:
        raise SerializationError("history_seq must be an int from the number of history entries to 2**53 - 1")
    version = session.version
    if type(version) is not int or not 0 <= version <= MAX_COUNTER:
        raise SerializationError("version must be an int from 0 to 2**53 - 1")
    first_seq = last_seq - len(kept) + 1
    rows = [history_row(limits, entry, first_seq + i, sid) for i, entry in enumerate(kept)]
    return SessionWrite(
        session_id=sid,
        user_id=session.user_id,
        previous_user_id=None,
        expected_version=0,
        new_version=max(session.version, 1),
        created_at=session.created_at,
        last_accessed_at=session.last_accessed_at,
        expiry_at=session.expiry_at,
        record=encode_record(limits, session, (), checked=False),
        history=rows,
        history_seq=last_seq,
        max_history=limits.max_history,
    )


def _check_scope_view(
    limits: WriteLimits, change: ScopeChange, values: dict[str, Any], baseline: Baseline | None
) -> None:
    """Raise `SessionTooLarge` if a save's `change` grows its scope past `max_scope_bytes`.

    Every new session of a user loads the whole user scope (and the app scope), so it is
    bounded like a session is: by what the saving session holds of it (loaded with it). No
    extra read: keys another session added since this one loaded count from its next load.
    """
    after = _scope_view_size(limits, change.kind, values["state"], values["preferences"], change.sets)
    if after <= limits.max_scope_bytes:
        return
    before = 0
    if baseline is not None:
        before = _scope_view_size(limits, change.kind, baseline.maps["state"], baseline.maps["preferences"], {})
    records.check_scope_growth(change.kind, before, after, limits.max_scope_bytes)


def _scope_view_size(
    limits: WriteLimits,
    kind: Literal["user", "app"],
    state: dict[str, Any],
    prefs: dict[str, Any],
    encoded: dict[str, bytes],
) -> int:
    return records.scope_view_size(
        limits.codec,
        records.scope_view(kind, state, prefs),
        encoded,
        max_scope_bytes=limits.max_scope_bytes,
        max_bytes=limits.max_session_bytes,
        max_depth=limits.max_depth,
    )
