"""Services that adapt to the session: a dependency container, context-aware services and the
per-session service configurator.

- `ContextAwareService` — a service bound to an `ExecutionContext` by `with_context`, which returns
  a *copy*: the shared instance (usually a container singleton) is never mutated, so two requests
  configured differently never see each other's settings. `configure(config)` accepts only the keys
  in `config_keys` and raises `InvalidServiceConfig` for any other. A subclass may instead declare
  no `config_keys` and override `configure` to validate its configuration itself (the shape of
  the original ``RecommendationService``).
- `@service(name=...)` — marks a class as a service (its name and default lifetime); a container
  `register(cls)` picks both up.
- `SmartDependencyContainer` — registrations by type or by name, with three lifetimes:
  ``"singleton"`` (one per container), ``"scoped"`` (one per open `ServiceScope`, i.e. per
  `ExecutionContext`; ``async with container.scope(ctx)`` disposes them on exit) and
  ``"transient"`` (a new one per resolution, owned by the caller). Constructor parameters are
  wired from type hints (then from a registration named like the parameter, then the default),
  factories may be sync or async, and a missing registration or a cycle raises an error naming
  the whole resolution chain.
- `SessionServiceConfigurator` — the original `configure_service(service, context)`: loads the
  context's session, contextualises the service and applies
  ``session.state["service_config"][<service class name>]`` to the copy. Unknown keys are reported:
  by default `InvalidServiceConfig` is raised (``on_unknown="warn"`` logs a warning naming them and
  applies the known keys only). For a service that declares no `config_keys` and overrides
  `configure`, the whole configuration goes to its `configure`, which does the validating.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import logging
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, Final, Literal, Self, TypeVar, get_args, get_origin, overload

from .context import ExecutionContext, current_context
from .errors import DependencyCycle, InvalidServiceConfig, ServiceNotRegistered, ServiceResolutionError
from .ids import id_hash
from .manager import SessionManager

__all__ = [
    "SERVICE_CONFIG_KEY",
    "ContextAwareService",
    "Lifetime",
    "Registration",
    "ServiceScope",
    "ServiceSpec",
    "SessionServiceConfigurator",
    "SmartDependencyContainer",
    "registered_services",
    "service",
    "service_spec",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S", bound="ContextAwareService")

Lifetime = Literal["singleton", "scoped", "transient"]
ServiceKey = type[Any] | str
#: The session state key holding per-service configuration, keyed by service class name.
SERVICE_CONFIG_KEY: Final = "service_config"

_LIFETIMES: Final = frozenset({"singleton", "scoped", "transient"})
_SPEC_ATTR: Final = "__agent_service__"


# ====================================================================== services
class ContextAwareService:
    """Base class of services that adapt to the execution context and the session.

    `with_context` returns a shallow copy bound to the context: attributes *assigned* on the copy
    (what `configure` does) never reach the shared instance. A subclass that mutates a mutable
    attribute in place per request should override `__copy__` to copy that attribute too.

    `config_keys` lists what `configure` accepts; the default `configure` assigns those keys as
    attributes. Subclasses that declare `config_keys` and override `configure` call
    `check_config` first. A subclass that declares no `config_keys` and overrides `configure`
    (as the original ``RecommendationService`` does) validates its configuration itself: the
    configurator hands it the whole configuration.
    """

    config_keys: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, dependency_container: SmartDependencyContainer | None = None) -> None:
        self.dependency_container = dependency_container
        self._context: ExecutionContext | None = None

    @property
    def context(self) -> ExecutionContext | None:
        """The context this copy is bound to (None for the shared, uncontextualised instance)."""
        return self._context

    async def with_context(self, context: ExecutionContext) -> Self:
        """A copy of this service bound to `context`; this instance is left untouched."""
        clone = copy.copy(self)
        clone._context = context
        return clone

    def check_config(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Return `config` as a dict, or raise `InvalidServiceConfig` naming unknown keys."""
        if not isinstance(config, Mapping):
            raise InvalidServiceConfig(
                f"{type(self).__name__}: a service config must be an object, got {type(config).__name__}"
            )
        unknown = sorted(str(k) for k in config if k not in self.config_keys)
        if unknown:
            raise InvalidServiceConfig(
                f"{type(self).__name__}: unknown config key(s) {unknown}; accepted: {sorted(self.config_keys)}"
            )
        return dict(config)

    def configure(self, config: Mapping[str, Any]) -> None:
        """Apply a configuration: each accepted key becomes an attribute of this instance."""
        for key, value in self.check_config(config).items():
            setattr(self, key, value)


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """What `@service` records on a class: its registration name and default lifetime."""

    name: str
    lifetime: Lifetime = "singleton"


