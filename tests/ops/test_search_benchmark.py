"""The search benchmark runs end to end (at small sizes here; `make bench` runs the full ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_search_figures_run_verify_and_report_ratios_and_the_plan_without_recording() -> None:
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.search",
            *("--backends", "memory", "sqlite"),
            *("--runs", "1", "--search-small", "50", "--search-large", "1500", "--search-reads", "20", "--no-write"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith(("| memory |", "| sqlite |"))]
    assert [row[1].strip() for row in rows] == ["memory", "sqlite"]
    for row in rows:
        assert float(row[4]) > 0 and float(row[6]) > 0 and "met" in row[8]
    assert "SCAN agent_session_search VIRTUAL TABLE INDEX" in done.stdout  # the plan starts from FTS5
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before
