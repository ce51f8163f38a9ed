"""`IndexCommands`: the index and scope commands `RedisSessionStore` sends beside its scripts.

On one node a session's script maintains the indexes itself; these commands serve what no
session script covers there (cleanup's repairs, listing rebuilds, scope writes). On a Cluster
a script may only touch keys it declares, all in one slot, so a session's script touches only
the session's keys, and a save (a moving touch, a delete) is followed by one pipelined call
for the index and scope keys of other slots (`after_write`, `side_effects`): ``ZADD GT``, as a
reordered update can leave a score too high, repaired by cleanup, never too low. An update
re-scores only entries that are still there (``index.lua`` in the user's slot, with the
user-scope change; ``ZADD XX`` in the expiry shard), so a save racing `erase_user` or a delete
never writes an index entry or a scope key back. If the user index lost the entry (an earlier
call failed), the record is checked and the entries are added again.
"""

from __future__ import annotations

from typing import Any

from ...errors import StoreUnavailable
from ...ids import id_hash
from ..primitives import ScopeChange, SessionWrite
from .keys import KeyLayout
from .record import index_score
from .runner import Command, Runner
from .scripts import Result, Scripts

__all__ = ["IndexCommands", "scope_args"]


def scope_args(change: ScopeChange) -> list[Any]:
    """A scope change as `apply_scope` in ``prelude.lua`` reads it."""
    owner = change.owner if change.kind == "user" else ""
    sets = [item for pair in change.sets.items() for item in pair]
    return [owner, len(change.sets), *sets, len(change.deletes), *change.deletes]


class IndexCommands:
    """The commands for the indexes and scopes under `keys` (see the module docstring);
    `cluster` says whether the session scripts leave the expiry shard to them."""

    def __init__(self, keys: KeyLayout, scripts: Scripts, runner: Runner, *, cluster: bool) -> None:
        self.keys = keys
        self.scripts = scripts
        self.runner = runner
        self.cluster = cluster

    def script_keys(self, sid: str) -> list[str]:
        """The session's keys, and on one node its expiry shard (in another slot on a cluster)."""
        keys = self.keys.session(sid)
        if not self.cluster:
            keys.append(self.keys.expiry_shard(sid))
        return keys

    def user_hash(self, user_id: str | None) -> str | None:
        """The user's hash in key names, None for no user."""
        return None if user_id is None else self.keys.user(user_id).hash

    def index_calls(
        self,
        sid: str,
        user_hash: str | None,
        score: str | None,
        *,
        add: bool = True,
        scope: ScopeChange | None = None,
        listed: bool = True,
    ) -> list[Command]:
        """Score the session in its expiry shard and user index at `score` (``ZADD GT``; with
        ``add=False`` only entries still there: ``ZADD XX`` and ``index.lua``, which applies the
        user-scope change `scope` too), or (score None) ``ZREM`` it; and (`listed`) list it in
        its listing shard alike (``ZADD``, ``XX`` with ``add=False``) or unlist it."""
        member = sid if user_hash is None else f"{sid}:{user_hash}"
        shard = self.keys.expiry_shard(sid)
        lex = self.keys.list_shard(sid)
        if score is None:
            calls: list[Command] = [("ZREM", shard, member)]
            if user_hash is not None:
                calls.append(("ZREM", self.keys.user_keys_of_hash(user_hash).index, sid))
            if listed:
                calls.append(("ZREM", lex, sid))
            return calls
        calls = [("ZADD", shard, "GT", score, member) if add else ("ZADD", shard, "XX", "GT", score, member)]
        if listed:
            calls.append(self.list_call(sid) if add else ("ZADD", lex, "XX", "0", sid))
        if user_hash is not None:
            user = self.keys.user_keys_of_hash(user_hash)
            args = ["1" if add else "0", sid, score, *(scope_args(scope) if scope is not None else ())]
            calls.append(Scripts.command(self.scripts.index, [user.index, user.scope], args))
        return calls

    def list_call(self, sid: str) -> Command:
        """List the session in its listing shard."""
        return ("ZADD", self.keys.list_shard(sid), "0", sid)

    def scope_call(self, change: ScopeChange) -> Command:
        """Apply one scope change (``scope.lua``)."""
        key = self.keys.app_scope if change.kind == "app" else self.keys.user_scope(change.owner)
        return Scripts.command(self.scripts.scope, [key], scope_args(change))

    def after_write(self, write: SessionWrite) -> list[Command]:
        """Cluster: what a save leaves to the caller: indexes and scope changes in other slots
        (an update only re-scores entries still there, see `side_effects`)."""
        sid = write.session_id
        calls: list[Command] = []
        bound = write.expected_version == 0 or write.previous_user_id != write.user_id
        if write.expected_version != 0 and write.previous_user_id != write.user_id:
            calls += self.index_calls(sid, self.user_hash(write.previous_user_id), None, listed=False)
        if write.app_scope is not None:
            calls.append(self.scope_call(write.app_scope))
        score = index_score(write.expiry_at)
        calls += self.index_calls(sid, self.user_hash(write.user_id), score, add=bound, scope=write.user_scope)
        return calls

    async def side_effects(self, calls: list[Command], sid: str, what: str) -> None:
        """Cluster: the index and scope updates of other slots after a session's script succeeded.

        An update (`index_calls` with ``add=False``) the user index refused had lost its entry,
        or the session was erased or deleted meanwhile: if the record is still there, the
        entries are added again (with the scope change), else nothing is written."""
        if not calls:
            return
        runner = self.runner
        try:
            replies = await runner.pipeline(calls, "update the indexes and scopes")
            refused = [call for call, reply in zip(calls, replies, strict=True) if self._refused(call, reply)]
            if refused and await runner.call(runner.client.exists(self.keys.record(sid)), "read the session"):
                await runner.pipeline([self._adding(call) for call in calls], "update the indexes and scopes")
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                f"session {id_hash(sid)} was {what}, but its index/scope updates failed: {exc}"
            ) from exc

    def _refused(self, call: Command, reply: Any) -> bool:
        return call[:2] == ("EVALSHA", self.scripts.index.sha) and reply == Result.ABSENT

    def _adding(self, call: Command) -> Command:
        """`call` (of `index_calls`) adding the entry instead of only re-scoring it."""
        if call[:2] == ("EVALSHA", self.scripts.index.sha):
            return (*call[:5], "1", *call[6:])
        if call[0] == "ZADD" and call[2] == "XX":
            return ("ZADD", call[1], *call[3:])
        return call
