"""`recommend_items` in real pydantic-ai runs (offline FunctionModel): the service is resolved
through the container and configured per session, so two sessions get two algorithms."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_sessions import ExecutionContext, SessionManager
from agent_sessions.analysis import RecommendationService, record_interaction
from agent_sessions.errors import SessionNotFound
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds
from agent_sessions.integrations.recommend import recommendation_tool, recommendation_toolset
from agent_sessions.services import SessionServiceConfigurator, SmartDependencyContainer

CATALOGUE = {
    "dune": {"genre": "scifi", "tags": ["space", "classic"]},
    "foundation": {"genre": "scifi", "tags": ["space", "classic"]},
    "hyperion": {"genre": "scifi", "tags": ["space"]},
    "emma": {"genre": "romance", "tags": ["classic"]},
    "persuasion": {"genre": "romance", "tags": ["classic"]},
}


class RecommendingModel:
    """Calls ``recommend_items`` once with `args`, then answers with what the tool returned."""

    def __init__(self, args: dict[str, Any]) -> None:
        self.args = args
        self.returned: list[Any] = []
        self.offered: list[str] = []

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.offered = [t.name for t in info.function_tools]
        last = messages[-1]
        if isinstance(last, ModelRequest):
            self.returned += [p.content for p in last.parts if isinstance(p, ToolReturnPart)]
        if not self.returned:
            return ModelResponse(parts=[ToolCallPart("recommend_items", json.dumps(self.args), tool_call_id="r1")])
        return ModelResponse(parts=[TextPart(json.dumps([i["item_id"] for i in self.returned[0]["items"]]))])


async def shop(manager: SessionManager) -> tuple[SmartDependencyContainer, SessionServiceConfigurator]:
    """Other readers' purchases (for collaborative filtering) and the recommendation service."""
    for user, items in {"r1": ["dune", "emma"], "r2": ["dune", "emma"], "r3": ["dune", "hyperion"]}.items():
        session = await manager.create_session(user)
        for item in items:
            record_interaction(session, item, "purchase")
        await manager.update_session(session)
    container = SmartDependencyContainer()
    container.register_instance(SessionManager, manager)
    container.register("catalogue", lambda: CATALOGUE)
    container.register(RecommendationService)
    return container, SessionServiceConfigurator(manager, container)


async def reader(manager: SessionManager, user: str, config: dict[str, Any]) -> str:
    session = await manager.create_session(user, {"service_config": {"RecommendationService": config}})
    record_interaction(session, "dune", "purchase")
    await manager.update_session(session)
    return session.session_id


async def test_two_sessions_with_different_service_config_get_different_algorithms_in_agent_runs(
    manager: SessionManager,
) -> None:
    container, configurator = await shop(manager)
    collaborative = await reader(manager, "ana", {"algorithm": "collaborative"})
    content = await reader(manager, "bob", {"algorithm": "content_based"})
    toolset = recommendation_toolset(manager, configurator)

    outputs = {}
    for sid, user in ((collaborative, "ana"), (content, "bob")):
        model = RecommendingModel({"limit": 2})
        agent = Agent(FunctionModel(model), deps_type=SessionIds, capabilities=[SessionCapability(manager)])
        result = await agent.run("what should I read next?", deps=SessionIds(sid, user), toolsets=[toolset])
        assert "recommend_items" in model.offered
        outputs[user] = (model.returned[0], json.loads(result.output))

    ana, ana_items = outputs["ana"]
    bob, bob_items = outputs["bob"]
    assert ana["algorithm"] == "collaborative" and {i["algorithm"] for i in ana["items"]} == {"collaborative"}
    # Readers of dune bought emma twice and hyperion once: co-occurrence puts emma first.
    assert ana_items == ["emma", "hyperion"]
    assert bob["algorithm"] == "content_based" and {i["algorithm"] for i in bob["items"]} == {"content_based"}
    # By attributes, foundation is dune's twin and hyperion shares scifi + space.
    assert bob_items == ["foundation", "hyperion"]
    assert "dune" not in ana_items + bob_items
    # The container's shared service was configured by neither session.
    shared = await container.resolve(RecommendationService)
    assert shared.algorithm == "collaborative" and shared.context is None
    # The capability recorded the tool call in each session's history.
    for sid in (collaborative, content):
        stored = await manager.store.get(sid)
        assert stored is not None
        assert any(e["type"] == "context" and e["data"]["tool_name"] == "recommend_items" for e in stored.history)


async def test_similar_items_with_personalisation_off_for_one_session(manager: SessionManager) -> None:
    _, configurator = await shop(manager)
    sid = await reader(manager, "cy", {"algorithm": "content_based", "personalization_enabled": False})
    model = RecommendingModel({"item_id": "emma", "limit": 1})
    agent = Agent(FunctionModel(model), deps_type=SessionIds, capabilities=[SessionCapability(manager)])
    await agent.run(
        "more like emma", deps=SessionIds(sid, "cy"), toolsets=[recommendation_toolset(manager, configurator)]
    )
    answer = model.returned[0]
    assert answer["personalized"] is False
    assert [i["item_id"] for i in answer["items"]] == ["persuasion"]


async def test_the_tool_works_from_a_plain_tool_registry_and_uses_the_anonymous_session_as_the_user(
    manager: SessionManager,
) -> None:
    _, configurator = await shop(manager)
    session = await manager.create_session(
        None, {"service_config": {"RecommendationService": {"algorithm": "popularity"}}}
    )
    record_interaction(session, "dune", "purchase")
    await manager.update_session(session)
    tool = recommendation_tool(configurator)
    answer = await tool.invoke(ExecutionContext(session_id=session.session_id), {"limit": 3})
    assert answer["algorithm"] == "popularity"
    assert [i["item_id"] for i in answer["items"]] == ["emma", "hyperion"]  # dune is the session's own
    with pytest.raises(SessionNotFound):
        await tool.invoke(ExecutionContext(), {})
