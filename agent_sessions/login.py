"""The login step (`SessionManager.login`): rotate the id, bind the user, and carry what the
visitor chose into the user's scope.

What moves where (see `agent_sessions.records` for where each part is stored):

- **Preferences.** A session without a user keeps them in its record; a session with one reads
  and writes them in the user scope (``pref:<name>``), shared by every session of that user.
  Login copies the visitor's preferences into the user scope by the `keep` policy:
  ``"session"`` (default) — the visitor's value wins for every key the visitor has;
  ``"user"`` — a key the user already had keeps the user's value, and the visitor's other keys
  are still carried. Keys only the user has are kept either way. The user's next session, on
  any device, starts with the result.
- **State.** The session's own keys stay with the session: they move with it to the new id and
  are now the user's session's (they are not copied to the user scope: they belong to this
  conversation, not to the person). A session without a user cannot hold ``user:`` keys
  (`ScopeError`), so there are none to carry; after login the session shows the user's
  ``user:`` keys. ``app:`` keys are everyone's and stay as they are. ``temp:`` keys are never
  stored, so a login by id has none (the web handle `RequestSession.login` keeps those of the
  request's `Session` object).
- **Everything else** (history, `ai_context`, feature flags, `environment`, `auth_info`,
  `created_at`) stays with the session.

The steps, and what a crash (or a cancelled call) between them leaves behind:

1. Read the session and the user scope; write the carried preferences to the user scope. A
   crash after it: the visitor's session is untouched and still works, the user already has the
   preferences, and a retried login writes the same values again.
2. Rotate the id (`SessionManager.regenerate_id`: the old id stops working at once — one
   transaction on SQL; elsewhere a copy, then a version-checked delete of the old id, started
   over when a save of the old id lands meanwhile). A crash after it: the old id is dead and the
   rotated session is still anonymous, under an id nobody was told; it expires with its idle
   timeout. The login fails closed — an id the visitor held never becomes a logged-in session —
   and the preferences are already the user's; the visitor's own keys and history go with the
   orphan (the client logs in again, from a new session).
3. Bind the user to the rotated session, carrying the preferences the visitor saved between
   steps 1 and 2: one compare-and-set save (record, per-user index and user scope together).

A save of the old id that lands before the rotation moves with the session and is carried; one
after it raises `SessionNotFound`: nothing is lost silently. Two logins of one session race on
the rotation: one wins, the other raises `SessionNotFound` (its step 1 has run: it carried the
same visitor's preferences). A rotation that fails (`SessionNotFound`, `SessionConflict`) leaves
step 1 done: those preferences were the visitor's choices.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from .errors import InvalidKeepPolicy, SessionNotFound, SessionOwnedByAnotherUser
from .ids import id_hash, validate_session_id, validate_user_id
from .records import PREF_PREFIX
from .session import USER_PREFIX, Session
from .tracking import same_json

if TYPE_CHECKING:
    from .manager import SessionManager

__all__ = ["KEEP_POLICIES", "Keep", "carried_preferences", "check_keep", "log_in"]

logger = logging.getLogger(__name__)

#: Whose value wins when the visitor and the user both have a preference (`SessionManager.login`).
Keep = Literal["session", "user"]
KEEP_POLICIES: Final[tuple[Keep, ...]] = ("session", "user")


def check_keep(keep: object) -> Keep:
    """`keep` if it is a login policy (``"session"`` or ``"user"``), else `InvalidKeepPolicy`."""
    if type(keep) is str:
        for policy in KEEP_POLICIES:
            if keep == policy:
                return policy
    raise InvalidKeepPolicy(f"keep must be one of {', '.join(map(repr, KEEP_POLICIES))}; got {keep!r:.40}")


def carried_preferences(
    visitor: Mapping[str, Any], user: Mapping[str, Any], held: Collection[str], keep: Keep
) -> dict[str, Any]:
    """The visitor's preferences the user scope (now `user`) must take under `keep`: those
    whose value differs from the user's, except (with ``"user"``) the keys in `held`, the ones
    the user had before the login."""
    return {
        key: value
        for key, value in visitor.items()
        if (keep == "session" or key not in held) and not (key in user and same_json(user[key], value))
    }


async def log_in(manager: SessionManager, session_id: str, user_id: str, *, keep: Keep = "session") -> Session:
    """Log `user_id` into the session `session_id` (see the module docstring); returns the
    saved session under its new id. Used by `SessionManager.login`."""
    sid = validate_session_id(session_id)
    uid = validate_user_id(user_id)
    policy = check_keep(keep)
    store = manager.store
    visitor = await store.get(sid)
    if visitor is None:
        raise SessionNotFound("the session does not exist or has expired")
    if visitor.user_id is not None:
        if visitor.user_id != uid:
            raise SessionOwnedByAnotherUser(
                f"session {id_hash(sid)} belongs to another user: log that user out before logging in"
            )
        # Already this user's: its preferences are in the user scope. A login still rotates.
        return await manager.regenerate_id(sid)

    # Step 1: the visitor's preferences go to the user scope first (see the module docstring).
    scopes = await store.load_scopes(uid)
    held = frozenset(scopes.preferences)
    early = carried_preferences(visitor.preferences, scopes.preferences, held, policy)
    if early:
        await store.write_scopes(uid, {PREF_PREFIX + key: value for key, value in early.items()})

    # Step 2: the rotation; saves of the old id that landed are moved with it, later ones fail.
    moved = await manager.regenerate_id(sid)

    # Step 3: the rotated session as the user's: its baseline is the user scope as it is now,
    # so the save writes the binding and only what the visitor saved since step 1.
    chosen = moved.preferences
    scopes = await store.load_scopes(uid)
    moved.preferences = scopes.preferences
    moved.state.update((key, value) for key, value in scopes.state.items() if key.startswith(USER_PREFIX))
    moved.mark_clean()
    moved.user_id = uid
    for key, value in chosen.items():
        if policy == "session" or key not in held:
            moved.preferences[key] = value
    saved = await manager.update_session(moved)
    logger.info("session %s logged in as %s, now %s", id_hash(sid), id_hash(uid), id_hash(saved.session_id))
    return saved
