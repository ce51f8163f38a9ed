"""SessionServiceConfigurator: per-session `service_config` applied to a contextualised copy."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import pytest

from agent_sessions import ExecutionContext, MemorySessionStore, SessionManager
from agent_sessions.errors import InvalidServiceConfig
from agent_sessions.services import ContextAwareService, SessionServiceConfigurator, SmartDependencyContainer

from ..support import FakeClock


class Greeter(ContextAwareService):
    config_keys = frozenset({"greeting", "shout"})

    def __init__(self, dependency_container: SmartDependencyContainer | None = None) -> None:
        super().__init__(dependency_container)
        self.greeting = "hello"
        self.shout = False

    def greet(self) -> str:
        text = f"{self.greeting} {self.context.user_id if self.context else 'nobody'}"
        return text.upper() if self.shout else text


@pytest.fixture
async def manager() -> AsyncIterator[SessionManager]:
    store = MemorySessionStore(clock=FakeClock())
    async with SessionManager(store, auto_cleanup=False) as m:
        yield m


@pytest.fixture
def container() -> SmartDependencyContainer:
    c = SmartDependencyContainer()
    c.register(Greeter)
    return c


async def test_each_session_gets_its_own_configured_copy_and_the_singleton_is_untouched(
    manager: SessionManager, container: SmartDependencyContainer
) -> None:
    french = await manager.create_session("ana", {"service_config": {"Greeter": {"greeting": "bonjour"}}})
    loud = await manager.create_session("bo", {"service_config": {"Greeter": {"shout": True}}})
    configurator = SessionServiceConfigurator(manager, container)
    shared = await container.resolve(Greeter)

    a = await configurator.configure_service(shared, ExecutionContext(session_id=french.session_id, user_id="ana"))
    b = await configurator.configure_service(shared, ExecutionContext(session_id=loud.session_id, user_id="bo"))

    assert a.greet() == "bonjour ana"
    assert b.greet() == "HELLO BO"
    assert shared.greet() == "hello nobody" and shared.context is None


async def test_a_context_without_a_session_or_with_a_missing_session_gets_the_service_as_is(
    manager: SessionManager, container: SmartDependencyContainer
) -> None:
    configurator = SessionServiceConfigurator(manager, container)
    shared = await container.resolve(Greeter)
    assert await configurator.configure_service(shared, ExecutionContext()) is shared
    gone = await manager.create_session("x")
    await manager.delete_session(gone.session_id)
    assert await configurator.configure_service(shared, ExecutionContext(session_id=gone.session_id)) is shared


async def test_a_session_without_config_for_this_class_gets_a_contextualised_default_copy(
    manager: SessionManager, container: SmartDependencyContainer
) -> None:
    session = await manager.create_session("cy", {"service_config": {"OtherService": {"x": 1}}})
    configurator = SessionServiceConfigurator(manager, container)
    shared = await container.resolve(Greeter)
    ctx = ExecutionContext(session_id=session.session_id, user_id="cy")
    configured = await configurator.configure_service(shared, ctx)
    assert configured is not shared and configured.context is ctx and configured.greet() == "hello cy"


async def test_unknown_config_keys_raise_by_default_naming_the_keys(
    manager: SessionManager, container: SmartDependencyContainer
) -> None:
    session = await manager.create_session("dee", {"service_config": {"Greeter": {"greeting": "hi", "colour": "red"}}})
    configurator = SessionServiceConfigurator(manager, container)
    with pytest.raises(InvalidServiceConfig, match=r"Greeter: unknown config key\(s\) \['colour'\]"):
        await configurator.configure_service(
            await container.resolve(Greeter), ExecutionContext(session_id=session.session_id)
        )


async def test_warn_mode_logs_unknown_keys_without_the_raw_session_id_and_applies_the_known_ones(
    manager: SessionManager, container: SmartDependencyContainer, caplog: pytest.LogCaptureFixture
) -> None:
    session = await manager.create_session("eve", {"service_config": {"Greeter": {"greeting": "hi", "colour": "red"}}})
    configurator = SessionServiceConfigurator(manager, container, on_unknown="warn")
    with caplog.at_level(logging.WARNING, logger="agent_sessions.services"):
        configured = await configurator.configure_service(
            await container.resolve(Greeter), ExecutionContext(session_id=session.session_id, user_id="eve")
        )
    assert configured.greet() == "hi eve"
    assert "['colour']" in caplog.text and session.session_id not in caplog.text


async def test_a_service_config_that_is_not_an_object_is_reported(
    manager: SessionManager, container: SmartDependencyContainer
) -> None:
    session = await manager.create_session("fay", {"service_config": ["Greeter"]})
    configurator = SessionServiceConfigurator(manager, container)
    with pytest.raises(InvalidServiceConfig, match="must map service class names to objects"):
        await configurator.configure_service(
            await container.resolve(Greeter), ExecutionContext(session_id=session.session_id)
        )


async def test_get_service_resolves_through_the_container_then_configures_for_the_context(
    manager: SessionManager, container: SmartDependencyContainer
) -> None:
    session = await manager.create_session("gus", {"service_config": {"Greeter": {"greeting": "hey"}}})
    configurator = SessionServiceConfigurator(manager, container)
    with ExecutionContext(session_id=session.session_id, user_id="gus"):
        configured = await configurator.get_service(Greeter)
    assert configured.greet() == "hey gus"
