"""`agent-sessions search`: a ranked table or JSON of a user's history hits, typed errors."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from typer.testing import CliRunner

from agent_sessions import Session, create_store
from agent_sessions.cli import app

from .conftest import sqlite_url


def run(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


async def fill(url: str) -> tuple[str, str]:
    now = time.time()
    async with create_store(url) as store:
        ids = []
        for user, city in (("alice", "Lisbon"), ("bob", "Lisbon")):
            session = Session(user_id=user, created_at=now, last_accessed_at=now, expiry_at=now + 3600)
            history = [
                {"timestamp": now, "type": "message", "data": {"content": f"{user} lives in {city} now"}},
                {"timestamp": now + 1, "type": "tool_call", "data": {"tool": "weather", "args": {"city": city}}},
                {"timestamp": now + 2, "type": "login", "data": {"token": "tok-lisbon-should-not-print"}},
            ]
            await store.restore(session, history)
            ids.append(session.session_id)
    return ids[0], ids[1]


def test_search_shows_the_users_hits_best_first_with_highlights(runner: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")
    alice, bob = asyncio.run(fill(url))
    code, out, err = run(runner, "search", "--store", url, "--user", "alice", "lisbon")
    assert code == 0, err
    assert alice in out and bob not in out
    assert "message: alice lives in Lisbon now" in out and "tool_call: weather Lisbon" in out
    assert "should-not-print" not in out  # secret-looking values are not even indexed
    code, out, err = run(runner, "search", "--store", url, "-u", "alice", "lisbon", "--json", "-t", "tool_call")
    assert code == 0, err
    data = json.loads(out)
    assert [(h["session_id"], h["seq"], h["entry"]["type"]) for h in data["hits"]] == [(alice, 2, "tool_call")]
    assert data["hits"][0]["snippet"] == "weather\n**Lisbon**"
    code, out, _ = run(runner, "search", "--store", url, "--session", bob, "--limit", "1", "lives")
    assert code == 0 and bob in out and alice not in out
    code, out, _ = run(runner, "search", "--store", url, "-u", "carol", "lisbon")
    assert code == 0 and "No matching history entries." in out


def test_search_errors_are_one_line_with_an_exit_code(runner: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")
    asyncio.run(fill(url))
    for args, expected, fragment in (
        (("lisbon",), 2, "--user"),
        (("--session", "short", "lisbon"), 2, "session id"),
        (("-u", "alice", "lis\x00bon"), 2, "NUL"),
    ):
        code, out, err = run(runner, "search", "--store", url, *args)
        assert code == expected, (out, err)
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error:") and fragment in lines[0], err
