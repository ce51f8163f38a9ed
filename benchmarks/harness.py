"""Store benchmark: workloads W1 ("chat turns") and W2 ("hot read") on every available backend,
each next to a raw baseline written with the bare client, in the same process and run.

    python -m benchmarks                       # every backend, 3 runs, writes RESULTS.md
    python -m benchmarks --backends sqlite     # a subset
    python -m benchmarks --runs 1 --no-write   # a quick look

Workloads (`run_w1`, `run_w2`):

- W1: 200 sessions; each is created, then gets 20 turns. A turn reads the session with its
  recent history, appends one history entry of about 300 bytes of JSON, sets the state key
  ``turn_count`` and saves. Afterwards every session is read back and checked (20 entries,
  ``turn_count == 20``). Run at concurrency 1 and 50 (tasks on distinct sessions).
  ops/s = turns / wall time of the turn phase; p50/p99 = latency of one turn.
- W2: 5,000 reads of those sessions (round robin), one at a time.

The library side goes through `SessionManager` (``get_session`` + ``update_session``), the way
an application uses it. Each figure is the median of the runs; ratio = library / raw ops/s.

Adding a backend (e.g. Redis) = adding one `Backend` entry to `BACKENDS` in
`benchmarks/backends.py`:

    Backend(
        name="redis",                       # row label
        raw_label="redis-py",               # names the bare client of the baseline
        available=redis_available,          # () -> str | None: None if usable, else why skipped
        library=redis_library_store,        # () -> async context manager yielding a fresh, empty,
                                            #    isolated SessionStore, cleaned up on exit
        raw=redis_raw_client,               # () -> async context manager yielding a RawClient
        targets={"W1 c1": 0.7},             # optional: minimum library/raw ratio per workload
    )

A `RawClient` (protocol below) does the same work as the library with the bare client, the
simplest correct way: ``create(session_id, user_id)`` stores an empty session;
``turn(session_id, entry)`` reads the record and its recent history window (decoded), appends
`entry` (a ``{"timestamp", "type", "data"}`` dict), increments ``state["turn_count"]`` and
saves with a version check; ``read(session_id)`` returns ``(history entries in the window,
turn_count)``; ``fill(sessions, history)`` stores many ``(session_id, user_id)`` sessions at
once, each with `history` (oldest first), the fastest simple way the client offers (the
pre-fill of W3 and of the scale row, see `benchmarks.scaling`). Concurrent calls always target
distinct sessions.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, TypeVar

from agent_sessions import Session, SessionManager, SessionStore, new_session_id
from agent_sessions.stores.base import Restore

RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN = "<!-- stores:begin (written by `python -m benchmarks`) -->"
END = "<!-- stores:end -->"

SESSIONS = 200
TURNS = 20
READS = 5000
HISTORY_WINDOW = 50  # the store default; raw baselines read the same window
TEXT = (
    "The user asked about the refund policy for an order placed last week; the assistant looked up "
    "the order, confirmed it is eligible, explained the steps and offered to start the return now. "
    "The user agreed and asked for an email confirmation."
)


class RawClient(Protocol):
    """The bare-client baseline (see the module docstring)."""

    async def create(self, session_id: str, user_id: str) -> None: ...

    async def turn(self, session_id: str, entry: dict[str, Any]) -> None: ...

    async def read(self, session_id: str) -> tuple[int, int]: ...

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None: ...


@dataclass(frozen=True)
class Backend:
    """One row group of the table: a store and its raw baseline."""

    name: str
    raw_label: str
    available: Callable[[], str | None]
    #: Called with store options (e.g. ``max_history=``) or none.
    library: Callable[..., AbstractAsyncContextManager[SessionStore]]
    raw: Callable[[], AbstractAsyncContextManager[RawClient]]
    targets: dict[str, float] = field(default_factory=dict)


@dataclass
class Sample:
    ops: float
    p50_ms: float
    p99_ms: float


def history_entry(turn: int) -> dict[str, Any]:
    """About 300 bytes of JSON once encoded."""
    return {"timestamp": time.time(), "type": "message", "data": {"role": "user", "turn": turn, "text": TEXT}}


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def sample(count: int, wall: float, latencies: list[float]) -> Sample:
    return Sample(count / wall, percentile(latencies, 0.5) * 1000, percentile(latencies, 0.99) * 1000)


# ---------------------------------------------------------------- the two sides of each workload
class Side(Protocol):
    async def create(self, user_id: str) -> str: ...

    async def turn(self, session_id: str, turn: int) -> None: ...

    async def read(self, session_id: str) -> tuple[int, int]: ...

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None: ...


#: Sessions per `restore_many` call when the library side pre-fills a store.
FILL_BATCH = 500


class LibrarySide:
    """The workload through `SessionManager`, as an application would run it."""

    def __init__(self, store: SessionStore) -> None:
        self.manager = SessionManager(store, auto_cleanup=False)

    async def create(self, user_id: str) -> str:
        return (await self.manager.create_session(user_id=user_id)).session_id

    async def turn(self, session_id: str, turn: int) -> None:
        session = await self.manager.get_session(session_id)
        if session is None:
            raise AssertionError("a benchmark session vanished")
        session.add_history_entry("message", history_entry(turn)["data"])
        session.set("turn_count", session.get("turn_count", 0) + 1)
        await self.manager.update_session(session)

    async def read(self, session_id: str) -> tuple[int, int]:
        session = await self.manager.get_session(session_id)
        if session is None:
            raise AssertionError("a benchmark session vanished")
        return len(session.history), int(session.get("turn_count", 0))

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None:
        """Store `sessions` with `history` each through the bulk path, `restore_many`."""
        store, now = self.manager.store, time.time()
        expiry = now + self.manager.session_lifetime
        for start in range(0, len(sessions), FILL_BATCH):
            items = [
                Restore(
                    Session(session_id=sid, user_id=uid, created_at=now, last_accessed_at=now, expiry_at=expiry),
                    history,
                )
                for sid, uid in sessions[start : start + FILL_BATCH]
            ]
            if not all(await store.restore_many(items)):
                raise AssertionError("a pre-filled session id already existed")


class RawSide:
    def __init__(self, client: RawClient) -> None:
        self.client = client

    async def create(self, user_id: str) -> str:
        session_id = new_session_id()
        await self.client.create(session_id, user_id)
        return session_id

    async def turn(self, session_id: str, turn: int) -> None:
        await self.client.turn(session_id, history_entry(turn))

    async def read(self, session_id: str) -> tuple[int, int]:
        return await self.client.read(session_id)

    async def fill(self, sessions: list[tuple[str, str]], history: list[dict[str, Any]]) -> None:
        await self.client.fill(sessions, history)


def settle() -> None:
    """Collect garbage before a timed phase, so neither side pays for what the other left (a
    full collection after the other side's run halved a 4 ms raw-dict phase)."""
    gc.collect()


# ---------------------------------------------------------------- workloads
async def run_w1(
    side: Side, concurrency: int, sessions: int = SESSIONS, turns: int = TURNS
) -> tuple[Sample, list[str]]:
    """Create `sessions`, give each `turns` turns with `concurrency` tasks, verify; time the turns.

    Creation (untimed) runs at the same concurrency, so connection pools are warm when timing starts.
    """
    ids: list[str] = []

    async def creator(start: int) -> None:
        for i in range(start, sessions, concurrency):
            ids.append(await side.create(f"user{i % 50}"))

    await asyncio.gather(*(creator(k) for k in range(concurrency)))
    queue: asyncio.Queue[str] = asyncio.Queue()
    for sid in ids:
        queue.put_nowait(sid)
    latencies: list[float] = []

    async def worker() -> None:
        while not queue.empty():
            sid = queue.get_nowait()
            for n in range(1, turns + 1):
                start = time.perf_counter()
                await side.turn(sid, n)
                latencies.append(time.perf_counter() - start)

    settle()
    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall = time.perf_counter() - start
    for sid in ids:
        entries, count = await side.read(sid)
        if (entries, count) != (turns, turns):
            raise AssertionError(f"verification failed: {entries} entries, turn_count={count}, expected {turns}")
    return sample(len(latencies), wall, latencies), ids


async def run_w2(side: Side, ids: list[str], reads: int = READS) -> Sample:
    latencies = []
    settle()
    start = time.perf_counter()
    for i in range(reads):
        t0 = time.perf_counter()
        await side.read(ids[i % len(ids)])
        latencies.append(time.perf_counter() - t0)
    return sample(reads, time.perf_counter() - start, latencies)


WORKLOADS = ("W1 c1", "W1 c50", "W2")


async def one_run(make_side: Callable[[], AbstractAsyncContextManager[Side]], args: Any) -> dict[str, Sample]:
    out: dict[str, Sample] = {}
    async with make_side() as side:
        out["W1 c1"], _ = await run_w1(side, 1, args.sessions, args.turns)
    async with make_side() as side:
        out["W1 c50"], ids = await run_w1(side, 50, args.sessions, args.turns)
        out["W2"] = await run_w2(side, ids, args.reads)
    return out


def library_side(backend: Backend, **options: Any) -> Callable[[], AbstractAsyncContextManager[Side]]:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make() -> Any:
        async with backend.library(**options) as store:
            yield LibrarySide(store)

    return make


def raw_side(backend: Backend) -> Callable[[], AbstractAsyncContextManager[Side]]:
    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def make() -> Any:
        async with backend.raw() as client:
            yield RawSide(client)

    return make


# ---------------------------------------------------------------- report
def median_sample(samples: list[Sample]) -> Sample:
    return Sample(
        statistics.median(s.ops for s in samples),
        statistics.median(s.p50_ms for s in samples),
        statistics.median(s.p99_ms for s in samples),
    )


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    try:
        nproc = subprocess.run(["nproc"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        nproc = str(os.cpu_count())
    system = f"{platform.system()} {platform.machine()}"
    return f"nproc={nproc}, CPU {cpu_model()}, Python {platform.python_version()}, {system}"


def fmt(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def table(runs: dict[str, dict[str, list[tuple[Sample, Sample]]]], backends: list[Backend], count: int) -> str:
    """The markdown table: medians over the runs; ratios and gains are medians of the per-run
    values (each run measures the library and the raw client back to back, so drift between
    runs on a shared machine cancels out)."""
    lines = [
        "| backend | workload | library ops/s | p50 ms | p99 ms | raw client | raw ops/s | raw p50 ms | raw p99 ms "
        "| ratio | target |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    notes = []
    for backend in backends:
        per = runs.get(backend.name)
        if not per:
            continue
        for workload in WORKLOADS:
            pairs = per[workload]
            lib = median_sample([p[0] for p in pairs])
            raw = median_sample([p[1] for p in pairs])
            ratio = statistics.median(p[0].ops / p[1].ops for p in pairs)
            target = backend.targets.get(workload)
            verdict = "" if target is None else f"≥ {target:g}: {'met' if ratio >= target else 'NOT met'}"
            lines.append(
                f"| {backend.name} | {workload} | {fmt(lib.ops)} | {lib.p50_ms:.3f} | {lib.p99_ms:.3f} "
                f"| {backend.raw_label} | {fmt(raw.ops)} | {raw.p50_ms:.3f} | {raw.p99_ms:.3f} "
                f"| {ratio:.2f} | {verdict} |"
            )
        c1, c50 = per["W1 c1"], per["W1 c50"]
        lib_gain = statistics.median(b[0].ops / a[0].ops for a, b in zip(c1, c50, strict=True))
        raw_gain = statistics.median(b[1].ops / a[1].ops for a, b in zip(c1, c50, strict=True))
        verdict = "at least as much" if lib_gain >= raw_gain else "less"
        notes.append(
            f"- {backend.name}: W1 at concurrency 50 vs 1 gains x{lib_gain:.2f} (library) vs x{raw_gain:.2f} "
            f"({backend.raw_label}): the library gains {verdict}."
        )
    return (
        "\n".join(lines)
        + "\n\n"
        + "\n".join(notes)
        + f"\n\nFigures: median of {count} runs; ratio and gains: median of the per-run values."
    )


class Available(Protocol):
    """A peer or pair of a framework benchmark: a name, and why it cannot run here (None: it can)."""

    name: str

    def available(self) -> str | None: ...


A = TypeVar("A", bound=Available)


def usable_peers(candidates: Sequence[A], names: Sequence[str], kind: str) -> tuple[list[A], list[str]]:
    """The candidates chosen by `names` (all when empty) that can run here, and a line per one
    skipped (also printed to stderr)."""
    usable: list[A] = []
    skipped: list[str] = []
    for candidate in candidates:
        if names and candidate.name not in names:
            continue
        reason = candidate.available()
        if reason is None:
            usable.append(candidate)
        else:
            skipped.append(f"- {candidate.name}: skipped ({reason})")
            print(f"skipping {kind} {candidate.name}: {reason}", file=sys.stderr)
    return usable, skipped


def write_results(body: str, *, begin: str = BEGIN, end: str = END) -> None:
    """Replace (or append) the section between the `begin` and `end` markers of RESULTS.md."""
    text = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"{begin}\n{body}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1]
        text = head + section + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section + "\n"
    RESULTS.write_text(text)


async def main(args: Any, backends: list[Backend]) -> int:
    chosen = [b for b in backends if not args.backends or b.name in args.backends]
    usable: list[Backend] = []
    skipped: list[str] = []
    for backend in chosen:
        reason = backend.available()
        if reason is None:
            usable.append(backend)
        else:
            skipped.append(f"- {backend.name}: skipped ({reason})")
            print(f"skipping {backend.name}: {reason}", file=sys.stderr)
    runs: dict[str, dict[str, list[tuple[Sample, Sample]]]] = {b.name: {w: [] for w in WORKLOADS} for b in usable}
    for run in range(args.runs):
        for backend in usable:
            # Alternate which side goes first so drift on a shared machine does not favour one.
            sides: list[tuple[str, Callable[[], AbstractAsyncContextManager[Side]]]] = [
                ("library", library_side(backend)),
                ("raw", raw_side(backend)),
            ]
            if run % 2:
                sides.reverse()
            measured: dict[str, dict[str, Sample]] = {}
            for label, make in sides:
                measured[label] = await one_run(make, args)
            for workload in WORKLOADS:
                runs[backend.name][workload].append((measured["library"][workload], measured["raw"][workload]))
            summary = ", ".join(
                f"{w} {measured['library'][w].ops:,.0f}/{measured['raw'][w].ops:,.0f}" for w in WORKLOADS
            )
            print(f"run {run + 1}/{args.runs} {backend.name} (library/raw ops/s): {summary}", file=sys.stderr)
    body = "\n".join(
        [
            "## Stores: W1 chat turns and W2 hot reads, library vs raw client",
            "",
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {machine()}; shared machine (other jobs running), "
            "so compare ratios, not absolute figures.",
            f"W1: {args.sessions} sessions x {args.turns} turns (read with history window, append a ~300-byte "
            "entry, set turn_count, save), then every session verified; ops/s = turns / wall time of the turn "
            f"phase; c1/c50 = concurrency. W2: {args.reads:,} reads. Library = `SessionManager` over the store; "
            "raw = the bare client doing the same work (see `benchmarks/raw.py`).",
            "",
            table(runs, usable, args.runs),
            *(["", *skipped] if skipped else []),
            "",
            "Rerun: `make bench` (or `python -m benchmarks`).",
        ]
    )
    print(body)
    if args.write:
        write_results(body)
    return 0


def standalone_parser(prog: str, description: str | None) -> argparse.ArgumentParser:
    """The options every benchmark module's command line shares: ``--backends``, ``--runs``,
    ``--no-write``; each module adds its own."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--backends", nargs="*", default=[], help="names to run (default: all available)")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure; the median is reported")
    parser.add_argument("--no-write", dest="write", action="store_false", help="print only; leave RESULTS.md alone")
    return parser
