"""History analysis: what happened in a session, or across all sessions of a user.

Counts entries by type; tool usage and durations from the ``context`` entries the
`SessionContextProvider` writes (``{"context_id", "tool_name", "duration"}``; an entry without a
tool name is a whole agent run); activity by hour of day; session length; errors; languages of
the user's messages. Results are plain data (`HistoryStats`, `ToolStats`) with `Table` views.

Definitions (so the numbers can be checked by hand):

- an *error* is an entry of type ``"error"``, or one whose data has a truthy ``"error"`` or a
  ``"status"`` of ``"error"``/``"failed"``; `error_rate` = errors / entries;
- a *tool call* is a ``context`` entry with a ``tool_name``; its ``duration`` is in seconds;
- *activity by hour* counts every entry by the hour of its timestamp in `tz` (default UTC);
  *active days* are the calendar days (in `tz`) with an entry, and per period of the day
  (`TIME_OF_DAY`) the stats keep the days and the number of sessions with an entry in it, so a
  suggestion can tell a habit over weeks from a burst of entries in one second;
- *session length* is from `created_at` (else the first entry) to the later of the last entry and
  `last_accessed_at`, in seconds;
- a *language* is read from a ``"language"``/``"lang"`` field of an entry's data, else guessed
  from its ``"content"``/``"text"``/``"message"``/``"prompt"`` text by `detect_language`.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import Any, Final

from ..errors import SerializationError, SessionNotFound
from ..manager import SessionManager
from ..session import Session
from ..stores.base import SessionStore
from .language import detect_language
from .table import Cell, Table

__all__ = [
    "ERROR_TYPE",
    "TIME_OF_DAY",
    "TOOL_ENTRY_TYPE",
    "HistoryStats",
    "ToolStats",
    "analyze_history",
    "analyze_session",
    "analyze_store",
    "analyze_user",
    "is_error_entry",
    "iter_full_history",
]

#: History entry type written by the session provider after each run / tool call.
TOOL_ENTRY_TYPE: Final = "context"
#: History entry type of an explicit error record.
ERROR_TYPE: Final = "error"
_ERROR_STATUSES: Final = frozenset({"error", "failed"})
_TEXT_FIELDS: Final = ("content", "text", "message", "prompt")
_LANGUAGE_FIELDS: Final = ("language", "lang")

Source = SessionStore | SessionManager

#: Periods of the day by hour range [start, end).
TIME_OF_DAY: Final = (("night", 0, 6), ("morning", 6, 12), ("afternoon", 12, 18), ("evening", 18, 24))


def time_of_day(hour: int) -> str:
    """The period of the day an hour (0-23) belongs to."""
    for name, start, end in TIME_OF_DAY:
        if start <= hour < end:
            return name
    raise ValueError(f"hour must be in 0..23, got {hour}")


def is_error_entry(entry: Mapping[str, Any]) -> bool:
    """True when a history entry records a failure (see the module docstring)."""
    if entry.get("type") == ERROR_TYPE:
        return True
    data = entry.get("data")
    if not isinstance(data, Mapping):
        return False
    return bool(data.get("error")) or data.get("status") in _ERROR_STATUSES


@dataclass(slots=True)
class ToolStats:
    """Calls, errors and durations (seconds) of one tool."""

    name: str
    calls: int = 0
    errors: int = 0
    durations: list[float] = field(default_factory=list)

    @property
    def total_duration(self) -> float:
        return math.fsum(self.durations)

    @property
    def mean_duration(self) -> float | None:
        return self.total_duration / len(self.durations) if self.durations else None

    @property
    def median_duration(self) -> float | None:
        return statistics.median(self.durations) if self.durations else None

    @property
    def max_duration(self) -> float | None:
        return max(self.durations) if self.durations else None

    @property
    def error_rate(self) -> float:
        return self.errors / self.calls if self.calls else 0.0

    def merge(self, other: ToolStats) -> None:
        """Add `other`'s calls into this one."""
        self.calls += other.calls
        self.errors += other.errors
        self.durations.extend(other.durations)


