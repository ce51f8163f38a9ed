"""Hostile and careless values (DESIGN §3 Data, issue 12): on every backend the same refusal,
a typed error before anything is written, and nothing a client sends can make a session
unreadable. Runs once per entry of BACKENDS."""

from __future__ import annotations

import inspect
import math
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_sessions import (
    ScopeError,
    SerializationError,
    Session,
    SessionManager,
    SessionStore,
    SessionTooLarge,
)
from agent_sessions.codec import DEFAULT_MAX_DEPTH, MAX_COUNTER, MAX_INT_DIGITS

pytestmark = pytest.mark.asyncio

T = TypeVar("T")


def nested(depth: int, leaf: Any = 1, *, kind: str = "list") -> Any:
    """A value with `depth` containers around `leaf` (depth 0: the leaf itself)."""
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"k": value}
    return value


async def from_deep_stack(call: Callable[[], Awaitable[T]], margin: int = 50) -> T:
    """Await `call()` with the stack `margin` frames short of Python's recursion limit."""

    async def dive(n: int) -> T:
        if n <= 0:
            return await call()
        return await dive(n - 1)

    return await dive(sys.getrecursionlimit() - margin - len(inspect.stack(0)))


async def assert_unchanged(store: SessionStore, session_id: str, state: dict[str, Any], version: int) -> None:
    loaded = await store.get(session_id)
    assert loaded is not None and loaded.state == state and loaded.version == version


# ---------------------------------------------------------------- depth
async def test_session_set_refuses_a_value_nested_deeper_than_the_default_depth_naming_its_path() -> None:
    s = Session()
    s.set("ok", nested(DEFAULT_MAX_DEPTH))
    with pytest.raises(SerializationError, match=r"state\['deep'\]\[0\].*max_depth=64"):
        s.set("deep", nested(DEFAULT_MAX_DEPTH + 1))
    with pytest.raises(SerializationError, match="max_depth"):
        s.add_history_entry("message", {"d": nested(DEFAULT_MAX_DEPTH, kind="dict")})
    assert "deep" not in s.state and s.history == []


@pytest.mark.parametrize("where", ["state", "preferences", "user-scope", "app-scope", "history", "environment"])
@pytest.mark.parametrize("depth", [DEFAULT_MAX_DEPTH + 1, 500, 5000])
async def test_a_value_nested_too_deep_is_refused_at_save_and_nothing_is_written(
    store: SessionStore, where: str, depth: int
) -> None:
    s = Session(user_id="u1", state={"good": 1})
    await store.set(s)
    value = nested(depth, kind="dict" if depth % 2 else "list")
    if where == "state":
        s.state["k"] = value  # bypasses Session.set: caught at save
    elif where == "preferences":
        s.preferences["p"] = value
    elif where == "user-scope":
        s.state["user:k"] = value
    elif where == "app-scope":
        s.state["app:k"] = value
    elif where == "history":
        s.history.append({"timestamp": 1.0, "type": "m", "data": value})
    else:
        s.environment = {"e": value}
    with pytest.raises(SerializationError, match="max_depth"):
        await store.set(s)
    await assert_unchanged(store, s.session_id, {"good": 1}, 1)
    loaded = await store.get(s.session_id)
    assert loaded is not None and loaded.history == [] and loaded.preferences == {} and loaded.environment == {}
    assert (await store.load_scopes("u1")).user == {} and (await store.load_scopes(None)).app == {}


async def test_a_value_at_exactly_max_depth_round_trips_everywhere(store: SessionStore) -> None:
    value = nested(DEFAULT_MAX_DEPTH - 2, {"leaf": [1]})  # 64 containers in all
    s = Session(user_id="u1", preferences={"p": value})
    s.set("k", value)
    s.set("user:k", value)
    s.add_history_entry("m", {"v": nested(DEFAULT_MAX_DEPTH - 1)})
    await store.set(s)
    loaded = await store.get(s.session_id)
    assert loaded is not None
    assert loaded.state == {"k": value, "user:k": value} and loaded.preferences == {"p": value}
    assert loaded.history[-1]["data"] == {"v": nested(DEFAULT_MAX_DEPTH - 1)}
    page = await store.get_history(s.session_id)
    assert page.entries[-1]["data"] == {"v": nested(DEFAULT_MAX_DEPTH - 1)}


