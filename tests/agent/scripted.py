"""A scripted pydantic-ai model for offline agent tests: it calls the given tools, step by step."""

from __future__ import annotations

import json
from typing import Any

from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    RetryPromptPart,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, FunctionModel


class Script:
    """Each step is a list of ``(tool name, args)`` calls; after the last step the model answers text.

    It records what the model saw: instructions, the tools offered, and the tool returns.
    """

    def __init__(self, *steps: list[tuple[str, dict[str, Any]]], final: str = "done") -> None:
        self.steps = list(steps)
        self.final = final
        self.calls = 0
        self.instructions: list[str | None] = []
        self.offered: list[list[str]] = []
        self.returns: list[ToolReturnPart] = []
        self.retries: list[ToolReturnPart | RetryPromptPart] = []

    def model(self) -> FunctionModel:
        return FunctionModel(self)

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.instructions.append(info.instructions)
        self.offered.append([t.name for t in info.function_tools])
        last = messages[-1]
        if isinstance(last, ModelRequest):
            for part in last.parts:
                if isinstance(part, ToolReturnPart) and part.outcome == "retried":
                    self.retries.append(part)
                elif isinstance(part, ToolReturnPart):
                    self.returns.append(part)
                elif isinstance(part, RetryPromptPart):
                    self.retries.append(part)
        step = self.calls
        self.calls += 1
        if step < len(self.steps):
            return ModelResponse(
                parts=[
                    ToolCallPart(name, json.dumps(args), tool_call_id=f"call-{step}-{i}")
                    for i, (name, args) in enumerate(self.steps[step])
                ]
            )
        return ModelResponse(parts=[TextPart(self.final)])

    def refused(self, tool_name: str) -> list[str]:
        """The retry messages the model got back for calls of `tool_name`."""
        return [str(part.content) for part in self.retries if part.tool_name == tool_name]

    def returned(self, tool_name: str) -> list[Any]:
        """The contents returned by `tool_name`, in call order."""
        return [part.content for part in self.returns if part.tool_name == tool_name]
