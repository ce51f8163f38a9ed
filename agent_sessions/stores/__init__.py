"""Session stores: the `SessionStore` contract, its backends, and `create_store(url)`.

Backends import their drivers lazily, so the core installs without Redis or asyncpg.
`create_store` and its URL checks live in `factory`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import ScopeData, SessionStore
from .factory import DEFAULT_STORE_URL, InvalidStoreUrl, StoreUrl, create_store, parse_store_url
from .memory import MemorySessionStore

if TYPE_CHECKING:
    from .redis import RedisSessionStore
    from .sql import DatabaseSessionStore

__all__ = [
    "DEFAULT_STORE_URL",
    "DatabaseSessionStore",
    "InvalidStoreUrl",
    "MemorySessionStore",
    "RedisSessionStore",
    "ScopeData",
    "SessionStore",
    "StoreUrl",
    "create_store",
    "parse_store_url",
]


def __getattr__(name: str) -> Any:
    # Lazy access to backends whose drivers are optional extras.
    if name == "DatabaseSessionStore":
        from .sql import DatabaseSessionStore

        return DatabaseSessionStore
    if name == "RedisSessionStore":
        from .redis import RedisSessionStore

        return RedisSessionStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
