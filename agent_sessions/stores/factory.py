"""`create_store(url)`: a store from a URL, checked part by part before anything connects.

The URL is parsed with the conventions of the library that will use it: SQLAlchemy's
`make_url` for SQLite and PostgreSQL, redis-py's ``redis://host:port/db`` (``rediss://`` for
TLS, ``unix:///path.sock?db=N`` for a socket, ``redis+cluster://host:port`` for a cluster).
A malformed URL raises `InvalidStoreUrl` (a `ValueError`) naming the bad part; the message
never repeats a password.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

from ..errors import AgentSessionsError
from .memory import MemorySessionStore

if TYPE_CHECKING:
    from .base import SessionStore

__all__ = [
    "DATABASE_SCHEMES",
    "DEFAULT_STORE_URL",
    "REDIS_SCHEMES",
    "InvalidStoreUrl",
    "StoreUrl",
    "create_store",
    "parse_store_url",
]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_STORE_URL = "sqlite+aiosqlite:///agent_sessions.db"

DATABASE_SCHEMES = ("sqlite+aiosqlite", "sqlite", "postgresql+asyncpg", "postgresql", "postgres")
REDIS_SCHEMES = ("redis", "rediss", "unix", "redis+cluster", "rediss+cluster")
_KNOWN = ", ".join(f"{s}://" for s in ("memory", *DATABASE_SCHEMES, *REDIS_SCHEMES))
_EXAMPLE = "e.g. memory://, sqlite+aiosqlite:///agent_sessions.db or redis://127.0.0.1:6379/0"

Backend = Literal["memory", "database", "redis"]


class InvalidStoreUrl(AgentSessionsError, ValueError):
    """A store URL that cannot be used: unknown scheme, bad port, bad Redis db, missing path, ...

    The message names the part at fault and never contains the URL's password.
    """


@dataclass(frozen=True, slots=True)
class StoreUrl:
    """A store URL that passed every check: its lower-case `scheme` and the `backend` it selects."""

    url: str
    scheme: str
    backend: Backend


def _split(url: str, scheme: str) -> SplitResult:
    try:
        return urlsplit(url)
    except ValueError:
        # urllib's only complaint here is an unbalanced '[' or ']' around an IPv6 host.
        raise InvalidStoreUrl(f"{scheme} URL host: an IPv6 address needs its closing ']'") from None


def _port(netloc: str, scheme: str) -> None:
    """Check the ``:port`` part of ``[user[:password]@]host[:port]`` (the password is never shown)."""
    hostport = netloc.rpartition("@")[2]
    if hostport.startswith("["):  # an IPv6 literal: [::1]:6379
        close = hostport.find("]")
        if close < 0:
            raise InvalidStoreUrl(f"{scheme} URL host: an IPv6 address needs its closing ']'")
        rest = hostport[close + 1 :]
        if rest and not rest.startswith(":"):
            raise InvalidStoreUrl(f"{scheme} URL host: unexpected {rest!r} after the IPv6 address")
        port = rest[1:] if rest else None
    else:
        port = hostport.partition(":")[2] if ":" in hostport else None
    if port is None:
        return
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidStoreUrl(f"{scheme} URL port must be an integer 1-65535, got {port!r}")


def _check_database(url: str, scheme: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    parts = _split(url, scheme)
    if parts.netloc:
        _port(parts.netloc, scheme)
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        # SQLAlchemy's message may quote the URL (and so a password): say which check failed instead.
        raise InvalidStoreUrl(
            f"{scheme} URL cannot be parsed as a database URL ({type(exc).__name__}); "
            "expected sqlite+aiosqlite:///path.db or postgresql+asyncpg://user@host:5432/dbname"
        ) from None
    if scheme.startswith("sqlite"):
        if parsed.host:
            raise InvalidStoreUrl(
                f"sqlite URL takes no host (got {parsed.host!r}): use three slashes, "
                "sqlite+aiosqlite:///relative.db or sqlite+aiosqlite:////absolute/path.db"
            )
        if not parsed.database:
            raise InvalidStoreUrl(
                "sqlite URL needs a path: sqlite+aiosqlite:///agent_sessions.db (or /:memory: for a throwaway one)"
            )
    elif not parsed.database:
        raise InvalidStoreUrl(f"{scheme} URL needs a database name: postgresql+asyncpg://user@host:5432/dbname")


@cache
def _redis_options(cluster: bool) -> frozenset[str]:
    """Every query parameter redis-py passes on to a connection, its pool (or the cluster client)."""
    try:
        from redis.asyncio import connection
        from redis.asyncio.cluster import RedisCluster
    except ImportError as exc:
        raise ImportError("Redis support needs the redis package: pip install agent-sessions[redis]") from exc
    names = set(connection.URL_QUERY_ARGUMENT_PARSERS)
    classes: list[type[Any]] = [
        connection.AbstractConnection,
        connection.Connection,
        connection.SSLConnection,
        connection.UnixDomainSocketConnection,
        connection.ConnectionPool,
    ]
    if cluster:
        classes.append(RedisCluster)
    for cls in classes:
        names.update(inspect.signature(cls).parameters)
    return frozenset(names - {"self", "kwargs", "connection_kwargs", "connection_class"})


def _redis_db(value: str, scheme: str, where: str) -> None:
    if not value.isdigit():
        raise InvalidStoreUrl(f"redis db must be an integer 0 or more ({where}), got {value!r}")
    if scheme.endswith("+cluster") and int(value) != 0:
        raise InvalidStoreUrl(f"Redis Cluster has only db 0 ({where}), got {value!r}")


def _check_redis(url: str, scheme: str) -> None:
    parts = _split(url, scheme)
    query = parse_qs(parts.query, keep_blank_values=True)
    known = _redis_options(scheme.endswith("+cluster"))
    for name, values in query.items():
        if name not in known:
            raise InvalidStoreUrl(f"unknown Redis URL option {name!r} in the query string")
        if name == "db":
            _redis_db(values[-1], scheme, "in ?db=")
    if scheme == "unix":
        if parts.netloc:
            raise InvalidStoreUrl("unix URL takes no host: unix:///path/to/redis.sock?db=0")
        if not parts.path or parts.path == "/":
            raise InvalidStoreUrl("unix URL needs the socket's path: unix:///path/to/redis.sock?db=0")
    else:
        _port(parts.netloc, scheme)
        db = unquote(parts.path).strip("/")
        if db and "db" not in query:
            if "/" in db:
                raise InvalidStoreUrl(f"redis URL path is the db number (/0, /1, ...), got {parts.path!r}")
            _redis_db(db, scheme, "the URL path")
    from redis.asyncio.connection import parse_url

    plain = scheme.split("+", 1)[0]
    try:
        # redis-py's own check of each option's value ("Invalid value for 'socket_timeout' ...").
        parse_url(f"{plain}://{url.split('://', 1)[1]}")
    except ValueError as exc:
        raise InvalidStoreUrl(f"{scheme} URL: {exc}") from None


def parse_store_url(url: str) -> StoreUrl:
    """Check `url` part by part, without connecting; raises `InvalidStoreUrl` naming the bad part."""
    if not isinstance(url, str):
        raise InvalidStoreUrl(f"store URL must be a str, not {type(url).__name__}")
    if "://" not in url:
        raise InvalidStoreUrl(f"store URL must look like scheme://... ({_EXAMPLE})")
    scheme, rest = url.split("://", 1)
    scheme = scheme.lower()
    if scheme == "memory":
        if rest:
            raise InvalidStoreUrl("memory:// takes nothing after the scheme (each store is a new, empty one)")
        return StoreUrl(url, scheme, "memory")
    if scheme in DATABASE_SCHEMES:
        _check_database(url, scheme)
        return StoreUrl(url, scheme, "database")
    if scheme in REDIS_SCHEMES:
        _check_redis(url, scheme)
        return StoreUrl(url, scheme, "redis")
    raise InvalidStoreUrl(f"unknown store URL scheme {scheme!r}; known schemes: {_KNOWN}")


def create_store(url: str = DEFAULT_STORE_URL, **options: Any) -> SessionStore:
    """Build a store from a URL; `options` go to the backend's constructor.

    - ``memory://``
    - ``sqlite+aiosqlite:///path/to/file.db`` (the embedded default)
    - ``postgresql+asyncpg://user@host:5432/db``
    - ``redis://host:6379/0`` (``rediss://`` for TLS, ``unix:///path.sock?db=0``), or
      ``redis+cluster://host:7000`` for Redis Cluster

    Options every backend takes: `codec` (default strict `JsonCodec`; `FernetCodec(key)` for
    encryption at rest), `max_session_bytes` (largest encoded record or history entry, default
    1 MiB), `max_scope_bytes` (largest user or app scope, default `max_session_bytes`),
    `max_history` (entries kept per session, default 1000), `history_window` (recent entries
    loaded with a session, default 50), `max_depth` (nesting of any value, default 64) and
    `clock` (the time source; inject one in tests).

    Per backend:

    - memory: `max_sessions` (evict the least recently saved beyond it; default unbounded);
    - SQLite / PostgreSQL (`DatabaseSessionStore`): `schema` (PostgreSQL), `table_prefix`
      (default ``agent_``), `create_tables`, `pool_size`, `max_overflow`, `pool_timeout`,
      `connect_timeout`, `command_timeout` (one statement, default 30 s), `busy_timeout` (SQLite
      write lock, default 5 s), `engine_options`, `max_idle_connections`, `max_connections`;
    - Redis (`RedisSessionStore`): `prefix` (key prefix, default ``agent_sessions:``),
      `socket_timeout` (bound on one whole operation, default 2 s), `socket_connect_timeout`
      (default 1 s), `retries` (reconnects, default 2), `client_options` (passed to redis-py),
      `owner_cache_size`.

    Raises `InvalidStoreUrl` (a `ValueError`) naming the bad part of a malformed URL, before
    any connection.
    """
    parsed = parse_store_url(url)
    if parsed.backend == "memory":
        return MemorySessionStore(**options)
    if parsed.backend == "database":
        from .sql import DatabaseSessionStore

        return DatabaseSessionStore(url, **options)
    from .redis import RedisSessionStore

    return RedisSessionStore(url, **options)
