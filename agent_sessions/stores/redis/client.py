"""The redis-py client of `RedisSessionStore`: built from a URL or checked, and where it points.

A ``redis://`` / ``rediss://`` / ``unix://`` URL gives a `redis.asyncio.Redis`, a
``redis+cluster://`` / ``rediss+cluster://`` URL a `redis.asyncio.cluster.RedisCluster`; both
with ``decode_responses=False``, a connect timeout, a jittered retry and no socket timeout of
their own (the store bounds each whole operation, see ``runner.py``). A client passed in must
have been created with ``decode_responses=False``: the store deals in bytes.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff

__all__ = ["client_from_url", "connection_kwargs", "endpoint", "store_client"]


def store_client(
    url_or_client: str | Redis | RedisCluster, connect_timeout: float, retries: int, extra: dict[str, Any]
) -> Redis | RedisCluster:
    """The client of a store given `url_or_client` (a URL: `client_from_url`; a client: itself,
    checked); `TypeError` for anything else, `ValueError` for a client decoding responses."""
    if isinstance(url_or_client, str):
        client = client_from_url(url_or_client, connect_timeout, retries, extra)
    elif isinstance(url_or_client, Redis | RedisCluster):
        client = url_or_client
    else:
        raise TypeError(
            "RedisSessionStore needs a redis:// or redis+cluster:// URL, a redis.asyncio.Redis "
            f"or a redis.asyncio.cluster.RedisCluster, not {type(url_or_client).__name__}"
        )
    if connection_kwargs(client).get("decode_responses"):
        raise ValueError("RedisSessionStore needs a client created with decode_responses=False")
    return client


def client_from_url(url: str, connect_timeout: float, retries: int, extra: dict[str, Any]) -> Redis | RedisCluster:
    """A client for `url` (`extra` passed on to ``from_url``); `ValueError` for another scheme."""
    scheme, rest = url.split("://", 1) if "://" in url else ("", url)
    scheme = scheme.lower()
    settings: dict[str, Any] = {
        # No socket timeout in the driver: redis-py wraps every send in `asyncio.wait_for`
        # (a task per command). The store bounds each operation with `socket_timeout` instead.
        "socket_timeout": None,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(ExponentialWithJitterBackoff(base=0.05, cap=0.5), retries),
        **extra,
        "decode_responses": False,
    }
    if scheme in ("redis+cluster", "rediss+cluster"):
        return RedisCluster.from_url(f"{scheme.split('+')[0]}://{rest}", **settings)
    if scheme in ("redis", "rediss", "unix"):
        return Redis.from_url(url, **settings)
    raise ValueError(f"not a Redis URL: scheme {scheme!r} (use redis://, rediss:// or redis+cluster://)")


def connection_kwargs(client: Redis | RedisCluster) -> dict[str, Any]:
    """A copy of the settings the client's connections are made with."""
    if isinstance(client, RedisCluster):
        return dict(client.get_connection_kwargs())
    return dict(client.connection_pool.connection_kwargs)


def endpoint(client: Redis | RedisCluster) -> str:
    """Where the client connects (the server's, or the cluster's startup nodes', host and port, or
    a socket path), never the password."""
    if isinstance(client, RedisCluster):
        return ", ".join(f"{node.host}:{node.port}" for node in client.startup_nodes)
    kwargs = connection_kwargs(client)
    return str(kwargs.get("path") or f"{kwargs.get('host', 'localhost')}:{kwargs.get('port', 6379)}")
