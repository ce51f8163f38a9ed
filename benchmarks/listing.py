"""Listing: cursor-paged `list_sessions` at the end of a large store vs its first page, and ADK's
`list_sessions` of one user through our service vs ADK's own.

    python -m benchmarks.listing                          # every backend, 3 runs, writes RESULTS.md
    python -m benchmarks.listing --backends sqlite --runs 1 --no-write --sessions 20000

`python -m benchmarks` runs the P rows after the scale row (`--listing-sessions`, `--no-listing`;
the ADK pairs run there in `benchmarks.peers_adk`). Rows:

- P (per backend of `benchmarks.backends`): a store pre-filled with `--sessions` (100,000)
  sessions through `restore_many` (500 a call); `list_sessions(limit=50)` of the first page and
  of the last page (its cursor from the 51st-last id), `--calls` calls each, alternating. Figure:
  p50 of the last page / p50 of the first (target ≤ 1.5: keyset, not offset).
- L (the ADK pairs of `benchmarks.peers_adk`): ``list_sessions`` of one user with 5,000 sessions,
  ours (`AgentSessionsService`) and ADK's service each filled once; per run the median of 5
  calls; reported: the median of the runs (target: ours at least 20 times faster than ADK's).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import time
from datetime import UTC, datetime
from typing import Any

from agent_sessions import Session, SessionStore
from agent_sessions.listing import encode_cursor
from agent_sessions.stores.base import Restore

from .backends import BACKENDS
from .harness import Backend, machine, standalone_parser, usable_peers, write_results

BEGIN = "<!-- listing:begin (written by `python -m benchmarks.listing`) -->"
END = "<!-- listing:end -->"
SESSIONS = 100_000
PAGE = 50
CALLS = 200
BATCH = 500
LIST_CALLS = 5


async def prefill(store: SessionStore, count: int) -> tuple[list[str], float]:
    started = time.perf_counter()
    now = store.clock()
    ids: list[str] = []
    for start in range(0, count, BATCH):
        items = []
        for i in range(start, min(start + BATCH, count)):
            s = Session(user_id=f"user-{i % 1000}", created_at=now, last_accessed_at=now, expiry_at=now + 86_400)
            s.set("n", i)
            items.append(Restore(s, []))
        if not all(await store.restore_many(items)):
            raise AssertionError("pre-fill: an id existed")
        ids += [item.session.session_id for item in items]
    return ids, time.perf_counter() - started


async def page_times(store: SessionStore, ids: list[str], calls: int) -> tuple[float, float]:
    """p50 seconds of the first and of the last page (alternating calls), each verified."""
    last_cursor = encode_cursor(sorted(ids)[-PAGE - 1], None)
    first: list[float] = []
    last: list[float] = []
    for _ in range(calls):
        for cursor, times in ((None, first), (last_cursor, last)):
            started = time.perf_counter()
            page = await store.list_sessions(limit=PAGE, cursor=cursor)
            times.append(time.perf_counter() - started)
            if len(page.sessions) != PAGE or (page.next_cursor is None) != (cursor is not None):
                raise AssertionError("unexpected page")
    return statistics.median(first), statistics.median(last)


async def measure_pages(backend: Backend, args: Any) -> dict[str, Any]:
    async with backend.library() as store:
        ids, fill = await prefill(store, args.listing_sessions)
        gc.collect()
        runs = []
        for run in range(args.runs):
            runs.append(await page_times(store, ids, getattr(args, "listing_calls", CALLS)))
            first, last = runs[-1]
            print(
                f"listing {backend.name} run {run + 1}: first {first * 1000:.2f} ms, last {last * 1000:.2f} ms",
                file=sys.stderr,
            )
    return {"fill": fill, "runs": runs}


async def list_median(service: Any, app: str, user: str, count: int) -> float:
    times = []
    for _ in range(LIST_CALLS):
        started = time.perf_counter()
        listed = await service.list_sessions(app_name=app, user_id=user)
        times.append(time.perf_counter() - started)
        if len(listed.sessions) != count:
            raise AssertionError(f"list_sessions returned {len(listed.sessions)} sessions")
    return statistics.median(times)


async def measure_adk(args: Any) -> tuple[str, list[str]]:
    from . import peers_adk

    if (missing := peers_adk.adk_missing()) is not None:
        return "", [f"- ADK L: skipped ({missing})"]
    usable, skipped = usable_peers(peers_adk.PAIRS, args.backends, "adk")
    lines = [
        "| pair | ours ms | ADK service | ADK ms | ADK / ours | per run (ours/ADK ms) | target |",
        "|---|---:|---|---:|---:|---|---|",
    ]
    app, user, count = peers_adk.APP, "many", peers_adk.LIST_SESSIONS
    for pair in usable:
        async with pair.ours() as ours, pair.theirs() as theirs:
            for service in (ours, theirs):
                for i in range(count):
                    await service.create_session(app_name=app, user_id=user, session_id=f"s{i}", state={"n": i})
            gc.collect()
            per_run = []
            for run in range(args.runs):
                sides = [ours, theirs] if run % 2 == 0 else [theirs, ours]
                got = {id(s): await list_median(s, app, user, count) for s in sides}
                per_run.append((got[id(ours)], got[id(theirs)]))
                o, t = per_run[-1]
                print(f"adk list {pair.name} run {run + 1}: {o * 1000:.1f}/{t * 1000:.1f} ms", file=sys.stderr)
        mine = statistics.median(o for o, _ in per_run)
        theirs_s = statistics.median(t for _, t in per_run)
        ratio = statistics.median(t / o for o, t in per_run)
        runs_text = ", ".join(f"{o * 1000:.0f}/{t * 1000:.0f}" for o, t in per_run)
        verdict = "met" if ratio >= 20 else "NOT met"
        lines.append(
            f"| {pair.name} | {mine * 1000:.1f} | {pair.peer_label} | {theirs_s * 1000:.1f} | {ratio:.1f} "
            f"| {runs_text} | ≥ 20: {verdict} |"
        )
    return "\n".join(lines), skipped


async def main(args: Any, backends: list[Backend]) -> int:
    if not getattr(args, "listing", True):
        return 0
    usable, skipped = usable_peers(backends, args.backends, "backend")
    rows = [
        "| backend | first page p50 ms | last page p50 ms | last / first "
        f"| pre-fill {args.listing_sessions:,} s | target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for backend in usable:
        result = await measure_pages(backend, args)
        first = statistics.median(f for f, _ in result["runs"])
        last = statistics.median(la for _, la in result["runs"])
        ratio = statistics.median(la / f for f, la in result["runs"])
        rows.append(
            f"| {backend.name} | {first * 1000:.2f} | {last * 1000:.2f} | {ratio:.2f} | {result['fill']:.1f} "
            f"| ≤ 1.5: {'met' if ratio <= 1.5 else 'NOT met'} |"
        )
    adk_table, adk_skipped = await measure_adk(args) if getattr(args, "listing_adk", False) else ("", [])
    body = "\n".join(
        [
            "## Listing",
            "",
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {machine()}; shared machine, so compare ratios.",
            f"P: `list_sessions(limit={PAGE})` of the first and of the last page of {args.listing_sessions:,} "
            f"sessions (pre-filled with `restore_many`), {getattr(args, 'listing_calls', CALLS)} calls each, "
            f"alternating; median of {args.runs} runs.",
            "",
            *rows,
            *(["", *skipped] if skipped else []),
            *(
                [
                    "",
                    f"L: ADK `list_sessions` of one user with 5,000 sessions; per run the median of {LIST_CALLS} "
                    f"calls, reported: the median of {args.runs} runs (ratio: median of the per-run ratios).",
                    "",
                    adk_table,
                ]
                if adk_table
                else []
            ),
            *(["", *adk_skipped] if adk_skipped else []),
            "",
            "Rerun: `python -m benchmarks.listing` (also part of `make bench`).",
        ]
    )
    print(body)
    if args.write:
        write_results(body, begin=BEGIN, end=END)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listing-sessions", dest="listing_sessions", type=int, default=SESSIONS, help="listing: sessions stored"
    )
    parser.add_argument("--no-listing", dest="listing", action="store_false", help="skip the listing rows")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = standalone_parser("python -m benchmarks.listing", __doc__)
    parser.add_argument("--sessions", dest="listing_sessions", type=int, default=SESSIONS)
    parser.add_argument("--calls", dest="listing_calls", type=int, default=CALLS)
    parser.add_argument("--no-adk", dest="listing_adk", action="store_false", help="skip the ADK list row")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]), BACKENDS)))
