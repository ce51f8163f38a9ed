"""Google ADK integration: a `BaseSessionService` on a `SessionManager`.

``AgentSessionsService(manager)`` is a drop-in for ADK's own session services
(``Runner(..., session_service=AgentSessionsService(manager))``) on every backend of this
library, with our TTLs, users, listing and exports.

How ADK's model maps onto ours (all documented, stable encodings):

- **Ids.** ADK scopes a session id by ``(app_name, user_id)``: the same id under two users is
  two sessions. Our session id is ``base64url(sha256(...))`` (43 characters, the issued shape)
  of the three (an HMAC keyed by `id_key` if given), so it is deterministic and never
  collides; the ADK names are kept in the session's ``environment["adk"]`` and every read
  checks them. ADK ids are checked (printable,
  ``app_name`` 1-100, ``user_id`` and ``session_id`` 1-128 characters) before any I/O.
- **Users.** Our user id is ``adk:<len(app_name)>:<app_name>:<user_id>``, so ``user:`` state
  (ours: shared by a user's sessions) is per ``(app_name, user_id)`` as in ADK.
- **State.** ADK ``user:k`` is our ``user:k`` of that user; ADK ``app:k`` is our
  ``app:<len(app_name)>:<app_name>:k`` (our ``app:`` scope is store-wide, ADK's is per app);
  ``temp:`` keys live in the caller's in-memory session only and are never persisted.
- **Events.** Each appended `Event` is one history entry of type ``adk_event`` (data: its id,
  timestamp and JSON text, `event_entry`); bytes anywhere in it (inline data, blobs, custom
  metadata) are kept as ``{"$b64": ...}`` and come back as bytes, so a read returns `Event`
  objects equal to the appended ones. History is capped by the
  store's ``max_history``: ADK reads see at most that many events.
- **Concurrency.** `append_event` is a `SessionManager.mutate`: concurrent appends on one
  session (tasks or processes) all land, with every ``state_delta`` merged, instead of ADK's
  stale-session error.

Lifetimes are the manager's: give ADK sessions a manager with the idle and absolute timeouts
you want (``absolute_lifetime=None`` for none). Needs ``pip install agent-sessions[adk]``.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Mapping
from typing import Any

try:
    from google.adk.errors.already_exists_error import AlreadyExistsError
    from google.adk.errors.session_not_found_error import SessionNotFoundError
    from google.adk.events.event import Event
    from google.adk.platform import time as adk_time
    from google.adk.sessions.base_session_service import BaseSessionService, GetSessionConfig, ListSessionsResponse
    from google.adk.sessions.session import Session as AdkSession
    from pydantic import BaseModel
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("agent_sessions.integrations.adk needs google-adk: pip install agent-sessions[adk]") from exc

from ..errors import AgentSessionsError, SerializationError, SessionConflict, SessionNotFound
from ..ids import id_hash
from ..listing import MAX_PAGE_SIZE, list_records
from ..manager import SessionManager
from ..session import APP_PREFIX, TEMP_PREFIX, USER_PREFIX, Session

__all__ = [
    "EVENT_ENTRY_TYPE",
    "AdkSessionExists",
    "AdkSessionNotFound",
    "AgentSessionsService",
    "InvalidAdkIdentifier",
    "adk_app_key",
    "adk_session_id",
    "adk_user_id",
    "decode_event",
    "encode_event",
    "entry_event",
    "event_entry",
]

logger = logging.getLogger(__name__)

#: The history entry type an ADK event is stored as.
EVENT_ENTRY_TYPE = "adk_event"
#: Where a session keeps its ADK names and ADK's ``last_update_time``.
ENVIRONMENT_KEY = "adk"
MAX_APP_NAME = 100
MAX_ADK_ID = 128
#: Bounds the event walkers (the codec's own `max_depth` default): no recursion without a bound.
MAX_EVENT_DEPTH = 64
#: History entries fetched per page when a read needs more than the loaded window.
PAGE_SIZE = 500

_BYTES_TAG = "$b64"
_DICT_TAG = "$dict"
_ID_DOMAIN = b"agent_sessions.adk.session.v1\x00"


class InvalidAdkIdentifier(AgentSessionsError, ValueError):
    """An ADK ``app_name``, ``user_id`` or ``session_id`` is not a bounded, printable string."""


class AdkSessionExists(SessionConflict, AlreadyExistsError):
    """`create_session` with an ADK id already in use for that ``(app_name, user_id)``.

    Both our `SessionConflict` and ADK's `AlreadyExistsError`, so either can be caught.
    """


class AdkSessionNotFound(SessionNotFound, SessionNotFoundError):
    """`append_event` on a session that does not exist (deleted, expired, never created).

    Both our `SessionNotFound` and ADK's `SessionNotFoundError`.
    """


# ---------------------------------------------------------------------- identifiers
def _check_name(value: object, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise InvalidAdkIdentifier(f"ADK {what} must be a str, got {type(value).__name__}")
    if not 0 < len(value) <= limit or not value.isprintable():
        raise InvalidAdkIdentifier(f"ADK {what} (length {len(value)}) must be 1-{limit} printable characters")
    return value


def adk_user_id(app_name: str, user_id: str) -> str:
    """Our user id for ADK's ``(app_name, user_id)``: ``adk:<len(app_name)>:<app_name>:<user_id>``."""
    app = _check_name(app_name, "app_name", MAX_APP_NAME)
    user = _check_name(user_id, "user_id", MAX_ADK_ID)
    return f"adk:{len(app)}:{app}:{user}"


