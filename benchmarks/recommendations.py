"""Offline evaluation of `RecommendationService` on interactions with a planted structure.

    python -m benchmarks.recommendations               # evaluate, print, update RESULTS.md
    python -m benchmarks.recommendations --dry-run     # evaluate and print only
    python -m benchmarks.recommendations --seeds 1 2 3 # other draws of the same design

The data set (seeded, pure Python), drawn once per seed:

- `groups` groups of users and as many groups of items, each item group split into `styles`
  styles; every user has a group and a favourite style in it. A pick comes from the user's group
  with probability `in_group` (then from their favourite style with probability `in_style`), else
  from the whole catalogue by a global Zipf popularity. Within a group, items are skewed Zipf
  (`in_group_skew`), so popularity is a real signal, but the group structure is the stronger one;
- each item has an attribute vector correlated with its group and style: 1.0 on its group's
  dimension and 1.0 on its style's, plus N(0, `attribute_noise`) on every dimension (and
  `extra_dims` pure-noise dimensions); a share of items (`mislabelled`) carries a random group's
  and style's attributes instead, as real catalogues do;
- held-out split: each user's last `held_out` interactions are hidden; the rest are recorded as
  ``interaction`` history entries in sessions of a memory store, exactly as an application would.

Every algorithm then ranks 10 items per user (their training items excluded) through the real
service path (`InteractionIndex.from_store`, `RecommendationService.with_context` + `configure`),
scored with hit rate@10, NDCG@10 and recall@10 against the held-out items, pooled over the seeds.
Exits non-zero if collaborative or content-based does not beat popularity by 20 % on both metrics.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from agent_sessions import ExecutionContext, MemorySessionStore, SessionManager
from agent_sessions.analysis import (
    EvaluationResult,
    InteractionIndex,
    RecommendationService,
    evaluate_rankings,
    record_interaction,
    results_table,
)

RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN = "<!-- recommendations:begin (written by `python -m benchmarks.recommendations`) -->"
END = "<!-- recommendations:end -->"
ALGORITHMS = ("collaborative", "content_based", "popularity")
K = 10
SEEDS = (7, 11, 13)
#: Collaborative and content-based must beat popularity by at least this factor on both metrics.
MIN_LIFT = 1.2


@dataclass(frozen=True, slots=True)
class Design:
    """The knobs of the generated data set."""

    seed: int = 7
    groups: int = 6
    styles: int = 2
    items_per_group: int = 40
    users_per_group: int = 80
    min_interactions: int = 12
    max_interactions: int = 24
    in_group: float = 0.75
    in_style: float = 0.7
    in_group_skew: float = 0.5
    held_out: int = 3
    attribute_noise: float = 0.2
    extra_dims: int = 4
    mislabelled: float = 0.1


@dataclass(slots=True)
class Dataset:
    """Training interactions per user (in time order), held-out items, item attributes."""

    train: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    held_out: dict[str, set[str]] = field(default_factory=dict)
    catalogue: dict[str, list[float]] = field(default_factory=dict)


def generate(design: Design) -> Dataset:
    """Draw the data set described in the module docstring (deterministic for a seed)."""
    rng = random.Random(design.seed)
    groups = range(design.groups)
    items = {g: [f"item-{g}-{j:03d}" for j in range(design.items_per_group)] for g in groups}
    everything = [item for g in groups for item in items[g]]
    # Within a group a few items are favourites; globally, a random Zipf order of popularity.
    in_group_weights = [1.0 / (j + 1) ** design.in_group_skew for j in range(design.items_per_group)]
    global_order = everything[:]
    rng.shuffle(global_order)
    global_weights = [1.0 / (rank + 1) for rank in range(len(global_order))]

    data = Dataset()
    # Item j of a group has style j % styles, so every style has its favourites.
    style_of = {item: j % design.styles for g in groups for j, item in enumerate(items[g])}
    dims = design.groups * (1 + design.styles) + design.extra_dims
    for g in groups:
        for item in items[g]:
            if rng.random() < design.mislabelled:
                shown_group, shown_style = rng.randrange(design.groups), rng.randrange(design.styles)
            else:
                shown_group, shown_style = g, style_of[item]
            vector = [rng.gauss(0.0, design.attribute_noise) for _ in range(dims)]
            vector[shown_group] += 1.0
            vector[design.groups + shown_group * design.styles + shown_style] += 1.0
            data.catalogue[item] = vector

    actions = ("view", "view", "click", "like", "purchase")
    for g in groups:
        for u in range(design.users_per_group):
            user = f"user-{g}-{u:03d}"
            favourite = rng.randrange(design.styles)
            mine = [j for j in range(design.items_per_group) if j % design.styles == favourite]
            wanted = rng.randint(design.min_interactions, design.max_interactions)
            chosen: list[str] = []
            while len(chosen) < wanted:
                if rng.random() < design.in_group:
                    if rng.random() < design.in_style:
                        j = rng.choices(mine, [in_group_weights[j] for j in mine])[0]
                    else:
                        j = rng.choices(range(design.items_per_group), in_group_weights)[0]
                    item = items[g][j]
                else:
                    item = rng.choices(global_order, global_weights)[0]
                if item not in chosen:
                    chosen.append(item)
            cut = len(chosen) - design.held_out
            data.train[user] = [(item, rng.choice(actions)) for item in chosen[:cut]]
            data.held_out[user] = set(chosen[cut:])
    return data


async def load_sessions(data: Dataset) -> SessionManager:
    """Record the training interactions as history entries, one session per user."""
    manager = SessionManager(MemorySessionStore(), auto_cleanup=False)
    for user, interactions in data.train.items():
        session = await manager.create_session(user)
        for item, action in interactions:
            record_interaction(session, item, action)
        await manager.update_session(session)
    return manager


@dataclass(slots=True)
class Run:
    """The rankings of every algorithm on one seed's data set, with timings."""

    design: Design
    rankings: dict[str, dict[str, list[str]]]
    held_out: dict[str, set[str]]
    interactions: int
    index_seconds: float
    seconds_per_algorithm: dict[str, float]


