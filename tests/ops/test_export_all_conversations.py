"""Whole-store transfers carry conversations: `export_sessions(..., holders=)` writes every
conversation the SQL (SQLite, PostgreSQL) and Redis conversation stores keep, page after page,
and `import_sessions` gives them back; `migrate(..., conversations=[(source, destination)])`
copies them between any two of them under the run's `on_conflict`. A holder that cannot export
everything is named in the report; a pair that cannot transfer is a `TypeError` before any I/O."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.conversation_store import ConversationEntry, ConversationRecord, ConversationStore
from pydantic_ai.messages import ModelRequest, ModelResponse, TextPart, UserPromptPart

from agent_sessions import FullyExportableDataHolder, Session, SessionStore
from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore, RedisConversationStore
from agent_sessions.lifecycle import ImportedItems
from agent_sessions.ops import export_sessions, import_sessions, migrate
from agent_sessions.ops.backup import iter_export_lines

from ..backends import BACKENDS
from ..support import FakeClock

pytestmark = pytest.mark.asyncio

T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: More than one page of every backend's export (200 records a page).
MANY = 450


@dataclasses.dataclass
class Backend:
    kind: str
    sessions: SessionStore
    conversations: ConversationStore


def conversation_store(kind: str, sessions: SessionStore) -> ConversationStore:
    return DatabaseConversationStore(sessions) if kind in ("sqlite", "postgres") else RedisConversationStore(sessions)


async def open_backend(kind: str) -> AsyncIterator[Backend]:
    async with BACKENDS[kind](FakeClock()) as sessions:
        yield Backend(kind, sessions, conversation_store(kind, sessions))


@pytest.fixture(params=["sqlite", "postgres", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    async for opened in open_backend(request.param):
        yield opened


def message(text: str) -> Any:
    if text.startswith("q"):
        return ModelRequest(parts=[UserPromptPart(text, timestamp=T0)])
    return ModelResponse(parts=[TextPart(text)], timestamp=T0)


async def save(
    store: ConversationStore, cid: str, scope: str | None, texts: Sequence[str], *, parent: str | None = None
) -> ConversationRecord:
    """A conversation `cid` whose history is `texts` (after `parent`, a fork's anchor)."""
    entries: list[ConversationEntry] = []
    for n, text in enumerate(texts):
        entries.append(
            ConversationEntry(id=f"{cid}-{n}", parent_id=entries[-1].id if entries else parent, message=message(text))
        )
    record = ConversationRecord(
        conversation_id=cid,
        scope=scope,
        head_id=entries[-1].id,
        updated_at=T0 + timedelta(seconds=len(cid)),
        forked_from=None if parent is None else parent.rsplit("-", 1)[0],
        forked_at=parent,
    )
    await store.write_record(record, new_entries=entries, expected_revision=None)
    stored = await store.read_record(cid)
    assert stored is not None
    return stored


async def fill(store: ConversationStore, many: int = 0) -> None:
    """Conversations of two users, one with no scope, a fork sharing its parent's entries, and
    `many` one-entry conversations."""
    await save(store, "c-alice", "alice", ["q1", "a1", "q2", "a2"])
    await save(store, "c-bob", "bob", ["q1", "a1"])
    await save(store, "c-free", None, ["q-free"])
    await save(store, "c-fork", "alice", ["q-fork", "a-fork"], parent="c-alice-1")
    for n in range(many):
        await save(store, f"m-{n:04d}", f"user-{n % 7}", [f"q{n}"])


async def contents(store: ConversationStore) -> dict[str, tuple[ConversationRecord, list[ConversationEntry]]]:
    """Every conversation with its history, by id, revisions aside (a copy gets its own)."""
    out: dict[str, tuple[ConversationRecord, list[ConversationEntry]]] = {}
    for record in await store.read_records():
        history = list(await store.read_history(record.head_id)) if record.head_id is not None else []
        out[record.conversation_id] = (dataclasses.replace(record, revision=""), history)
    return out


async def test_export_sessions_writes_every_conversation_and_import_gives_them_back(
    backend: Backend, tmp_path: Path
) -> None:
    await backend.sessions.set(Session(user_id="alice"))
    await fill(backend.conversations, MANY)
    path = tmp_path / "all.jsonl"
    report = await export_sessions(backend.sessions, path, holders=[backend.conversations])
    assert report.sessions == 1 and report.conversations == MANY + 4 and report.not_exported == []
    lines = list(iter_export_lines(path))
    assert lines[0]["format_version"] == 2 and lines[-1]["conversations"] == MANY + 4
    ids = [line["conversation"]["record"]["conversation_id"] for line in lines if line.get("kind") == "conversation"]
    assert len(ids) == len(set(ids)) == MANY + 4  # each once, across pages

    async for copy in open_backend("sqlite"):
        destination = conversation_store("sqlite", copy.sessions)
        imported = await import_sessions(copy.sessions, path, holders=[destination])
        assert imported.imported == 1 and imported.conversations == MANY + 4
        assert await contents(destination) == await contents(backend.conversations)


@pytest.mark.parametrize(("source_kind", "destination_kind"), [("sqlite", "redis"), ("redis", "postgres")])
async def test_migrate_copies_the_conversations_between_backends(source_kind: str, destination_kind: str) -> None:
    async for source in open_backend(source_kind):
        async for destination in open_backend(destination_kind):
            await source.sessions.set(Session(user_id="bob"))
            await fill(source.conversations, 150)
            pair = (source.conversations, destination.conversations)
            report = await migrate(source.sessions, destination.sessions, conversations=[pair])
            assert report.imported == 1 and report.conversations == 154
            expected = await contents(source.conversations)
            assert await contents(destination.conversations) == expected
            # Run again: every conversation is there, and kept ("newer": none is newer).
            again = await migrate(source.sessions, destination.sessions, conversations=[pair])
            assert (again.skipped, again.conversations, again.conversations_skipped) == (1, 0, 154)
            # A newer save in the source replaces the destination's copy.
            alice = await source.conversations.read_record("c-alice")
            assert alice is not None
            newer = dataclasses.replace(
                alice, title="renamed", revision=str(uuid.uuid4()), updated_at=alice.updated_at + timedelta(hours=1)
            )
            await source.conversations.write_record(newer, expected_revision=alice.revision)
            last = await migrate(source.sessions, destination.sessions, conversations=[pair])
            assert (last.conversations_replaced, last.conversations_skipped) == (1, 153)
            copied = await destination.conversations.read_record("c-alice")
            assert copied is not None and copied.title == "renamed"


async def test_a_holder_that_cannot_export_everything_is_named_not_dropped(backend: Backend, tmp_path: Path) -> None:
    class UserOnly:
        """Exports one user's data only (an `ExportableDataHolder`, not a `FullyExportableDataHolder`)."""

        async def erase_sessions(self, user_id: str, session_ids: Sequence[str]) -> int:
            return 0

        async def export_sessions(self, user_id: str, session_ids: Sequence[str]) -> AsyncIterator[dict[str, Any]]:
            return
            yield {}

        async def import_items(
            self, items: Sequence[dict[str, Any]], on_conflict: str, *, dry_run: bool = False
        ) -> ImportedItems:
            return ImportedItems()

    assert isinstance(backend.conversations, FullyExportableDataHolder)
    assert not isinstance(UserOnly(), FullyExportableDataHolder)
    await fill(backend.conversations)
    report = await export_sessions(
        backend.sessions, tmp_path / "all.jsonl", holders=[UserOnly(), backend.conversations]
    )
    assert report.not_exported == ["UserOnly"] and report.conversations == 4
    with pytest.raises(TypeError, match="FullyExportableDataHolder"):
        await migrate(backend.sessions, backend.sessions, conversations=[(UserOnly(), backend.conversations)])


async def test_a_plain_whole_store_export_stays_version_1(backend: Backend, tmp_path: Path) -> None:
    await backend.sessions.set(Session(user_id="alice"))
    path = tmp_path / "plain.jsonl"
    report = await export_sessions(backend.sessions, path, holders=[backend.conversations])
    assert report.conversations == 0 and list(iter_export_lines(path))[0]["format_version"] == 1
