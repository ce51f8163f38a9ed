"""The `agent-sessions demo`: an agent that remembers a user across two runs of the process.

The first run is a first visit: the user says who they are and how they like answers, and the
agent saves that with the session tools (preferences, and a ``user:`` state key that follows the
user). Run it again: the demo finds the user's latest live session (or starts a new one, which
inherits the user's preferences), the preferences are back in the agent's instructions, and the
agent answers from what it remembers. Rich tables show what is stored.

Offline by default: the agent's model is a scripted pydantic-ai `FunctionModel` that really
calls the tools and reads the framed preferences from its instructions. ``model="provider:name"``
(e.g. ``openai:gpt-4o``) sends the same turns to a real model instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from pydantic_ai import Agent
from pydantic_ai.conversation_store import ConversationStore, InMemoryConversationStore
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table

from .display import format_duration
from .ids import id_hash
from .integrations.pydantic_ai import (
    PREFERENCES_TAG,
    DatabaseConversationStore,
    SessionCapability,
    conversation_id_for,
    run_turn,
)
from .manager import SessionManager
from .session import Session
from .stores import DEFAULT_STORE_URL, MemorySessionStore, SessionStore, create_store

__all__ = ["run_demo"]

AGENT_INSTRUCTIONS: Final = (
    "You are a concise travel assistant. Use the session tools to remember what the user tells you "
    "about themselves (update_user_preferences) and about their trip (set_session_value with the key "
    "'user:trip'), and to recall it (get_session_value, get_recent_history)."
)


@dataclass(frozen=True, slots=True)
class _Turn:
    prompt: str
    calls: tuple[tuple[str, dict[str, Any]], ...]


FIRST_VISIT: Final = (
    _Turn(
        "Hi! I'm Ada. Please answer in French, and keep it short.",
        (("update_user_preferences", {"preferences": {"name": "Ada", "language": "French", "style": "short"}}),),
    ),
    _Turn(
        "I'm planning three days in Lisbon in May.",
        (("set_session_value", {"key": "user:trip", "value": {"city": "Lisbon", "days": 3, "month": "May"}}),),
    ),
)
RETURNING: Final = (
    _Turn(
        "Hello again! What do you remember about me?",
        (("get_session_value", {"key": "user:trip"}), ("get_recent_history", {"limit": 5})),
    ),
)
_BY_PROMPT: Final = {turn.prompt: turn for turn in (*FIRST_VISIT, *RETURNING)}
_FRAMED: Final = re.compile(rf"<{PREFERENCES_TAG}>(.*?)</{PREFERENCES_TAG}>", re.DOTALL)


def _preferences_in(instructions: str | None) -> dict[str, Any]:
    """The preferences the capability framed into the instructions (what the model 'reads')."""
    match = _FRAMED.search(instructions or "")
    if match is None:
        return {}
    try:
        found = json.loads(match.group(1))
    except json.JSONDecodeError:
        return {}
    return found if isinstance(found, dict) else {}


def _scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """An offline stand-in for an LLM: calls the turn's tools, then answers from what it got back."""
    prompt = ""
    returns: dict[str, Any] = {}
    for message in messages:
        if not isinstance(message, ModelRequest):
            continue
        for part in message.parts:
            if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                prompt, returns = part.content, {}
            elif isinstance(part, ToolReturnPart):
                returns[part.tool_name] = part.content
    turn = _BY_PROMPT.get(prompt)
    if turn is not None and not returns:
        return ModelResponse(
            parts=[ToolCallPart(name, args, tool_call_id=f"demo-{i}") for i, (name, args) in enumerate(turn.calls)]
        )
    return ModelResponse(parts=[TextPart(_reply(prompt, _preferences_in(info.instructions), returns))])


def _reply(prompt: str, preferences: dict[str, Any], returns: dict[str, Any]) -> str:
    name = preferences.get("name", "")
    french = str(preferences.get("language", "")).lower() == "french"
    if "update_user_preferences" in returns:
        saved = returns["update_user_preferences"].get("preferences", {})
        return f"C'est noté, {saved.get('name', '')} : réponses courtes, en français."
    if "set_session_value" in returns:
        return "Lisbonne en mai, trois jours : parfait. Je m'en souviendrai." if french else "Noted: Lisbon, 3 days."
    if "get_session_value" in returns:
        trip = returns["get_session_value"].get("value") or {}
        visits = len(
            [e for e in returns.get("get_recent_history", {}).get("entries", []) if e.get("type") == "context"]
        )
        if not trip:
            return f"Bonjour {name} ! Je ne sais rien de votre voyage." if french else f"Hello {name}!"
        where = f"{trip.get('days')} jours à {trip.get('city')} ({trip.get('month')})"
        return (
            f"Re-bonjour {name} ! Votre voyage : {where}. Réponses courtes, en français, comme convenu. "
            f"({visits} échanges récents en mémoire.)"
            if french
            else f"Welcome back {name}! {trip.get('days')} days in {trip.get('city')} ({trip.get('month')})."
        )
    return f"Bonjour {name} !" if french else f"Hello {name}!"


def _conversation_store_for(store: SessionStore) -> ConversationStore:
    """A conversation store on the same backend as the sessions (memory for `memory://`)."""
    if isinstance(store, MemorySessionStore):
        return InMemoryConversationStore()
    if hasattr(store, "engine"):
        return DatabaseConversationStore(store)
    if hasattr(store, "client") and hasattr(store, "prefix"):
        from .integrations.pydantic_ai import RedisConversationStore

        return RedisConversationStore(store)
    return InMemoryConversationStore()


