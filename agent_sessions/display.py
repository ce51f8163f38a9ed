"""How a `Session` shows itself in Jupyter: a compact HTML summary.

Every value is HTML-escaped (session data comes from users and models), and `auth_info` is
never rendered, only whether one is set.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

__all__ = ["session_html"]

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
