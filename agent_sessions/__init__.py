"""agent_sessions: persistent, concurrency-safe sessions for AI agents.

Sessions hold state, preferences, history, AI context and feature flags in a real store (an
embedded SQLite file by default; Redis or PostgreSQL when one process is not enough), loaded
into an `ExecutionContext` before an agent acts and written back after.

`__all__` is the core: sessions, the execution context, stores, the manager, the context
provider, tools and errors. The dependency container and context-aware services live in
`agent_sessions.services` (their names stay importable from here too); framework
adapters in `agent_sessions.integrations`; operations in `agent_sessions.ops`; analysis in
`agent_sessions.analysis`; OpenTelemetry spans in `agent_sessions.tracing`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .codec import FernetCodec, JsonCodec
from .context import ExecutionContext, NoSessionManager, SessionIds, current_context
from .errors import (
    AgentSessionsError,
    DependencyCycle,
    InvalidCursor,
    InvalidExportItem,
    InvalidKeepPolicy,
    InvalidLimit,
    InvalidSearchQuery,
    InvalidServiceConfig,
    InvalidSessionId,
    InvalidUserId,
    ScopeError,
    SearchUnavailable,
    SerializationError,
    ServiceNotRegistered,
    ServiceResolutionError,
    SessionConflict,
    SessionNotFound,
    SessionOwnedByAnotherUser,
    SessionTooLarge,
    StoreUnavailable,
    ToolArgumentsError,
    ToolError,
    ToolNotFound,
)
from .ids import new_session_id
from .lifecycle import ErasureReport, ExportableDataHolder, FullyExportableDataHolder, SessionDataHolder
from .listing import SessionPage
from .manager import SessionManager
from .search import HistoryHit
from .session import HistoryPage, Session, SessionDelta
from .stores import DEFAULT_STORE_URL, MemorySessionStore, SessionStore, create_store
from .stores.factory import InvalidStoreUrl

if TYPE_CHECKING:
    from .provider import SessionContextProvider

    # Re-exported for code that imports them from here, deliberately outside __all__.
    from .services import ContextAwareService as ContextAwareService
    from .services import SessionServiceConfigurator as SessionServiceConfigurator
    from .services import SmartDependencyContainer as SmartDependencyContainer
    from .services import service as service
    from .stores.redis import RedisSessionStore
    from .stores.sql import DatabaseSessionStore
    from .tools import Tool, ToolRegistry, session_tools, tool

__all__ = [
    "DEFAULT_STORE_URL",
    "AgentSessionsError",
    "DatabaseSessionStore",
    "DependencyCycle",
    "ErasureReport",
    "ExportableDataHolder",
    "FullyExportableDataHolder",
    "ExecutionContext",
    "FernetCodec",
    "HistoryPage",
    "HistoryHit",
    "InvalidCursor",
    "InvalidLimit",
    "InvalidKeepPolicy",
    "InvalidSearchQuery",
    "InvalidExportItem",
    "InvalidServiceConfig",
    "InvalidSessionId",
    "InvalidStoreUrl",
    "InvalidUserId",
    "JsonCodec",
    "MemorySessionStore",
    "NoSessionManager",
    "RedisSessionStore",
    "ScopeError",
    "SearchUnavailable",
    "SerializationError",
    "ServiceNotRegistered",
    "ServiceResolutionError",
    "Session",
    "SessionConflict",
    "SessionContextProvider",
    "SessionDataHolder",
    "SessionDelta",
    "SessionManager",
    "SessionIds",
    "SessionNotFound",
    "SessionPage",
    "SessionOwnedByAnotherUser",
    "SessionStore",
    "SessionTooLarge",
    "StoreUnavailable",
    "Tool",
    "ToolArgumentsError",
    "ToolError",
    "ToolNotFound",
    "ToolRegistry",
    "create_store",
    "current_context",
    "new_session_id",
    "session_tools",
    "tool",
]

__version__ = "0.1.0"

# Names whose modules import optional drivers (or are large) load on first access; the service
# names stay importable from here for existing code (their home is `agent_sessions.services`).
_LAZY = {
    "DatabaseSessionStore": ".stores.sql",
    "RedisSessionStore": ".stores.redis",
    "SessionContextProvider": ".provider",
    "Tool": ".tools",
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
