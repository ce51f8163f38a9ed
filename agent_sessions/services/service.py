"""`ContextAwareService` and `@service`: services bound to an `ExecutionContext`, and how a class
declares itself a service (its name and default lifetime)."""

from __future__ import annotations

import copy
import logging
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self, TypeVar, overload

from ..context import ExecutionContext
from ..errors import InvalidServiceConfig

if typing.TYPE_CHECKING:
    from .container import SmartDependencyContainer

__all__ = [
    "LIFETIMES",
    "SERVICE_CONFIG_KEY",
    "ContextAwareService",
    "Lifetime",
    "ServiceKey",
    "ServiceSpec",
    "check_lifetime",
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

#: The lifetimes a registration may have.
LIFETIMES: Final = frozenset({"singleton", "scoped", "transient"})
_SPEC_ATTR: Final = "__agent_service__"


class ContextAwareService:
    """Base class of services that adapt to the execution context and the session.

    `with_context` returns a shallow copy bound to the context: attributes *assigned* on the copy
    (what `configure` does) never reach the shared instance. A subclass that mutates a mutable
    attribute in place per request should override `__copy__` to copy that attribute too.

    `config_keys` lists what `configure` accepts; the default `configure` assigns those keys as
    attributes. Subclasses that declare `config_keys` and override `configure` call
    `check_config` first. A subclass that declares no `config_keys` and overrides `configure`
    (as `agent_sessions.analysis.RecommendationService` does) validates its configuration itself: the
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
    check_lifetime(lifetime)

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


def check_lifetime(lifetime: str) -> None:
    """Raise `ValueError` unless `lifetime` is one of `LIFETIMES`."""
    if lifetime not in LIFETIMES:
        raise ValueError(f"lifetime must be one of {sorted(LIFETIMES)}, got {lifetime!r}")
