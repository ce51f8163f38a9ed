"""Google ADK peers: our `AgentSessionsService` next to ADK's own session services, through
ADK's interface, in the same process and run.

    python -m benchmarks.peers_adk                      # every pair, 3 runs, writes RESULTS.md
    python -m benchmarks.peers_adk --backends sqlite --runs 1 --no-write

`python -m benchmarks` (so `make bench`) runs it after the store benchmark when google-adk is
installed. Pairs: ours on SQLite vs ADK's `DatabaseSessionService` on SQLite (aiosqlite, a temp
file each), ours on PostgreSQL vs `DatabaseSessionService` on PostgreSQL (asyncpg, a schema each),
ours in memory vs `InMemorySessionService`.

Workloads, the store benchmark's (`benchmarks.harness.run_w1` / `run_w2`) done the ADK way:

- W1: a turn is ``get_session(config=GetSessionConfig(num_recent_events=50))`` then
  ``append_event`` of one user `Event` (~300 characters of text) whose ``state_delta`` sets
  ``turn_count``; every session is verified afterwards (20 events, ``turn_count == 20``).
- W2: reads, ``get_session`` with the same config, of the sessions W1 at concurrency 1 made.
- L: ``list_sessions`` of one user with 5,000 sessions (median of 5 calls).
- G: ``get_session(num_recent_events=20)`` on a session of 3,000 events and on one of 20 events
  (median of 100 calls each, alternating); flat = the two latencies are close.

Ratio = ours / ADK's (ops/s; for L and G, ADK's latency / ours).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_sessions import MemorySessionStore, SessionManager, SessionStore
from agent_sessions.stores.sql import DatabaseSessionStore, create_database_engine

from .backends import PG_URL, reachable
from .harness import (
    HISTORY_WINDOW,
    READS,
    SESSIONS,
    TEXT,
    TURNS,
    Sample,
    machine,
    run_w1,
    run_w2,
    usable_peers,
    write_results,
)

BEGIN = "<!-- adk_peers:begin (written by `python -m benchmarks.peers_adk`) -->"
END = "<!-- adk_peers:end -->"
APP = "bench"
LIST_SESSIONS = 5000
LONG_SESSION = 3000
SHORT_SESSION = 20
RECENT = 20
WORKLOADS = ("W1 c1", "W1 c50", "W2")


def adk_missing() -> str | None:
    try:
        import google.adk.sessions  # noqa: F401
    except ImportError:
        return "google-adk not installed: pip install agent-sessions[adk]"
    return None


Factory = Callable[[], AbstractAsyncContextManager[Any]]


@dataclass(frozen=True)
class Pair:
    """Our service on one backend and ADK's own service on the same kind of storage."""

    name: str
    peer_label: str
    available: Callable[[], str | None]
    ours: Callable[..., AbstractAsyncContextManager[Any]]
    theirs: Factory
    targets: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- services
def our_service(store: SessionStore) -> Any:
    from agent_sessions.integrations.adk import AgentSessionsService

    # ADK sessions are conversations: no absolute timeout (the benchmark never idles an hour).
    return AgentSessionsService(SessionManager(store, auto_cleanup=False, absolute_lifetime=None))


@asynccontextmanager
async def ours_memory(**options: Any) -> AsyncIterator[Any]:
    async with MemorySessionStore(**options) as store:
        yield our_service(store)


@asynccontextmanager
async def ours_sqlite(**options: Any) -> AsyncIterator[Any]:
    with tempfile.TemporaryDirectory(prefix="agent_sessions_adk_bench_") as tmp:
        async with DatabaseSessionStore(f"sqlite+aiosqlite:///{Path(tmp) / 'ours.db'}", **options) as store:
            yield our_service(store)


@asynccontextmanager
async def pg_schema() -> AsyncIterator[str]:
    schema = f"bench_adk_{uuid.uuid4().hex[:10]}"
    engine = create_database_engine(PG_URL, pool_size=1, max_overflow=0)
    try:
        async with engine.begin() as conn:
            await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        yield schema
    finally:
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await engine.dispose()


@asynccontextmanager
async def ours_postgres(**options: Any) -> AsyncIterator[Any]:
    async with pg_schema() as schema, DatabaseSessionStore(PG_URL, schema=schema, **options) as store:
        yield our_service(store)


@asynccontextmanager
async def adk_memory() -> AsyncIterator[Any]:
    from google.adk.sessions.in_memory_session_service import InMemorySessionService

    yield InMemorySessionService()


