"""Conversation lines in the export file (format version 2, from `export_user` with a
conversation store): a plain export stays version 1 and still imports; a version-2 file
imported without a conversation store reports its conversations as skipped, with the reason;
the conflict policies; the end marker counts conversations; bad conversation lines are
format errors at their line."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import BinaryContent, ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_sessions import SessionConflict, SessionManager, SessionStore, create_store
from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore, conversation_id_for, run_turn
from agent_sessions.ops import BackupFormatError, export_sessions, export_user, import_sessions
from agent_sessions.ops.backup import NO_HOLDER_REASON, iter_export_lines

pytestmark = pytest.mark.asyncio

USER = "alice@example.org"


@pytest.fixture
async def source(tmp_path: Path) -> AsyncIterator[SessionManager]:
    async with SessionManager(create_store(f"sqlite+aiosqlite:///{tmp_path / 'src.db'}"), auto_cleanup=False) as m:
        yield m


@pytest.fixture
async def target(tmp_path: Path) -> AsyncIterator[SessionStore]:
    async with create_store(f"sqlite+aiosqlite:///{tmp_path / 'dst.db'}") as store:
        yield store


def agent() -> Agent[Any, str]:
    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(f"reply {len(messages)}")])

    return Agent(FunctionModel(model))


async def conversations_of(manager: SessionManager, user: str) -> DatabaseConversationStore:
    """Two sessions of `user`, one turn each (one with binary content), in the SQL conversation store."""
    known = [h for h in manager.data_holders if isinstance(h, DatabaseConversationStore)]
    conversations = known[0] if known else DatabaseConversationStore(manager.store)
    manager.register_data_holder(conversations)
    for prompt in ("hello", "look"):
        session = await manager.create_session(user)
        content: Any = prompt if prompt == "hello" else [prompt, BinaryContent(b"\x00\xffpng", media_type="image/png")]
        await run_turn(agent(), manager, session.session_id, content, conversation_store=conversations)
    return conversations


async def test_a_plain_export_is_version_1_and_imports(
    source: SessionManager, target: SessionStore, tmp_path: Path
) -> None:
    await source.create_session(USER, {"n": 1})
    path = tmp_path / "all.jsonl"
    await export_sessions(source.store, path)
    lines = list(iter_export_lines(path))
    assert lines[0]["format_version"] == 1 and "conversations" not in lines[-1]
    report = await import_sessions(target, path, holders=[DatabaseConversationStore(target)])
    assert report.imported == 1 and report.conversations_seen == 0


async def test_export_user_without_conversations_stays_version_1(source: SessionManager, tmp_path: Path) -> None:
    await source.create_session(USER)
    source.register_data_holder(DatabaseConversationStore(source.store))
    path = tmp_path / "user.jsonl"
    report = await source.export_user(USER, path)
    assert report.conversations == 0 and list(iter_export_lines(path))[0]["format_version"] == 1


async def test_conversations_round_trip_bytes_included(
    source: SessionManager, target: SessionStore, tmp_path: Path
) -> None:
    mine = await conversations_of(source, USER)
    path = tmp_path / "user.jsonl.gz"
    report = await export_user(source, USER, path)
    assert report.conversations == 2
    lines = list(iter_export_lines(path))
    assert lines[0]["format_version"] == 2 and lines[-1]["conversations"] == 2
    assert [line.get("kind") for line in lines].count("conversation") == 2
    theirs = DatabaseConversationStore(target)
    done = await import_sessions(target, path, holders=[theirs])
    assert (done.imported, done.conversations) == (2, 2)
    for record in await mine.read_records():
        assert await theirs.read_record(record.conversation_id) == record
        assert await theirs.load_entries(record.conversation_id) == await mine.load_entries(record.conversation_id)


async def test_a_version_2_file_without_a_holder_reports_its_conversations_skipped(
    source: SessionManager, target: SessionStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    await conversations_of(source, USER)
    path = tmp_path / "user.jsonl"
    await source.export_user(USER, path)
    with caplog.at_level("WARNING", logger="agent_sessions"):
        report = await import_sessions(target, path)
    assert report.imported == 2
    assert (report.conversations, report.conversations_skipped) == (0, 2)
    assert report.conversations_skipped_reason == NO_HOLDER_REASON
    assert "2 conversations of the file were not imported" in caplog.text
    dry = await import_sessions(target, path, dry_run=True)
    assert dry.conversations_skipped == 2 and dry.conversations_skipped_reason == NO_HOLDER_REASON


async def test_conflict_policies_on_conversations(source: SessionManager, target: SessionStore, tmp_path: Path) -> None:
    await conversations_of(source, USER)
    path = tmp_path / "user.jsonl"
    await source.export_user(USER, path)
    theirs = DatabaseConversationStore(target)
    dry = await import_sessions(target, path, holders=[theirs], dry_run=True)
    assert dry.conversations == 2 and await theirs.read_records() == []  # a dry run writes nothing
    await import_sessions(target, path, holders=[theirs])
    assert (await import_sessions(target, path, holders=[theirs])).conversations_skipped == 2
    newer = await import_sessions(target, path, holders=[theirs], on_conflict="newer")
    assert newer.conversations_skipped == 2  # saved at the same time: not newer
    item = next(line["conversation"] for line in iter_export_lines(path) if line.get("kind") == "conversation")
    with pytest.raises(SessionConflict, match="conversation"):
        await theirs.import_items([item], "error")
    with pytest.raises(ValueError, match="on_conflict"):
        await theirs.import_items([item], "sometimes")
    dry = await import_sessions(target, path, holders=[theirs], on_conflict="overwrite", dry_run=True)
    assert dry.conversations_replaced == 2
    assert (await import_sessions(target, path, holders=[theirs], on_conflict="overwrite")).conversations_replaced == 2
    assert len(await theirs.read_records()) == 2


async def test_another_users_conversations_are_never_exported(source: SessionManager, tmp_path: Path) -> None:
    await conversations_of(source, USER)
    await conversations_of(source, "bob")
    bob = [s.session_id for s in await source.store.get_user_sessions("bob")]
    path = tmp_path / "user.jsonl"
    assert (await source.export_user(USER, path)).conversations == 2
    text = path.read_text()
    assert "bob" not in text and not any(conversation_id_for(sid) in text for sid in bob)


def rewrite(path: Path, change: Any) -> Path:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    change(lines)
    out = path.with_name("changed.jsonl")
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


async def test_bad_conversation_lines_are_format_errors(
    source: SessionManager, target: SessionStore, tmp_path: Path
) -> None:
    await conversations_of(source, USER)
    path = tmp_path / "user.jsonl"
    await source.export_user(USER, path)
    kinds = [line.get("kind") for line in iter_export_lines(path)]
    first = kinds.index("conversation")

    def as_version_1(lines: list[dict[str, Any]]) -> None:
        lines[0]["format_version"] = 1

    def miscounted(lines: list[dict[str, Any]]) -> None:
        lines[-1]["conversations"] = 1

    def dropped(lines: list[dict[str, Any]]) -> None:
        del lines[first]  # a file missing a line, cut at a boundary: the end marker tells

    def no_entries(lines: list[dict[str, Any]]) -> None:
        del lines[first]["conversation"]["entries"]

    holder = [DatabaseConversationStore(target)]
    for change, line, message in (
        (as_version_1, first + 1, "need format_version 2"),
        (miscounted, len(kinds), "conversations"),
        (dropped, len(kinds) - 1, "conversations"),
        (no_entries, first + 1, "'entries' list"),
    ):
        with pytest.raises(BackupFormatError, match=message) as caught:
            await import_sessions(target, rewrite(path, change), holders=holder, on_conflict="overwrite")
        assert caught.value.line == line


async def test_an_unknown_line_kind_is_still_a_format_error(
    source: SessionManager, target: SessionStore, tmp_path: Path
) -> None:
    await conversations_of(source, USER)
    path = tmp_path / "user.jsonl"
    await source.export_user(USER, path)

    def unknown(lines: list[dict[str, Any]]) -> None:
        lines.insert(-1, {"kind": "mystery"})

    with pytest.raises(BackupFormatError, match="unknown line kind 'mystery'"):
        await import_sessions(target, rewrite(path, unknown))
