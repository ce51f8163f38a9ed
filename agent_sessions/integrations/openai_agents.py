"""OpenAI Agents SDK integration: an Agents SDK `Session` kept in one of our sessions' history.

`AgentsSession` implements the SDK's `Session` protocol (`agents.memory.session.Session`:
`session_id`, `session_settings`, `get_items`, `add_items`, `pop_item`, `clear_session`), so
``Runner.run(agent, input, session=AgentsSession(...))`` persists the conversation on every
backend. Unlike the SDK's own SQL and Redis sessions, it lives in a session of ours, created
through the `SessionManager`: it has a user (and the per-user index and listing), idle and
absolute TTLs renewed by every write, and state and preferences beside the items.

How the items are stored. Each item is one history entry of type ``openai_agents.item`` whose
`data` is the item itself. History is append-only, so removals are entries too:

- `pop_item` appends an ``openai_agents.pop`` tombstone, which cancels the newest live item
  before it (stack order: reading from the newest entry back, each tombstone hides the next
  live item it meets);
- `clear_session` appends an ``openai_agents.clear`` marker: nothing older is an item any more.

Every write is a compare-and-set save: `add_items` goes through `SessionManager.update_session`
(on a conflict its appends are replayed onto the newer copy), `pop_item` and `clear_session`
through `SessionManager.mutate` (re-run on conflict). So two runs adding items to one session
concurrently lose none, and a pop decides which item it removes from the very history its save
is checked against. Other history entries (the provider's ``context`` entries, your own) are
ignored by `get_items`.

The history cap and long conversations. A store keeps at most `max_history` entries per
session (default 1000; set it on the store), dropping the oldest; items, tombstones and other
entries all count. A conversation longer than that loses its oldest items, and
``session_settings=SessionSettings(limit=N)`` bounds what a run sends to the model. Whichever
cut applies, a tool call is never separated from its result: an output item
(``function_call_output`` and the other ``*_output`` types carrying a ``call_id``) whose call is
not among the items returned is dropped, so `get_items(limit)` may return fewer than `limit`
items but never a result without its call. A cap can only cut the older side, so a call is
never left behind by the cap without its result.

Needs ``pip install agent-sessions[openai-agents]``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Self, cast

try:
    from agents.memory.session_settings import SessionSettings, coerce_session_settings, resolve_session_limit
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agent_sessions.integrations.openai_agents needs the OpenAI Agents SDK: "
        "pip install agent-sessions[openai-agents]"
    ) from exc

from ..errors import AgentSessionsError, SerializationError, SessionNotFound
from ..ids import id_hash, validate_session_id
from ..manager import SessionManager
from ..session import Session

if TYPE_CHECKING:
    from agents.items import TResponseInputItem
    from agents.memory.session import Session as AgentsSessionProtocol

__all__ = [
    "CLEAR_TYPE",
    "ITEM_TYPE",
    "POP_TYPE",
    "AgentsSession",
    "InvalidSessionSettings",
    "drop_orphan_outputs",
]

logger = logging.getLogger(__name__)

#: History entry type of one Agents SDK item (`data` is the item).
ITEM_TYPE: Final = "openai_agents.item"
#: History entry type of a `pop_item` tombstone: it cancels the newest live item before it.
POP_TYPE: Final = "openai_agents.pop"
#: History entry type of a `clear_session` marker: no older entry is an item.
CLEAR_TYPE: Final = "openai_agents.clear"

#: Entries read per history page when all items are asked for.
DEFAULT_PAGE_SIZE: Final = 200
#: Extra entries read with a limited page, so a few tombstones or other entries beside the
#: items do not cost a second round trip.
_PAGE_SLACK: Final = 8


class InvalidSessionSettings(AgentSessionsError, ValueError):
    """A `limit` (of `get_items` or in `session_settings`) is negative, `session_settings` is not
    a `SessionSettings` or a dict of its fields, or `page_size` is not positive."""


def _is_output(item: Mapping[str, Any]) -> bool:
    kind = item.get("type")
    return isinstance(kind, str) and kind.endswith("_output") and "call_id" in item


def drop_orphan_outputs(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`items` without the tool results whose call is not among them (a cut never splits a pair).

    A result is an item whose type ends in ``_output`` and which has a ``call_id``; its call is
    an earlier item of the list with the same ``call_id`` that is not itself a result.
    """
    calls: set[Any] = set()
    kept: list[dict[str, Any]] = []
    for item in items:
        if _is_output(item):
            if item["call_id"] not in calls:
                continue
        elif "call_id" in item:
            calls.add(item["call_id"])
        kept.append(item)
    return kept