async def run_once(design: Design) -> Run:
    """Generate, load into sessions, index, and rank with every algorithm."""
    data = generate(design)
    manager = await load_sessions(data)
    try:
        t0 = time.perf_counter()
        index = await InteractionIndex.from_store(manager)
        index.neighbours("")  # build the item-item table now, so it is timed with the index
        index_seconds = time.perf_counter() - t0
        service = RecommendationService(interactions=index, catalogue=data.catalogue)
        rankings: dict[str, dict[str, list[str]]] = {}
        timings: dict[str, float] = {}
        for algorithm in ALGORITHMS:
            t0 = time.perf_counter()
            ranked: dict[str, list[str]] = {}
            for user in data.held_out:
                configured = await service.with_context(ExecutionContext(user_id=user))
                configured.configure({"algorithm": algorithm})
                ranked[user] = [r["item_id"] for r in await configured.get_recommendations(user, limit=K)]
            timings[algorithm] = time.perf_counter() - t0
            rankings[algorithm] = ranked
    finally:
        await manager.stop()
    return Run(
        design=design,
        rankings=rankings,
        held_out=data.held_out,
        interactions=sum(len(v) for v in data.train.values()),
        index_seconds=index_seconds,
        seconds_per_algorithm=timings,
    )


@dataclass(slots=True)
class Report:
    """Metrics pooled over every seed (users of all seeds weigh the same), plus each seed's lift."""

    runs: list[Run]
    results: list[EvaluationResult]
    lifts: dict[str, list[tuple[float, float]]]
    total_seconds: float

    @property
    def design(self) -> Design:
        return self.runs[0].design


def _lift(results: list[EvaluationResult], algorithm: str) -> tuple[float, float]:
    by_name = {r.name: r for r in results}
    base, other = by_name["popularity"], by_name[algorithm]
    return other.hit_rate / base.hit_rate, other.ndcg / base.ndcg


async def evaluate(design: Design, seeds: list[int]) -> Report:
    """Run the design once per seed; pool the rankings (users are renamed per seed) and score."""
    started = time.perf_counter()
    runs = [await run_once(replace(design, seed=seed)) for seed in seeds]
    results = []
    for algorithm in ALGORITHMS:
        pooled = {f"{r.design.seed}/{u}": ranking for r in runs for u, ranking in r.rankings[algorithm].items()}
        held = {f"{r.design.seed}/{u}": items for r in runs for u, items in r.held_out.items()}
        results.append(evaluate_rankings(pooled, held, k=K, name=algorithm))
    lifts: dict[str, list[tuple[float, float]]] = {a: [] for a in ALGORITHMS if a != "popularity"}
    for r in runs:
        per_seed = [evaluate_rankings(r.rankings[a], r.held_out, k=K, name=a) for a in ALGORITHMS]
        for algorithm in lifts:
            lifts[algorithm].append(_lift(per_seed, algorithm))
    return Report(runs, results, lifts, time.perf_counter() - started)


