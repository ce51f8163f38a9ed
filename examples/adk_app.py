"""A Google ADK agent whose sessions live in agent_sessions (offline: a scripted model).

`AgentSessionsService(manager)` is ADK's `BaseSessionService` on our `SessionManager`: the
`Runner` creates, reads and appends to sessions through it, ADK's ``user:`` state follows the
user into new sessions, and the conversation survives a restart of the process (here: a second
manager on the same SQLite file).

    python examples/adk_app.py                                  # SQLite file in a temp folder
    python examples/adk_app.py postgresql+asyncpg://localhost/db
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

from google.adk.agents.llm_agent import LlmAgent
from google.adk.models.base_llm import BaseLlm
from google.adk.models.llm_request import LlmRequest
from google.adk.models.llm_response import LlmResponse
from google.adk.runners import Runner
from google.adk.sessions.base_session_service import GetSessionConfig
from google.adk.tools.tool_context import ToolContext
from google.genai import types

from agent_sessions import SessionManager, create_store
from agent_sessions.integrations.adk import AgentSessionsService

APP = "travel_planner"
#: A real model reports token counts; ADK warns when a response has none.
USAGE = types.GenerateContentResponseUsageMetadata(prompt_token_count=1, candidates_token_count=1, total_token_count=2)


class ScriptedModel(BaseLlm):
    """Stands in for Gemini: calls `note_city` with the user's words, then confirms."""

    model: str = "scripted"

    async def generate_content_async(
        self, llm_request: LlmRequest, stream: bool = False
    ) -> AsyncGenerator[LlmResponse, None]:
        parts = llm_request.contents[-1].parts or []
        answers = [p.function_response.response for p in parts if p.function_response is not None]
        if answers:
            reply = f"Noted. Cities so far: {', '.join(answers[0]['cities'])}."
            yield LlmResponse(content=types.Content(role="model", parts=[types.Part(text=reply)]), usage_metadata=USAGE)
            return
        city = "".join(p.text or "" for p in parts).rsplit(" ", 1)[-1]
        call = types.FunctionCall(name="note_city", args={"city": city})
        yield LlmResponse(
            content=types.Content(role="model", parts=[types.Part(function_call=call)]), usage_metadata=USAGE
        )


def note_city(city: str, tool_context: ToolContext) -> dict[str, Any]:
    """Remember a city the user wants to visit (kept for the user, across sessions)."""
    cities = [*tool_context.state.get("user:cities", []), city]
    tool_context.state["user:cities"] = cities
    return {"cities": cities}


async def turn(runner: Runner, session_id: str, text: str) -> str:
    message = types.Content(role="user", parts=[types.Part(text=text)])
    replies = []
    async for event in runner.run_async(user_id="ada", session_id=session_id, new_message=message):
        if event.author == "planner" and event.content and event.content.parts and event.content.parts[0].text:
            replies.append(event.content.parts[0].text)
    return " ".join(replies)


def make_runner(manager: SessionManager) -> Runner:
    agent = LlmAgent(name="planner", model=ScriptedModel(), instruction="Plan trips.", tools=[note_city])
    return Runner(app_name=APP, agent=agent, session_service=AgentSessionsService(manager))


async def main(url: str) -> None:
    # ADK sessions are long-lived conversations: no absolute timeout, a week of idle time.
    lifetimes: dict[str, Any] = {"session_lifetime": 7 * 24 * 3600, "absolute_lifetime": None, "auto_cleanup": False}
    async with SessionManager(create_store(url), **lifetimes) as manager:
        runner = make_runner(manager)
        session = await runner.session_service.create_session(app_name=APP, user_id="ada", session_id="trip-1")
        for text in ("I want to see Lisbon", "and then Porto"):
            print(f"user: {text}\nplanner: {await turn(runner, session.id, text)}")

    # A new process (a second manager on the same store) picks the conversation up.
    async with SessionManager(create_store(url), **lifetimes) as manager:
        service = AgentSessionsService(manager)
        recent = await service.get_session(
            app_name=APP, user_id="ada", session_id="trip-1", config=GetSessionConfig(num_recent_events=2)
        )
        assert recent is not None
        print(f"stored events, last two: {[e.author for e in recent.events]}")
        print(f"user state: {await service.get_user_state(app_name=APP, user_id='ada')}")
        fresh = await service.create_session(app_name=APP, user_id="ada", session_id="trip-2")
        print(f"a new session starts with: {fresh.state}")
        listed = await service.list_sessions(app_name=APP, user_id="ada")
        print(f"ada's sessions: {[s.id for s in listed.sessions]}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(f"sqlite+aiosqlite:///{Path(tmp) / 'adk.db'}"))
