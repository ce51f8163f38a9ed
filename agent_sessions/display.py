"""How a `Session` shows itself: a compact HTML summary in Jupyter, and the JSON document
`agent-sessions show` prints.

Every value is HTML-escaped in HTML (session data comes from users and models), and `auth_info`
is never rendered, only whether one is set.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

from .errors import SerializationError, StoreUnavailable
from .ids import id_hash

if TYPE_CHECKING:
    from rich.console import Console

    from .session import Session
    from .stores.base import SessionStore

logger = logging.getLogger(__name__)

__all__ = [
    "conversation_document",
    "figure",
    "format_duration",
    "has_conversation_table",
    "print_stats",
    "session_document",
    "session_html",
    "store_stats",
    "stored_conversation",
]

#: History entries shown (the most recent ones).
HISTORY_ROWS = 5
_MAX_VALUE_CHARS = 200
_LEFT = "style='text-align:left'"


def _when(ts: object) -> str:
    if not isinstance(ts, int | float) or isinstance(ts, bool):
        return "never" if ts is None else escape(repr(ts))
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _value(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, default=repr)
    if len(text) > _MAX_VALUE_CHARS:
        text = text[: _MAX_VALUE_CHARS - 1] + "…"
    return f"<code>{escape(text)}</code>"


def _mapping(title: str, values: dict[str, Any]) -> str:
    if not values:
        return ""
    rows = "".join(f"<tr><td {_LEFT}>{escape(str(k))}</td><td {_LEFT}>{_value(v)}</td></tr>" for k, v in values.items())
    return f"<details open><summary><b>{escape(title)}</b> ({len(values)})</summary><table>{rows}</table></details>"


def session_html(session: Session) -> str:
    """An HTML table of the session's metadata, data and most recent history."""
    meta = [
        ("session id", f"<code>{escape(session.session_id)}</code>"),
        ("user", escape(session.user_id) if session.user_id is not None else "<i>anonymous</i>"),
        ("version", str(session.version)),
        ("created", _when(session.created_at)),
        ("last access", _when(session.last_accessed_at)),
        ("expires", _when(session.expiry_at)),
        ("auth_info", "<i>set (hidden)</i>" if session.auth_info is not None else "none"),
    ]
    head = "".join(f"<tr><th {_LEFT}>{k}</th><td {_LEFT}>{v}</td></tr>" for k, v in meta)
    parts = [f"<div class='agent-sessions-session'><b>Session</b><table>{head}</table>"]
    for title in ("state", "preferences", "ai_context", "feature_flags", "environment"):
        parts.append(_mapping(title, getattr(session, title)))
    recent = session.history[-HISTORY_ROWS:]
    if recent:
        rows = "".join(
            f"<tr><td>{escape(_when(e.get('timestamp')))}</td><td>{escape(str(e.get('type')))}</td>"
            f"<td {_LEFT}>{_value(e.get('data'))}</td></tr>"
            for e in recent
        )
        parts.append(
            f"<details open><summary><b>history</b> (last {len(recent)} of {len(session.history)})</summary>"
            f"<table><tr><th>time</th><th>type</th><th>data</th></tr>{rows}</table></details>"
        )
    parts.append("</div>")
    return "".join(parts)


# ---------------------------------------------------------------- the `show` command's document
#: Keys of history data holding a duration in seconds (rounded for people by `session_document`).
DURATION_KEY = re.compile(r"(^|_)(duration|elapsed|latency)(_s|_seconds)?$", re.IGNORECASE)
#: Keys of a conversation part that only matter to the model provider or the run machinery.
_PART_NOISE = frozenset({"timestamp", "id", "provider_name", "provider_details", "metadata", "tool_kind"})


def format_duration(seconds: float) -> str:
    """A duration rounded for people: ``"340 ms"``, ``"4.2s"``, ``"42s"``, ``"3m 20s"``, ``"2h 5m"``, ``"3d 4h"``."""
    if not math.isfinite(seconds):
        return repr(seconds)
    if seconds < 0:
        return "-" + format_duration(-seconds)
    if seconds < 0.001:
        return f"{seconds * 1_000_000:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m {whole % 60}s"
    minutes = round(seconds / 60)
    if minutes < 24 * 60:
        return f"{minutes // 60}h {minutes % 60}m"
    hours = round(seconds / 3600)
    return f"{hours // 24}d {hours % 24}h"


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _moment(ts: object, now: float) -> str | None:
    """``"2026-12-02 01:02:03 UTC (3m 20s ago)"``; None stays None (never)."""
    if ts is None:
        return None
    if not _number(ts):
        return repr(ts)
    assert isinstance(ts, int | float)
    when = datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    delta = now - ts
    return f"{when} ({format_duration(delta)} ago)" if delta >= 0 else f"{when} (in {format_duration(-delta)})"