def summary_lines(report: Report) -> list[str]:
    """One line per algorithm: pooled lift over popularity and its range over the seeds."""
    lines = []
    for algorithm, per_seed in report.lifts.items():
        hit, ndcg = _lift(report.results, algorithm)
        hits, ndcgs = [h for h, _ in per_seed], [n for _, n in per_seed]
        lines.append(
            f"`{algorithm}` beats popularity by x{hit:.2f} on hit rate@{K} (seeds: {min(hits):.2f}-{max(hits):.2f}) "
            f"and x{ndcg:.2f} on NDCG@{K} (seeds: {min(ndcgs):.2f}-{max(ndcgs):.2f})."
        )
    return lines


def render(report: Report) -> str:
    """The Markdown section recorded in RESULTS.md."""
    d = report.design
    users = sum(len(r.held_out) for r in report.runs)
    seeds = ", ".join(str(r.design.seed) for r in report.runs)
    interactions = sum(r.interactions for r in report.runs)
    index_ms = 1000 * sum(r.index_seconds for r in report.runs) / len(report.runs)
    timings = ", ".join(
        f"{a} {1000 * sum(r.seconds_per_algorithm[a] for r in report.runs) / users:.2f} ms/user" for a in ALGORITHMS
    )
    lines = [
        "## Recommendations: offline evaluation",
        "",
        f"Generated data sets (seeds {seeds}; `benchmarks/recommendations.py` documents the design): "
        f"per seed {d.groups} user groups x {d.groups} item groups of {d.items_per_group} items in {d.styles} styles, "
        f"{d.groups * d.users_per_group} users with {d.min_interactions}-{d.max_interactions} interactions each "
        f"({interactions} training interactions in all, recorded as `interaction` history entries in one "
        f"session per user); {d.in_group:.0%} of a user's picks come from their group "
        f"({d.in_style:.0%} of those from their favourite style), the rest by global Zipf popularity; item "
        f"attributes = group and style dimensions + N(0, {d.attribute_noise}) noise, {d.mislabelled:.0%} of items "
        f"mislabelled. Held out: each user's last {d.held_out} interactions; training items are never recommended. "
        f"Metrics pooled over {users} users.",
        "",
        results_table(report.results).to_markdown(),
        "",
        *(f"- {line}" for line in summary_lines(report)),
        f"- Time: index from the store (with the item-item table) {index_ms:.0f} ms per data set; "
        f"recommending: {timings}; whole run {report.total_seconds:.1f} s "
        f"(Python {platform.python_version()}, {platform.machine()}).",
        "",
        "Rerun: `make eval` (or `python -m benchmarks.recommendations`).",
        "",
    ]
    return "\n".join(lines)


def record(text: str, path: Path = RESULTS, *, begin: str = BEGIN, end: str = END) -> None:
    """Replace (or append) this evaluation's delimited section of `path` (between the markers
    `begin` and `end`; other evaluations pass their own), nothing else.

    The file is re-read immediately before writing and replaced atomically, since other
    benchmarks record their own sections in it.
    """
    current = path.read_text() if path.exists() else "# Benchmark results\n"
    section = f"{begin}\n{text}{end}\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        _, tail = rest.split(end, 1)
        updated = head + section + tail.lstrip("\n")
    else:
        updated = current.rstrip("\n") + "\n\n" + section
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".RESULTS.", suffix=".md")
    with os.fdopen(fd, "w") as handle:
        handle.write(updated)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recommendations", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    parser.add_argument("--users-per-group", type=int, default=Design().users_per_group)
    parser.add_argument("--dry-run", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    report = asyncio.run(evaluate(Design(users_per_group=args.users_per_group), args.seeds))
    print(results_table(report.results).to_text())
    for line in summary_lines(report):
        print(line.replace("`", ""))
    print(
        f"{sum(len(r.held_out) for r in report.runs)} users over {len(report.runs)} seeds, {report.total_seconds:.1f} s"
    )
    failures = [a for a in report.lifts if min(_lift(report.results, a)) < MIN_LIFT]
    if not args.dry_run:
        record(render(report))
        print(f"recorded in {RESULTS}")
    if failures:
        print(f"FAILED: {', '.join(failures)} did not beat popularity by {MIN_LIFT - 1:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
