"""Strict JSON encoding of records, and an optional encryption wrapper.

Only JSON types are accepted: `None`, `bool`, `int`, finite `float`, `str`, `list` and `dict`
with `str` keys. Anything else (datetime, set, tuple, bytes, NaN, non-string keys) raises
`SerializationError` naming the path of the offending value, before anything is written; so do
values every backend cannot hold alike: containers nested deeper than `max_depth` (default
`DEFAULT_MAX_DEPTH`), strings or keys with a lone surrogate (UTF-8 cannot encode them), and
integers of more than `MAX_INT_DIGITS` digits (Python cannot turn them into text).

No walker here recurses: each uses an explicit stack or works level by level, so a value of any
depth (or a call from a deep stack) gets a `SerializationError`, never a `RecursionError`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Protocol, runtime_checkable

from .errors import SerializationError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "INT64_MAX",
    "MAX_COUNTER",
    "MAX_DEPTH_LIMIT",
    "MAX_INT_DIGITS",
    "Codec",
    "FernetCodec",
    "JsonCodec",
    "check_json",
    "check_json_key",
    "check_max_depth",
    "clone_with_bound",
    "decode_bounded",
    "encode_checked",
    "is_strict_json",
    "json_clone",
    "json_size_bound",
    "nests_deeper",
]

JSON_SCALARS = (str, int, bool, type(None))
#: Containers nested deeper than this are refused (a value at the top is depth 0, ``[1]`` is 1).
DEFAULT_MAX_DEPTH = 64
#: The largest `max_depth` a store accepts: the C JSON encoder and decoder recurse once per
#: level, and a deeper limit would leave too little of Python's recursion limit to callers.
MAX_DEPTH_LIMIT = 256
#: Integers with more digits cannot be turned into text by Python (``sys.get_int_max_str_digits``).
MAX_INT_DIGITS = 4300
#: The largest signed 64-bit integer (SQL ``BIGINT``).
INT64_MAX = 2**63 - 1
#: The largest version, history sequence number or cursor every backend holds exactly: SQL
#: columns are 64-bit, but Redis scripts count in doubles (exact up to 2**53).
MAX_COUNTER = 2**53 - 1
_INT_LIMIT = 10**MAX_INT_DIGITS  # allowed: -_INT_LIMIT < n < _INT_LIMIT
_SURROGATE = re.compile("[\ud800-\udfff]")
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(allow_nan=False, ensure_ascii=False, separators=(",", ":"), check_circular=False)
# `JSONEncoder.encode` builds its C encoder on every call; build it once (same arguments as
# `JSONEncoder.iterencode` passes). No circular check: the values were walked by `check_json`.
_C_ENCODE: Callable[[Any, int], Any] | None = (
    None
    if c_make_encoder is None
    else c_make_encoder(None, _ENCODER.default, encode_basestring, None, ":", ",", False, False, False)
)


def _dumps_checked(obj: Any) -> str:
    if _C_ENCODE is None:
        return _ENCODER.encode(obj)
    return "".join(_C_ENCODE(obj, 0))


def _str_ok(text: str) -> bool:
    """True unless `text` holds a lone surrogate (UTF-8, so every backend, cannot encode it)."""
    return text.isascii() or _SURROGATE.search(text) is None


def _is_strict_json(value: Any, max_depth: int) -> bool:
    # The common case (valid data) without building a path string for every node. Level by
    # level: the containers of one depth are checked together, their items where they are
    # found, and only containers go on to the next level (no recursion, no per-node tuple).
    level = [value]
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return False
        below = []
        for item in level:
            if type(item) is dict:
                for key in item:
                    if type(key) is not str or not (key.isascii() or _SURROGATE.search(key) is None):
                        return False
                subs: Any = item.values()
            else:
                subs = item
            for sub in subs:
                kind = type(sub)
                if kind is str:
                    if not sub.isascii() and _SURROGATE.search(sub) is not None:
                        return False
                elif kind is int:
                    if not -_INT_LIMIT < sub < _INT_LIMIT:
                        return False
                elif kind is bool or sub is None:
                    continue
                elif kind is float:
                    if not math.isfinite(sub):
                        return False
                elif kind is dict or kind is list:
                    below.append(sub)
                else:
                    return False
        level = below
    return True


def is_strict_json(value: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> bool:
    """True when `check_json(value, max_depth=max_depth)` passes (callers test first, and build
    the path that names the value in the error only when there is an error to report)."""
    kind = type(value)
    if kind is str:
        return value.isascii() or _SURROGATE.search(value) is None
    if kind is int:
        return bool(-_INT_LIMIT < value < _INT_LIMIT)
    if kind is bool or value is None or (kind is float and math.isfinite(value)):
        return True  # a scalar (`Session.set` of a counter, a flag): no walk
    if kind is not dict:
        return kind is list and _is_strict_json(value, max_depth)
    if max_depth < 1:
        return False
    # A dict (history entry data): its own items checked here, only nested containers walked.
    for key in value:
        if type(key) is not str or not (key.isascii() or _SURROGATE.search(key) is None):
            return False
    for sub in value.values():
        kind = type(sub)
        if kind is str:
            if not sub.isascii() and _SURROGATE.search(sub) is not None:
                return False
        elif kind is int:
            if not -_INT_LIMIT < sub < _INT_LIMIT:
                return False
        elif kind is bool or sub is None:
            continue
        elif kind is float:
            if not math.isfinite(sub):
                return False
        elif (kind is not dict and kind is not list) or not _is_strict_json(sub, max_depth - 1):
            return False
    return True


def _short(key: Any) -> str:
    """A key for an error path: its repr, cut short (a key may be huge, or a secret)."""
    text = repr(key)
    return text if len(text) <= 40 else text[:37] + "..."


def _scalar_error(item: Any, where: str) -> SerializationError | None:
    """Why the scalar `item` cannot be stored (None: it can; also None for a container)."""
    kind = type(item)
    if kind is str:
        if not _str_ok(item):
            return SerializationError(f"{where}: the string holds a lone surrogate, which UTF-8 cannot encode")
        return None
    if kind is int:
        if not -_INT_LIMIT < item < _INT_LIMIT:
            return SerializationError(
                f"{where}: an integer of more than {MAX_INT_DIGITS} digits cannot be stored; store it as a string"
            )
        return None
    if kind is float:
        if not math.isfinite(item):
            return SerializationError(f"{where}: {item!r} is not allowed in strict JSON")
        return None
    if kind is bool or item is None or kind is dict or kind is list:
        return None
    return SerializationError(
        f"{where}: {kind.__name__} is not JSON-serialisable; store only None, bool, int, "
        "finite float, str, list and dict with str keys"
    )


def check_json_key(key: Any, where: str) -> None:
    """Raise `SerializationError` unless `key` can be a key of a stored JSON object: a str
    without a lone surrogate. `where` names the object (``state``, ``preferences`` ...)."""
    if type(key) is not str:
        raise SerializationError(
            f"{where}: dict key {_short(key)} ({type(key).__name__}) is not a str; JSON objects only have string keys"
        )
    if not _str_ok(key):
        raise SerializationError(f"{where}: dict key {_short(key)} holds a lone surrogate, which UTF-8 cannot encode")


def check_json(value: Any, path: str = "value", max_depth: int = DEFAULT_MAX_DEPTH) -> None:
    """Raise `SerializationError` unless `value` is strict JSON nested at most `max_depth`
    containers deep (a scalar is depth 0); `path` names it in the message."""
    if is_strict_json(value, max_depth):
        return
    # An explicit stack instead of recursion: deep user data must not hit the recursion limit.
    stack: list[tuple[Any, str, int]] = [(value, path, 0)]
    while stack:
        item, where, depth = stack.pop()
        error = _scalar_error(item, where)
        if error is not None:
            raise error
        kind = type(item)
        if kind is not dict and kind is not list:
            continue
        if depth >= max_depth:
            if len(where) > 100:  # a path through many levels: its two ends say enough
                where = f"{where[:60]}...{where[-30:]}"
            raise SerializationError(
                f"{where}: nested deeper than max_depth={max_depth} levels of lists and dicts; flatten the value"
            )
        if kind is dict:
            for key, sub in item.items():
                check_json_key(key, where)
                stack.append((sub, f"{where}[{_short(key)}]", depth + 1))
        else:
            stack.extend((sub, f"{where}[{i}]", depth + 1) for i, sub in enumerate(item))


def check_max_depth(max_depth: int) -> int:
    """Validate a `max_depth` option (an int from 1 to `MAX_DEPTH_LIMIT`; raises `ValueError`)."""
    if type(max_depth) is not int or not 1 <= max_depth <= MAX_DEPTH_LIMIT:
        raise ValueError(f"max_depth must be an int from 1 to {MAX_DEPTH_LIMIT}, got {max_depth!r}")
    return max_depth


#: Upper bound on the encoded size of a float (``repr``: at most 24 characters) and of
#: ``true``/``false``/``null``.
FLOAT_SIZE = 24
_WORD_SIZE = 5


def _leaf_size(item: Any) -> int | None:
    """Upper bound on the encoded size of a JSON scalar; None if it is not one (or cannot be
    stored: a lone surrogate, a non-finite float, an integer of too many digits)."""
    kind = type(item)
    if kind is str:
        # At most 6 bytes per character (``\u001f`` escapes; UTF-8 needs at most 4), plus
        # quotes. A lone surrogate cannot be encoded as UTF-8: no bound (encoding says why).
        if not item.isascii() and _SURROGATE.search(item) is not None:
            return None
        return 6 * len(item) + 2
    if kind is int:
        if not -_INT_LIMIT < item < _INT_LIMIT:
            return None
        return int(item.bit_length()) // 3 + 2  # digits <= bits * log10(2) + 1, plus a sign
    if kind is float:
        return FLOAT_SIZE if math.isfinite(item) else None
    if kind is bool or item is None:
        return _WORD_SIZE
    return None


def json_size_bound(value: Any, max_depth: int = DEFAULT_MAX_DEPTH) -> int | None:
    """An upper bound on the size of `value` encoded as compact UTF-8 JSON (as `JsonCodec`
    does), or None if it is not strict JSON, cannot be encoded, or nests deeper than
    `max_depth` (then `check_json` says what is wrong).

    One walk, no encoding: a caller well under a size limit need not encode to check it. A
    bound is also a proof: `check_json(value, max_depth=max_depth)` passes.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return _leaf_size(value)
    return _container_bound(value, 0, max_depth)