async def test_max_depth_is_a_store_option(make_store: Callable[..., Any]) -> None:
    async with make_store(max_depth=3) as store:
        assert store.max_depth == 3
        s = Session(state={"ok": nested(3)})
        await store.set(s)
        s.state["deep"] = nested(4)
        with pytest.raises(SerializationError, match=r"state\['deep'\].*max_depth=3"):
            await store.set(s)
        await assert_unchanged(store, s.session_id, {"ok": nested(3)}, 1)
    async with make_store(max_depth=100) as store:
        s = Session()
        s.state["deeper"] = nested(100)  # past Session.set's default, within this store's limit
        await store.set(s)
        loaded = await store.get(s.session_id)
        assert loaded is not None and loaded.state["deeper"] == nested(100)
    for bad in (0, -1, 10_000, 2.5, True):
        with pytest.raises(ValueError, match="max_depth"):
            async with make_store(max_depth=bad):
                pass


@pytest.mark.parametrize("where", ["state", "user-scope", "history"])
async def test_a_value_stored_deeper_than_the_limit_reads_as_corrupt_never_recursion_error(
    store: SessionStore, backend: str, where: str
) -> None:
    s = Session(user_id="u1")
    store.max_depth = 240  # as a release without the limit, or a store configured deeper, wrote it
    value = nested(230)
    if where == "state":
        s.state["k"] = value
    elif where == "user-scope":
        s.state["user:k"] = value
    else:
        s.history.append({"timestamp": 1.0, "type": "m", "data": value})
    await store.set(s)
    store.max_depth = DEFAULT_MAX_DEPTH
    with pytest.raises(SerializationError):
        await store.get(s.session_id)
    with pytest.raises(SerializationError):
        await from_deep_stack(lambda: store.get(s.session_id))
    with pytest.raises(SerializationError):
        await store.get_user_sessions("u1")
    if where == "history":
        with pytest.raises(SerializationError):
            await store.get_history(s.session_id)
    else:
        assert [x async for x in store.iter_sessions(on_corrupt="skip")] == []


async def test_deep_values_from_a_deep_stack_get_a_typed_error_and_good_ones_round_trip(store: SessionStore) -> None:
    s = Session(state={"k": [[1]]})
    # The drivers need frames of their own (SQLAlchemy's the most): good values from a little higher.
    await from_deep_stack(lambda: store.set(s), margin=150)
    loaded = await from_deep_stack(lambda: store.get(s.session_id), margin=150)
    assert loaded is not None and loaded.state == {"k": [[1]]}
    loaded.state["deep"] = nested(100_000)
    with pytest.raises(SerializationError):
        await from_deep_stack(lambda: store.set(loaded))
    with pytest.raises(SerializationError):
        await from_deep_stack(lambda: _set_async(loaded, "deep", nested(5000)))
    await assert_unchanged(store, s.session_id, {"k": [[1]]}, 1)


async def _set_async(session: Session, key: str, value: Any) -> None:
    session.set(key, value)


async def test_changing_a_deep_value_in_place_is_compared_without_recursion(store: SessionStore) -> None:
    s = Session(state={"k": nested(60)})
    await store.set(s)
    loaded = await store.get(s.session_id)
    assert loaded is not None
    inner = loaded.state["k"]
    for _ in range(59):
        inner = inner[0]
    inner[0] = nested(100_000)  # deep inside an existing value: found by the change tracking
    with pytest.raises(SerializationError, match="max_depth"):
        await store.set(loaded)
    await assert_unchanged(store, s.session_id, {"k": nested(60)}, 1)


# ---------------------------------------------------------------- same refusals everywhere
LONE = "lone \ud800 surrogate"
HUGE_INT = 10**MAX_INT_DIGITS  # one digit too many for Python's int-to-text


@pytest.mark.parametrize(
    "where",
    ["value", "nested-value", "key", "nested-key", "pref-key", "scope-key", "history-type", "environment"],
)
async def test_lone_surrogates_are_refused_at_save_on_every_backend(store: SessionStore, where: str) -> None:
    s = Session(user_id="u1", state={"good": 1})
    await store.set(s)
    if where == "value":
        s.state["k"] = LONE
    elif where == "nested-value":
        s.state["k"] = {"a": [LONE]}
    elif where == "key":
        s.state[LONE] = 1
    elif where == "nested-key":
        s.state["k"] = {LONE: 1}
    elif where == "pref-key":
        s.preferences[LONE] = 1
    elif where == "scope-key":
        s.state["user:" + LONE] = 1
    elif where == "history-type":
        s.history.append({"timestamp": 1.0, "type": LONE, "data": {}})
    else:
        s.environment = {"e": LONE}
    with pytest.raises(SerializationError):
        await store.set(s)
    await assert_unchanged(store, s.session_id, {"good": 1}, 1)
    assert (await store.load_scopes("u1")).user == {}


