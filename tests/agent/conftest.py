"""Fixtures for the agent layer: a memory-backed manager for backend-independent tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agent_sessions import MemorySessionStore, SessionManager

from ..support import FakeClock


@pytest.fixture
async def memory_manager(clock: FakeClock) -> AsyncIterator[SessionManager]:
    """A manager on a memory store, for tests whose behaviour does not depend on the backend."""
    manager = SessionManager(MemorySessionStore(clock=clock), auto_cleanup=False)
    yield manager
    await manager.stop()
