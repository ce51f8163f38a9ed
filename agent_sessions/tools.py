"""`@tool`, `ToolRegistry`, and `session_tools`: the built-in tools that personalise an agent.

A tool is a function (async or sync) whose first parameter is ``ctx: ExecutionContext``; the
other parameters are what a model supplies. `@tool(name=..., description=...)` turns it into a
`Tool` with a pydantic model of those parameters; a `ToolRegistry` holds tools, validates call
arguments against that model, exports OpenAI function-calling definitions, and dispatches
``await registry.call(name, args, ctx)``.

Your own tools reach their session through the context, typed: ``ctx.manager``,
``await ctx.session()`` and ``await ctx.update(fn)`` (see `ExecutionContext`)::

    registry = ToolRegistry()

    @registry.tool
    async def remember_city(ctx: ExecutionContext, city: str) -> str:
        await ctx.update(lambda session: session.set("city", city))
        return f"noted: {city}"

A model's mistake goes back to the model: bad arguments raise `ToolArgumentsError`, and a call
the session refuses (a ``user:`` key on a session without a user, a value that would make the
session too large) raises `ToolError` with the cause chained; nothing is written. The
pydantic-ai integration turns both into a retry prompt, so the run goes on.

`session_tools` holds the built-in tools. Each one touches only ``ctx.session_id``: no tool takes
a session id from the model, so a model cannot reach another user's session. They read and save
through the context's `SessionManager` (bound by `SessionContextProvider.enrich_context` and by
the integrations). Writes go through `SessionManager.mutate`, so concurrent writers lose nothing.

Key policy of `get_session_value` / `set_session_value`:

- reads refuse ``temp:`` keys (never persisted, so never in a loaded session) and keys starting
  with ``_`` (internal by convention);
- writes also refuse ``app:`` keys (shared by every user), ``context:`` keys (they become
  properties of every later context, e.g. could shadow ``session_manager``) and
  ``service_config`` (configures services). ``user:`` keys are allowed: they are the user's own.

Bounds: keys are 1-128 printable characters, one value encodes to at most 16 KiB of JSON, one
`update_user_preferences` call sets at most 32 preferences, `get_recent_history` returns at most
50 entries.

`search_memory` (see `agent_sessions.recall`) searches the history of the session's user across
their live sessions (only this session when it has no user); the model gives the query, never
whose history. At most 20 hits of at most 600 characters each; a store without search (Redis)
answers with a `ToolError` naming the reason.
"""

from __future__ import annotations

import asyncio
import builtins
import inspect
import json
import re
import typing
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from typing import Annotated, Any, Concatenate, Final, Generic, ParamSpec, TypeVar, overload

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model

from .codec import check_json
from .context import ExecutionContext
from .errors import ScopeError, SessionNotFound, SessionTooLarge, ToolArgumentsError, ToolError, ToolNotFound
from .manager import SessionManager
from .recall import SEARCH_TOOL, search_memory
from .session import APP_PREFIX, TEMP_PREFIX, Session

__all__ = [
    "MAX_KEY_LENGTH",
    "MAX_VALUE_BYTES",
    "REFUSABLE_ERRORS",
    "Tool",
    "ToolArgumentsError",
    "ToolError",
    "ToolRegistry",
    "session_manager_of",
    "session_tools",
    "tool",
]

P = ParamSpec("P")
R = TypeVar("R")

#: Tool names as OpenAI function calling accepts them.
TOOL_NAME_PATTERN: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")

MAX_KEY_LENGTH: Final = 128
MAX_VALUE_BYTES: Final = 16 * 1024
MAX_PREFERENCES_PER_CALL: Final = 32
MAX_HISTORY_LIMIT: Final = 50

_READ_REFUSED_PREFIXES: Final = (TEMP_PREFIX, "_")
_WRITE_REFUSED_PREFIXES: Final = (TEMP_PREFIX, "_", APP_PREFIX, "context:")
_WRITE_REFUSED_KEYS: Final = frozenset({"service_config"})

#: Errors a tool call raises because of what the model asked for: `ToolRegistry.call` re-raises
#: them as `ToolError` (nothing was written: the store refuses before any write).
REFUSABLE_ERRORS: Final = (ScopeError, SessionTooLarge)


