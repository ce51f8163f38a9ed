"""Peer rows: our `AgentsSession` next to the OpenAI Agents SDK's own sessions, through the SDK's
`Session` interface (`SQLAlchemySession` on SQLite and PostgreSQL, `RedisSession` on Redis).

    python -m benchmarks.peers_openai_agents --runs 1 --no-write   # a quick look
    python -m benchmarks                                           # runs these rows too

Both sides do the same turn through the same framework interface, the calls `Runner.run`
makes for a turn: ``get_items(limit=50)`` (the recent history the model is given), then
``add_items([item])`` with one ~300-byte user message. W1 = `harness.run_w1` with that turn
(200 sessions x 20 turns at concurrency 1 and 50, every session verified afterwards: 20
items), W2 = 5,000 ``get_items(limit=50)`` reads. ratio = ours / the peer's ops/s.

Our side does more per write than the peer: each `add_items` is a compare-and-set save of the
session record (version, renewed idle/absolute TTL, user index, state and preferences kept),
the peer appends rows and touches a timestamp. Our `get_items` loads the session (record,
history window, scopes) so that the `add_items` after it saves without loading again: the turn
(W1) gains a round trip, a bare read (W2) costs more than the peer's list read on Redis. The
SDK sessions run as documented, on one shared engine / client; their tables are created once,
before timing.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent_sessions import SessionManager, SessionStore, new_session_id

from .backends import PG_URL, postgres_store, reachable, sqlite_store
from .harness import (
    HISTORY_WINDOW,
    TEXT,
    WORKLOADS,
    Sample,
    Side,
    fmt,
    machine,
    median_sample,
    one_run,
    usable_peers,
    write_results,
)
from .redis_backend import REDIS_URL, delete_prefix, redis_available, redis_store

BEGIN = "<!-- openai_agents:begin (written by `python -m benchmarks`) -->"
END = "<!-- openai_agents:end -->"

#: Makes the SDK session object for a session id (the peer's sessions share one engine/client).
SdkSessionFactory = Callable[[str], Any]


def item(turn: int) -> dict[str, Any]:
    """One user message, about 300 bytes of JSON."""
    return {"role": "user", "content": f"turn {turn}: {TEXT}"}


class SessionSide:
    """The turn through the SDK's `Session` interface, on whichever session objects `make` gives."""

    def __init__(self) -> None:
        self.sessions: dict[str, Any] = {}

    async def turn(self, session_id: str, turn: int) -> None:
        session = self.sessions[session_id]
        await session.get_items(limit=HISTORY_WINDOW)
        await session.add_items([item(turn)])

    async def read(self, session_id: str) -> tuple[int, int]:
        items = await self.sessions[session_id].get_items(limit=HISTORY_WINDOW)
        return len(items), len(items)


class AdapterSide(SessionSide):
    """Ours: an `AgentsSession` per session, created for a user through the manager."""

    def __init__(self, store: SessionStore) -> None:
        super().__init__()
        self.manager = SessionManager(store, auto_cleanup=False)

    async def create(self, user_id: str) -> str:
        from agent_sessions.integrations.openai_agents import AgentsSession

        session = await AgentsSession.create(self.manager, user_id=user_id)
        self.sessions[session.session_id] = session
        return session.session_id


class PeerSide(SessionSide):
    """The SDK's own session class; it has no users, so `user_id` is not stored."""

    def __init__(self, factory: SdkSessionFactory) -> None:
        super().__init__()
        self.factory = factory

    async def create(self, user_id: str) -> str:
        session_id = new_session_id()
        self.sessions[session_id] = self.factory(session_id)
        return session_id


@dataclass(frozen=True)
class Peer:
    """One row group: our adapter on a store, and the SDK session it is compared with."""

    name: str
    peer_label: str
    available: Callable[[], str | None]
    ours: Callable[[], AbstractAsyncContextManager[SessionStore]]
    peer: Callable[[], AbstractAsyncContextManager[SdkSessionFactory]]
    targets: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------- the SDK's sessions
@asynccontextmanager
async def sqlalchemy_sessions(url: str, connect_args: dict[str, Any] | None = None) -> AsyncIterator[SdkSessionFactory]:
    from agents.extensions.memory import SQLAlchemySession
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, connect_args=connect_args or {})
    try:
        # Tables once, untimed: `create_tables=True` on every session would redo it per session.
        await SQLAlchemySession("setup", engine=engine, create_tables=True).get_items()
        yield lambda session_id: SQLAlchemySession(session_id, engine=engine)
    finally:
        await engine.dispose()


@asynccontextmanager
async def sqlite_peer() -> AsyncIterator[SdkSessionFactory]:
    with tempfile.TemporaryDirectory(prefix="agent_sessions_bench_") as tmp:
        async with sqlalchemy_sessions(f"sqlite+aiosqlite:///{Path(tmp) / 'peer.db'}") as factory:
            yield factory


@asynccontextmanager
async def postgres_peer() -> AsyncIterator[SdkSessionFactory]:
    from sqlalchemy.ext.asyncio import create_async_engine

    schema = f"bench_peer_{uuid.uuid4().hex[:10]}"
    admin = create_async_engine(PG_URL)
    try:
        async with admin.begin() as conn:
            await conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
        async with sqlalchemy_sessions(PG_URL, {"server_settings": {"search_path": schema}}) as factory:
            yield factory
    finally:
        async with admin.begin() as conn:
            await conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.dispose()