def _container_bound(value: Any, depth: int, max_depth: int) -> int | None:
    """`json_size_bound` of a dict or list found at nesting `depth` (0: the root), None when
    it (or a container in it) is nested deeper than `max_depth`."""
    size = 0
    stack = [(value, depth)]
    while stack:
        item, depth = stack.pop()
        if depth >= max_depth:
            return None
        if type(item) is dict:
            size += 2 + 2 * len(item)  # braces, and per item a colon and a comma
            subs: Any = item.values()
            for key in item:
                if type(key) is not str or (not key.isascii() and _leaf_size(key) is None):
                    return None
                size += 6 * len(key) + 2
        else:
            size += 2 + len(item)  # brackets and commas
            subs = item
        for sub in subs:
            kind = type(sub)
            if kind is str and sub.isascii():
                size += 6 * len(sub) + 2
            elif kind is dict or kind is list:
                stack.append((sub, depth + 1))
            else:
                leaf = _leaf_size(sub)
                if leaf is None:
                    return None
                size += leaf
    return size


def clone_with_bound(
    value: dict[str, Any], max_depth: int = DEFAULT_MAX_DEPTH
) -> tuple[dict[str, Any], int, tuple[str, ...] | None] | None:
    """`(json_clone(value), json_size_bound(value, max_depth), clone_hint(value))` for a dict,
    in one walk of its first two levels (deeper containers, rare in history entries, are walked
    as those functions do); None exactly when `json_size_bound(value, max_depth)` is None (not
    strict JSON, not encodable, too deep: the caller then checks, which says what is wrong)."""
    if max_depth < 2:
        return None  # too shallow for the inline walk of two levels; the caller checks
    out = value.copy()
    # Braces, per item a colon, a comma and a key's quotes; the keys' text is counted below.
    size = 2 + 4 * len(value)
    hint: list[str] | None = []
    for key, item in value.items():
        if type(key) is not str:
            return None
        kind = type(item)
        if kind is str:
            if not item.isascii() and _leaf_size(item) is None:
                return None
            size += 6 * len(item) + 2
        elif kind is dict:
            inner = item.copy()
            size += 2 + 4 * len(item)
            flat = True
            for sub_key, sub in item.items():
                if type(sub_key) is not str:
                    return None
                sub_kind = type(sub)
                if sub_kind is str:
                    if not sub.isascii() and _leaf_size(sub) is None:
                        return None
                    size += 6 * len(sub) + 2
                elif sub_kind is int:
                    if not -_INT_LIMIT < sub < _INT_LIMIT:
                        return None
                    size += sub.bit_length() // 3 + 2
                elif sub_kind is dict or sub_kind is list:
                    flat = False
                    bound = _container_bound(sub, 2, max_depth)
                    if bound is None:
                        return None
                    size += bound
                    inner[sub_key] = json_clone(sub)
                else:
                    bound = _leaf_size(sub)
                    if bound is None:
                        return None
                    size += bound
            # The keys (all str, checked above) at once: their size, and whether UTF-8 can encode them.
            keys = "".join(item)
            if not keys.isascii() and any(_leaf_size(k) is None for k in item):
                return None
            size += 6 * len(keys)
            out[key] = inner
            if not flat:
                hint = None
            elif hint is not None:
                hint.append(key)
        elif kind is float:
            if not math.isfinite(item):
                return None
            size += FLOAT_SIZE
        elif kind is list:
            bound = _container_bound(item, 1, max_depth)
            if bound is None:
                return None
            size += bound
            out[key] = json_clone(item)
            hint = None
        else:
            bound = _leaf_size(item)
            if bound is None:
                return None
            size += bound
    keys = "".join(value)
    if not keys.isascii() and any(_leaf_size(k) is None for k in value):
        return None  # a key that cannot be encoded as UTF-8 (a lone surrogate)
    return out, size + 6 * len(keys), None if hint is None else tuple(hint)


