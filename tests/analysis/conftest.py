"""Fixtures for the analysis tests: a memory-backed manager with a controllable clock."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_sessions import MemorySessionStore, SessionManager

from ..support import FakeClock

#: 2024-01-01T00:00:00Z
DAY = 1_704_067_200.0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(DAY)


@pytest.fixture
async def manager(clock: FakeClock) -> AsyncIterator[SessionManager]:
    store = MemorySessionStore(clock=clock)
    async with SessionManager(store, auto_cleanup=False, absolute_lifetime=None, session_lifetime=10 * 86400) as m:
        yield m
