"""Services that adapt to the session: a dependency container, context-aware services and the
per-session service configurator.

- `ContextAwareService` — a service bound to an `ExecutionContext` by `with_context`, which returns
  a *copy*: the shared instance (usually a container singleton) is never mutated, so two requests
  configured differently never see each other's settings. `configure(config)` accepts only the keys
  in `config_keys` and raises `InvalidServiceConfig` for any other. A subclass may instead declare
  no `config_keys` and override `configure` to validate its configuration itself (as
  `agent_sessions.analysis.RecommendationService` does).
- `@service(name=...)` — marks a class as a service (its name and default lifetime); a container
  `register(cls)` picks both up.
- `SmartDependencyContainer` — registrations by type or by name, with three lifetimes:
  ``"singleton"`` (one per container), ``"scoped"`` (one per open `ServiceScope`, i.e. per
  `ExecutionContext`; ``async with container.scope(ctx)`` disposes them on exit) and
  ``"transient"`` (a new one per resolution, owned by the caller). Constructor parameters are
  wired from type hints (then from a registration named like the parameter, then the default),
  factories may be sync or async, and a missing registration or a cycle raises an error naming
  the whole resolution chain.
- `SessionServiceConfigurator` — `configure_service(service, context)`: loads the
  context's session, contextualises the service and applies
  ``session.state["service_config"][<service class name>]`` to the copy. Unknown keys are reported:
  by default `InvalidServiceConfig` is raised (``on_unknown="warn"`` logs a warning naming them and
  applies the known keys only). For a service that declares no `config_keys` and overrides
  `configure`, the whole configuration goes to its `configure`, which does the validating.
"""

from __future__ import annotations

from .configurator import SessionServiceConfigurator
from .container import Registration, ServiceScope, SmartDependencyContainer, service_label
from .service import (
    SERVICE_CONFIG_KEY,
    ContextAwareService,
    Lifetime,
    ServiceSpec,
    registered_services,
    service,
    service_spec,
)

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
    "service_label",
    "service_spec",
]
