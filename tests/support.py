"""Test helpers shared by every test package: a controllable clock and service checks."""

from __future__ import annotations

import os
import socket

import pytest

PG_START = "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start"
REDIS_START = (
    'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no '
    "--dir /var/lib/redis --logfile /var/log/redis/ci.log"
)
PG_URL = os.environ.get("AGENT_SESSIONS_TEST_PG", "postgresql+asyncpg://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("AGENT_SESSIONS_TEST_REDIS", "redis://127.0.0.1:6379/0")


class FakeClock:
    """A clock the test moves by hand; pass it as `clock=` to a store."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def services_required() -> bool:
    return os.environ.get("AGENT_SESSIONS_REQUIRE_SERVICES") == "1"


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int, start_command: str) -> None:
    """Skip (or, under AGENT_SESSIONS_REQUIRE_SERVICES=1, fail) when a service is down."""
    if port_open(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}; start it with: {start_command}"
    if services_required():
        pytest.fail(message + " (AGENT_SESSIONS_REQUIRE_SERVICES=1)")
    pytest.skip(message)