_decorated: dict[str, type[Any]] = {}


@overload
def service(cls: type[T], /) -> type[T]: ...
@overload
def service(
    *,
    name: str | None = None,
    lifetime: Lifetime = "singleton",
    container: SmartDependencyContainer | None = None,
) -> Callable[[type[T]], type[T]]: ...
def service(
    cls: type[T] | None = None,
    /,
    *,
    name: str | None = None,
    lifetime: Lifetime = "singleton",
    container: SmartDependencyContainer | None = None,
) -> type[T] | Callable[[type[T]], type[T]]:
    """Mark a class as a service: ``@service(name="recommendations")`` (or bare ``@service``).

    The class keeps working as a plain class. `SmartDependencyContainer.register(cls)` registers it
    under its type and under `name` (default: the class name) with `lifetime`;
    `register_decorated()` registers every decorated class at once; `container=` registers it
    right away.
    """
    _check_lifetime(lifetime)

    def decorate(target: type[T]) -> type[T]:
        if not isinstance(target, type):
            raise TypeError("@service decorates a class")
        spec = ServiceSpec(name or target.__name__, lifetime)
        setattr(target, _SPEC_ATTR, spec)
        previous = _decorated.get(spec.name)
        if previous is not None and previous is not target:
            logger.debug("service name %r now refers to %s (was %s)", spec.name, target.__qualname__, previous)
        _decorated[spec.name] = target
        if container is not None:
            container.register(target)
        return target

    return decorate if cls is None else decorate(cls)


def service_spec(cls: type[Any]) -> ServiceSpec | None:
    """The `ServiceSpec` of a class decorated with `@service` (not inherited), or None."""
    spec = cls.__dict__.get(_SPEC_ATTR)
    return spec if isinstance(spec, ServiceSpec) else None


def registered_services() -> dict[str, type[Any]]:
    """Every class decorated with `@service` in this process, by service name."""
    return dict(_decorated)


def _check_lifetime(lifetime: str) -> None:
    if lifetime not in _LIFETIMES:
        raise ValueError(f"lifetime must be one of {sorted(_LIFETIMES)}, got {lifetime!r}")


# ====================================================================== container
_MISSING: Final = object()
_OPTIONAL_TEXT = re.compile(r"^\s*(?:Optional\[(?P<a>.+)\]|(?P<b>.+?)\s*\|\s*None|None\s*\|\s*(?P<c>.+?))\s*$")


def _label(key: object) -> str:
    if isinstance(key, type):
        return key.__name__
    if isinstance(key, str):
        return repr(key)
    return getattr(key, "__name__", None) or repr(key)


def _chain_text(labels: list[str]) -> str:
    return " -> ".join(labels)


@dataclass(eq=False, slots=True)
class Registration:
    """One registered service: how to build it, how long it lives, and (singleton) the instance."""

    key: ServiceKey
    factory: Callable[..., Any] | None
    lifetime: Lifetime
    label: str
    owned: bool = True
    instance: Any = _MISSING
    aliases: list[ServiceKey] = field(default_factory=list)
    _lock: asyncio.Lock | None = None

    def lock(self) -> asyncio.Lock:
        if self._lock is None:
            self._lock = asyncio.Lock()
        return self._lock


