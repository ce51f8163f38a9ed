"""Fixtures for the web tests: every test runs per backend (the root `backend` fixture) and,
where it takes `transport`, both in-process (httpx ASGITransport) and over a real socket (uvicorn)."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asgi", "socket"])
def transport(request: pytest.FixtureRequest) -> str:
    """How the client reaches the app: in-process ASGI, or HTTP over a socket to uvicorn."""
    return str(request.param)
