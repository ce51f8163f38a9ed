"""pydantic-ai integration: persistent sessions for agents, and conversations in your store.

- `SessionCapability(manager)` — add it to an `Agent`: session tools, the user's preferences in
  the instructions, an `ExecutionContext` per run and per tool call, write-back after the run;
  ``recall=k`` adds the top k entries of the user's history that match the prompt.
- `session_toolset(manager)` — just the tools, as a `FunctionToolset` typed against `SessionDeps`.
- `SessionDeps` — the Protocol run deps satisfy (`session_id`, `user_id`); `SessionIds` is the
  simplest implementation.
- `DatabaseConversationStore` / `RedisConversationStore` — pydantic-ai `ConversationStore`
  backends on the same database or Redis as the sessions.
- `run_turn(agent, manager, session_id, prompt, conversation_store=...)` — one turn end to end.

Needs ``pip install agent-sessions[pydantic-ai]`` (and ``[redis]`` for `RedisConversationStore`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    import pydantic_ai  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "agent_sessions.integrations.pydantic_ai needs pydantic-ai: pip install agent-sessions[pydantic-ai]"
    ) from exc

from .capability import PREFERENCES_TAG, RECALL_TAG, TOOL_FLAG_PREFIX, TURN_ENTRY_TYPE, SessionCapability
from .conversation_sql import DatabaseConversationStore
from .toolset import SessionDeps, SessionIds, session_toolset
from .turn import conversation_id_for, run_turn

if TYPE_CHECKING:
    from .conversation_redis import RedisConversationStore

__all__ = [
    "PREFERENCES_TAG",
    "RECALL_TAG",
    "TOOL_FLAG_PREFIX",
    "TURN_ENTRY_TYPE",
    "DatabaseConversationStore",
    "RedisConversationStore",
    "SessionCapability",
    "SessionDeps",
    "SessionIds",
    "conversation_id_for",
    "run_turn",
    "session_toolset",
]


def __getattr__(name: str) -> Any:
    # Redis is its own extra: import its backend only when asked for.
    if name == "RedisConversationStore":
        from .conversation_redis import RedisConversationStore

        return RedisConversationStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
