"""`ExecutionContext`: what a tool or service knows about the run it is part of.

A context carries the ids of the session and user, free-form `properties` and `ai_metadata`,
and timing. `child(tool_name=...)` makes a per-tool-call context that shares the parent's
properties and metadata (one run, one set of properties) but has its own id and timing.
`current_context()` returns the context of the running task (a `contextvars` variable), set by
``with context:`` or by the integrations.
"""

from __future__ import annotations

import time
import uuid
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

__all__ = ["ExecutionContext", "current_context"]

_current: ContextVar[ExecutionContext | None] = ContextVar("agent_sessions_context", default=None)


def current_context() -> ExecutionContext | None:
    """The `ExecutionContext` of the running task, or None outside of one."""
    return _current.get()


@dataclass(eq=False)
class ExecutionContext:
    """Execution context of one agent run or tool call."""

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
