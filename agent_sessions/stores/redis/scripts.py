"""The Lua scripts of `RedisSessionStore` (``scripts/*.lua``) and the one result code they share.

Each script documents its ``KEYS`` and its ordered ``ARGV`` at its top. Every script starts with
``scripts/prelude.lua`` (the record header, indexes, scopes) below the `Result` codes as Lua
constants, so the Python and the Lua sides cannot disagree on them. The scripts are registered
with redis-py's `register_script` (on a single node whose client the store owns, as `HeldScript`:
the same script sent on a held connection, see ``held.py``): a direct call is an ``EVALSHA``
that is reloaded on ``NOSCRIPT`` (a restart or a failover emptied the server's script cache).
"""

from __future__ import annotations

from enum import IntEnum
from importlib import resources
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.commands.core import AsyncScript

from .held import HeldConnections, HeldScript

__all__ = ["Result", "Scripts"]


class Result(IntEnum):
    """What a script did: the first (or only) element of every script's reply."""

    #: The session does not exist, or has expired under the store clock.
    ABSENT = 0
    #: Done: written, touched, deleted, read.
    DONE = 1
    #: This very save had already landed (a save re-sent after a lost reply): nothing done.
    ALREADY_APPLIED = 2
    #: Another version is stored (or an insert met an existing id): nothing done.
    CONFLICT = 3
    #: The stored record's header is unreadable: nothing done.
    CORRUPT = 4
    #: Cleanup found the session still live: nothing deleted.
    LIVE = 5
    #: An R1 record (`record.LEGACY_HEADER`) whose user hash the script needs: nothing done;
    #: the reply's second element is the owner, to call the script again with its hash.
    LEGACY = 6


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text(encoding="utf-8")


_CODES: Final = "".join(f"local {result.name} = {result.value}\n" for result in Result)


class Scripts:
    """The store's scripts, registered once on its client."""

    def __init__(self, client: Redis | RedisCluster, held: HeldConnections | None = None) -> None:
        prelude = _CODES + _source("prelude")

        def register(name: str) -> AsyncScript:
            source = prelude + "\n" + _source(name)
            return client.register_script(source) if held is None else HeldScript(client, source, held)

        self.load = register("load")
        self.write = register("write")
        self.touch = register("touch")
        self.delete = register("delete")
        self.history = register("history")
        self.reap = register("reap")
        self.scope = register("scope")
        self.erase = register("erase")
        self.index = register("index")
        self.all: Final = (
            self.load,
            self.write,
            self.touch,
            self.delete,
            self.history,
            self.reap,
            self.scope,
            self.erase,
            self.index,
        )

    @staticmethod
    def command(script: AsyncScript, keys: list[str], args: list[Any]) -> tuple[Any, ...]:
        """The ``EVALSHA`` of `script` as a pipeline command (`AsyncScript` calls it directly)."""
        return ("EVALSHA", script.sha, len(keys), *keys, *args)