@dataclass(slots=True)
class HistoryStats:
    """Statistics over the history of one or more sessions."""

    sessions: int = 0
    entries: int = 0
    entries_by_type: dict[str, int] = field(default_factory=dict)
    tools: dict[str, ToolStats] = field(default_factory=dict)
    runs: int = 0
    run_durations: list[float] = field(default_factory=list)
    activity_by_hour: list[int] = field(default_factory=lambda: [0] * 24)
    errors: int = 0
    languages: dict[str, int] = field(default_factory=dict)
    session_lengths: list[float] = field(default_factory=list)
    first_timestamp: float | None = None
    last_timestamp: float | None = None
    #: Calendar days (ISO dates in the analysis' `tz`) with at least one entry.
    active_days: set[str] = field(default_factory=set)
    #: Per period of the day: the days with an entry in it.
    period_days: dict[str, set[str]] = field(default_factory=dict)
    #: Per period of the day: how many sessions have an entry in it.
    period_sessions: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ derived figures
    @property
    def error_rate(self) -> float:
        """Errors per history entry (0.0 without entries)."""
        return self.errors / self.entries if self.entries else 0.0

    @property
    def tool_calls(self) -> int:
        return sum(t.calls for t in self.tools.values())

    @property
    def mean_session_length(self) -> float | None:
        return math.fsum(self.session_lengths) / len(self.session_lengths) if self.session_lengths else None

    @property
    def busiest_hour(self) -> int | None:
        """The hour of day with the most entries (the earliest such hour on a tie)."""
        if not self.entries:
            return None
        return max(range(24), key=lambda h: (self.activity_by_hour[h], -h))

    def top_tools(self, n: int = 3) -> list[ToolStats]:
        """The `n` most called tools, most calls first (then by name)."""
        return sorted(self.tools.values(), key=lambda t: (-t.calls, t.name))[:n]

    # ------------------------------------------------------------------ accumulation
    def add_entries(self, entries: Iterable[Mapping[str, Any]], *, tz: tzinfo = UTC) -> None:
        """Count `entries` (shape ``{"timestamp", "type", "data"}``) into these statistics."""
        for index, entry in enumerate(entries):
            timestamp, kind, data = _unpack(entry, index)
            self.entries += 1
            self.entries_by_type[kind] = self.entries_by_type.get(kind, 0) + 1
            moment = datetime.fromtimestamp(timestamp, tz)
            self.activity_by_hour[moment.hour] += 1
            day = moment.date().isoformat()
            self.active_days.add(day)
            self.period_days.setdefault(time_of_day(moment.hour), set()).add(day)
            if self.first_timestamp is None or timestamp < self.first_timestamp:
                self.first_timestamp = timestamp
            if self.last_timestamp is None or timestamp > self.last_timestamp:
                self.last_timestamp = timestamp
            failed = is_error_entry(entry)
            if failed:
                self.errors += 1
            if kind == TOOL_ENTRY_TYPE:
                self._add_context(data, failed)
            language = _language_of(data)
            if language is not None:
                self.languages[language] = self.languages.get(language, 0) + 1

    def _add_context(self, data: Mapping[str, Any], failed: bool) -> None:
        raw = data.get("duration")
        duration = float(raw) if isinstance(raw, int | float) and not isinstance(raw, bool) else -1.0
        has_duration = math.isfinite(duration) and duration >= 0
        name = data.get("tool_name")
        if not name:
            self.runs += 1
            if has_duration:
                self.run_durations.append(duration)
            return
        tool = self.tools.setdefault(str(name), ToolStats(str(name)))
        tool.calls += 1
        if failed:
            tool.errors += 1
        if has_duration:
            tool.durations.append(duration)

    def add_session(self, session: Session, entries: Iterable[Mapping[str, Any]], *, tz: tzinfo = UTC) -> None:
        """Count one session: its `entries` and its length."""
        self.merge(
            analyze_history(entries, tz=tz, created_at=session.created_at, last_accessed_at=session.last_accessed_at)
        )

    def merge(self, other: HistoryStats) -> None:
        """Add `other` (another session's or user's statistics) into these."""
        self.sessions += other.sessions
        self.entries += other.entries
        for kind, count in other.entries_by_type.items():
            self.entries_by_type[kind] = self.entries_by_type.get(kind, 0) + count
        for name, tool in other.tools.items():
            self.tools.setdefault(name, ToolStats(name)).merge(tool)
        self.runs += other.runs
        self.run_durations.extend(other.run_durations)
        self.activity_by_hour = [a + b for a, b in zip(self.activity_by_hour, other.activity_by_hour, strict=True)]
        self.errors += other.errors
        for lang, count in other.languages.items():
            self.languages[lang] = self.languages.get(lang, 0) + count
        self.session_lengths.extend(other.session_lengths)
        stamps = [t for t in (self.first_timestamp, other.first_timestamp) if t is not None]
        self.first_timestamp = min(stamps) if stamps else None
        stamps = [t for t in (self.last_timestamp, other.last_timestamp) if t is not None]
        self.last_timestamp = max(stamps) if stamps else None
        self.active_days |= other.active_days
        for period, days in other.period_days.items():
            self.period_days.setdefault(period, set()).update(days)
        for period, count in other.period_sessions.items():
            self.period_sessions[period] = self.period_sessions.get(period, 0) + count

    # ------------------------------------------------------------------ views
    def summary_table(self) -> Table:
        """One row per headline figure."""
        rows: list[tuple[Cell, ...]] = [
            ("sessions", self.sessions),
            ("entries", self.entries),
            ("agent runs", self.runs),
            ("tool calls", self.tool_calls),
            ("errors", self.errors),
            ("error rate", round(self.error_rate, 4)),
            ("mean session length (s)", self.mean_session_length),
            ("busiest hour", self.busiest_hour),
        ]
        return Table.of(("metric", "value"), rows, title="History summary")

    def tools_table(self) -> Table:
        """One row per tool, most called first."""
        rows = [
            (t.name, t.calls, t.errors, t.mean_duration, t.median_duration, t.max_duration)
            for t in self.top_tools(len(self.tools))
        ]
        return Table.of(("tool", "calls", "errors", "mean s", "median s", "max s"), rows, title="Tool usage")

    def types_table(self) -> Table:
        """Entry counts by type, most frequent first."""
        rows = sorted(self.entries_by_type.items(), key=lambda kv: (-kv[1], kv[0]))
        return Table.of(("type", "entries"), rows, title="Entries by type")

    def activity_table(self) -> Table:
        """Entries per hour of day (hours without activity included)."""
        return Table.of(("hour", "entries"), list(enumerate(self.activity_by_hour)), title="Activity by hour")

    def tables(self) -> list[Table]:
        """Every view, for a report."""
        return [self.summary_table(), self.types_table(), self.tools_table(), self.activity_table()]

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible data."""
        return {
            "sessions": self.sessions,
            "entries": self.entries,
            "entries_by_type": dict(self.entries_by_type),
            "runs": self.runs,
            "run_durations": list(self.run_durations),
            "tools": {
                name: {
                    "calls": t.calls,
                    "errors": t.errors,
                    "total_duration": t.total_duration,
                    "mean_duration": t.mean_duration,
                    "median_duration": t.median_duration,
                    "max_duration": t.max_duration,
                }
                for name, t in self.tools.items()
            },
            "activity_by_hour": list(self.activity_by_hour),
            "errors": self.errors,
            "error_rate": self.error_rate,
            "languages": dict(self.languages),
            "session_lengths": list(self.session_lengths),
            "first_timestamp": self.first_timestamp,
            "last_timestamp": self.last_timestamp,
            "active_days": sorted(self.active_days),
            "period_days": {period: sorted(days) for period, days in self.period_days.items()},
            "period_sessions": dict(self.period_sessions),
        }


def _unpack(entry: Mapping[str, Any], index: int) -> tuple[float, str, Mapping[str, Any]]:
    timestamp = entry.get("timestamp") if isinstance(entry, Mapping) else None
    kind = entry.get("type") if isinstance(entry, Mapping) else None
    data = entry.get("data") if isinstance(entry, Mapping) else None
    if (
        not isinstance(timestamp, int | float)
        or isinstance(timestamp, bool)
        or not math.isfinite(timestamp)
        or not isinstance(kind, str)
        or not isinstance(data, Mapping)
    ):
        raise SerializationError(f"history entry {index} is not of the shape {{'timestamp', 'type', 'data'}}")
    return float(timestamp), kind, data


def _language_of(data: Mapping[str, Any]) -> str | None:
    for key in _LANGUAGE_FIELDS:
        value = data.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip().lower()
    for key in _TEXT_FIELDS:
        value = data.get(key)
        if isinstance(value, str):
            return detect_language(value)
    return None


def analyze_history(
    entries: Iterable[Mapping[str, Any]],
    *,
    tz: tzinfo = UTC,
    created_at: float | None = None,
    last_accessed_at: float | None = None,
) -> HistoryStats:
    """Statistics of one session's history entries (its length from the entries, widened by
    `created_at` / `last_accessed_at` when given)."""
    stats = HistoryStats(sessions=1)
    stats.add_entries(entries, tz=tz)
    stats.period_sessions = dict.fromkeys(stats.period_days, 1)
    start = created_at if created_at is not None else stats.first_timestamp
    ends = [t for t in (stats.last_timestamp, last_accessed_at) if t is not None]
    if start is not None and ends:
        stats.session_lengths.append(max(0.0, max(ends) - start))
    return stats


def _store(source: Source) -> SessionStore:
    return source.store if isinstance(source, SessionManager) else source


async def iter_full_history(
    source: Source, session_id: str, *, page_size: int = 500, max_entries: int | None = None
) -> list[dict[str, Any]]:
    """Every stored history entry of a session (or its newest `max_entries`), oldest first,
    read page by page through `get_history` (reads do not touch the session)."""
    store = _store(source)
    pages: list[list[dict[str, Any]]] = []
    count = 0
    before: int | None = None
    while max_entries is None or count < max_entries:
        limit = page_size if max_entries is None else min(page_size, max_entries - count)
        page = await store.get_history(session_id, limit=limit, before=before)
        pages.append(page.entries)
        count += len(page.entries)
        if page.next_before is None or not page.entries:
            break
        before = page.next_before
    return [entry for page in reversed(pages) for entry in page]


async def _entries(store: SessionStore, session: Session, full_history: bool) -> list[dict[str, Any]]:
    if full_history:
        return await iter_full_history(store, session.session_id)
    return session.history


async def analyze_session(
    source: Source, session_id: str, *, tz: tzinfo = UTC, full_history: bool = True
) -> HistoryStats:
    """Statistics of one stored session: its whole history (or only the loaded recent window
    with ``full_history=False``). Raises `SessionNotFound` when it does not exist."""
    store = _store(source)
    session = await store.get(session_id)
    if session is None:
        raise SessionNotFound("cannot analyse a session that does not exist or has expired")
    stats = HistoryStats()
    stats.add_session(session, await _entries(store, session, full_history), tz=tz)
    return stats


async def analyze_user(source: Source, user_id: str, *, tz: tzinfo = UTC, full_history: bool = True) -> HistoryStats:
    """Statistics over every live session of `user_id` (through the per-user index)."""
    store = _store(source)
    stats = HistoryStats()
    for session in await store.get_user_sessions(user_id):
        stats.add_session(session, await _entries(store, session, full_history), tz=tz)
    return stats


async def analyze_store(source: Source, *, tz: tzinfo = UTC, full_history: bool = False) -> HistoryStats:
    """Statistics over every live session of a store, streamed (recent windows by default)."""
    store = _store(source)
    stats = HistoryStats()
    sessions: AsyncIterator[Session] = store.iter_sessions()
    async for session in sessions:
        stats.add_session(session, await _entries(store, session, full_history), tz=tz)
    return stats