@asynccontextmanager
async def redis_peer() -> AsyncIterator[SdkSessionFactory]:
    from agents.extensions.memory import RedisSession
    from redis.asyncio import Redis

    prefix = f"bench_peer_{uuid.uuid4().hex[:10]}"
    client = Redis.from_url(REDIS_URL)
    try:
        yield lambda session_id: RedisSession(session_id, redis_client=client, key_prefix=prefix)
    finally:
        try:
            await delete_prefix(client, prefix)
        finally:
            await client.aclose()


PEERS: list[Peer] = [
    Peer("sqlite", "SQLAlchemySession", lambda: None, sqlite_store, sqlite_peer),
    Peer(
        "postgres",
        "SQLAlchemySession",
        lambda: reachable(PG_URL, 5432),
        postgres_store,
        postgres_peer,
        {"W1 c1": 1.0},
    ),
    Peer("redis", "RedisSession", redis_available, redis_store, redis_peer, {"W1 c1": 1.0}),
]


def sdk_missing() -> str | None:
    try:
        import agents  # noqa: F401
    except ImportError:
        return "openai-agents is not installed (pip install agent-sessions[openai-agents])"
    return None


# ---------------------------------------------------------------- runs and report
def adapter_side(peer: Peer) -> Callable[[], AbstractAsyncContextManager[Side]]:
    @asynccontextmanager
    async def make() -> AsyncIterator[Side]:
        async with peer.ours() as store:
            yield AdapterSide(store)

    return make


def peer_side(peer: Peer) -> Callable[[], AbstractAsyncContextManager[Side]]:
    @asynccontextmanager
    async def make() -> AsyncIterator[Side]:
        async with peer.peer() as factory:
            yield PeerSide(factory)

    return make


Runs = dict[str, dict[str, list[tuple[Sample, Sample]]]]


def table(runs: Runs, peers: list[Peer], count: int) -> str:
    lines = [
        "| backend | workload | AgentsSession ops/s | p50 ms | p99 ms | SDK session | SDK ops/s | SDK p50 ms "
        "| SDK p99 ms | ratio | target |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for peer in peers:
        for workload in WORKLOADS:
            pairs = runs[peer.name][workload]
            ours = median_sample([p[0] for p in pairs])
            theirs = median_sample([p[1] for p in pairs])
            ratio = statistics.median(p[0].ops / p[1].ops for p in pairs)
            target = peer.targets.get(workload)
            verdict = "" if target is None else f"≥ {target:g}: {'met' if ratio >= target else 'NOT met'}"
            lines.append(
                f"| {peer.name} | {workload} | {fmt(ours.ops)} | {ours.p50_ms:.3f} | {ours.p99_ms:.3f} "
                f"| {peer.peer_label} | {fmt(theirs.ops)} | {theirs.p50_ms:.3f} | {theirs.p99_ms:.3f} "
                f"| {ratio:.2f} | {verdict} |"
            )
    return "\n".join(lines) + f"\n\nFigures: median of {count} runs; ratio: median of the per-run values."


async def main(args: Any, peers: list[Peer] = PEERS) -> int:
    """Run the peer rows (skipped, with the reason, without the SDK or a backend); 0 on success."""
    missing = sdk_missing()
    if missing is not None:
        print(f"skipping the OpenAI Agents SDK peer rows: {missing}", file=sys.stderr)
        return 0
    usable, skipped = usable_peers(peers, args.backends, "peer")
    if not usable:
        return 0
    runs: Runs = {p.name: {w: [] for w in WORKLOADS} for p in usable}
    for run in range(args.runs):
        for peer in usable:
            sides = [("ours", adapter_side(peer)), ("peer", peer_side(peer))]
            if run % 2:  # alternate who goes first, so drift on a shared machine favours neither
                sides.reverse()
            measured = {label: await one_run(make, args) for label, make in sides}
            for workload in WORKLOADS:
                runs[peer.name][workload].append((measured["ours"][workload], measured["peer"][workload]))
            summary = ", ".join(f"{w} {measured['ours'][w].ops:,.0f}/{measured['peer'][w].ops:,.0f}" for w in WORKLOADS)
            print(f"run {run + 1}/{args.runs} {peer.name} (AgentsSession/SDK ops/s): {summary}", file=sys.stderr)
    body = "\n".join(
        [
            "## OpenAI Agents SDK: `AgentsSession` vs the SDK's own sessions, through its `Session` interface",
            "",
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {machine()}; shared machine, so compare ratios.",
            f"A turn = `get_items(limit={HISTORY_WINDOW})` + `add_items([one ~300-byte message])`, the calls "
            f"`Runner.run` makes. W1: {args.sessions} sessions x {args.turns} turns, then every session verified; "
            f"W2: {args.reads:,} `get_items(limit={HISTORY_WINDOW})`. Ours also keeps the session record (user, "
            "TTLs, state, version) on every write. See `benchmarks/peers_openai_agents.py`.",
            "",
            table(runs, usable, args.runs),
            *(["", *skipped] if skipped else []),
            "",
            "Rerun: `make bench` (or `python -m benchmarks.peers_openai_agents`).",
        ]
    )
    print(body)
    if args.write:
        write_results(body, begin=BEGIN, end=END)
    return 0


if __name__ == "__main__":
    from .__main__ import parse

    sys.exit(asyncio.run(main(parse(sys.argv[1:]))))