async def test_session_set_refuses_lone_surrogates_in_keys_and_values() -> None:
    s = Session()
    for key, value in ((LONE, 1), ("k", LONE), ("k", {LONE: 1}), ("k", [[LONE]])):
        with pytest.raises(SerializationError, match="surrogate"):
            s.set(key, value)
    with pytest.raises(SerializationError, match="surrogate"):
        s.add_history_entry(LONE, {})
    assert s.state == {} and s.history == []


@pytest.mark.parametrize("first_save", [True, False])
async def test_an_integer_python_cannot_write_as_text_is_refused_on_every_backend(
    store: SessionStore, first_save: bool
) -> None:
    s = Session(state={"good": 1, "max": HUGE_INT - 1})  # 4,300 digits: the largest that is accepted
    if not first_save:
        await store.set(s)  # a later save takes the memory store's size-bound path
    for bad in (HUGE_INT, -HUGE_INT, [1, 10**10_000], {"n": -(10**5000)}):
        s.state["k"] = bad
        with pytest.raises(SerializationError, match="digits"):
            await store.set(s)
    if first_save:
        assert await store.get(s.session_id) is None
    else:
        await assert_unchanged(store, s.session_id, {"good": 1, "max": HUGE_INT - 1}, 1)
    with pytest.raises(SerializationError, match="digits"):
        Session().set("k", HUGE_INT)


