"""The `agent-sessions` command through typer's test runner: output, exit codes, one-line errors."""

from __future__ import annotations

import asyncio
import json
import shlex
import stat
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_sessions import Session, create_store
from agent_sessions.cli import app, redact, safe_url

from ..ops.helpers import snapshot
from .conftest import Populated, sqlite_url

LIVE = 8  # sessions in the `populated` store that have not expired


def run(runner: CliRunner, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def assert_one_line_error(code: int, out: str, err: str, expected_code: int, fragment: str) -> None:
    assert code == expected_code, (out, err)
    assert "Traceback" not in out + err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:") and fragment in lines[0], lines[0]


# ---------------------------------------------------------------- list
def test_list_shows_a_page_and_prints_the_command_for_the_next(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = run(runner, "list", "--store", populated.url, "--limit", "3")
    assert code == 0
    shown = [sid for sid in populated.ids if sid in out]
    assert len(shown) == 3
    hint = out[out.index("Next page: ") + len("Next page: ") :].strip()
    words = shlex.split(hint)
    assert words[:2] == ["agent-sessions", "list"] and words[words.index("--store") + 1] == populated.url
    assert words[words.index("--limit") + 1] == "3" and "--cursor" in words
    # Running the printed command (without the program name) shows the next page.
    code, out2, _ = run(runner, *words[1:])
    assert code == 0
    assert len([sid for sid in populated.ids if sid in out2]) == 3 and not set(shown) & {
        sid for sid in populated.ids if sid in out2
    }


def test_list_pages_cover_every_live_session_once(runner: CliRunner, populated: Populated) -> None:
    seen: list[str] = []
    cursor: list[str] = []
    pages = 0
    while True:
        code, out, _ = run(runner, "list", "--store", populated.url, "--limit", "3", "--json", *cursor)
        assert code == 0
        data = json.loads(out)
        seen += [s["session_id"] for s in data["sessions"]]
        pages += 1
        if data["next_cursor"] is None:
            break
        cursor = ["--cursor", data["next_cursor"]]
    assert pages == 3
    assert sorted(seen) == sorted(populated.ids) and len(seen) == len(set(seen))


def test_list_refuses_a_bad_cursor_and_a_limit_out_of_range(runner: CliRunner, populated: Populated) -> None:
    code, out, err = run(runner, "list", "--store", populated.url, "--cursor", "not-a-cursor")
    assert_one_line_error(code, out, err, 2, "cursor")
    code, _, _ = run(runner, "list", "--store", populated.url, "--limit", "1001")
    assert code == 2
    code, _, err = run(runner, "list", "--store", populated.url, "--page", "2")
    assert code == 2  # skip paging is gone: pages follow cursors


def test_list_filters_by_user(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = run(runner, "list", "--store", populated.url, "--user", "user-0", "--json")
    assert code == 0
    sessions = json.loads(out)["sessions"]
    assert len(sessions) == 3
    assert {s["user_id"] for s in sessions} == {"user-0"}


def test_list_reads_the_store_from_the_environment(runner: CliRunner, populated: Populated) -> None:
    result = runner.invoke(app, ["list", "--json"], env={"AGENT_SESSIONS_STORE": populated.url})
    assert result.exit_code == 0
    assert len(json.loads(result.stdout)["sessions"]) == LIVE


def test_list_of_an_empty_store(runner: CliRunner) -> None:
    code, out, _ = run(runner, "list", "--store", "memory://")
    assert (code, out.strip()) == (0, "No sessions.")


# ---------------------------------------------------------------- show
def test_show_prints_the_session_with_secrets_redacted(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = run(runner, "show", populated.secret_id, "--store", populated.url)
    assert code == 0
    assert populated.secret_id in out
    assert "teal" in out and "login" in out and "user-0" in out
    for secret in ("sk-live-should-not-print", "hunter2", "auth-should-not-print", "tok-should-not-print"):
        assert secret not in out
    assert "***redacted***" in out


def test_show_json_is_redacted_too(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = run(runner, "show", populated.secret_id, "--store", populated.url, "--json")
    assert code == 0
    data = json.loads(out)
    assert data["state"]["api_key"] == data["auth_info"] == "***redacted***"
    assert data["state"]["nested"] == {"password": "***redacted***", "color": "teal"}
    assert data["history"][0]["data"] == {"token": "***redacted***"}


def test_show_unknown_session_exits_1(runner: CliRunner, populated: Populated) -> None:
    code, out, err = run(runner, "show", "A" * 43, "--store", populated.url)
    assert_one_line_error(code, out, err, 1, "no live session")


def test_show_malformed_id_exits_2_without_echoing_it(runner: CliRunner, populated: Populated) -> None:
    code, out, err = run(runner, "show", "<script>", "--store", populated.url)
    assert_one_line_error(code, out, err, 2, "invalid session id")
    assert "<script>" not in err


# ---------------------------------------------------------------- export / import
@pytest.mark.parametrize("name", ["backup.jsonl", "backup.jsonl.gz"])
def test_export_then_import_round_trips(runner: CliRunner, populated: Populated, tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    code, out, _ = run(runner, "export", str(path), "--store", populated.url, "--include-auth")
    assert code == 0
    assert f"Exported {LIVE} sessions" in out and "auth_info included" in out
    target = sqlite_url(tmp_path / "restored.db")
    code, out, _ = run(runner, "import", str(path), "--store", target)
    assert code == 0
    assert f"{LIVE} new, 0 replaced, 0 skipped" in out

    async def compare() -> None:
        async with create_store(populated.url) as a, create_store(target) as b:
            assert await snapshot(b) == await snapshot(a)

    asyncio.run(compare())
    code, out, _ = run(runner, "import", str(path), "--store", target, "--on-conflict", "skip")
    assert code == 0 and f"0 new, 0 replaced, {LIVE} skipped" in out


def test_export_leaves_out_auth_info_by_default(runner: CliRunner, populated: Populated, tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    code, _, _ = run(runner, "export", str(path), "--store", populated.url)
    assert code == 0
    assert "auth-should-not-print" not in path.read_text()


def test_export_writes_an_owner_only_file_and_its_help_says_so(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    path = tmp_path / "b.jsonl"
    code, _, _ = run(runner, "export", str(path), "--store", populated.url)
    assert code == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    code, out, _ = run(runner, "export", "--help")
    assert code == 0
    assert "0600" in out and "session ids" in " ".join(out.split())


def test_import_of_a_corrupt_file_names_the_line(runner: CliRunner, populated: Populated, tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl"
    run(runner, "export", str(path), "--store", populated.url)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[6] = b"{oops\n"
    path.write_bytes(b"".join(lines))
    code, out, err = run(runner, "import", str(path), "--store", "memory://")
    assert_one_line_error(code, out, err, 1, f"line 7 of {path} is bad (the file): not valid JSON")


def test_import_of_a_missing_file_exits_1(runner: CliRunner, tmp_path: Path) -> None:
    code, out, err = run(runner, "import", str(tmp_path / "nope.jsonl"), "--store", "memory://")
    assert_one_line_error(code, out, err, 1, "no such file")


def test_import_rejects_an_unknown_policy(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(app, ["import", str(tmp_path / "x.jsonl"), "--store", "memory://", "--on-conflict", "merge"])
    assert result.exit_code == 2


# ---------------------------------------------------------------- migrate
def test_migrate_copies_everything_and_reruns_idempotently(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    target = sqlite_url(tmp_path / "copy.db")
    code, out, _ = run(runner, "migrate", populated.url, target, "--batch-size", "3")
    assert code == 0
    assert f"{LIVE} new" in out

    async def compare() -> None:
        async with create_store(populated.url) as a, create_store(target) as b:
            assert await snapshot(b) == await snapshot(a)

    asyncio.run(compare())
    code, out, _ = run(runner, "migrate", populated.url, target, "--no-count")
    assert code == 0 and f"0 new, 0 replaced, {LIVE} skipped" in out


def test_migrate_from_a_missing_file_fails_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    code, out, err = run(runner, "migrate", sqlite_url(tmp_path / "nope.db"), "memory://")
    assert_one_line_error(code, out, err, 1, "does not exist")
    assert not (tmp_path / "nope.db").exists()


# ---------------------------------------------------------------- cleanup / stats
def test_cleanup_removes_only_expired_sessions(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = run(runner, "cleanup", "--store", populated.url)
    assert (code, out.strip()) == (0, f"Removed {populated.expired} expired sessions.")
    code, out, _ = run(runner, "cleanup", "--store", populated.url)
    assert out.strip() == "Removed 0 expired sessions."
    _, out, _ = run(runner, "list", "--store", populated.url, "--json", "--limit", "100")
    assert len(json.loads(out)["sessions"]) == LIVE


def test_stats_counts_sessions_users_sizes_and_history(runner: CliRunner, populated: Populated) -> None:
    code, out, _ = run(runner, "stats", "--store", populated.url, "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["sessions"] == LIVE
    assert stats["users"] == 3
    assert stats["anonymous_sessions"] == 1
    assert stats["history_entries"] == 7 * 4 + 4
    assert 0 < stats["bytes_average"] <= stats["bytes_largest"] < stats["bytes_total"]
    history = stats["history"]
    assert history["entries_by_type"] == {"tool_call": 28, "context": 3, "login": 1}
    assert (history["agent_runs"], history["tool_calls"], history["errors"]) == (1, 2, 0)
    assert history["top_tools"] == [{"tool": "search", "calls": 2, "errors": 0, "mean_duration_s": 1.0}]
    code, out, _ = run(runner, "stats", "--store", populated.url)
    assert code == 0
    for label in ("live sessions", "History analysis", "tool_call", "Most used tools", "search"):
        assert label in out


def test_stats_can_analyse_the_full_history(runner: CliRunner, tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "long.db")

    async def fill_long() -> None:
        async with create_store(url) as store:
            now = time.time()
            session = Session(user_id="u", created_at=now, last_accessed_at=now, expiry_at=now + 600)
            entries = [{"timestamp": now, "type": "message", "data": {"i": i}} for i in range(80)]
            await store.restore(session, entries)

    asyncio.run(fill_long())
    _, out, _ = run(runner, "stats", "--store", url, "--json")
    _, full, _ = run(runner, "stats", "--store", url, "--json", "--full-history")
    assert json.loads(full)["history"]["entries"] == 80
    assert json.loads(out)["history"]["entries"] == 50  # the default recent window


# ---------------------------------------------------------------- errors a shell user sees
@pytest.mark.parametrize("command", ["list", "stats", "cleanup", "export"])
def test_bad_store_url_is_one_line_and_exit_2(runner: CliRunner, command: str, tmp_path: Path) -> None:
    args = [command, *([str(tmp_path / "x.jsonl")] if command == "export" else []), "--store", "nosuch://x"]
    code, out, err = run(runner, *args)
    assert_one_line_error(code, out, err, 2, "unknown store URL scheme")


def test_missing_default_sqlite_file_is_reported_not_created(
    runner: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run(runner, "list")
    assert_one_line_error(code, out, err, 1, "agent_sessions.db")
    assert not (tmp_path / "agent_sessions.db").exists()


def test_password_in_url_is_never_printed() -> None:
    assert safe_url("postgresql+asyncpg://bob:s3cret@db:5432/x") == "postgresql+asyncpg://bob:***@db:5432/x"
    assert safe_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert safe_url("memory://") == "memory://"


def test_redact_hides_secret_looking_keys_at_any_depth() -> None:
    data = {"Authorization": "Bearer x", "items": [{"apiKey": "k", "name": "n"}], "note": "token-free"}
    assert redact(data) == {
        "Authorization": "***redacted***",
        "items": [{"apiKey": "***redacted***", "name": "n"}],
        "note": "token-free",
    }


def test_version_and_help(runner: CliRunner) -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.startswith("agent-sessions ")
    result = runner.invoke(app, [])
    assert result.exit_code in (0, 2) and "migrate" in result.stdout + result.stderr


def test_list_on_a_narrow_terminal_keeps_ids_whole(populated: Populated) -> None:
    narrow = CliRunner(env={"COLUMNS": "80", "AGENT_SESSIONS_STORE": None, "NO_COLOR": "1"})
    result = narrow.invoke(app, ["list", "--store", populated.url, "--limit", "100"])
    assert result.exit_code == 0
    assert all(sid in result.stdout for sid in populated.ids)
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_verbose_flag_shows_library_logs(runner: CliRunner, tmp_path: Path) -> None:
    quiet = runner.invoke(app, ["list", "--store", "postgresql+asyncpg://root@127.0.0.1:1/test"])
    loud = runner.invoke(app, ["-v", "list", "--store", "postgresql+asyncpg://root@127.0.0.1:1/test"])
    assert quiet.exit_code == loud.exit_code == 1
    assert len(quiet.stderr.strip().splitlines()) == 1
    assert len(loud.stderr.strip().splitlines()) > 1


def test_export_into_a_missing_directory_fails_cleanly(runner: CliRunner, populated: Populated, tmp_path: Path) -> None:
    code, out, err = run(runner, "export", str(tmp_path / "nope" / "b.jsonl"), "--store", populated.url)
    assert_one_line_error(code, out, err, 1, "does not exist")


def test_import_of_a_directory_fails_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    code, out, err = run(runner, "import", str(tmp_path), "--store", "memory://")
    assert_one_line_error(code, out, err, 1, "Is a directory")
