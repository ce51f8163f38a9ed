"""Helpers shared by the MCP server tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from mcp import StdioServerParameters
from typer.testing import CliRunner

from agent_sessions import SessionManager, SessionStore

ROOT = Path(__file__).resolve().parents[2]


def text_of(result: Any) -> str:
    return "".join(block.text for block in result.content)


def manager_of(store: SessionStore) -> SessionManager:
    return SessionManager(store, session_lifetime=3600, auto_cleanup=False, absolute_lifetime=None)


def child_env() -> dict[str, str]:
    """The subprocess imports this checkout and never sees a store URL from our environment."""
    return {"PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


def stdio_params(store_url: str, *args: str, cwd: Path, verbose: bool = False) -> StdioServerParameters:
    return StdioServerParameters(
        command=sys.executable,
        args=["-m", "agent_sessions", *(["-vv"] if verbose else []), "mcp", "--store", store_url, *args],
        env=child_env(),
        cwd=str(cwd),
    )


def cli_runner() -> CliRunner:
    return CliRunner(env={"COLUMNS": "200", "AGENT_SESSIONS_STORE": None, "NO_COLOR": "1"})


def sqlite_url(path: Path) -> str:
    return f"sqlite+aiosqlite:///{path}"