@dataclass(slots=True)
class _Node:
    """One step of a resolution chain (what is being built, and with which lifetime)."""

    key: object
    label: str
    lifetime: Lifetime | None


class ServiceScope:
    """The scoped services of one `ExecutionContext`.

    ``async with container.scope(ctx) as scope:`` — resolutions of scoped services for `ctx` (or
    for its children, e.g. per-tool-call contexts) share one instance each; leaving the block
    disposes them in reverse creation order (`aclose()` or `close()`, awaited when async). Opening
    the scope of a context that already has one re-enters it; the outermost exit disposes.
    """

    def __init__(self, container: SmartDependencyContainer, context: ExecutionContext) -> None:
        self.container = container
        self.context = context
        self._instances: dict[int, Any] = {}
        self._order: list[Any] = []
        self._locks: dict[int, asyncio.Lock] = {}
        self._depth = 0
        self.closed = False

    def __contains__(self, key: object) -> bool:
        reg = self.container._lookup(key)
        return reg is not None and id(reg) in self._instances

    async def resolve(self, key: Any) -> Any:
        """Resolve `key` for this scope's context."""
        return await self.container.resolve(key, self.context)

    def _lock_for(self, reg: Registration) -> asyncio.Lock:
        return self._locks.setdefault(id(reg), asyncio.Lock())

    async def aclose(self) -> None:
        """Dispose the scoped services now and close the scope (idempotent)."""
        if self.closed:
            return
        self.closed = True
        self.container._scopes.pop(self.context.context_id, None)
        instances, self._order, self._instances = self._order, [], {}
        await _dispose_all(instances)

    async def __aenter__(self) -> Self:
        if self.closed:
            raise ServiceResolutionError("this service scope is closed; open a new one with container.scope(context)")
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth <= 0:
            await self.aclose()


async def _dispose_one(instance: Any) -> None:
    closer = getattr(instance, "aclose", None)
    if not callable(closer):
        closer = getattr(instance, "close", None)
    if not callable(closer):
        return
    result = closer()
    if inspect.isawaitable(result):
        await result


async def _dispose_all(instances: list[Any]) -> None:
    """Dispose in reverse creation order; every instance is tried, then failures are raised."""
    errors: list[Exception] = []
    for instance in reversed(instances):
        try:
            await _dispose_one(instance)
        except Exception as exc:  # collected and re-raised below: one failure must not leak the rest
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    if errors:
        raise ExceptionGroup("disposing services failed", errors)


