"""Offline evaluation of rankings (recommendations, recall): hit rate, NDCG, recall at k and
reciprocal rank.

For one user, `recommended` is the ranked list (best first) and `relevant` the held-out items:

- hit rate@k = 1 if any relevant item is in the top k, else 0;
- recall@k = |relevant ∩ top k| / |relevant|;
- reciprocal rank = 1 / the rank of the first relevant item within the top k, 0 if none (its mean
  over queries is the MRR);
- NDCG@k = DCG / IDCG with binary relevance, DCG = Σ 1 / log2(rank + 1) over the relevant items
  at ranks 1..k, IDCG the DCG of a perfect list (all relevant items first).

`evaluate_rankings` averages them over the users with held-out items (a user without a ranking
scores 0).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from .table import Table

__all__ = [
    "EvaluationResult",
    "evaluate_rankings",
    "hit_rate_at_k",
    "ndcg_at_k",
    "recall_at_k",
    "reciprocal_rank",
    "results_table",
]


def _check(k: int) -> None:
    if k < 1:
        raise ValueError("k must be >= 1")


def hit_rate_at_k(recommended: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """1.0 if a relevant item is among the first `k` recommended, else 0.0."""
    _check(k)
    return 1.0 if any(item in relevant for item in recommended[:k]) else 0.0


def recall_at_k(recommended: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """The share of the relevant items found among the first `k` recommended."""
    _check(k)
    if not relevant:
        return 0.0
    return len(set(recommended[:k]) & set(relevant)) / len(set(relevant))


def reciprocal_rank(ranked: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """1 / the rank of the first relevant item among the first `k` (1.0 if it comes first), 0.0 if
    none is there; averaged over queries, the mean reciprocal rank (MRR@k)."""
    _check(k)
    for rank, item in enumerate(ranked[:k], start=1):
        if item in relevant:
            return 1.0 / rank
    return 0.0


def ndcg_at_k(recommended: Sequence[str], relevant: Collection[str], k: int = 10) -> float:
    """Normalised discounted cumulative gain at `k` with binary relevance."""
    _check(k)
    if not relevant:
        return 0.0
    seen: set[str] = set()
    dcg = 0.0
    for rank, item in enumerate(recommended[:k], start=1):
        if item in relevant and item not in seen:
            dcg += 1.0 / math.log2(rank + 1)
        seen.add(item)
    ideal = math.fsum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(set(relevant)), k) + 1))
    return dcg / ideal


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """Mean metrics of one algorithm over `users` users."""

    name: str
    users: int
    k: int
    hit_rate: float
    ndcg: float
    recall: float


def evaluate_rankings(
    rankings: Mapping[str, Sequence[str]],
    held_out: Mapping[str, Collection[str]],
    *,
    k: int = 10,
    name: str = "",
) -> EvaluationResult:
    """Average hit rate / NDCG / recall at `k` over the users of `held_out` that have relevant items."""
    _check(k)
    users = [u for u, items in held_out.items() if items]
    if not users:
        raise ValueError("no user has held-out items to evaluate against")
    hits = ndcg = recall = 0.0
    for user in users:
        ranking = rankings.get(user, [])
        relevant = held_out[user]
        hits += hit_rate_at_k(ranking, relevant, k)
        ndcg += ndcg_at_k(ranking, relevant, k)
        recall += recall_at_k(ranking, relevant, k)
    n = len(users)
    return EvaluationResult(name, n, k, hits / n, ndcg / n, recall / n)


def results_table(results: Iterable[EvaluationResult], *, baseline: str | None = "popularity") -> Table:
    """The results as a `Table`, with each metric's ratio to the `baseline` algorithm's."""
    rows = list(results)
    base = next((r for r in rows if r.name == baseline), None)

    def ratio(value: float, reference: float | None) -> float | None:
        return round(value / reference, 2) if reference else None

    k = rows[0].k if rows else 10
    return Table.of(
        ("algorithm", "users", f"hit rate@{k}", f"NDCG@{k}", f"recall@{k}", "hit rate vs base", "NDCG vs base"),
        [
            (
                r.name,
                r.users,
                round(r.hit_rate, 4),
                round(r.ndcg, 4),
                round(r.recall, 4),
                ratio(r.hit_rate, base.hit_rate if base else None),
                ratio(r.ndcg, base.ndcg if base else None),
            )
            for r in rows
        ],
        title=f"Offline evaluation (k={k})",
    )
