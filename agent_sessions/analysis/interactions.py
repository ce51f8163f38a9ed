"""Interactions recorded in session history, and the index recommendations are computed from.

How an interaction is recorded: a history entry of type ``"interaction"`` whose data holds
``{"item_id": str, "action": str}`` and optionally ``"weight"`` (a finite number) plus anything
else (``record_interaction`` writes one). Its weight is the explicit ``weight``, else
`ACTION_WEIGHTS` of the action (1.0 for an action not listed). A negative or zero weight (e.g.
``"dislike"``) marks the item as seen (never recommended back) without counting as a liking.

Interactions belong to the session's user (`user_key`: the ``user_id``, or ``"session:<id>"`` for
an anonymous session), so a user's sessions pool their interactions.

`InteractionIndex` holds net weights per (user, item), item popularity (distinct users with a
positive weight) and item-item cosine similarities over co-occurrence, built lazily and cached
until the index changes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from ..codec import check_json
from ..errors import SerializationError
from ..ids import id_hash
from ..manager import SessionManager
from ..session import Session
from ..stores.base import SessionStore
from .history import iter_full_history

__all__ = [
    "ACTION_WEIGHTS",
    "INTERACTION_TYPE",
    "Interaction",
    "InteractionIndex",
    "interaction_weight",
    "interactions_from_history",
    "record_interaction",
    "user_key",
]

logger = logging.getLogger(__name__)

#: History entry type of an interaction with an item.
INTERACTION_TYPE: Final = "interaction"
#: Default weight per action (an explicit ``"weight"`` in the entry wins; unknown actions weigh 1.0).
ACTION_WEIGHTS: Final[Mapping[str, float]] = MappingProxyType(
    {
        "view": 1.0,
        "click": 1.0,
        "like": 2.0,
        "add_to_cart": 2.0,
        "purchase": 3.0,
        "skip": 0.0,
        "dislike": -1.0,
    }
)
_DEFAULT_WEIGHT: Final = 1.0


@dataclass(frozen=True, slots=True)
class Interaction:
    """One interaction of a user (see `user_key`) with an item."""

    user: str
    item_id: str
    action: str
    weight: float
    timestamp: float


def user_key(session: Session) -> str:
    """Whose interactions a session holds: its `user_id`, or ``"session:<id>"`` when anonymous."""
    return session.user_id if session.user_id is not None else f"session:{session.session_id}"


def record_interaction(
    session: Session, item_id: str, action: str = "view", *, weight: float | None = None, **extra: Any
) -> None:
    """Append an ``interaction`` history entry to `session` (save it with the manager afterwards).

    `extra` keys are stored in the entry's data too (e.g. ``rating=4``); they must be strict JSON.
    """
    if not isinstance(item_id, str) or not item_id:
        raise ValueError("item_id must be a non-empty string")
    if not isinstance(action, str) or not action:
        raise ValueError("action must be a non-empty string")
    data: dict[str, Any] = {"item_id": item_id, "action": action, **extra}
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise ValueError("weight must be a finite number")
        data["weight"] = float(weight)
    check_json(data, "interaction")
    session.add_history_entry(INTERACTION_TYPE, data)


def interaction_weight(data: Mapping[str, Any]) -> float:
    """The weight of an interaction's data: explicit ``weight``, else by action."""
    weight = data.get("weight")
    if weight is not None:
        if isinstance(weight, bool) or not isinstance(weight, int | float) or not math.isfinite(weight):
            raise SerializationError("an interaction's weight must be a finite number")
        return float(weight)
    action = data.get("action")
    return ACTION_WEIGHTS.get(action, _DEFAULT_WEIGHT) if isinstance(action, str) else _DEFAULT_WEIGHT


def interactions_from_history(entries: Iterable[Mapping[str, Any]], user: str) -> Iterator[Interaction]:
    """The interactions among history `entries`; a malformed interaction entry raises
    `SerializationError` naming its position."""
    for index, entry in enumerate(entries):
        if entry.get("type") != INTERACTION_TYPE:
            continue
        data = entry.get("data")
        item = data.get("item_id") if isinstance(data, Mapping) else None
        if not isinstance(data, Mapping) or not isinstance(item, str) or not item:
            raise SerializationError(f"interaction entry {index} has no string 'item_id'")
        action = data.get("action")
        timestamp = entry.get("timestamp")
        yield Interaction(
            user=user,
            item_id=item,
            action=action if isinstance(action, str) else "",
            weight=interaction_weight(data),
            timestamp=float(timestamp) if isinstance(timestamp, int | float) else 0.0,
        )