async def _latest_session(manager: SessionManager, user_id: str) -> Session | None:
    sessions = await manager.get_user_sessions(user_id)
    return max(sessions, key=lambda s: (s.last_accessed_at, s.created_at)) if sessions else None


def _when(ts: Any) -> str:
    return datetime.fromtimestamp(ts).strftime("%H:%M:%S") if isinstance(ts, int | float) else "-"


def _json(value: Any) -> str:
    return escape(json.dumps(value, ensure_ascii=False))


def _short(value: Any, limit: int = 150) -> str:
    # A turn's tool calls are a summary; say how much is left out rather than cut silently.
    text = json.dumps(value, ensure_ascii=False)
    if len(text) <= limit:
        return escape(text)
    return escape(text[:limit]) + f" [dim](+{len(text) - limit} characters; agent-sessions show prints them all)[/]"


def _show_turn(console: Console, prompt: str, messages: list[ModelMessage], output: str) -> None:
    console.print(f"[bold cyan]you[/]   {escape(prompt)}")
    calls = [p for m in messages for p in m.parts if isinstance(p, ToolCallPart)]
    returns = {p.tool_call_id: p.content for m in messages for p in m.parts if isinstance(p, ToolReturnPart)}
    for call in calls:
        console.print(f"  [dim]tool[/] [magenta]{escape(call.tool_name)}[/]({_short(call.args_as_dict())})")
        if call.tool_call_id in returns:
            console.print(f"  [dim]   → {_short(returns[call.tool_call_id])}[/]")
    console.print(f"[bold green]agent[/] {escape(output)}\n")


def _instructions_panel(messages: list[ModelMessage]) -> Panel | None:
    """The preferences framed in the instructions at the start of the turn, if any."""
    first = next((m for m in messages if isinstance(m, ModelRequest)), None)
    framed = _FRAMED.search(first.instructions or "") if first is not None else None
    if framed is None:
        return None
    return Panel(escape(framed.group(0)), title="remembered, in the agent's instructions", border_style="green")


def _tables(console: Console, session: Session, history: list[dict[str, Any]], messages: int) -> None:
    prefs = Table(title="Preferences", title_justify="left")
    prefs.add_column("name")
    prefs.add_column("value")
    for key, value in session.preferences.items():
        prefs.add_row(escape(key), _json(value))
    state = Table(title="State", title_justify="left")
    state.add_column("key")
    state.add_column("value")
    for key, value in session.state.items():
        state.add_row(escape(key), _json(value))
    recent = Table(title="Recent history", title_justify="left")
    for column in ("time", "type", "tool", "duration"):
        recent.add_column(column)
    for entry in history:
        data = entry.get("data", {})
        duration = data.get("duration")
        recent.add_row(
            _when(entry.get("timestamp")),
            escape(str(entry.get("type"))),
            escape(str(data.get("tool_name") or "(run)")),
            format_duration(duration) if isinstance(duration, int | float) else "",
        )
    console.print(prefs)
    console.print(state)
    console.print(recent)
    console.print(
        f"[dim]session {id_hash(session.session_id)} (id hashed; the real id is a secret) · version "
        f"{session.version} · conversation: {messages} messages stored[/]"
    )


async def run_demo(
    store_url: str = DEFAULT_STORE_URL,
    *,
    model: str | None = None,
    console: Console | None = None,
    user_id: str = "demo-user",
) -> None:
    """Run the demo against `store_url`; run it twice to see the agent remember `user_id`.

    `model` is a pydantic-ai model name (``provider:name``) to use a real model; by default the
    demo is offline and needs no API key.
    """
    out = console if console is not None else Console()
    store = create_store(store_url)
    manager = SessionManager(store, auto_cleanup=False)
    conversations = _conversation_store_for(store)
    try:
        session = await _latest_session(manager, user_id)
        if session is None:
            # A new session of a known user starts with the user's preferences.
            session = await manager.create_session(user_id)
        returning = bool(session.preferences)

        def count_visit(s: Session) -> None:
            s.set("user:visits", int(s.get("user:visits", 0) or 0) + 1)

        session = await manager.mutate(session.session_id, count_visit)
        visits = session.get("user:visits")
        capability = SessionCapability(manager)
        agent: Agent[Any, str] = Agent(
            FunctionModel(_scripted_model) if model is None else model,
            instructions=AGENT_INSTRUCTIONS,
            capabilities=[capability],
        )
        headline = (
            f"returning user [bold]{escape(user_id)}[/] (visit #{visits}): the agent should remember them"
            if returning
            else f"first visit of [bold]{escape(user_id)}[/]: run the demo again and the agent will remember"
        )
        out.print(
            Panel(
                f"{headline}\nstore: {escape(store_url)} · model: {escape(model or 'offline scripted model')}",
                title="agent-sessions demo",
            )
        )
        for turn in RETURNING if returning else FIRST_VISIT:
            result = await run_turn(
                agent, manager, session.session_id, turn.prompt, conversation_store=conversations, capability=capability
            )
            new = result.new_messages()
            panel = _instructions_panel(new)
            if panel is not None:
                out.print(panel)
            _show_turn(out, turn.prompt, new, result.output)

        stored = await manager.get_session(session.session_id)
        if stored is None:
            raise RuntimeError("the demo session expired while the demo ran")
        page = await manager.get_history(stored.session_id, limit=8)
        conversation = await conversations.load_entries(conversation_id_for(stored.session_id), scope=stored.user_id)
        _tables(out, stored, page.entries, len(conversation or []))
        if isinstance(store, MemorySessionStore):
            out.print("[yellow]memory:// forgets everything when the process exits; use the default SQLite store.[/]")
        else:
            out.print(f"[bold]Run it again:[/] the agent will remember {escape(user_id)}.")
    finally:
        await manager.stop()