@pytest.mark.parametrize("where", ["state", "preferences", "history", "environment", "auth", "scope", "created_at"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
async def test_nan_and_infinity_are_refused_everywhere(store: SessionStore, where: str, bad: float) -> None:
    s = Session(user_id="u1", state={"good": 1})
    await store.set(s)
    if where == "state":
        s.state["k"] = [bad]
    elif where == "preferences":
        s.preferences["p"] = {"x": bad}
    elif where == "history":
        s.history.append({"timestamp": 1.0, "type": "m", "data": {"x": bad}})
    elif where == "environment":
        s.environment = {"x": bad}
    elif where == "auth":
        s.auth_info = {"x": bad}
    elif where == "scope":
        s.state["app:x"] = bad
    else:
        s.created_at = bad
    with pytest.raises(SerializationError):
        await store.set(s)
    await assert_unchanged(store, s.session_id, {"good": 1}, 1)
    with pytest.raises(SerializationError):
        await store.write_scopes("u1", {"user:x": bad})
    assert (await store.load_scopes("u1")).user == {}


async def test_numbers_too_large_for_a_float_timestamp_are_refused(store: SessionStore) -> None:
    s = Session(state={"good": 1})
    await store.set(s)
    s.history.append({"timestamp": 10**400, "type": "m", "data": {}})
    with pytest.raises(SerializationError, match="timestamp"):
        await store.set(s)
    s.history.clear()
    s.created_at = 10**400  # type: ignore[assignment]
    with pytest.raises(SerializationError, match="created_at"):
        await store.set(s)
    await assert_unchanged(store, s.session_id, {"good": 1}, 1)


async def test_versions_sequence_numbers_and_cursors_beyond_what_every_backend_holds_are_refused_alike(
    store: SessionStore,
) -> None:
    # 64 bits in SQL, 53 in Redis scripts (doubles): one bound for all, `MAX_COUNTER`.
    s = Session(state={"good": 1})
    s.add_history_entry("m", {"i": 1})
    await store.set(s)
    for version in (MAX_COUNTER, 2**63, 2**70, -1):
        stale = Session(state={"x": 1}, version=version)
        with pytest.raises(SerializationError, match="version"):
            await store.set(stale)
        assert await store.get(stale.session_id) is None
    for cursor in (MAX_COUNTER + 1, 2**63, -(2**63), 2**100, "5", 2.0):
        with pytest.raises(SerializationError, match="before"):
            await store.get_history(s.session_id, before=cursor)  # type: ignore[arg-type]
    for limit in (0, MAX_COUNTER, 2**63, 2**70):
        with pytest.raises(SerializationError, match="limit"):
            await store.get_history(s.session_id, limit=limit)
    newest = await store.get_history(s.session_id, before=MAX_COUNTER)  # the largest cursor is fine
    assert [e["data"] for e in newest.entries] == [{"i": 1}]
    imported = Session(state={"y": 1}, version=3)
    with pytest.raises(SerializationError, match="history_seq"):
        await store.restore(imported, [], history_seq=MAX_COUNTER + 1)
    with pytest.raises(SerializationError, match="version"):
        await store.restore(Session(version=MAX_COUNTER + 1), [])
    assert await store.get(imported.session_id) is None
    entry = {"timestamp": 1.0, "type": "m", "data": {}}
    await store.restore(imported, [entry], history_seq=MAX_COUNTER)
    restored = await store.get(imported.session_id)
    assert restored is not None and restored.history_seq == MAX_COUNTER and restored.history == [entry]
    page = await store.get_history(imported.session_id, limit=1)
    assert page.entries == [entry] and page.next_before is None
    restored.add_history_entry("m", {})
    with pytest.raises(SerializationError, match="sequence"):
        await store.set(restored)
    at_max = Session(version=MAX_COUNTER)
    await store.restore(at_max, [])
    loaded = await store.get(at_max.session_id)
    assert loaded is not None and loaded.version == MAX_COUNTER


# ---------------------------------------------------------------- bounded scopes
async def test_a_user_scope_cannot_grow_past_max_scope_bytes(make_store: Callable[..., Any]) -> None:
    limit = 64 * 1024
    async with make_store(max_session_bytes=limit) as store:
        assert store.max_scope_bytes == limit  # by default, bounded like a session
        manager = SessionManager(store, session_lifetime=3600, auto_cleanup=False)
        chunk = "x" * (15 * 1024)
        written = []
        for i in range(12):  # a model setting user: keys again and again
            s = await manager.create_session("u1")
            s.set(f"user:k{i}", chunk)
            try:
                await manager.update_session(s)
            except SessionTooLarge as exc:
                assert "max_scope_bytes" in str(exc)
                break
            written.append(i)
        assert written == [0, 1, 2, 3]  # the fifth 15 KiB key would pass 64 KiB
        scope = await store.load_scopes("u1")
        assert sorted(scope.user) == [f"user:k{i}" for i in written]
        fresh = await manager.create_session("u1")  # what every new session of the user loads
        assert sum(len(v) for k, v in fresh.state.items() if k.startswith("user:")) <= limit
        # A save that does not grow the scope still goes through (so it can be cleaned up).
        fresh.delete("user:k0")
        fresh.set("user:k1", "small")
        await manager.update_session(fresh)
        assert sorted((await store.load_scopes("u1")).user) == ["user:k1", "user:k2", "user:k3"]


async def test_app_scope_and_direct_scope_writes_are_bounded_too(make_store: Callable[..., Any]) -> None:
    async with make_store(max_scope_bytes=1000) as store:
        await store.write_scopes(None, {"app:a": "x" * 400})
        with pytest.raises(SessionTooLarge, match="app scope"):
            await store.write_scopes(None, {"app:b": "x" * 700})
        manager = SessionManager(store, session_lifetime=3600, auto_cleanup=False)
        s = await manager.create_session("u1")  # loads the scopes: its save is bounded by them
        s.set("app:c", "y" * 700)
        with pytest.raises(SessionTooLarge, match="app scope"):
            await manager.update_session(s)
        await store.write_scopes("u1", {"pref:tone": "t" * 900})
        with pytest.raises(SessionTooLarge, match="user scope"):
            await store.write_scopes("u1", {"user:more": "m" * 200})
        scopes = await store.load_scopes("u1")
        assert scopes.app == {"app:a": "x" * 400} and scopes.user == {"pref:tone": "t" * 900}
        with pytest.raises(ValueError, match="max_scope_bytes"):
            async with make_store(max_scope_bytes=0):
                pass


# ---------------------------------------------------------------- the whole value path, generated
def storable(value: Any) -> bool:
    """The reference rule, written independently of the library: what every backend must keep."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        kind = type(item)
        if kind is dict or kind is list:
            if depth >= DEFAULT_MAX_DEPTH:
                return False
            if kind is dict:
                for key in item:
                    if type(key) is not str or any(0xD800 <= ord(c) <= 0xDFFF for c in key):
                        return False
            stack.extend((sub, depth + 1) for sub in (item.values() if kind is dict else item))
        elif kind is str:
            if any(0xD800 <= ord(c) <= 0xDFFF for c in item):
                return False
        elif kind is int:
            if abs(item) >= 10**MAX_INT_DIGITS:  # more digits than Python turns into text
                return False
        elif kind is float:
            if not math.isfinite(item):
                return False
        elif not (kind is bool or item is None):
            return False
    return True


def same_json(a: Any, b: Any) -> bool:
    """Equal with every type kept (`1`, `1.0` and `True` differ)."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if type(x) is dict:
            if x.keys() != y.keys():
                return False
            stack.extend((x[k], y[k]) for k in x)
        elif type(x) is list:
            if len(x) != len(y):
                return False
            stack.extend(zip(x, y, strict=True))
        elif x != y:
            return False
    return True


_text = st.text(
    alphabet=st.one_of(st.characters(), st.sampled_from(["\ud800", "\udbff", "\udc00", "\udfff"])), max_size=6
)
_keys = st.one_of(_text, st.integers(-3, 3), st.none(), st.booleans(), st.tuples(st.integers(0, 2)))
_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.builds(
        lambda digits, sign: sign * 10 ** (digits - 1), st.sampled_from([4300, 4301, 10_000]), st.sampled_from([1, -1])
    ),
    st.floats(),  # NaN and the infinities included
    _text,
)
_wide = st.recursive(
    _leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_keys, inner, max_size=4), max_leaves=12
)
_deep = st.builds(
    lambda depth, leaf, kind: nested(depth, leaf, kind=kind),
    st.integers(DEFAULT_MAX_DEPTH - 3, DEFAULT_MAX_DEPTH + 3),
    _leaves,
    st.sampled_from(["list", "dict"]),
)
_values = st.one_of(_wide, _deep)
_counter = iter(range(10**9))


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(value=_values, where=st.sampled_from(["state", "preferences", "user-scope", "history", "auth"]))
async def test_every_value_round_trips_exactly_or_is_refused_alike_with_nothing_written(
    store: SessionStore, value: Any, where: str
) -> None:
    uid = f"prop-{next(_counter)}"
    s = Session(user_id=uid)
    if where == "state":
        s.state["k"] = value
    elif where == "preferences":
        s.preferences["p"] = value
    elif where == "user-scope":
        s.state["user:k"] = value
    elif where == "history":
        s.history.append({"timestamp": 1.0, "type": "m", "data": value})
    else:
        s.auth_info = {"a": value}
    if not storable(value):
        with pytest.raises(SerializationError):
            await store.set(s)
        assert await store.get(s.session_id) is None
        assert (await store.load_scopes(uid)).user == {}
        return
    await store.set(s)
    loaded = await store.get(s.session_id)
    assert loaded is not None
    if where == "state":
        got = loaded.state["k"]
    elif where == "preferences":
        got = loaded.preferences["p"]
    elif where == "user-scope":
        got = loaded.state["user:k"]
    elif where == "history":
        got = loaded.history[-1]["data"]
        assert same_json((await store.get_history(s.session_id)).entries[-1]["data"], value)
    else:
        assert loaded.auth_info is not None
        got = loaded.auth_info["a"]
    assert same_json(got, value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, 1e308, 10**400, "soon", True])
