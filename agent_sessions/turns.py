"""`Turns`: first-come, first-served turns per key (a session id) for the tasks of one process.

`SessionManager` saves and mutates one session at a time within a process, so in-process
writers of one session never race each other's compare-and-set (only other processes do). A
turn is held by a task and re-entered freely by it and by the tasks it spawns while holding it
(a `mutate` function may save its own session, even through `asyncio.gather`); a task waiting
for its turn can be cancelled without losing anyone else's.

An uncontended turn costs a dict insert and delete; waiters get a future each. (An
`asyncio.Lock` per id in a `WeakValueDictionary` cost ~10 us per save on the memory store:
the lock and its weak reference were made anew for every uncontended save.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Hashable
from contextvars import ContextVar, Token
from types import TracebackType

__all__ = ["Turns"]

#: The turns the current task holds (a nested save or mutate of the same session, from inside a
#: `mutate` function, must not wait for its own caller).
_HELD: ContextVar[frozenset[object]] = ContextVar("agent_sessions_turns_held", default=frozenset())


class Turns:
    """Turns per key: `async with turns.of(key):` runs the block when it is this task's turn."""

    __slots__ = ("_queues",)

    def __init__(self) -> None:
        # key -> the futures of the tasks waiting for it; a key is present while its turn is held.
        self._queues: dict[Hashable, deque[asyncio.Future[None]]] = {}

    def of(self, key: Hashable) -> _Turn:
        """The turn of `key` (keys should include the event loop when several loops share this)."""
        return _Turn(self, key)

    def __len__(self) -> int:
        """How many keys have a turn held or waited for (0 once every turn is over: nothing is kept)."""
        return len(self._queues)

    def held(self, key: Hashable) -> bool:
        """Whether the current task holds the turn of `key`."""
        return key in _HELD.get()

    async def _acquire(self, key: Hashable) -> None:
        queue = self._queues.get(key)
        if queue is None:
            self._queues[key] = deque()
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue.append(waiter)
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release(key)  # the turn was handed over as this task was cancelled: pass it on
            elif waiter in queue:
                queue.remove(waiter)
            raise

    def _release(self, key: Hashable) -> None:
        queue = self._queues[key]
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        del self._queues[key]


class _Turn:
    __slots__ = ("_key", "_token", "_turns")

    def __init__(self, turns: Turns, key: Hashable) -> None:
        self._turns = turns
        self._key = key
        self._token: Token[frozenset[object]] | None = None

    async def __aenter__(self) -> None:
        held = _HELD.get()
        if self._key in held:
            return  # re-entered by the task that holds it
        await self._turns._acquire(self._key)
        self._token = _HELD.set(held | {self._key})

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._token is None:
            return
        _HELD.reset(self._token)
        self._token = None
        self._turns._release(self._key)
