"""The session tools as an MCP server, for any MCP client (desktop assistants, IDEs, agent SDKs).

Built on the official `mcp` SDK's low-level `Server`: ``tools/list`` serves each tool of a
`ToolRegistry` (default: the built-in `session_tools`) with its JSON schema (the recall tool,
``search_memory``, only when the store can search history: not on Redis), and ``tools/call`` runs it through
`ToolRegistry.call` in an `ExecutionContext` for the bound session.

Identity is bound when the server is made, never taken from the model:

- ``user_id`` alone: the user's most recently used live session, or a new one for them. If it
  expires while the server runs, the next call moves to a fresh session of the same user, which
  still sees the user's preferences and ``user:`` keys.
- ``session_id``: that session, which must exist (and, with ``user_id`` too, belong to that
  user). Once it has expired, calls fail with a tool error, unless ``user_id`` was given too.

Errors a model can act on come back as MCP tool errors (``isError`` results with a text
message): invalid arguments, a refused write (a ``user:`` key on a session without a user, a
value or session too large, a value that is not JSON), an expired session, an unreachable store.
An unknown tool name is a protocol error (JSON-RPC ``invalid params``), as the MCP
specification asks.

Run it over stdio with ``agent-sessions mcp --store URL --user ID`` (`run_stdio_server`), or
embed it: `create_server` returns the `mcp` server, `streamable_http_app` an ASGI app serving
it over streamable HTTP. The HTTP app has no authentication of its own and acts as one user:
serve it on localhost, or put your own authentication in front of it.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from typing import Any, Final

try:
    import mcp.types as mcp_types
    from mcp.server.lowlevel import Server
    from mcp.server.stdio import stdio_server
    from mcp.shared.exceptions import MCPError
    from starlette.applications import Starlette
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agent_sessions.integrations.mcp needs the official MCP SDK: install agent-sessions[mcp]"
    ) from exc

import pydantic_core

from .. import __version__
from ..context import ExecutionContext
from ..errors import (
    AgentSessionsError,
    InvalidSessionId,
    ScopeError,
    SerializationError,
    SessionConflict,
    SessionNotFound,
    SessionTooLarge,
    StoreUnavailable,
    ToolError,
)
from ..ids import id_hash, validate_session_id, validate_user_id
from ..manager import SessionManager
from ..provider import SESSION_MANAGER_PROPERTY
from ..recall import SEARCH_TOOL, supports_search
from ..stores import SessionStore
from ..tools import ToolRegistry, session_tools

__all__ = [
    "CALLER_ERRORS",
    "SERVER_NAME",
    "McpIdentityError",
    "SessionBinding",
    "check_identity",
    "create_server",
    "is_callers_fault",
    "parse_store_options",
    "run_stdio_server",
    "served_tools",
    "streamable_http_app",
]

logger = logging.getLogger(__name__)

#: The name the server reports to clients.
SERVER_NAME: Final = "agent-sessions"

INSTRUCTIONS: Final = (
    "Tools to remember things about the user across conversations: their preferences, values in "
    "the session's state (keys starting with 'user:' are shared by all of the user's sessions), "
    "the session's recent history and its feature flags, and (search_memory, when offered) a search of "
    "what the user said in earlier sessions. The session is fixed by the server."
)


class McpIdentityError(AgentSessionsError, ValueError):
    """The server was given no identity to act as: pass a user id, a session id, or both."""


def check_identity(*, user_id: str | None, session_id: str | None) -> tuple[str | None, str | None]:
    """Check an MCP server's identity before any I/O: at least one of the two, each well-formed.

    Returns them validated; raises `McpIdentityError`, `InvalidUserId` or `InvalidSessionId`
    (all `ValueError`s; the messages never repeat the ids).
    """
    if user_id is None and session_id is None:
        raise McpIdentityError(
            "an MCP server needs an identity to act as: a user id (their latest session, or a new one) "
            "or a session id (that session)"
        )
    return (
        None if user_id is None else validate_user_id(user_id),
        None if session_id is None else validate_session_id(session_id),
    )


class SessionBinding:
    """The one session an MCP server acts on, fixed by the operator, never by the model.

    `resolve` finds it on first use (a session id is checked to exist, a user gets their latest
    live session or a new one); `renew` replaces an expired one when the binding names a user.
    Concurrent calls share one lookup, so a user gets one new session, not one per call.
    """

    def __init__(self, manager: SessionManager, *, user_id: str | None = None, session_id: str | None = None) -> None:
        bound_user, requested = check_identity(user_id=user_id, session_id=session_id)
        self.manager = manager
        #: The user the binding was made for (`renew` stays with them); None for a session binding.
        self.bound_user_id: str | None = bound_user
        self._requested: str | None = requested
        self._current: str | None = None
        self._user_id: str | None = self.bound_user_id
        self._lock: asyncio.Lock | None = None

    @property
    def user_id(self) -> str | None:
        """The user of the bound session (known once it is resolved), or None if anonymous."""
        return self._user_id

    def _guard(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock

    async def resolve(self) -> str:
        """The bound session's id, looking it up on first use.

        Raises `SessionNotFound` when a given session id names no live session (or one of
        another user), and `StoreUnavailable` when the store cannot be reached.
        """
        async with self._guard():
            if self._current is None:
                self._current = await self._find()
            return self._current

    async def renew(self, stale: str) -> str | None:
        """After `stale` turned out expired: the session to use instead, or None.

        Only a binding that names a user renews (to their latest live session, or a new one);
        a session binding returns None, since its one session is gone.
        """
        if self.bound_user_id is None:
            return None
        async with self._guard():
            if self._current == stale:
                self._requested = None
                self._current = await self._latest_of_user(self.bound_user_id)
            return self._current

    async def _find(self) -> str:
        if self._requested is not None:
            session = await self.manager.get_session(self._requested)
            if session is None:
                raise SessionNotFound("the session given to the MCP server does not exist or has expired")
            if self.bound_user_id is not None and session.user_id != self.bound_user_id:
                raise SessionNotFound("the session given to the MCP server is not a session of the given user")
            self._user_id = session.user_id
            return session.session_id
        assert self.bound_user_id is not None  # __init__ requires one of the two
        return await self._latest_of_user(self.bound_user_id)

    async def _latest_of_user(self, user_id: str) -> str:
        sessions = await self.manager.get_user_sessions(user_id)
        if sessions:
            latest = max(sessions, key=lambda s: s.last_accessed_at)
            logger.info("MCP server resumes session %s of its user", id_hash(latest.session_id))
            return latest.session_id
        created = await self.manager.create_session(user_id)
        logger.info("MCP server created session %s for its user", id_hash(created.session_id))
        return created.session_id


def _text_of(result: Any) -> str:
    if isinstance(result, str):
        return result
    return pydantic_core.to_json(result).decode()


def _success(result: Any) -> mcp_types.CallToolResult:
    # Structured content must be a JSON object for the protocol versions before 2026-07-28.
    structured = pydantic_core.to_jsonable_python(result) if isinstance(result, dict) else None
    return mcp_types.CallToolResult(
        content=[mcp_types.TextContent(text=_text_of(result))], structured_content=structured
    )


def _failure(message: str) -> mcp_types.CallToolResult:
    return mcp_types.CallToolResult(content=[mcp_types.TextContent(text=message)], is_error=True)


#: Errors of a call the model can fix: invalid arguments, a refused write, a value or session too large.
CALLER_ERRORS: Final = (ToolError, ScopeError, SerializationError, SessionTooLarge, InvalidSessionId)


def is_callers_fault(exc: AgentSessionsError) -> bool:
    """True for an error the caller (the model) can act on, which becomes a tool error.

    Besides `CALLER_ERRORS`, the library's convention is that an error that is also a
    `ValueError` is bad input; anything else (a misconfigured service, a bug) is the operator's
    and goes to the SDK, which logs it and answers with an internal error that reveals nothing.
    """
    return isinstance(exc, (*CALLER_ERRORS, ValueError))


class _ToolHandlers:
    """`tools/list` and `tools/call` for one registry and one binding."""

    def __init__(self, manager: SessionManager, binding: SessionBinding, registry: ToolRegistry) -> None:
        self.manager = manager
        self.binding = binding
        self.registry = registry

    def tool_list(self) -> list[mcp_types.Tool]:
        return [
            mcp_types.Tool(name=spec.name, description=spec.description, input_schema=spec.parameters_schema())
            for spec in self.registry
        ]

    async def list_tools(
        self, _ctx: Any, _params: mcp_types.PaginatedRequestParams | None
    ) -> mcp_types.ListToolsResult:
        return mcp_types.ListToolsResult(tools=self.tool_list())

    async def call_tool(self, _ctx: Any, params: mcp_types.CallToolRequestParams) -> mcp_types.CallToolResult:
        name = params.name
        if name not in self.registry:
            raise MCPError(
                mcp_types.INVALID_PARAMS, f"unknown tool {name!r}; the tools are: {', '.join(self.registry.names())}"
            )
        try:
            return _success(await self._call(name, params.arguments or {}))
        except SessionNotFound:
            return _failure(
                "the session this MCP server acts on has expired or was deleted; "
                "restart the server with a live session, or bind it to a user (--user)"
            )
        except StoreUnavailable as exc:
            # The details (hosts, driver errors) are the operator's, in the log; the model gets the gist.
            logger.warning("MCP tool %s: the store is unavailable: %s (%s)", name, exc, exc.__cause__)
            return _failure("the session store is unavailable; try again later")
        except SessionConflict:
            return _failure("the session is busy with other writers; try the call again")
        except AgentSessionsError as exc:
            if not is_callers_fault(exc):
                raise
            return _failure(str(exc))

    async def _call(self, name: str, arguments: dict[str, Any]) -> Any:
        session_id = await self.binding.resolve()
        try:
            return await self._call_in(session_id, name, arguments)
        except SessionNotFound:
            # Nothing was written to a missing session, so running the call again is safe.
            renewed = await self.binding.renew(session_id)
            if renewed is None:
                raise
            return await self._call_in(renewed, name, arguments)

    async def _call_in(self, session_id: str, name: str, arguments: dict[str, Any]) -> Any:
        context = ExecutionContext(session_id=session_id, user_id=self.binding.user_id, tool_name=name)
        context.add_property(SESSION_MANAGER_PROPERTY, self.manager)
        try:
            return await self.registry.call(name, arguments, context)
        finally:
            context.finish()


def create_server(
    manager: SessionManager,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    registry: ToolRegistry | None = None,
    name: str = SERVER_NAME,
) -> Server[Any]:
    """An MCP server (the `mcp` SDK's low-level `Server`) serving the tools of `registry`.

    `registry` defaults to the built-in `session_tools`; its ``search_memory`` tool is served
    only when the store can search history (not on Redis). The identity (`user_id`, `session_id`,
    or both; see `SessionBinding`) is checked for shape here and looked up on the first tool
    call; raises `McpIdentityError` when neither is given, `InvalidUserId` / `InvalidSessionId`
    for malformed ids. Run it with ``server.run(read, write, server.create_initialization_options())``
    on any transport of the SDK, or use `run_stdio_server` / `streamable_http_app`.
    """
    binding = SessionBinding(manager, user_id=user_id, session_id=session_id)
    handlers = _ToolHandlers(manager, binding, served_tools(manager, session_tools if registry is None else registry))
    return Server(
        name,
        version=__version__,
        instructions=INSTRUCTIONS,
        on_list_tools=handlers.list_tools,
        on_call_tool=handlers.call_tool,
    )


def served_tools(manager: SessionManager, registry: ToolRegistry) -> ToolRegistry:
    """`registry` as the server serves it: without ``search_memory`` on a store that cannot
    search history (a model is never offered a tool that can only fail)."""
    if SEARCH_TOOL not in registry or supports_search(manager.store):
        return registry
    served = registry.copy()
    served.unregister(SEARCH_TOOL)
    return served


def streamable_http_app(
    manager: SessionManager,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    registry: ToolRegistry | None = None,
    path: str = "/mcp",
    host: str = "127.0.0.1",
    **options: Any,
) -> Starlette:
    """A Starlette (ASGI) app serving `create_server`'s server over streamable HTTP at `path`.

    Serve it as it is (``uvicorn.run(app)``), or mount it in your app and run its lifespan
    from yours (``Mount("/tools", app=mcp_app)`` plus ``mcp_app.router.lifespan_context(mcp_app)``
    in your lifespan): the MCP session manager lives in it. `host` is where it will be served;
    for a localhost host the SDK turns on DNS-rebinding protection. Other `options` go to the
    SDK's ``Server.streamable_http_app`` (e.g. ``json_response=True``, ``stateless_http=True``).
    """
    server = create_server(manager, user_id=user_id, session_id=session_id, registry=registry)
    return server.streamable_http_app(streamable_http_path=path, host=host, **options)


def parse_store_options(items: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` strings (the CLI's ``--option``) as keyword options for `create_store`.

    A value that reads as a JSON number, ``true``, ``false`` or ``null`` becomes that value;
    anything else stays a string (``schema=tenant_a``, ``prefix=myapp:``,
    ``max_session_bytes=65536``). Raises `ValueError` for an item without ``=`` or with an
    empty or repeated key.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise ValueError(f"store option {item!r} must look like KEY=VALUE, with KEY a name (e.g. schema=tenant_a)")
        if key in options:
            raise ValueError(f"store option {key!r} is given twice")
        options[key] = _option_value(raw)
    return options


def _option_value(raw: str) -> Any:
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if value is None or isinstance(value, bool | int | float) else raw


async def run_stdio_server(
    store: SessionStore,
    *,
    user_id: str | None = None,
    session_id: str | None = None,
    registry: ToolRegistry | None = None,
    session_lifetime: float = 3600,
) -> None:
    """Serve the tools over this process's stdin and stdout until the client disconnects.

    The identity is resolved before serving, so a session id that names no live session, or an
    unreachable store, fails here (`SessionNotFound`, `StoreUnavailable`) rather than on every
    call. While serving, stdout carries the protocol only: the SDK points file descriptor 1 at
    stderr for everything else, and the library logs to stderr. Closes `store` at the end.
    """
    async with SessionManager(store, session_lifetime=session_lifetime) as manager:
        binding = SessionBinding(manager, user_id=user_id, session_id=session_id)
        resolved = await binding.resolve()
        logger.info("MCP server on stdio acts on session %s", id_hash(resolved))
        server = create_server(manager, user_id=user_id, session_id=resolved, registry=registry)
        async with stdio_server() as (read_stream, write_stream):
            await server.run(read_stream, write_stream, server.create_initialization_options())
