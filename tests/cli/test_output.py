"""What the CLI prints reads well at 80 columns: nothing cut ("…"), `show` as indented JSON with
rounded durations and the stored conversation, help for every option, log lines with -v/-vv."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest
import typer
from pydantic_ai import Agent
from pydantic_ai.models.test import TestModel
from typer.testing import CliRunner

from agent_sessions import Session, SessionManager, create_store
from agent_sessions.cli import app
from agent_sessions.display import format_duration
from agent_sessions.integrations.pydantic_ai import DatabaseConversationStore, run_turn

from .conftest import Populated, sqlite_url

LONG_USER = "user-with-a-rather-long-identifier-0123456789"
LONG_VALUE = "a value far wider than any terminal: " + "lorem ipsum dolor sit amet " * 12


@pytest.fixture
def narrow() -> CliRunner:
    return CliRunner(env={"COLUMNS": "80", "AGENT_SESSIONS_STORE": None, "NO_COLOR": "1"})


def assert_fits(text: str) -> None:
    # "..." is click's abbreviation; the usage line's "[ARGS]..." means "repeatable".
    body = "\n".join(line for line in text.splitlines() if not line.startswith("Usage:"))
    assert "…" not in text and "..." not in body, text
    assert max(len(line) for line in text.splitlines()) <= 80, text


def commands() -> list[tuple[str, Any]]:
    # typer builds on its own vendored click, so its types are not the `click` package's.
    group: Any = typer.main.get_command(app)
    return [(name, command) for name, command in group.commands.items() if not command.hidden]


async def add_session(url: str, **fields: Any) -> Session:
    async with create_store(url) as store:
        now = time.time()
        session = Session(created_at=now - 200.2, last_accessed_at=now - 5, expiry_at=now + 3600, **fields)
        await store.restore(
            session,
            [
                {"timestamp": now - 60, "type": "context", "data": {"tool_name": "search", "duration": 1.5}},
                {"timestamp": now - 30, "type": "context", "data": {"tool_name": "crawl", "duration": 200.2}},
                {"timestamp": now - 10, "type": "note", "data": {"text": LONG_VALUE, "elapsed_s": 0.0123}},
            ],
        )
        return session


# ---------------------------------------------------------------- help
@pytest.mark.parametrize("name", [name for name, _ in commands()])
def test_help_of_each_command_fits_80_columns_and_cuts_nothing(narrow: CliRunner, name: str) -> None:
    result = narrow.invoke(app, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert_fits(result.stdout)


def test_top_level_help_lists_each_command_whole_at_80_columns(narrow: CliRunner) -> None:
    result = narrow.invoke(app, ["--help"])
    assert result.exit_code == 0
    assert_fits(result.stdout)
    flat = " ".join(result.stdout.split())
    for _, command in commands():
        first_sentence = " ".join((command.help or "").split("\n\n")[0].split())
        assert first_sentence in flat


@pytest.mark.parametrize(("name", "command"), commands())
def test_every_option_and_argument_has_help(name: str, command: Any) -> None:
    for param in command.params:
        text = getattr(param, "help", None)
        assert text and text.strip(), f"{name} {param.name} has no help"


def test_export_help_reads_as_whole_sentences() -> None:
    command = dict(commands())["export"]
    paragraphs = [" ".join(p.split()) for p in (command.help or "").split("\n\n")]
    helps = [" ".join(str(getattr(p, "help", "")).split()) for p in command.params]
    for sentence in paragraphs + helps:
        assert sentence[0].isupper() and sentence.endswith("."), sentence


# ---------------------------------------------------------------- list, stats
def test_list_at_80_columns_folds_a_long_user_id_instead_of_cutting_it(narrow: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")
    session = asyncio.run(add_session(url, user_id=LONG_USER))
    result = narrow.invoke(app, ["list", "--store", url])
    assert result.exit_code == 0
    assert_fits(result.stdout)
    assert session.session_id in result.stdout
    user_column = "".join(line.split("│")[2].strip() for line in result.stdout.splitlines() if line.count("│") > 3)
    assert LONG_USER in user_column


def test_stats_at_80_columns_cuts_no_tool_name(narrow: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")
    tool = "a_tool_with_a_name_long_enough_to_need_folding_" + "x" * 30

    async def fill() -> None:
        async with create_store(url) as store:
            now = time.time()
            session = Session(user_id="u", created_at=now, last_accessed_at=now, expiry_at=now + 600)
            await store.restore(session, [{"timestamp": now, "type": "context", "data": {"tool_name": tool}}])

    asyncio.run(fill())
    result = narrow.invoke(app, ["stats", "--store", url])
    assert result.exit_code == 0
    assert_fits(result.stdout)
    assert tool in "".join(line.split("│")[1].strip() for line in result.stdout.splitlines() if "│" in line)


# ---------------------------------------------------------------- show
def test_show_at_80_columns_is_indented_json_with_nothing_cut(narrow: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")
    session = asyncio.run(
        add_session(url, user_id=LONG_USER, state={"long": LONG_VALUE, "api_key": "sk-1"}, preferences={"tz": "UTC"})
    )
    result = narrow.invoke(app, ["show", session.session_id, "--store", url])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("{\n  ")  # indented
    assert "…" not in result.stdout
    doc = json.loads(result.stdout)
    assert doc["session_id"] == session.session_id and doc["user_id"] == LONG_USER
    assert doc["state"] == {"long": LONG_VALUE, "api_key": "***redacted***"}
    assert doc["preferences"] == {"tz": "UTC"}
    assert doc["history"][2]["data"]["text"] == LONG_VALUE
    assert "conversation" not in doc


def test_show_rounds_durations_and_gives_times_an_age(runner: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")
    session = asyncio.run(add_session(url, user_id="u"))
    result = runner.invoke(app, ["show", session.session_id, "--store", url])
    assert result.exit_code == 0
    doc = json.loads(result.stdout)
    assert [entry["data"].get("duration") for entry in doc["history"]] == ["1.5s", "3m 20s", None]
    assert doc["history"][2]["data"]["elapsed_s"] == "12 ms"
    assert doc["created"].endswith("ago)") and " UTC (3m 2" in doc["created"]
    assert re.search(r" UTC \(in (59m \d+s|1h 0m)\)$", doc["expires"]), doc["expires"]
    raw = json.loads(runner.invoke(app, ["show", session.session_id, "--store", url, "--json"]).stdout)
    assert [entry["data"].get("duration") for entry in raw["history"]] == [1.5, 200.2, None]


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0000004, "0 µs"),
        (0.0123, "12 ms"),
        (0.9994, "999 ms"),
        (1.0, "1.0s"),
        (4.25, "4.2s"),
        (42.4, "42s"),
        (59.6, "1m 0s"),
        (200.2, "3m 20s"),
        (3600, "1h 0m"),
        (7530, "2h 6m"),
        (3 * 86400 + 4 * 3600 + 100, "3d 4h"),
        (-200.2, "-3m 20s"),
    ],
)
def test_format_duration_rounds_for_people(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_show_prints_the_stored_conversation(runner: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "s.db")

    async def converse() -> str:
        async with create_store(url) as store:
            manager = SessionManager(store, auto_cleanup=False)
            session = await manager.create_session("ada")
            agent: Agent[Any, str] = Agent(TestModel(call_tools=[], custom_output_text="Noted, Ada."))
            conversations = DatabaseConversationStore(store)
            await run_turn(
                agent, manager, session.session_id, "Remember my token=abc", conversation_store=conversations
            )
            return session.session_id

    sid = asyncio.run(converse())
    result = runner.invoke(app, ["-vv", "show", sid, "--store", url])
    assert result.exit_code == 0, result.output
    conversation = json.loads(result.stdout)["conversation"]
    parts = [part for message in conversation for part in message["parts"]]
    assert [message["kind"] for message in conversation] == ["request", "response"]
    assert parts[0] == {"part": "user-prompt", "content": "Remember my token=abc"}
    assert {"part": "text", "content": "Noted, Ada."}.items() <= parts[-1].items()
    assert "has a stored conversation" in result.stderr  # a -vv debug line
    raw = json.loads(runner.invoke(app, ["show", sid, "--store", url, "--json"]).stdout)
    assert raw["conversation"] == conversation


def test_show_reads_without_creating_conversation_tables(runner: CliRunner, populated: Populated) -> None:
    result = runner.invoke(app, ["show", populated.secret_id, "--store", populated.url])
    assert result.exit_code == 0
    assert "conversation" not in json.loads(result.stdout)
    path = populated.url.removeprefix("sqlite+aiosqlite:///")
    with sqlite3.connect(path) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert not any("conversation" in name for name in tables)


# ---------------------------------------------------------------- logs
def test_verbose_prints_info_log_lines_and_quiet_prints_none(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    quiet = runner.invoke(app, ["export", str(tmp_path / "a.jsonl"), "--store", populated.url])
    loud = runner.invoke(app, ["-v", "export", str(tmp_path / "b.jsonl"), "--store", populated.url])
    assert quiet.exit_code == loud.exit_code == 0
    assert "exported 8 sessions" not in quiet.stderr
    assert "exported 8 sessions" in loud.stderr


def test_show_prints_a_conversation_stored_in_redis(runner: CliRunner) -> None:
    from agent_sessions import RedisSessionStore
    from agent_sessions.integrations.pydantic_ai import RedisConversationStore

    from ..redis.stores import delete_prefix, redis_host_port
    from ..support import REDIS_START, REDIS_URL, require_service

    require_service("Redis", *redis_host_port(REDIS_URL), REDIS_START)
    # The command line has no key prefix option, so this test keeps to a database of its own
    # (13) under the default prefix, and deletes every key under it afterwards.
    host, port = redis_host_port(REDIS_URL)
    url = f"redis://{host}:{port}/13"

    async def converse() -> str:
        async with create_store(url) as store:
            manager = SessionManager(store, auto_cleanup=False)
            session = await manager.create_session("ada")
            agent: Agent[Any, str] = Agent(TestModel(call_tools=[], custom_output_text="Noted."))
            await run_turn(
                agent, manager, session.session_id, "Hello", conversation_store=RedisConversationStore(store)
            )
            return session.session_id

    async def clean() -> None:
        async with create_store(url) as store:
            assert isinstance(store, RedisSessionStore)
            await delete_prefix(store)

    try:
        sid = asyncio.run(converse())
        result = runner.invoke(app, ["show", sid, "--store", url])
        assert result.exit_code == 0, result.output
        conversation = json.loads(result.stdout)["conversation"]
        assert conversation[0]["parts"] == [{"part": "user-prompt", "content": "Hello"}]
        assert conversation[1]["parts"][0]["content"] == "Noted."
    finally:
        asyncio.run(clean())


def test_conversation_document_redacts_tool_arguments_and_drops_provider_noise() -> None:
    from agent_sessions.cli import redact
    from agent_sessions.display import conversation_document

    messages = [
        {
            "kind": "response",
            "timestamp": "2026-12-02T01:00:00Z",
            "model_name": "m",
            "usage": {"input_tokens": 3},
            "parts": [
                {
                    "part_kind": "tool-call",
                    "tool_name": "login",
                    "args": {"user": "ada", "api_key": "sk-should-not-print"},
                    "tool_call_id": "c1",
                    "id": None,
                    "provider_details": {"x": 1},
                }
            ],
        }
    ]
    assert conversation_document(messages, redact=redact) == [
        {
            "kind": "response",
            "time": "2026-12-02T01:00:00Z",
            "model": "m",
            "parts": [
                {
                    "part": "tool-call",
                    "tool_name": "login",
                    "args": {"user": "ada", "api_key": "***redacted***"},
                    "tool_call_id": "c1",
                }
            ],
        }
    ]
