"""`SessionServiceConfigurator`: a per-context copy of a service, configured from its session's
``service_config``."""

from __future__ import annotations

import logging
from typing import Any, Literal, TypeVar

from ..context import ExecutionContext, current_context
from ..errors import InvalidServiceConfig
from ..ids import id_hash
from ..manager import SessionManager
from .container import SmartDependencyContainer, service_label
from .service import SERVICE_CONFIG_KEY, ContextAwareService

__all__ = ["SessionServiceConfigurator"]

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=ContextAwareService)


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

        Without a session id, or when the session is gone, `service` is
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
            raise TypeError(f"{service_label(key)} resolved to a {type(resolved).__name__}, not a ContextAwareService")
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
