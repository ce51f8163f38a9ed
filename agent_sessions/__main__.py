"""`python -m agent_sessions ...` runs the `agent-sessions` command."""

from __future__ import annotations

from .cli import main

main()