class SmartDependencyContainer:
    """Resolves services by type or name with singleton / scoped / transient lifetimes.

    ::

        container = SmartDependencyContainer()
        container.register(RecommendationService)                # a class; @service name and lifetime
        container.register(Clock, SystemClock, lifetime="transient")
        container.register("catalogue", load_catalogue)          # an async factory, by name
        container.register_instance(SessionManager, manager)
        async with container.scope(ctx) as scope:
            recs = await scope.resolve("recommendations")

    A factory's parameters are resolved from its type hints (``X | None`` included): a registered
    type, the container itself for `SmartDependencyContainer`, the context for `ExecutionContext`;
    otherwise a registration named like the parameter; otherwise the parameter's default. A required
    parameter none of these satisfies raises `ServiceNotRegistered` with the resolution chain, a
    cycle raises `DependencyCycle`, and a singleton depending on a scoped service (which would
    outlive its scope) raises `ServiceResolutionError`. Errors raised by a factory are wrapped in
    `ServiceResolutionError` naming the chain, with the original chained.

    ``async with container:`` (or `aclose()`) disposes the singletons the container built (not
    instances handed to `register_instance`).
    """

    def __init__(self) -> None:
        self._registrations: dict[ServiceKey, Registration] = {}
        self._scopes: dict[str, ServiceScope] = {}
        self._owned_singletons: list[Any] = []

    # ------------------------------------------------------------------ registration
    def register(
        self,
        key: ServiceKey,
        factory: Callable[..., Any] | None = None,
        *,
        lifetime: Lifetime | None = None,
        name: str | None = None,
    ) -> Registration:
        """Register a service under `key` (a type or a name), built by `factory`.

        `factory` defaults to `key` when it is a class. `lifetime` and an extra `name` alias default
        to the `@service` spec of the class (else ``"singleton"``, no alias). Registering a key
        again replaces the previous registration.
        """
        if factory is None:
            if not isinstance(key, type):
                raise TypeError(f"register({key!r}) needs a factory: only a class is its own factory")
            factory = key
        if not callable(factory):
            raise TypeError(f"the factory of {_label(key)} is not callable: {factory!r}")
        spec = service_spec(factory) if isinstance(factory, type) else None
        if spec is None and isinstance(key, type):
            spec = service_spec(key)
        chosen: Lifetime = lifetime or (spec.lifetime if spec is not None else "singleton")
        _check_lifetime(chosen)
        reg = Registration(key=key, factory=factory, lifetime=chosen, label=_label(key))
        self._add(reg, key)
        alias = name or (spec.name if spec is not None else None)
        if alias is not None and alias != key:
            self._add(reg, alias)
        return reg

    def register_instance(self, key: ServiceKey, instance: Any, *, name: str | None = None) -> Registration:
        """Register an existing object as a singleton; the container will not dispose it."""
        reg = Registration(key=key, factory=None, lifetime="singleton", label=_label(key), owned=False)
        reg.instance = instance
        self._add(reg, key)
        if name is not None and name != key:
            self._add(reg, name)
        return reg

    def register_decorated(self) -> list[Registration]:
        """Register every class decorated with `@service` that is not registered yet."""
        return [self.register(cls) for cls in registered_services().values() if cls not in self._registrations]

    def _add(self, reg: Registration, key: ServiceKey) -> None:
        if not isinstance(key, (type, str)) or (isinstance(key, str) and not key):
            raise TypeError(f"a service key is a class or a non-empty name, got {key!r}")
        if key in self._registrations:
            logger.debug("replacing the registration of %s", _label(key))
        reg.aliases.append(key)
        self._registrations[key] = reg

    def __contains__(self, key: object) -> bool:
        return key in self._registrations

    def registration(self, key: ServiceKey) -> Registration | None:
        """The registration for `key`, or None."""
        return self._lookup(key)

    def _lookup(self, key: object) -> Registration | None:
        return self._registrations.get(key) if isinstance(key, (type, str)) else None

    # ------------------------------------------------------------------ scopes
    def scope(self, context: ExecutionContext) -> ServiceScope:
        """The scope of `context`, for ``async with``: the one already open for it or for its parent
        (a run's scope serves its tool calls), else a new one."""
        existing = self._scope_for(context)
        if existing is not None and not existing.closed:
            return existing
        opened = ServiceScope(self, context)
        self._scopes[context.context_id] = opened
        return opened

    def _scope_for(self, context: ExecutionContext | None) -> ServiceScope | None:
        if context is None:
            return None
        scope = self._scopes.get(context.context_id)
        if scope is None and context.parent_id is not None:
            scope = self._scopes.get(context.parent_id)
        return scope

    # ------------------------------------------------------------------ resolution
    @overload
    async def resolve(self, key: type[T], context: ExecutionContext | None = None) -> T: ...
    @overload
    async def resolve(self, key: str, context: ExecutionContext | None = None) -> Any: ...
    async def resolve(self, key: type[T] | str, context: ExecutionContext | None = None) -> T | Any:
        """Build or fetch the service registered under `key`.

        `context` (default: `current_context()`) selects the scope for scoped services and is
        what an `ExecutionContext` parameter receives.
        """
        return await self._resolve(key, context if context is not None else current_context(), [])

    async def _resolve(self, key: object, context: ExecutionContext | None, chain: list[_Node]) -> Any:
        labels = [node.label for node in chain]
        if any(node.key is key or node.key == key for node in chain):
            first = next(i for i, node in enumerate(chain) if node.key is key or node.key == key)
            cycle = [*labels[first:], _label(key)]
            raise DependencyCycle(f"dependency cycle: {_chain_text(cycle)}", [*labels, _label(key)])
        reg = self._lookup(key)
        if reg is None:
            return self._special(key, context, chain)
        if reg.lifetime == "singleton":
            return await self._singleton(reg, key, context, chain)
        if reg.lifetime == "scoped":
            return await self._scoped(reg, key, context, chain)
        return await self._build(reg, key, context, chain)

    def _special(self, key: object, context: ExecutionContext | None, chain: list[_Node]) -> Any:
        labels = [*(node.label for node in chain), _label(key)]
        if isinstance(key, type) and isinstance(self, key):
            return self
        if key is ExecutionContext:
            if any(node.lifetime == "singleton" for node in chain):
                raise ServiceResolutionError(
                    f"cannot resolve {_chain_text(labels)}: a singleton cannot hold a per-context ExecutionContext",
                    labels,
                )
            if context is None:
                raise ServiceNotRegistered(
                    f"cannot resolve {_chain_text(labels)}: an ExecutionContext is needed but none was given "
                    "(pass context= or run inside one)",
                    labels,
                )
            return context
        raise ServiceNotRegistered(
            f"cannot resolve {_chain_text(labels)}: nothing is registered for {labels[-1]}", labels
        )

    async def _singleton(
        self, reg: Registration, key: object, context: ExecutionContext | None, chain: list[_Node]
    ) -> Any:
        if reg.instance is not _MISSING:
            return reg.instance
        async with reg.lock():
            if reg.instance is _MISSING:
                # A singleton outlives every scope: it is built without a context.
                instance = await self._build(reg, key, None, chain)
                reg.instance = instance
                if reg.owned:
                    self._owned_singletons.append(instance)
        return reg.instance

    async def _scoped(
        self, reg: Registration, key: object, context: ExecutionContext | None, chain: list[_Node]
    ) -> Any:
        labels = [*(node.label for node in chain), reg.label]
        holder = next((node for node in chain if node.lifetime == "singleton"), None)
        if holder is not None:
            raise ServiceResolutionError(
                f"cannot resolve {_chain_text(labels)}: singleton {holder.label} cannot depend on scoped "
                f"{reg.label} (it would outlive the scope); make {holder.label} scoped or transient",
                labels,
            )
        scope = self._scope_for(context)
        if scope is None or scope.closed:
            raise ServiceResolutionError(
                f"cannot resolve {_chain_text(labels)}: {reg.label} is scoped and no scope is open for this "
                "context; use `async with container.scope(context)`",
                labels,
            )
        if id(reg) in scope._instances:
            return scope._instances[id(reg)]
        async with scope._lock_for(reg):
            if id(reg) not in scope._instances:
                instance = await self._build(reg, key, scope.context, chain)
                scope._instances[id(reg)] = instance
                scope._order.append(instance)
        return scope._instances[id(reg)]

    async def _build(self, reg: Registration, key: object, context: ExecutionContext | None, chain: list[_Node]) -> Any:
        factory = reg.factory
        assert factory is not None  # only register_instance registrations have none, and they hold an instance
        here = [*chain, _Node(key, reg.label, reg.lifetime)]
        kwargs = await self._arguments(factory, context, here)
        try:
            result = factory(**kwargs)
            if inspect.isawaitable(result):
                result = await result
        except ServiceResolutionError:
            raise
        except Exception as exc:
            labels = [node.label for node in here]
            raise ServiceResolutionError(
                f"building {_chain_text(labels)}: {_label(factory)} raised {type(exc).__name__}: {exc}", labels
            ) from exc
        return result

    async def _arguments(
        self, factory: Callable[..., Any], context: ExecutionContext | None, chain: list[_Node]
    ) -> dict[str, Any]:
        try:
            signature = inspect.signature(factory)
        except (TypeError, ValueError):
            return {}  # a builtin without an introspectable signature takes no injected arguments
        hints = self._hints(factory)
        kwargs: dict[str, Any] = {}
        for param in signature.parameters.values():
            if param.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
                continue
            if param.kind is inspect.Parameter.POSITIONAL_ONLY:
                if param.default is inspect.Parameter.empty:
                    raise ServiceResolutionError(
                        f"cannot build {_chain_text([n.label for n in chain])}: positional-only parameter "
                        f"{param.name!r} cannot be injected",
                        [n.label for n in chain],
                    )
                continue
            value = await self._argument(param, hints.get(param.name, param.annotation), context, chain)
            if value is not _MISSING:
                kwargs[param.name] = value
        return kwargs

    async def _argument(
        self, param: inspect.Parameter, hint: Any, context: ExecutionContext | None, chain: list[_Node]
    ) -> Any:
        for candidate in self._candidates(hint):
            if (
                candidate in self._registrations
                or candidate is ExecutionContext
                or (isinstance(candidate, type) and isinstance(self, candidate))
            ):
                if candidate is ExecutionContext and context is None and param.default is not inspect.Parameter.empty:
                    return _MISSING
                return await self._resolve(candidate, context, chain)
        if param.name in self._registrations:
            return await self._resolve(param.name, context, chain)
        if param.default is not inspect.Parameter.empty:
            return _MISSING
        labels = [node.label for node in chain]
        wanted = hint.__name__ if isinstance(hint, type) else str(hint) if hint is not inspect.Parameter.empty else "?"
        labels_with = [*labels, wanted]
        raise ServiceNotRegistered(
            f"cannot resolve {_chain_text(labels_with)}: nothing is registered for parameter {param.name!r} "
            f"({wanted}) of {labels[-1]}, and it has no default",
            labels_with,
        )

    def _candidates(self, hint: Any) -> list[Any]:
        """The types (or registration names) a parameter annotation may be satisfied by, in order."""
        if hint is inspect.Parameter.empty or hint is None:
            return []
        if isinstance(hint, str):
            # An annotation that could not be evaluated: match it against registered names.
            match = _OPTIONAL_TEXT.match(hint)
            text = next((g for g in match.groups() if g), hint) if match else hint
            text = text.strip().strip("'\"")
            found = [k for k in self._registrations if isinstance(k, type) and k.__name__ == text]
            if text in ("SmartDependencyContainer", type(self).__name__):
                found.append(type(self))
            if text == "ExecutionContext":
                found.append(ExecutionContext)
            return found
        origin = get_origin(hint)
        if origin is typing.Union or origin is types.UnionType:
            return [c for arg in get_args(hint) if arg is not type(None) for c in self._candidates(arg)]
        if origin is typing.Annotated:
            return self._candidates(get_args(hint)[0])
        return [hint]

    def _hints(self, factory: Callable[..., Any]) -> dict[str, Any]:
        target: Any = factory.__init__ if isinstance(factory, type) else factory  # type: ignore[misc]
        local_names: dict[str, Any] = {k.__name__: k for k in self._registrations if isinstance(k, type)}
        local_names.setdefault("SmartDependencyContainer", SmartDependencyContainer)
        local_names.setdefault("ExecutionContext", ExecutionContext)
        try:
            return typing.get_type_hints(target, localns=local_names)
        except (NameError, TypeError, AttributeError):
            # Some annotation names something not importable from the factory's module (a local
            # class, say); fall back to the raw annotations, matched by name in `_candidates`.
            return dict(getattr(target, "__annotations__", {}) or {})

    # ------------------------------------------------------------------ disposal
    async def aclose(self) -> None:
        """Dispose the singletons this container built (reverse creation order) and forget them."""
        owned, self._owned_singletons = self._owned_singletons, []
        for reg in set(self._registrations.values()):
            if reg.owned:
                reg.instance = _MISSING
        await _dispose_all(owned)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


