"""Peak memory of exporting and importing 100,000 sessions: the streaming claim, measured.

    python -m benchmarks.export_rss                  # 100,000 sessions, embedded SQLite, report
    python -m benchmarks.export_rss --record         # ... and record the figures in RESULTS.md
    python -m benchmarks.export_rss --sessions 5000  # a quick run

Each phase runs in its own subprocess so its peak RSS (`ru_maxrss`) is its own:

1. setup (not measured): build the sessions in a memory store and export them to a file;
2. import: `import_sessions` of that file into an empty store (default: a fresh SQLite file);
3. export: `export_sessions` of that store to a new gzip file.

Exits non-zero if either measured phase peaks above the budget (default 200 MB) or the
counts do not match, so `make bench` catches a regression.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).with_name("RESULTS.md")
BEGIN = "<!-- export_rss:begin (written by `python -m benchmarks.export_rss --record`) -->"
END = "<!-- export_rss:end -->"
USERS_PER_SESSIONS = 10  # one user per 10 sessions: 10,000 user scopes at 100,000 sessions
HISTORY_PER_SESSION = 10


def peak_rss_mb() -> float:
    # Linux reports ru_maxrss in KiB.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def setup(sessions: int, path: Path) -> dict[str, Any]:
    from agent_sessions import MemorySessionStore, Session
    from agent_sessions.ops import export_sessions

    store = MemorySessionStore()
    now = time.time()
    users = max(1, sessions // USERS_PER_SESSIONS)
    for i in range(sessions):
        user = f"user-{i % users}"
        session = Session(
            user_id=user,
            created_at=now,
            last_accessed_at=now,
            expiry_at=now + 30 * 24 * 3600,
            state={"cart": [f"sku-{i % 97}", f"sku-{i % 89}"], "visits": i % 50, "locale": "en-GB"},
            preferences={"tone": "concise", "units": "metric"},
            ai_context={"model": "demo", "summary": f"customer {i} asked about orders and returns"},
            feature_flags={"beta": i % 3 == 0},
            environment={"device": "phone" if i % 2 else "desktop"},
        )
        history = [
            {"timestamp": now + h, "type": "tool_call", "data": {"tool": f"tool-{h % 6}", "duration": 0.01 * h}}
            for h in range(HISTORY_PER_SESSION)
        ]
        await store.restore(session, history)
    for u in range(users):
        await store.write_scopes(f"user-{u}", {"pref:tone": "concise", "user:tier": "gold" if u % 5 == 0 else "std"})
    await store.write_scopes(None, {"app:banner": "welcome"})
    report = await export_sessions(store, path)
    return {"sessions": report.sessions, "bytes": report.bytes_written}


async def run_import(url: str, path: Path) -> dict[str, Any]:
    from agent_sessions import create_store
    from agent_sessions.ops import import_sessions

    baseline = peak_rss_mb()
    started = time.perf_counter()
    async with create_store(url) as store:
        report = await import_sessions(store, path)
    return {
        "sessions": report.imported,
        "seconds": time.perf_counter() - started,
        "baseline_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
    }


async def run_export(url: str, path: Path) -> dict[str, Any]:
    from agent_sessions import create_store
    from agent_sessions.ops import export_sessions

    baseline = peak_rss_mb()
    started = time.perf_counter()
    async with create_store(url) as store:
        report = await export_sessions(store, path)
    return {
        "sessions": report.sessions,
        "bytes": report.bytes_written,
        "seconds": time.perf_counter() - started,
        "baseline_mb": baseline,
        "peak_rss_mb": peak_rss_mb(),
    }


def child(args: argparse.Namespace) -> None:
    # The library is imported inside the phase, after argument parsing: the baseline figure
    # is the interpreter plus the library, before any session is touched.
    path = Path(args.file)
    if args.phase == "setup":
        result = asyncio.run(setup(args.sessions, path))
    elif args.phase == "import":
        result = asyncio.run(run_import(args.store, path))
    else:
        result = asyncio.run(run_export(args.store, path))
    print(json.dumps(result))


def run_phase(phase: str, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.export_rss", "--phase", phase, *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"phase {phase} failed with exit code {done.returncode}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def record(text: str) -> None:
    """Replace (or append) this benchmark's delimited section of RESULTS.md, nothing else."""
    current = RESULTS.read_text() if RESULTS.exists() else "# Benchmark results\n"
    section = f"{BEGIN}\n{text}{END}\n"
    if BEGIN in current and END in current:
        head, rest = current.split(BEGIN, 1)
        _, tail = rest.split(END, 1)
        updated = head + section + tail.lstrip("\n")
    else:
        updated = current.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=100_000)
    parser.add_argument("--store", help="an EMPTY store to import into (default: a fresh SQLite file)")
    parser.add_argument("--budget-mb", type=float, default=200.0)
    parser.add_argument("--record", action="store_true", help="write the figures into benchmarks/RESULTS.md")
    parser.add_argument("--phase", choices=["setup", "import", "export"], help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        child(args)
        return

    # With the default store, a run at a twentieth of the size shows the peak does not grow
    # with the number of sessions; a given --store is used once (it must start empty).
    sizes = [args.sessions] if args.store else sorted({max(1, args.sessions // 20), args.sessions})
    runs: list[tuple[int, dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    with tempfile.TemporaryDirectory(prefix="export_rss-") as tmp:
        for n in sizes:
            source = Path(tmp) / f"source-{n}.jsonl.gz"
            url = args.store or f"sqlite+aiosqlite:///{Path(tmp) / f'sessions-{n}.db'}"
            print(f"building {n:,} sessions ...", flush=True)
            built = run_phase("setup", "--sessions", str(n), "--file", str(source))
            print(f"importing {built['sessions']:,} sessions ({built['bytes']:,} bytes gzip) ...", flush=True)
            imported = run_phase("import", "--store", url, "--file", str(source))
            print("exporting ...", flush=True)
            exported = run_phase("export", "--store", url, "--file", str(Path(tmp) / f"export-{n}.jsonl.gz"))
            runs.append((n, built, imported, exported))

    store_name = "SQLite (embedded default)" if args.store is None else args.store.split("://", 1)[0]
    big = runs[-1][1]
    lines = [
        f"## Export / import peak RSS — {args.sessions:,} sessions",
        "",
        f"Store: {store_name}; each session ~{HISTORY_PER_SESSION} history entries, one user per "
        f"{USERS_PER_SESSIONS} sessions; gzip JSON Lines ({big['bytes']:,} bytes at {args.sessions:,} sessions). "
        f"Each phase in its own process; peak RSS is its `ru_maxrss`. "
        f"Python {platform.python_version()}, {platform.machine()}; {time.strftime('%Y-%m-%d')}. "
        f"Budget: {args.budget_mb:.0f} MB peak RSS per phase.",
        "",
        "| phase | sessions | seconds | peak RSS (MB) | RSS after imports (MB) |",
        "|---|---:|---:|---:|---:|",
    ]
    for _, _, imported, exported in runs:
        for name, r in (("import", imported), ("export", exported)):
            lines.append(
                f"| {name} | {r['sessions']:,} | {r['seconds']:.1f} | {r['peak_rss_mb']:.1f} | {r['baseline_mb']:.1f} |"
            )
    lines += ["", "Rerun: `make bench` (or `python -m benchmarks.export_rss --record`)."]
    text = "\n".join(lines) + "\n"
    print(text)

    failures = []
    for n, built, imported, exported in runs:
        if not built["sessions"] == imported["sessions"] == exported["sessions"] == n:
            failures.append(
                f"session counts differ at {n}: {built['sessions']}, {imported['sessions']}, {exported['sessions']}"
            )
        for name, r in (("import", imported), ("export", exported)):
            if r["peak_rss_mb"] > args.budget_mb:
                failures.append(f"{name} of {n:,} peaked at {r['peak_rss_mb']:.1f} MB > budget {args.budget_mb:.0f} MB")
    if args.record and not failures:
        record(text)
        print(f"recorded in {RESULTS}")
    if failures:
        raise SystemExit("FAILED: " + "; ".join(failures))


if __name__ == "__main__":
    main()