@asynccontextmanager
async def adk_sqlite() -> AsyncIterator[Any]:
    from google.adk.sessions.database_session_service import DatabaseSessionService

    with tempfile.TemporaryDirectory(prefix="agent_sessions_adk_bench_") as tmp:
        async with DatabaseSessionService(f"sqlite+aiosqlite:///{Path(tmp) / 'adk.db'}") as service:
            yield service


@asynccontextmanager
async def adk_postgres() -> AsyncIterator[Any]:
    from google.adk.sessions.database_session_service import DatabaseSessionService

    async with pg_schema() as schema:
        # ADK creates its tables in the connection's search_path: a schema of its own.
        settings = {"server_settings": {"search_path": schema}}
        async with DatabaseSessionService(PG_URL, connect_args=settings) as service:
            yield service


PAIRS = [
    Pair("sqlite", "ADK DatabaseSessionService (SQLite)", lambda: None, ours_sqlite, adk_sqlite, {"W1 c1": 3.0}),
    Pair(
        "postgres",
        "ADK DatabaseSessionService (PostgreSQL)",
        lambda: reachable(PG_URL, 5432),
        ours_postgres,
        adk_postgres,
        {"W1 c1": 3.0},
    ),
    Pair("memory", "ADK InMemorySessionService", lambda: None, ours_memory, adk_memory),
]


# ---------------------------------------------------------------- the ADK-interface side
class ServiceSide:
    """`benchmarks.harness.Side` through ADK's `BaseSessionService` interface."""

    def __init__(self, service: Any) -> None:
        from google.adk.sessions.base_session_service import GetSessionConfig

        self.service = service
        self.users: dict[str, str] = {}
        self.recent = GetSessionConfig(num_recent_events=HISTORY_WINDOW)
        self.failed = False
        self.in_flight = 0
        self.idle = asyncio.Event()
        self.idle.set()

    async def create(self, user_id: str) -> str:
        session = await self.service.create_session(app_name=APP, user_id=user_id)
        self.users[session.id] = user_id
        return str(session.id)

    async def load(self, session_id: str) -> Any:
        session = await self.service.get_session(
            app_name=APP, user_id=self.users[session_id], session_id=session_id, config=self.recent
        )
        if session is None:
            raise AssertionError("a benchmark session vanished")
        return session

    async def turn(self, session_id: str, turn: int) -> None:
        # After one turn failed, the other workers stop too (`gather` leaves them running).
        if self.failed:
            raise RuntimeError("another turn failed")
        self.in_flight += 1
        self.idle.clear()
        try:
            await self._turn(session_id, turn)
        except Exception:
            self.failed = True
            raise
        finally:
            self.in_flight -= 1
            if not self.in_flight:
                self.idle.set()

    async def drain(self) -> None:
        """Wait until no turn is running (before the service is closed under them)."""
        await self.idle.wait()

    async def _turn(self, session_id: str, turn: int) -> None:
        session = await self.load(session_id)
        await self.service.append_event(
            session, user_event(turn, {"turn_count": session.state.get("turn_count", 0) + 1})
        )

    async def read(self, session_id: str) -> tuple[int, int]:
        session = await self.load(session_id)
        return len(session.events), int(session.state.get("turn_count", 0))


def user_event(turn: int, delta: dict[str, Any]) -> Any:
    from google.adk.events.event import Event
    from google.adk.events.event_actions import EventActions
    from google.genai import types

    content = types.Content(role="user", parts=[types.Part(text=f"{turn}: {TEXT}")])
    return Event(invocation_id=f"turn-{turn}", author="user", content=content, actions=EventActions(state_delta=delta))


# ---------------------------------------------------------------- workloads L and G
async def time_calls(call: Callable[[], Any], count: int) -> float:
    """Median seconds of `count` awaited calls."""
    times = []
    for _ in range(count):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


async def run_list(service: Any) -> float:
    """Median seconds of ``list_sessions`` of a user with `LIST_SESSIONS` sessions (verified)."""
    for i in range(LIST_SESSIONS):
        await service.create_session(app_name=APP, user_id="many", session_id=f"s{i}", state={"n": i})

    gc.collect()

    async def call() -> None:
        listed = await service.list_sessions(app_name=APP, user_id="many")
        if len(listed.sessions) != LIST_SESSIONS:
            raise AssertionError(f"list_sessions returned {len(listed.sessions)} sessions")

    return await time_calls(call, 5)