def json_clone(value: Any) -> Any:
    """A deep copy of a JSON value (much cheaper than `copy.deepcopy` for this shape).

    Containers are copied (`dict` and `list` exactly); everything else, immutable in valid
    JSON, is shared. Iterative: any depth, from any stack.
    """
    kind = type(value)
    if kind is dict:
        out = value.copy()
        stack: list[Any] | None = None
        for key, item in value.items():
            kind = type(item)
            if kind is dict:
                # One level inline: dicts of dicts of scalars (history entries) are the usual shape.
                inner = item.copy()
                for sub_key, sub in item.items():
                    if type(sub) is dict or type(sub) is list:
                        inner[sub_key] = copied = sub.copy()
                        if stack is None:
                            stack = [copied]
                        else:
                            stack.append(copied)
                out[key] = inner
            elif kind is list:
                out[key] = copied = item.copy()
                if stack is None:
                    stack = [copied]
                else:
                    stack.append(copied)
        if stack is not None:
            _clone_below(stack)
        return out
    if kind is list:
        out_list = value.copy()
        _clone_below([out_list])
        return out_list
    return value


def _clone_below(stack: list[Any]) -> None:
    """Replace, in each fresh container on `stack` and below it, every nested container by a
    copy (the containers on the stack are copies already; their items still are the source's)."""
    while stack:
        node = stack.pop()
        if type(node) is dict:
            # Replacing the value of an existing key does not disturb the iteration.
            for key, item in node.items():
                if type(item) is dict or type(item) is list:
                    node[key] = copied = item.copy()
                    stack.append(copied)
        else:
            for i, item in enumerate(node):
                if type(item) is dict or type(item) is list:
                    node[i] = copied = item.copy()
                    stack.append(copied)


