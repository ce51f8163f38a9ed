"""The request session's state machine (`SessionPhase`, `SessionEvent`, `advance`), without I/O."""

from __future__ import annotations

import pytest

from agent_sessions.integrations.asgi import SessionEvent, SessionPhase, advance

P, E = SessionPhase, SessionEvent


def run(phase: SessionPhase, *events: SessionEvent) -> SessionPhase:
    for event in events:
        phase = advance(phase, event)
    return phase


@pytest.mark.parametrize("phase", list(SessionPhase))
def test_every_phase_ends_in_sent_when_the_response_starts(phase: SessionPhase) -> None:
    assert advance(phase, E.SENT) is P.SENT


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ((E.NONE,), P.ABSENT),
        ((E.STARTED,), P.FRESH),
        ((E.STARTED, E.WRITTEN), P.CREATED),
        ((E.STARTED, E.ROTATED), P.FRESH),  # a never-written session only swaps its id
        ((E.FOUND,), P.LOADED),
        ((E.FOUND, E.WRITTEN), P.RENEWED),
        ((E.FOUND, E.ROTATED, E.WRITTEN), P.ROTATED),  # login, then the changes are saved
        ((E.FOUND, E.DESTROYED), P.DESTROYED),  # logout
        ((E.FOUND, E.DESTROYED, E.STARTED), P.REPLACED),  # logout, then a new session unsaved
        ((E.FOUND, E.DESTROYED, E.STARTED, E.WRITTEN), P.CREATED),  # ... and written
        ((E.DESTROYED,), P.DESTROYED),  # lazy logout without a load
        ((E.NONE, E.STARTED), P.FRESH),  # create_session=False, then load(create=True)
    ],
)
def test_request_lifecycles_end_in_the_phase_that_decides_the_cookie(
    events: tuple[SessionEvent, ...], expected: SessionPhase
) -> None:
    assert run(P.PENDING, *events) is expected


@pytest.mark.parametrize(
    ("phase", "event"),
    [
        (P.PENDING, E.WRITTEN),  # nothing in hand to write
        (P.ABSENT, E.ROTATED),
        (P.LOADED, E.FOUND),  # a session is looked up once per request
        (P.FRESH, E.STARTED),
        (P.SENT, E.ROTATED),  # too late for a new cookie
        (P.SENT, E.DESTROYED),
        (P.SENT, E.STARTED),
    ],
)
def test_a_transition_that_cannot_happen_raises(phase: SessionPhase, event: SessionEvent) -> None:
    with pytest.raises(RuntimeError, match=f"no transition for {event.name} in phase {phase.name}"):
        advance(phase, event)


def test_a_session_can_still_be_saved_after_the_response_started() -> None:
    assert advance(P.SENT, E.WRITTEN) is P.SENT
