"""The README's quick start runs exactly as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quick_start_code() -> str:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match is not None, "README has no python block under 'Quick start'"
    return match.group(1)


def test_quick_start_is_at_most_20_lines() -> None:
    lines = [line for line in quick_start_code().splitlines() if line.strip()]
    assert len(lines) <= 20


def test_quick_start_runs_as_written(tmp_path: Path) -> None:
    script = tmp_path / "quick_start.py"
    script.write_text(quick_start_code())
    result = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.strip().splitlines()
    assert first == "1 {'tone': 'concise'} 1"
    assert second == "{'tone': 'concise'}"
    assert (tmp_path / "agent_sessions.db").exists()