class Tool(Generic[P, R]):
    """A function usable as a tool: its name, description, and a pydantic model of its arguments.

    Calling the `Tool` calls the function unchanged; `ToolRegistry.call` validates first.
    """

    def __init__(
        self,
        function: Callable[Concatenate[ExecutionContext, P], R],
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> None:
        tool_name = function.__name__ if name is None else name
        if not isinstance(tool_name, str) or TOOL_NAME_PATTERN.fullmatch(tool_name) is None:
            raise ValueError(f"tool name {tool_name!r} must be 1-64 characters of [A-Za-z0-9_-]")
        self.function = function
        self.name: str = tool_name
        self.description: str = description if description is not None else _first_paragraph(function.__doc__)
        self.is_async = inspect.iscoroutinefunction(function)
        self.args_model, self._fields = _args_model(function, tool_name)

    def __call__(self, ctx: ExecutionContext, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.function(ctx, *args, **kwargs)

    def __repr__(self) -> str:
        return f"Tool(name={self.name!r})"

    def parameters_schema(self) -> dict[str, Any]:
        """The JSON schema of the arguments (an ``object`` schema, titles removed)."""
        schema = self.args_model.model_json_schema(by_alias=True)
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            if isinstance(prop, dict):
                prop.pop("title", None)
        return schema

    def openai_schema(self) -> dict[str, Any]:
        """The definition in the OpenAI function-calling format."""
        return {
            "type": "function",
            "function": {"name": self.name, "description": self.description, "parameters": self.parameters_schema()},
        }

    def validate_args(self, args: Mapping[str, Any] | str | None) -> dict[str, Any]:
        """Validate call arguments (a mapping, or a JSON object string as models send them).

        Returns the keyword arguments to call the function with; raises `ToolArgumentsError`.
        """
        try:
            if isinstance(args, str | bytes):
                model = self.args_model.model_validate_json(args or b"{}")
            else:
                model = self.args_model.model_validate({} if args is None else dict(args))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'arguments'}: {err['msg']}" for err in exc.errors()
            )
            raise ToolArgumentsError(f"invalid arguments for tool {self.name!r}: {problems}") from exc
        return {param: getattr(model, internal) for internal, param in self._fields.items()}

    async def invoke(self, ctx: ExecutionContext, kwargs: Mapping[str, Any]) -> Any:
        """Call the function with already validated `kwargs`; a sync function runs in a thread."""
        if self.is_async:
            return await typing.cast(Awaitable[Any], self.function(ctx, **kwargs))  # type: ignore[call-arg]
        # `to_thread` copies the contextvars, so `current_context()` works in the thread too.
        result = await asyncio.to_thread(self.function, ctx, **kwargs)  # type: ignore[call-arg]
        if inspect.isawaitable(result):
            return await result
        return result


def _first_paragraph(doc: str | None) -> str:
    if not doc:
        return ""
    return inspect.cleandoc(doc).split("\n\n", 1)[0].replace("\n", " ").strip()


def _args_model(function: Callable[..., Any], name: str) -> tuple[type[BaseModel], dict[str, str]]:
    """A pydantic model of every parameter but the first (the context); also field -> parameter."""
    signature = inspect.signature(function)
    params = list(signature.parameters.values())
    if not params or params[0].kind not in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
        raise TypeError(f"tool {name!r}: the first parameter must be `ctx: ExecutionContext`")
    try:
        hints = typing.get_type_hints(function, include_extras=True)
    except (NameError, TypeError) as exc:
        raise TypeError(f"tool {name!r}: cannot resolve the parameter annotations: {exc}") from exc
    first = hints.get(params[0].name)
    if first is not None and first is not ExecutionContext:
        raise TypeError(f"tool {name!r}: the first parameter must be annotated ExecutionContext, not {first!r}")
    fields: dict[str, Any] = {}
    names: dict[str, str] = {}
    for index, param in enumerate(params[1:]):
        if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise TypeError(f"tool {name!r}: *args and **kwargs cannot be described to a model; name each argument")
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise TypeError(f"tool {name!r}: parameter {param.name!r} must be passable by keyword")
        annotation = hints.get(param.name, Any)
        default = ... if param.default is inspect.Parameter.empty else param.default
        # Internal field names avoid clashes with BaseModel attributes (`json`, `schema`, ...).
        internal = f"arg{index}"
        fields[internal] = (annotation, Field(default, alias=param.name))
        names[internal] = param.name
    model: type[BaseModel] = create_model(
        f"{name}_arguments", __config__=ConfigDict(extra="forbid", populate_by_name=False), **fields
    )
    return model, names


@overload
def tool(function: Callable[Concatenate[ExecutionContext, P], R], /) -> Tool[P, R]: ...


@overload
def tool(
    *, name: str | None = None, description: str | None = None, registry: ToolRegistry | None = None
) -> Callable[[Callable[Concatenate[ExecutionContext, P], R]], Tool[P, R]]: ...


