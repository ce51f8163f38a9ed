"""`JsonCodec`: pydantic-core's JSON encodes checked values and decodes records; the stdlib decides
what pydantic-core refuses. What it writes reads back exactly, what earlier releases wrote (the
stdlib's bytes) reads back as the stdlib reads it, and a corrupt document is a
`SerializationError`, whichever parser meets it."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_sessions import MemorySessionStore, SerializationError, Session
from agent_sessions.codec import MAX_DEPTH_LIMIT, JsonCodec, check_json

from .test_codec_walker import same_json

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4),
    max_leaves=24,
)


@settings(max_examples=1000, deadline=None)
@given(value=json_values)
def test_a_value_reads_back_exactly_and_as_the_stdlib_reads_older_bytes(value: Any) -> None:
    codec = JsonCodec()
    assert same_json(codec.decode(codec.encode(value)), value)
    # Records written by earlier releases: the stdlib's compact UTF-8 bytes.
    older = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    assert same_json(codec.decode(older), json.loads(older))
    # Both encoders write JSON the other reads back to the same value.
    assert same_json(json.loads(codec.encode(value)), value)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b'{"a":1} x', b"\xff", b'{"a":"\xc3"}', b'["a\x01b"]', b"[1,]", b"9" * 4301],
    ids=["empty", "unclosed", "trailing", "not-utf8", "cut-utf8", "raw-control", "trailing-comma", "huge-int"],
)
def test_a_corrupt_document_is_a_serialization_error(data: bytes) -> None:
    with pytest.raises(SerializationError, match="not valid JSON"):
        JsonCodec().decode(data)


def test_a_document_deeper_than_pydantic_cores_limit_is_decoded_by_the_stdlib() -> None:
    deep: Any = "leaf"
    for _ in range(250):
        deep = [deep]
    check_json(deep, "deep", 256)
    data = JsonCodec().encode_checked(deep)
    assert JsonCodec().decode(data) == deep
    assert JsonCodec().decode_bounded(data, 256) == deep
    with pytest.raises(SerializationError, match="deeper than max_depth=100"):
        JsonCodec().decode_bounded(data, 100)


def nested(depth: int) -> Any:
    """A value `depth` containers deep (lists and dicts in turn)."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


async def test_a_store_at_the_deepest_max_depth_keeps_values_past_both_parsers_limits() -> None:
    # pydantic-core serializes about 250 levels and parses 200: a record wraps a state value in
    # two more, a history entry wraps its data in one. All of them go through the stdlib.
    deep = nested(MAX_DEPTH_LIMIT)
    async with MemorySessionStore(max_depth=MAX_DEPTH_LIMIT) as store:
        session = Session(user_id="u")
        session.state["deep"] = deep
        session.state["user:deep"] = deep  # the user scope
        session.history.append({"timestamp": 1.0, "type": "note", "data": deep})
        await store.set(session)
        loaded = await store.get(session.session_id)
    assert loaded is not None
    assert loaded.state["deep"] == deep and loaded.state["user:deep"] == deep
    assert loaded.history[-1]["data"] == deep
    assert JsonCodec().encode_checked(nested(400)) == json.dumps(nested(400), separators=(",", ":")).encode()


def test_a_non_finite_float_a_foreign_writer_left_is_refused_when_saved_again() -> None:
    # Values decoded from the store are not walked again before a save: the encoder refuses them.
    decoded = JsonCodec().decode(b'{"a":NaN,"b":1e400,"c":-1e400}')
    assert math.isnan(decoded["a"]) and decoded["b"] == math.inf and decoded["c"] == -math.inf
    for value in ({"a": math.nan}, [math.inf], {"x": [1, -math.inf]}):
        with pytest.raises(SerializationError, match="cannot encode"):
            JsonCodec().encode_checked(value)
    words = {"t": "NaN, Infinity and -Infinity are words here"}
    assert JsonCodec().encode_checked(words) == json.dumps(words, separators=(",", ":")).encode()


def test_a_codec_told_not_to_validate_still_refuses_what_json_cannot_hold() -> None:
    codec = JsonCodec(validate=False)
    assert codec.decode(codec.encode({"a": [1, 2.5, "x", None]})) == {"a": [1, 2.5, "x", None]}
    for value in (math.nan, {"a": math.inf}, {1, 2}, object()):
        with pytest.raises(SerializationError, match="cannot encode"):
            codec.encode(value)


def test_a_validating_codec_names_what_is_not_strict_json() -> None:
    for value in (math.nan, (1, 2), {1: "a"}, b"x"):
        with pytest.raises(SerializationError, match="^record"):
            JsonCodec().encode(value)
