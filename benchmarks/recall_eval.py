"""Offline evaluation of recall (`SessionManager.search_history`) on conversations with planted facts.

    python -m benchmarks.recall_eval                  # evaluate, print, update RESULTS.md
    python -m benchmarks.recall_eval --dry-run        # evaluate and print only
    python -m benchmarks.recall_eval --sizes 1000 10000   # fewer scale points (faster)

Quality: a generated corpus (seeded, pure Python, the same on every run). Each of `users` users
has `sessions` sessions of `turns` ``message`` entries (user and assistant in turn), mostly filler
chit-chat: requests, thanks, small talk, some of it sharing one word with the keyword queries
below (live music, a friend's diet, a neighbour's pet, "does this plan work"), and some both words
("if you could live in any city..."), as real histories do. Each user mentions four facts once, in
a random user turn of a random session: their city, their diet, their pet and their employer, each
in one of three phrasings. Every fact is then looked for three ways, over all the user's sessions:

- keyword: two words every phrasing of the fact holds ("city live", "diet eat", "pet name",
  "work company"), as a model calling `search_memory` would send them;
- question: a natural question sharing one of them ("where do I live", "what is my diet", "tell
  me about my pet", "where do I work"), as `SessionCapability(recall=k)` sends the run's prompt;
- paraphrase: a question sharing no content word with the fact ("which town is my home", "which
  food is off the menu for me", "what animal do I keep", "who pays my salary").

recall@5: share of the queries whose planted entry is among the first 5 hits; MRR@10: mean of 1 /
its rank in the first 10 (0 when absent). Each backend gets the same corpus through the bulk path
(`restore_many`); Redis has no full-text engine (`SearchUnavailable`) and is reported as such.

Speed: one user's history grows to each of `sizes` entries (sessions of 1,000 entries: the default
cap), pre-filled with `restore_many`, words drawn from a Zipf vocabulary; at each size the p50 of
a search (two-word queries, limit 10, over all the user's sessions; two common words, and two rare
ones) and of a `get_session` of one of them, measured alternately in the same run.

Exits non-zero when keyword recall@5 is below 0.95 on SQLite or PostgreSQL.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent_sessions import SearchUnavailable, Session, SessionManager, SessionStore, new_session_id
from agent_sessions.analysis import Table, recall_at_k, reciprocal_rank
from agent_sessions.recall import supports_search
from agent_sessions.stores.base import Restore

from .backends import BACKENDS
from .harness import machine, percentile
from .recommendations import RESULTS, record

BEGIN = "<!-- recall:begin (written by `python -m benchmarks.recall_eval`) -->"
END = "<!-- recall:end -->"
K = 5
RANKED = 10
#: Keyword recall@5 must reach this on SQLite and PostgreSQL.
KEYWORD_TARGET = 0.95
TARGET_BACKENDS = ("sqlite", "postgres")
SIZES = (1_000, 10_000, 100_000)
ENTRIES_PER_SESSION = 1_000
SEARCHES_PER_SIZE = 40
#: Stop measuring one size after this many seconds (at least `MIN_SEARCHES` searches).
SIZE_BUDGET_S = 15.0
MIN_SEARCHES = 5

CITIES = ("Lisbon", "Porto", "Oslo", "Bergen", "Kyoto", "Osaka", "Quito", "Lima", "Tallinn", "Riga", "Graz", "Ghent")
DIETS = ("vegetarian", "vegan", "pescatarian", "gluten-free", "halal", "kosher", "lactose-free")
PETS = ("cat Miso", "dog Pepper", "parrot Kiwi", "tortoise Atlas", "rabbit Clover", "hamster Biscuit")
EMPLOYERS = ("Globex", "Initech", "Umbrella Labs", "Hooli", "Vandelay Industries", "Soylent", "Tyrell", "Cyberdyne")

#: The kinds of query, in the order they are reported.
KINDS = ("keyword", "question", "paraphrase")


@dataclass(frozen=True, slots=True)
class Fact:
    """One kind of fact: its phrasings (one is drawn per user, `{v}` the value; a pet's value is
    "animal name"), its values, and one query of each kind."""

    phrasings: tuple[str, ...]
    values: tuple[str, ...]
    keyword: str
    question: str
    paraphrase: str

    def query(self, kind: str) -> str:
        return {"keyword": self.keyword, "question": self.question, "paraphrase": self.paraphrase}[kind]

    def state(self, rng: random.Random) -> str:
        value = rng.choice(self.values)
        animal, _, name = value.partition(" ")
        return rng.choice(self.phrasings).format(v=value, animal=animal, name=name)


FACTS: dict[str, Fact] = {
    "city": Fact(
        (
            "By the way, I live in {v} now, and the city suits me.",
            "These days I live in {v}, a lovely city by the sea.",
            "Quick note: the city I live in is {v}.",
        ),
        CITIES,
        "city live",
        "where do I live",
        "which town is my home",
    ),
    "diet": Fact(
        (
            "I am {v}, so remember my diet when I ask what to eat.",
            "My diet is strictly {v}: I eat nothing else.",
            "I follow a {v} diet, so I eat accordingly.",
        ),
        DIETS,
        "diet eat",
        "what is my diet",
        "which food is off the menu for me",
    ),
    "pet": Fact(
        (
            "My pet is a {animal}, its name is {name}.",
            "I have a pet {animal}; {name} is the name.",
            "Our pet {animal} has the name {name} and loves the garden.",
        ),
        PETS,
        "pet name",
        "tell me about my pet",
        "what animal do I keep",
    ),
    "employer": Fact(
        (
            "I work at {v}, a software company.",
            "I started to work at {v} in March; a great company.",
            "At work ({v}, the company I joined last year) we ship on Fridays.",
        ),
        EMPLOYERS,
        "work company",
        "where do I work",
        "who pays my salary",
    ),
}

USER_FILLER = (
    "Can you help me draft an email to my landlord about the heating?",
    "I need a recipe for a quick weeknight dinner.",
    "What's a good book about the history of Rome?",
    "Remind me to call my sister on Sunday.",
    "I'd love to see some live music this weekend.",
    "Work has been hectic, I need a break.",
    "My neighbour's pet rabbit escaped again.",
    "A friend of mine is on a keto diet and swears by it.",
    "Does this plan work for a three-day trip?",
    "Is pet insurance worth buying?",
    "Which city has the best museums in Europe?",
    "What's a good name for a sailing boat?",
    "Where can I eat well near the station?",
    "Which company makes the quietest dishwasher?",
    "How do I fix a squeaky door hinge?",
    "Translate 'good morning' into Italian, please.",
    "What should I pack for a rainy weekend?",
    "Give me three ideas for a birthday present.",
    "How long should I boil an egg for a soft yolk?",
    "Summarise the plot of Hamlet in two sentences.",
    "What's the difference between a latte and a flat white?",
    "Suggest a podcast for my commute.",
    "How many steps a day is healthy?",
    "Can you explain compound interest simply?",
    "Plan a one-hour workout without equipment.",
    "What time is it in Tokyo when it's noon in Paris?",
    "Write a short poem about autumn leaves.",
    "Which houseplants survive low light?",
    "Thanks, that was helpful!",
    "Let's pick this up tomorrow.",
    "How do people live on a boat all year?",
    "My brother's diet app keeps crashing, any alternatives?",
    # Hard distractors: both words of a keyword query.
    "If you could live in any city, which would it be?",
    "Is it safe to eat raw eggs on a diet?",
    "What name should I give a new pet?",
    "Which company would be fun to work for?",
)
ASSISTANT_FILLER = (
    "Sure, here is a short draft you can adapt.",
    "Here are three ideas to start with.",
    "Good question: in short, it depends on your budget.",
    "Done. Anything else I can help with?",
    "I'd suggest starting small and building from there.",
    "Here is a step-by-step outline.",
    "That sounds great. Enjoy!",
    "Noted. I'll keep it brief.",
)


@dataclass(frozen=True, slots=True)
class Design:
    """The corpus: its size and the seed it is drawn from."""

    seed: int = 20261203
    users: int = 50
    sessions: int = 4
    turns: int = 24


@dataclass(frozen=True, slots=True)
class Query:
    """One query of the evaluation: whose history, the text, and the planted entry it must find."""

    user_id: str
    kind: str  # one of KINDS
    fact: str
    text: str
    target: str  # "<session_id>:<seq>"


@dataclass(slots=True)
class Corpus:
    """The sessions to restore (with their histories) and the queries with their answers."""

    restores: list[Restore]
    queries: list[Query]

    @property
    def entries(self) -> int:
        return sum(len(r.history) for r in self.restores)


def _entry(ts: float, role: str, text: str) -> dict[str, Any]:
    return {"timestamp": ts, "type": "message", "data": {"role": role, "text": text}}


def generate(design: Design, *, now: float | None = None) -> Corpus:
    """The corpus of `design`: the same texts and queries for the same seed (session ids are
    drawn from the same seed too; timestamps are relative to `now`)."""
    rng = random.Random(design.seed)
    base = (time.time() if now is None else now) - design.sessions * 86_400.0
    restores: list[Restore] = []
    queries: list[Query] = []
    for u in range(design.users):
        user_id = f"user-{u:04d}"
        session_ids = [_seeded_id(rng) for _ in range(design.sessions)]
        slots = [(s, t) for s in range(design.sessions) for t in range(0, design.turns, 2)]
        planted = dict(zip(FACTS, rng.sample(slots, len(FACTS)), strict=True))
        texts: dict[tuple[int, int], tuple[str, str]] = {}
        for fact, slot in planted.items():
            texts[slot] = (fact, FACTS[fact].state(rng))
            target = f"{session_ids[slot[0]]}:{slot[1] + 1}"
            queries.extend(Query(user_id, kind, fact, FACTS[fact].query(kind), target) for kind in KINDS)
        for s, sid in enumerate(session_ids):
            start = base + s * 86_400.0
            history = []
            for t in range(design.turns):
                if t % 2:
                    text = rng.choice(ASSISTANT_FILLER)
                else:
                    text = texts[(s, t)][1] if (s, t) in texts else rng.choice(USER_FILLER)
                history.append(_entry(start + 60.0 * t, "assistant" if t % 2 else "user", text))
            restores.append(Restore(_session(sid, user_id, start), history))
    return Corpus(restores, queries)


def _seeded_id(rng: random.Random) -> str:
    # The shape `new_session_id` issues (43 url-safe characters), drawn from the seed.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    return "".join(rng.choice(alphabet) for _ in range(43))


def _session(session_id: str, user_id: str, created: float) -> Session:
    now = time.time()
    return Session(
        session_id=session_id, user_id=user_id, created_at=created, last_accessed_at=now, expiry_at=now + 86_400.0
    )


async def restore(store: SessionStore, items: Sequence[Restore], batch: int = 100) -> None:
    """Store `items` through the bulk path, `batch` sessions a call."""
    for start in range(0, len(items), batch):
        if not all(await store.restore_many(items[start : start + batch])):
            raise AssertionError("a restored session id already existed")


# ------------------------------------------------------------------------------- quality
@dataclass(frozen=True, slots=True)
class Quality:
    """recall@5 and MRR@10 of one backend for one kind of query."""

    backend: str
    kind: str
    queries: int
    recall: float
    mrr: float
    by_fact: dict[str, float] = field(default_factory=dict)


async def evaluate_quality(manager: SessionManager, corpus: Corpus, backend: str) -> list[Quality]:
    """Run every query of `corpus` through `manager.search_history`; one `Quality` per kind."""
    results: list[Quality] = []
    for kind in KINDS:
        chosen = [q for q in corpus.queries if q.kind == kind]
        recalls: list[float] = []
        ranks: list[float] = []
        per_fact: dict[str, list[float]] = {}
        for query in chosen:
            hits = await manager.search_history(query.user_id, query.text, limit=RANKED)
            ranked = [f"{hit.session_id}:{hit.seq}" for hit in hits]
            found = recall_at_k(ranked, {query.target}, K)
            recalls.append(found)
            ranks.append(reciprocal_rank(ranked, {query.target}, RANKED))
            per_fact.setdefault(query.fact, []).append(found)
        results.append(
            Quality(
                backend,
                kind,
                len(chosen),
                sum(recalls) / len(chosen),
                sum(ranks) / len(chosen),
                {fact: sum(v) / len(v) for fact, v in per_fact.items()},
            )
        )
    return results


# ------------------------------------------------------------------------------- speed
VOCABULARY_SIZE = 4000


def _vocabulary(rng: random.Random) -> list[str]:
    consonants, vowels = "bcdfghklmnprstvz", "aeiou"
    words: dict[str, None] = {}
    while len(words) < VOCABULARY_SIZE:
        syllables = rng.randint(2, 4)
        words["".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(syllables))] = None
    return list(words)


@dataclass(frozen=True, slots=True)
class Speed:
    """Search and get p50 for one user with `entries` history entries."""

    backend: str
    entries: int
    searches: int
    search_p50_ms: float  # two common words: thousands of matching entries at 100,000
    rare_p50_ms: float  # two rare words: a handful of matching entries
    get_p50_ms: float
    fill_s: float


async def evaluate_speed(manager: SessionManager, backend: str, sizes: Sequence[int], seed: int) -> list[Speed]:
    """Grow one user's history to each of `sizes` entries and time searches and gets there."""
    rng = random.Random(seed)
    vocabulary = _vocabulary(rng)
    weights = [1.0 / (rank + 1) for rank in range(len(vocabulary))]  # Zipf, s = 1
    user_id = "scale-user"
    stored = 0
    results: list[Speed] = []
    for size in sorted(sizes):
        started = time.perf_counter()
        while stored < size:
            count = min(ENTRIES_PER_SESSION, size - stored)
            history = [
                _entry(time.time(), "user", " ".join(rng.choices(vocabulary, weights, k=rng.randint(8, 20))))
                for _ in range(count)
            ]
            await restore(manager.store, [Restore(_session(new_session_id(), user_id, time.time()), history)])
            stored += count
        fill = time.perf_counter() - started
        sessions = await manager.store.user_session_ids(user_id, time.time())
        probe = sorted(sessions)[0]
        # Common words (Zipf ranks 50-400: each in about 1-3 % of the entries) and rare ones
        # (ranks 1,500-4,000: a few entries in 10,000).
        common = [" ".join(rng.sample(vocabulary[50:400], 2)) for _ in range(SEARCHES_PER_SIZE)]
        rare = [" ".join(rng.sample(vocabulary[1500:], 2)) for _ in range(SEARCHES_PER_SIZE)]
        await manager.search_history(user_id, common[0], limit=RANKED)  # warm caches and plans
        await manager.get_session(probe)
        times: dict[str, list[float]] = {"common": [], "rare": [], "get": []}
        deadline = time.perf_counter() + SIZE_BUDGET_S
        for i in range(SEARCHES_PER_SIZE):
            t0 = time.perf_counter()
            await manager.search_history(user_id, common[i], limit=RANKED)
            t1 = time.perf_counter()
            await manager.search_history(user_id, rare[i], limit=RANKED)
            t2 = time.perf_counter()
            await manager.get_session(probe)
            t3 = time.perf_counter()
            times["common"].append(t1 - t0)
            times["rare"].append(t2 - t1)
            times["get"].append(t3 - t2)
            if i + 1 >= MIN_SEARCHES and t3 > deadline:
                break
        p50 = {name: 1000 * percentile(values, 0.5) for name, values in times.items()}
        results.append(Speed(backend, size, len(times["get"]), p50["common"], p50["rare"], p50["get"], fill))
    return results