async def run_recent(service: Any) -> tuple[float, float]:
    """Median seconds of ``get_session(num_recent_events=20)`` on a long and on a short session.

    The calls alternate between the two sessions, so load on a shared machine hits both alike.
    """
    from google.adk.sessions.base_session_service import GetSessionConfig

    config = GetSessionConfig(num_recent_events=RECENT)
    sizes = {"long": LONG_SESSION, "short": SHORT_SESSION}
    for name, events in sizes.items():
        session = await service.create_session(app_name=APP, user_id="reader", session_id=name)
        for i in range(events):
            await service.append_event(session, user_event(i, {}))
    times: dict[str, list[float]] = {name: [] for name in sizes}
    gc.collect()
    for _ in range(100):
        for name in sizes:
            start = time.perf_counter()
            got = await service.get_session(app_name=APP, user_id="reader", session_id=name, config=config)
            times[name].append(time.perf_counter() - start)
            if got is None or len(got.events) != RECENT:
                raise AssertionError("get_session returned the wrong events")
    return statistics.median(times["long"]), statistics.median(times["short"])


# ---------------------------------------------------------------- the run
@dataclass
class Figures:
    #: Per workload and run: (ours, ADK's); ADK's is a "failed: ..." text when its service raised.
    workloads: dict[str, list[tuple[Sample, Sample | str]]] = field(default_factory=lambda: {w: [] for w in WORKLOADS})
    list_s: tuple[float, float] | None = None
    recent_s: tuple[tuple[float, float], tuple[float, float]] | None = None


async def w_run(make: Factory, args: Any, *, peer: bool) -> dict[str, Sample | str]:
    """W1 at concurrency 1 then W2 on its sessions, then W1 at 50 on a fresh service.

    `peer`: ADK's service; an error it raises (its SQLite service fails at concurrency 50 with
    "database is locked") is reported in the table instead of ending the benchmark. Ours raises.
    """
    out: dict[str, Sample | str] = {}
    async with make() as service:
        side = ServiceSide(service)
        out["W1 c1"], ids = await run_w1(side, 1, args.sessions, args.turns)
        out["W2"] = await run_w2(side, ids, args.reads)
    async with make() as service:
        side = ServiceSide(service)
        try:
            out["W1 c50"], _ = await run_w1(side, 50, args.sessions, args.turns)
        except Exception as exc:
            await side.drain()
            if not peer:
                raise
            reason = str(exc).splitlines()[0][:80]
            print(f"ADK service failed W1 c50: {type(exc).__name__}: {reason}", file=sys.stderr)
            out["W1 c50"] = f"failed: {type(exc).__name__} ({reason})"
    return out


def ops(value: Sample | str) -> str:
    return value if isinstance(value, str) else f"{value.ops:,.0f}"


async def measure(pair: Pair, args: Any) -> Figures:
    figures = Figures()
    for run in range(args.runs):
        sides: list[tuple[str, Factory]] = [("ours", pair.ours), ("theirs", pair.theirs)]
        if run % 2:  # alternate who goes first, so drift on a shared machine favours neither
            sides.reverse()
        measured = {label: await w_run(make, args, peer=label == "theirs") for label, make in sides}
        for w in WORKLOADS:
            mine = measured["ours"][w]
            assert isinstance(mine, Sample)
            figures.workloads[w].append((mine, measured["theirs"][w]))
        summary = ", ".join(f"{w} {ops(measured['ours'][w])}/{ops(measured['theirs'][w])}" for w in WORKLOADS)
        print(f"run {run + 1}/{args.runs} adk {pair.name} (ours/ADK ops/s): {summary}", file=sys.stderr)
    # A 3,000-event session must hold all its events: our store keeps `max_history` (default 1,000).
    async with pair.ours(max_history=LONG_SESSION + 1000) as ours:
        ours_list = await run_list(ours)
        ours_recent = await run_recent(ours)
    async with pair.theirs() as theirs:
        theirs_list = await run_list(theirs)
        theirs_recent = await run_recent(theirs)
    figures.list_s = (ours_list, theirs_list)
    figures.recent_s = (ours_recent, theirs_recent)
    print(f"adk {pair.name}: list {ours_list * 1000:.1f}/{theirs_list * 1000:.1f} ms", file=sys.stderr)
    return figures


def verdict(value: float, target: float | None) -> str:
    return "" if target is None else f"≥ {target:g}: {'met' if value >= target else 'NOT met'}"


