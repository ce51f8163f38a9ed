"""export / import / migrate on the command line: a progress bar with a total and an ETA,
`import --dry-run`, and import failures that name the line and whose fault it was."""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agent_sessions import create_store
from agent_sessions.cli import app
from agent_sessions.ops import count_export_sessions, count_sessions, import_sessions

from ..ops.helpers import snapshot
from .conftest import Populated, sqlite_url
from .test_cli import LIVE, assert_one_line_error, run

#: Rich draws live progress only on a terminal; these make it believe stderr is one.
TERMINAL = {"COLUMNS": "80", "NO_COLOR": "1", "TTY_COMPATIBLE": "1", "TTY_INTERACTIVE": "1"}


def exported(runner: CliRunner, populated: Populated, path: Path) -> Path:
    code, _, err = run(runner, "export", str(path), "--store", populated.url)
    assert code == 0, err
    return path


def session_lines(path: Path) -> list[int]:
    """1-based numbers of the file's session lines."""
    lines = path.read_text().splitlines()
    return [n for n, line in enumerate(lines, 1) if json.loads(line).get("kind") == "session"]


# ---------------------------------------------------------------- progress
@pytest.mark.parametrize("command", ["export", "migrate"])
def test_export_and_migrate_count_first_and_show_a_total_and_an_eta(
    populated: Populated, tmp_path: Path, command: str
) -> None:
    target = str(tmp_path / "b.jsonl") if command == "export" else sqlite_url(tmp_path / "copy.db")
    args = ["export", target, "--store", populated.url] if command == "export" else ["migrate", populated.url, target]
    result = CliRunner(env=TERMINAL).invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"0/{LIVE} -:--:--" in result.stderr  # the total from the count, the ETA not known yet
    assert f"{LIVE}/{LIVE} 0:00:00" in result.stderr  # done: the bar full, nothing remaining


def test_import_takes_its_total_from_the_end_marker(runner: CliRunner, populated: Populated, tmp_path: Path) -> None:
    path = exported(runner, populated, tmp_path / "b.jsonl.gz")
    result = CliRunner(env=TERMINAL).invoke(app, ["import", str(path), "--store", "memory://"])
    assert result.exit_code == 0, result.output
    assert f"0/{LIVE} -:--:--" in result.stderr and f"{LIVE}/{LIVE} 0:00:00" in result.stderr


def test_no_count_shows_a_running_count_without_a_total(populated: Populated, tmp_path: Path) -> None:
    result = CliRunner(env=TERMINAL).invoke(
        app, ["export", str(tmp_path / "b.jsonl"), "--store", populated.url, "--no-count"]
    )
    assert result.exit_code == 0
    assert f"{LIVE} sessions" in result.stderr and f"/{LIVE}" not in result.stderr


@pytest.mark.parametrize("name", ["b.jsonl", "b.jsonl.gz"])
def test_count_export_sessions_reads_the_end_marker(
    runner: CliRunner, populated: Populated, tmp_path: Path, name: str
) -> None:
    path = exported(runner, populated, tmp_path / name)
    assert asyncio.run(count_export_sessions(path)) == LIVE
    # Cut short before its end marker: no total (the import itself reports the bad line).
    content = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    cut = b"".join(content.splitlines(keepends=True)[:-1])
    path.write_bytes(gzip.compress(cut) if name.endswith(".gz") else cut)
    assert asyncio.run(count_export_sessions(path)) is None


def test_count_export_sessions_of_a_damaged_gzip_file_is_none(tmp_path: Path) -> None:
    path = tmp_path / "b.jsonl.gz"
    path.write_bytes(gzip.compress(b'{"format": "agent-sessions-export"}\n' * 100)[:40])
    assert asyncio.run(count_export_sessions(path)) is None


def test_count_sessions_counts_the_live_ones(populated: Populated) -> None:
    async def count() -> int:
        async with create_store(populated.url) as store:
            return await count_sessions(store, batch_size=3)

    assert asyncio.run(count()) == LIVE


