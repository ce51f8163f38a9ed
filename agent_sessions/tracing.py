"""OpenTelemetry spans for store operations, saves and agent runs (a no-op without OpenTelemetry).

Only `opentelemetry-api` is used (``pip install agent-sessions[otel]``): the application chooses
the SDK and the exporter (Logfire, OTLP, the console...). Without the API installed, or without a
tracer provider configured, every span here costs next to nothing and records nothing.

Spans are named ``agent_sessions.<operation>`` (``agent_sessions.get_session``,
``agent_sessions.mutate``, ``agent_sessions.agent_run``, ``agent_sessions.tool_call`` ...) and
carry these attributes:

- ``agent_sessions.backend`` — ``memory``, ``sqlite``, ``postgresql``, ``redis``, ...;
- ``agent_sessions.session_id_hash`` — `ids.id_hash` of the session id, never the id itself (a
  session id is a credential);
- ``agent_sessions.save.retries`` — on saves (`update_session`, `mutate`): how many
  compare-and-set conflicts were retried before the save won;
- ``agent_sessions.tool`` — on tool calls, the tool's name.

A failing operation records its exception on the span and sets the span's status to error.

Spans go to OpenTelemetry's global tracer provider, or to the one given to
`set_tracer_provider` (for an application that keeps the library's spans apart, or a test).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import Any, Concatenate, Final, ParamSpec, Protocol, TypeVar

from .ids import id_hash

__all__ = [
    "ATTR_BACKEND",
    "ATTR_RETRIES",
    "ATTR_SESSION",
    "ATTR_TOOL",
    "TRACER_NAME",
    "backend_name",
    "set_attribute",
    "set_tracer_provider",
    "span",
    "traced",
]

#: The instrumentation scope of every span of the library.
TRACER_NAME: Final = "agent_sessions"
ATTR_BACKEND: Final = "agent_sessions.backend"
ATTR_SESSION: Final = "agent_sessions.session_id_hash"
ATTR_RETRIES: Final = "agent_sessions.save.retries"
ATTR_TOOL: Final = "agent_sessions.tool"

P = ParamSpec("P")
R = TypeVar("R")

try:
    from opentelemetry import trace as _otel_trace
except ImportError:  # the optional extra is absent: spans are no-ops
    _otel_trace = None  # type: ignore[assignment]

#: The provider `set_tracer_provider` chose (None: OpenTelemetry's global one).
_provider: Any = None

_STORE_BACKENDS: Final = {"MemorySessionStore": "memory", "RedisSessionStore": "redis"}


def backend_name(store: object) -> str:
    """A short name of the store's backend: ``memory``, ``redis``, the SQL dialect, or the class name."""
    name = type(store).__name__
    if name in _STORE_BACKENDS:
        return _STORE_BACKENDS[name]
    engine = getattr(store, "engine", None)
    dialect = getattr(getattr(engine, "dialect", None), "name", None)
    return dialect if isinstance(dialect, str) else name


def set_tracer_provider(provider: Any) -> None:
    """Send the library's spans to `provider` (an OpenTelemetry `TracerProvider`) instead of the
    global one; None goes back to the global provider."""
    global _provider
    _provider = provider


def _tracer() -> Any:
    """The library's tracer, or None when nothing would record a span (no API, or no SDK set up)."""
    if _otel_trace is None:
        return None
    if _provider is not None:
        return _provider.get_tracer(TRACER_NAME)
    # Until the application installs a provider, every span would be a no-op: skip the machinery
    # (it costs ~4 us per call, a quarter of a memory-store get).
    if isinstance(_otel_trace.get_tracer_provider(), _otel_trace.ProxyTracerProvider | _otel_trace.NoOpTracerProvider):
        return None
    return _otel_trace.get_tracer(TRACER_NAME)


@contextmanager
def span(
    name: str,
    *,
    backend: str | None = None,
    store: object = None,
    session_id: str | None = None,
    **attributes: str | int | float | bool,
) -> Iterator[None]:
    """A span named `name`, current for the block, with the backend (given, or of `store`) and the
    hashed session id.

    Exceptions propagate unchanged; OpenTelemetry records them on the span. The attributes are
    computed only when the span records, so an unobserved call stays cheap.
    """
    tracer = _tracer()
    if tracer is None:
        yield
        return
    with tracer.start_as_current_span(name) as current:
        if current.is_recording():
            attrs: dict[str, str | int | float | bool] = dict(attributes)
            if backend is None and store is not None:
                backend = backend_name(store)
            if backend is not None:
                attrs[ATTR_BACKEND] = backend
            if session_id:
                attrs[ATTR_SESSION] = id_hash(session_id)
            current.set_attributes(attrs)
        yield


def set_attribute(key: str, value: str | int | float | bool) -> None:
    """Set an attribute on the current span (nothing without OpenTelemetry or outside a span)."""
    if _otel_trace is not None:
        _otel_trace.get_current_span().set_attribute(key, value)


class _HasStore(Protocol):
    @property
    def store(self) -> object: ...


def _session_id_in(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    first = args[0] if args else kwargs.get("session_id", kwargs.get("session"))
    if isinstance(first, str):
        return first
    found = getattr(first, "session_id", None)
    return found if isinstance(found, str) else None


def traced(
    operation: str, *, session: bool = True
) -> Callable[[Callable[Concatenate[Any, P], Awaitable[R]]], Callable[Concatenate[Any, P], Awaitable[R]]]:
    """Decorate an async method of an object with a ``store`` (the manager): one span per call.

    With `session`, the session id is the first argument when it is a string or has a
    ``session_id`` (a `Session`); the backend comes from ``self.store``.
    """

    name = f"agent_sessions.{operation}"

    def decorate(method: Callable[Concatenate[Any, P], Awaitable[R]]) -> Callable[Concatenate[Any, P], Awaitable[R]]:
        @functools.wraps(method)
        async def wrapper(self: _HasStore, /, *args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer() is None:
                return await method(self, *args, **kwargs)
            with span(name, store=self.store, session_id=_session_id_in(args, kwargs) if session else None):
                return await method(self, *args, **kwargs)

        return wrapper

    return decorate
