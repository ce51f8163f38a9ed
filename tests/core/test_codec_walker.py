"""The strict-JSON walker behind `check_json`, `is_strict_json`, `json_size_bound`,
`json_clone` and `nests_deeper`: they agree with each other and with the stdlib's strict
round trip, name the offending value by its path, and never recurse."""

from __future__ import annotations

import enum
import json
import math
import sys
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent_sessions import SerializationError
from agent_sessions.codec import (
    JsonCodec,
    check_json,
    is_strict_json,
    json_clone,
    json_size_bound,
    nests_deeper,
)


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    pass


# Scalars JSON accepts, and values that look like JSON to `json.dumps` but are not strict JSON.
hostile = st.sampled_from(
    [math.nan, math.inf, -math.inf, (1,), b"x", {1, 2}, 1j, object(), "\ud800", "a\udfffb", Colour.RED, Text("t")]
)
huge_ints = st.sampled_from([1, -1]).map(lambda sign: sign * 10**4300 + 7)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=5)
    | hostile
    | huge_ints
)
keys = st.text(max_size=4) | st.sampled_from([1, None, 2.5, True, "\udc00", (1,)])
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4) | st.tuples(inner),
    max_leaves=16,
)
strict_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=16,
)


def same_json(a: Any, b: Any) -> bool:
    """Equal with exactly the same types all the way down (``1 == 1.0 == True`` in Python)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return list(a) == list(b) and all(same_json(a[k], b[k]) for k in a)
    if type(a) is list:
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def depth_of(value: Any) -> int:
    """How many lists and dicts nest in `value` (a scalar: 0)."""
    if type(value) is dict or type(value) is list:
        items = value.values() if type(value) is dict else value
        return 1 + max((depth_of(item) for item in items), default=0)
    return 0


def round_trips(value: Any) -> bool:
    """The stdlib's strict round trip: `allow_nan=False`, UTF-8 bytes, and back to exactly `value`."""
    try:
        data = json.dumps(value, allow_nan=False, ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError):  # not JSON, NaN, a lone surrogate, an integer too long
        return False
    return same_json(json.loads(data), value)


def containers(value: Any) -> set[int]:
    found: set[int] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is dict or type(item) is list:
            found.add(id(item))
            stack.extend(item.values() if type(item) is dict else item)
    return found


@settings(max_examples=1500, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=values, max_depth=st.integers(0, 5))
def test_check_size_and_strictness_agree_with_the_stdlib_round_trip(value: Any, max_depth: int) -> None:
    expected = round_trips(value) and depth_of(value) <= max_depth
    assert is_strict_json(value, max_depth) is expected
    assert (json_size_bound(value, max_depth) is not None) is expected
    if expected:
        check_json(value, "value", max_depth)
    else:
        with pytest.raises(SerializationError, match=r"^value"):
            check_json(value, "value", max_depth)
    assert nests_deeper(value, max_depth) is (depth_of(value) > max_depth)


@settings(max_examples=800, deadline=None)
@given(value=strict_values)
def test_the_bound_covers_the_encoding_and_the_clone_shares_no_container(value: Any) -> None:
    bound = json_size_bound(value)
    assert bound is not None and bound >= len(JsonCodec().encode(value))
    clone = json_clone(value)
    assert same_json(clone, value)
    assert not containers(clone) & containers(value)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(value=values)
def test_a_clone_copies_containers_of_any_value_and_shares_the_rest(value: Any) -> None:
    clone = json_clone(value)  # not checked: a value is cloned before a save refuses it
    assert type(clone) is type(value)
    assert not containers(clone) & containers(value)
    if type(value) is list:
        assert all(a is b for a, b in zip(clone, value, strict=True) if type(a) not in (dict, list))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"a": [1, {"b": math.nan}]}, "state['a'][1]['b']: nan is not allowed in strict JSON"),
        ({"a": {1: "x"}}, "state['a']: dict key 1 (int) is not a str; JSON objects only have string keys"),
        ({"a": {"\ud800": 1}}, "state['a']: dict key '\\ud800' holds a lone surrogate, which UTF-8 cannot encode"),
        (["ok", "b\udfff"], "state[1]: the string holds a lone surrogate, which UTF-8 cannot encode"),
        (
            {"n": [10**4300]},
            "state['n'][0]: an integer of more than 4300 digits cannot be stored; store it as a string",
        ),
        ({"t": (1,)}, "state['t']: tuple is not JSON-serialisable; store only None, bool, int, finite float, str,"),
        ({"k" * 50: {1}}, "state['" + "k" * 36 + "...]: set is not JSON-serialisable"),  # a long key, cut
        ([[[1]]], "state[0][0]: nested deeper than max_depth=2 levels of lists and dicts; flatten the value"),
        ([1], "state: nested deeper than max_depth=0 levels"),
        (-math.inf, "state: -inf is not allowed in strict JSON"),
        # Several faults: the one a walk from the last item of each container finds first, as ever.
        ({"a": math.nan, "b": {"c": math.inf}}, "state['b']['c']: inf"),
        ({"a": math.nan, 1: "key first"}, "state: dict key 1 (int)"),
        ([[[[1]]], math.nan], "state[1]: nan"),
    ],
)
def test_the_error_names_the_offending_value_by_its_path(value: Any, message: str) -> None:
    max_depth = 0 if message.startswith("state: nested") else 2 if "max_depth=2" in message else 64
    with pytest.raises(SerializationError) as caught:
        check_json(value, "state", max_depth)
    assert str(caught.value).startswith(message)


def test_a_deep_value_is_refused_cloned_and_measured_without_recursion() -> None:
    deep: Any = []
    for _ in range(10 * sys.getrecursionlimit()):
        deep = [deep]
    assert not is_strict_json(deep, 256) and json_size_bound(deep, 256) is None
    with pytest.raises(SerializationError, match=r"^v\[0\]\[0\].*\.\.\..*\]: nested deeper than max_depth=256"):
        check_json(deep, "v", 256)
    assert nests_deeper(deep, 256) and not nests_deeper([[[]]], 3) and nests_deeper([[[]]], 2)
    clone = json_clone(deep)  # any depth: the caller's check refuses it, the copy must not fail first
    assert clone is not deep and type(clone) is list


def test_the_limits_are_exact_at_the_edge() -> None:
    assert is_strict_json(10**4299) and not is_strict_json(10**4300)
    assert is_strict_json(-(10**4299)) and not is_strict_json(-(10**4300))
    nested: Any = 1
    for _ in range(64):
        nested = {"k": nested}
    assert is_strict_json(nested) and not is_strict_json({"k": nested})
    assert json_size_bound(nested) is not None and json_size_bound({"k": nested}) is None
    for scalar in ("", "é", 0, -1, 2.5, -0.0, True, False, None):
        bound = json_size_bound(scalar, 0)
        assert bound is not None and bound >= len(JsonCodec().encode(scalar))