# ------------------------------------------------------------------------------- the run
@dataclass(slots=True)
class Report:
    design: Design
    corpus_entries: int
    quality: list[Quality] = field(default_factory=list)
    speed: list[Speed] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0


async def evaluate(design: Design, sizes: Sequence[int], backends: Sequence[str] | None = None) -> Report:
    """The whole evaluation on every reachable backend (or only `backends`)."""
    started = time.perf_counter()
    corpus = generate(design)
    report = Report(design, corpus.entries)
    for backend in BACKENDS:
        if backends is not None and backend.name not in backends:
            continue
        reason = backend.available()
        if reason is not None:
            report.unavailable[backend.name] = f"not run: {reason}"
            continue
        async with backend.library() as store:
            manager = SessionManager(store, auto_cleanup=False)
            if not supports_search(store):
                try:
                    await manager.search_history("probe", "probe", limit=1)
                except SearchUnavailable as exc:
                    report.unavailable[backend.name] = f"unavailable (SearchUnavailable: {exc})"
                    continue
                raise AssertionError(f"{backend.name} claims no search, yet searched")
            await restore(store, corpus.restores)
            report.quality.extend(await evaluate_quality(manager, corpus, backend.name))
        if sizes:
            async with backend.library() as store:
                manager = SessionManager(store, auto_cleanup=False)
                report.speed.extend(await evaluate_speed(manager, backend.name, sizes, design.seed))
        print(f"{backend.name}: done at {time.perf_counter() - started:.0f} s", file=sys.stderr)
    report.seconds = time.perf_counter() - started
    return report


