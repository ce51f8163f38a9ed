"""`Coalescer[K, R]`: requests that queue while a batch waits for a resource go as one batch.

A store uses it under saturation (every connection busy): the first request opens a batch and
waits for a connection in a task of its own; requests arriving meanwhile join it; once the batch
holds its connection it is sealed (later requests open the next one) and runs once for all of
them, one statement instead of one per request. Alone, a request never waits for others.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

from ..errors import StoreUnavailable

__all__ = ["Batch", "Coalescer"]

logger = logging.getLogger(__name__)

K = TypeVar("K")
R = TypeVar("R")


class _Alone:
    """Told to a request whose batch failed through no fault of its own: it runs alone."""


_ALONE = _Alone()


class Batch(Generic[K]):
    """The requests of one batch; `seal()` it once it holds its resource, then read `items`."""

    __slots__ = ("items", "keys", "open")

    def __init__(self) -> None:
        self.items: list[K] = []
        self.keys: set[Hashable] = set()
        self.open = True

    def seal(self) -> None:
        """From here on, new requests open a batch of their own."""
        self.open = False


class Coalescer(Generic[K, R]):
    """Runs requests `K` in batches through `run`, which returns one result `R` per item, in order.

    `key` (optional) names requests that may not share a batch (two saves of one session): a
    second one opens the next batch. When the batch fails with one of `rerun` (nothing of it was
    applied: a conflict, a refused value), each request runs alone, so the error belongs to the
    request that caused it; any other failure reaches every request as `StoreUnavailable`.
    """

    def __init__(
        self,
        run: Callable[[Batch[K]], Awaitable[Sequence[R]]],
        *,
        max_batch: int = 64,
        key: Callable[[K], Hashable] | None = None,
        rerun: tuple[type[BaseException], ...] = (),
    ) -> None:
        self._run = run
        self._max = max_batch
        self._key = key
        self._rerun = rerun
        self._open: Batch[K] | None = None
        self._futures: dict[int, list[asyncio.Future[R | _Alone]]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def submit(self, item: K, alone: Callable[[], Awaitable[R]]) -> R:
        """`item`'s result from a batch; `alone()` runs it by itself if the batch could not."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R | _Alone] = loop.create_future()
        key = self._key(item) if self._key is not None else None
        batch = self._open
        if batch is None or not batch.open or len(batch.items) >= self._max or (key is not None and key in batch.keys):
            batch = self._open = Batch()
            self._futures[id(batch)] = []
            task = loop.create_task(self._execute(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        batch.items.append(item)
        if key is not None:
            batch.keys.add(key)
        self._futures[id(batch)].append(future)
        outcome = await future
        if isinstance(outcome, _Alone):
            return await alone()
        return outcome

    async def _execute(self, batch: Batch[K]) -> None:
        futures = self._futures[id(batch)]
        try:
            results = await self._run(batch)
        except BaseException as exc:
            # A batch cancelled (its loop closing) or refused as a whole: each request runs alone.
            rerun = isinstance(exc, (*self._rerun, asyncio.CancelledError))
            for future in futures:
                if future.done():
                    continue
                if rerun:
                    future.set_result(_ALONE)
                else:
                    error = StoreUnavailable(f"a batch of {len(futures)} failed: {type(exc).__name__}: {exc}")
                    error.__cause__ = exc
                    future.set_exception(error)
            logger.debug("a batch of %d failed: %s", len(futures), type(exc).__name__)
            if not isinstance(exc, Exception):
                raise
            return
        finally:
            batch.seal()
            if self._open is batch:
                self._open = None
            del self._futures[id(batch)]
        for future, result in zip(futures, results, strict=True):
            if not future.done():
                future.set_result(result)
