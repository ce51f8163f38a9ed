"""The Session model: the original methods, change tracking, and strict values."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_sessions import SerializationError, Session
from agent_sessions.codec import (
    JsonCodec,
    check_json,
    json_clone,
    json_size_bound,
)


def test_original_methods_behave_as_documented() -> None:
    s = Session()
    assert len(s.session_id) == 43
    before = s.last_accessed_at
    time.sleep(0.001)
    s.set("a", 1)
    assert s.get("a") == 1 and s.has("a") and s.last_accessed_at > before
    assert s.get("missing", "dflt") == "dflt"
    s.delete("a")
    assert not s.has("a")
    s.delete("never-there")  # no error, as in the original
    s.set("b", 2)
    s.clear()
    assert s.state == {}
    assert not s.is_expired()
    s.set_expiry(-1)
    assert s.is_expired()
    s.set_expiry(60)
    assert not s.is_expired()
    s.add_history_entry("message", {"text": "hi"})
    entry = s.history[-1]
    assert entry["type"] == "message" and entry["data"] == {"text": "hi"} and isinstance(entry["timestamp"], float)


def test_to_dict_has_the_original_shape_and_no_secrets() -> None:
    s = Session(user_id="u", state={"k": 1}, preferences={"p": 1}, auth_info={"token": "s3cret"})
    s.add_history_entry("x", {})
    d = s.to_dict()
    assert set(d) == {
        "session_id",
        "user_id",
        "created_at",
        "last_accessed_at",
        "expiry_at",
        "state_keys",
        "preferences",
        "history_count",
        "environment",
    }
    assert d["state_keys"] == ["k"] and d["history_count"] == 1
    assert "s3cret" not in repr(s) and "s3cret" not in str(s) and "s3cret" not in s.model_dump_json()


def test_a_new_session_reports_everything_as_changed() -> None:
    s = Session(state={"a": 1, "temp:x": 2}, preferences={"p": 1})
    delta = s.changes()
    assert delta.sets == {"state": {"a": 1}, "preferences": {"p": 1}}
    assert "user_id" in delta.fields


def test_changes_after_mark_clean_are_exactly_the_edits() -> None:
    s = Session(state={"keep": 1, "edit": {"n": 1}, "drop": 3}, ai_context={"m": "x"})
    s.mark_clean()
    assert s.changes().is_empty()
    s.state["edit"]["n"] = 2  # nested in-place mutation is detected
    del s.state["drop"]
    s.ai_context["t"] = 0.5
    s.feature_flags["f"] = True
    s.environment = {"device": "tv"}
    s.add_history_entry("e", {"i": 1})
    delta = s.changes()
    assert delta.sets == {"state": {"edit": {"n": 2}}, "ai_context": {"t": 0.5}, "feature_flags": {"f": True}}
    assert delta.deletes == {"state": {"drop"}}
    assert delta.fields == {"environment": {"device": "tv"}}
    assert [e["data"] for e in delta.history] == [{"i": 1}]


def test_a_type_change_counts_as_a_change() -> None:
    s = Session(state={"flag": 1})
    s.mark_clean()
    s.state["flag"] = True  # 1 == True in Python, but it is a different JSON value
    assert s.changes().sets == {"state": {"flag": True}}


def test_temp_keys_are_never_part_of_a_delta() -> None:
    s = Session()
    s.mark_clean()
    s.set("temp:scratch", 1)
    assert s.changes().is_empty()


@pytest.mark.parametrize("key", [1, None, ("t",)])
def test_set_rejects_non_string_keys(key: Any) -> None:
    with pytest.raises(SerializationError):
        Session().set(key, 1)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
)
maps = st.dictionaries(
    st.text(min_size=1, max_size=6).filter(lambda k: not k.startswith("temp:")), json_values, max_size=5
)


@settings(max_examples=150, deadline=None)
@given(before=maps, after=maps, concurrent=maps)
def test_delta_replayed_on_a_fresh_copy_reproduces_the_edit(
    before: dict[str, Any], after: dict[str, Any], concurrent: dict[str, Any]
) -> None:
    """Replaying a delta onto a copy that others changed keeps their other keys and applies ours."""
    mine = Session(state=json_clone(before))
    mine.mark_clean()
    mine.state = json_clone(after)
    delta = mine.changes()

    fresh = Session(state={**json_clone(before), **json_clone(concurrent)})
    delta.apply(fresh)
    changed = {k for k in after if k not in before or before[k] != after[k] or type(before[k]) is not type(after[k])}
    deleted = set(before) - set(after)
    for key in changed:
        assert fresh.state[key] == after[key]
    for key in deleted:
        assert key not in fresh.state
    for key, value in concurrent.items():
        if key not in changed and key not in deleted:
            assert fresh.state[key] == value


@settings(max_examples=200, deadline=None)
@given(value=json_values)
def test_codec_round_trips_every_json_value(value: Any) -> None:
    codec = JsonCodec()
    check_json(value)
    assert codec.decode(codec.encode({"v": value})) == {"v": value}


def _containers(value: Any, found: set[int]) -> set[int]:
    if type(value) is dict or type(value) is list:
        found.add(id(value))
        for item in value.values() if type(value) is dict else value:
            _containers(item, found)
    return found


@settings(max_examples=300, deadline=None)
@given(value=st.dictionaries(st.text(max_size=5), json_values, max_size=5))
def test_clones_share_no_container_and_bounds_cover_the_encoding(value: dict[str, Any]) -> None:
    clone = json_clone(value)
    assert clone == value
    assert not _containers(clone, set()) & _containers(value, set())
    bound = json_size_bound(value)
    encoded = JsonCodec().encode(value)
    assert bound is not None and bound >= len(encoded)


def test_check_json_takes_scalars_without_a_walk_and_still_refuses_bad_ones() -> None:
    for good in ("s", 1, 10**40, True, None, 1.5, -0.0):
        check_json(good)
    for bad in (math.nan, math.inf, -math.inf, (1,), b"x", 1j):
        with pytest.raises(SerializationError):
            check_json(bad)


def test_touch_marks_the_field_set_as_pydantic_does() -> None:
    s = Session.model_construct()
    assert "last_accessed_at" not in s.model_fields_set
    s.touch()
    assert "last_accessed_at" in s.model_fields_set and isinstance(s.last_accessed_at, float)


def test_size_bound_refuses_what_cannot_be_encoded() -> None:
    for bad in [math.nan, math.inf, {1: "x"}, (1,), {"k": {2}}, "lone \ud800", {"\udfff": 1}, b"x", object()]:
        assert json_size_bound(bad) is None
    deep: list[Any] = []
    for _ in range(200):
        deep = [deep]
    assert json_size_bound(deep) is None  # too deep for a bound: the caller encodes instead
    assert json_size_bound({"k": [1, "é", None, True, 1.5]}) is not None


async def test_after_a_save_the_baseline_is_what_was_sent_not_what_changed_meanwhile() -> None:
    """An edit made while a save is in flight is not part of that save: it stays a change."""
    from agent_sessions import MemorySessionStore
    from agent_sessions.stores.base import SessionWrite

    session = Session(state={"a": 1})

    class EditDuringWrite(MemorySessionStore):
        async def write(self, write: SessionWrite, now: float) -> None:
            session.state["b"] = 2  # the caller edits while the backend works
            session.add_history_entry("late", {"n": 1})
            await super().write(write, now)

    store = EditDuringWrite()
    await store.set(session)
    delta = session.changes()
    assert delta.sets == {"state": {"b": 2}} and [e["type"] for e in delta.history] == ["late"]
    stored = await store.get(session.session_id)
    assert stored is not None and stored.state == {"a": 1} and stored.history == []


@settings(max_examples=150, deadline=None)
@given(before=maps, after=maps, prefs=maps)
def test_the_baseline_after_a_delta_leaves_nothing_to_save(
    before: dict[str, Any], after: dict[str, Any], prefs: dict[str, Any]
) -> None:
    """`baseline_after` applies exactly what `diff` found: diffing against it finds nothing."""
    from agent_sessions.tracking import baseline_after, diff

    s = Session(state=json_clone(before))
    s.mark_clean()
    s.state = json_clone(after)
    s.preferences = json_clone(prefs)
    s.environment = {"e": 1}
    s.add_history_entry("e", {"i": 1})
    new = baseline_after(s.baseline, s.changes(), ("w",))
    assert diff(s.__dict__, new).is_empty()
    assert new.history_len == len(s.history) and new.writes == ("w",)
    assert not _containers(new.maps, set()) & _containers(s.state, set())  # copies, never shared