def quality_table(report: Report) -> Table:
    rows = [
        (
            q.backend,
            q.kind,
            q.queries,
            round(q.recall, 3),
            round(q.mrr, 3),
            *(round(q.by_fact.get(fact, 0.0), 2) for fact in FACTS),
        )
        for q in report.quality
    ]
    rows += [(name, "(none)", 0, None, None, *(None for _ in FACTS)) for name in report.unavailable]
    return Table.of(
        ("backend", "query kind", "queries", f"recall@{K}", f"MRR@{RANKED}", *(f"recall@{K} {fact}" for fact in FACTS)),
        rows,
        title="Recall on planted facts",
    )


def speed_table(report: Report) -> Table:
    smallest_of = {
        name: min((s for s in report.speed if s.backend == name), key=lambda s: s.entries)
        for name in {s.backend for s in report.speed}
    }
    rows = []
    for s in report.speed:
        smallest = smallest_of[s.backend]
        rows.append(
            (
                s.backend,
                s.entries,
                s.searches,
                round(s.search_p50_ms, 2),
                round(s.rare_p50_ms, 2),
                round(s.get_p50_ms, 2),
                _ratio(s.search_p50_ms, s.get_p50_ms),
                _ratio(s.rare_p50_ms, s.get_p50_ms),
                _ratio(s.search_p50_ms, smallest.search_p50_ms),
                _ratio(s.rare_p50_ms, smallest.rare_p50_ms),
                round(s.fill_s, 1),
            )
        )
    return Table.of(
        (
            "backend",
            "entries of the user",
            "searches of each kind",
            "common-word search p50 ms",
            "rare-word search p50 ms",
            "get p50 ms",
            "common / get",
            "rare / get",
            "common vs smallest size",
            "rare vs smallest size",
            "pre-fill s",
        ),
        rows,
        title="Search latency as one user's history grows",
    )


