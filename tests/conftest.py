"""Fixtures shared by the whole suite."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from agent_sessions import SessionManager, SessionStore

from .backends import BACKENDS
from .redis.servers import stop_shared_cluster
from .support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session", autouse=True)
def _stop_redis_cluster() -> Iterator[None]:
    """The test-owned Redis Cluster starts on first use (redis_cluster backend); stop it at the end."""
    yield
    stop_shared_cluster()


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    """The name of the backend under test (every contract test runs once per backend)."""
    return str(request.param)


@pytest.fixture
def make_store(backend: str, clock: FakeClock) -> Callable[..., AbstractAsyncContextManager[SessionStore]]:
    """Open another store of the backend under test with custom options: ``async with make_store(max_history=5)``."""

    def factory(**options: Any) -> AbstractAsyncContextManager[SessionStore]:
        return BACKENDS[backend](clock, **options)

    return factory


@pytest.fixture
async def store(backend: str, clock: FakeClock) -> AsyncIterator[SessionStore]:
    async with BACKENDS[backend](clock) as s:
        yield s


@pytest.fixture
async def manager(store: SessionStore) -> AsyncIterator[SessionManager]:
    m = SessionManager(store, session_lifetime=3600, auto_cleanup=False, absolute_lifetime=8 * 3600)
    yield m
