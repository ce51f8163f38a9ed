"""Strict JSON encoding of records, and an optional encryption wrapper.

Only JSON types are accepted: `None`, `bool`, `int`, finite `float`, `str`, `list` and `dict`
with `str` keys. Anything else (datetime, set, tuple, bytes, NaN, non-string keys) raises
`SerializationError` naming the path of the offending value, before anything is written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring  # type: ignore[attr-defined]
from typing import Any, Protocol, runtime_checkable

from .errors import SerializationError

__all__ = [
    "Codec",
    "FernetCodec",
    "JsonCodec",
    "check_json",
    "clone_with_bound",
    "encode_checked",
    "is_strict_json",
    "json_clone",
    "json_size_bound",
]

JSON_SCALARS = (str, int, bool, type(None))
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


def _is_strict_json(value: Any) -> bool:
    # The common case (valid data) without building a path string for every node. The items of
    # a container are checked where they are found; only containers go on the stack.
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            subs: Any = item.values()
        elif kind is list:
            subs = item
        else:
            if kind is str or kind is int or kind is bool or item is None:
                continue
            if kind is float and math.isfinite(item):
                continue
            return False
        for sub in subs:
            kind = type(sub)
            if kind is str or kind is int or kind is bool or sub is None:
                continue
            if kind is float:
                if not math.isfinite(sub):
                    return False
            elif kind is dict or kind is list:
                stack.append(sub)
            else:
                return False
    return True


def is_strict_json(value: Any) -> bool:
    """True when `check_json(value)` passes (callers test first, and build the path that names
    the value in the error only when there is an error to report)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None or (kind is float and math.isfinite(value)):
        return True  # a scalar (`Session.set` of a counter, a flag): no walk
    if kind is not dict:
        return _is_strict_json(value)
    # A dict (history entry data): its own items checked here, only nested containers walked.
    for key in value:
        if type(key) is not str:
            return False
    for sub in value.values():
        kind = type(sub)
        if kind is str or kind is int or kind is bool or sub is None:
            continue
        if kind is float:
            if not math.isfinite(sub):
                return False
        elif (kind is not dict and kind is not list) or not _is_strict_json(sub):
            return False
    return True


def check_json(value: Any, path: str = "value") -> None:
    """Raise `SerializationError` unless `value` is strict JSON; `path` names it in the message."""
    if is_strict_json(value):
        return
    # An explicit stack instead of recursion: deep user data must not hit the recursion limit.
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        item, where = stack.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            if not math.isfinite(item):
                raise SerializationError(f"{where}: {item!r} is not allowed in strict JSON")
            continue
        if kind is dict:
            for key, sub in item.items():
                if type(key) is not str:
                    raise SerializationError(
                        f"{where}: dict key {key!r} ({type(key).__name__}) is not a str; "
                        "JSON objects only have string keys"
                    )
                stack.append((sub, f"{where}[{key!r}]"))
            continue
        if kind is list:
            stack.extend((sub, f"{where}[{i}]") for i, sub in enumerate(item))
            continue
        raise SerializationError(
            f"{where}: {kind.__name__} is not JSON-serialisable; store only None, bool, int, "
            "finite float, str, list and dict with str keys"
        )


#: Containers nested deeper than this get no size bound (the caller encodes them to know).
MAX_BOUND_DEPTH = 100
#: Upper bound on the encoded size of a float (``repr``: at most 24 characters) and of
#: ``true``/``false``/``null``.
FLOAT_SIZE = 24
_WORD_SIZE = 5


def _leaf_size(item: Any) -> int | None:
    """Upper bound on the encoded size of a JSON scalar; None if it is not one."""
    kind = type(item)
    if kind is str:
        # At most 6 bytes per character (``\u001f`` escapes; UTF-8 needs at most 4), plus
        # quotes. A lone surrogate cannot be encoded as UTF-8: no bound (encoding says why).
        if not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                return None
        return 6 * len(item) + 2
    if kind is int:
        return int(item.bit_length()) // 3 + 2  # digits <= bits * log10(2) + 1, plus a sign
    if kind is float:
        return FLOAT_SIZE if math.isfinite(item) else None
    if kind is bool or item is None:
        return _WORD_SIZE
    return None


def json_size_bound(value: Any) -> int | None:
    """An upper bound on the size of `value` encoded as compact UTF-8 JSON (as `JsonCodec`
    does), or None if it is not strict JSON, cannot be encoded, or nests deeper than
    `MAX_BOUND_DEPTH` (then `check_json` and encoding tell what is wrong, or the exact size).

    One walk, no encoding: a caller well under a size limit need not encode to check it.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        return _leaf_size(value)
    return _container_bound(value, 0)


def _container_bound(value: Any, depth: int) -> int | None:
    """`json_size_bound` of a dict or list found at nesting `depth` (0: the root)."""
    size = 0
    stack = [(value, depth)]
    while stack:
        item, depth = stack.pop()
        if depth >= MAX_BOUND_DEPTH:
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


def clone_with_bound(value: dict[str, Any]) -> tuple[dict[str, Any], int, tuple[str, ...] | None] | None:
    """`(json_clone(value), json_size_bound(value), clone_hint(value))` for a dict, in one walk
    of its first two levels (deeper containers, rare in history entries, are walked as those
    functions do); None exactly when `json_size_bound(value)` is None (not strict JSON, not
    encodable, too deep: the caller then checks and encodes, which says what is wrong)."""
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
                    size += sub.bit_length() // 3 + 2
                elif sub_kind is dict or sub_kind is list:
                    flat = False
                    bound = _container_bound(sub, 2)
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
            bound = _container_bound(item, 1)
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
    JSON, is shared.
    """
    kind = type(value)
    if kind is dict:
        out = value.copy()
        for key, item in value.items():
            kind = type(item)
            if kind is dict:
                # One level inline: dicts of dicts of scalars (history entries) are the usual shape.
                inner = item.copy()
                for sub_key, sub in item.items():
                    if type(sub) is dict or type(sub) is list:
                        inner[sub_key] = json_clone(sub)
                out[key] = inner
            elif kind is list:
                out[key] = json_clone(item)
        return out
    if kind is list:
        return [json_clone(item) if type(item) is dict or type(item) is list else item for item in value]
    return value


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


def encode_checked(codec: Codec, obj: Any) -> bytes:
    """`codec.encode(obj)` for a value already checked with `check_json`: codecs that can skip
    their own strict-JSON walk (`JsonCodec`, `FernetCodec`) do; any other codec encodes as usual."""
    fast = getattr(codec, "encode_checked", None)
    if fast is None:
        return codec.encode(obj)
    data: bytes = fast(obj)
    return data
