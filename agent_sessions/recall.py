"""Recall: a user's earlier sessions brought into a run, as a tool and as context.

`SessionManager.search_history` ranks the history entries of all of a user's live sessions (or of
one anonymous session). This module puts it in the hands of an agent, with the identity taken
from the run, never from the model:

- `recall_scope` — whose history a run may search: the session's user (or, for a session without
  one, the run's user), else only that one session;
- `recall_hits` — the search within that scope;
- `hit_data` — a hit as the data a model reads: which session (this one or an earlier one, by a
  short non-reversible tag, never the session id, which is a credential), when, the entry type, the
  highlighted snippet and the entry's text, bounded;
- `search_memory` — the built-in tool (registered in `agent_sessions.tools.session_tools`);
- `supports_search` — whether a store can search at all (Redis cannot: `SearchUnavailable`).

A store without search makes `search_memory` answer with a `ToolError` that names the reason,
which the integrations hand back to the model; the run goes on.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import Field

from .context import ExecutionContext
from .errors import InvalidSearchQuery, SearchUnavailable, ToolError
from .ids import id_hash
from .search import HistoryHit, entry_text

if TYPE_CHECKING:
    from .manager import SessionManager
    from .stores import SessionStore

__all__ = [
    "DEFAULT_RECALL_LIMIT",
    "MAX_QUERY_LENGTH",
    "MAX_RECALL_LIMIT",
    "MAX_TEXT_LENGTH",
    "SEARCH_TOOL",
    "hit_data",
    "recall_hits",
    "recall_scope",
    "search_memory",
    "supports_search",
]

#: The name of the built-in recall tool.
SEARCH_TOOL: Final = "search_memory"
#: Hits `search_memory` returns when the model does not say.
DEFAULT_RECALL_LIMIT: Final = 5
#: The most hits one search returns to a model (and the largest `SessionCapability(recall=k)`).
MAX_RECALL_LIMIT: Final = 20
#: The longest query a model may send (a run's prompt is cut to it for `recall=k`).
MAX_QUERY_LENGTH: Final = 500
#: How much of an entry's text one hit carries.
MAX_TEXT_LENGTH: Final = 600

Query = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_QUERY_LENGTH,
        description="Words to look for in what the user said and did before (names, topics, facts).",
    ),
]
RecallLimit = Annotated[int, Field(ge=1, le=MAX_RECALL_LIMIT, description="How many entries to return at most.")]


def supports_search(store: SessionStore) -> bool:
    """True when `store` can search history (SQLite, PostgreSQL, memory); False for Redis, and
    for any store opened with ``index_history=False``.

    A store that searches keeps each history row's searchable text (`indexes_history_text`, and
    its `index_history` option on); one that does not raises `SearchUnavailable` from
    `search_history`.
    """
    return store.indexes_history_text and store.index_history


def recall_scope(session_user_id: str | None, run_user_id: str | None) -> str | None:
    """The user whose history a run may search: the session's owner, else the run's user.

    The session's owner wins, as it does when `SessionContextProvider` loads a session into a
    context; None means the session has no user and only that session is searched.
    """
    return session_user_id if session_user_id is not None else run_user_id


async def recall_hits(
    manager: SessionManager, query: str, *, user_id: str | None, session_id: str, limit: int
) -> list[HistoryHit]:
    """The best `limit` entries for `query`: across the user's live sessions, or only in
    `session_id` when there is no user. Raises `SearchUnavailable` on a store without search."""
    if user_id is not None:
        return await manager.search_history(user_id, query, limit=limit)
    return await manager.search_history(None, query, limit=limit, session_id=session_id)


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_TEXT_LENGTH else text[: MAX_TEXT_LENGTH - 1] + "…"


def _when(timestamp: Any) -> str | None:
    if isinstance(timestamp, bool) or not isinstance(timestamp, int | float):
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def hit_data(hit: HistoryHit, *, current_session_id: str | None) -> dict[str, Any]:
    """One hit as a model reads it (strict JSON, bounded): ``session`` ("this session" or "an
    earlier session"), ``session_tag`` (a short hash grouping hits of one session), ``when`` (ISO
    8601 UTC), ``type``, ``snippet`` (matches in ``**``) and ``text`` (the entry's string values as
    `search.entry_text` indexes them, at most `MAX_TEXT_LENGTH` characters)."""
    entry = hit.entry
    return {
        "session": "this session" if hit.session_id == current_session_id else "an earlier session",
        "session_tag": id_hash(hit.session_id),
        "when": _when(entry.get("timestamp")),
        "type": entry.get("type"),
        "snippet": hit.snippet,
        "text": _bounded(entry_text(entry)),
    }


async def search_memory(
    ctx: ExecutionContext, query: Query, limit: RecallLimit = DEFAULT_RECALL_LIMIT
) -> dict[str, Any]:
    """Search what the user said and did before, in all their sessions (this one included): the
    best matching history entries, best first."""
    session = await ctx.session()
    user_id = recall_scope(session.user_id, ctx.user_id)
    try:
        hits = await recall_hits(ctx.manager, query, user_id=user_id, session_id=session.session_id, limit=limit)
    except SearchUnavailable as exc:
        raise ToolError(f"search_memory is unavailable on this store: {exc}") from exc
    except InvalidSearchQuery as exc:
        raise ToolError(f"search_memory refused the query: {exc}") from exc
    return {"query": query, "hits": [hit_data(hit, current_session_id=session.session_id) for hit in hits]}