async def test_times_that_are_not_finite_numbers_in_range_are_refused_alike(store: SessionStore, bad: Any) -> None:
    s = Session(state={"good": 1}, expiry_at=2e9)
    await store.set(s)
    for name in ("created_at", "last_accessed_at", "expiry_at"):
        stale = Session()
        setattr(stale, name, bad)
        with pytest.raises(SerializationError, match=name):
            await store.set(stale)
        assert await store.get(stale.session_id) is None
    with pytest.raises(SerializationError, match="last_accessed_at"):
        await store.touch(s.session_id, bad, None)
    with pytest.raises(SerializationError, match="expiry_at"):
        await store.touch(s.session_id, 1.0, bad)
    loaded = await store.get(s.session_id)
    assert loaded is not None and loaded.expiry_at == 2e9 and loaded.last_accessed_at == s.last_accessed_at


@pytest.mark.parametrize("key", [1, None, ("user:", 1), b"user:k"])
async def test_scope_keys_that_are_not_text_are_refused_with_a_typed_error(store: SessionStore, key: Any) -> None:
    with pytest.raises(ScopeError):
        await store.write_scopes("u1", {key: 1})
    with pytest.raises(ScopeError):
        await store.write_scopes("u1", {}, delete=[key])
    assert (await store.load_scopes("u1")).user == {}
