"""`Turns`: per-key, first-come first-served, re-entrant, and safe under cancellation."""

from __future__ import annotations

import asyncio

import pytest

from agent_sessions.turns import Turns

pytestmark = pytest.mark.asyncio


async def test_turns_of_one_key_run_one_at_a_time_in_arrival_order() -> None:
    turns = Turns()
    order: list[int] = []
    inside = 0

    async def task(i: int) -> None:
        nonlocal inside
        async with turns.of("k"):
            inside += 1
            assert inside == 1
            await asyncio.sleep(0)
            order.append(i)
            inside -= 1

    await asyncio.gather(*(task(i) for i in range(10)))
    assert order == list(range(10))
    assert len(turns) == 0  # nothing kept once every turn is over


async def test_other_keys_do_not_wait() -> None:
    turns = Turns()

    async def other() -> None:
        async with turns.of("b"):
            pass

    async with turns.of("a"):
        await asyncio.wait_for(asyncio.create_task(other()), timeout=1)
    assert len(turns) == 0


async def test_the_holder_re_enters_its_own_turn() -> None:
    turns = Turns()
    async with turns.of("k"):
        assert turns.held("k")
        async with turns.of("k"):  # would deadlock if it waited
            assert turns.held("k")
        assert turns.held("k")
    assert not turns.held("k")


async def test_a_cancelled_waiter_leaves_the_queue_and_the_next_one_gets_the_turn() -> None:
    turns = Turns()
    got: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with turns.of("k"):
            await release.wait()

    async def waiter(name: str) -> None:
        async with turns.of("k"):
            got.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    cancelled = asyncio.create_task(waiter("cancelled"))
    second = asyncio.create_task(waiter("second"))
    await asyncio.sleep(0)
    cancelled.cancel()
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, second)
    assert cancelled.cancelled() and got == ["second"]
    assert len(turns) == 0


async def test_a_waiter_cancelled_just_as_the_turn_reaches_it_passes_the_turn_on() -> None:
    turns = Turns()
    got: list[str] = []
    release = asyncio.Event()

    async def waiter(name: str) -> None:
        async with turns.of("k"):
            got.append(name)

    async def holder() -> None:
        async with turns.of("k"):
            await release.wait()
        handed.cancel()  # the turn was just handed to `handed`, which has not run yet

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    handed = asyncio.create_task(waiter("handed"))
    after = asyncio.create_task(waiter("after"))
    await asyncio.sleep(0)
    release.set()
    await asyncio.wait_for(asyncio.gather(first, handed, after, return_exceptions=True), timeout=2)
    assert handed.cancelled() and got == ["after"]
    assert len(turns) == 0


async def test_tasks_spawned_by_the_holder_share_its_turn() -> None:
    """A `mutate` function that gathers saves of its own session must not deadlock."""
    turns = Turns()

    async def nested() -> bool:
        async with turns.of("k"):
            return True

    async with turns.of("k"):
        assert await asyncio.wait_for(asyncio.gather(nested(), nested()), timeout=1) == [True, True]
