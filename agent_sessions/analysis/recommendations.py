"""`RecommendationService`: a session-aware ``@service`` with real recommendation algorithms.

- ``"collaborative"`` — item-item collaborative filtering: an item scores the sum, over the
  items the user liked, of the user's weight for that item times the cosine similarity of the two
  items' user sets (`InteractionIndex.neighbours`), computed over the interactions stored in
  every session's history.
- ``"content_based"`` — the user's profile is the weighted mean of the (L2-normalised) attribute
  vectors of the items they liked; an item scores the cosine similarity of its vector to the
  profile. Item attributes come from the `catalogue` given to the service.
- ``"popularity"`` — items liked by the most distinct users.

Items the user already interacted with (in any of their sessions, and in the current session) are
never recommended. A cold start (no usable history) falls back to popularity, and a list the
algorithm cannot fill is completed with popular items; each result says which algorithm produced
it and why. With ``item_id``, results are items similar to that item (plus the user's history when
personalisation is on). With ``personalization_enabled=False`` the user's history is not used at
all: results are the same for everyone (similar to `item_id`, else the most popular).

Catalogue format: ``{item_id: attributes}`` where attributes are a sequence of numbers (a dense
vector) or a mapping whose values are numbers (a numeric feature), booleans (present or not),
strings (one-hot ``"key=value"``) or lists of strings (multi-hot tags). Scale numeric features
yourself: cosine similarity is sensitive to magnitude.

Configuration (per session, through `SessionServiceConfigurator`):
``state["service_config"]["RecommendationService"] = {"algorithm": ..., "personalization_enabled": ...}``.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal, TypedDict

from ..errors import InvalidServiceConfig
from ..manager import SessionManager
from ..services import ContextAwareService, SmartDependencyContainer, service
from .interactions import InteractionIndex, interactions_from_history, user_key

__all__ = [
    "ALGORITHMS",
    "Algorithm",
    "AttributeValue",
    "Catalogue",
    "Recommendation",
    "RecommendationService",
    "item_vector",
]

Algorithm = Literal["collaborative", "content_based", "popularity"]
#: The algorithms `RecommendationService` accepts in its configuration.
ALGORITHMS: Final[tuple[str, ...]] = ("collaborative", "content_based", "popularity")

AttributeValue = float | int | bool | str | Sequence[str]
Catalogue = Mapping[str, Mapping[str, AttributeValue] | Sequence[float]]

Vector = dict[str, float]

logger = logging.getLogger(__name__)


class Recommendation(TypedDict):
    """One recommended item; `algorithm` is what produced it (``"popularity"`` for fill-ins)."""

    item_id: str
    score: float
    algorithm: str
    reason: str
    because: list[str]


def item_vector(attributes: Mapping[str, AttributeValue] | Sequence[float]) -> Vector:
    """An item's attributes as a sparse L2-normalised vector (see the module docstring)."""
    raw: Vector = {}
    if isinstance(attributes, Mapping):
        for key, value in attributes.items():
            if isinstance(value, bool):
                if value:
                    raw[key] = 1.0
            elif isinstance(value, int | float):
                raw[key] = float(value)
            elif isinstance(value, str):
                raw[f"{key}={value}"] = 1.0
            elif isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
                for tag in value:
                    raw[f"{key}={tag}"] = 1.0
            else:
                raise ValueError(f"attribute {key!r}: expected a number, bool, string or list of strings")
    elif isinstance(attributes, Sequence) and not isinstance(attributes, str):
        for position, value in enumerate(attributes):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"vector component {position}: expected a number")
            raw[str(position)] = float(value)
    else:
        raise ValueError("item attributes must be a mapping or a sequence of numbers")
    if not all(math.isfinite(v) for v in raw.values()):
        raise ValueError("item attributes must be finite numbers")
    norm = math.sqrt(math.fsum(v * v for v in raw.values()))
    return {k: v / norm for k, v in raw.items() if v != 0.0} if norm > 0 else {}


