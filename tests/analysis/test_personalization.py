"""Preferences inferred from behaviour: proposed with evidence, written only when asked."""

from __future__ import annotations

from typing import Any

import pytest

from agent_sessions import SessionManager
from agent_sessions.analysis import (
    Personalizer,
    analyze_history,
    suggest_preferences,
    suggestions_table,
    time_of_day,
)
from agent_sessions.errors import SessionNotFound

from .conftest import DAY

H = 3600.0


def tool_call(offset: float, tool: str) -> dict[str, Any]:
    return {"timestamp": DAY + offset, "type": "context", "data": {"tool_name": tool, "duration": 0.1}}


def message(offset: float, text: str) -> dict[str, Any]:
    return {"timestamp": DAY + offset, "type": "message", "data": {"content": text}}


#: 10 entries, 8 in the morning (07:00-09:00) and 2 in the evening; 7 tool calls; 3 French messages.
BEHAVIOUR = [
    tool_call(7 * H, "search"),
    tool_call(7 * H + 1, "search"),
    tool_call(7 * H + 2, "search"),
    tool_call(8 * H, "weather"),
    tool_call(8 * H + 1, "weather"),
    tool_call(9 * H, "translate"),
    message(9 * H + 1, "Bonjour, je cherche un hôtel pour le week-end"),
    message(9 * H + 2, "Est-ce que vous avez une chambre avec vue ?"),
    tool_call(20 * H, "search"),
    message(20 * H + 1, "Merci, je prends la chambre"),
]


def by_key(suggestions: list[Any]) -> dict[str, Any]:
    return {s.key: s for s in suggestions}


def test_time_of_day_buckets() -> None:
    assert [time_of_day(h) for h in (0, 5, 6, 11, 12, 17, 18, 23)] == [
        "night",
        "night",
        "morning",
        "morning",
        "afternoon",
        "afternoon",
        "evening",
        "evening",
    ]
    with pytest.raises(ValueError):
        time_of_day(24)


def test_suggestions_carry_value_confidence_and_evidence() -> None:
    found = by_key(suggest_preferences(analyze_history(BEHAVIOUR)))
    tools = found["favorite_tools"]
    # translate was called once: not a favourite. search 4 + weather 2 = 6 of 7 calls.
    assert tools.value == ["search", "weather"]
    assert tools.confidence == round(6 / 7, 4)
    assert tools.evidence == "6 of 7 tool calls went to search (4), weather (2)"
    day = found["preferred_time_of_day"]
    assert (day.value, day.confidence) == ("morning", 0.8)
    assert day.details["by_period"] == {"night": 0, "morning": 8, "afternoon": 0, "evening": 2}
    language = found["language"]
    assert (language.value, language.confidence) == ("fr", 1.0)


def test_too_little_evidence_suggests_nothing_while_language_only_needs_three_messages() -> None:
    assert suggest_preferences(analyze_history(BEHAVIOUR[:3])) == []
    assert [s.key for s in suggest_preferences(analyze_history(BEHAVIOUR), min_evidence=50)] == ["language"]


def test_a_preference_already_set_to_the_suggested_value_is_not_proposed_again() -> None:
    found = suggest_preferences(analyze_history(BEHAVIOUR), {"language": "fr", "preferred_time_of_day": "evening"})
    keys = by_key(found)
    assert "language" not in keys
    assert keys["preferred_time_of_day"].current == "evening"
    table = suggestions_table(found)
    assert table.column("preference") == ["favorite_tools", "preferred_time_of_day"]
    assert table.column("suggested")[0] == "search, weather"


async def _session(manager: SessionManager, user: str, entries: list[dict[str, Any]]) -> str:
    session = await manager.create_session(user)
    session.history.extend(entries)
    await manager.update_session(session)
    return session.session_id


async def test_suggesting_writes_nothing(manager: SessionManager) -> None:
    sid = await _session(manager, "ana", BEHAVIOUR)
    before = await manager.store.get(sid)
    suggestions = await Personalizer(manager).suggest(sid)
    after = await manager.store.get(sid)
    assert suggestions and before is not None and after is not None
    assert after.version == before.version and after.preferences == {}


async def test_suggestions_for_a_user_use_all_of_their_sessions(manager: SessionManager) -> None:
    first = await _session(manager, "ana", BEHAVIOUR[:5])
    await _session(manager, "ana", BEHAVIOUR[5:])
    personalizer = Personalizer(manager)
    across = by_key(await personalizer.suggest(first))
    alone = by_key(await personalizer.suggest(first, across_user=False))
    assert across["favorite_tools"].value == ["search", "weather"]
    assert "favorite_tools" in alone and alone["favorite_tools"].details["tool_calls"] == 5
    assert "language" not in alone


async def test_applying_writes_only_the_chosen_suggestions_and_keeps_concurrent_changes(
    manager: SessionManager,
) -> None:
    sid = await _session(manager, "ana", BEHAVIOUR)
    personalizer = Personalizer(manager)
    suggestions = await personalizer.suggest(sid)
    # Another writer changes a different preference after the suggestions were computed.
    other = await manager.get_session(sid)
    assert other is not None
    other.preferences["theme"] = "dark"
    await manager.update_session(other)

    saved = await personalizer.apply(sid, suggestions, keys=["language"])
    assert saved.preferences == {"theme": "dark", "language": "fr"}
    stored = await manager.store.get(sid)
    assert stored is not None and stored.preferences == {"theme": "dark", "language": "fr"}
    # Preferences follow the user: a new session of ana starts with them.
    fresh = await manager.create_session("ana")
    assert fresh.preferences["language"] == "fr"


async def test_applying_to_a_missing_session_raises(manager: SessionManager) -> None:
    sid = await _session(manager, "ana", BEHAVIOUR)
    suggestions = await Personalizer(manager).suggest(sid)
    await manager.delete_session(sid)
    with pytest.raises(SessionNotFound):
        await Personalizer(manager).apply(sid, suggestions)
