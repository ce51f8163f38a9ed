"""A malformed store URL on the command line: exit code 2 and one line naming the bad part,
before anything connects or any file is written."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_sessions.cli import app

from ..core.test_store_urls import MALFORMED
from .test_cli import assert_one_line_error, run


@pytest.mark.parametrize(("url", "fragment"), MALFORMED)
def test_list_with_a_malformed_store_url_exits_2_naming_the_part(runner: CliRunner, url: str, fragment: str) -> None:
    code, out, err = run(runner, "list", "--store", url)
    assert_one_line_error(code, out, err, 2, fragment)
    assert "bad store URL" in err


def test_a_malformed_url_from_the_environment_exits_2(runner: CliRunner) -> None:
    result = runner.invoke(app, ["stats"], env={"AGENT_SESSIONS_STORE": "redis://127.0.0.1:6379/abc"})
    assert_one_line_error(result.exit_code, result.stdout, result.stderr, 2, "redis db must be an integer")


@pytest.mark.parametrize("which", ["SRC", "DST"])
def test_migrate_checks_both_urls_before_connecting(runner: CliRunner, tmp_path: Path, which: str) -> None:
    good = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    bad = "redis://127.0.0.1:99999/0"
    args = ["migrate", bad, good] if which == "SRC" else ["migrate", good, bad]
    code, out, err = run(runner, *args)
    assert_one_line_error(code, out, err, 2, "port must be an integer 1-65535, got '99999'")
    assert not (tmp_path / "x.db").exists()


def test_export_with_a_malformed_url_writes_no_file(runner: CliRunner, tmp_path: Path) -> None:
    target = tmp_path / "b.jsonl"
    code, out, err = run(runner, "export", str(target), "--store", "sqlite+aiosqlite://")
    assert_one_line_error(code, out, err, 2, "sqlite URL needs a path")
    assert list(tmp_path.iterdir()) == []


def test_the_error_line_never_shows_the_password(runner: CliRunner) -> None:
    code, out, err = run(runner, "list", "--store", "redis://bob:hunter2@127.0.0.1:6379/abc")
    assert_one_line_error(code, out, err, 2, "redis db must be an integer")
    assert "hunter2" not in out + err
