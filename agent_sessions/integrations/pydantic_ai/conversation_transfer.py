"""Exporting one user's conversations as JSON-safe items and importing them back: the
`ExportableDataHolder` side of the SQL and Redis conversation stores, over the public
primitives of a pydantic-ai `ConversationStore` (`read_record(s)`, `read_history`,
`write_record`, `delete_record`) plus the one thing a backend answers in bulk: which entry ids
it has already.

An item is ``{"record": <the ConversationRecord's JSON>, "entries": [entry, ...]}``: every
entry the record reaches (its history from `head_id`, each of its `branches` and its
`forked_at`), each once, parents before children, as ``{"id", "parent_id", "kind",
"message"}`` with the message in pydantic-ai's `ModelMessagesTypeAdapter` JSON (bytes as
base64): the encoding both backends store, so an item decodes back to equal records and entries.

Import inserts the record with its own revision and the entries the store does not have yet
(entries are shared by forks: one a fork already brought is not written twice). For a
conversation id the store already has, the import's policy decides: ``"skip"`` keeps it,
``"overwrite"`` replaces it (deleted, then inserted), ``"newer"`` replaces it only if the
incoming record was saved later (`updated_at`; conversations have no version), ``"error"`` raises
`SessionConflict`. A conversation is written in one atomic `write_record`: all of it or nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)

from ...errors import SerializationError, SessionConflict
from ...ids import id_hash
from ...lifecycle import ImportedItems
from ._records import check_write, decode_entry, decode_record, encode_message, encode_record
from .turn import conversation_id_for

__all__ = ["KnownEntries", "export_conversations", "import_conversations"]

logger = logging.getLogger(__name__)

#: Which of these entry ids the store holds already (one bulk read per backend).
KnownEntries = Callable[[Collection[str]], Awaitable[set[str]]]

#: Attempts at writing one conversation while others change it under the import.
_ATTEMPTS = 5
_POLICIES = ("skip", "overwrite", "newer", "error")


async def user_records(store: ConversationStore, user_id: str, session_ids: Sequence[str]) -> list[ConversationRecord]:
    """The conversations `erase_sessions(user_id, session_ids)` removes: scoped to the user, or
    with a session's `conversation_id_for` id; oldest save first."""
    found = {record.conversation_id: record for record in await store.read_records(scope=user_id)}
    for sid in session_ids:
        cid = conversation_id_for(sid)
        if cid not in found:
            record = await store.read_record(cid)
            if record is not None:
                found[cid] = record
    return sorted(found.values(), key=lambda r: (r.updated_at, r.conversation_id))


async def _entries(store: ConversationStore, record: ConversationRecord) -> list[ConversationEntry] | None:
    """Every entry `record` reaches, each once, parents first; None if its head has gone (it
    was changed or deleted meanwhile)."""
    tips = [record.head_id, *record.branches, record.forked_at]
    seen: dict[str, ConversationEntry] = {}
    for i, tip in enumerate(tips):
        if tip is None or tip in seen:
            continue
        try:
            chain = await store.read_history(tip)
        except KeyError:
            if i == 0:
                return None
            continue  # a branch the store no longer has: the copy lacks it just the same
        for entry in chain:
            seen.setdefault(entry.id, entry)
    return list(seen.values())


def encode_item(record: ConversationRecord, entries: Sequence[ConversationEntry]) -> dict[str, Any]:
    """One export item: the record and its entries, JSON-safe."""
    return {
        "record": json.loads(encode_record(record)),
        "entries": [
            {
                "id": entry.id,
                "parent_id": entry.parent_id,
                "kind": entry.kind,
                "message": json.loads(encode_message(entry))[0],
            }
            for entry in entries
        ],
    }


def decode_item(item: dict[str, Any]) -> tuple[ConversationRecord, list[ConversationEntry]]:
    """The record and entries of an export item; `SerializationError` if it is not one."""
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("record"), dict)
        or not isinstance(item.get("entries"), list)
    ):
        raise SerializationError("a conversation item needs a 'record' object and an 'entries' list")
    record = decode_record(json.dumps(item["record"]))
    entries: list[ConversationEntry] = []
    for raw in item["entries"]:
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("id"), str)
            or not isinstance(raw.get("parent_id"), str | None)
            or raw.get("kind", "message") != "message"
            or "message" not in raw
        ):
            raise SerializationError("a conversation entry needs an 'id', a 'parent_id' and a 'message'")
        entries.append(decode_entry(raw["id"], raw["parent_id"], json.dumps([raw["message"]])))
    check_write(record, entries, None)
    ids = {entry.id for entry in entries}
    if len(ids) != len(entries):
        raise SerializationError("a conversation item lists an entry twice")
    return record, entries


async def export_conversations(
    store: ConversationStore, user_id: str, session_ids: Sequence[str]
) -> AsyncIterator[dict[str, Any]]:
    """One item per conversation of the user (see `user_records`), with its entries."""
    for record in await user_records(store, user_id, session_ids):
        current: ConversationRecord | None = record
        for _ in range(_ATTEMPTS):
            assert current is not None
            entries = await _entries(store, current)
            if entries is not None:
                yield encode_item(current, entries)
                break
            current = await store.read_record(current.conversation_id)  # saved or deleted meanwhile
            if current is None:
                break
        else:
            raise ConversationConflict(record.conversation_id)


def _replace(incoming: ConversationRecord, existing: ConversationRecord, on_conflict: str) -> bool:
    if on_conflict == "error":
        raise SessionConflict(
            f"conversation {id_hash(incoming.conversation_id)} already exists in the destination "
            "(on_conflict='error'); use 'skip', 'newer' or 'overwrite'"
        )
    if on_conflict == "skip":
        return False
    return on_conflict == "overwrite" or incoming.updated_at > existing.updated_at


async def _import_one(
    store: ConversationStore, known: KnownEntries, item: dict[str, Any], on_conflict: str, dry_run: bool
) -> str:
    record, entries = decode_item(item)
    cid = record.conversation_id
    replacing = False
    for _ in range(_ATTEMPTS):
        existing = await store.read_record(cid)
        if existing is not None:
            if not _replace(record, existing, on_conflict):
                return "skipped"
            if dry_run:
                return "replaced"
            try:
                await store.delete_record(cid, expected_revision=existing.revision)
            except ConversationConflict:
                continue  # saved meanwhile: look again
            replacing = True
        elif dry_run:
            return "imported"
        # After a delete: the entries only the deleted copy used are gone too.
        have = await known([entry.id for entry in entries])
        try:
            await store.write_record(
                record, new_entries=[entry for entry in entries if entry.id not in have], expected_revision=None
            )
        except ConversationConflict:
            continue  # created, or its entries written, meanwhile: look again
        return "replaced" if replacing else "imported"
    raise ConversationConflict(cid)


async def import_conversations(
    store: ConversationStore,
    known: KnownEntries,
    items: Sequence[dict[str, Any]],
    on_conflict: str,
    *,
    dry_run: bool = False,
) -> ImportedItems:
    """Write export items back into `store` under `on_conflict` (see the module docstring)."""
    if on_conflict not in _POLICIES:
        raise ValueError(f"on_conflict must be one of {', '.join(_POLICIES)}; got {on_conflict!r}")
    done = ImportedItems()
    for item in items:
        outcome = await _import_one(store, known, item, on_conflict, dry_run)
        if outcome == "imported":
            done.imported += 1
        elif outcome == "replaced":
            done.replaced += 1
        else:
            done.skipped += 1
    logger.debug("imported conversations: %s", done)
    return done
