"""Personalisation: infer preferences from behaviour, propose them with evidence, apply on request.

`suggest_preferences(stats)` reads `HistoryStats` and proposes:

- ``favorite_tools`` — the (up to 3) most called tools, when there were at least `min_evidence`
  tool calls and each proposed tool was called at least twice;
- ``preferred_time_of_day`` — ``"night"`` (0-5 h), ``"morning"`` (6-11), ``"afternoon"`` (12-17)
  or ``"evening"`` (18-23), when at least half of `min_evidence`+ entries fall in one period and
  that period has entries on at least 2 days and in at least 2 sessions (a habit, not a burst);
- ``language`` — the language of at least 60 % of the messages whose language is known, when
  there are at least 3 of them.

Confidence is honest about how spread the evidence is: it is the share of the evidence that
supports the value, times `evidence_spread(sessions, days)` — 1 only once the evidence comes from
at least `FULL_CONFIDENCE_SESSIONS` sessions on at least `FULL_CONFIDENCE_DAYS` distinct days,
proportionally less before. Entries made within one second of one session never claim more
than a ninth of their share.

Nothing is written by suggesting. `Personalizer.apply` writes the suggestions the caller picked
into the session's preferences with one delta save (`SessionManager.update_session`), so a
concurrent change to another preference survives; preferences follow the user, so every session
of that user sees them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Any, Final

from ..codec import check_json
from ..errors import SessionNotFound
from ..ids import id_hash
from ..manager import SessionManager
from ..session import Session
from .history import TIME_OF_DAY, HistoryStats, analyze_session, analyze_user, time_of_day
from .table import Cell, Table

__all__ = [
    "FULL_CONFIDENCE_DAYS",
    "FULL_CONFIDENCE_SESSIONS",
    "TIME_OF_DAY",
    "PreferenceSuggestion",
    "Personalizer",
    "evidence_spread",
    "suggest_preferences",
    "suggestions_table",
    "time_of_day",
]

logger = logging.getLogger(__name__)

#: Sessions and distinct days of evidence at which a suggestion's confidence is no longer discounted.
FULL_CONFIDENCE_SESSIONS: Final = 3
FULL_CONFIDENCE_DAYS: Final = 3
#: A time-of-day habit needs its period on this many days and in this many sessions at least.
MIN_HABIT_DAYS: Final = 2
MIN_HABIT_SESSIONS: Final = 2


def evidence_spread(sessions: int, days: int) -> float:
    """How far evidence from `sessions` sessions over `days` distinct days can be trusted (0-1)."""
    return min(1.0, sessions / FULL_CONFIDENCE_SESSIONS) * min(1.0, days / FULL_CONFIDENCE_DAYS)


@dataclass(frozen=True, slots=True)
class PreferenceSuggestion:
    """A preference inferred from behaviour: `key` = `value`, with how sure and why.

    `confidence` (0-1) is the share of the evidence supporting the value, discounted by
    `evidence_spread` until the evidence spans enough sessions and days; `evidence` says it in
    words and `details` in numbers (``sessions`` and ``days`` included); `current` is the
    preference's value now (None if unset).
    """

    key: str
    value: Any
    confidence: float
    evidence: str
    details: dict[str, Any] = field(default_factory=dict)
    current: Any = None


def suggest_preferences(
    stats: HistoryStats,
    current: Mapping[str, Any] | None = None,
    *,
    min_evidence: int = 5,
) -> list[PreferenceSuggestion]:
    """Preferences the behaviour in `stats` supports, leaving out those already set to that value."""
    if min_evidence < 1:
        raise ValueError("min_evidence must be >= 1")
    current = current or {}
    found = [
        s
        for s in (
            _favorite_tools(stats, min_evidence),
            _time_of_day(stats, min_evidence),
            _language(stats),
        )
        if s is not None
    ]
    return [
        PreferenceSuggestion(s.key, s.value, s.confidence, s.evidence, s.details, current.get(s.key))
        for s in found
        if current.get(s.key) != s.value
    ]


def _favorite_tools(stats: HistoryStats, min_evidence: int) -> PreferenceSuggestion | None:
    total = stats.tool_calls
    if total < min_evidence:
        return None
    top = [t for t in stats.top_tools(3) if t.calls >= 2]
    if not top:
        return None
    covered = sum(t.calls for t in top)
    listing = ", ".join(f"{t.name} ({t.calls})" for t in top)
    sessions, days = stats.sessions, len(stats.active_days)
    return PreferenceSuggestion(
        key="favorite_tools",
        value=[t.name for t in top],
        confidence=round(covered / total * evidence_spread(sessions, days), 4),
        evidence=f"{covered} of {total} tool calls went to {listing}{_spread_text(sessions, days)}",
        details={"tool_calls": total, "calls": {t.name: t.calls for t in top}, "sessions": sessions, "days": days},
    )


def _time_of_day(stats: HistoryStats, min_evidence: int) -> PreferenceSuggestion | None:
    if stats.entries < min_evidence:
        return None
    per_period = {name: sum(stats.activity_by_hour[start:end]) for name, start, end in TIME_OF_DAY}
    best = max(per_period, key=lambda name: per_period[name])
    share = per_period[best] / stats.entries
    if share < 0.5:
        return None
    days = len(stats.period_days.get(best, ()))
    sessions = stats.period_sessions.get(best, 0)
    if days < MIN_HABIT_DAYS or sessions < MIN_HABIT_SESSIONS:
        return None  # a burst of activity (one day, or one session) is no habit
    return PreferenceSuggestion(
        key="preferred_time_of_day",
        value=best,
        confidence=round(share * evidence_spread(sessions, days), 4),
        evidence=f"{per_period[best]} of {stats.entries} history entries were in the {best}"
        f"{_spread_text(sessions, days)}",
        details={"entries": stats.entries, "by_period": per_period, "sessions": sessions, "days": days},
    )


def _language(stats: HistoryStats) -> PreferenceSuggestion | None:
    known = sum(stats.languages.values())
    if known < 3:
        return None
    best = min(stats.languages, key=lambda lang: (-stats.languages[lang], lang))
    share = stats.languages[best] / known
    if share < 0.6:
        return None
    sessions, days = stats.sessions, len(stats.active_days)
    return PreferenceSuggestion(
        key="language",
        value=best,
        confidence=round(share * evidence_spread(sessions, days), 4),
        evidence=f"{stats.languages[best]} of {known} messages with a known language were in {best!r}"
        f"{_spread_text(sessions, days)}",
        details={"messages": known, "by_language": dict(stats.languages), "sessions": sessions, "days": days},
    )


def _spread_text(sessions: int, days: int) -> str:
    return f", over {days} day{'s' if days != 1 else ''} in {sessions} session{'s' if sessions != 1 else ''}"


def suggestions_table(suggestions: Sequence[PreferenceSuggestion]) -> Table:
    """The suggestions as a `Table` (preference, proposed value, current, confidence, evidence)."""

    def cell(value: Any) -> Cell:
        if value is None or isinstance(value, str | int | float | bool):
            return value
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    rows = [(s.key, cell(s.value), cell(s.current), s.confidence, s.evidence) for s in suggestions]
    return Table.of(("preference", "suggested", "current", "confidence", "evidence"), rows, title="Suggestions")


class Personalizer:
    """Suggests preferences for a session or a user from their history, and applies them on request."""

    def __init__(self, session_manager: SessionManager, *, min_evidence: int = 5, tz: tzinfo = UTC) -> None:
        self.session_manager = session_manager
        self.min_evidence = min_evidence
        self.tz = tz

    async def suggest(self, session_id: str, *, across_user: bool = True) -> list[PreferenceSuggestion]:
        """Suggestions for the session's preferences, from the whole history of its user (or of
        this session only with ``across_user=False``, and always for an anonymous session)."""
        session = await self._session(session_id)
        if across_user and session.user_id is not None:
            stats = await analyze_user(self.session_manager, session.user_id, tz=self.tz)
        else:
            stats = await analyze_session(self.session_manager, session_id, tz=self.tz)
        return suggest_preferences(stats, session.preferences, min_evidence=self.min_evidence)

    async def apply(
        self, session_id: str, suggestions: Iterable[PreferenceSuggestion], *, keys: Iterable[str] | None = None
    ) -> Session:
        """Write the chosen suggestions (all given, or only those whose key is in `keys`) into
        the session's preferences with one delta save; returns the saved session."""
        wanted = None if keys is None else set(keys)
        chosen = {s.key: s.value for s in suggestions if wanted is None or s.key in wanted}
        for key, value in chosen.items():
            check_json(value, f"preferences[{key!r}]")
        session = await self._session(session_id)
        if not chosen:
            return session
        session.preferences.update(chosen)
        saved = await self.session_manager.update_session(session)
        logger.info("applied preferences %s to session %s", sorted(chosen), id_hash(session_id))
        return saved

    async def _session(self, session_id: str) -> Session:
        session = await self.session_manager.get_session(session_id)
        if session is None:
            raise SessionNotFound("the session does not exist or has expired")
        return session
