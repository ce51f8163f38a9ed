"""W3 and the scale row run end to end (at small sizes here; `make bench` runs the full ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_w3_and_scale_rows_run_verify_and_report_ratios_without_recording() -> None:
    before = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.scaling",
            *("--backends", "memory", "sqlite"),
            *("--runs", "1", "--long-history", "120", "--w3-turns", "20"),
            *("--scale-small", "50", "--scale-large", "600", "--scale-reads", "50", "--no-write"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    rows = [line.split("|") for line in done.stdout.splitlines() if line.startswith(("| memory |", "| sqlite |"))]
    # One W3 row and one scale row per backend, each with its ratio and its verdict.
    assert [row[1].strip() for row in rows] == ["memory", "sqlite", "memory", "sqlite"]
    for row in rows[:2]:
        assert float(row[4]) > 0 and ("≤ 1.25: met" in row[10] or "≤ 1.25: NOT met" in row[10])
    for row in rows[2:]:
        assert float(row[4]) > 0 and float(row[10]) > 0 and "≤ 1.3" in row[12]
    assert "with 50 and with 600 sessions stored" in done.stdout
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == before
