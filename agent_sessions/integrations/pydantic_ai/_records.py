"""How conversation records and entries are encoded, shared by the SQL and Redis backends."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import TypeAdapter, ValidationError
from pydantic_ai.conversation_store import ConversationEntry, ConversationRecord
from pydantic_ai.messages import ModelMessagesTypeAdapter

from ...errors import SerializationError

__all__ = [
    "MAX_ID_LENGTH",
    "check_id",
    "check_write",
    "decode_entry",
    "decode_record",
    "encode_message",
    "encode_record",
]

#: The longest conversation, entry or revision id (the SQL columns are ``VARCHAR(255)``).
MAX_ID_LENGTH = 255

_RECORD: TypeAdapter[ConversationRecord] = TypeAdapter(ConversationRecord)


def check_id(value: object, what: str) -> str:
    """`value` if every backend can store it as an id, else `SerializationError`, before any I/O:
    a str of 1-255 characters, without NUL (PostgreSQL text cannot hold it) and encodable as
    UTF-8 (no lone surrogates)."""
    if not isinstance(value, str):
        raise SerializationError(f"{what} must be a str, got {type(value).__name__}")
    if not 0 < len(value) <= MAX_ID_LENGTH:
        raise SerializationError(f"{what} must be 1-{MAX_ID_LENGTH} characters, got {len(value)}")
    _check_text(value, what)
    return value


def _check_text(value: str, what: str) -> None:
    if "\x00" in value:
        raise SerializationError(f"{what} must not contain NUL")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise SerializationError(f"{what} is not valid text (a lone surrogate at {exc.start})") from exc


def check_write(
    record: ConversationRecord, new_entries: Sequence[ConversationEntry], expected_revision: str | None
) -> None:
    """Check every id (and the scope) a `write_record` call carries, before any I/O."""
    check_id(record.conversation_id, "conversation id")
    check_id(record.revision, "revision")
    if expected_revision is not None:
        check_id(expected_revision, "expected revision")
    if record.head_id is not None:
        check_id(record.head_id, "head id")
    if record.scope is not None:
        _check_text(record.scope, "scope")
    for entry in new_entries:
        check_id(entry.id, "entry id")
        if entry.parent_id is not None:
            check_id(entry.parent_id, "parent entry id")


def encode_record(record: ConversationRecord) -> str:
    """The record as JSON text."""
    return _RECORD.dump_json(record).decode()


def decode_record(data: str | bytes) -> ConversationRecord:
    """A record from `encode_record`'s JSON; `SerializationError` if it is corrupt."""
    try:
        return _RECORD.validate_json(data)
    except ValidationError as exc:
        raise SerializationError(f"stored conversation record is invalid: {exc.error_count()} errors") from exc


def encode_message(entry: ConversationEntry) -> str:
    """The entry's message as JSON text (through `ModelMessagesTypeAdapter`, bytes as base64)."""
    return ModelMessagesTypeAdapter.dump_json([entry.message]).decode()


def decode_entry(entry_id: str, parent_id: str | None, message: str | bytes) -> ConversationEntry:
    """An entry from its columns; `SerializationError` if the message is corrupt."""
    try:
        messages = ModelMessagesTypeAdapter.validate_json(message)
    except ValidationError as exc:
        raise SerializationError(f"stored conversation entry is invalid: {exc.error_count()} errors") from exc
    if len(messages) != 1:
        raise SerializationError("stored conversation entry does not hold exactly one message")
    return ConversationEntry(id=entry_id, parent_id=parent_id, message=messages[0])
