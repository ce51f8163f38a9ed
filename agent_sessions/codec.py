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

__all__ = ["Codec", "FernetCodec", "JsonCodec", "check_json", "encode_checked", "json_clone"]

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
    # The common case (valid data) without building a path string for every node.
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str or kind is int or kind is bool or item is None:
            continue
        if kind is float:
            if not math.isfinite(item):
                return False
            continue
        if kind is dict:
            for key in item:
                if type(key) is not str:
                    return False
            stack.extend(item.values())
            continue
        if kind is list:
            stack.extend(item)
            continue
        return False
    return True


def check_json(value: Any, path: str = "value") -> None:
    """Raise `SerializationError` unless `value` is strict JSON; `path` names it in the message."""
    if _is_strict_json(value):
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
            if kind is dict or kind is list:
                out[key] = json_clone(item)
        return out
    if kind is list:
        return [json_clone(item) if type(item) is dict or type(item) is list else item for item in value]
    return value


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
