"""agent_sessions: persistent, concurrency-safe sessions for AI agents.

Sessions hold state, preferences, history, AI context and feature flags in a real store (an
embedded SQLite file by default; Redis or PostgreSQL when one process is not enough), loaded
into an `ExecutionContext` before an agent acts and written back after.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codec import FernetCodec, JsonCodec
from .context import ExecutionContext, current_context
from .errors import (
    AgentSessionsError,
    DependencyCycle,
    InvalidServiceConfig,
    InvalidSessionId,
    InvalidUserId,
    ScopeError,
    SerializationError,
    ServiceNotRegistered,
    ServiceResolutionError,
    SessionConflict,
    SessionNotFound,
    SessionTooLarge,
    StoreUnavailable,
    ToolArgumentsError,
    ToolNotFound,
)
from .ids import new_session_id
from .manager import SessionManager
from .session import HistoryPage, Session, SessionDelta
from .stores import DEFAULT_STORE_URL, MemorySessionStore, SessionStore, create_store
from .stores.factory import InvalidStoreUrl

if TYPE_CHECKING:
    from .provider import SessionContextProvider
    from .services import ContextAwareService, SessionServiceConfigurator, SmartDependencyContainer, service
    from .stores.database import DatabaseSessionStore
    from .stores.redis import RedisSessionStore
    from .tools import ToolRegistry, session_tools, tool

__all__ = [
    "DEFAULT_STORE_URL",
    "AgentSessionsError",
    "ContextAwareService",
    "DatabaseSessionStore",
    "DependencyCycle",
    "ExecutionContext",
    "FernetCodec",
    "HistoryPage",
    "InvalidServiceConfig",
    "InvalidSessionId",
    "InvalidStoreUrl",
    "InvalidUserId",
    "JsonCodec",
    "MemorySessionStore",
    "RedisSessionStore",
    "ScopeError",
    "SerializationError",
    "ServiceNotRegistered",
    "ServiceResolutionError",
    "Session",
    "SessionConflict",
    "SessionContextProvider",
    "SessionDelta",
    "SessionManager",
    "SessionNotFound",
    "SessionServiceConfigurator",
    "SessionStore",
    "SessionTooLarge",
    "SmartDependencyContainer",
    "StoreUnavailable",
    "ToolArgumentsError",
    "ToolNotFound",
    "ToolRegistry",
    "create_store",
    "current_context",
    "new_session_id",
    "service",
    "session_tools",
    "tool",
]

__version__ = "0.1.0"

# Names whose modules import optional drivers (or are large) load on first access.
_LAZY = {
    "DatabaseSessionStore": ".stores.database",
    "RedisSessionStore": ".stores.redis",
    "SessionContextProvider": ".provider",
    "ToolRegistry": ".tools",
    "session_tools": ".tools",
    "tool": ".tools",
    "ContextAwareService": ".services",
    "SmartDependencyContainer": ".services",
    "SessionServiceConfigurator": ".services",
    "service": ".services",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value