def table(results: dict[str, Figures], pairs: list[Pair], runs: int) -> str:
    lines = [
        "| pair | workload | ours | ours p50 ms | ADK service | ADK | ADK p50 ms | ratio | target |",
        "|---|---|---:|---:|---|---:|---:|---:|---|",
    ]
    for pair in pairs:
        figures = results[pair.name]
        for w in WORKLOADS:
            pairs_w = figures.workloads[w]
            ours_ops = statistics.median(p[0].ops for p in pairs_w)
            ours_p50 = statistics.median(p[0].p50_ms for p in pairs_w)
            theirs = [p[1] for p in pairs_w if isinstance(p[1], Sample)]
            if len(theirs) < len(pairs_w):
                failure = next(p[1] for p in pairs_w if isinstance(p[1], str))
                lines.append(
                    f"| {pair.name} | {w} (ops/s) | {ours_ops:,.0f} | {ours_p50:.3f} | {pair.peer_label} "
                    f"| {failure} | | — | {'' if w not in pair.targets else 'NOT measurable'} |"
                )
                continue
            theirs_ops = statistics.median(t.ops for t in theirs)
            theirs_p50 = statistics.median(t.p50_ms for t in theirs)
            ratio = statistics.median(p[0].ops / t.ops for p, t in zip(pairs_w, theirs, strict=True))
            lines.append(
                f"| {pair.name} | {w} (ops/s) | {ours_ops:,.0f} | {ours_p50:.3f} "
                f"| {pair.peer_label} | {theirs_ops:,.0f} | {theirs_p50:.3f} "
                f"| {ratio:.2f} | {verdict(ratio, pair.targets.get(w))} |"
            )
        assert figures.list_s is not None and figures.recent_s is not None
        ours_l, theirs_l = figures.list_s
        lines.append(
            f"| {pair.name} | L: list_sessions, {LIST_SESSIONS:,} sessions (ms) | {ours_l * 1000:.1f} | "
            f"| {pair.peer_label} | {theirs_l * 1000:.1f} | | {theirs_l / ours_l:.1f} | "
            f"{verdict(theirs_l / ours_l, 20.0)} |"
        )
        (ours_long, ours_short), (theirs_long, theirs_short) = figures.recent_s
        lines.append(
            f"| {pair.name} | G: get_session(num_recent_events={RECENT}), {LONG_SESSION:,} events (ms) "
            f"| {ours_long * 1000:.2f} | | {pair.peer_label} | {theirs_long * 1000:.2f} | "
            f"| {theirs_long / ours_long:.1f} | |"
        )
        flat = ours_long / ours_short
        lines.append(
            f"| {pair.name} | G: same, {SHORT_SESSION} events (ms) | {ours_short * 1000:.2f} | | {pair.peer_label} "
            f"| {theirs_short * 1000:.2f} | | {theirs_short / ours_short:.1f} "
            f"| ours {LONG_SESSION:,} vs {SHORT_SESSION} events: x{flat:.2f} (ADK x{theirs_long / theirs_short:.2f}) |"
        )
    return "\n".join(lines) + f"\n\nW1/W2: median of {runs} runs (ratio: median of the per-run ratios); L, G: one run."


async def main(args: Any) -> int:
    """Run every available pair (filtered by ``args.backends``), print the table, write RESULTS.md."""
    missing = adk_missing()
    if missing is not None:
        print(f"skipping the ADK peers: {missing}", file=sys.stderr)
        return 0
    usable, skipped = usable_peers(PAIRS, args.backends, "adk")
    if not usable:
        return 0
    results = {pair.name: await measure(pair, args) for pair in usable}
    body = "\n".join(
        [
            "## Google ADK: our session service vs ADK's own, through ADK's interface",
            "",
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {machine()}; shared machine, so compare ratios.",
            f"W1: {args.sessions} sessions x {args.turns} turns, each `get_session(num_recent_events="
            f"{HISTORY_WINDOW})` + `append_event` (a ~300-character user event whose state_delta sets turn_count), "
            f"then verified; W2: {args.reads:,} `get_session` reads. Ours = `AgentSessionsService` on a "
            "`SessionManager` (see `benchmarks/peers_adk.py`).",
            "",
            table(results, usable, args.runs),
            *(["", *skipped] if skipped else []),
            "",
            "Rerun: `make bench` (or `python -m benchmarks.peers_adk`).",
        ]
    )
    print(body)
    if args.write:
        write_results(body, begin=BEGIN, end=END)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers_adk", description=__doc__)
    parser.add_argument("--backends", nargs="*", default=[], help="pairs to run: sqlite, postgres, memory")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sessions", type=int, default=SESSIONS)
    parser.add_argument("--turns", type=int, default=TURNS)
    parser.add_argument("--reads", type=int, default=READS)
    parser.add_argument("--no-write", dest="write", action="store_false")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