def _dot(a: Vector, b: Vector) -> float:
    if len(a) > len(b):
        a, b = b, a
    return math.fsum(v * b[k] for k, v in a.items() if k in b)


class _IndexSource:
    """Where the interaction index comes from, shared by a service and all its contextualised
    copies (so the index is built once, not once per request).

    The first read builds the index inline (there is nothing to serve yet). Once it is older than
    `refresh_interval`, reads keep getting the current (stale) index at once while one background
    task rebuilds it from the store; the new index replaces the old one when complete. A failed
    rebuild is logged and the next read starts another. `get(manager, force=True)` rebuilds inline.
    """

    def __init__(self, fixed: InteractionIndex | None, refresh_interval: float) -> None:
        self.index = fixed
        self.fixed = fixed is not None
        self.refresh_interval = refresh_interval
        self.loaded_at: float | None = None
        self._lock: asyncio.Lock | None = None  # one full scan at a time
        self._rebuild: asyncio.Task[None] | None = None
        self._closed = False

    async def get(self, manager: SessionManager | None, *, force: bool = False) -> InteractionIndex:
        if self.fixed and self.index is not None:
            return self.index
        if manager is None:
            if self.index is None:
                self.index = InteractionIndex()
            return self.index
        if force or self.index is None:
            return await self._build(manager, force=force)
        if not self._fresh():
            if self._closed:
                return await self._build(manager, force=False)
            self._start_rebuild(manager)
        return self.index

    async def aclose(self) -> None:
        """Cancel a background rebuild and wait for it to end; later stale reads rebuild inline."""
        self._closed = True
        task, self._rebuild = self._rebuild, None
        if task is None or task.done():
            return
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller itself is being cancelled

    async def _build(self, manager: SessionManager, *, force: bool) -> InteractionIndex:
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if force or not self._fresh():
                self.index = await InteractionIndex.from_store(manager.store)
                self.loaded_at = time.monotonic()
        assert self.index is not None
        return self.index

    def _start_rebuild(self, manager: SessionManager) -> None:
        if self._rebuild is not None and not self._rebuild.done():
            return
        self._rebuild = asyncio.create_task(self._rebuild_in_background(manager), name="agent_sessions.index-rebuild")

    async def _rebuild_in_background(self, manager: SessionManager) -> None:
        started = time.monotonic()
        try:
            await self._build(manager, force=False)
        except Exception:
            # Nobody awaits this task: log here (the stale index stays in use, the next read retries).
            logger.exception("rebuilding the recommendation interaction index failed; the stale index is kept")
            return
        logger.debug("recommendation interaction index rebuilt in %.3f s", time.monotonic() - started)

    def _fresh(self) -> bool:
        return (
            self.index is not None
            and self.loaded_at is not None
            and time.monotonic() - self.loaded_at < self.refresh_interval
        )


