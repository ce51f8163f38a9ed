"""The exception hierarchy: every error the library raises derives from `AgentSessionsError`."""

from __future__ import annotations

__all__ = [
    "AgentSessionsError",
    "InvalidSessionId",
    "InvalidUserId",
    "ScopeError",
    "SerializationError",
    "SessionConflict",
    "SessionNotFound",
    "SessionTooLarge",
    "StoreUnavailable",
    "ToolArgumentsError",
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


class ScopeError(AgentSessionsError, ValueError):
    """A `user:`-scoped key was written on a session that has no `user_id`."""


class StoreUnavailable(AgentSessionsError, ConnectionError):
    """The backing store could not be reached or timed out; the cause is chained."""


class InvalidUserId(AgentSessionsError, ValueError):
    """A user id is not a non-empty string of at most 256 printable characters."""


class ToolNotFound(AgentSessionsError, LookupError):
    """No tool with that name is registered in the `ToolRegistry` that was asked to call it."""


class ToolArgumentsError(AgentSessionsError, ValueError):
    """A tool call's arguments do not match the tool's signature (pydantic validation failed).

    The message lists each invalid argument and why, so it can be shown to a model to retry.
    """