def _settings(value: SessionSettings | dict[str, Any] | None) -> SessionSettings:
    """`value` as the SDK's `SessionSettings` (its own coercion), checked; default: no limit."""
    if value is None:
        return SessionSettings()
    try:
        settings = coerce_session_settings(value)
    except (TypeError, ValueError) as exc:
        raise InvalidSessionSettings(f"session_settings: {exc}") from exc
    if settings.limit is not None and settings.limit < 0:
        raise InvalidSessionSettings(f"session_settings.limit must be >= 0 or None, got {settings.limit}")
    return settings


class AgentsSession:
    """An OpenAI Agents SDK `Session` over one of our sessions (see the module docstring).

    Build one with `create` (a new session, optionally for a user) or `open` (an existing
    one); the constructor only validates the id and does no I/O. `get_items` on a session
    that expired or was deleted returns no items, `pop_item` None and `clear_session` does
    nothing; `add_items` raises `SessionNotFound` (a gone session is never re-created).
    """

    session_id: str
    session_settings: SessionSettings | None

    def __init__(
        self,
        manager: SessionManager,
        session_id: str,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
        page_size: int = DEFAULT_PAGE_SIZE,
    ) -> None:
        if page_size <= 0:
            raise InvalidSessionSettings(f"page_size must be > 0, got {page_size}")
        self.manager = manager
        self.session_id = validate_session_id(session_id)
        self.session_settings = _settings(session_settings)
        self.page_size = page_size
        self._loaded: Session | None = None

    def __repr__(self) -> str:
        # A session id is a bearer credential: show its short hash only.
        return f"AgentsSession(#{id_hash(self.session_id)})"

    # ------------------------------------------------------------------ construction
    @classmethod
    async def create(
        cls,
        manager: SessionManager,
        *,
        user_id: str | None = None,
        data: dict[str, Any] | None = None,
        preferences: dict[str, Any] | None = None,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> Self:
        """A new session (with a fresh id) for `user_id`, through `SessionManager.create_session`."""
        session = await manager.create_session(user_id, data, preferences=preferences)
        return cls(manager, session.session_id, session_settings=session_settings)

    @classmethod
    async def open(
        cls,
        manager: SessionManager,
        session_id: str,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> Self:
        """The existing live session `session_id`; raises `SessionNotFound` if it is gone."""
        if await manager.get_session(session_id) is None:
            raise SessionNotFound("the session does not exist or has expired")
        return cls(manager, session_id, session_settings=session_settings)

    @classmethod
    async def for_user(
        cls,
        manager: SessionManager,
        user_id: str,
        *,
        session_settings: SessionSettings | dict[str, Any] | None = None,
    ) -> list[Self]:
        """One `AgentsSession` per live session of `user_id` (through the per-user index)."""
        sessions = await manager.get_user_sessions(user_id)
        return [cls(manager, s.session_id, session_settings=session_settings) for s in sessions]

    async def load(self) -> Session:
        """Our `Session` behind the items (state, preferences, user); `SessionNotFound` if gone."""
        session = await self.manager.get_session(self.session_id)
        if session is None:
            raise SessionNotFound("the session does not exist or has expired")
        return session

    # ------------------------------------------------------------------ the Session protocol
    async def get_items(self, limit: int | None = None) -> list[TResponseInputItem]:
        """The latest `limit` items (all if None, else `session_settings.limit`), oldest first.

        One load of the session (its recent history window) answers when the window holds
        enough items; older pages are read as far as needed, so any limit is honoured. Tool
        results whose call falls outside the returned items are dropped (`drop_orphan_outputs`).
        """
        wanted = resolve_session_limit(limit, self.session_settings)
        if wanted is not None and wanted < 0:
            raise InvalidSessionSettings(f"limit must be >= 0 or None, got {wanted}")
        if wanted == 0:
            return []
        session = await self.manager.get_session(self.session_id)
        # The next `add_items` appends to this copy instead of loading the session again.
        self._loaded = session
        if session is None:
            return []
        items = drop_orphan_outputs(await self._live_items(session, wanted))
        return cast("list[TResponseInputItem]", items)

    async def add_items(self, items: list[TResponseInputItem]) -> None:
        """Append `items` in one compare-and-set save (all or none); renews the session's TTL.

        The save is `SessionManager.update_session` on the session the last `get_items` loaded
        (else on a fresh load): if anyone wrote meanwhile, the appends are replayed onto the
        newer copy, so concurrent writers lose no item. (A turn of `Runner.run` is then one load
        and one save, 2 round trips instead of 3: on Redis, W1 c1 went from 0.75x to 1.96x the
        SDK's `RedisSession` in `benchmarks/peers_openai_agents.py`.)
        Raises `SerializationError` for an item that is not a strict-JSON dict (nothing is
        written), `SessionNotFound` if the session is gone.
        """
        if not items:
            return
        checked: list[dict[str, Any]] = []
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                raise SerializationError(f"items[{index}] must be a dict (an Agents SDK input item)")
            checked.append(cast("dict[str, Any]", item))
        # Taken, not shared: a concurrent call on this object loads its own copy.
        session, self._loaded = self._loaded, None
        if session is None:
            session = await self.load()
        for data in checked:
            session.add_history_entry(ITEM_TYPE, data)  # SerializationError: the copy is dropped
        await self.manager.update_session(session)
        self._loaded = session
        logger.debug("added %d items to session %s", len(checked), id_hash(self.session_id))

    async def pop_item(self) -> TResponseInputItem | None:
        """Remove and return the newest item (None if there is none), race-free.

        The item is found and its tombstone written under one compare-and-set
        (`SessionManager.mutate`): if anything was written to the session meanwhile, the pop
        runs again on the new history.
        """
        popped: list[dict[str, Any]] = []

        async def pop(session: Session) -> None:
            popped.clear()  # a re-run after a conflict decides afresh
            newest = await self._live_items(session, 1)
            if newest:
                popped.append(newest[0])
                session.add_history_entry(POP_TYPE, {})

        self._loaded = None
        try:
            await self.manager.mutate(self.session_id, pop)
        except SessionNotFound:
            # A session that is gone has no items: the protocol's "empty" answer.
            return None
        return cast("TResponseInputItem", popped[0]) if popped else None

    async def clear_session(self) -> None:
        """Forget every item (a marker entry; state and preferences are kept)."""

        def clear(session: Session) -> None:
            session.add_history_entry(CLEAR_TYPE, {})

        self._loaded = None
        try:
            await self.manager.mutate(self.session_id, clear)
        except SessionNotFound:
            # Nothing to clear: a session that is gone has no items.
            return

    # ------------------------------------------------------------------ reading
    async def _live_items(self, session: Session, wanted: int | None) -> list[dict[str, Any]]:
        """The newest `wanted` live items (all if None), oldest first, tombstones applied.

        Starts from `session`'s loaded window (freshly loaded, nothing appended yet), then
        reads older pages of its history while more are wanted.
        """
        scan = _Scan(wanted)
        window = session.history
        if scan.feed(window) or len(window) < self.manager.store.history_window:
            return scan.items()
        # The window is the newest rows, numbered up to `history_seq` without gaps: the
        # entries older than it are those before the window's first seq.
        before: int | None = session.history_seq - len(window) + 1
        while before is not None:
            size = self.page_size if wanted is None else wanted - len(scan.newest_first) + _PAGE_SLACK
            page = await self.manager.get_history(self.session_id, limit=size, before=before)
            if scan.feed(page.entries):
                break
            before = page.next_before
        return scan.items()


class _Scan:
    """Reads history entries from the newest back, applying tombstones and clear markers."""

    __slots__ = ("newest_first", "pending_pops", "wanted")

    def __init__(self, wanted: int | None) -> None:
        self.wanted = wanted
        self.newest_first: list[dict[str, Any]] = []
        self.pending_pops = 0

    def feed(self, entries: list[dict[str, Any]]) -> bool:
        """Take `entries` (oldest first, each older than those fed before); True when done."""
        for entry in reversed(entries):
            kind = entry.get("type")
            if kind == ITEM_TYPE:
                if self.pending_pops:
                    self.pending_pops -= 1
                    continue
                item = entry["data"]
                if not isinstance(item, dict):
                    raise SerializationError(f"a stored {ITEM_TYPE} entry is not a dict")
                self.newest_first.append(item)
                if self.wanted is not None and len(self.newest_first) >= self.wanted:
                    return True
            elif kind == POP_TYPE:
                self.pending_pops += 1
            elif kind == CLEAR_TYPE:
                return True
        return False

    def items(self) -> list[dict[str, Any]]:
        """The live items found, oldest first."""
        return self.newest_first[::-1]


if TYPE_CHECKING:

    def _implements_protocol(session: AgentsSession) -> AgentsSessionProtocol:
        # mypy proves here that `AgentsSession` satisfies the SDK's `Session` protocol.
        return session
