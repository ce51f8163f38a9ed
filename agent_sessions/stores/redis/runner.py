"""`Runner`: every call `RedisSessionStore` makes to Redis, bounded in time, errors mapped.

Each call (a command, a script, a pipeline, a ``SCAN``) runs within `socket_timeout` as a
whole, retries included; a driver error or the deadline becomes `StoreUnavailable` (cause
chained). A script that answers `Result.LEGACY` (an R1 record, see `record.LEGACY_HEADER`: Lua
cannot compute its user hash) is sent again with its owner's hash as its last two ARGV, and
again only if a writer of the previous release changed the owner in between. A pipeline that
meets ``NOSCRIPT`` (a restart, a failover) loads the scripts and sends those calls once more.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final

from redis import exceptions as redis_errors
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from ...errors import StoreUnavailable
from .keys import KeyLayout
from .record import NO_OWNER
from .scripts import Result, Scripts

__all__ = ["Command", "Runner"]

#: What the driver raises when Redis cannot answer.
_REDIS_ERRORS: Final = (redis_errors.RedisError, redis_errors.RedisClusterException, OSError)
#: A script answering `Result.LEGACY` is called again with the owner it named; once more only
#: if a writer of the previous release changed the owner in between.
_LEGACY_ATTEMPTS: Final = 3

#: One command as a pipeline sends it: its name, then its arguments.
Command = tuple[Any, ...]


def _unavailable(exc: BaseException, action: str) -> StoreUnavailable:
    if isinstance(exc, TimeoutError):  # the store's own deadline (`socket_timeout`)
        return StoreUnavailable(f"Redis did not {action} in time (socket_timeout)")
    return StoreUnavailable(f"Redis could not {action}: {type(exc).__name__}: {exc}")


def _is_legacy_reply(reply: Any) -> bool:
    return isinstance(reply, list) and len(reply) == 2 and reply[0] == Result.LEGACY


class Runner:
    """Runs the store's calls on `client` (see the module docstring); `action` in each method
    names the operation in the `StoreUnavailable` message ("Redis could not <action>").

    `socket_timeout` is asked for the deadline at every call (the store's current
    `socket_timeout`), so changing it on the store applies to the next call."""

    def __init__(
        self, client: Redis | RedisCluster, scripts: Scripts, keys: KeyLayout, socket_timeout: Callable[[], float]
    ) -> None:
        self.client = client
        self.scripts = scripts
        self.keys = keys
        self._deadline = socket_timeout

    @property
    def socket_timeout(self) -> float:
        """The deadline of one call, in seconds: the store's `socket_timeout` now."""
        return self._deadline()

    async def call(self, pending: Awaitable[Any], action: str) -> Any:
        """Await one client call within `socket_timeout`; driver errors become `StoreUnavailable`."""
        try:
            async with asyncio.timeout(self.socket_timeout):
                return await pending
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc, action) from exc

    async def script(self, script: AsyncScript, keys: list[str], args: list[Any], action: str) -> Any:
        """Run `script`; a `Result.LEGACY` reply (an R1 record, see `record.LEGACY_HEADER`) runs
        it again with the owner's hash as its last two ARGV (again only if the owner changed)."""
        for _ in range(_LEGACY_ATTEMPTS):
            reply = await self.call(script(keys, args), action)
            if not _is_legacy_reply(reply):
                return reply
            args = [*args[:-2], *self.owner_args(reply[1])]
        raise StoreUnavailable(f"Redis could not {action}: the session's owner kept changing")

    async def script_many(
        self, script: AsyncScript, calls: list[tuple[list[str], list[Any]]], action: str
    ) -> list[Any]:
        """Run `script` once per ``(keys, args)`` in one pipelined round trip; `Result.LEGACY`
        replies are run again as in `script`, together in one more."""
        replies = await self.pipeline([Scripts.command(script, *call) for call in calls], action) if calls else []
        for _ in range(_LEGACY_ATTEMPTS - 1):
            legacy = [i for i, reply in enumerate(replies) if _is_legacy_reply(reply)]
            if not legacy:
                return replies
            calls = list(calls)
            for i in legacy:
                keys, args = calls[i]
                calls[i] = (keys, [*args[:-2], *self.owner_args(replies[i][1])])
            again = await self.pipeline([Scripts.command(script, *calls[i]) for i in legacy], action)
            for i, reply in zip(legacy, again, strict=True):
                replies[i] = reply
        if any(_is_legacy_reply(reply) for reply in replies):
            raise StoreUnavailable(f"Redis could not {action}: a session's owner kept changing")
        return replies

    async def pipeline(self, calls: list[Command], action: str) -> list[Any]:
        """Run `calls` in one round trip (per node, concurrently, on a cluster).

        redis-py's pipeline would check every script with ``SCRIPT EXISTS`` before each
        execute (a second round trip); instead a reply of ``NOSCRIPT`` (a restart, a failover)
        loads the scripts and sends the calls that failed for that reason once more.
        """
        results: list[Any] = [None] * len(calls)
        todo = list(range(len(calls)))
        try:
            async with asyncio.timeout(self.socket_timeout):
                for attempt in range(2):
                    pipe = self.client.pipeline(transaction=False)
                    for i in todo:
                        pipe.execute_command(*calls[i])
                    again: list[int] = []
                    for i, reply in zip(todo, await pipe.execute(raise_on_error=False), strict=True):
                        if isinstance(reply, redis_errors.NoScriptError) and attempt == 0:
                            again.append(i)
                        elif isinstance(reply, BaseException):
                            raise reply
                        else:
                            results[i] = reply
                    if not again:
                        break
                    for script in self.scripts.all:
                        await self.client.script_load(script.script)
                    todo = again
        except _REDIS_ERRORS as exc:
            raise _unavailable(exc, action) from exc
        return results

    async def scan_batches(self, pattern: str, size: int) -> AsyncIterator[list[bytes]]:
        """The keys ``SCAN`` finds for `pattern`, in batches of `size` (each key once)."""
        keys = self.client.scan_iter(match=pattern, count=max(size, 10))
        seen: set[bytes] = set()  # SCAN may return a key twice while Redis resizes its table
        batch: list[bytes] = []
        while True:
            try:
                async with asyncio.timeout(self.socket_timeout):
                    key = await anext(keys)
            except StopAsyncIteration:
                break
            except _REDIS_ERRORS as exc:
                raise _unavailable(exc, "scan keys") from exc
            if key not in seen:
                seen.add(key)
                batch.append(key)
            if len(batch) >= size:
                yield batch
                batch = []
        if batch:
            yield batch

    def owner_args(self, owner: bytes | str | None) -> tuple[bytes | str, str]:
        """The last two ARGV of a script for an R1 record's owner: its user id and `user_hash`
        (``known_hash`` in ``prelude.lua``), or `NO_OWNER`."""
        if owner is None:
            return NO_OWNER
        text = owner.decode("utf-8", "surrogatepass") if isinstance(owner, bytes) else owner
        return text.encode("utf-8", "surrogatepass"), self.keys.user(text).hash
