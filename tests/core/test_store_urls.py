"""Store URLs: every malformed one is an `InvalidStoreUrl` (a `ValueError`) naming the bad part,
raised by `create_store` before any connection, and never showing a password."""

from __future__ import annotations

import pytest

from agent_sessions import create_store
from agent_sessions.errors import AgentSessionsError
from agent_sessions.stores import InvalidStoreUrl, parse_store_url

from ..support import PG_URL

#: (URL, a fragment the message must hold). Servers at these addresses need not exist: nothing connects.
MALFORMED = [
    ("redis://127.0.0.1:6379/abc", "redis db must be an integer"),
    ("redis://127.0.0.1:6379/-1", "redis db must be an integer"),
    ("redis://127.0.0.1:6379/0/1", "path is the db number"),
    ("redis://127.0.0.1:6379/0?db=x", "redis db must be an integer"),
    ("redis://127.0.0.1:abc/0", "port must be an integer 1-65535, got 'abc'"),
    ("redis://127.0.0.1:70000/0", "port must be an integer 1-65535, got '70000'"),
    ("redis://127.0.0.1:0/0", "port must be an integer 1-65535, got '0'"),
    ("rediss://[::1/0", "IPv6 address needs its closing"),
    ("redis://127.0.0.1:6379/0?nosuch=1", "unknown Redis URL option 'nosuch'"),
    ("redis://127.0.0.1:6379/0?read_from_replicas=true", "unknown Redis URL option 'read_from_replicas'"),
    ("redis://127.0.0.1:6379/0?socket_timeout=soon", "socket_timeout"),
    ("redis+cluster://127.0.0.1:7000/3", "Redis Cluster has only db 0"),
    ("unix://", "unix URL needs the socket's path"),
    ("unix://host/tmp/redis.sock", "unix URL takes no host"),
    ("postgresql+asyncpg://root@127.0.0.1:pg/test", "port must be an integer 1-65535, got 'pg'"),
    ("postgresql+asyncpg://root@127.0.0.1:5432", "needs a database name"),
    ("postgres://root@127.0.0.1:5432/", "needs a database name"),
    ("sqlite+aiosqlite://", "sqlite URL needs a path"),
    ("sqlite+aiosqlite:///", "sqlite URL needs a path"),
    ("sqlite+aiosqlite://host/file.db", "sqlite URL takes no host"),
    ("memory://somewhere", "memory:// takes nothing"),
    ("mysql://root@127.0.0.1/test", "unknown store URL scheme 'mysql'"),
    ("nosuch://x", "unknown store URL scheme 'nosuch'"),
    ("agent_sessions.db", "must look like scheme://"),
]


@pytest.mark.parametrize(("url", "fragment"), MALFORMED)
def test_create_store_rejects_a_malformed_url_naming_the_part(url: str, fragment: str) -> None:
    with pytest.raises(InvalidStoreUrl) as caught:
        create_store(url)
    assert fragment in str(caught.value)
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, AgentSessionsError)


def test_a_redis_path_that_is_not_a_number_no_longer_means_db_0() -> None:
    # redis-py ignores a path it cannot read as a number, so this URL silently used db 0.
    with pytest.raises(InvalidStoreUrl, match="redis db must be an integer 0 or more .*got 'abc'"):
        create_store("redis://127.0.0.1:6379/abc")


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2@127.0.0.1:bad/0",
        "redis://bob:hunter2@127.0.0.1:6379/abc",
        "rediss://bob:hunter2@127.0.0.1:6379/0?bogus=1",
        "postgresql+asyncpg://bob:hunter2@127.0.0.1:bad/test",
        "postgresql+asyncpg://bob:hunter2@127.0.0.1:5432",
    ],
)
def test_the_message_never_shows_the_password(url: str) -> None:
    with pytest.raises(InvalidStoreUrl) as caught:
        create_store(url)
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "backend"),
    [
        ("memory://", "memory"),
        ("sqlite+aiosqlite:///agent_sessions.db", "database"),
        ("sqlite:///:memory:", "database"),
        ("sqlite+aiosqlite:////tmp/absolute.db", "database"),
        ("postgresql+asyncpg://root@127.0.0.1:5432/test", "database"),
        ("postgres://root@localhost/test", "database"),
        ("postgresql+asyncpg:///test", "database"),
        ("redis://127.0.0.1:6379/0", "redis"),
        ("redis://127.0.0.1:6379/15", "redis"),
        ("redis://127.0.0.1:6379/", "redis"),
        ("redis://127.0.0.1", "redis"),
        ("REDIS://127.0.0.1:6379/0", "redis"),
        ("rediss://user:pw@[::1]:6380/2?ssl_cert_reqs=none", "redis"),
        ("redis://127.0.0.1:6379?db=3&socket_timeout=1.5&client_name=x", "redis"),
        ("unix:///run/redis.sock?db=1", "redis"),
        ("redis+cluster://127.0.0.1:7000", "redis"),
        ("redis+cluster://127.0.0.1:7000?read_from_replicas=true", "redis"),
        ("rediss+cluster://127.0.0.1:7000/0", "redis"),
    ],
)
def test_well_formed_urls_pass_and_name_their_backend(url: str, backend: str) -> None:
    assert parse_store_url(url).backend == backend


async def test_create_store_still_opens_a_well_formed_url() -> None:
    async with create_store(PG_URL) as store:
        assert await store.get_user_sessions("nobody") == []


def test_a_non_string_url_is_rejected() -> None:
    with pytest.raises(InvalidStoreUrl, match="must be a str"):
        create_store(6379)  # type: ignore[arg-type]
