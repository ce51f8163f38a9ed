"""`ExecutionContext`: what a tool or service knows about the run it is part of.

A context carries the ids of the session and user, free-form `properties` and `ai_metadata`,
and timing. `child(tool_name=...)` makes a per-tool-call context that shares the parent's
properties and metadata (one run, one set of properties) but has its own id and timing.
`current_context()` returns the context of the running task (a `contextvars` variable), set by
``with context:`` or by the integrations.

A tool reaches its session through typed accessors: `ctx.manager` (the `SessionManager` the
integration put in the context), ``await ctx.session()`` (the live session) and
``await ctx.update(fn)`` (`SessionManager.mutate` on the context's session). They work the same
under pydantic-ai, `ToolRegistry.call` and the MCP server, because each of them binds the manager
to the context the same way (the ``session_manager`` property, which stays readable with
`get_property` for tools that look it up by name).
"""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

from .errors import AgentSessionsError, SessionNotFound

if TYPE_CHECKING:
    from .manager import MutateFn, SessionManager
    from .session import Session

__all__ = ["SESSION_MANAGER_PROPERTY", "ExecutionContext", "NoSessionManager", "SessionIds", "current_context"]

#: The property that carries the context's `SessionManager` (read it with `ExecutionContext.manager`).
SESSION_MANAGER_PROPERTY: Final = "session_manager"


class NoSessionManager(AgentSessionsError, LookupError):
    """The `ExecutionContext` carries no `SessionManager` for `ctx.manager`, `ctx.session()` or
    `ctx.update()`.

    Enrich it with `SessionContextProvider.enrich_context`, or run the tool through an
    integration (pydantic-ai capability or toolset, `ToolRegistry.call` on an enriched context,
    the MCP server), which binds the manager for you.
    """


_current: ContextVar[ExecutionContext | None] = ContextVar("agent_sessions_context", default=None)


@dataclass(frozen=True, slots=True)
class SessionIds:
    """The ids of one session and its user: the simplest deps of an agent run (any framework).

    The pydantic-ai integration takes it as run deps (it satisfies `SessionDeps`); it holds no
    manager and no data, so it is safe to pass around.
    """

    session_id: str = field(repr=False)  # a credential: kept out of reprs
    user_id: str | None = None


def current_context() -> ExecutionContext | None:
    """The `ExecutionContext` of the running task, or None outside of one."""
    return _current.get()


@dataclass(eq=False)
class ExecutionContext:
    """Execution context of one agent run or tool call.

    - `context_id` — this context's id (random); `parent_id` — the run's context for a tool call.
    - `session_id` / `user_id` — whose session this is (the session id is kept out of reprs).
    - `tool_name` — the tool a per-call context runs (None for a whole run).
    - `properties` — free-form values (``add_property`` / ``get_property``); the session's
      ``context:`` state keys, ``preferences`` and ``feature_flags`` land here when a
      `SessionContextProvider` loads the session, and ``session:`` properties go back to state.
    - `ai_metadata` — the session's ``ai_context``, written back after the run.
    - `start_time` / `end_time` — wall-clock seconds; `finish()` sets the end, `duration()` reads it.

    Typed session access for tools: `manager`, `session()`, `update(fn)`.
    """

    context_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    parent_id: str | None = None
    session_id: str | None = field(default=None, repr=False)  # a credential: kept out of reprs
    user_id: str | None = None
    tool_name: str | None = None
    properties: dict[str, Any] = field(default_factory=dict)
    ai_metadata: dict[str, Any] = field(default_factory=dict)
    start_time: float = field(default_factory=time.time)
    end_time: float | None = None
    _tokens: list[Token[ExecutionContext | None]] = field(default_factory=list, repr=False)

    def add_property(self, key: str, value: Any) -> None:
        """Set a property."""
        self.properties[key] = value

    def get_property(self, key: str, default: Any = None) -> Any:
        """Get a property, or `default`."""
        return self.properties.get(key, default)

    def has_property(self, key: str) -> bool:
        """Check whether a property is set."""
        return key in self.properties

    # ------------------------------------------------------------------ typed session access
    @property
    def manager(self) -> SessionManager:
        """The `SessionManager` bound to this context; raises `NoSessionManager` when there is none."""
        from .manager import SessionManager  # runtime import: manager -> stores must not load with context

        found = self.properties.get(SESSION_MANAGER_PROPERTY)
        if not isinstance(found, SessionManager):
            raise NoSessionManager(
                "this ExecutionContext has no SessionManager: enrich it with SessionContextProvider.enrich_context, "
                "or run the tool through an integration (pydantic-ai, ToolRegistry.call on an enriched context, MCP)"
            )
        return found

    def _require_session_id(self) -> str:
        if not self.session_id:
            raise SessionNotFound("this ExecutionContext has no session_id")
        return self.session_id

    async def session(self) -> Session:
        """The context's live session, freshly loaded; raises `SessionNotFound` if it is gone or expired."""
        found = await self.manager.get_session(self._require_session_id())
        if found is None:
            raise SessionNotFound("the session of this context does not exist or has expired")
        return found

    async def update(self, fn: MutateFn) -> Session:
        """Apply `fn(session)` (sync or async, mutating in place) to the context's session and save it.

        This is `SessionManager.mutate`: `fn` re-runs on the latest saved state until the
        compare-and-set wins, so concurrent writers lose nothing. The context then shows the
        saved values (preferences, flags, ``context:`` keys), and the write-back at the end of the
        run does not count them again. Returns the saved session.
        """
        from .provider import refresh_context  # runtime import: provider imports this module

        saved = await self.manager.mutate(self._require_session_id(), fn)
        refresh_context(self, saved)
        return saved

    def duration(self) -> float:
        """Seconds from start to end (or to now while still running)."""
        end = self.end_time if self.end_time is not None else time.time()
        return max(0.0, end - self.start_time)

    def finish(self) -> None:
        """Mark the context as ended (idempotent: the first end time wins)."""
        if self.end_time is None:
            self.end_time = time.time()

    @property
    def finished(self) -> bool:
        """True once `finish()` was called."""
        return self.end_time is not None

    def child(self, tool_name: str | None = None, **properties: Any) -> ExecutionContext:
        """A per-call context: new id, `parent_id` = this id, same ids, shared properties."""
        ctx = ExecutionContext(
            parent_id=self.context_id,
            session_id=self.session_id,
            user_id=self.user_id,
            tool_name=tool_name,
            properties=self.properties,
            ai_metadata=self.ai_metadata,
        )
        ctx.properties.update(properties)
        return ctx

    def activate(self) -> Token[ExecutionContext | None]:
        """Make this the `current_context()` of the running task; pass the token to `deactivate`."""
        return _current.set(self)

    @staticmethod
    def deactivate(token: Token[ExecutionContext | None]) -> None:
        """Restore the context that was current before `activate`."""
        _current.reset(token)

    def __enter__(self) -> ExecutionContext:
        self._tokens.append(_current.set(self))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.finish()
        _current.reset(self._tokens.pop())
