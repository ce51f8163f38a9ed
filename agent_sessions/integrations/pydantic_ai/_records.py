"""How conversation records and entries are encoded, shared by the SQL and Redis backends."""

from __future__ import annotations

from pydantic import TypeAdapter, ValidationError
from pydantic_ai.conversation_store import ConversationEntry, ConversationRecord
from pydantic_ai.messages import ModelMessagesTypeAdapter

from ...errors import SerializationError

__all__ = ["decode_entry", "decode_record", "encode_message", "encode_record"]

_RECORD: TypeAdapter[ConversationRecord] = TypeAdapter(ConversationRecord)


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
