"""Recall: an agent remembers what a user told it three sessions earlier.

    python examples/recall.py      # on the embedded SQLite default, in a temporary folder

Ada tells the agent her cat's name in her first session; her second and third sessions are
about other things (and Bob, another user, has a cat too). In her fourth session she asks for
the cat's name. The agent has `SessionCapability(manager, recall=3, record_turns=True)`:

- `record_turns=True` keeps each run's prompt and reply as a ``turn`` history entry;
- `recall=3` searches Ada's history (all her sessions, never Bob's) with the run's prompt before
  the run, and frames the best three entries in the instructions, as data.

The model here is an offline `FunctionModel` standing in for an LLM: it answers from the
recalled entries it finds in its instructions, and, for the last question, looks the answer up
itself with the built-in `search_memory` tool.
"""

from __future__ import annotations

import asyncio
import json
import re
import tempfile
from pathlib import Path
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_sessions import SessionManager, create_store
from agent_sessions.integrations.pydantic_ai import RECALL_TAG, SessionCapability, SessionIds

RECALLED = re.compile(rf"<{RECALL_TAG}>\n?(.*?)</{RECALL_TAG}>", re.DOTALL)

#: (user, prompt, the reply a model would give) for the sessions before the question.
EARLIER = (
    ("bob", "Note that my cat is called Tiger.", "Noted, Bob."),
    ("ada", "Please remember that my cat is called Miso.", "Noted: Miso."),
    ("ada", "Can you plan a weekend in Porto for me?", "Saturday in Ribeira, Sunday at Serralves."),
    ("ada", "Suggest a podcast for my commute.", "Try In Our Time, from the BBC."),
)
ASK_CAT = "What is my cat called?"
ASK_CITY = "Which city was that weekend plan for?"
SCRIPTED = {prompt: reply for _, prompt, reply in EARLIER}
#: What the model found in its instructions when asked about the cat (shown at the end).
READ_BY_MODEL: list[dict[str, Any]] = []


def recalled_entries(instructions: str | None) -> list[dict[str, Any]]:
    """The entries the capability framed into the instructions (what the model 'reads')."""
    match = RECALLED.search(instructions or "")
    if match is None:
        return []
    return [json.loads(line) for line in match.group(1).splitlines() if line.strip()]


def prompt_and_returns(messages: list[ModelMessage]) -> tuple[str, dict[str, Any]]:
    prompt, returns = "", {}
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if part.part_kind == "user-prompt" and isinstance(part.content, str):
                    prompt, returns = part.content, {}
                elif isinstance(part, ToolReturnPart):
                    returns[part.tool_name] = part.content
    return prompt, returns


def first_match(pattern: str, hits: list[dict[str, Any]]) -> str | None:
    for hit in hits:
        found = re.search(pattern, str(hit.get("text", "")))
        if found:
            return found.group(1)
    return None


def scripted_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """An offline stand-in for an LLM that answers from what it was given."""
    prompt, returns = prompt_and_returns(messages)
    if prompt == ASK_CAT:
        READ_BY_MODEL[:] = recalled_entries(info.instructions)
        name = first_match(r"cat is called (\w+)", READ_BY_MODEL)
        reply = f"Your cat is called {name}." if name else "I don't know your cat's name yet."
        return ModelResponse(parts=[TextPart(reply)])
    if prompt == ASK_CITY:
        if "search_memory" not in returns:
            return ModelResponse(parts=[ToolCallPart("search_memory", {"query": "weekend plan"}, tool_call_id="s1")])
        city = first_match(r"weekend in (\w+)", returns["search_memory"]["hits"])
        return ModelResponse(parts=[TextPart(f"The weekend plan was for {city}." if city else "I can't find it.")])
    return ModelResponse(parts=[TextPart(SCRIPTED.get(prompt, "Noted."))])


async def main() -> None:
    with tempfile.TemporaryDirectory(prefix="agent_sessions_recall_") as folder:
        store = create_store(f"sqlite+aiosqlite:///{Path(folder) / 'sessions.db'}")
        async with SessionManager(store) as manager:
            capability = SessionCapability(manager, recall=3, record_turns=True)
            agent = Agent(FunctionModel(scripted_model), deps_type=SessionIds, capabilities=[capability])
            sessions = {"ada": 0, "bob": 0}
            for user, prompt, _ in EARLIER:
                session = await manager.create_session(user_id=user)
                sessions[user] += 1
                result = await agent.run(prompt, deps=SessionIds(session.session_id, user))
                print(f"{user}, session {sessions[user]}: {prompt}\n  agent: {result.output}")

            fourth = await manager.create_session(user_id="ada")
            deps = SessionIds(fourth.session_id, "ada")
            result = await agent.run(ASK_CAT, deps=deps)
            print(f"ada, session {sessions['ada'] + 1}: {ASK_CAT}")
            for hit in READ_BY_MODEL:
                snippet = hit["snippet"].replace("\n", " / ")
                print(f"  recalled ({hit['session']}, {hit['type']}): {snippet}")
            print(f"  agent: {result.output}")

            result = await agent.run(ASK_CITY, deps=deps)
            print(f"ada, session {sessions['ada'] + 1}: {ASK_CITY}\n  agent (with search_memory): {result.output}")

            hits = await manager.search_history("ada", "cat")
            assert hits and all("Tiger" not in hit.snippet for hit in hits)
            print(f"Ada's history has {len(hits)} entries about a cat; none of them is Bob's.")


if __name__ == "__main__":
    asyncio.run(main())