class InteractionIndex:
    """Net interaction weights per user and item, with popularity and item-item similarity.

    `max_items_per_user` bounds how many of a user's items (the highest weighted) enter the
    co-occurrence counts, so one heavy user costs O(max_items_per_user²) at most;
    `max_neighbours` keeps the most similar items per item.
    """

    def __init__(self, *, max_items_per_user: int = 200, max_neighbours: int = 100) -> None:
        if max_items_per_user < 2 or max_neighbours < 1:
            raise ValueError("max_items_per_user must be >= 2 and max_neighbours >= 1")
        self.max_items_per_user = max_items_per_user
        self.max_neighbours = max_neighbours
        self._weights: dict[str, dict[str, float]] = {}
        self._popularity: list[tuple[str, int]] | None = None
        self._counts: dict[str, int] | None = None
        self._neighbours: dict[str, dict[str, float]] | None = None
        #: Sessions whose malformed interaction entries were left out (logged at WARNING).
        self.skipped_sessions = 0

    # ------------------------------------------------------------------ building
    def add(self, user: str, item_id: str, weight: float = 1.0) -> None:
        """Add one interaction of `user` with `item_id` (weights of repeated interactions add up)."""
        items = self._weights.setdefault(user, {})
        items[item_id] = items.get(item_id, 0.0) + weight
        self._popularity = self._counts = self._neighbours = None

    def add_interactions(self, interactions: Iterable[Interaction]) -> None:
        """Add many interactions."""
        for it in interactions:
            self.add(it.user, it.item_id, it.weight)

    def add_session(self, session: Session, entries: Iterable[Mapping[str, Any]] | None = None) -> None:
        """Add the interactions in a session's history (`entries`, default its loaded window).

        A session with a malformed interaction entry is left out as a whole and reported with a
        WARNING (so one bad record cannot block recommendations for everyone), counted in
        `skipped_sessions`.
        """
        try:
            found = list(interactions_from_history(session.history if entries is None else entries, user_key(session)))
        except SerializationError as exc:
            self.skipped_sessions += 1
            logger.warning("interactions of session %s left out: %s", id_hash(session.session_id), exc)
            return
        self.add_interactions(found)

    @classmethod
    async def from_store(
        cls, source: SessionStore | SessionManager, *, full_history: bool = False, **options: Any
    ) -> InteractionIndex:
        """Build an index from every live session of a store (streamed).

        By default each session's loaded recent history window is read; ``full_history=True``
        pages through each session's whole stored history (one more query per session).
        """
        store = source.store if isinstance(source, SessionManager) else source
        index = cls(**options)
        async for session in store.iter_sessions():
            entries = await iter_full_history(store, session.session_id) if full_history else None
            index.add_session(session, entries)
        return index

    # ------------------------------------------------------------------ reading
    def __len__(self) -> int:
        return len(self._weights)

    def __contains__(self, user: object) -> bool:
        return user in self._weights

    @property
    def users(self) -> list[str]:
        return list(self._weights)

    @property
    def items(self) -> set[str]:
        return {item for items in self._weights.values() for item in items}

    def items_of(self, user: str) -> dict[str, float]:
        """The net weight of each item `user` interacted with (a copy)."""
        return dict(self._weights.get(user, {}))

    def popularity(self) -> list[tuple[str, int]]:
        """Items by the number of distinct users with a positive weight, most popular first
        (ties by item id)."""
        if self._popularity is None:
            counts = self.popularity_counts()
            self._popularity = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return self._popularity

    def popularity_counts(self) -> dict[str, int]:
        """Distinct users with a positive weight, per item."""
        if self._counts is None:
            counts: dict[str, int] = {}
            for items in self._weights.values():
                for item, weight in items.items():
                    if weight > 0:
                        counts[item] = counts.get(item, 0) + 1
            self._counts = counts
        return self._counts

    def neighbours(self, item_id: str) -> dict[str, float]:
        """Items similar to `item_id`: cosine similarity of their user sets,
        ``co(i, j) / sqrt(n_i * n_j)`` (users liking both over the geometric mean of their users)."""
        if self._neighbours is None:
            self._neighbours = self._build_neighbours()
        return self._neighbours.get(item_id, {})

    def _build_neighbours(self) -> dict[str, dict[str, float]]:
        co: dict[str, dict[str, int]] = {}
        for items in self._weights.values():
            liked = sorted((i for i, w in items.items() if w > 0), key=lambda i: (-items[i], i))
            liked = liked[: self.max_items_per_user]
            for a_pos, a in enumerate(liked):
                row = co.setdefault(a, {})
                for b in liked[a_pos + 1 :]:
                    row[b] = row.get(b, 0) + 1
                    other = co.setdefault(b, {})
                    other[a] = other.get(a, 0) + 1
        counts = self.popularity_counts()
        result: dict[str, dict[str, float]] = {}
        for a, row in co.items():
            sims = {b: n / math.sqrt(counts[a] * counts[b]) for b, n in row.items()}
            if len(sims) > self.max_neighbours:
                kept = sorted(sims, key=lambda b: (-sims[b], b))[: self.max_neighbours]
                sims = {b: sims[b] for b in kept}
            result[a] = sims
        return result
