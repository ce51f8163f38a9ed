"""`SmartDependencyContainer`: registrations by type or name, three lifetimes, constructor
injection from type hints, and resolution errors that name the whole chain."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Final, Self, TypeVar, get_args, get_origin, overload

from ..context import ExecutionContext, current_context
from ..errors import DependencyCycle, ServiceNotRegistered, ServiceResolutionError
from .service import Lifetime, ServiceKey, check_lifetime, registered_services, service_spec

__all__ = ["Registration", "ServiceScope", "SmartDependencyContainer", "service_label"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_MISSING: Final = object()
_OPTIONAL_TEXT = re.compile(r"^\s*(?:Optional\[(?P<a>.+)\]|(?P<b>.+?)\s*\|\s*None|None\s*\|\s*(?P<c>.+?))\s*$")


def service_label(key: object) -> str:
    """How a registration key (a type or a name) is shown in messages."""
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
    `ServiceResolutionError` naming the chain, with the underlying error chained.

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
            raise TypeError(f"the factory of {service_label(key)} is not callable: {factory!r}")
        spec = service_spec(factory) if isinstance(factory, type) else None
        if spec is None and isinstance(key, type):
            spec = service_spec(key)
        chosen: Lifetime = lifetime or (spec.lifetime if spec is not None else "singleton")
        check_lifetime(chosen)
        reg = Registration(key=key, factory=factory, lifetime=chosen, label=service_label(key))
        self._add(reg, key)
        alias = name or (spec.name if spec is not None else None)
        if alias is not None and alias != key:
            self._add(reg, alias)
        return reg

    def register_instance(self, key: ServiceKey, instance: Any, *, name: str | None = None) -> Registration:
        """Register an existing object as a singleton; the container will not dispose it."""
        reg = Registration(key=key, factory=None, lifetime="singleton", label=service_label(key), owned=False)
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
            logger.debug("replacing the registration of %s", service_label(key))
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
            cycle = [*labels[first:], service_label(key)]
            raise DependencyCycle(f"dependency cycle: {_chain_text(cycle)}", [*labels, service_label(key)])
        reg = self._lookup(key)
        if reg is None:
            return self._special(key, context, chain)
        if reg.lifetime == "singleton":
            return await self._singleton(reg, key, context, chain)
        if reg.lifetime == "scoped":
            return await self._scoped(reg, key, context, chain)
        return await self._build(reg, key, context, chain)

    def _special(self, key: object, context: ExecutionContext | None, chain: list[_Node]) -> Any:
        labels = [*(node.label for node in chain), service_label(key)]
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
                f"building {_chain_text(labels)}: {service_label(factory)} raised {type(exc).__name__}: {exc}", labels
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
