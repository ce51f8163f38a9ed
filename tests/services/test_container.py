"""SmartDependencyContainer: lifetimes, injection from type hints, errors naming the chain, disposal."""

from __future__ import annotations

import asyncio

import pytest

from agent_sessions import ExecutionContext
from agent_sessions.errors import AgentSessionsError, DependencyCycle, ServiceNotRegistered, ServiceResolutionError
from agent_sessions.services import ContextAwareService, SmartDependencyContainer, registered_services, service


class Clock:
    pass


class Repository:
    def __init__(self, clock: Clock) -> None:
        self.clock = clock


class Handler:
    def __init__(self, repo: Repository, ctx: ExecutionContext, retries: int = 3) -> None:
        self.repo = repo
        self.ctx = ctx
        self.retries = retries


class HttpClient:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url


class PaymentGateway:
    def __init__(self, client: HttpClient) -> None:
        self.client = client


class OrderService:
    def __init__(self, payments: PaymentGateway) -> None:
        self.payments = payments


class Alpha:
    def __init__(self, beta: Beta) -> None:
        self.beta = beta


class Beta:
    def __init__(self, alpha: Alpha) -> None:
        self.alpha = alpha


class Closable:
    def __init__(self, log: list[str], name: str = "sync") -> None:
        self.log = log
        self.name = name

    def close(self) -> None:
        self.log.append(f"close {self.name}")


class AsyncClosable:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def aclose(self) -> None:
        self.log.append("aclose")


class OptionalDeps:
    def __init__(self, clock: Clock | None = None, container: SmartDependencyContainer | None = None) -> None:
        self.clock = clock
        self.container = container


async def test_singleton_is_built_once_and_shared_across_contexts() -> None:
    c = SmartDependencyContainer()
    c.register(Clock)
    first = await c.resolve(Clock, ExecutionContext())
    second = await c.resolve(Clock, ExecutionContext())
    assert first is second and isinstance(first, Clock)


async def test_transient_is_built_on_every_resolution() -> None:
    c = SmartDependencyContainer()
    c.register(Clock, lifetime="transient")
    a, b = await c.resolve(Clock), await c.resolve(Clock)
    assert a is not b


async def test_scoped_is_shared_within_a_scope_and_its_child_contexts_but_not_across_scopes() -> None:
    c = SmartDependencyContainer()
    c.register(Clock, lifetime="scoped")
    run_a, run_b = ExecutionContext(), ExecutionContext()
    async with c.scope(run_a) as scope_a, c.scope(run_b):
        in_a = await scope_a.resolve(Clock)
        assert await c.resolve(Clock, run_a) is in_a
        assert await c.resolve(Clock, run_a.child(tool_name="t")) is in_a
        assert await c.resolve(Clock, run_b) is not in_a
        assert Clock in scope_a


async def test_scoped_without_an_open_scope_says_how_to_open_one() -> None:
    c = SmartDependencyContainer()
    c.register(Clock, lifetime="scoped")
    with pytest.raises(ServiceResolutionError, match=r"Clock is scoped .*container\.scope\(context\)"):
        await c.resolve(Clock, ExecutionContext())


async def test_leaving_a_scope_disposes_its_services_in_reverse_order_and_closes_it() -> None:
    log: list[str] = []
    c = SmartDependencyContainer()
    c.register("log", lambda: log, lifetime="singleton")
    c.register(Closable, lifetime="scoped")
    c.register(AsyncClosable, lifetime="scoped")
    ctx = ExecutionContext()
    async with c.scope(ctx) as scope:
        await scope.resolve(Closable)
        await scope.resolve(AsyncClosable)
        assert log == []
    assert log == ["aclose", "close sync"]
    with pytest.raises(ServiceResolutionError, match="no scope is open"):
        await c.resolve(Closable, ctx)


async def test_reentering_a_scope_disposes_only_at_the_outermost_exit() -> None:
    log: list[str] = []
    c = SmartDependencyContainer()
    c.register_instance("log", log)
    c.register(Closable, lifetime="scoped")
    ctx = ExecutionContext()
    async with c.scope(ctx) as outer:
        first = await outer.resolve(Closable)
        async with c.scope(ctx) as inner:
            assert inner is outer
            assert await inner.resolve(Closable) is first
        assert log == []
    assert log == ["close sync"]


