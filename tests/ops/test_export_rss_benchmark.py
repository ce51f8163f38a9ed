"""The export/import RSS benchmark runs (at a small size here; `make bench` runs 100,000)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_measures_both_phases_within_budget_without_recording() -> None:
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.export_rss", "--sessions", "400"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith(("| import |", "| export |"))]
    assert [row.split("|")[2].strip() for row in rows] == ["20", "20", "400", "400"]
    for row in rows:
        assert 0 < float(row.split("|")[4]) < 200
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before
