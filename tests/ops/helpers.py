"""Helpers shared by the backup and migration tests: populate a store, snapshot it exactly."""

from __future__ import annotations

from typing import Any

from agent_sessions import Session, SessionManager, SessionStore


async def populate(
    store: SessionStore,
    *,
    users: int = 3,
    per_user: int = 2,
    anonymous: int = 1,
    history: int = 3,
    long_history: int = 0,
) -> list[str]:
    """Sessions with every field set, shared user/app scope data, history and auth secrets.

    The first session gets `long_history` extra entries (use more than the store's
    `history_window` to prove history is paged in full, not just the recent window).
    """
    manager = SessionManager(store, session_lifetime=3600, auto_cleanup=False)
    ids: list[str] = []
    owners: list[str | None] = [f"user-{u}" for u in range(users) for _ in range(per_user)]
    owners += [None] * anonymous
    for i, owner in enumerate(owners):
        session = await manager.create_session(owner, data={"n": i, "nested": {"list": [1, 2.5, "é", None]}})
        if owner is not None:
            session.set("user:plan", f"plan-{owner}")
            session.preferences["tone"] = f"tone-{owner}"
        session.set("app:motd", "hello everyone")
        session.auth_info = {"token": f"secret-token-{i}"}
        session.ai_context["model"] = "m1"
        session.feature_flags["beta"] = i % 2 == 0
        session.environment["device"] = "phone"
        for h in range(history + (long_history if i == 0 else 0)):
            session.add_history_entry("tool_call", {"tool": f"tool-{h % 4}", "i": h})
        await manager.update_session(session)
        # A second save: versions above 1 must survive the round trip too.
        session.set("saved_twice", True)
        await manager.update_session(session)
        ids.append(session.session_id)
    return ids


def fields(session: Session) -> dict[str, Any]:
    data = session.model_dump()
    data["auth_info"] = session.auth_info
    data["history_seq"] = session.history_seq
    return data


async def snapshot(store: SessionStore, *, with_auth: bool = True) -> dict[str, dict[str, Any]]:
    """Every live session, field by field (version, auth_info, history window and full history)."""
    out: dict[str, dict[str, Any]] = {}
    async for session in store.iter_sessions():
        data = fields(session)
        if not with_auth:
            data["auth_info"] = None
        data["full_history"] = (await store.get_history(session.session_id, limit=100_000)).entries
        out[session.session_id] = data
    return out


async def scopes(store: SessionStore) -> dict[tuple[str, str], dict[str, Any]]:
    return {(kind, owner): values async for kind, owner, values in store.iter_scopes()}
