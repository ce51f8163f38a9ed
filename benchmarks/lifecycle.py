"""The erase figure: `erase_user` of a user with 100 sessions of 100 history entries each, per
backend (DESIGN §6, issue 14). Each run fills a fresh store (the user's sessions beside another
user's, through `restore_many`), times one `erase_user` and checks its report; the median of
the runs is reported.

    python -m benchmarks.lifecycle                 # every backend, 3 runs, writes RESULTS.md
    python -m benchmarks.lifecycle --no-write      # print only

Redis Cluster runs when ``AGENT_SESSIONS_BENCH_CLUSTER`` holds a ``redis+cluster://`` URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from agent_sessions import Session, SessionStore
from agent_sessions.lifecycle import erase_user
from agent_sessions.stores.base import Restore
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.stores.redis.keys import glob_escape

from .harness import Backend, history_entry, machine, settle, standalone_parser, usable_peers, write_results
from .raw import dict_client

BEGIN = "<!-- erase:begin (written by `python -m benchmarks.lifecycle`) -->"
END = "<!-- erase:end -->"
USER = "bench-erased-user"
OTHER = "bench-kept-user"
SESSIONS = 100
HISTORY = 100
CLUSTER_URL = os.environ.get("AGENT_SESSIONS_BENCH_CLUSTER", "")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--erase-sessions", type=int, default=SESSIONS, help="erase: sessions of the erased user")
    parser.add_argument("--erase-history", type=int, default=HISTORY, help="erase: history entries per session")
    parser.add_argument("--no-erase", dest="erase", action="store_false", help="skip the erase figure")


@asynccontextmanager
async def cluster_store(**options: Any) -> AsyncIterator[SessionStore]:
    store = RedisSessionStore(CLUSTER_URL, prefix=f"bench_erase_{uuid.uuid4().hex[:10]}:", **options)
    try:
        yield store
    finally:
        try:
            keys = [key async for key in store.client.scan_iter(match=glob_escape(store.prefix) + "*", count=500)]
            for key in keys:
                await store.client.delete(key)
        finally:
            await store.close()


def cluster_backend() -> Backend:
    return Backend(
        name="redis_cluster",
        raw_label="-",
        available=lambda: None if CLUSTER_URL else "AGENT_SESSIONS_BENCH_CLUSTER is not set",
        library=cluster_store,
        raw=dict_client,  # unused: the erase figure has no raw baseline
    )


async def fill(store: SessionStore, sessions: int, history: int) -> None:
    now = time.time()
    items = []
    for owner, count in ((USER, sessions), (OTHER, sessions)):
        for _ in range(count):
            session = Session(user_id=owner, created_at=now, last_accessed_at=now, expiry_at=now + 3600)
            items.append(Restore(session, [history_entry(n) for n in range(history)]))
    for start in range(0, len(items), 500):
        await store.restore_many(items[start : start + 500])
    await store.write_scopes(USER, {"pref:lang": "fr", "user:plan": "pro"})


async def one_run(backend: Backend, sessions: int, history: int) -> float:
    async with backend.library() as store:
        await fill(store, sessions, history)
        settle()
        started = time.perf_counter()
        report = await erase_user(store, USER)
        elapsed = time.perf_counter() - started
        expected = (sessions, sessions * history, 2)
        if (report.sessions, report.history_entries, report.scope_keys) != expected:
            raise AssertionError(f"{backend.name}: erase_user reported {report}, expected {expected}")
        if len(await store.get_user_sessions(OTHER)) != sessions:
            raise AssertionError(f"{backend.name}: erase_user touched another user's sessions")
        return elapsed


async def main(args: Any, backends: list[Backend]) -> int:
    if not getattr(args, "erase", True):
        return 0
    usable, skipped = usable_peers([*backends, cluster_backend()], args.backends, "backend")
    sessions, history = args.erase_sessions, args.erase_history
    rows = []
    for backend in usable:
        times = [await one_run(backend, sessions, history) for _ in range(args.runs)]
        median = statistics.median(times)
        per_session = median / sessions * 1000
        spread = f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f}"
        rows.append(f"| {backend.name} | {median * 1000:.1f} | {per_session:.2f} | {spread} |")
    body = "\n".join(
        [
            "## Erase: `erase_user` of one user",
            "",
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {machine()}; shared machine (other jobs running), "
            f"load average {os.getloadavg()[0]:.1f} at the end, so the absolute figures are loose.",
            "",
            f"One user with {sessions} sessions of {history} history entries each and a user scope, beside another "
            f"user with as many; one `erase_user` timed (the per-user index, then each backend's primitive: one "
            "transaction on SQL, `erase.lua` per batch of 500 sessions on one Redis node, the sessions' scripts in "
            "one pipeline then the index and scope on a Cluster), its report checked.",
            "",
            "| backend | erase p50 (ms) | per session (ms) | min-max of the runs (ms) |",
            "| --- | --- | --- | --- |",
            *rows,
            *(["", *skipped] if skipped else []),
            "",
            f"Figures: median of {args.runs} runs, each on a freshly filled store. "
            "Rerun: `python -m benchmarks.lifecycle` (also part of `python -m benchmarks`).",
        ]
    )
    print(body)
    if args.write:
        write_results(body, begin=BEGIN, end=END)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = standalone_parser("python -m benchmarks.lifecycle", __doc__)
    add_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    from .backends import BACKENDS

    sys.exit(asyncio.run(main(parse(sys.argv[1:]), BACKENDS)))
