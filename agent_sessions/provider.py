"""`SessionContextProvider`: load a session into an `ExecutionContext`, and write changes back.

The mapping, both ways. `enrich_context` (session → context):

- ``state["context:<k>"]`` → property ``<k>``;
- ``preferences`` → property ``preferences``;
- ``ai_context`` → ``ai_metadata``;
- ``feature_flags`` → property ``feature_flags``.

`update_session_from_context` (context → session):

- property ``"session:<k>"`` → ``state["<k>"]``;
- property ``preferences`` → ``preferences``;
- ``ai_metadata`` → ``ai_context``;
- the context's `user_id`, when set, → the session's;
- plus one history entry of type ``context``: ``context_id``, ``tool_name``, ``duration``.

Enrichment also sets the property ``session_manager`` (the provider's manager) so tools that read
it (``ctx.get_property("session_manager")``; prefer the typed ``ctx.manager``) work; it is never
written back.

Write-back never loses a concurrent update. The provider remembers what it loaded into the
context, and writes back only what the context changed since (keys of `preferences`,
`ai_metadata` and ``session:`` properties), through `SessionManager.mutate`, which re-applies
those changes to the latest saved session until its compare-and-set wins. So a tool saving a
preference while a web request saves another one, or while the run writes back, loses neither.
What was loaded is kept in the property ``_agent_sessions_baseline`` (shared with the context's
children, never written back).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from .codec import json_clone
from .context import ExecutionContext
from .errors import SessionNotFound
from .ids import id_hash, validate_session_id
from .manager import SessionManager
from .session import Session

__all__ = [
    "CONTEXT_PREFIX",
    "SESSION_MANAGER_PROPERTY",
    "SESSION_PREFIX",
    "SessionContextProvider",
    "refresh_context",
]

logger = logging.getLogger(__name__)

#: State keys with this prefix become context properties (prefix removed) when enriching.
CONTEXT_PREFIX: Final = "context:"
#: Context properties with this prefix become state keys (prefix removed) when writing back.
SESSION_PREFIX: Final = "session:"
#: The property holding the `SessionManager` (for tools that read it as a property; prefer `ctx.manager`).
SESSION_MANAGER_PROPERTY: Final = "session_manager"
#: Where the provider keeps what it loaded into a context (shared with the context's children).
BASELINE_PROPERTY: Final = "_agent_sessions_baseline"

_RESERVED_PROPERTIES: Final = frozenset({SESSION_MANAGER_PROPERTY, BASELINE_PROPERTY, "preferences", "feature_flags"})


def _same(a: Any, b: Any) -> bool:
    # `1 == True` in Python; a value changing type must still count as a change.
    return a is b or (type(a) is type(b) and a == b)


def _changed(current: Mapping[str, Any], baseline: Mapping[str, Any] | None) -> dict[str, Any]:
    """The keys of `current` that differ from `baseline` (all of them without a baseline)."""
    if baseline is None:
        return dict(current)
    return {k: v for k, v in current.items() if k not in baseline or not _same(baseline[k], v)}


@dataclass(slots=True)
class _Baseline:
    """What the session held when it was loaded into the context (or last written back)."""

    session_id: str
    user_id: str | None
    preferences: dict[str, Any] = field(default_factory=dict)
    ai_context: dict[str, Any] = field(default_factory=dict)
    state: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, session: Session) -> _Baseline:
        return cls(
            session_id=session.session_id,
            user_id=session.user_id,
            preferences=json_clone(session.preferences),
            ai_context=json_clone(session.ai_context),
            state={k: json_clone(v) for k, v in session.state.items() if not k.startswith(CONTEXT_PREFIX)},
        )


def _baseline_of(context: ExecutionContext, session_id: str) -> _Baseline | None:
    baseline = context.properties.get(BASELINE_PROPERTY)
    if isinstance(baseline, _Baseline) and baseline.session_id == session_id:
        return baseline
    return None


def _merge_fresh(local: dict[str, Any], base: dict[str, Any], fresh: Mapping[str, Any]) -> None:
    """Three-way merge of `fresh` saved values into `local`, keeping keys `local` changed since `base`."""
    for key in list(local):
        if key not in fresh and key in base and _same(base[key], local[key]):
            del local[key]
            del base[key]
    for key, value in fresh.items():
        untouched = key not in local if key not in base else _same(base[key], local.get(key))
        if untouched:
            local[key] = json_clone(value)
            base[key] = json_clone(value)


def refresh_context(context: ExecutionContext, session: Session) -> None:
    """Show a freshly saved `session` in `context`, keeping changes the context has not written back.

    Tools that save through the manager call this, so later tools and the agent's instructions in
    the same run see the new values, and the final write-back does not count them as changes.
    """
    baseline = _baseline_of(context, session.session_id)
    if baseline is None:
        return
    prefs = context.properties.get("preferences")
    if isinstance(prefs, dict):
        _merge_fresh(prefs, baseline.preferences, session.preferences)
    elif session.preferences:
        context.add_property("preferences", json_clone(session.preferences))
        baseline.preferences = json_clone(session.preferences)
    _merge_fresh(context.ai_metadata, baseline.ai_context, session.ai_context)
    if session.feature_flags:
        context.add_property("feature_flags", json_clone(session.feature_flags))
    else:
        context.properties.pop("feature_flags", None)
    for key, value in session.state.items():
        if key.startswith(CONTEXT_PREFIX) and key[len(CONTEXT_PREFIX) :] not in _RESERVED_PROPERTIES:
            context.add_property(key[len(CONTEXT_PREFIX) :], json_clone(value))


class SessionContextProvider:
    """Provider for session context integration: enriches contexts and writes them back."""

    def __init__(self, session_manager: SessionManager) -> None:
        self.session_manager = session_manager

    async def enrich_context(self, context: ExecutionContext, session_id: str | None = None) -> ExecutionContext:
        """Load the session (`session_id`, or the context's) into `context`; returns `context`.

        A context without a session id, or whose session does not exist or has expired, is
        returned unchanged. An invalid id raises `InvalidSessionId`.
        """
        await self.load_into(context, session_id)
        return context

    async def load_into(self, context: ExecutionContext, session_id: str | None = None) -> Session | None:
        """Like `enrich_context`, but return the loaded session (None when there is none)."""
        sid = session_id or context.session_id
        if not sid:
            return None
        session = await self.session_manager.get_session(sid)
        if session is None:
            return None
        context.session_id = session.session_id
        context.user_id = session.user_id or context.user_id
        for key, value in session.state.items():
            if key.startswith(CONTEXT_PREFIX):
                name = key[len(CONTEXT_PREFIX) :]
                if name in _RESERVED_PROPERTIES:
                    # A stored value must not replace the manager or the provider's bookkeeping.
                    logger.warning("session %s: ignoring reserved context key %r", id_hash(sid), key)
                    continue
                context.add_property(name, value)
        if session.preferences:
            context.add_property("preferences", json_clone(session.preferences))
        if session.ai_context:
            context.ai_metadata.update(json_clone(session.ai_context))
        if session.feature_flags:
            context.add_property("feature_flags", json_clone(session.feature_flags))
        if not context.has_property(SESSION_MANAGER_PROPERTY):
            context.add_property(SESSION_MANAGER_PROPERTY, self.session_manager)
        context.add_property(BASELINE_PROPERTY, _Baseline.of(session))
        return session

    async def update_session_from_context(
        self,
        context: ExecutionContext,
        session_id: str | None = None,
        *,
        extra_history: Iterable[tuple[str, dict[str, Any]]] = (),
    ) -> Session | None:
        """Write the context's changes back to its session and add a ``context`` history entry.

        Only what the context changed since `enrich_context` is written (everything, for a context
        that was never enriched), re-applied to the latest saved session until the save wins, so
        concurrent writers lose nothing. `extra_history` entries ``(type, data)`` are appended in
        the same save. Returns the saved session, or None when the context has no session or the
        session no longer exists. Values that are not strict JSON raise `SerializationError`.
        """
        sid = session_id or context.session_id
        if not sid:
            return None
        sid = validate_session_id(sid)
        baseline = _baseline_of(context, sid)

        state_sets = {
            key[len(SESSION_PREFIX) :]: value
            for key, value in context.properties.items()
            if key.startswith(SESSION_PREFIX)
        }
        state_sets = _changed(state_sets, baseline.state if baseline is not None else None)
        prefs_property = context.get_property("preferences")
        preferences = (
            _changed(prefs_property, baseline.preferences if baseline is not None else None)
            if isinstance(prefs_property, dict)
            else {}
        )
        ai_context = _changed(context.ai_metadata, baseline.ai_context if baseline is not None else None)
        user_id = context.user_id
        if baseline is not None and user_id == baseline.user_id:
            user_id = None
        entry = {"context_id": context.context_id, "tool_name": context.tool_name, "duration": context.duration()}
        extra = [(kind, data) for kind, data in extra_history]

        def apply(session: Session) -> None:
            if user_id:
                session.user_id = user_id
            for key, value in state_sets.items():
                session.set(key, json_clone(value))
            session.preferences.update(json_clone(preferences))
            session.ai_context.update(json_clone(ai_context))
            for kind, data in extra:
                session.add_history_entry(kind, data)
            session.add_history_entry("context", entry)

        try:
            saved = await self.session_manager.mutate(sid, apply)
        except SessionNotFound:
            # The documented outcome for a session deleted or expired during the run.
            logger.info("session %s is gone; context %s not written back", id_hash(sid), context.context_id)
            return None

        if baseline is None:
            context.add_property(BASELINE_PROPERTY, _Baseline.of(saved))
        else:
            baseline.state.update(json_clone(state_sets))
            baseline.preferences.update(json_clone(preferences))
            baseline.ai_context.update(json_clone(ai_context))
            if user_id:
                baseline.user_id = user_id
        return saved
