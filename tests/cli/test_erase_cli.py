"""`agent-sessions erase --user ID` (asks first unless --yes; says what it removed) and
`agent-sessions export --user ID FILE` (that user's data, importable elsewhere)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from agent_sessions import Session, create_store
from agent_sessions.cli import app

from .conftest import Populated
from .test_cli import assert_one_line_error, run


def user_sessions(url: str, user_id: str) -> list[str]:
    async def body() -> list[str]:
        async with create_store(url) as store:
            return sorted(s.session_id for s in await store.get_user_sessions(user_id))

    return asyncio.run(body())


def user_scope(url: str, user_id: str) -> dict[str, object]:
    async def body() -> dict[str, object]:
        async with create_store(url) as store:
            return (await store.load_scopes(user_id)).user

    return asyncio.run(body())


def test_erase_with_yes_removes_the_user_and_prints_what_it_removed(runner: CliRunner, populated: Populated) -> None:
    assert len(user_sessions(populated.url, "user-1")) == 2
    code, out, err = run(runner, "erase", "--user", "user-1", "--yes", "--store", populated.url)
    assert code == 0, err
    assert "Erased user user-1: 2 sessions, 8 history entries, 2 user scope keys and 0 conversations." in out
    assert user_sessions(populated.url, "user-1") == [] and user_scope(populated.url, "user-1") == {}
    assert len(user_sessions(populated.url, "user-2")) == 2  # nobody else's data
    code, out, _ = run(runner, "erase", "--user", "user-1", "--yes", "--store", populated.url)
    assert code == 0 and "0 sessions, 0 history entries, 0 user scope keys" in out


def test_erase_asks_first_and_a_no_erases_nothing(populated: Populated) -> None:
    runner = CliRunner(env={"COLUMNS": "200", "AGENT_SESSIONS_STORE": None, "NO_COLOR": "1"})
    args = ["erase", "--user", "user-1", "--store", populated.url]
    result = runner.invoke(app, args, input="n\n")
    assert result.exit_code == 1
    assert "Erase every session, preference and conversation of user 'user-1'" in result.stdout
    assert "nothing was erased" in result.stderr
    assert len(user_sessions(populated.url, "user-1")) == 2
    result = runner.invoke(app, args, input="y\n")
    assert result.exit_code == 0 and "2 sessions" in result.stdout
    assert user_sessions(populated.url, "user-1") == []


def test_erase_refuses_a_bad_user_id_before_touching_the_store(runner: CliRunner, populated: Populated) -> None:
    code, out, err = run(runner, "erase", "--user", "bad\nid", "--yes", "--store", populated.url)
    assert_one_line_error(code, out, err, 2, "invalid user id")


def test_export_user_writes_only_that_users_data(runner: CliRunner, populated: Populated, tmp_path: Path) -> None:
    path = tmp_path / "user-1.jsonl"
    code, out, err = run(runner, "export", str(path), "--user", "user-1", "--store", populated.url)
    assert code == 0, err
    assert "Exported 2 sessions, 1 scopes and 8 history entries" in out
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line.get("kind") for line in lines] == [None, "scope", "session", "session", "end"]
    assert lines[1]["owner"] == "user-1" and lines[1]["values"] == {
        "user:plan": "plan-user-1",
        "pref:tone": "tone-user-1",
    }
    assert {line["session"]["user_id"] for line in lines[2:4]} == {"user-1"}
    copy = tmp_path / "copy.db"
    code, _, err = run(runner, "import", str(path), "--store", f"sqlite+aiosqlite:///{copy}")
    assert code == 0, err
    assert user_sessions(f"sqlite+aiosqlite:///{copy}", "user-1") == user_sessions(populated.url, "user-1")


def test_erase_also_erases_the_conversations_run_turn_kept(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    chat(url, ("hi",))
    code, out, err = run(runner, "erase", "--user", "alice", "--yes", "--store", url)
    assert code == 0, err
    assert "Erased user alice: 1 sessions" in out and "and 1 conversations." in out

    assert list(conversations_in(url)) == ["bob"]


def chat(url: str, prompts: tuple[str, ...]) -> None:
    """A session each for alice and bob, one `run_turn` per prompt, kept in the SQL conversation store."""
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from agent_sessions import SessionManager
    from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore, run_turn

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(f"ok {len(messages)}")])

    async def body() -> None:
        async with SessionManager(create_store(url), auto_cleanup=False) as manager:
            conversations = DatabaseConversationStore(manager.store)
            for user in ("alice", "bob"):
                session = await manager.create_session(user)
                for prompt in prompts:
                    agent = Agent(FunctionModel(model))
                    await run_turn(agent, manager, session.session_id, prompt, conversation_store=conversations)

    asyncio.run(body())


def conversations_in(store_url: str) -> dict[str, list[object]]:
    """The conversations of the SQL conversation store beside `store_url`, with their entries, by scope."""
    from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore

    async def body() -> dict[str, list[object]]:
        async with create_store(store_url) as store:
            conversations = DatabaseConversationStore(store)
            return {
                str(record.scope): [record, await conversations.load_entries(record.conversation_id)]
                for record in await conversations.read_records()
            }

    return asyncio.run(body())


def test_export_user_and_import_carry_the_users_conversations(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    copy = f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}"
    chat(url, ("hi", "again"))
    path = tmp_path / "alice.jsonl"
    code, out, err = run(runner, "export", str(path), "--user", "alice", "--store", url)
    assert code == 0, err
    assert "Exported 1 sessions, 0 scopes and 2 history entries, and 1 conversations, to" in out
    assert '"format_version":2' in path.read_text().splitlines()[0]
    code, out, err = run(runner, "import", str(path), "--store", copy, "--dry-run")
    assert code == 0, err
    assert "conversations: 1 new, 0 replaced, 0 skipped" in out
    code, out, err = run(runner, "import", str(path), "--store", copy)
    assert code == 0, err
    assert "1 new" in out and "conversations: 1 new, 0 replaced, 0 skipped" in out and "warning" not in err
    assert conversations_in(copy) == {"alice": conversations_in(url)["alice"]}
    # A store with no conversation store beside it: the conversations are reported, not dropped.
    code, out, err = run(runner, "import", str(path), "--store", "memory://")
    assert code == 0, err
    assert "conversations: 0 new, 0 replaced, 1 skipped (no conversation store" in out
    assert "warning: 1 conversations of the file were not imported" in err
    # A conversation line whose entries are out of order: the file is at fault, at that line.
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    bad = next(n for n, line in enumerate(lines, 1) if line.get("kind") == "conversation")
    lines[bad - 1]["conversation"]["entries"].reverse()
    reversed_file = tmp_path / "reversed.jsonl"
    reversed_file.write_text("".join(json.dumps(line) + "\n" for line in lines))
    fresh = f"sqlite+aiosqlite:///{tmp_path / 'fresh.db'}"
    code, out, err = run(runner, "import", str(reversed_file), "--store", fresh)
    assert_one_line_error(code, out, err, 1, f"line {bad} of {reversed_file} is bad (the file): a conversation item")


def test_import_help_says_the_policy_covers_conversations(runner: CliRunner) -> None:
    code, out, _ = run(runner, "import", "--help")
    assert code == 0 and "conversation" in " ".join(out.split())


def test_a_whole_store_export_and_a_migration_carry_every_conversation(runner: CliRunner, tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"
    chat(url, ("hi",))
    expected = conversations_in(url)
    assert sorted(expected) == ["alice", "bob"]
    path = tmp_path / "all.jsonl"
    code, out, err = run(runner, "export", str(path), "--store", url)
    assert code == 0, err
    assert "Exported 2 sessions, 0 scopes and 2 history entries, and 2 conversations, to" in out
    copy = f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}"
    code, out, err = run(runner, "import", str(path), "--store", copy)
    assert code == 0, err
    assert "2 new" in out and "conversations: 2 new, 0 replaced, 0 skipped" in out
    assert conversations_in(copy) == expected
    moved = f"sqlite+aiosqlite:///{tmp_path / 'moved.db'}"
    code, out, err = run(runner, "migrate", url, moved)
    assert code == 0, err
    assert "conversations: 2 new, 0 replaced, 0 skipped" in out
    assert conversations_in(moved) == expected
    # A destination with no conversation store: said, not dropped silently.
    code, out, err = run(runner, "migrate", url, "memory://")
    assert code == 0, err
    assert "warning: SRC keeps conversations but DST has no conversation store: not migrated" in err


def test_a_migration_warns_about_conversations_only_when_there_are_some(runner: CliRunner, tmp_path: Path) -> None:
    from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore

    url = f"sqlite+aiosqlite:///{tmp_path / 'agent.db'}"

    async def empty_conversation_tables() -> None:
        async with create_store(url) as store:
            await store.set(Session(user_id="alice"))
            assert await DatabaseConversationStore(store).read_records() == []  # creates the tables

    asyncio.run(empty_conversation_tables())
    code, out, err = run(runner, "migrate", url, "memory://")
    assert code == 0, err
    assert "1 new" in out and "warning" not in err