def adk_session_id(app_name: str, user_id: str, session_id: str, *, key: bytes | None = None) -> str:
    """Our session id for an ADK session: base64url of a SHA-256 over the three names (43 chars).

    With `key`, an HMAC-SHA256 keyed by it: then nobody who knows (or guesses) the ADK names
    can compute our id without the key.
    """
    names = [
        _check_name(app_name, "app_name", MAX_APP_NAME),
        _check_name(user_id, "user_id", MAX_ADK_ID),
        _check_name(session_id, "session_id", MAX_ADK_ID),
    ]
    # A JSON array is an unambiguous encoding of the three strings (no separator can be forged).
    message = _ID_DOMAIN + json.dumps(names).encode("ascii")
    digest = hashlib.sha256(message).digest() if key is None else hmac.new(key, message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def adk_app_key(app_name: str, key: str) -> str:
    """Our ``app:`` scope key for ADK's ``app:<key>`` of `app_name`: ``app:<len>:<app_name>:<key>``."""
    return f"{APP_PREFIX}{len(app_name)}:{app_name}:{key}"


# ---------------------------------------------------------------------- events
def _to_json(value: Any, depth: int) -> Any:
    if depth > MAX_EVENT_DEPTH:
        raise SerializationError(f"ADK event nested deeper than {MAX_EVENT_DEPTH} levels")
    kind = type(value)
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return value
    if isinstance(value, bytes | bytearray):
        return {_BYTES_TAG: base64.b64encode(value).decode("ascii")}
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise SerializationError(f"ADK event dict keys must be str, got {type(key).__name__}")
            out[key] = _to_json(item, depth + 1)
        # A dict of the caller's that looks like one of our tags is wrapped, so it reads back as itself.
        return {_DICT_TAG: out} if len(out) == 1 and (_BYTES_TAG in out or _DICT_TAG in out) else out
    if isinstance(value, list | tuple | set | frozenset):
        return [_to_json(item, depth + 1) for item in value]
    if isinstance(value, enum.Enum):
        return _to_json(value.value, depth + 1)
    if isinstance(value, BaseModel):
        return _to_json(value.model_dump(mode="python", exclude_none=True), depth + 1)
    if isinstance(value, str | int | float):  # subclasses of the JSON scalars
        return value
    raise SerializationError(f"ADK event holds a {kind.__name__}, which has no JSON form")


def _from_json(value: Any, depth: int) -> Any:
    if depth > MAX_EVENT_DEPTH:
        raise SerializationError(f"stored ADK event nested deeper than {MAX_EVENT_DEPTH} levels")
    if type(value) is dict:
        if len(value) == 1:
            if _BYTES_TAG in value:
                try:
                    return base64.b64decode(value[_BYTES_TAG], validate=True)
                except (ValueError, TypeError) as exc:
                    raise SerializationError("a stored ADK event holds corrupt base64 bytes") from exc
            if _DICT_TAG in value:
                inner = value[_DICT_TAG]
                if type(inner) is not dict:
                    raise SerializationError("a stored ADK event holds a corrupt wrapped dict")
                return {k: _from_json(v, depth + 1) for k, v in inner.items()}
        return {k: _from_json(v, depth + 1) for k, v in value.items()}
    if type(value) is list:
        return [_from_json(item, depth + 1) for item in value]
    return value


def encode_event(event: Event) -> dict[str, Any]:
    """The strict-JSON form of an ADK `Event` (bytes tagged as base64); `decode_event` inverts it."""
    encoded = _to_json(event.model_dump(mode="python", exclude_none=True), 0)
    assert type(encoded) is dict
    return encoded


def event_entry(event: Event) -> dict[str, Any]:
    """The history entry data of an event: its id, timestamp and `encode_event` form as JSON text.

    Text, not a nested object: a loaded history window then costs a string per event (no walk,
    no copy of its tree), and only the events a read returns are parsed.
    """
    try:
        text = json.dumps(encode_event(event), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:
        raise SerializationError(f"ADK event has no strict JSON form: {exc}") from exc
    return {"id": event.id, "timestamp": float(event.timestamp), "event": text}


def entry_event(data: dict[str, Any]) -> Event:
    """The `Event` of a history entry `event_entry` made; `SerializationError` if it is corrupt."""
    text = data.get("event")
    if type(text) is not str:
        raise SerializationError("a stored ADK event entry has no event text")
    try:
        encoded = json.loads(text)
    except ValueError as exc:
        raise SerializationError("a stored ADK event is not valid JSON") from exc
    if type(encoded) is not dict:
        raise SerializationError("a stored ADK event is not a JSON object")
    return decode_event(encoded)


def decode_event(data: dict[str, Any]) -> Event:
    """The `Event` `encode_event` produced `data` from; `SerializationError` if it is corrupt."""
    try:
        return Event.model_validate(_from_json(data, 0))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise SerializationError("a stored ADK event does not validate as an Event") from exc


# ---------------------------------------------------------------------- the service
class AgentSessionsService(BaseSessionService):
    """ADK session service on a `SessionManager` (every backend; see the module docstring).

    `list_sessions` of one user pages through that user's sessions (`listing.list_records`:
    without history, as ADK lists sessions without events); without a `user_id` it pages through every session of the
    store (ADK's own services read every row of the app too). `get_session` honours
    `GetSessionConfig` from the history window the load already brings, paging older events
    only when more are asked for.
    """

    def __init__(self, manager: SessionManager, *, id_key: bytes | str | None = None) -> None:
        """`id_key`: a secret shared by every process on the store, which keys the id derivation
        (`adk_session_id`). Set it when the store also serves sessions by cookie or header:
        ADK ids are often guessable ("session1"), and without a key our id follows from them."""
        self.manager = manager
        self._id_key = id_key.encode("utf-8") if isinstance(id_key, str) else id_key

    def session_id_for(self, app_name: str, user_id: str, session_id: str) -> str:
        """Our session id for an ADK session (checks the names before any I/O)."""
        return adk_session_id(app_name, user_id, session_id, key=self._id_key)

    # ------------------------------------------------------------------ create / read
    async def create_session(
        self,
        *,
        app_name: str,
        user_id: str,
        state: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> AdkSession:
        """Create a session; `AdkSessionExists` (an ADK `AlreadyExistsError`) if the id is taken.

        ``app:`` and ``user:`` keys of `state` go to the app's and the user's scopes, ``temp:``
        keys are dropped, the rest is the session's own state.
        """
        adk_id = str(uuid.uuid4()) if session_id is None else session_id
        sid = self.session_id_for(app_name, user_id, adk_id)
        uid = adk_user_id(app_name, user_id)
        data = _ours(app_name, state or {})
        session = await self.manager.new_session(uid, data, session_id=sid)
        now = adk_time.get_time()
        session.environment[ENVIRONMENT_KEY] = _meta(app_name, user_id, adk_id, now)
        try:
            await self.manager.update_session(session)
        except SessionConflict as exc:
            raise AdkSessionExists(f"Session with id {adk_id} already exists.") from exc
        return _adk_session(session, app_name, user_id, adk_id, [])

    async def get_session(
        self,
        *,
        app_name: str,
        user_id: str,
        session_id: str,
        config: GetSessionConfig | None = None,
    ) -> AdkSession | None:
        """The session with its events (filtered by `config`), or None if it does not exist."""
        sid = self.session_id_for(app_name, user_id, session_id)
        session = await self.manager.get_session(sid)
        if session is None or not _owned(session, app_name, user_id, session_id):
            return None
        events = await self._events(session, config)
        return _adk_session(session, app_name, user_id, session_id, events)

    async def _events(self, session: Session, config: GetSessionConfig | None) -> list[Event]:
        limit = None if config is None else config.num_recent_events
        after = None if config is None else config.after_timestamp
        if limit == 0:
            return []
        newest_first: list[dict[str, Any]] = []

        def take(entries: list[dict[str, Any]]) -> bool:
            """Collect events newest first; True once the filters say no older one is wanted."""
            for entry in reversed(entries):
                if entry.get("type") != EVENT_ENTRY_TYPE:
                    continue
                data = entry.get("data")
                if type(data) is not dict:
                    raise SerializationError("a stored ADK event entry has no data")
                if after is not None and not data.get("timestamp", 0.0) >= after:
                    return True
                newest_first.append(data)
                if limit is not None and len(newest_first) >= limit:
                    return True
            return False

        window = session.history
        done = take(window)
        # The load brought the newest `history_window` entries; older ones are paged only if needed.
        if not done and window and len(window) >= self.manager.store.history_window:
            before: int | None = session.history_seq - len(window) + 1
            while not done and before is not None and before > 1:
                wanted = PAGE_SIZE if limit is None else max(limit - len(newest_first), 1)
                page = await self.manager.get_history(session.session_id, limit=min(wanted, PAGE_SIZE), before=before)
                done = take(page.entries)
                before = page.next_before
        return [entry_event(data) for data in reversed(newest_first)]

    async def list_sessions(self, *, app_name: str, user_id: str | None = None) -> ListSessionsResponse:
        """The sessions of a user (or of every user of the app), without events, oldest update first.

        Pages through the store's listing (`agent_sessions.listing.list_records`: keyset, the
        largest pages, no history): a user's sessions from the user's index; without `user_id`,
        every session of the store, as ADK's own services read every row of the app.
        """
        uid = adk_user_id(app_name, user_id) if user_id is not None else None
        _check_name(app_name, "app_name", MAX_APP_NAME)
        found: list[tuple[Any, str, str, dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            # Plain decoded fields, not tracked `Session`s: building those costs as much again.
            page = await list_records(self.manager.store, uid, limit=MAX_PAGE_SIZE, cursor=cursor)
            for record in page.records:
                meta = record["environment"].get(ENVIRONMENT_KEY)
                if type(meta) is not dict or meta.get("app_name") != app_name:
                    continue
                owner, adk_id = meta.get("user_id"), meta.get("session_id")
                if type(owner) is not str or type(adk_id) is not str or (user_id is not None and owner != user_id):
                    continue
                found.append((meta.get("last_update_time"), owner, adk_id, record["state"]))
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        found.sort(key=lambda item: item[:3])  # ADK's order: update time, user id, session id
        sessions = [
            AdkSession(
                id=adk_id,
                app_name=app_name,
                user_id=owner,
                state=_adk_state(state, app_name),
                events=[],
                last_update_time=updated,
            )
            for updated, owner, adk_id, state in found
        ]
        return ListSessionsResponse(sessions=sessions)

    async def delete_session(self, *, app_name: str, user_id: str, session_id: str) -> None:
        """Delete the session and its events; deleting a missing session is not an error."""
        await self.manager.delete_session(self.session_id_for(app_name, user_id, session_id))

    async def get_user_state(self, *, app_name: str, user_id: str) -> dict[str, Any]:
        """The ``user:`` state of ``(app_name, user_id)``, keys without the prefix."""
        scopes = await self.manager.store.load_scopes(adk_user_id(app_name, user_id))
        return {k[len(USER_PREFIX) :]: v for k, v in scopes.state.items() if k.startswith(USER_PREFIX)}

    # ------------------------------------------------------------------ write
    async def append_event(self, session: AdkSession, event: Event) -> Event:
        """Persist `event` and apply its ``state_delta``; concurrent appends merge, never go stale.

        A partial event is returned untouched. ``temp:`` keys reach `session.state` but are not
        stored. An equal re-delivery of one of the recent events is not stored twice. Raises
        `AdkSessionNotFound` (an ADK `SessionNotFoundError`) if the session is gone.
        """
        if event.partial:
            return event
        _keep_temp_state_in_memory(session, event)
        app_name, user_id, adk_id = session.app_name, session.user_id, session.id
        sid = self.session_id_for(app_name, user_id, adk_id)
        payload = event_entry(event)
        delta = _ours(app_name, dict(event.actions.state_delta) if event.actions else {})
        duplicate = False

        def apply(stored: Session) -> None:
            nonlocal duplicate
            if not _owned(stored, app_name, user_id, adk_id):
                raise AdkSessionNotFound(f"Session {adk_id} not found.")
            duplicate = any(
                entry.get("type") == EVENT_ENTRY_TYPE and entry.get("data") == payload for entry in stored.history
            )
            if duplicate:
                return
            for key, value in delta.items():
                stored.set(key, value)
            stored.add_history_entry(EVENT_ENTRY_TYPE, payload)
            stored.environment[ENVIRONMENT_KEY] = _meta(app_name, user_id, adk_id, event.timestamp)

        try:
            await self.manager.mutate(sid, apply)
        except AdkSessionNotFound:
            raise
        except SessionNotFound as exc:
            raise AdkSessionNotFound(f"Session {adk_id} not found.") from exc
        if duplicate:
            logger.debug("ADK event re-delivered to session %s; stored once", id_hash(sid))
            return event
        session.last_update_time = event.timestamp
        # ADK's own bookkeeping: the (now temp-free) delta into `session.state`, the event appended.
        return await super().append_event(session, event)


# ---------------------------------------------------------------------- helpers
def _keep_temp_state_in_memory(session: AdkSession, event: Event) -> None:
    """ADK's ``temp:`` semantics: the event's ``temp:`` state reaches `session.state` (for the
    rest of the invocation) and leaves the event's delta, so it is never persisted."""
    if not event.actions or not event.actions.state_delta:
        return
    delta = event.actions.state_delta
    for key, value in delta.items():
        if key.startswith(TEMP_PREFIX):
            session.state[key] = value
    event.actions.state_delta = {k: v for k, v in delta.items() if not k.startswith(TEMP_PREFIX)}


def _meta(app_name: str, user_id: str, session_id: str, last_update_time: float) -> dict[str, Any]:
    return {
        "app_name": app_name,
        "user_id": user_id,
        "session_id": session_id,
        "last_update_time": float(last_update_time),
    }


def _owned(session: Session, app_name: str, user_id: object, session_id: object) -> bool:
    """True if our session is the ADK session named (guards against any id clash)."""
    meta = session.environment.get(ENVIRONMENT_KEY)
    return (
        type(meta) is dict
        and meta.get("app_name") == app_name
        and meta.get("user_id") == user_id
        and meta.get("session_id") == session_id
    )


def _ours(app_name: str, state: Mapping[str, Any]) -> dict[str, Any]:
    """ADK state keys as ours: ``app:k`` -> the app's key, ``user:k`` unchanged, ``temp:`` dropped."""
    out: dict[str, Any] = {}
    for key, value in state.items():
        if not isinstance(key, str):
            raise SerializationError(f"ADK state keys must be str, got {type(key).__name__}")
        if key.startswith(APP_PREFIX):
            out[adk_app_key(app_name, key[len(APP_PREFIX) :])] = value
        elif not key.startswith(TEMP_PREFIX):
            out[key] = value
    return out


def _adk_state(ours: Mapping[str, Any], app_name: str) -> dict[str, Any]:
    """ADK's view of our state: own keys, the user's ``user:`` keys and this app's ``app:`` keys."""
    app_prefix = adk_app_key(app_name, "")
    state: dict[str, Any] = {}
    for key, value in ours.items():
        if key.startswith(APP_PREFIX):
            if key.startswith(app_prefix):
                state[APP_PREFIX + key[len(app_prefix) :]] = value
        else:
            state[key] = value
    return state


def _adk_session(session: Session, app_name: str, user_id: str, session_id: str, events: list[Event]) -> AdkSession:
    """The ADK view: own state, the user's ``user:`` keys and this app's ``app:`` keys."""
    meta = session.environment[ENVIRONMENT_KEY]
    return AdkSession(
        id=session_id,
        app_name=app_name,
        user_id=user_id,
        state=_adk_state(session.state, app_name),
        events=events,
        last_update_time=meta["last_update_time"],
    )