def tool(
    function: Callable[Concatenate[ExecutionContext, P], R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    registry: ToolRegistry | None = None,
) -> Tool[P, R] | Callable[[Callable[Concatenate[ExecutionContext, P], R]], Tool[P, R]]:
    """Make a tool of a function whose first parameter is ``ctx: ExecutionContext``.

    ``@tool`` or ``@tool(name=..., description=...)``; the name defaults to the function's name and
    the description to the first paragraph of its docstring. With `registry`, the tool is also
    registered there.
    """

    def decorate(fn: Callable[Concatenate[ExecutionContext, P], R]) -> Tool[P, R]:
        made = Tool(fn, name=name, description=description)
        if registry is not None:
            registry.register(made)
        return made

    return decorate if function is None else decorate(function)


class ToolRegistry:
    """A named set of tools: registration, lookup, argument validation, schemas and dispatch."""

    def __init__(self, tools: Iterable[Tool[Any, Any] | Callable[..., Any]] = ()) -> None:
        self._tools: dict[str, Tool[Any, Any]] = {}
        for item in tools:
            self.register(item)

    def register(self, item: Tool[Any, Any] | Callable[..., Any], *, replace: bool = False) -> Tool[Any, Any]:
        """Add a tool (or a plain function, made a tool with its own name); returns the tool.

        Raises `ValueError` if the name is taken, unless `replace`.
        """
        made = item if isinstance(item, Tool) else Tool(item)
        if made.name in self._tools and not replace:
            raise ValueError(f"a tool named {made.name!r} is already registered")
        self._tools[made.name] = made
        return made

    @overload
    def tool(self, function: Callable[Concatenate[ExecutionContext, P], R], /) -> Tool[P, R]: ...

    @overload
    def tool(
        self, /, *, name: str | None = None, description: str | None = None
    ) -> Callable[[Callable[Concatenate[ExecutionContext, P], R]], Tool[P, R]]: ...

    def tool(
        self,
        function: Callable[Concatenate[ExecutionContext, P], R] | None = None,
        /,
        *,
        name: str | None = None,
        description: str | None = None,
    ) -> Tool[P, R] | Callable[[Callable[Concatenate[ExecutionContext, P], R]], Tool[P, R]]:
        """Decorator: ``@registry.tool`` or ``@registry.tool(name=...)`` makes a tool (as `tool`
        does) and registers it here."""
        decorate = tool(name=name, description=description, registry=self)
        return decorate if function is None else decorate(function)

    def unregister(self, name: str) -> None:
        """Remove a tool; raises `ToolNotFound` if there is none by that name."""
        self.get(name)
        del self._tools[name]

    def get(self, name: str) -> Tool[Any, Any]:
        """The tool called `name`; raises `ToolNotFound`."""
        found = self._tools.get(name)
        if found is None:
            known = ", ".join(sorted(self._tools)) or "none"
            raise ToolNotFound(f"no tool named {name!r} (registered: {known})")
        return found

    def list(self) -> builtins.list[Tool[Any, Any]]:
        """The registered tools, in registration order."""
        return list(self._tools.values())

    def names(self) -> builtins.list[str]:
        """The registered tool names, in registration order."""
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool[Any, Any]]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def copy(self) -> ToolRegistry:
        """A new registry with the same tools (add your own without changing this one)."""
        return ToolRegistry(self._tools.values())

    def openai_tools(self, names: Iterable[str] | None = None) -> builtins.list[dict[str, Any]]:
        """OpenAI function-calling definitions (``{"type": "function", "function": {...}}``)."""
        selected = self.list() if names is None else [self.get(n) for n in names]
        return [t.openai_schema() for t in selected]

    def validate(self, name: str, args: Mapping[str, Any] | str | None) -> dict[str, Any]:
        """Validate arguments for tool `name`; raises `ToolNotFound` or `ToolArgumentsError`."""
        return self.get(name).validate_args(args)

    async def call(self, name: str, args: Mapping[str, Any] | str | None, ctx: ExecutionContext) -> Any:
        """Validate `args` and run tool `name` in `ctx` (made `current_context()` during the call).

        Raises `ToolNotFound` for an unknown name. A call the model can correct raises a
        `ToolError`, nothing written: `ToolArgumentsError` for bad arguments (a refused key
        included), `ToolError` with the `ScopeError` / `SessionTooLarge` chained when the session
        refuses the write. Show ``str(error)`` (or ``error.to_result()``) to the model and let
        it try again. Anything else the tool raises propagates unchanged.
        """
        found = self.get(name)
        kwargs = found.validate_args(args)
        token = ctx.activate()
        try:
            return await found.invoke(ctx, kwargs)
        except REFUSABLE_ERRORS as exc:
            raise ToolError(f"tool {name!r} refused: {exc}") from exc
        finally:
            ExecutionContext.deactivate(token)


