"""A scripted Agents SDK model for offline tests, and a turn runnable in another process.

`ScriptedModel` implements the SDK's `Model` interface: each step answers with the given tool
calls, after the last step with a text message; it records the input of every call. Run as
``python -m tests.integrations.openai_agents_scripted SPEC SESSION_ID|new`` it runs one turn
(a tool call, then an answer) on the store `SPEC` (JSON, see `open_store`) and prints
``{"session_id", "seen"}``: the id and how many input items the model was first given.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import ResponseFunctionToolCall, ResponseOutputMessage, ResponseOutputText

from agent_sessions import SessionManager, SessionStore
from agent_sessions.integrations.openai_agents import AgentsSession
from agent_sessions.stores.redis import RedisSessionStore
from agent_sessions.stores.sql import DatabaseSessionStore

ToolCall = tuple[str, dict[str, Any]]


def text_message(text: str, message_id: str = "msg") -> ResponseOutputMessage:
    return ResponseOutputMessage(
        id=message_id,
        type="message",
        role="assistant",
        status="completed",
        content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
    )


class ScriptedModel(Model):
    """Step k calls the tools of `steps[k]`; past the last step it answers `final`."""

    def __init__(self, *steps: list[ToolCall], final: str = "done", name: str = "m") -> None:
        self.steps = list(steps)
        self.final = final
        self.name = name
        self.inputs: list[list[TResponseInputItem]] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: Any,
        tools: Any,
        output_schema: Any,
        handoffs: Any,
        tracing: Any,
        *,
        previous_response_id: str | None,
        conversation_id: str | None,
        prompt: Any,
    ) -> ModelResponse:
        self.inputs.append([{"role": "user", "content": input}] if isinstance(input, str) else list(input))
        step = len(self.inputs) - 1
        if step < len(self.steps):
            output: list[Any] = [
                ResponseFunctionToolCall(
                    id=f"fc-{self.name}-{step}-{i}",
                    call_id=f"call-{self.name}-{step}-{i}",
                    type="function_call",
                    name=tool,
                    arguments=json.dumps(args),
                )
                for i, (tool, args) in enumerate(self.steps[step])
            ]
        else:
            output = [text_message(self.final, f"msg-{self.name}-{step}")]
        return ModelResponse(output=output, usage=Usage(), response_id=None)

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        raise NotImplementedError("the scripted model does not stream")


@function_tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"sunny in {city}"


def weather_agent(model: Model) -> Agent[Any]:
    return Agent(name="assistant", instructions="Answer briefly.", model=model, tools=[get_weather])


@asynccontextmanager
async def open_store(spec: dict[str, Any]) -> AsyncIterator[SessionStore]:
    """A store from a spec: ``{"kind": "sql", "url", "schema"}`` or ``{"kind": "redis", "url", "prefix"}``."""
    store: SessionStore
    if spec["kind"] == "sql":
        store = DatabaseSessionStore(spec["url"], schema=spec.get("schema"))
    else:
        store = RedisSessionStore(spec["url"], prefix=spec["prefix"])
    try:
        yield store
    finally:
        await store.close()


async def turn(spec: dict[str, Any], session_id: str) -> dict[str, Any]:
    set_tracing_disabled(True)
    async with open_store(spec) as store:
        manager = SessionManager(store, auto_cleanup=False)
        if session_id == "new":
            session = await AgentsSession.create(manager, user_id="traveller")
        else:
            session = await AgentsSession.open(manager, session_id)
        model = ScriptedModel([("get_weather", {"city": "Paris"})], final="It is sunny in Paris.", name="p")
        await Runner.run(weather_agent(model), "What is the weather in Paris?", session=session)
        return {"session_id": session.session_id, "seen": len(model.inputs[0])}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(turn(json.loads(sys.argv[1]), sys.argv[2]))))