def clone_hint(value: dict[str, Any]) -> tuple[str, ...] | None:
    """For a dict of JSON values: the keys whose values are dicts of scalars, if every other
    value is a scalar (the usual history entry), else None. `clone_with_hint` uses it to copy
    such a dict without walking it again."""
    keys = []
    for key, item in value.items():
        kind = type(item)
        if kind is dict:
            for sub in item.values():
                if type(sub) is dict or type(sub) is list:
                    return None
            keys.append(key)
        elif kind is list:
            return None
    return tuple(keys)


def clone_with_hint(value: dict[str, Any], hint: tuple[str, ...] | None) -> dict[str, Any]:
    """`json_clone(value)`, faster with `clone_hint(value)` (computed while `value` had the
    same shape; None: unknown)."""
    if hint is None:
        out: dict[str, Any] = json_clone(value)
        return out
    out = value.copy()
    for key in hint:
        out[key] = value[key].copy()
    return out


@runtime_checkable
class Codec(Protocol):
    """Turns a JSON object into bytes and back. Wrappers (encryption) compose around `JsonCodec`."""

    def encode(self, obj: Any) -> bytes:
        """Encode a JSON value; raise `SerializationError` if it is not strict JSON."""
        ...

    def decode(self, data: bytes) -> Any:
        """Decode bytes produced by `encode`; raise `SerializationError` if they are corrupt."""
        ...