def _rounded(value: Any) -> Any:
    """A copy of history data with the durations rounded for people."""
    if isinstance(value, dict):
        return {
            k: format_duration(v) if DURATION_KEY.search(str(k)) and _number(v) else _rounded(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def session_document(
    session: Session,
    history: list[dict[str, Any]],
    *,
    now: float,
    redact: Callable[[Any], Any],
    conversation: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What `agent-sessions show` prints as indented JSON: the session's metadata with times as
    dates plus rounded ages, its data, its recent `history` with rounded durations, and its
    stored `conversation` when there is one. `redact` hides secret-looking values; `auth_info`
    is only ever shown as set or not.
    """
    doc: dict[str, Any] = {
        "session_id": session.session_id,
        "user_id": session.user_id,
        "version": session.version,
        "created": _moment(session.created_at, now),
        "last_access": _moment(session.last_accessed_at, now),
        "expires": _moment(session.expiry_at, now),
        "auth_info": None if session.auth_info is None else "***redacted***",
        "history_entries": session.history_seq,
        "state": redact(session.state),
        "preferences": redact(session.preferences),
    }
    for name in ("ai_context", "feature_flags", "environment"):
        value = getattr(session, name)
        if value:
            doc[name] = redact(value)
    doc["history"] = [
        {
            "time": _moment(entry.get("timestamp"), now),
            "type": entry.get("type"),
            "data": _rounded(redact(entry.get("data"))),
        }
        for entry in history
    ]
    if conversation is not None:
        doc["conversation"] = conversation
    return doc


def conversation_document(messages: list[dict[str, Any]], *, redact: Callable[[Any], Any]) -> list[dict[str, Any]]:
    """A stored pydantic-ai conversation (messages dumped in JSON mode) cut down to what a person
    reads: each message's kind, time and model, and each part's kind, tool and content.

    Instructions (repeated in every request) and token usage are left out; tool arguments and
    contents go through `redact`.
    """
    out: list[dict[str, Any]] = []
    for message in messages:
        item: dict[str, Any] = {"kind": message.get("kind"), "time": message.get("timestamp")}
        if message.get("model_name"):
            item["model"] = message["model_name"]
        parts = []
        for part in message.get("parts", []):
            kept: dict[str, Any] = {"part": part.get("part_kind")}
            kept.update(
                (k, redact(v) if k in ("args", "content") else v)
                for k, v in part.items()
                if k not in _PART_NOISE and k != "part_kind" and v not in (None, [], {})
            )
            parts.append(kept)
        item["parts"] = parts
        out.append(item)
    return out


# ---------------------------------------------------------------- the stored conversation
async def stored_conversation(store: SessionStore, session: Session) -> list[dict[str, Any]] | None:
    """The session's pydantic-ai conversation (messages in JSON mode) if the store holds one.

    `run_turn` saves it under `conversation_id_for(session_id)`, scoped to the session's user, in
    the tables (SQL) or keys (Redis) beside the sessions. A memory store keeps none across
    processes, and without pydantic-ai installed there is none to read.
    """
    sql = hasattr(store, "engine")
    if not sql and not (hasattr(store, "client") and hasattr(store, "prefix")):
        return None
    try:
        from pydantic_ai.conversation_store import ConversationStore
        from pydantic_ai.messages import ModelMessagesTypeAdapter

        from .integrations.pydantic_ai import DatabaseConversationStore, conversation_id_for
    except ImportError:
        logger.debug("pydantic-ai is not installed: no conversation to show")
        return None
    conversations: ConversationStore
    if sql:
        database = DatabaseConversationStore(store, create_tables=False)
        if not await has_conversation_table(database):
            return None
        conversations = database
    else:
        from .integrations.pydantic_ai.conversation_redis import RedisConversationStore

        conversations = RedisConversationStore(store)
    conversation = await conversations.load(conversation_id_for(session.session_id), scope=session.user_id)
    if conversation is None:
        return None
    logger.debug("session %s has a stored conversation", id_hash(session.session_id))
    dumped: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python(conversation.messages, mode="json")
    return dumped


async def has_conversation_table(conversations: Any) -> bool:
    """Whether a `DatabaseConversationStore`'s table exists (`show` only reads: it never creates tables)."""
    import sqlalchemy as sa
    from sqlalchemy.exc import SQLAlchemyError

    table = conversations.records
    try:
        async with conversations.engine.connect() as conn:
            found: bool = await conn.run_sync(
                lambda sync: sa.inspect(sync).has_table(table.name, schema=conversations.schema)
            )
    except (SQLAlchemyError, OSError) as exc:
        raise StoreUnavailable(f"cannot look for the conversation table: {type(exc).__name__}") from exc
    return found


# ---------------------------------------------------------------- `agent-sessions stats`
async def store_stats(store: SessionStore, *, full_history: bool) -> dict[str, Any]:
    """Counts, sizes and a history analysis of every live session (what `agent-sessions stats` prints)."""
    from .analysis import HistoryStats, iter_full_history

    now = store.clock()
    sessions = anonymous = history_entries = total_bytes = largest = expiring_soon = unanalysable = 0
    users: set[str] = set()
    history = HistoryStats()
    async for session in store.iter_sessions():
        sessions += 1
        if session.user_id is None:
            anonymous += 1
        else:
            users.add(session.user_id)
        size = len(json.dumps(session.model_dump(exclude={"history"}), separators=(",", ":")).encode())
        total_bytes += size
        largest = max(largest, size)
        history_entries += session.history_seq
        if session.expiry_at is not None and session.expiry_at - now < 3600:
            expiring_soon += 1
        entries = await iter_full_history(store, session.session_id) if full_history else session.history
        try:
            history.add_session(session, entries)
        except SerializationError:
            # History written by other code may not have the {"timestamp", "type", "data"} shape.
            unanalysable += 1
    scopes = 0
    async for _ in store.iter_scopes():
        scopes += 1
    return {
        "sessions": sessions,
        "users": len(users),
        "anonymous_sessions": anonymous,
        "expiring_within_an_hour": expiring_soon,
        "scopes": scopes,
        "bytes_total": total_bytes,
        "bytes_average": total_bytes // sessions if sessions else 0,
        "bytes_largest": largest,
        "history_entries": history_entries,
        "history": {
            "analysed": "full history" if full_history else "recent window of each session",
            "sessions_not_analysable": unanalysable,
            "entries": history.entries,
            "entries_by_type": dict(sorted(history.entries_by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
            "agent_runs": history.runs,
            "tool_calls": history.tool_calls,
            "errors": history.errors,
            "error_rate": history.error_rate,
            "mean_session_length_s": history.mean_session_length,
            "busiest_hour_utc": history.busiest_hour,
            "top_tools": [
                {"tool": t.name, "calls": t.calls, "errors": t.errors, "mean_duration_s": t.mean_duration}
                for t in history.top_tools(5)
            ],
        },
    }


def figure(value: Any) -> str:
    """A number for a table: thousands separated, floats to 3 places, None as a dash."""
    from rich.markup import escape as markup_escape

    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return markup_escape(str(value))


def _figures_table(title: str) -> Any:
    """A two-column table of labelled figures (labels bold, figures right-aligned, nothing cut)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column(style="bold", overflow="fold")
    table.add_column(justify="right", overflow="fold")
    return table


def print_stats(console: Console, stats: dict[str, Any]) -> None:
    """`store_stats` as rich tables; long labels and names fold, never cut."""
    from rich.markup import escape as markup_escape
    from rich.table import Table

    table = _figures_table("Store")
    for label, key in (
        ("live sessions", "sessions"),
        ("users", "users"),
        ("anonymous sessions", "anonymous_sessions"),
        ("expiring within an hour", "expiring_within_an_hour"),
        ("scopes (users + app)", "scopes"),
        ("size, total (bytes)", "bytes_total"),
        ("size, average (bytes)", "bytes_average"),
        ("size, largest (bytes)", "bytes_largest"),
        ("history entries appended", "history_entries"),
    ):
        table.add_row(label, figure(stats[key]))
    console.print(table)
    history = stats["history"]
    summary = _figures_table(f"History analysis ({history['analysed']})")
    for label, key in (
        ("entries analysed", "entries"),
        ("agent runs", "agent_runs"),
        ("tool calls", "tool_calls"),
        ("errors", "errors"),
        ("error rate", "error_rate"),
        ("mean session length", "mean_session_length_s"),
        ("busiest hour (UTC)", "busiest_hour_utc"),
        ("sessions not analysable", "sessions_not_analysable"),
    ):
        value = history[key]
        summary.add_row(label, format_duration(value) if key.endswith("_s") and _number(value) else figure(value))
    console.print(summary)
    if history["entries_by_type"]:
        types = Table(title="Entries by type", title_justify="left")
        types.add_column("type", overflow="fold")
        types.add_column("entries", justify="right", overflow="fold")
        for kind, n in history["entries_by_type"].items():
            types.add_row(markup_escape(kind), figure(n))
        console.print(types)
    if history["top_tools"]:
        tools = Table(title="Most used tools", title_justify="left")
        for name in ("tool", "calls", "errors", "mean duration"):
            tools.add_column(name, justify="left" if name == "tool" else "right", overflow="fold")
        for t in history["top_tools"]:
            tools.add_row(
                markup_escape(t["tool"]),
                figure(t["calls"]),
                figure(t["errors"]),
                format_duration(t["mean_duration_s"]) if _number(t["mean_duration_s"]) else figure(None),
            )
        console.print(tools)
