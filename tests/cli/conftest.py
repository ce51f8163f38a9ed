"""Fixtures for the CLI tests: a populated SQLite store file and a typer test runner."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_sessions import Session, create_store

from ..ops.helpers import populate


@dataclass
class Populated:
    url: str
    ids: list[str]
    secret_id: str
    expired: int


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"


async def fill(url: str) -> Populated:
    async with create_store(url) as store:
        ids = await populate(store, users=3, per_user=2, anonymous=1, history=4)
        now = time.time()
        secret = Session(
            user_id="user-0",
            created_at=now,
            last_accessed_at=now,
            expiry_at=now + 3600,
            state={"api_key": "sk-live-should-not-print", "nested": {"password": "hunter2", "color": "teal"}},
            auth_info={"token": "auth-should-not-print"},
        )
        await store.restore(
            secret,
            [
                {"timestamp": now, "type": "login", "data": {"token": "tok-should-not-print"}},
                {"timestamp": now + 1, "type": "context", "data": {"tool_name": "search", "duration": 0.5}},
                {"timestamp": now + 2, "type": "context", "data": {"tool_name": "search", "duration": 1.5}},
                {"timestamp": now + 3, "type": "context", "data": {"tool_name": None, "duration": 2.0}},
            ],
        )
    # Two sessions that expired a while ago, written through a store whose clock is in the past.
    past = now - 7200
    async with create_store(url, clock=lambda: past) as old:
        for _ in range(2):
            await old.restore(Session(user_id="ghost", created_at=past, last_accessed_at=past, expiry_at=past + 60), [])
    return Populated(url, [*ids, secret.session_id], secret.session_id, expired=2)


@pytest.fixture
def populated(tmp_path: Path) -> Populated:
    """A SQLite file with 8 live sessions (one holding secrets) over 3 users and 2 expired ones."""
    return asyncio.run(fill(sqlite_url(tmp_path / "sessions.db")))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "AGENT_SESSIONS_STORE": None, "NO_COLOR": "1"})
