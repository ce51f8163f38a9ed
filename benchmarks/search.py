"""Search: does `search_history` stay index-backed as one user's history grows, and what does a
search cost beside a `get_session`? On every backend with search (memory for information).

    python -m benchmarks.search                        # memory, sqlite, postgres; 3 runs; writes RESULTS.md
    python -m benchmarks.search --backends sqlite --runs 1 --search-large 10000 --no-write

(`python -m benchmarks` runs it too, after the scale row.)

One user, two stores: one holding `--search-small` (1,000) history entries, one holding
`--search-large` (100,000), in sessions of 1,000 entries, pre-filled with `restore_many`. Each
entry is ~12 filler words drawn from a 5,000-word vocabulary; ten entries in each store also
carry the planted word the timed query looks for, so both sizes have the same number of hits
(the index does the finding: a scan would grow 100 times). Timed, one at a time and in alternation
between the sizes: `--search-reads` searches (``limit=10``) and as many `get_session`s of one
of the user's sessions (the record, its 50-entry window and the scopes). Figures: search p50
at the large size / at the small one (target ≤ 3), search p50 / get p50 at the large size
(target < 5), each the median over `--runs` runs; and the query plan of the large store. The
memory store (BM25 in Python over every entry in scope: a test double) is timed for information,
with at most 30 searches per size.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from typing import Any

from agent_sessions import SessionManager, SessionStore, new_session_id
from agent_sessions.search import SearchQuery
from agent_sessions.session import Session
from agent_sessions.stores.base import Restore
from agent_sessions.stores.sql import DatabaseSessionStore
from agent_sessions.stores.sql.search import SearchStatements

from .backends import BACKENDS
from .harness import Backend, machine, percentile, settle, standalone_parser, usable_peers, write_results

BEGIN = "<!-- search:begin (written by `python -m benchmarks` or `python -m benchmarks.search`) -->"
END = "<!-- search:end -->"
SEARCHABLE = ("memory", "sqlite", "postgres")
SMALL = 1000
LARGE = 100_000
READS = 300
PER_SESSION = 1000
PLANTED = 10
QUERY = "where does she live lisbonia"
WORD = "lisbonia"
USER = "bench-user"
#: The memory store ranks in Python over every entry in scope (a test double, for information):
#: its timed searches are capped so that the run stays short.
MEMORY_READS = 30
GROWTH_TARGET = 3.0
VERSUS_TARGET = 5.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--search-small", type=int, default=SMALL, help="search: entries in the small store")
    parser.add_argument("--search-large", type=int, default=LARGE, help="search: entries in the large store")
    parser.add_argument("--search-reads", type=int, default=READS, help="search: timed searches (and gets) per size")
    parser.add_argument("--no-search", dest="search", action="store_false", help="skip the search figures")


def vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(5000)]


async def fill(store: SessionStore, size: int, seed: int) -> tuple[list[str], float]:
    """`size` entries of one user in sessions of `PER_SESSION`; `PLANTED` of them hold `WORD`."""
    rng = random.Random(seed)
    words = vocabulary(rng)
    planted = set(rng.sample(range(size), PLANTED))
    now = store.clock()
    ids: list[str] = []
    started = time.perf_counter()
    for first in range(0, size, PER_SESSION):
        count = min(PER_SESSION, size - first)
        history = []
        for n in range(first, first + count):
            text = " ".join(rng.choices(words, k=12))
            if n in planted:
                text += f" and she lives in {WORD} now"
            history.append({"timestamp": now - size + n, "type": "message", "data": {"role": "user", "content": text}})
        session = Session(
            session_id=new_session_id(), user_id=USER, created_at=now, last_accessed_at=now, expiry_at=now + 86_400
        )
        batch = [Restore(session, history)]
        await store.restore_many(batch)
        ids.append(session.session_id)
    return ids, time.perf_counter() - started


async def timed(
    managers: dict[int, SessionManager], ids: dict[int, list[str]], reads: int, seed: int
) -> dict[int, tuple[float, float]]:
    """(search p50 ms, get p50 ms) per size; the sizes and the two operations alternate."""
    rng = random.Random(seed)
    sizes = list(managers)
    for size in sizes:  # warm up: caches, pools, prepared statements
        for _ in range(20):
            await managers[size].search_history(USER, QUERY)
            await managers[size].get_session(rng.choice(ids[size]))
    searches: dict[int, list[float]] = {size: [] for size in sizes}
    gets: dict[int, list[float]] = {size: [] for size in sizes}
    settle()
    for n in range(reads):
        for size in sizes[n % 2 :] + sizes[: n % 2]:
            t0 = time.perf_counter()
            hits = await managers[size].search_history(USER, QUERY)
            t1 = time.perf_counter()
            session = await managers[size].get_session(rng.choice(ids[size]))
            t2 = time.perf_counter()
            if sum(WORD in hit.snippet for hit in hits) != PLANTED or session is None:
                raise AssertionError(f"search verification failed at {size:,} entries")
            searches[size].append(t1 - t0)
            gets[size].append(t2 - t1)
    return {size: (percentile(searches[size], 0.5) * 1000, percentile(gets[size], 0.5) * 1000) for size in sizes}


async def query_plan(store: SessionStore) -> str:
    """The plan of the search statement on `store` (SQL only), one node per line."""
    if not isinstance(store, DatabaseSessionStore):
        return ""
    statements = SearchStatements(store.tables, store.engine.dialect, store.search_config)
    terms = tuple(QUERY.split())
    statement, params = statements.statement(SearchQuery(USER, None, terms, 10, words=terms), store.clock())
    explain = "EXPLAIN " if store.postgres else "EXPLAIN QUERY PLAN "
    async with store.engine.connect() as conn:
        rows = (await conn.exec_driver_sql(explain + statement.sql, statement.args(params))).all()
    return "\n".join(str(row[0]) if store.postgres else str(row[-1]) for row in rows)


async def run_backend(backend: Backend, args: Any) -> dict[str, Any]:
    sizes = (args.search_small, args.search_large)
    result: dict[str, Any] = {"fill": {}, "runs": [], "plan": ""}
    async with AsyncExitStack() as stack:
        managers: dict[int, SessionManager] = {}
        ids: dict[int, list[str]] = {}
        for size in sizes:
            store = await stack.enter_async_context(backend.library(max_history=PER_SESSION))
            ids[size], result["fill"][size] = await fill(store, size, seed=size)
            managers[size] = SessionManager(store, auto_cleanup=False, absolute_lifetime=None)
        for manager in managers.values():
            store = manager.store
            if isinstance(store, DatabaseSessionStore) and store.postgres:
                # What autovacuum does after a bulk insert: statistics, and the GIN index's pending
                # list merged (until then every search scans that list: 3x slower at 100,000, measured).
                async with store.engine.connect() as conn:
                    raw = await conn.execution_options(isolation_level="AUTOCOMMIT")
                    await raw.exec_driver_sql(f"VACUUM ANALYZE {store.table_names['history']}")
        result["plan"] = await query_plan(managers[sizes[1]].store)
        for run in range(args.runs):
            reads = min(args.search_reads, MEMORY_READS) if backend.name == "memory" else args.search_reads
            got = await timed(managers, ids, reads, run)
            result["runs"].append(got)
            print(
                f"search run {run + 1}/{args.runs} {backend.name} (search/get p50 ms): "
                + ", ".join(f"{size:,} entries {got[size][0]:.3f}/{got[size][1]:.3f}" for size in sizes),
                file=sys.stderr,
            )
    return result


def table(results: dict[str, dict[str, Any]], backends: Sequence[Backend], small: int, large: int) -> str:
    lines = [
        f"| backend | search p50 ms, {small:,} | search p50 ms, {large:,} | {large:,}/{small:,} "
        f"| get p50 ms, {large:,} | search/get, {large:,} | pre-fill {large:,} s | targets (≤ {GROWTH_TARGET:g}; "
        f"< {VERSUS_TARGET:g}) |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for backend in backends:
        result = results.get(backend.name)
        if not result:
            continue
        runs = result["runs"]
        s_small = statistics.median(r[small][0] for r in runs)
        s_large = statistics.median(r[large][0] for r in runs)
        g_large = statistics.median(r[large][1] for r in runs)
        growth = statistics.median(r[large][0] / r[small][0] for r in runs)
        versus = statistics.median(r[large][0] / r[large][1] for r in runs)
        info = " (for information)" if backend.name == "memory" else ""
        verdict = (
            f"{'met' if growth <= GROWTH_TARGET else 'NOT met'}; {'met' if versus < VERSUS_TARGET else 'NOT met'}"
            + info
        )
        lines.append(
            f"| {backend.name} | {s_small:.3f} | {s_large:.3f} | {growth:.2f} | {g_large:.3f} | {versus:.2f} "
            f"| {result['fill'][large]:.1f} | {verdict} |"
        )
    return "\n".join(lines)


async def main(args: Any, backends: list[Backend]) -> int:
    if not getattr(args, "search", True):
        return 0
    candidates = [b for b in backends if b.name in SEARCHABLE]
    usable, skipped = usable_peers(candidates, args.backends, "backend")
    results: dict[str, dict[str, Any]] = {}
    walls = []
    for backend in usable:
        started = time.perf_counter()
        results[backend.name] = await run_backend(backend, args)
        walls.append(f"{backend.name} {time.perf_counter() - started:.0f} s")
    small, large = args.search_small, args.search_large
    plans = [
        f"{name} at {large:,} entries:\n\n```\n{result['plan']}\n```"
        for name, result in results.items()
        if result["plan"]
    ]
    body = "\n".join(
        [
            "## Search: `search_history` as one user's history grows, and beside a get",
            "",
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {machine()}; shared machine (other jobs running), "
            "so compare ratios, not absolute figures.",
            "",
            f"One user with {small:,} and with {large:,} history entries (sessions of {PER_SESSION:,}; ~12 random "
            f"words each from a 5,000-word vocabulary; {PLANTED} entries in each store hold the planted word), one "
            f"store per size. Query {QUERY!r} (`limit=10`: any of its words matches; the planted word ranks its "
            f"{PLANTED} entries first, verified), {args.search_reads} timed searches per size, each followed by a "
            "`get_session` of one of the user's sessions (record, 50-entry window, scopes), sizes in alternation. "
            "SQLite and PostgreSQL must stay index-backed: the planted word has as many hits at both sizes.",
            "",
            table(results, usable, small, large),
            *(["", *skipped] if skipped else []),
            "",
            "Query plans (the search statement, by user):",
            "",
            *plans,
            "",
            f"Figures: median of {args.runs} runs; ratios: median of the per-run values. "
            f"Wall time: {', '.join(walls)}.",
            "",
            "Rerun: `make bench` (or `python -m benchmarks.search`).",
        ]
    )
    print(body)
    if args.write:
        write_results(body, begin=BEGIN, end=END)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = standalone_parser("python -m benchmarks.search", __doc__)
    add_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]), BACKENDS)))