class JsonCodec:
    """Compact UTF-8 JSON, `allow_nan=False`; validates with `check_json` unless told it is done."""

    def __init__(self, *, validate: bool = True) -> None:
        self._validate = validate

    def encode(self, obj: Any) -> bytes:
        if self._validate:
            check_json(obj, "record")
        return self.encode_checked(obj)

    def encode_checked(self, obj: Any) -> bytes:
        """Encode `obj`, which the caller has checked with `check_json` (no second walk)."""
        try:
            return _dumps_checked(obj).encode()
        except (TypeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot encode record: {exc}") from exc

    def decode(self, data: bytes) -> Any:
        try:
            text = data if isinstance(data, str) else bytes(data).decode("utf-8")
            # Fast path: `raw_decode` skips `json.loads`'s encoding detection and whitespace
            # handling (history windows decode many small entries per read). Anything unusual,
            # including an invalid document, goes through `json.loads`, which decides and reports.
            try:
                value, end = _DECODER.raw_decode(text)
            except ValueError:
                return json.loads(text)
            return value if end == len(text) else json.loads(text)
        except (UnicodeDecodeError, ValueError) as exc:
            raise SerializationError(f"stored record is not valid JSON: {exc}") from exc
        except RecursionError as exc:
            # The C decoder recurses once per level: too deep for what is left of the stack.
            raise SerializationError("stored record nests too deep to decode") from exc

    def decode_bounded(self, data: bytes, max_depth: int) -> Any:
        """`decode`, refusing (`SerializationError`) a value nested deeper than `max_depth`.

        The parser's own recursion is bounded (a `RecursionError` becomes the same error); the
        decoded value is measured only when the text has more brackets than `max_depth` (a
        count in C: the usual record is settled without a walk)."""
        value = self.decode(data)
        kind = type(value)
        if (kind is dict or kind is list) and _brackets(data) > max_depth and nests_deeper(value, max_depth):
            raise SerializationError(
                f"stored record nests deeper than max_depth={max_depth} levels of lists and dicts: it is corrupt"
            )
        return value


class FernetCodec:
    """Encryption at rest: wraps another codec with `cryptography`'s Fernet (AES-128-CBC + HMAC).

    Pass one key, or several to rotate (the first encrypts; all are tried to decrypt).
    Requires the `crypto` extra: ``pip install agent-sessions[crypto]``.
    """

    def __init__(self, keys: str | bytes | list[str | bytes], inner: Codec | None = None) -> None:
        try:
            from cryptography.fernet import Fernet, MultiFernet
        except ImportError as exc:  # pragma: no cover - exercised only without the extra
            raise ImportError(
                "FernetCodec needs the 'cryptography' package: pip install agent-sessions[crypto]"
            ) from exc
        key_list = keys if isinstance(keys, list) else [keys]
        if not key_list:
            raise ValueError("FernetCodec needs at least one key")
        self._fernet = MultiFernet([Fernet(k) for k in key_list])
        self._inner: Codec = inner if inner is not None else JsonCodec()

    def encode(self, obj: Any) -> bytes:
        return self._fernet.encrypt(self._inner.encode(obj))

    def encode_checked(self, obj: Any) -> bytes:
        """`encode` for a value already checked with `check_json` (see `encode_checked`)."""
        return self._fernet.encrypt(encode_checked(self._inner, obj))

    def decode(self, data: bytes) -> Any:
        from cryptography.fernet import InvalidToken

        try:
            plain = self._fernet.decrypt(data)
        except InvalidToken as exc:
            raise SerializationError("stored record cannot be decrypted with the configured keys") from exc
        return self._inner.decode(plain)

    def decode_bounded(self, data: bytes, max_depth: int) -> Any:
        """`decode`, refusing a document nested deeper than `max_depth` (see `decode_bounded`)."""
        from cryptography.fernet import InvalidToken

        try:
            plain = self._fernet.decrypt(data)
        except InvalidToken as exc:
            raise SerializationError("stored record cannot be decrypted with the configured keys") from exc
        return decode_bounded(self._inner, plain, max_depth)


def encode_checked(codec: Codec, obj: Any) -> bytes:
    """`codec.encode(obj)` for a value already checked with `check_json`: codecs that can skip
    their own strict-JSON walk (`JsonCodec`, `FernetCodec`) do; any other codec encodes as usual."""
    fast = getattr(codec, "encode_checked", None)
    if fast is None:
        return codec.encode(obj)
    data: bytes = fast(obj)
    return data


def _brackets(data: bytes | str) -> int:
    """How many lists and dicts JSON text opens at most (an upper bound on its depth)."""
    if isinstance(data, str):
        return data.count("[") + data.count("{")
    return data.count(b"[") + data.count(b"{")


def nests_deeper(value: Any, max_depth: int) -> bool:
    """True when lists and dicts nest deeper than `max_depth` in the JSON value `value`
    (level by level, containers only: no recursion, nothing else checked)."""
    level = [value] if type(value) is dict or type(value) is list else []
    depth = 0
    while level:
        depth += 1
        if depth > max_depth:
            return True
        below = []
        for item in level:
            for sub in item.values() if type(item) is dict else item:
                if type(sub) is dict or type(sub) is list:
                    below.append(sub)
        level = below
    return False


def decode_bounded(codec: Codec, data: bytes, max_depth: int) -> Any:
    """`codec.decode(data)`, refusing with `SerializationError` a value nested deeper than
    `max_depth`: codecs that can check the text first (`JsonCodec`, `FernetCodec`) do; for any
    other codec the decoded value is checked (and a `RecursionError` becomes the same error)."""
    fast = getattr(codec, "decode_bounded", None)
    if fast is not None:
        return fast(data, max_depth)
    try:
        value = codec.decode(data)
    except RecursionError as exc:
        raise SerializationError("stored record nests too deep to decode") from exc
    if not is_strict_json(value, max_depth):
        check_json(value, "stored record", max_depth)
    return value