@service(name="recommendations")
class RecommendationService(ContextAwareService):
    """Service for providing recommendations (see the module docstring for the algorithms).

    Data: `interactions` (a prepared `InteractionIndex`) or `session_manager` (the index is then
    built from every session's history on first use, inline, and rebuilt in a background task
    once it is older than `refresh_interval` seconds: meanwhile the stale index keeps being
    served, so no call waits for a full scan of the store; the current session's own recent
    interactions are always read fresh). `catalogue` supplies item attributes for
    ``content_based``.

    `aclose()` (called by the container when it disposes the service) cancels a background
    rebuild. Contextualised copies share the index with the service they were made from.
    """

    config_keys = frozenset({"algorithm", "personalization_enabled"})

    def __init__(
        self,
        dependency_container: SmartDependencyContainer | None = None,
        default_algorithm: str = "collaborative",
        *,
        catalogue: Catalogue | None = None,
        interactions: InteractionIndex | None = None,
        session_manager: SessionManager | None = None,
        refresh_interval: float = 300.0,
    ) -> None:
        """Initialize service."""
        super().__init__(dependency_container)
        if default_algorithm not in ALGORITHMS:
            raise ValueError(f"default_algorithm must be one of {list(ALGORITHMS)}, got {default_algorithm!r}")
        self.default_algorithm = default_algorithm
        self.algorithm = default_algorithm
        self.personalization_enabled = True
        self.session_manager = session_manager
        self.vectors: dict[str, Vector] = {item: item_vector(attrs) for item, attrs in (catalogue or {}).items()}
        self._source = _IndexSource(interactions, refresh_interval)

    def configure(self, config: Mapping[str, Any]) -> None:
        """Configure service: ``algorithm`` (one of `ALGORITHMS`) and ``personalization_enabled`` (bool)."""
        cfg = self.check_config(config)
        name = type(self).__name__
        if "algorithm" in cfg:
            algorithm = cfg["algorithm"]
            if algorithm not in ALGORITHMS:
                raise InvalidServiceConfig(f"{name}: algorithm must be one of {list(ALGORITHMS)}, got {algorithm!r}")
            if algorithm == "content_based" and not self.vectors:
                raise InvalidServiceConfig(f"{name}: algorithm 'content_based' needs a catalogue of item attributes")
            self.algorithm = algorithm
        if "personalization_enabled" in cfg:
            enabled = cfg["personalization_enabled"]
            if not isinstance(enabled, bool):
                raise InvalidServiceConfig(f"{name}: personalization_enabled must be true or false")
            self.personalization_enabled = enabled

    async def refresh_index(self) -> InteractionIndex:
        """Rebuild the interaction index from the store now, inline (no-op for a given index)."""
        return await self._source.get(self.session_manager, force=True)

    async def interactions(self) -> InteractionIndex:
        """The interaction index in use: built inline if there is none yet; if it is stale, a
        background rebuild is started and the stale index is returned at once."""
        return await self._source.get(self.session_manager)

    async def aclose(self) -> None:
        """Cancel a background index rebuild and wait for it to end.

        The service stays usable: a stale index is then rebuilt inline, not in the background.
        """
        await self._source.aclose()

    async def get_recommendations(
        self, user_id: str, item_id: str | None = None, limit: int = 10
    ) -> list[Recommendation]:
        """Get recommendations for a user (or items similar to `item_id`), best first.

        Args:
            user_id: User ID
            item_id: Optional item ID for similar items
            limit: Maximum number of recommendations
        """
        if limit < 1:
            raise ValueError("limit must be >= 1")
        context = self.context
        session_id = context.session_id if context else None
        algorithm = self.algorithm
        personalization = self.personalization_enabled
        if algorithm == "collaborative":
            return await self._get_collaborative_recommendations(user_id, item_id, limit, session_id, personalization)
        if algorithm == "content_based":
            return await self._get_content_based_recommendations(user_id, item_id, limit, session_id, personalization)
        return await self._get_default_recommendations(user_id, limit)

    # ------------------------------------------------------------------ algorithms
    async def _get_collaborative_recommendations(
        self, user_id: str, item_id: str | None, limit: int, session_id: str | None, personalization: bool
    ) -> list[Recommendation]:
        """Get collaborative filtering recommendations (item-item co-occurrence similarity)."""
        index = await self.interactions()
        profile = await self._profile(index, user_id, session_id) if personalization else {}
        seeds = _seeds(profile, item_id)
        exclude = set(profile) | ({item_id} if item_id else set())
        scores: dict[str, float] = {}
        for seed, weight in seeds.items():
            for other, similarity in index.neighbours(seed).items():
                if other not in exclude:
                    scores[other] = scores.get(other, 0.0) + weight * similarity
        results: list[Recommendation] = []
        for item, score in _top(scores, limit):
            because = _top({s: w * index.neighbours(s).get(item, 0.0) for s, w in seeds.items()}, 3)
            names = [s for s, c in because if c > 0]
            results.append(
                Recommendation(
                    item_id=item,
                    score=round(score, 6),
                    algorithm="collaborative",
                    reason=f"often chosen together with {', '.join(names)}",
                    because=names,
                )
            )
        return self._fill(results, index, limit, exclude if personalization else set(), cold=not seeds)

    async def _get_content_based_recommendations(
        self, user_id: str, item_id: str | None, limit: int, session_id: str | None, personalization: bool
    ) -> list[Recommendation]:
        """Get content-based recommendations (attribute similarity to the user's items)."""
        index = await self.interactions()
        profile = await self._profile(index, user_id, session_id) if personalization else {}
        seeds = {s: w for s, w in _seeds(profile, item_id).items() if s in self.vectors}
        exclude = set(profile) | ({item_id} if item_id else set())
        centre: Vector = {}
        for seed, weight in seeds.items():
            for key, value in self.vectors[seed].items():
                centre[key] = centre.get(key, 0.0) + weight * value
        norm = math.sqrt(math.fsum(v * v for v in centre.values()))
        scores: dict[str, float] = {}
        if norm > 0:
            centre = {k: v / norm for k, v in centre.items()}
            scores = {item: _dot(centre, vec) for item, vec in self.vectors.items() if item not in exclude and vec}
            scores = {item: s for item, s in scores.items() if s > 0}
        results: list[Recommendation] = []
        for item, score in _top(scores, limit):
            vec = self.vectors[item]
            because = _top({s: _dot(self.vectors[s], vec) for s in seeds}, 3)
            names = [s for s, c in because if c > 0]
            results.append(
                Recommendation(
                    item_id=item,
                    score=round(score, 6),
                    algorithm="content_based",
                    reason=f"attributes similar to {', '.join(names)}",
                    because=names,
                )
            )
        return self._fill(results, index, limit, exclude if personalization else set(), cold=not seeds)

    async def _get_default_recommendations(self, user_id: str, limit: int) -> list[Recommendation]:
        """Get default recommendations: the most popular items the user has not interacted with."""
        index = await self.interactions()
        session_id = self.context.session_id if self.context else None
        exclude = set(await self._profile(index, user_id, session_id)) if self.personalization_enabled else set()
        return self._fill([], index, limit, exclude, cold=False)

    # ------------------------------------------------------------------ helpers
    async def _profile(self, index: InteractionIndex, user_id: str | None, session_id: str | None) -> dict[str, float]:
        """The user's net weight per item: the index, plus the current session's own history
        (an item's weight is the larger of the two, so nothing counts twice once indexed)."""
        profile = index.items_of(user_id) if user_id else {}
        if session_id and self.session_manager is not None:
            session = await self.session_manager.store.get(session_id)
            if session is not None:
                own: dict[str, float] = {}
                for it in interactions_from_history(session.history, user_key(session)):
                    own[it.item_id] = own.get(it.item_id, 0.0) + it.weight
                for item, weight in own.items():
                    profile[item] = max(profile[item], weight) if item in profile else weight
        return profile

    def _fill(
        self, results: list[Recommendation], index: InteractionIndex, limit: int, exclude: set[str], *, cold: bool
    ) -> list[Recommendation]:
        """Complete `results` up to `limit` with popular items not excluded nor already listed."""
        taken = {r["item_id"] for r in results} | exclude
        reason = "cold start: popular with {n} users" if cold else "popular with {n} users"
        for item, users in index.popularity():
            if len(results) >= limit:
                break
            if item in taken:
                continue
            results.append(
                Recommendation(
                    item_id=item, score=float(users), algorithm="popularity", reason=reason.format(n=users), because=[]
                )
            )
        return results


def _seeds(profile: Mapping[str, float], item_id: str | None) -> dict[str, float]:
    """Items to start from, weights summing to 1 over the history (+1 for an explicit item)."""
    liked = {item: w for item, w in profile.items() if w > 0}
    total = math.fsum(liked.values())
    seeds = {item: w / total for item, w in liked.items()} if total > 0 else {}
    if item_id:
        seeds[item_id] = seeds.get(item_id, 0.0) + 1.0
    return seeds


def _top(scores: Mapping[str, float], n: int) -> list[tuple[str, float]]:
    """The `n` best (item, score) pairs, best first, ties broken by item id for determinism."""
    return heapq.nsmallest(n, scores.items(), key=lambda kv: (-kv[1], kv[0]))