# ============================================================================ built-in tools
def _printable(key: str) -> str:
    if not key.isprintable():
        raise ValueError("keys must be printable characters")
    return key


def _readable(key: str) -> str:
    if key.startswith(_READ_REFUSED_PREFIXES):
        raise ValueError(f"keys starting with {', '.join(map(repr, _READ_REFUSED_PREFIXES))} cannot be read by a tool")
    return key


def _writable(key: str) -> str:
    if key.startswith(_WRITE_REFUSED_PREFIXES) or key in _WRITE_REFUSED_KEYS:
        raise ValueError(
            f"keys starting with {', '.join(map(repr, _WRITE_REFUSED_PREFIXES))} and the keys "
            f"{', '.join(map(repr, sorted(_WRITE_REFUSED_KEYS)))} cannot be written by a tool"
        )
    return key


def _bounded_json(value: Any) -> Any:
    check_json(value)
    size = len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode())
    if size > MAX_VALUE_BYTES:
        raise ValueError(f"the value is {size} bytes as JSON; at most {MAX_VALUE_BYTES} are allowed")
    return value


def _bounded_preferences(prefs: dict[str, Any]) -> dict[str, Any]:
    if len(prefs) > MAX_PREFERENCES_PER_CALL:
        raise ValueError(f"at most {MAX_PREFERENCES_PER_CALL} preferences per call")
    for value in prefs.values():
        _bounded_json(value)
    return prefs


Key = Annotated[str, Field(min_length=1, max_length=MAX_KEY_LENGTH), AfterValidator(_printable)]
ReadableKey = Annotated[Key, AfterValidator(_readable), Field(description="The state key.")]
WritableKey = Annotated[Key, AfterValidator(_writable), Field(description="The state key.")]
JsonValue = Annotated[Any, AfterValidator(_bounded_json), Field(description="Any JSON value.")]
Preferences = Annotated[
    dict[Key, Any],
    AfterValidator(_bounded_preferences),
    Field(description="Preference names and their new JSON values."),
]
HistoryLimit = Annotated[int, Field(ge=1, le=MAX_HISTORY_LIMIT, description="How many recent entries.")]


def session_manager_of(ctx: ExecutionContext) -> SessionManager:
    """The `SessionManager` a context carries: ``ctx.manager`` (raises `NoSessionManager`)."""
    return ctx.manager


async def _get_user_preferences(ctx: ExecutionContext) -> dict[str, Any]:
    """Get the user's saved preferences."""
    session = await ctx.session()
    return {"preferences": session.preferences}


async def _update_user_preferences(ctx: ExecutionContext, preferences: Preferences) -> dict[str, Any]:
    """Save preferences of the user (only the given names change; they follow the user to new sessions)."""

    def apply(session: Session) -> None:
        session.preferences.update(preferences)

    saved = await ctx.update(apply)
    return {"status": "success", "preferences": saved.preferences}


async def _get_session_value(ctx: ExecutionContext, key: ReadableKey) -> dict[str, Any]:
    """Read one value from the session's state."""
    session = await ctx.session()
    return {"key": key, "found": key in session.state, "value": session.state.get(key)}


async def _set_session_value(ctx: ExecutionContext, key: WritableKey, value: JsonValue) -> dict[str, Any]:
    """Remember a value in the session's state (``user:`` keys are shared by all of the user's sessions)."""

    def apply(session: Session) -> None:
        session.set(key, value)

    saved = await ctx.update(apply)
    return {"status": "success", "key": key, "value": saved.state.get(key)}


async def _get_recent_history(ctx: ExecutionContext, limit: HistoryLimit = 10) -> dict[str, Any]:
    """The session's most recent history entries, oldest first."""
    if not ctx.session_id:
        raise SessionNotFound("this ExecutionContext has no session_id")
    page = await ctx.manager.get_history(ctx.session_id, limit=limit)
    return {"entries": page.entries}


async def _get_feature_flags(ctx: ExecutionContext) -> dict[str, Any]:
    """The feature flags switched for this session."""
    session = await ctx.session()
    return {"feature_flags": session.feature_flags}


#: The built-in session tools. Copy it (`session_tools.copy()`) to add your own.
session_tools: Final = ToolRegistry(
    [
        Tool(_get_user_preferences, name="get_user_preferences"),
        Tool(_update_user_preferences, name="update_user_preferences"),
        Tool(_get_session_value, name="get_session_value"),
        Tool(_set_session_value, name="set_session_value"),
        Tool(_get_recent_history, name="get_recent_history"),
        Tool(_get_feature_flags, name="get_feature_flags"),
        Tool(search_memory, name=SEARCH_TOOL),
    ]
)
