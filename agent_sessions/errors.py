"""The exception hierarchy: every error the library raises derives from `AgentSessionsError`."""

from __future__ import annotations

__all__ = [
    "AgentSessionsError",
    "DependencyCycle",
    "InvalidCursor",
    "InvalidExportItem",
    "InvalidLimit",
    "InvalidKeepPolicy",
    "InvalidSearchQuery",
    "InvalidServiceConfig",
    "InvalidSessionId",
    "InvalidUserId",
    "ScopeError",
    "SearchUnavailable",
    "SerializationError",
    "ServiceNotRegistered",
    "ServiceResolutionError",
    "SessionConflict",
    "SessionNotFound",
    "SessionOwnedByAnotherUser",
    "SessionTooLarge",
    "StoreUnavailable",
    "ToolArgumentsError",
    "ToolError",
    "ToolNotFound",
]


class AgentSessionsError(Exception):
    """Base class of every error raised by agent_sessions."""


class InvalidSessionId(AgentSessionsError, ValueError):
    """A session id from outside does not match the one pattern the library issues.

    Raised before any I/O. The message never contains the offending value (it may be
    attacker-controlled, huge, or a secret); only its length and the reason.
    """


class SessionNotFound(AgentSessionsError, LookupError):
    """The session does not exist, has expired, or was deleted while being written.

    A save never re-creates a deleted session: create a new one instead.
    """


class SessionConflict(AgentSessionsError):
    """A compare-and-set save lost against a concurrent writer and retries ran out.

    Reload the session and apply the change again, or use `SessionManager.mutate`.
    """


class SessionTooLarge(AgentSessionsError, ValueError):
    """The encoded session exceeds `max_session_bytes`; nothing was written."""


class SerializationError(AgentSessionsError, ValueError):
    """A value is not strict JSON (or a stored record cannot be decoded).

    Only `None`, `bool`, `int`, finite `float`, `str`, `list` and `dict` with `str` keys are
    accepted; convert other values (datetime, set, bytes, ...) yourself before storing them.
    """


class InvalidExportItem(SerializationError):
    """An item of an export file (a ``conversation`` line) is not one a data holder's
    `export_sessions` could have written: malformed, entries out of order or missing, a naive
    timestamp, or an entry id the destination holds with other content. Nothing of the item was
    written; `import_sessions` reports it as a `BackupFormatError` at its line."""


class ScopeError(AgentSessionsError, ValueError):
    """A `user:`-scoped key was written on a session that has no `user_id`."""


class StoreUnavailable(AgentSessionsError, ConnectionError):
    """The backing store could not be reached or timed out; the cause is chained."""


class InvalidUserId(AgentSessionsError, ValueError):
    """A user id is not a non-empty string of at most 256 printable characters."""


class ToolNotFound(AgentSessionsError, LookupError):
    """No tool with that name is registered in the `ToolRegistry` that was asked to call it."""


class ToolError(AgentSessionsError):
    """A tool call was refused for a reason the model can correct; nothing was written.

    `ToolRegistry.call` raises it (its subclass `ToolArgumentsError` for bad arguments) for a
    refused key, a ``user:`` key on a session without a user, or a value that would make the
    session too large; the cause is chained. Integrations hand `str(error)` back to the model
    (pydantic-ai: `ModelRetry`); frameworks that take tool errors as data use `to_result()`.
    """

    def to_result(self) -> dict[str, str]:
        """The error as a tool result a model can read: ``{"error": kind, "message": text}``."""
        cause = self.__cause__
        kind = type(cause).__name__ if isinstance(cause, AgentSessionsError) else type(self).__name__
        return {"error": kind, "message": str(self)}


class ToolArgumentsError(ToolError, ValueError):
    """A tool call's arguments do not match the tool's signature (pydantic validation failed).

    The message lists each invalid argument and why, so it can be shown to a model to retry.
    """


class ServiceResolutionError(AgentSessionsError, LookupError):
    """`SmartDependencyContainer` could not build a service.

    `chain` is the resolution path that led to the failure, outermost first (e.g.
    ``["OrderService", "PaymentGateway", "HttpClient"]``); the message spells it out.
    """

    def __init__(self, message: str, chain: list[str] | None = None) -> None:
        super().__init__(message)
        self.chain: list[str] = list(chain or [])


class ServiceNotRegistered(ServiceResolutionError):
    """Nothing is registered under the requested name or type (or a required constructor
    parameter of a service being built). Register it, or give the parameter a default."""


class DependencyCycle(ServiceResolutionError):
    """Services depend on each other in a cycle; the message shows it (``A -> B -> A``).
    Break it by injecting the container and resolving one side lazily."""


class InvalidServiceConfig(AgentSessionsError, ValueError):
    """A per-session ``service_config`` names keys the service does not accept, or a value of
    the wrong kind. The message names the service, the offending keys and the accepted ones."""


class InvalidCursor(AgentSessionsError, ValueError):
    """A listing cursor is not one `list_sessions` returned for that user (malformed, altered,
    or from another user's listing): start again without a cursor."""


class InvalidLimit(AgentSessionsError, ValueError):
    """A page size is not an int from 1 to the largest page (`listing.MAX_PAGE_SIZE`)."""


# ---------------------------------------------------------------------- login
class InvalidKeepPolicy(AgentSessionsError, ValueError):
    """`SessionManager.login` got a `keep` other than ``"session"`` or ``"user"``; nothing was done."""


class SessionOwnedByAnotherUser(AgentSessionsError):
    """`SessionManager.login` was asked to log a user into a session bound to another user;
    nothing was done. Log the other user out first (delete the session, start a new one)."""


# ---------------------------------------------------------------------- search
class SearchUnavailable(AgentSessionsError):
    """The store has no full-text engine, so `search_history` cannot run on it.

    The Redis versions agent-sessions targets have none: keep sessions on SQLite or PostgreSQL
    to search history (or copy them there with `agent_sessions.ops.migrate`).
    """


class InvalidSearchQuery(AgentSessionsError, ValueError):
    """A `search_history` argument is unusable: a query that is not a str, too long or holding
    a NUL character, a bad `limit`, `types` or `since`, or neither a user nor a session id."""
