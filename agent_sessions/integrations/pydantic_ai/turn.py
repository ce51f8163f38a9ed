"""`run_turn`: one agent turn for a session, end to end.

Load the session's conversation, run the agent with the session capability, save the
conversation, and on a `ConversationConflict` (another turn of the same conversation saved
first) append this turn's new messages to the fresh conversation and save again. The turn is not
re-run, so its tools never run twice.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, TypeVar

from pydantic_ai import Agent
from pydantic_ai.conversation import Conversation
from pydantic_ai.conversation_store import ConversationConflict, ConversationStore
from pydantic_ai.run import AgentRunResult

from ...errors import SessionNotFound
from ...ids import id_hash
from ...manager import SessionManager
from .capability import SessionCapability
from .toolset import SessionDeps, SessionIds

__all__ = ["conversation_id_for", "run_turn"]

logger = logging.getLogger(__name__)

OutputT = TypeVar("OutputT")


def conversation_id_for(session_id: str) -> str:
    """The default conversation id of a session: derived from it, but not revealing it."""
    return "session-" + hashlib.sha256(session_id.encode()).hexdigest()[:32]


async def run_turn(
    agent: Agent[Any, OutputT],
    manager: SessionManager,
    session_id: str,
    prompt: str,
    *,
    conversation_store: ConversationStore | None = None,
    conversation_id: str | None = None,
    capability: SessionCapability | None = None,
    deps: SessionDeps | None = None,
    max_save_attempts: int = 5,
    **run_options: Any,
) -> AgentRunResult[OutputT]:
    """Run one turn of `agent` for the session `session_id` and return the run's result.

    The run gets `capability` (default: a new `SessionCapability(manager)`; one given to the run
    replaces an agent-level one with the same id) and `deps` (default: `SessionIds` of the
    session). With a `conversation_store`, the conversation (`conversation_id`, default
    `conversation_id_for(session_id)`, scoped to the session's user) is loaded first and saved
    after, retrying the save on conflict up to `max_save_attempts` times. Other keyword
    arguments go to `agent.run`. Raises `SessionNotFound` if the session is gone.
    """
    if max_save_attempts < 1:
        raise ValueError("max_save_attempts must be >= 1")
    session = await manager.get_session(session_id)
    if session is None:
        raise SessionNotFound("the session does not exist or has expired")
    run_deps: SessionDeps = deps if deps is not None else SessionIds(session.session_id, session.user_id)
    cap = capability if capability is not None else SessionCapability(manager)
    if conversation_store is None:
        plain: AgentRunResult[OutputT] = await agent.run(prompt, deps=run_deps, capabilities=[cap], **run_options)
        return plain

    cid = conversation_id if conversation_id is not None else conversation_id_for(session.session_id)
    scope = session.user_id
    conversation = await conversation_store.load(cid, scope=scope) or Conversation(conversation_id=cid)
    result: AgentRunResult[OutputT] = await agent.run(
        prompt, conversation=conversation, deps=run_deps, capabilities=[cap], **run_options
    )
    pending: Conversation | AgentRunResult[OutputT] = result
    for attempt in range(max_save_attempts):
        try:
            await conversation_store.save(pending, scope=scope)
            return result
        except ConversationConflict:
            if attempt == max_save_attempts - 1:
                raise
            logger.info("conversation of session %s saved concurrently; appending this turn", id_hash(session_id))
        fresh = await conversation_store.load(cid, scope=scope) or Conversation(conversation_id=cid)
        fresh.messages.extend(result.new_messages())
        fresh.usage = fresh.usage + result.usage
        pending = fresh
    raise AssertionError("unreachable: the last failed attempt re-raises")
