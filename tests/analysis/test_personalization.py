"""Preferences inferred from behaviour: proposed with evidence, written only when asked."""

from __future__ import annotations

from typing import Any

import pytest

from agent_sessions import SessionManager
from agent_sessions.analysis import (
    HistoryStats,
    Personalizer,
    analyze_history,
    suggest_preferences,
    suggestions_table,
    time_of_day,
)
from agent_sessions.analysis.personalization import evidence_spread
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


def shifted(entries: list[dict[str, Any]], days: int) -> list[dict[str, Any]]:
    return [{**e, "timestamp": e["timestamp"] + days * 24 * H} for e in entries]


def habit(sessions: int) -> HistoryStats:
    """BEHAVIOUR repeated in `sessions` sessions, one per day: a habit, not a burst."""
    stats = HistoryStats()
    for day in range(sessions):
        stats.merge(analyze_history(shifted(BEHAVIOUR, day)))
    return stats


def test_suggestions_from_evidence_over_days_and_sessions_carry_full_confidence_and_evidence() -> None:
    found = by_key(suggest_preferences(habit(3)))
    tools = found["favorite_tools"]
    # translate, once a day, makes the top three over three days: every call is covered.
    assert tools.value == ["search", "weather", "translate"]
    assert tools.confidence == 1.0
    assert tools.evidence == (
        "21 of 21 tool calls went to search (12), weather (6), translate (3), over 3 days in 3 sessions"
    )
    day = found["preferred_time_of_day"]
    assert (day.value, day.confidence) == ("morning", 0.8)
    assert day.details["by_period"] == {"night": 0, "morning": 24, "afternoon": 0, "evening": 6}
    assert (day.details["sessions"], day.details["days"]) == (3, 3)
    language = found["language"]
    assert (language.value, language.confidence) == ("fr", 1.0)


def test_evening_entries_within_one_second_claim_no_time_of_day_and_little_confidence() -> None:
    burst = [message(20 * H + i / 10, "Bonsoir, une table pour deux") for i in range(10)]
    burst += [tool_call(20 * H + 0.5 + i / 100, "book") for i in range(6)]

    found = by_key(suggest_preferences(analyze_history(burst)))

    assert "preferred_time_of_day" not in found  # one session, one second: no habit
    assert found["language"].confidence == round(1 / 9, 4)  # full share, one session on one day
    assert found["favorite_tools"].confidence <= 0.12


def test_a_time_of_day_needs_two_sessions_and_two_days() -> None:
    two_days_one_session = analyze_history(BEHAVIOUR + shifted(BEHAVIOUR, 1))
    assert "preferred_time_of_day" not in by_key(suggest_preferences(two_days_one_session))

    one_day_two_sessions = HistoryStats()
    one_day_two_sessions.merge(analyze_history(BEHAVIOUR))
    one_day_two_sessions.merge(analyze_history(BEHAVIOUR))
    assert "preferred_time_of_day" not in by_key(suggest_preferences(one_day_two_sessions))

    day = by_key(suggest_preferences(habit(2)))["preferred_time_of_day"]
    assert day.value == "morning"
    assert day.confidence == round(0.8 * evidence_spread(2, 2), 4) < 0.8


def test_confidence_grows_with_the_spread_of_the_evidence() -> None:
    confidences = [by_key(suggest_preferences(habit(n)))["language"].confidence for n in (1, 2, 3, 4)]
    assert confidences == [round(1 / 9, 4), round(4 / 9, 4), 1.0, 1.0]


def test_too_little_evidence_suggests_nothing_while_language_only_needs_three_messages() -> None:
    assert suggest_preferences(analyze_history(BEHAVIOUR[:3])) == []
    assert [s.key for s in suggest_preferences(analyze_history(BEHAVIOUR), min_evidence=50)] == ["language"]


def test_a_preference_already_set_to_the_suggested_value_is_not_proposed_again() -> None:
    found = suggest_preferences(habit(3), {"language": "fr", "preferred_time_of_day": "evening"})
    keys = by_key(found)
    assert "language" not in keys
    assert keys["preferred_time_of_day"].current == "evening"
    table = suggestions_table(found)
    assert table.column("preference") == ["favorite_tools", "preferred_time_of_day"]
    assert table.column("suggested")[0] == "search, weather, translate"


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
