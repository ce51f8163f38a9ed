"""A newcomer's script that forgets ``async with`` (or ``close()``) on the embedded SQLite store
gets this library's warning saying what to do, not SQLAlchemy's "non-checked-in connection"
error. Run in a fresh interpreter, with Python's default warning filters, as a user would."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

FORGETFUL = textwrap.dedent(
    """
    import asyncio, sys
    from agent_sessions import SessionManager, create_store

    async def main():
        manager = SessionManager(create_store(f"sqlite+aiosqlite:///{sys.argv[1]}"))
        session = await manager.create_session(data={"k": "v"})
        assert (await manager.get_session(session.session_id)).get("k") == "v"
        # no `async with manager`, no `await manager.stop()`

    asyncio.run(main())
    print("done")
    """
)


def run_script(source: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", source, str(tmp_path / "forgetful.db")],
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_forgetting_to_close_the_sqlite_store_warns_with_our_message_and_not_sqlalchemys(tmp_path: Path) -> None:
    result = run_script(FORGETFUL, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "done"
    assert "StoreNotClosedWarning" in result.stderr
    assert "was not closed: use `async with SessionManager(store)`" in result.stderr
    assert "non-checked-in connection" not in result.stderr
    assert "SAWarning" not in result.stderr


def test_a_closed_store_gives_no_warning(tmp_path: Path) -> None:
    careful = FORGETFUL.replace("# no `async with manager`, no `await manager.stop()`", "await manager.stop()")
    result = run_script(careful, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
