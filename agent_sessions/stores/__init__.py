"""Session stores: the `SessionStore` contract, its backends, and `create_store(url)`.

Backends import their drivers lazily, so the core installs without Redis or asyncpg.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import ScopeData, SessionStore
from .memory import MemorySessionStore

if TYPE_CHECKING:
    from .database import DatabaseSessionStore
    from .redis import RedisSessionStore

__all__ = [
    "DEFAULT_STORE_URL",
    "DatabaseSessionStore",
    "MemorySessionStore",
    "RedisSessionStore",
    "ScopeData",
    "SessionStore",
    "create_store",
]

#: The embedded default: a SQLite file in the working directory.
DEFAULT_STORE_URL = "sqlite+aiosqlite:///agent_sessions.db"

_DATABASE_SCHEMES = ("sqlite+aiosqlite", "sqlite", "postgresql+asyncpg", "postgresql", "postgres")
_REDIS_SCHEMES = ("redis", "rediss", "redis+cluster", "rediss+cluster")


def create_store(url: str = DEFAULT_STORE_URL, **options: Any) -> SessionStore:
    """Build a store from a URL; `options` go to the backend's constructor.

    - ``memory://``
    - ``sqlite+aiosqlite:///path/to/file.db`` (the embedded default)
    - ``postgresql+asyncpg://user@host:5432/db``
    - ``redis://host:6379/0`` or ``redis+cluster://host:7000`` for Redis Cluster
    """
    if not isinstance(url, str) or "://" not in url:
        raise ValueError(
            "store URL must look like scheme://..., e.g. memory:// or sqlite+aiosqlite:///agent_sessions.db"
        )
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return MemorySessionStore(**options)
    if scheme in _DATABASE_SCHEMES:
        from .database import DatabaseSessionStore

        return DatabaseSessionStore(url, **options)
    if scheme in _REDIS_SCHEMES:
        from .redis import RedisSessionStore

        return RedisSessionStore(url, **options)
    known = ", ".join(("memory", *_DATABASE_SCHEMES, *_REDIS_SCHEMES))
    raise ValueError(f"unknown store URL scheme {scheme!r}; known schemes: {known}")


def __getattr__(name: str) -> Any:
    # Lazy access to backends whose drivers are optional extras.
    if name == "DatabaseSessionStore":
        from .database import DatabaseSessionStore

        return DatabaseSessionStore
    if name == "RedisSessionStore":
        from .redis import RedisSessionStore

        return RedisSessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
