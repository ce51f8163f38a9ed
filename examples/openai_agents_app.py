"""An OpenAI Agents SDK agent whose conversation lives in an agent_sessions session.

`AgentsSession` is the SDK's `Session` protocol over one of our sessions: `Runner.run(agent,
input, session=...)` loads the conversation from it and appends the new items, while the same
session keeps the user, TTLs, state and preferences. The model here is scripted (offline), so
the script needs no API key; swap in a real model name for a real agent.

    python examples/openai_agents_app.py                                  # embedded SQLite, temp folder
    python examples/openai_agents_app.py redis://127.0.0.1:6379/0         # any store URL
"""

from __future__ import annotations

import asyncio
import json
import sys
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from agent_sessions import SessionManager, create_store
from agent_sessions.integrations.openai_agents import AgentsSession


class ScriptedModel(Model):
    """An offline stand-in for an LLM: calls `get_weather` when asked about the weather, else answers."""

    def __init__(self) -> None:
        self.seen: list[int] = []  # how many input items each call was given

    async def get_response(self, system_instructions: str | None, input: Any, *args: Any, **kwargs: Any) -> Any:
        items: list[TResponseInputItem] = [{"role": "user", "content": input}] if isinstance(input, str) else input
        self.seen.append(len(items))
        last = items[-1]
        if last.get("type") == "function_call_output":
            text = f"Forecast: {last['output']}."  # type: ignore[typeddict-item]
        elif "weather" in str(last.get("content", "")):
            city = str(last.get("content", "")).rstrip("?").split()[-1]
            arguments = json.dumps({"city": city})
            call = ResponseFunctionToolCall(
                id="fc_1", call_id=f"call_{city}", type="function_call", name="get_weather", arguments=arguments
            )
            return ModelResponse(output=[call], usage=Usage(), response_id=None)
        else:
            text = f"You asked {sum(1 for i in items if i.get('role') == 'user')} questions so far."
        content = [ResponseOutputText(type="output_text", text=text, annotations=[])]
        message = ResponseOutputMessage(
            id="msg_1", type="message", role="assistant", status="completed", content=content
        )
        return ModelResponse(output=[message], usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("this example does not stream")


@function_tool
def get_weather(city: str) -> str:
    """Today's weather in a city."""
    return f"sunny and 21 °C in {city}"


async def main(url: str) -> None:
    set_tracing_disabled(True)  # offline: no trace export
    model = ScriptedModel()
    agent = Agent(name="assistant", instructions="Be brief.", model=model, tools=[get_weather])

    async with SessionManager(create_store(url), auto_cleanup=False) as manager:
        session = await AgentsSession.create(manager, user_id="ana", preferences={"units": "metric"})
        result = await Runner.run(agent, "What's the weather in Lisbon?", session=session)
        print("turn 1:", result.final_output)
        session_id = session.session_id

    # Later, another process: the conversation is in the store, next to the user's session.
    async with SessionManager(create_store(url), auto_cleanup=False) as manager:
        session = await AgentsSession.open(manager, session_id)
        result = await Runner.run(agent, "Thanks! How many questions did I ask?", session=session)
        print("turn 2:", result.final_output, f"(the model was given {model.seen[-1]} items)")

        items = await session.get_items()
        print("items:", [item.get("type", "message") for item in items])
        ours = await session.load()
        print("user:", ours.user_id, "preferences:", ours.preferences)
        print("sessions of ana:", len(await AgentsSession.for_user(manager, "ana")))

        undone = await session.pop_item()  # e.g. to retract the last answer
        print("popped:", undone.get("role") if undone else None, "->", len(await session.get_items()), "items left")
        print("last 2:", [item.get("type", "message") for item in await session.get_items(limit=2)])
        await session.clear_session()
        print("after clear:", await session.get_items(), "- preferences kept:", (await session.load()).preferences)
        await manager.delete_session(session_id)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        asyncio.run(main(sys.argv[1]))
    else:  # the embedded default, in a temporary folder so the run leaves nothing behind
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(main(f"sqlite+aiosqlite:///{Path(tmp) / 'agent_sessions.db'}"))
