"""`SessionManager.login` on every backend: the id rotates, the user is bound, the visitor's
preferences reach the user scope by the `keep` policy, nothing saved is lost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from agent_sessions import (
    AgentSessionsError,
    InvalidKeepPolicy,
    InvalidSessionId,
    InvalidUserId,
    Session,
    SessionManager,
    SessionNotFound,
    SessionOwnedByAnotherUser,
    SessionTooLarge,
    StoreUnavailable,
    new_session_id,
)

from ..support import FakeClock

pytestmark = pytest.mark.asyncio


async def a_user_with_data(manager: SessionManager) -> Session:
    """Alice, known from another device: a theme, a language and a ``user:`` key."""
    return await manager.create_session(
        user_id="alice", data={"user:plan": "pro"}, preferences={"theme": "dark", "language": "fr"}
    )


async def a_visitor(manager: SessionManager) -> Session:
    """An anonymous visitor who chose a theme and a font, filled a cart and talked a little."""
    visitor = await manager.create_session(data={"cart": ["book"]}, preferences={"theme": "light", "font": "large"})
    for i in range(3):
        visitor.add_history_entry("message", {"i": i})
    return await manager.update_session(visitor)


async def history_of(manager: SessionManager, session_id: str) -> list[int]:
    return [entry["data"]["i"] for entry in await manager.get_history(session_id)]


# ---------------------------------------------------------------- the two policies
async def test_login_keep_session_the_visitors_choices_win(manager: SessionManager) -> None:
    phone = await a_user_with_data(manager)
    visitor = await a_visitor(manager)

    logged = await manager.login(visitor.session_id, "alice")

    assert logged.session_id != visitor.session_id and logged.user_id == "alice"
    assert logged.preferences == {"theme": "light", "language": "fr", "font": "large"}
    assert logged.get("cart") == ["book"] and logged.get("user:plan") == "pro"
    reloaded = await manager.get_session(logged.session_id)
    assert reloaded is not None and reloaded.preferences == logged.preferences
    assert reloaded.state == {"cart": ["book"], "user:plan": "pro"}
    # The next session of the user, on another device, and the one they already had see them.
    laptop = await manager.create_session(user_id="alice")
    assert laptop.preferences == {"theme": "light", "language": "fr", "font": "large"}
    assert laptop.state == {"user:plan": "pro"}  # the visitor's own keys stayed with their session
    again = await manager.get_session(phone.session_id)
    assert again is not None and again.preferences["theme"] == "light"


async def test_login_keep_user_the_stored_users_values_win(manager: SessionManager) -> None:
    await a_user_with_data(manager)
    visitor = await a_visitor(manager)

    logged = await manager.login(visitor.session_id, "alice", keep="user")

    # "theme" was alice's already: hers stays; "font" she did not have: the visitor's is carried.
    assert logged.preferences == {"theme": "dark", "language": "fr", "font": "large"}
    assert logged.get("cart") == ["book"] and logged.get("user:plan") == "pro"
    laptop = await manager.create_session(user_id="alice")
    assert laptop.preferences == {"theme": "dark", "language": "fr", "font": "large"}
    reloaded = await manager.get_session(logged.session_id)
    assert reloaded is not None and reloaded.preferences == logged.preferences


@pytest.mark.parametrize("keep", ["session", "user"])
async def test_login_of_a_new_user_carries_every_preference(manager: SessionManager, keep: Any) -> None:
    visitor = await a_visitor(manager)
    logged = await manager.login(visitor.session_id, "newcomer", keep=keep)
    assert logged.preferences == {"theme": "light", "font": "large"}
    other = await manager.create_session(user_id="newcomer")
    assert other.preferences == {"theme": "light", "font": "large"}
    assert [s.session_id for s in await manager.get_user_sessions("newcomer")] != []
    assert logged.session_id in {s.session_id for s in await manager.get_user_sessions("newcomer")}


# ---------------------------------------------------------------- rotation
async def test_login_kills_the_old_id_and_keeps_the_history(manager: SessionManager) -> None:
    visitor = await a_visitor(manager)
    logged = await manager.login(visitor.session_id, "alice")

    assert await manager.get_session(visitor.session_id) is None
    assert await history_of(manager, logged.session_id) == [0, 1, 2]
    assert [s.session_id for s in await manager.get_user_sessions("alice")] == [logged.session_id]
    visitor.set("late", 1)  # a request still holding the old session
    with pytest.raises(SessionNotFound):
        await manager.update_session(visitor)
    # The logged-in session goes on as any other.
    logged.add_history_entry("message", {"i": 3})
    logged.preferences["theme"] = "solarized"
    await manager.update_session(logged)
    assert await history_of(manager, logged.session_id) == [0, 1, 2, 3]
    assert (await manager.create_session(user_id="alice")).preferences["theme"] == "solarized"


async def test_login_of_a_session_already_bound_to_the_user_only_rotates(manager: SessionManager) -> None:
    mine = await a_user_with_data(manager)
    logged = await manager.login(mine.session_id, "alice", keep="user")
    assert logged.session_id != mine.session_id and logged.user_id == "alice"
    assert logged.preferences == {"theme": "dark", "language": "fr"} and logged.get("user:plan") == "pro"
    assert await manager.get_session(mine.session_id) is None


async def test_login_into_a_session_of_another_user_is_refused_and_changes_nothing(manager: SessionManager) -> None:
    bobs = await manager.create_session(user_id="bob", preferences={"theme": "dark"})
    with pytest.raises(SessionOwnedByAnotherUser) as caught:
        await manager.login(bobs.session_id, "alice")
    assert isinstance(caught.value, AgentSessionsError)
    assert bobs.session_id not in str(caught.value)
    still = await manager.get_session(bobs.session_id)
    assert still is not None and still.user_id == "bob"
    assert (await manager.store.load_scopes("alice")).user == {}


# ---------------------------------------------------------------- errors
async def test_login_rejects_bad_arguments_before_any_io(manager: SessionManager) -> None:
    visitor = await a_visitor(manager)
    for bad_keep in ("visitor", "", None, 1, ["session"]):
        with pytest.raises(InvalidKeepPolicy) as caught:
            await manager.login(visitor.session_id, "alice", keep=bad_keep)  # type: ignore[arg-type]
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, AgentSessionsError)
    for bad_user in ("", "x" * 257, "tab\there", 42):
        with pytest.raises(InvalidUserId):
            await manager.login(visitor.session_id, bad_user)  # type: ignore[arg-type]
    with pytest.raises(InvalidSessionId):
        await manager.login("not-an-id", "alice")
    # Nothing happened: the visitor's session is where it was, and alice has nothing.
    still = await manager.get_session(visitor.session_id)
    assert still is not None and still.user_id is None
    assert (await manager.store.load_scopes("alice")).user == {}


async def test_login_of_an_unknown_or_expired_session_is_session_not_found(
    manager: SessionManager, clock: FakeClock
) -> None:
    with pytest.raises(SessionNotFound):
        await manager.login(new_session_id(), "alice")
    visitor = await a_visitor(manager)
    clock.advance(manager.session_lifetime + 1)
    with pytest.raises(SessionNotFound):
        await manager.login(visitor.session_id, "alice")
    assert (await manager.store.load_scopes("alice")).user == {}


async def test_two_logins_of_one_session_one_wins_the_other_is_session_not_found(manager: SessionManager) -> None:
    visitor = await a_visitor(manager)
    first = await manager.login(visitor.session_id, "alice")
    with pytest.raises(SessionNotFound):
        await manager.login(visitor.session_id, "alice")
    assert [s.session_id for s in await manager.get_user_sessions("alice")] == [first.session_id]


# ---------------------------------------------------------------- concurrent saves of the old id
async def test_a_save_landing_just_before_the_rotation_is_carried(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    visitor = await a_visitor(manager)
    original = manager.regenerate_id

    async def a_save_lands_first(session_id: str) -> Session:
        # Another request of the visitor saves the old id after login read it, before the move.
        def choose(s: Session) -> None:
            s.set("coupon", "SPRING")
            s.preferences["currency"] = "EUR"

        await manager.mutate(session_id, choose)
        return await original(session_id)

    monkeypatch.setattr(manager, "regenerate_id", a_save_lands_first)
    logged = await manager.login(visitor.session_id, "alice")
    assert logged.get("coupon") == "SPRING" and logged.get("cart") == ["book"]
    assert logged.preferences == {"theme": "light", "font": "large", "currency": "EUR"}
    laptop = await manager.create_session(user_id="alice")
    assert laptop.preferences == {"theme": "light", "font": "large", "currency": "EUR"}


async def test_saves_racing_a_login_land_or_fail_typed(manager: SessionManager, store: Any) -> None:
    visitor = await a_visitor(manager)
    # A second manager over the same store: another process, which takes no turns with this one.
    other = SessionManager(store, auto_cleanup=False)

    async def writer(i: int) -> Session:
        def choose(s: Session) -> None:
            s.set(f"k{i}", i)
            s.preferences[f"p{i}"] = i

        return await (manager if i % 2 else other).mutate(visitor.session_id, choose)

    writers = [asyncio.create_task(writer(i)) for i in range(20)]
    await asyncio.sleep(0)
    logged = await manager.login(visitor.session_id, "alice")
    outcomes = await asyncio.gather(*writers, return_exceptions=True)

    final = await manager.get_session(logged.session_id)
    assert final is not None
    laptop = await manager.create_session(user_id="alice")
    landed = 0
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, SessionNotFound), repr(outcome)
            continue
        landed += 1
        assert final.get(f"k{i}") == i, f"a save that succeeded was lost: k{i}"
        assert final.preferences.get(f"p{i}") == i and laptop.preferences.get(f"p{i}") == i
    assert final.get("cart") == ["book"] and final.preferences["theme"] == "light"
    # Every writer that failed failed typed; none of them was half-applied.
    for i, outcome in enumerate(outcomes):
        if isinstance(outcome, SessionNotFound):
            assert f"k{i}" not in final.state
    assert landed + sum(isinstance(o, SessionNotFound) for o in outcomes) == 20


# ---------------------------------------------------------------- a crash between the steps
async def test_a_failure_before_the_rotation_leaves_the_visitor_working_and_a_retry_logs_in(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    visitor = await a_visitor(manager)
    original = manager.regenerate_id

    async def unavailable(session_id: str) -> Session:
        raise StoreUnavailable("the store went away before the rotation")

    monkeypatch.setattr(manager, "regenerate_id", unavailable)
    with pytest.raises(StoreUnavailable):
        await manager.login(visitor.session_id, "alice")
    still = await manager.get_session(visitor.session_id)
    assert still is not None and still.user_id is None and still.get("cart") == ["book"]
    # The preferences were carried first: they are the user's already, and a retry is idempotent.
    assert (await manager.create_session(user_id="alice")).preferences == {"theme": "light", "font": "large"}
    monkeypatch.setattr(manager, "regenerate_id", original)
    logged = await manager.login(visitor.session_id, "alice")
    assert logged.preferences == {"theme": "light", "font": "large"} and logged.get("cart") == ["book"]


async def test_a_failure_after_the_rotation_fails_closed(
    manager: SessionManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    visitor = await a_visitor(manager)

    async def unavailable(session: Session) -> Session:
        raise StoreUnavailable("the store went away before the binding")

    monkeypatch.setattr(manager, "update_session", unavailable)
    with pytest.raises(StoreUnavailable):
        await manager.login(visitor.session_id, "alice")
    # The id the visitor held is dead and never became alice's session; her preferences are hers.
    assert await manager.get_session(visitor.session_id) is None
    assert await manager.get_user_sessions("alice") == []
    assert (await manager.store.load_scopes("alice")).preferences == {"theme": "light", "font": "large"}


async def test_preferences_too_large_for_the_user_scope_fail_typed_before_the_rotation(
    make_store: Any,
) -> None:
    async with make_store(max_scope_bytes=256) as small:
        manager = SessionManager(small, auto_cleanup=False)
        visitor = await manager.create_session(preferences={"notes": "x" * 400})
        with pytest.raises(SessionTooLarge):
            await manager.login(visitor.session_id, "alice")
        still = await manager.get_session(visitor.session_id)
        assert still is not None and still.user_id is None and still.preferences == {"notes": "x" * 400}
        assert await manager.get_user_sessions("alice") == []