# ====================================================================== configurator
class SessionServiceConfigurator:
    """Session-based service configurator: customises a service from its session's data.

    ``session.state["service_config"]`` maps service class names to configurations, e.g.
    ``{"RecommendationService": {"algorithm": "content_based"}}``. `configure_service` returns a
    contextualised copy with that configuration applied (the shared service is never changed).

    Unknown keys (not in the service's `config_keys`) and a ``service_config`` that is not an
    object are reported: ``on_unknown="raise"`` (default) raises `InvalidServiceConfig`;
    ``on_unknown="warn"`` logs a warning naming them and applies only the known keys. A service
    class that declares no `config_keys` but overrides `configure` gets its whole configuration
    object: its `configure` is what validates it (there is no key list to check against).
    """

    def __init__(
        self,
        session_manager: SessionManager,
        dependency_container: SmartDependencyContainer,
        *,
        on_unknown: Literal["raise", "warn"] = "raise",
    ) -> None:
        if on_unknown not in ("raise", "warn"):
            raise ValueError("on_unknown must be 'raise' or 'warn'")
        self.session_manager = session_manager
        self.dependency_container = dependency_container
        self.on_unknown = on_unknown

    async def configure_service(self, service: S, context: ExecutionContext) -> S:
        """Configure `service` for the session of `context`.

        As in the original: without a session id, or when the session is gone, `service` is
        returned as is; otherwise a copy bound to `context` (`service.with_context`) with
        ``state["service_config"][<class name>]`` applied by its `configure`.
        """
        if not context.session_id:
            return service
        session = await self.session_manager.get_session(context.session_id)
        if session is None:
            return service
        contextualized = await service.with_context(context)
        config = self._config_for(session.state.get(SERVICE_CONFIG_KEY), contextualized, context.session_id)
        if config is not None:
            contextualized.configure(config)
        return contextualized

    async def get_service(self, key: type[S] | str, context: ExecutionContext | None = None) -> Any:
        """Resolve `key` from the container, then `configure_service` it for `context`.

        `context` defaults to `current_context()`; without any context the shared service is returned.
        """
        ctx = context if context is not None else current_context()
        resolved = await self.dependency_container.resolve(key, ctx)
        if ctx is None:
            return resolved
        if not isinstance(resolved, ContextAwareService):
            raise TypeError(f"{_label(key)} resolved to a {type(resolved).__name__}, not a ContextAwareService")
        return await self.configure_service(resolved, ctx)

    def _config_for(self, raw: Any, service: ContextAwareService, session_id: str) -> dict[str, Any] | None:
        name = type(service).__name__
        if raw is None:
            return None
        if not isinstance(raw, dict):
            self._report(
                f"state[{SERVICE_CONFIG_KEY!r}] must map service class names to objects, got {type(raw).__name__}",
                session_id,
            )
            return None
        config = raw.get(name)
        if config is None:
            return None
        if not isinstance(config, dict):
            self._report(
                f"state[{SERVICE_CONFIG_KEY!r}][{name!r}] must be an object, got {type(config).__name__}", session_id
            )
            return None
        accepted = type(service).config_keys
        if not accepted and _validates_own_config(type(service)):
            return dict(config)
        unknown = sorted(k for k in config if k not in accepted)
        if unknown:
            self._report(f"{name}: unknown config key(s) {unknown}; accepted: {sorted(accepted)}", session_id)
            return {k: v for k, v in config.items() if k in accepted}
        return dict(config)

    def _report(self, message: str, session_id: str) -> None:
        if self.on_unknown == "raise":
            raise InvalidServiceConfig(f"session {id_hash(session_id)}: {message}")
        logger.warning("session %s: %s (ignored)", id_hash(session_id), message)


def _validates_own_config(cls: type[ContextAwareService]) -> bool:
    """True when `cls` (or a base between it and `ContextAwareService`) overrides `configure`."""
    return cls.configure is not ContextAwareService.configure
