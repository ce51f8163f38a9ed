"""Exporting conversations as JSON-safe items (one user's, or every one a store keeps: pages
of records from the backend) and importing them back: the `ExportableDataHolder` and
`FullyExportableDataHolder` side of the SQL and Redis conversation stores, over the public
primitives of a pydantic-ai `ConversationStore` (`read_record(s)`, `read_history`,
`write_record`, `delete_record`) plus the one thing a backend answers in bulk: which entry ids
it has already.

An item is ``{"record": <the ConversationRecord's JSON>, "entries": [entry, ...]}``: every
entry the record reaches (its history from `head_id`, each of its `branches` and its
`forked_at`), each once, parents before children, as ``{"id", "parent_id", "kind",
"message"}`` with the message in pydantic-ai's `ModelMessagesTypeAdapter` JSON (bytes as
base64): the encoding both backends store, so an item decodes back to equal records and entries.

An item is checked whole before anything is written (`decode_item`): entries parents first
with no gap, its head, branch tips and `forked_at` among them, every entry reached,
`updated_at` timezone-aware; else `InvalidExportItem`. Import inserts the record with its own
revision and the entries the store does not have yet (entries are shared by forks: one a fork
already brought is not written twice, and must be that same entry, else `InvalidExportItem`).
For a conversation id the store already has, the import's policy decides: ``"skip"`` keeps it,
``"overwrite"`` replaces it, ``"newer"`` replaces it only if the incoming record was saved later
(`updated_at`; conversations have no version), ``"error"`` raises `SessionConflict`. A
conversation is written in one atomic `write_record` (a replace: over the existing revision):
all of it or nothing. One that keeps changing under the import raises `SessionConflict`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from typing import Any

from pydantic import ValidationError
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)

from ...errors import InvalidExportItem, SerializationError, SessionConflict
from ...ids import id_hash
from ...lifecycle import ImportedItems
from ._records import check_write, decode_entry, decode_record, encode_message, encode_record
from .turn import conversation_id_for

__all__ = [
    "KnownEntries",
    "export_all_conversations",
    "export_conversations",
    "export_record",
    "import_conversations",
]

logger = logging.getLogger(__name__)

#: The entries with these ids the store holds already, by id (one bulk read per backend).
KnownEntries = Callable[[Collection[str]], Awaitable[dict[str, ConversationEntry]]]

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


def _broken(record: ConversationRecord, missing: str) -> SerializationError:
    return SerializationError(
        f"conversation {id_hash(record.conversation_id)} in the store is broken: an entry its history "
        f"reaches ({id_hash(missing)}) is missing"
    )


async def _entries(
    store: ConversationStore, record: ConversationRecord
) -> tuple[ConversationRecord, list[ConversationEntry]] | None:
    """Every entry `record` reaches, each once, parents first, and the record as exported: a
    branch tip or `forked_at` the store no longer has is left out of it (logged at debug). None
    if its head has gone (changed or deleted meanwhile: read it again); `SerializationError`
    if an entry below a tip is missing (the chain is broken)."""
    seen: dict[str, ConversationEntry] = {}
    cid = record.conversation_id

    async def reach(tip: str) -> bool:
        if tip in seen:
            return True
        try:
            chain = await store.read_history(tip)
        except KeyError as exc:
            if exc.args and exc.args[0] != tip:
                raise _broken(record, str(exc.args[0])) from None
            return False
        for entry in chain:
            seen.setdefault(entry.id, entry)
        return True

    if record.head_id is not None and not await reach(record.head_id):
        return None
    branches = []
    for tip in record.branches:
        if await reach(tip):
            branches.append(tip)
        else:
            logger.debug("export of conversation %s: a branch tip is no longer stored", id_hash(cid))
    forked_at = record.forked_at
    if forked_at is not None and not await reach(forked_at):
        logger.debug("export of conversation %s: its forked_at entry is no longer stored", id_hash(cid))
        forked_at = None
    if branches != record.branches or forked_at != record.forked_at:
        record = dataclasses.replace(record, branches=branches, forked_at=forked_at)
    return record, list(seen.values())


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


def _invalid(message: str) -> InvalidExportItem:
    return InvalidExportItem(f"a conversation item {message}")


def _why(exc: SerializationError) -> str:
    """What pydantic found wrong first (``updated_at: Input should be ...``), else the message."""
    cause = exc.__cause__
    if isinstance(cause, ValidationError) and cause.errors():
        first = cause.errors()[0]
        return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg']}"
    return str(exc)


def decode_item(item: dict[str, Any]) -> tuple[ConversationRecord, list[ConversationEntry]]:
    """The record and entries of an export item; `InvalidExportItem` (a `SerializationError`)
    if it is not one `export_conversations` could have written: every entry's parent is null or
    an earlier entry of the item (parents first, no gap), the head, each branch tip and
    `forked_at` are entries of the item, every entry is reached from one of them, and
    `updated_at` is timezone-aware."""
    if (
        not isinstance(item, dict)
        or not isinstance(item.get("record"), dict)
        or not isinstance(item.get("entries"), list)
    ):
        raise _invalid("needs a 'record' object and an 'entries' list")
    try:
        record = decode_record(json.dumps(item["record"]))
    except SerializationError as exc:
        raise _invalid(f"has an invalid record ({_why(exc)})") from exc
    if record.updated_at.tzinfo is None or record.updated_at.utcoffset() is None:
        raise _invalid("has an 'updated_at' without a timezone")
    entries: list[ConversationEntry] = []
    parents: dict[str, str | None] = {}
    for n, raw in enumerate(item["entries"], 1):
        if (
            not isinstance(raw, dict)
            or not isinstance(raw.get("id"), str)
            or not isinstance(raw.get("parent_id"), str | None)
            or raw.get("kind", "message") != "message"
            or "message" not in raw
        ):
            raise _invalid(f"entry {n} needs an 'id', a 'parent_id' and a 'message'")
        if raw["id"] in parents:
            raise _invalid(f"lists an entry twice (entry {n})")
        if raw["parent_id"] is not None and raw["parent_id"] not in parents:
            raise _invalid(f"entry {n}'s parent is not an earlier entry of the item (parents first, no gap)")
        try:
            entries.append(decode_entry(raw["id"], raw["parent_id"], json.dumps([raw["message"]])))
        except SerializationError as exc:
            raise _invalid(f"entry {n} has an invalid message ({_why(exc)})") from exc
        parents[raw["id"]] = raw["parent_id"]
    try:
        check_write(record, entries, None)
    except SerializationError as exc:
        raise _invalid(f"is invalid ({exc})") from exc
    tips = [tip for tip in (record.head_id, *record.branches, record.forked_at) if tip is not None]
    if any(tip not in parents for tip in tips):
        raise _invalid("lacks its head, a branch tip or its forked_at entry")
    reached: set[str] = set()
    for tip in tips:
        at: str | None = tip
        while at is not None and at not in reached:
            reached.add(at)
            at = parents[at]
    if len(reached) != len(entries):
        raise _invalid("holds entries its record does not reach")
    return record, entries


async def export_conversations(
    store: ConversationStore, user_id: str, session_ids: Sequence[str]
) -> AsyncIterator[dict[str, Any]]:
    """One item per conversation of the user (see `user_records`), with its entries.
    `SerializationError` for a conversation whose history the store cannot give whole,
    `SessionConflict` if one kept changing while it was read."""
    for record in await user_records(store, user_id, session_ids):
        item = await export_record(store, record)
        if item is not None:
            yield item


async def export_all_conversations(
    store: ConversationStore, pages: AsyncIterator[Sequence[ConversationRecord]]
) -> AsyncIterator[dict[str, Any]]:
    """One item per record of `pages` (a backend's pages of every conversation it keeps, each
    conversation in one page), with its entries: a whole-store export or a migration. Errors
    as `export_conversations`."""
    async for page in pages:
        for record in page:
            item = await export_record(store, record)
            if item is not None:
                yield item


async def export_record(store: ConversationStore, record: ConversationRecord) -> dict[str, Any] | None:
    """The export item of `record` with every entry it reaches, read again while it changes
    under the export (None: it was deleted meanwhile). `SerializationError` for a broken chain,
    `SessionConflict` after `_ATTEMPTS` reads that each found it changed."""
    current: ConversationRecord | None = record
    for _ in range(_ATTEMPTS):
        assert current is not None
        found = await _entries(store, current)
        if found is not None:
            return encode_item(*found)
        again = await store.read_record(current.conversation_id)  # saved or deleted meanwhile
        if again is not None and again.revision == current.revision:
            assert current.head_id is not None  # a None head is always found
            raise _broken(current, current.head_id)  # unchanged, and its head is missing
        current = again
        if current is None:
            return None
    raise SessionConflict(
        f"conversation {id_hash(record.conversation_id)} kept changing while it was exported ({_ATTEMPTS} attempts)"
    )


def _replace(incoming: ConversationRecord, existing: ConversationRecord, on_conflict: str) -> bool:
    if on_conflict == "error":
        raise SessionConflict(
            f"conversation {id_hash(incoming.conversation_id)} already exists in the destination "
            "(on_conflict='error'); use 'skip', 'newer' or 'overwrite'"
        )
    if on_conflict == "skip":
        return False
    return on_conflict == "overwrite" or incoming.updated_at > existing.updated_at


def _check_shared(cid: str, entries: Sequence[ConversationEntry], stored: dict[str, ConversationEntry]) -> None:
    """An entry of the item the store holds already (a fork's, shared) must be that same entry:
    an item cannot hang its history from, or lend its id to, someone else's entry."""
    for n, entry in enumerate(entries, 1):
        if entry.id in stored and stored[entry.id] != entry:
            raise _invalid(
                f"(conversation {id_hash(cid)}) has entry {n} under the id of a different entry the store holds"
            )


async def _import_one(
    store: ConversationStore, known: KnownEntries, item: dict[str, Any], on_conflict: str, dry_run: bool
) -> str:
    record, entries = decode_item(item)
    cid = record.conversation_id
    for _ in range(_ATTEMPTS):
        existing = await store.read_record(cid)
        if existing is not None and not _replace(record, existing, on_conflict):
            return "skipped"
        stored = await known([entry.id for entry in entries])
        _check_shared(cid, entries, stored)
        outcome = "imported" if existing is None else "replaced"
        if dry_run:
            return outcome
        # A replace is one write over the existing revision: entries only the old copy reached
        # go with its lineage (see the stores' `write_record`).
        try:
            await store.write_record(
                record,
                new_entries=[entry for entry in entries if entry.id not in stored],
                expected_revision=None if existing is None else existing.revision,
            )
        except ConversationConflict:
            continue  # created, saved, or its entries written, meanwhile: look again
        return outcome
    raise SessionConflict(
        f"conversation {id_hash(cid)} kept changing while it was imported ({_ATTEMPTS} attempts); import it again"
    )


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
