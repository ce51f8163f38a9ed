"""`Coalescer[K, R]`: requests queued while a batch waits for its resource run as one batch."""

from __future__ import annotations

import asyncio

import pytest

from agent_sessions import SessionConflict, StoreUnavailable
from agent_sessions.stores.coalesce import Batch, Coalescer


class Resource:
    """One slot, held by the test until released; each batch records the items it ran."""

    def __init__(self) -> None:
        self.free = asyncio.Event()
        self.batches: list[list[str]] = []
        self.fail: BaseException | None = None

    async def run(self, batch: Batch[str]) -> list[str]:
        await self.free.wait()
        batch.seal()
        self.batches.append(list(batch.items))
        if self.fail is not None:
            raise self.fail
        return [item.upper() for item in batch.items]


async def alone(item: str) -> str:
    return f"alone:{item}"


async def test_requests_queued_behind_a_busy_resource_run_as_one_batch() -> None:
    resource = Resource()
    coalescer: Coalescer[str, str] = Coalescer(resource.run)
    tasks = [asyncio.create_task(coalescer.submit(x, lambda x=x: alone(x))) for x in "abcab"]
    await asyncio.sleep(0.01)
    resource.free.set()
    assert await asyncio.gather(*tasks) == ["A", "B", "C", "A", "B"]
    assert resource.batches == [list("abcab")]


async def test_a_key_already_in_the_batch_opens_the_next_one_and_batches_are_bounded() -> None:
    resource = Resource()
    coalescer: Coalescer[str, str] = Coalescer(resource.run, key=lambda x: x, max_batch=2)
    tasks = [asyncio.create_task(coalescer.submit(x, lambda x=x: alone(x))) for x in "aabcd"]
    await asyncio.sleep(0.01)
    resource.free.set()
    assert await asyncio.gather(*tasks) == ["A", "A", "B", "C", "D"]
    assert sorted(resource.batches) == [["a"], ["a", "b"], ["c", "d"]]


@pytest.mark.parametrize("rerun", [True, False])
async def test_a_failed_batch_reruns_each_request_alone_or_fails_them_all(rerun: bool) -> None:
    resource = Resource()
    resource.fail = SessionConflict("one of them conflicted")
    coalescer: Coalescer[str, str] = Coalescer(resource.run, rerun=(SessionConflict,) if rerun else ())
    tasks = [asyncio.create_task(coalescer.submit(x, lambda x=x: alone(x))) for x in "ab"]
    await asyncio.sleep(0.01)
    resource.free.set()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    if rerun:
        assert results == ["alone:a", "alone:b"]
    else:
        assert all(isinstance(r, StoreUnavailable) and isinstance(r.__cause__, SessionConflict) for r in results)


async def test_a_caller_giving_up_does_not_take_the_batch_with_it() -> None:
    resource = Resource()
    coalescer: Coalescer[str, str] = Coalescer(resource.run)
    first = asyncio.create_task(coalescer.submit("a", lambda: alone("a")))
    second = asyncio.create_task(coalescer.submit("b", lambda: alone("b")))
    await asyncio.sleep(0.01)
    first.cancel()
    resource.free.set()
    assert await second == "B"
    with pytest.raises(asyncio.CancelledError):
        await first
