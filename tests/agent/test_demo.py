"""`run_demo`: the agent remembers the demo user across runs (offline, no API key)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from agent_sessions.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]


def recording_console() -> Console:
    return Console(record=True, width=160, color_system=None)


async def test_demo_remembers_the_user_the_second_time(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"

    first = recording_console()
    await run_demo(url, console=first)
    first_text = first.export_text()
    assert "first visit of demo-user" in first_text
    assert "C'est noté, Ada" in first_text
    assert "update_user_preferences" in first_text and "set_session_value" in first_text

    second = recording_console()
    await run_demo(url, console=second)
    text = second.export_text()
    assert "returning user demo-user (visit #2)" in text
    # The preferences saved in the first run are framed in the agent's instructions ...
    assert '<user_preferences>{"language": "French", "name": "Ada", "style": "short"}</user_preferences>' in text
    # ... and the answer is built from them and from the remembered trip.
    assert "Re-bonjour Ada ! Votre voyage : 3 jours à Lisbon (May)." in text
    assert "Recent history" in text and "update_user_preferences" in text
    assert "Run it again" in text


async def test_demo_users_do_not_share_memory(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    await run_demo(url, console=recording_console(), user_id="zoe")
    other = recording_console()
    await run_demo(url, console=other, user_id="yann")
    assert "first visit of yann" in other.export_text()


async def test_demo_on_the_memory_store_says_it_forgets() -> None:
    console = recording_console()
    await run_demo("memory://", console=console)
    text = console.export_text()
    assert "first visit of demo-user" in text
    assert "memory:// forgets everything" in text


def test_demo_remembers_across_two_processes(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}"
    code = f"import asyncio; from agent_sessions.demo import run_demo; asyncio.run(run_demo({url!r}))"
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    env.update({"PYTHONPATH": str(ROOT), "COLUMNS": "160"})

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    assert "first visit of demo-user" in run()
    second = run()
    assert "returning user demo-user (visit #2)" in second
    assert '"name": "Ada"' in second and "Re-bonjour Ada" in second


async def test_demo_runs_with_a_named_pydantic_ai_model() -> None:
    # "test" is pydantic-ai's offline TestModel, reached through the same `model=` path as "openai:gpt-4o".
    console = recording_console()
    await run_demo("memory://", model="test", console=console)
    text = console.export_text()
    assert "model: test" in text
    assert "Preferences" in text and "Recent history" in text