# ---------------------------------------------------------------- dry run
def test_import_dry_run_writes_nothing_and_says_what_would_happen(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    path = exported(runner, populated, tmp_path / "b.jsonl")
    db = tmp_path / "restored.db"
    target = sqlite_url(db)
    code, out, _ = run(runner, "import", str(path), "--store", target, "--dry-run")
    assert code == 0
    assert "Dry run, nothing written" in out and f"{LIVE} new, 0 replaced, 0 skipped" in out
    assert not db.exists()  # not even an empty database file

    code, out, _ = run(runner, "import", str(path), "--store", target)
    assert code == 0 and f"{LIVE} new" in out

    async def contents() -> dict[str, dict[str, object]]:
        async with create_store(target) as store:
            return await snapshot(store)

    before = asyncio.run(contents())
    for policy, expected in (("skip", f"0 new, 0 replaced, {LIVE} skipped"), ("overwrite", f"{LIVE} replaced")):
        code, out, _ = run(runner, "import", str(path), "--store", target, "--dry-run", "--on-conflict", policy)
        assert code == 0 and expected in out, out
        assert "0 scope keys" in out or policy == "overwrite"
    assert asyncio.run(contents()) == before


def test_import_dry_run_still_reports_a_bad_line(runner: CliRunner, populated: Populated, tmp_path: Path) -> None:
    path = exported(runner, populated, tmp_path / "b.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    bad = session_lines(path)[2]
    lines[bad - 1] = b'{"kind": "session"}\n'
    path.write_bytes(b"".join(lines))
    code, out, err = run(runner, "import", str(path), "--store", "memory://", "--dry-run")
    assert_one_line_error(code, out, err, 1, f"line {bad} of {path} is bad (the file)")
    assert "2 sessions before it were checked, none after it" in err


def test_import_sessions_dry_run_returns_the_counts_of_a_real_import(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    path = exported(runner, populated, tmp_path / "b.jsonl")

    async def both() -> tuple[object, object, int]:
        async with create_store("memory://") as store:
            dry = await import_sessions(store, path, dry_run=True)
            real = await import_sessions(store, path)
            return dry, real, await count_sessions(store)

    dry, real, stored = asyncio.run(both())
    assert dry == real and stored == LIVE


# ---------------------------------------------------------------- which line, which side
def test_a_bad_line_in_the_file_is_named_as_the_file_side(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    path = exported(runner, populated, tmp_path / "b.jsonl")
    lines = path.read_bytes().splitlines(keepends=True)
    bad = session_lines(path)[1]
    lines[bad - 1] = b"{oops\n"
    path.write_bytes(b"".join(lines))
    code, out, err = run(runner, "import", str(path), "--store", "memory://")
    assert_one_line_error(code, out, err, 1, f"line {bad} of {path} is bad (the file): not valid JSON")
    assert "1 session before it was imported, none after it" in err


def test_a_store_refusal_is_named_as_the_store_side_with_the_line(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    path = exported(runner, populated, tmp_path / "b.jsonl")
    target = sqlite_url(tmp_path / "restored.db")
    assert run(runner, "import", str(path), "--store", target)[0] == 0
    code, out, err = run(runner, "import", str(path), "--store", target, "--on-conflict", "error")
    first = session_lines(path)[0]
    assert_one_line_error(
        code, out, err, 1, f"line {first} of {path} could not be written (the store, {target}): session "
    )
    assert "already exists" in err and "the lines before it were imported, none after it" in err


def test_an_unreachable_store_is_named_as_the_store_side_with_the_line(
    runner: CliRunner, populated: Populated, tmp_path: Path
) -> None:
    path = exported(runner, populated, tmp_path / "b.jsonl")
    store = "postgresql+asyncpg://root@127.0.0.1:1/test"
    code, out, err = run(runner, "import", str(path), "--store", store)
    assert_one_line_error(code, out, err, 1, f"line 2 of {path} could not be written (the store, {store})")
    assert "cannot reach the store" in err
    # Sessions go in batches: the message does not promise that nothing after the line landed.
    assert "none after it" not in err and "--on-conflict skip" in err
