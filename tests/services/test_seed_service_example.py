"""The original document's usage example 3 (a `ContextAwareService` that overrides `configure`
and declares no `config_keys`) configured by `SessionServiceConfigurator` under its defaults."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from typing import Any, Dict  # noqa: UP035 - the original example's spelling

import pytest

from agent_sessions import ExecutionContext, MemorySessionStore, SessionManager
from agent_sessions.errors import InvalidServiceConfig
from agent_sessions.services import (
    ContextAwareService,
    SessionServiceConfigurator,
    SmartDependencyContainer,
    registered_services,
    service,
)

from ..support import FakeClock

# The module, not the `service` decorator the package re-exports under the same name.
services_module = importlib.import_module("agent_sessions.services.service")


@pytest.fixture
def seed_service_class(monkeypatch: pytest.MonkeyPatch) -> type[ContextAwareService]:
    """The original ``RecommendationService``: decorator, constructor and `configure` verbatim.

    Its recommendation methods are left out (the original's are empty); the library's real one
    is `agent_sessions.analysis.RecommendationService`. The process-wide `@service` registry is
    restored afterwards, so the library's "recommendations" service keeps its name.
    """
    monkeypatch.setattr(services_module, "_decorated", dict(registered_services()))

    @service(name="recommendations")
    class RecommendationService(ContextAwareService):
        """Service for providing recommendations."""

        def __init__(
            self,
            dependency_container: SmartDependencyContainer = None,
            default_algorithm: str = "collaborative",
        ):
            """Initialize service."""
            super().__init__(dependency_container)
            self.default_algorithm = default_algorithm
            self.algorithm = default_algorithm
            self.personalization_enabled = True

        def configure(self, config: Dict[str, Any]) -> None:  # noqa: UP006
            """Configure service."""
            if "algorithm" in config:
                self.algorithm = config["algorithm"]

            if "personalization_enabled" in config:
                self.personalization_enabled = config["personalization_enabled"]

    return RecommendationService


@pytest.fixture
async def manager() -> AsyncIterator[SessionManager]:
    async with SessionManager(MemorySessionStore(clock=FakeClock()), auto_cleanup=False) as m:
        yield m


async def test_the_original_service_is_configured_per_session_under_the_default_policy(
    manager: SessionManager, seed_service_class: type[ContextAwareService]
) -> None:
    container = SmartDependencyContainer()
    container.register(seed_service_class)
    configurator = SessionServiceConfigurator(manager, container)  # on_unknown="raise"
    config = {"RecommendationService": {"algorithm": "content_based", "personalization_enabled": False}}
    session = await manager.create_session("ana", {"service_config": config})
    ctx = ExecutionContext(session_id=session.session_id, user_id="ana")

    configured = await configurator.get_service("recommendations", ctx)

    assert type(configured) is seed_service_class and configured.context is ctx
    assert configured.algorithm == "content_based" and configured.personalization_enabled is False
    shared = await container.resolve(seed_service_class)
    assert shared.algorithm == "collaborative" and shared.personalization_enabled is True
    assert shared.dependency_container is container  # wired from the constructor's type hint


async def test_keys_the_original_configure_does_not_know_are_left_to_it(
    manager: SessionManager, seed_service_class: type[ContextAwareService]
) -> None:
    container = SmartDependencyContainer()
    container.register(seed_service_class)
    configurator = SessionServiceConfigurator(manager, container)
    config = {"RecommendationService": {"algorithm": "popularity", "colour": "red"}}
    session = await manager.create_session("bo", {"service_config": config})

    configured = await configurator.get_service("recommendations", ExecutionContext(session_id=session.session_id))

    assert configured.algorithm == "popularity"  # its `configure` ignores "colour", as the original does
    assert not hasattr(configured, "colour")


class SelfValidating(ContextAwareService):
    """Declares no `config_keys` and validates in its own `configure`."""

    def __init__(self) -> None:
        super().__init__()
        self.level = 1

    def configure(self, config: Any) -> None:
        unknown = set(config) - {"level"}
        if unknown:
            raise InvalidServiceConfig(f"SelfValidating does not accept {sorted(unknown)}")
        self.level = config.get("level", self.level)


class Plain(ContextAwareService):
    """Declares no `config_keys` and keeps the default `configure`: it accepts nothing."""


async def test_a_service_validating_its_own_config_raises_its_own_error(manager: SessionManager) -> None:
    container = SmartDependencyContainer()
    container.register(SelfValidating)
    configurator = SessionServiceConfigurator(manager, container)
    good = await manager.create_session("cy", {"service_config": {"SelfValidating": {"level": 3}}})
    bad = await manager.create_session("cy", {"service_config": {"SelfValidating": {"volume": 11}}})

    configured = await configurator.get_service(SelfValidating, ExecutionContext(session_id=good.session_id))
    assert configured.level == 3
    with pytest.raises(InvalidServiceConfig, match=r"SelfValidating does not accept \['volume'\]"):
        await configurator.get_service(SelfValidating, ExecutionContext(session_id=bad.session_id))


async def test_a_service_without_config_keys_or_its_own_configure_still_rejects_every_key(
    manager: SessionManager,
) -> None:
    container = SmartDependencyContainer()
    container.register(Plain)
    configurator = SessionServiceConfigurator(manager, container)
    session = await manager.create_session("dee", {"service_config": {"Plain": {"anything": 1}}})
    with pytest.raises(InvalidServiceConfig, match=r"Plain: unknown config key\(s\) \['anything'\]; accepted: \[\]"):
        await configurator.get_service(Plain, ExecutionContext(session_id=session.session_id))
