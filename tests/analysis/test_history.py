"""History analysis on hand-built histories whose answers are worked out in the comments."""

from __future__ import annotations

from datetime import timedelta, timezone
from typing import Any

import pytest

from agent_sessions import SessionManager
from agent_sessions.analysis import (
    Table,
    analyze_history,
    analyze_session,
    analyze_store,
    analyze_user,
    detect_language,
    iter_full_history,
)
from agent_sessions.errors import SerializationError, SessionNotFound

from .conftest import DAY

H = 3600.0


def entry(offset: float, kind: str, **data: Any) -> dict[str, Any]:
    return {"timestamp": DAY + offset, "type": kind, "data": data}


def ctx(offset: float, tool: str | None, duration: float, **extra: Any) -> dict[str, Any]:
    return entry(offset, "context", context_id=f"c{offset}", tool_name=tool, duration=duration, **extra)


#: 8 entries: 2 messages (French), 4 tool calls, 1 run, 1 error record.
HISTORY = [
    entry(9 * H, "message", content="Bonjour, je voudrais le prix de la chambre"),  # 09:00
    ctx(9 * H + 10, "search", 0.5),  # 09:00
    ctx(9 * H + 20, "search", 1.5),  # 09:00
    ctx(9 * H + 30, "book", 2.0, error="timeout"),  # 09:00, failed tool call
    ctx(14 * H, None, 4.0),  # 14:00, the agent run itself
    entry(14 * H + 5, "error", message="boom"),  # 14:00, error record
    entry(23 * H, "message", content="Merci pour votre aide, je suis content"),  # 23:00
    ctx(23 * H + 1, "search", 1.0),  # 23:00
]


def test_counts_by_type_tools_durations_and_errors_match_the_hand_computed_answers() -> None:
    stats = analyze_history(HISTORY)
    assert stats.entries == 8
    assert stats.entries_by_type == {"message": 2, "context": 5, "error": 1}
    search, book = stats.tools["search"], stats.tools["book"]
    assert (search.calls, search.errors, search.durations) == (3, 0, [0.5, 1.5, 1.0])
    assert (search.total_duration, search.mean_duration, search.median_duration, search.max_duration) == (
        3.0,
        1.0,
        1.0,
        1.5,
    )
    assert (book.calls, book.errors, book.error_rate) == (1, 1, 1.0)
    assert stats.tool_calls == 4
    assert (stats.runs, stats.run_durations) == (1, [4.0])
    assert stats.errors == 2 and stats.error_rate == 0.25
    assert [t.name for t in stats.top_tools()] == ["search", "book"]


def test_activity_by_hour_and_session_length_from_the_timestamps() -> None:
    stats = analyze_history(HISTORY)
    expected = [0] * 24
    expected[9], expected[14], expected[23] = 4, 2, 2
    assert stats.activity_by_hour == expected
    assert stats.busiest_hour == 9
    # 09:00:00 -> 23:00:01
    assert stats.session_lengths == [14 * H + 1]


def test_activity_is_bucketed_in_the_requested_time_zone() -> None:
    stats = analyze_history(HISTORY, tz=timezone(timedelta(hours=2)))
    assert stats.activity_by_hour[11] == 4 and stats.activity_by_hour[16] == 2 and stats.activity_by_hour[1] == 2


def test_languages_come_from_explicit_fields_or_message_text() -> None:
    stats = analyze_history([*HISTORY, entry(10, "message", language="DE", content="irrelevant")])
    assert stats.languages == {"fr": 2, "de": 1}
    assert detect_language("Hello, what is the weather like in the city") == "en"
    assert detect_language("ok") is None


def test_session_length_is_widened_by_created_and_last_accessed_times() -> None:
    stats = analyze_history(HISTORY[:2], created_at=DAY, last_accessed_at=DAY + 10 * H)
    assert stats.session_lengths == [10 * H]


def test_a_malformed_entry_is_reported_not_skipped() -> None:
    with pytest.raises(SerializationError, match="history entry 1"):
        analyze_history([HISTORY[0], {"type": "x", "data": {}}])


def test_tables_show_the_figures_in_text_markdown_and_html() -> None:
    stats = analyze_history(HISTORY)
    tools = stats.tools_table()
    assert tools.columns == ("tool", "calls", "errors", "mean s", "median s", "max s")
    assert tools.to_records()[0] == {
        "tool": "search",
        "calls": 3,
        "errors": 0,
        "mean s": 1.0,
        "median s": 1.0,
        "max s": 1.5,
    }
    text = tools.to_text().splitlines()
    assert text[0] == "Tool usage"
    assert text[1].split() == ["tool", "calls", "errors", "mean", "s", "median", "s", "max", "s"]
    # Counts are integers; every float has the same four decimals, in text and Markdown alike.
    assert text[3].split() == ["search", "3", "0", "1.0000", "1.0000", "1.5000"]
    assert "| book | 1 | 1 | 2.0000 | 2.0000 | 2.0000 |" in tools.to_markdown()
    summary = dict((r["metric"], r["value"]) for r in stats.summary_table().to_records())
    assert summary["error rate"] == 0.25 and summary["tool calls"] == 4
    assert len(stats.activity_table()) == 24
    html = Table.of(("a",), [("<b>",)], title="t&t")._repr_html_()
    assert "&lt;b&gt;" in html and "t&amp;t" in html
    with pytest.raises(ValueError, match="row 0 has 2 cells for 1 columns"):
        Table.of(("a",), [(1, 2)])


def test_to_dict_is_plain_json_data() -> None:
    import json

    data = analyze_history(HISTORY).to_dict()
    assert json.loads(json.dumps(data))["tools"]["search"]["calls"] == 3


async def _session_with(manager: SessionManager, user: str | None, entries: list[dict[str, Any]]) -> str:
    session = await manager.create_session(user)
    session.history.extend(entries)
    await manager.update_session(session)
    return session.session_id


async def test_analyze_session_reads_the_whole_stored_history_page_by_page(manager: SessionManager) -> None:
    manager.store.history_window = 2
    sid = await _session_with(manager, "ana", HISTORY)
    full = await analyze_session(manager, sid)
    window = await analyze_session(manager, sid, full_history=False)
    assert full.entries == 8 and full.tools["search"].calls == 3
    assert window.entries == 2
    assert [e["timestamp"] for e in await iter_full_history(manager, sid, page_size=3)] == [
        e["timestamp"] for e in HISTORY
    ]
    assert len(await iter_full_history(manager, sid, page_size=3, max_entries=5)) == 5


async def test_analyze_session_of_a_missing_session_raises(manager: SessionManager) -> None:
    session = await manager.create_session("x")
    await manager.delete_session(session.session_id)
    with pytest.raises(SessionNotFound):
        await analyze_session(manager, session.session_id)


async def test_analyze_user_aggregates_only_that_users_sessions(manager: SessionManager) -> None:
    await _session_with(manager, "ana", HISTORY[:4])
    await _session_with(manager, "ana", HISTORY[4:])
    await _session_with(manager, "bob", HISTORY)
    ana = await analyze_user(manager, "ana")
    assert ana.sessions == 2 and ana.entries == 8
    assert ana.tools["search"].calls == 3 and ana.errors == 2
    everyone = await analyze_store(manager.store)
    assert everyone.sessions == 3 and everyone.entries == 16