async def test_a_failing_disposal_is_raised_after_the_other_services_are_disposed() -> None:
    log: list[str] = []

    class Broken:
        def close(self) -> None:
            raise RuntimeError("cannot close")

    c = SmartDependencyContainer()
    c.register_instance("log", log)
    c.register(Closable, lifetime="scoped")
    c.register(Broken, lifetime="scoped")
    ctx = ExecutionContext()
    with pytest.raises(RuntimeError, match="cannot close"):
        async with c.scope(ctx) as scope:
            await scope.resolve(Closable)
            await scope.resolve(Broken)
    assert log == ["close sync"]


async def test_constructor_parameters_are_injected_from_type_hints_with_defaults_kept() -> None:
    c = SmartDependencyContainer()
    c.register(Clock)
    c.register(Repository)
    c.register(Handler, lifetime="transient")
    ctx = ExecutionContext()
    handler = await c.resolve(Handler, ctx)
    assert handler.repo.clock is await c.resolve(Clock)
    assert handler.ctx is ctx
    assert handler.retries == 3


async def test_optional_hints_are_injected_when_registered_and_defaulted_otherwise() -> None:
    c = SmartDependencyContainer()
    c.register(OptionalDeps, lifetime="transient")
    bare = await c.resolve(OptionalDeps)
    assert bare.clock is None and bare.container is c
    c.register(Clock)
    wired = await c.resolve(OptionalDeps)
    assert isinstance(wired.clock, Clock)


async def test_a_parameter_without_a_registered_type_is_injected_from_a_registration_of_its_name() -> None:
    c = SmartDependencyContainer()
    c.register("base_url", lambda: "https://example.test")
    c.register(HttpClient)
    client = await c.resolve(HttpClient)
    assert client.base_url == "https://example.test"


async def test_sync_and_async_factories_receive_injected_parameters() -> None:
    c = SmartDependencyContainer()
    c.register(Clock)

    async def make_repo(clock: Clock) -> Repository:
        await asyncio.sleep(0)
        return Repository(clock)

    def make_client(repo: Repository) -> HttpClient:
        return HttpClient(f"repo-{type(repo.clock).__name__}")

    c.register(Repository, make_repo)
    c.register("client", make_client, lifetime="transient")
    client = await c.resolve("client")
    assert client.base_url == "repo-Clock"
    assert (await c.resolve(Repository)).clock is await c.resolve(Clock)


async def test_concurrent_resolutions_of_an_async_singleton_build_it_once() -> None:
    calls = 0

    async def slow_clock() -> Clock:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        return Clock()

    c = SmartDependencyContainer()
    c.register(Clock, slow_clock)
    results = await asyncio.gather(*(c.resolve(Clock) for _ in range(5)))
    assert calls == 1 and all(r is results[0] for r in results)


async def test_a_missing_registration_names_the_whole_resolution_chain() -> None:
    c = SmartDependencyContainer()
    c.register(OrderService)
    c.register(PaymentGateway)
    c.register(HttpClient)
    with pytest.raises(ServiceNotRegistered) as info:
        await c.resolve(OrderService)
    message = str(info.value)
    assert "OrderService -> PaymentGateway -> HttpClient -> str" in message
    assert "parameter 'base_url'" in message
    assert info.value.chain == ["OrderService", "PaymentGateway", "HttpClient", "str"]
    assert isinstance(info.value, AgentSessionsError)


async def test_resolving_an_unregistered_key_names_it() -> None:
    c = SmartDependencyContainer()
    with pytest.raises(ServiceNotRegistered, match="nothing is registered for 'nope'"):
        await c.resolve("nope")


async def test_a_dependency_cycle_is_reported_with_the_cycle() -> None:
    c = SmartDependencyContainer()
    c.register(Alpha, lifetime="transient")
    c.register(Beta, lifetime="transient")
    with pytest.raises(DependencyCycle, match=r"dependency cycle: Alpha -> Beta -> Alpha") as info:
        await c.resolve(Alpha)
    assert info.value.chain == ["Alpha", "Beta", "Alpha"]


async def test_a_singleton_depending_on_a_scoped_service_is_refused() -> None:
    c = SmartDependencyContainer()
    c.register(Clock, lifetime="scoped")
    c.register(Repository, lifetime="singleton")
    ctx = ExecutionContext()
    async with c.scope(ctx):
        with pytest.raises(ServiceResolutionError, match="singleton Repository cannot depend on scoped Clock"):
            await c.resolve(Repository, ctx)


