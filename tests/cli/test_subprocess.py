"""Each CLI command once as a real process: `python -m agent_sessions` and the console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Populated, sqlite_url

SCRIPT = Path(sys.executable).with_name("agent-sessions")


def cli(
    *args: str, cwd: Path, module: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "agent_sessions", *args] if module else [str(SCRIPT), *args]
    full_env = {k: v for k, v in os.environ.items() if k != "AGENT_SESSIONS_STORE"}
    full_env.update({"COLUMNS": "200", "NO_COLOR": "1", **(env or {})})
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120, check=False)


def test_console_script_lists_sessions(populated: Populated, tmp_path: Path) -> None:
    assert SCRIPT.exists(), "the agent-sessions console script is not installed in this environment"
    done = cli("list", "--json", cwd=tmp_path, module=False, env={"AGENT_SESSIONS_STORE": populated.url})
    assert done.returncode == 0, done.stderr
    assert {s["session_id"] for s in json.loads(done.stdout)["sessions"]} == set(populated.ids)


def test_show_subprocess(populated: Populated, tmp_path: Path) -> None:
    done = cli("show", populated.secret_id, "--store", populated.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert populated.secret_id in done.stdout and "sk-live-should-not-print" not in done.stdout


def test_export_import_migrate_cleanup_stats_subprocesses(populated: Populated, tmp_path: Path) -> None:
    backup = tmp_path / "backup.jsonl.gz"
    done = cli("export", str(backup), "--store", populated.url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Exported 8 sessions" in done.stdout

    restored = sqlite_url(tmp_path / "restored.db")
    done = cli("import", str(backup), "--store", restored, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 new" in done.stdout

    copied = sqlite_url(tmp_path / "copied.db")
    done = cli("migrate", restored, copied, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "8 new" in done.stdout

    done = cli("cleanup", "--store", populated.url, cwd=tmp_path)
    assert (done.returncode, done.stdout.strip()) == (0, "Removed 2 expired sessions.")

    done = cli("stats", "--store", copied, "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sessions"] == 8


@pytest.mark.parametrize(
    ("args", "code", "fragment"),
    [
        (["list", "--store", "nosuch://x"], 2, "unknown store URL scheme"),
        (["list", "--store", "redis://127.0.0.1:6379/abc"], 2, "redis db must be an integer 0 or more"),
        (["list", "--store", "redis://127.0.0.1:1/0"], 1, "cannot reach the store"),
        (["stats", "--store", "postgresql+asyncpg://root@127.0.0.1:1/test"], 1, "cannot reach the store"),
        (["show", "not-an-id", "--store", "memory://"], 2, "invalid session id"),
    ],
)
def test_errors_are_one_line_with_a_shell_exit_code(tmp_path: Path, args: list[str], code: int, fragment: str) -> None:
    done = cli(*args, cwd=tmp_path)
    assert done.returncode == code, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], done.stderr


def test_demo_subprocess_runs_offline(tmp_path: Path) -> None:
    done = cli("demo", "--store", sqlite_url(tmp_path / "demo.db"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip()
    assert (tmp_path / "demo.db").exists()
