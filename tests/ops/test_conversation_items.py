"""Conversation items checked before anything is written, replaced in place, and imported
concurrently, on the SQL (SQLite, PostgreSQL) and Redis conversation stores.

A bad item (entries reversed, head, root or a middle entry missing, a parent or an entry id
taken from the destination, a naive or bad timestamp) is a `BackupFormatError` at its line and
writes nothing; a replace is one `write_record` over the existing revision (a failed write
leaves the destination's copy) and leaves no orphan entries; two imports of forks sharing
entries the destination lacks keep both histories whole (Redis refuses a new entry that exists).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from pydantic_ai.conversation_store import (
    ConversationConflict,
    ConversationEntry,
    ConversationRecord,
    ConversationStore,
)
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

from agent_sessions import InvalidExportItem, SerializationError, SessionConflict, SessionStore, StoreUnavailable
from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore, RedisConversationStore
from agent_sessions.integrations.pydantic_ai.conversation_transfer import (
    decode_item,
    encode_item,
    export_conversations,
    import_conversations,
)
from agent_sessions.ops import BackupFormatError, import_sessions
from agent_sessions.ops.backup import FORMAT_NAME, FORMAT_VERSION

from ..backends import BACKENDS
from ..support import FakeClock

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 1, 1, tzinfo=UTC)


@dataclasses.dataclass
class Backend:
    sessions: SessionStore
    conversations: ConversationStore


def conversation_store(kind: str, sessions: SessionStore) -> ConversationStore:
    if kind in ("sqlite", "postgres"):
        return DatabaseConversationStore(sessions)
    return RedisConversationStore(sessions)


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async with BACKENDS[request.param](FakeClock()) as sessions:
        yield Backend(sessions, conversation_store(request.param, sessions))


def entry(eid: str, parent: str | None, text: str) -> ConversationEntry:
    message: Any = (
        ModelRequest(parts=[UserPromptPart(text, timestamp=T0)])
        if text.startswith("q")
        else ModelResponse(parts=[TextPart(text)], timestamp=T0)
    )
    return ConversationEntry(id=eid, parent_id=parent, message=message)


def chain(prefix: str, n: int, parent: str | None = None) -> list[ConversationEntry]:
    out: list[ConversationEntry] = []
    for i in range(n):
        out.append(entry(f"{prefix}{i}", out[-1].id if out else parent, f"{'q' if i % 2 == 0 else 'a'} {prefix}{i}"))
    return out


def record(cid: str, head: str | None, **fields: Any) -> ConversationRecord:
    return ConversationRecord(conversation_id=cid, head_id=head, **({"updated_at": T0} | fields))


def item_of(rec: ConversationRecord, entries: Sequence[ConversationEntry]) -> dict[str, Any]:
    return encode_item(rec, entries)


async def raw_entry_count(store: ConversationStore) -> int:
    """The entries the backend holds, counted in its tables / keys (not through the API)."""
    if isinstance(store, DatabaseConversationStore):
        async with store.engine.connect() as conn:
            return int((await conn.execute(sa.select(sa.func.count()).select_from(store.entries))).scalar_one())
    assert isinstance(store, RedisConversationStore)
    pattern = f"{store.prefix}{{conv}}:ent:*"  # test-owned prefix: no glob characters in it
    return len([key async for key in store.client.scan_iter(match=pattern, count=500)])


def write_file(path: Path, items: Sequence[dict[str, Any]]) -> Path:
    lines: list[dict[str, Any]] = [{"format": FORMAT_NAME, "format_version": FORMAT_VERSION}]
    lines += [{"kind": "conversation", "conversation": item} for item in items]
    lines.append({"kind": "end", "sessions": 0, "scopes": 0, "history_entries": 0, "conversations": len(items)})
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def bad_items() -> dict[str, dict[str, Any]]:
    entries = chain("e", 4)
    good = item_of(record("c", "e3"), entries)

    def changed(change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copy = json.loads(json.dumps(good))
        change(copy)
        return copy

    def naive(it: dict[str, Any]) -> None:
        it["record"]["updated_at"] = "2026-01-01T00:00:00"

    def bad_time(it: dict[str, Any]) -> None:
        it["record"]["updated_at"] = "not a time"

    return {
        "reversed": changed(lambda it: it["entries"].reverse()),
        "headless": changed(lambda it: it["entries"].pop()),
        "rootless": changed(lambda it: it["entries"].pop(0)),
        "gapped": changed(lambda it: it["entries"].pop(2)),
        "unreached": changed(lambda it: it["entries"].append(json.loads(json.dumps(it["entries"][0])) | {"id": "x"})),
        "naive updated_at": changed(naive),
        "bad updated_at": changed(bad_time),
        "a branch tip not in the item": changed(lambda it: it["record"].update(branches=["elsewhere"])),
        "forked_at not in the item": changed(lambda it: it["record"].update(forked_at="elsewhere")),
    }


@pytest.mark.parametrize("name", list(bad_items()))
async def test_a_bad_item_is_a_format_error_at_its_line_and_writes_nothing(
    backend: Backend, tmp_path: Path, name: str
) -> None:
    fine = item_of(record("fine", "f1"), chain("f", 2))
    path = write_file(tmp_path / "bad.jsonl", [fine, bad_items()[name]])
    with pytest.raises(BackupFormatError, match="conversation item") as caught:
        await import_sessions(backend.sessions, path, holders=[backend.conversations], on_conflict="overwrite")
    assert caught.value.line == 3
    assert isinstance(caught.value.__cause__, InvalidExportItem)
    assert "stored" not in str(caught.value)  # the file's content, not the store's
    assert await backend.conversations.read_record("c") is None
    assert await raw_entry_count(backend.conversations) == 2  # the good line before it only
    with pytest.raises(InvalidExportItem):
        decode_item(bad_items()[name])


async def test_a_bad_timestamp_names_the_field() -> None:
    with pytest.raises(InvalidExportItem, match=r"invalid record \(updated_at: "):
        decode_item(bad_items()["bad updated_at"])


async def test_an_item_cannot_hang_from_or_take_the_id_of_another_users_entry(backend: Backend, tmp_path: Path) -> None:
    bob = chain("bob", 2)
    await backend.conversations.write_record(
        record("bob", "bob1", scope="bob"), new_entries=bob, expected_revision=None
    )
    hanging = item_of(record("mallory", "m0", scope="mallory"), [entry("m0", "bob1", "q hi")])
    taking = item_of(record("mallory", "bob1", scope="mallory"), [entry("bob1", None, "q mine")])
    for crafted in (hanging, taking):
        path = write_file(tmp_path / "crafted.jsonl", [crafted])
        with pytest.raises(BackupFormatError) as caught:
            await import_sessions(backend.sessions, path, holders=[backend.conversations])
        assert caught.value.line == 2
        assert await backend.conversations.read_record("mallory") is None
    assert await raw_entry_count(backend.conversations) == 2
    assert [e.id async for e in exported(backend.conversations, "mallory")] == []
    # The same entry, whole and equal, is a fork's shared entry: accepted.
    fork = item_of(record("fork", "f0", scope="mallory"), [*bob, entry("f0", "bob1", "q more")])
    path = write_file(tmp_path / "fork.jsonl", [fork])
    assert (await import_sessions(backend.sessions, path, holders=[backend.conversations])).conversations == 1
    assert [e.id for e in await backend.conversations.read_history("f0")] == ["bob0", "bob1", "f0"]


async def exported(store: ConversationStore, user: str) -> AsyncIterator[ConversationEntry]:
    async for item in export_conversations(store, user, []):
        for e in decode_item(item)[1]:
            yield e


class FailingWrites:
    """Wraps a conversation store: `write_record` raises, as a store that fails mid-import."""

    def __init__(self, store: ConversationStore) -> None:
        self.store = store
        self.writes: list[str | None] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def write_record(self, rec: ConversationRecord, **options: Any) -> None:
        self.writes.append(options["expected_revision"])
        raise StoreUnavailable("injected: the store failed while writing")


def known_of(store: ConversationStore) -> Callable[[Collection[str]], Awaitable[dict[str, ConversationEntry]]]:
    async def known(ids: Collection[str]) -> dict[str, ConversationEntry]:
        found: dict[str, ConversationEntry] = {}
        for eid in ids:
            with contextlib.suppress(KeyError):
                found[eid] = await store.read_entry(eid)
        return found

    return known


async def test_a_replace_is_one_write_over_the_revision_and_a_failed_one_keeps_the_copy(backend: Backend) -> None:
    store = backend.conversations
    mine = chain("old", 2)
    await store.write_record(record("c", "old1"), new_entries=mine, expected_revision=None)
    existing = await store.read_record("c")
    assert existing is not None
    newer = item_of(record("c", "new1", updated_at=T0 + timedelta(hours=1)), chain("new", 2))
    failing = FailingWrites(store)
    for policy in ("overwrite", "newer"):
        with pytest.raises(StoreUnavailable, match="injected"):
            await import_conversations(failing, known_of(store), [newer], policy)
        assert await store.read_record("c") == existing  # nothing was deleted first
        assert [e.id for e in await store.read_history("old1")] == ["old0", "old1"]
    assert failing.writes == [existing.revision, existing.revision]  # in place, over the revision


async def test_a_replace_leaves_no_orphan_entries(backend: Backend, tmp_path: Path) -> None:
    store = backend.conversations
    await store.write_record(record("c", "old1"), new_entries=chain("old", 2), expected_revision=None)
    source = chain("src", 2)
    await store.write_record(record("src", "src1"), new_entries=source, expected_revision=None)
    # "c" replaced by a history of its own: the old entries go with its lineage.
    own = item_of(record("c", "new2"), chain("new", 3))
    done = await import_sessions(
        backend.sessions, write_file(tmp_path / "own.jsonl", [own]), holders=[store], on_conflict="overwrite"
    )
    assert done.conversations_replaced == 1
    assert [e.id for e in await store.read_history("new2")] == ["new0", "new1", "new2"]
    await store.delete_record("c", expected_revision=(await store.read_record("c")).revision)
    assert await raw_entry_count(store) == 2  # only "src"'s
    # "c" again, then replaced by a fork of "src": it moves to src's lineage, its own entries go at once.
    await store.write_record(record("c", "old1"), new_entries=chain("old", 2), expected_revision=None)
    fork = item_of(record("c", "f0", forked_from="src", forked_at="src1"), [*source, entry("f0", "src1", "q f")])
    done = await import_sessions(
        backend.sessions, write_file(tmp_path / "fork.jsonl", [fork]), holders=[store], on_conflict="overwrite"
    )
    assert done.conversations_replaced == 1
    assert await raw_entry_count(store) == 3  # src0, src1, f0: old0 and old1 are gone
    await store.delete_record("src", expected_revision=(await store.read_record("src")).revision)
    assert [e.id for e in await store.read_history("f0")] == ["src0", "src1", "f0"]  # shared entries kept
    await store.delete_record("c", expected_revision=(await store.read_record("c")).revision)
    assert await raw_entry_count(store) == 0


async def test_concurrent_imports_of_forks_sharing_new_entries_keep_both_histories(backend: Backend) -> None:
    store = backend.conversations
    shared = chain("s", 2)
    forks = [
        item_of(record(name, f"{name}0", forked_at="s1"), [*shared, entry(f"{name}0", "s1", f"q {name}")])
        for name in ("a", "b")
    ]
    known = known_of(store)
    both_looked = asyncio.Barrier(2)
    first_look: set[int] = set()

    async def import_one(n: int) -> None:
        async def racing_known(ids: Collection[str]) -> dict[str, ConversationEntry]:
            found = await known(ids)
            if n not in first_look:  # both look before either writes: neither sees the shared entries
                first_look.add(n)
                await both_looked.wait()
            return found

        await import_conversations(store, racing_known, [forks[n]], "skip")

    await asyncio.gather(import_one(0), import_one(1))
    for name in ("a", "b"):
        assert [e.id for e in await store.read_history(f"{name}0")] == ["s0", "s1", f"{name}0"]
    assert await raw_entry_count(store) == 4
    a = await store.read_record("a")
    assert a is not None
    await store.delete_record("a", expected_revision=a.revision)
    assert [e.id for e in await store.read_history("b0")] == ["s0", "s1", "b0"]  # the shared entries stay
    b = await store.read_record("b")
    assert b is not None
    await store.delete_record("b", expected_revision=b.revision)
    assert await raw_entry_count(store) == 0


async def test_an_ordinary_turn_still_writes_on_redis_and_sql(backend: Backend) -> None:
    # A turn's new entries never exist: the existence check of the Redis script lets it through.
    store = backend.conversations
    first = chain("t", 2)
    await store.write_record(record("t", "t1"), new_entries=first, expected_revision=None)
    rec = await store.read_record("t")
    assert rec is not None
    more = chain("u", 2, parent="t1")
    await store.write_record(
        dataclasses.replace(rec, head_id="u1", revision="r2"), new_entries=more, expected_revision=rec.revision
    )
    assert [e.id for e in await store.read_history("u1")] == ["t0", "t1", "u0", "u1"]


class ConflictingWrites(FailingWrites):
    """Every write loses against a concurrent writer."""

    async def write_record(self, rec: ConversationRecord, **options: Any) -> None:
        self.writes.append(options["expected_revision"])
        raise ConversationConflict(rec.conversation_id)


async def test_an_import_that_keeps_losing_raises_the_librarys_session_conflict(backend: Backend) -> None:
    store = ConflictingWrites(backend.conversations)
    item = item_of(record("c", "e1"), chain("e", 2))
    with pytest.raises(SessionConflict, match="kept changing while it was imported"):
        await import_conversations(store, known_of(backend.conversations), [item], "skip")
    assert len(store.writes) == 5


async def break_entry(store: ConversationStore, entry_id: str) -> None:
    """Delete one entry at the raw level (a store damaged outside the API)."""
    if isinstance(store, DatabaseConversationStore):
        async with store.engine.begin() as conn:
            await conn.execute(store.entries.delete().where(store.entries.c.entry_id == entry_id))
        return
    assert isinstance(store, RedisConversationStore)
    await store.client.delete(f"{store.prefix}{{conv}}:ent:{entry_id}")


async def test_export_tells_a_broken_chain_from_a_missing_tip(
    backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    store = backend.conversations
    entries = [*chain("e", 3), *chain("b", 2, parent="e0")]
    rec = record("c", "e2", scope="u", branches=["b1"])
    await store.write_record(rec, new_entries=entries, expected_revision=None)
    await break_entry(store, "b1")  # a branch tip the store lacks: left out of the item, logged
    with caplog.at_level("DEBUG", logger="agent_sessions"):
        items = [item async for item in export_conversations(store, "u", [])]
    exported, exported_entries = decode_item(items[0])
    assert exported.branches == [] and [e.id for e in exported_entries] == ["e0", "e1", "e2"]
    assert "a branch tip is no longer stored" in caplog.text and "'c'" not in caplog.text
    await break_entry(store, "e1")  # a gap under the head: the chain is broken, named by hash
    with pytest.raises(SerializationError, match="in the store is broken") as caught:
        _ = [item async for item in export_conversations(store, "u", [])]
    assert not isinstance(caught.value, InvalidExportItem)
    await break_entry(store, "e2")  # the head itself, the record unchanged: broken too, not a retry loop
    with pytest.raises(SerializationError, match="in the store is broken"):
        _ = [item async for item in export_conversations(store, "u", [])]


async def test_the_end_marker_counts_conversations_as_an_int(backend: Backend, tmp_path: Path) -> None:
    path = write_file(tmp_path / "one.jsonl", [item_of(record("c", "e1"), chain("e", 2))])
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    lines[-1]["conversations"] = True
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with pytest.raises(BackupFormatError, match="conversations") as caught:
        await import_sessions(backend.sessions, path, holders=[backend.conversations])
    assert caught.value.line == 3


async def test_looking_up_no_entries_opens_no_connection(tmp_path: Path) -> None:
    store = DatabaseConversationStore(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
    try:
        await store.read_records()  # the tables exist
        checkouts: list[object] = []
        sa.event.listen(store.engine.sync_engine, "checkout", lambda *args: checkouts.append(args))
        empty = item_of(record("empty", None), [])
        assert (await store.import_items([empty], "skip")).imported == 1
        reads = len(checkouts)
        checkouts.clear()
        assert (await store.import_items([empty], "skip")).skipped == 1  # one read of the record only
        assert len(checkouts) == 1 and reads == 2  # read the record, write it: no lookup of zero entries
    finally:
        await store.close()