def _ratio(value: float, reference: float) -> float | None:
    return round(value / reference, 2) if reference else None


def targets(report: Report) -> list[str]:
    """The failed targets (empty when all hold)."""
    failed = []
    for q in report.quality:
        if q.kind == "keyword" and q.backend in TARGET_BACKENDS and q.recall < KEYWORD_TARGET:
            failed.append(f"keyword recall@{K} on {q.backend} is {q.recall:.3f} < {KEYWORD_TARGET}")
    return failed


def render(report: Report) -> str:
    """The Markdown section recorded in RESULTS.md."""
    d = report.design
    by = {(q.backend, q.kind): q for q in report.quality}
    names = list(dict.fromkeys(q.backend for q in report.quality))
    gaps = [
        f"{name}: recall@{K} keyword {by[name, 'keyword'].recall:.2f}, question {by[name, 'question'].recall:.2f}, "
        f"paraphrase {by[name, 'paraphrase'].recall:.2f} (MRR {by[name, 'keyword'].mrr:.2f} / "
        f"{by[name, 'question'].mrr:.2f} / {by[name, 'paraphrase'].mrr:.2f})"
        for name in names
    ]
    lines = [
        "## Recall evaluation",
        "",
        f"Generated corpus (seed {d.seed}; `benchmarks/recall_eval.py` documents the design): {d.users} users x "
        f"{d.sessions} sessions x {d.turns} `message` entries ({report.corpus_entries:,} entries), filler turns with "
        "distractors sharing one or both words of the keyword queries; each user states their city, diet, pet and "
        f"employer once, in one of three phrasings. {len(FACTS) * len(KINDS)} queries per user over all their "
        "sessions: keyword (two words every phrasing holds, as a model calling `search_memory` sends), question "
        "(a natural question sharing one of them, as `recall=k` sends the prompt), paraphrase (no content word "
        f"shared). recall@{K}: the planted entry among the first {K} hits; MRR@{RANKED}: mean 1/rank in the first "
        f"{RANKED}.",
        "",
        quality_table(report).to_markdown(),
        "",
        *(f"- {name}: {reason}" for name, reason in report.unavailable.items()),
        f"- Target: keyword recall@{K} >= {KEYWORD_TARGET} on SQLite and PostgreSQL: "
        + ("met." if not targets(report) else "NOT met: " + "; ".join(targets(report)) + "."),
        "- By kind: " + ("; ".join(gaps) if gaps else "no backend ran") + ".",
        "- Questions: every term of a query counts (no stop words: no language is assumed), so a filler sharing "
        'two function words with the question ("how **do** **I** fix...") can outrank the fact that shares its '
        "one content word. Paraphrases: full-text search matches words, not meanings; what they find comes from "
        "shared function words only. Closing that gap needs an embedding index, which this release does not have.",
        "",
        speed_table(report).to_markdown() if report.speed else "(latency not measured in this run)",
        "",
        "Speed: one user, sessions of 1,000 entries pre-filled with `restore_many`, entries of 8-20 words drawn "
        f"from a {VOCABULARY_SIZE:,}-word Zipf vocabulary; two-word queries, limit {RANKED}, over all the user's "
        "sessions: common words (Zipf ranks 50-400, each in about 1-3 % of the entries, so thousands of entries "
        "match at 100,000 and all of them are ranked) and rare words (ranks 1,500-4,000, a handful of matches); "
        "each pair followed by a `get_session` of one of the sessions (same run, alternating). "
        "The query plans are the search engine's (see its section in ARCHITECTURE.md): an FTS5 MATCH on SQLite, "
        "the GIN index on the tsvector on PostgreSQL, a BM25 pass in Python over the user's entries for memory "
        "(the test double: linear in the user's history). Timed right after each bulk fill, with the statistics "
        "PostgreSQL's autovacuum has gathered by then (no explicit ANALYZE, as after an import): before it "
        "analyses the new rows the plan can be much slower; `benchmarks/search.py` measures after an ANALYZE.",
        f"- Machine: {machine()}; run "
        f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M')} UTC, {report.seconds:.0f} s in all. The machine was "
        "shared with other jobs during the run, so absolute latencies are noisy; compare within a row.",
        "",
        "Rerun: `make eval` (or `python -m benchmarks.recall_eval`).",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.recall_eval", description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=list(SIZES), help="history sizes for the latency part")
    parser.add_argument("--users", type=int, default=Design().users)
    parser.add_argument("--backends", nargs="+", default=None, help="only these backends (default: all reachable)")
    parser.add_argument("--dry-run", action="store_true", help="print only; do not update benchmarks/RESULTS.md")
    args = parser.parse_args(argv)
    report = asyncio.run(evaluate(Design(users=args.users), args.sizes, args.backends))
    print(quality_table(report).to_text())
    for name, reason in report.unavailable.items():
        print(f"{name}: {reason}")
    if report.speed:
        print(speed_table(report).to_text())
    print(f"{report.seconds:.1f} s")
    if not args.dry_run:
        record(render(report), begin=BEGIN, end=END)
        print(f"recorded in {RESULTS}")
    failed = targets(report)
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