async def test_a_failing_factory_is_wrapped_with_the_chain_and_its_cause() -> None:
    def broken() -> HttpClient:
        raise ValueError("no network")

    c = SmartDependencyContainer()
    c.register(PaymentGateway)
    c.register(HttpClient, broken)
    with pytest.raises(ServiceResolutionError, match=r"building PaymentGateway -> HttpClient: broken raised") as info:
        await c.resolve(PaymentGateway)
    assert isinstance(info.value.__cause__, ValueError)


async def test_local_classes_with_unresolvable_string_hints_are_matched_by_registered_name() -> None:
    class Local:
        pass

    class UsesLocal:
        def __init__(self, local: Local | None = None) -> None:
            self.local = local

    c = SmartDependencyContainer()
    c.register(Local)
    c.register(UsesLocal)
    assert isinstance((await c.resolve(UsesLocal)).local, Local)


async def test_service_decorator_registers_by_name_and_type_with_its_lifetime() -> None:
    @service(name="tests.decorated-service", lifetime="transient")
    class Decorated(ContextAwareService):
        pass

    assert registered_services()["tests.decorated-service"] is Decorated
    c = SmartDependencyContainer()
    c.register_decorated()
    by_name = await c.resolve("tests.decorated-service")
    by_type = await c.resolve(Decorated)
    assert isinstance(by_name, Decorated) and by_name is not by_type
    assert by_name.dependency_container is c


async def test_service_decorator_with_a_container_registers_immediately_as_a_shared_singleton() -> None:
    c = SmartDependencyContainer()

    @service(name="tests.immediate", container=c)
    class Immediate:
        pass

    assert await c.resolve("tests.immediate") is await c.resolve(Immediate)


async def test_closing_the_container_disposes_built_singletons_but_not_given_instances() -> None:
    log: list[str] = []
    given = Closable(log, name="given")
    async with SmartDependencyContainer() as c:
        c.register_instance("log", log)
        c.register_instance("given", given)
        c.register(Closable)
        await c.resolve(Closable)
        await c.resolve("given")
    assert log == ["close sync"]


async def test_with_context_returns_a_bound_copy_and_leaves_the_shared_instance_alone() -> None:
    class Configurable(ContextAwareService):
        config_keys = frozenset({"mode"})
        mode = "default"

    shared = Configurable()
    ctx = ExecutionContext(session_id=None)
    copy_ = await shared.with_context(ctx)
    copy_.configure({"mode": "fast"})
    assert copy_ is not shared and copy_.context is ctx and copy_.mode == "fast"
    assert shared.context is None and shared.mode == "default"


def test_configure_rejects_unknown_keys_naming_them_and_the_accepted_ones() -> None:
    class Configurable(ContextAwareService):
        config_keys = frozenset({"mode"})

    from agent_sessions.errors import InvalidServiceConfig

    with pytest.raises(
        InvalidServiceConfig, match=r"Configurable: unknown config key\(s\) \['speed'\]; accepted: \['mode'\]"
    ):
        Configurable().configure({"mode": "x", "speed": 2})


def test_invalid_lifetime_is_refused() -> None:
    with pytest.raises(ValueError, match="lifetime must be one of"):
        SmartDependencyContainer().register(Clock, lifetime="forever")  # type: ignore[arg-type]


async def test_opening_a_scope_for_a_child_context_reenters_the_parents_scope() -> None:
    log: list[str] = []
    c = SmartDependencyContainer()
    c.register_instance("log", log)
    c.register(Closable, lifetime="scoped")
    run = ExecutionContext()
    async with c.scope(run) as run_scope:
        first = await run_scope.resolve(Closable)
        call = run.child(tool_name="tool")
        async with c.scope(call) as call_scope:
            assert call_scope is run_scope
            assert await call_scope.resolve(Closable) is first
        assert log == []
    assert log == ["close sync"]


async def test_a_singleton_asking_for_the_execution_context_is_refused_and_a_transient_needs_one() -> None:
    c = SmartDependencyContainer()
    c.register(Clock)
    c.register(Repository)
    c.register(Handler, lifetime="singleton")
    with pytest.raises(ServiceResolutionError, match="a singleton cannot hold a per-context ExecutionContext"):
        await c.resolve(Handler, ExecutionContext())
    c.register(Handler, lifetime="transient")
    with pytest.raises(ServiceNotRegistered, match=r"Handler -> ExecutionContext: an ExecutionContext is needed"):
        await c.resolve(Handler)
