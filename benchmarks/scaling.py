"""W3 "long history" and the scale row: does a turn cost more on a long history, and a get more
in a big store? Each beside the raw driver doing the same work, in the same run.

    python -m benchmarks.scaling                       # every backend, 3 runs, writes RESULTS.md
    python -m benchmarks.scaling --backends sqlite --runs 1 --scale-large 5000 --no-write

(`python -m benchmarks` runs it too, after W1/W2.)

- W3: 10 sessions pre-filled with 2,000 history entries each (`--long-history`) and 10 whose
  history just fills the loaded window (50 entries), then 200 timed turns on each
  (`--w3-turns`): the W1 turn (get with the history window, append a ~300-byte entry, set
  ``turn_count``, save), round robin, one at a time, a long and a short turn in alternation so
  that drift on a shared machine hits both alike. Figure: the p50 of a turn on the long
  histories / on the short ones (target ≤ 1.25: a turn pays for the window it loads, not for the
  history behind it). The library's store keeps up to 5,000 entries per session (`max_history`),
  so nothing is trimmed on either side.
- Scale: get p50 (`--scale-reads` reads of random sessions, one at a time) with 1,000 and with
  100,000 stored sessions (`--scale-small`, `--scale-large`; each session with 2 history
  entries): one store per size and side, read in alternation. The library pre-fills with
  `SessionStore.restore_many` (the bulk path, 500 sessions a call), the raw client with its own
  bulk insert (`executemany`, a pipeline). Figures: p50 at 100,000 / p50 at 1,000 (target
  ≤ 1.3), and the pre-fill times.

Each store is filled once per backend; the timed phases are repeated `--runs` times (library and
raw back to back in W3, alternating which goes first) and reported as medians, ratios as medians
of the per-run ratios.
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

from agent_sessions import new_session_id

from .harness import (
    HISTORY_WINDOW,
    Backend,
    Sample,
    Side,
    fmt,
    history_entry,
    library_side,
    machine,
    median_sample,
    percentile,
    raw_side,
    sample,
    settle,
    standalone_parser,
    usable_peers,
    write_results,
)

BEGIN = "<!-- scaling:begin (written by `python -m benchmarks` or `python -m benchmarks.scaling`) -->"
END = "<!-- scaling:end -->"

W3_SESSIONS = 10
LONG_HISTORY = 2000
W3_TURNS = 200
#: The library's `max_history` in W3: above every history the benchmark builds (no trimming).
W3_MAX_HISTORY = 5000
W3_TARGET = 1.25
SCALE_SMALL = 1000
SCALE_LARGE = 100_000
SCALE_READS = 2000
SCALE_HISTORY = 2
SCALE_TARGET = 1.3
#: Sessions handed to one `fill` call while pre-filling (the library side batches by 500 inside).
FILL_CHUNK = 5000
WARM_READS = 50


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--long-history", type=int, default=LONG_HISTORY, help="W3: entries per long session")
    parser.add_argument("--w3-turns", type=int, default=W3_TURNS, help="W3: timed turns per history length")
    parser.add_argument("--scale-small", type=int, default=SCALE_SMALL, help="scale: the small store's sessions")
    parser.add_argument("--scale-large", type=int, default=SCALE_LARGE, help="scale: the large store's sessions")
    parser.add_argument("--scale-reads", type=int, default=SCALE_READS, help="scale: timed reads per size")
    parser.add_argument("--no-scaling", dest="scaling", action="store_false", help="skip W3 and the scale row")


def entries(count: int) -> list[dict[str, Any]]:
    return [history_entry(n) for n in range(count)]


# ---------------------------------------------------------------- W3
async def timed_turns(side: Side, ids: dict[str, list[str]], turns: int) -> dict[str, Sample]:
    """`turns` turns on each kind of session, round robin, one at a time, a long and a short
    turn in alternation (so drift on a shared machine hits both alike); then all verified."""
    latencies: dict[str, list[float]] = {kind: [] for kind in ids}
    settle()
    for n in range(turns):
        kinds = list(ids) if n % 2 == 0 else list(reversed(ids))
        for kind in kinds:
            t0 = time.perf_counter()
            await side.turn(ids[kind][n % len(ids[kind])], n)
            latencies[kind].append(time.perf_counter() - t0)
    for sid in [sid for group in ids.values() for sid in group]:
        got = await side.read(sid)
        if got != (HISTORY_WINDOW, turns // W3_SESSIONS):
            raise AssertionError(f"W3 verification failed: (window entries, turn_count) = {got}")
    return {kind: sample(turns, sum(times), times) for kind, times in latencies.items()}


async def w3_run(side: Side, args: Any) -> dict[str, Sample]:
    """Fresh long and short sessions, then the timed turns on both."""
    ids = {kind: [new_session_id() for _ in range(W3_SESSIONS)] for kind in ("long", "short")}
    await side.fill([(sid, f"user{i}") for i, sid in enumerate(ids["long"])], entries(args.long_history))
    await side.fill([(sid, f"user{i}") for i, sid in enumerate(ids["short"])], entries(HISTORY_WINDOW))
    for sid in ids["long"] + ids["short"]:
        await side.read(sid)  # warm: the first read of a fresh session pays for what a turn does not
    return await timed_turns(side, ids, args.w3_turns)


async def run_w3(backend: Backend, args: Any) -> list[dict[str, dict[str, Sample]]]:
    """Per run: {"library"|"raw": {"long"|"short": Sample}}."""
    runs: list[dict[str, dict[str, Sample]]] = []
    async with AsyncExitStack() as stack:
        sides: dict[str, Side] = {
            "library": await stack.enter_async_context(library_side(backend, max_history=W3_MAX_HISTORY)()),
            "raw": await stack.enter_async_context(raw_side(backend)()),
        }
        for run in range(args.runs):
            labels = ["library", "raw"] if run % 2 == 0 else ["raw", "library"]
            runs.append({label: await w3_run(sides[label], args) for label in labels})
            lib, raw = runs[-1]["library"], runs[-1]["raw"]
            print(
                f"W3 run {run + 1}/{args.runs} {backend.name} (p50 ms long/short): library "
                f"{lib['long'].p50_ms:.3f}/{lib['short'].p50_ms:.3f}, raw {raw['long'].p50_ms:.3f}/"
                f"{raw['short'].p50_ms:.3f}",
                file=sys.stderr,
            )
    return runs


def w3_table(results: dict[str, list[dict[str, dict[str, Sample]]]], backends: Sequence[Backend]) -> str:
    lines = [
        "| backend | library long p50 ms | short p50 ms | long/short | raw client | raw long p50 ms "
        "| raw short p50 ms | raw long/short | library/raw ops/s (long) | target |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for backend in backends:
        runs = results.get(backend.name)
        if not runs:
            continue
        med = {
            (side, kind): median_sample([r[side][kind] for r in runs])
            for side in ("library", "raw")
            for kind in ("long", "short")
        }
        growth = statistics.median(r["library"]["long"].p50_ms / r["library"]["short"].p50_ms for r in runs)
        raw_growth = statistics.median(r["raw"]["long"].p50_ms / r["raw"]["short"].p50_ms for r in runs)
        versus = statistics.median(r["library"]["long"].ops / r["raw"]["long"].ops for r in runs)
        verdict = f"≤ {W3_TARGET:g}: {'met' if growth <= W3_TARGET else 'NOT met'}"
        lines.append(
            f"| {backend.name} | {med['library', 'long'].p50_ms:.3f} | {med['library', 'short'].p50_ms:.3f} "
            f"| {growth:.2f} | {backend.raw_label} | {med['raw', 'long'].p50_ms:.3f} "
            f"| {med['raw', 'short'].p50_ms:.3f} | {raw_growth:.2f} | {versus:.2f} | {verdict} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- scale
async def fill_to(side: Side, ids: list[str], size: int) -> float:
    """Add sessions to `side` until it holds `size`; returns the seconds it took."""
    history = entries(SCALE_HISTORY)
    start = time.perf_counter()
    while len(ids) < size:
        chunk = [(new_session_id(), f"user{(len(ids) + i) % 1000}") for i in range(min(FILL_CHUNK, size - len(ids)))]
        await side.fill(chunk, history)
        ids.extend(sid for sid, _ in chunk)
    return time.perf_counter() - start


async def read_p50s(sides: dict[str, Side], ids: dict[str, list[str]], reads: int, seed: int) -> dict[str, float]:
    """p50 in ms of one read of a random stored session, per side; the sides take turns read by
    read (in a rotating order), so drift on a shared machine hits them all alike."""
    rng = random.Random(seed)
    labels = list(sides)
    for label in labels:
        for _ in range(WARM_READS):
            await sides[label].read(rng.choice(ids[label]))
    latencies: dict[str, list[float]] = {label: [] for label in labels}
    settle()
    for n in range(reads):
        for label in labels[n % len(labels) :] + labels[: n % len(labels)]:
            sid = rng.choice(ids[label])
            t0 = time.perf_counter()
            entries_read, _ = await sides[label].read(sid)
            latencies[label].append(time.perf_counter() - t0)
            if entries_read != SCALE_HISTORY:
                raise AssertionError(f"scale verification failed: {entries_read} history entries")
    return {label: percentile(times, 0.5) * 1000 for label, times in latencies.items()}


async def run_scale(backend: Backend, args: Any) -> dict[str, Any]:
    """{"fill": {side: {size: s}}, "p50": {size: [(library ms, raw ms) per run]}, "wall": s}.

    Four stores: the library's and the raw client's, each with the small and the large number of
    sessions, read in alternation."""
    started = time.perf_counter()
    sizes = (args.scale_small, args.scale_large)
    fill: dict[str, dict[int, float]] = {"library": {}, "raw": {}}
    p50: dict[int, list[tuple[float, float]]] = {size: [] for size in sizes}
    async with AsyncExitStack() as stack:
        sides: dict[str, Side] = {}
        ids: dict[str, list[str]] = {}
        for size in sizes:
            for label, make in (("library", library_side(backend)), ("raw", raw_side(backend))):
                key = f"{label} {size}"
                sides[key] = await stack.enter_async_context(make())
                ids[key] = []
                fill[label][size] = await fill_to(sides[key], ids[key], size)
        for run in range(args.runs):
            got = await read_p50s(sides, ids, args.scale_reads, run)
            for size in sizes:
                p50[size].append((got[f"library {size}"], got[f"raw {size}"]))
            print(
                f"scale run {run + 1}/{args.runs} {backend.name} (get p50 ms library/raw): "
                + ", ".join(
                    f"{size:,} sessions {got[f'library {size}']:.3f}/{got[f'raw {size}']:.3f}" for size in sizes
                ),
                file=sys.stderr,
            )
    return {"fill": fill, "p50": p50, "wall": time.perf_counter() - started}


def scale_table(results: dict[str, dict[str, Any]], backends: Sequence[Backend], small: int, large: int) -> str:
    lines = [
        f"| backend | get p50 ms, {small:,} | get p50 ms, {large:,} | {large:,}/{small:,} | raw client "
        f"| raw p50 ms, {small:,} | raw p50 ms, {large:,} | raw {large:,}/{small:,} | ratio, {large:,} "
        f"| pre-fill {large:,}: library s (restore_many) | raw s | target |",
        "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for backend in backends:
        result = results.get(backend.name)
        if not result:
            continue
        p50, fill = result["p50"], result["fill"]
        lib_small, lib_large = (statistics.median(p[0] for p in p50[s]) for s in (small, large))
        raw_small, raw_large = (statistics.median(p[1] for p in p50[s]) for s in (small, large))
        pairs = list(zip(p50[small], p50[large], strict=True))
        growth = statistics.median(b[0] / a[0] for a, b in pairs)
        raw_growth = statistics.median(b[1] / a[1] for a, b in pairs)
        versus = statistics.median(p[1] / p[0] for p in p50[large])
        verdict = f"≤ {SCALE_TARGET:g}: {'met' if growth <= SCALE_TARGET else 'NOT met'}"
        lines.append(
            f"| {backend.name} | {lib_small:.3f} | {lib_large:.3f} | {growth:.2f} | {backend.raw_label} "
            f"| {raw_small:.3f} | {raw_large:.3f} | {raw_growth:.2f} | {versus:.2f} "
            f"| {fmt(fill['library'][large])} | {fmt(fill['raw'][large])} | {verdict} |"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- main
async def main(args: Any, backends: list[Backend]) -> int:
    if not getattr(args, "scaling", True):
        return 0
    usable, skipped = usable_peers(backends, args.backends, "backend")
    w3: dict[str, list[dict[str, dict[str, Sample]]]] = {}
    scale: dict[str, dict[str, Any]] = {}
    walls = []
    for backend in usable:
        started = time.perf_counter()
        w3[backend.name] = await run_w3(backend, args)
        w3_wall = time.perf_counter() - started
        scale[backend.name] = await run_scale(backend, args)
        walls.append(f"{backend.name} {w3_wall:.0f} s + {scale[backend.name]['wall']:.0f} s")
    body = "\n".join(
        [
            "## Stores: W3 long history and the scale row, library vs raw client",
            "",
            f"{datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}; {machine()}; shared machine (other jobs running), "
            "so compare ratios, not absolute figures.",
            "",
            f"**W3**: {W3_SESSIONS} sessions with {args.long_history:,} history entries each (long) and "
            f"{W3_SESSIONS} with {HISTORY_WINDOW} (short: they just fill the loaded window), {args.w3_turns} timed "
            "turns on each (the W1 turn, one at a time, round robin, long and short turns in alternation), then "
            "verified. long/short = p50 of a turn on the long histories / on the short ones: what history length "
            "costs a turn.",
            "",
            w3_table(w3, usable),
            "",
            f"**Scale**: get p50 over {args.scale_reads:,} reads of random sessions with {args.scale_small:,} and with "
            f"{args.scale_large:,} sessions stored (each with {SCALE_HISTORY} history entries), one store per "
            "size and side, read in alternation; the library pre-fills with `restore_many` (500 sessions a "
            "call), the raw client with its bulk insert (`executemany` in one transaction; a redis-py pipeline "
            f"per 500). ratio = raw p50 / library p50 at {args.scale_large:,} (above 1: the library is faster); "
            f"pre-fill: seconds to store the {args.scale_large:,} sessions.",
            "",
            scale_table(scale, usable, args.scale_small, args.scale_large),
            *(["", *skipped] if skipped else []),
            "",
            f"Figures: median of {args.runs} runs (the stores are filled once; the timed phases repeat); ratios: "
            f"median of the per-run values. Wall time (W3 + scale): {', '.join(walls)}.",
            "",
            "Rerun: `make bench` (or `python -m benchmarks.scaling`).",
        ]
    )
    print(body)
    if args.write:
        write_results(body, begin=BEGIN, end=END)
    return 0


def parse(argv: list[str]) -> argparse.Namespace:
    parser = standalone_parser("python -m benchmarks.scaling", __doc__)
    add_arguments(parser)
    return parser.parse_args(argv)


if __name__ == "__main__":
    from .backends import BACKENDS

    sys.exit(asyncio.run(main(parse(sys.argv[1:]), BACKENDS)))
