"""Session-aware service configuration: one shared recommendation service, configured per session.

`agent_sessions.analysis.RecommendationService` is a ``@service(name="recommendations")`` class
whose `configure` takes a session's ``state["service_config"]["RecommendationService"]`` and
whose `get_recommendations` runs real algorithms (item-item collaborative filtering over the
``interaction`` entries in session history, content-based similarity of item attributes, and
popularity for a cold start). This script:

1. records book purchases as history entries in a few readers' sessions;
2. registers the service in a `SmartDependencyContainer` (by its `@service` name) and lets a
   `SessionServiceConfigurator` apply each session's ``state["service_config"]``;
3. shows two sessions getting two algorithms from the same shared service, and a newcomer
   getting popular books;
4. lets a pydantic-ai agent call the `recommend_items` tool (offline, scripted model).

    python examples/recommendations.py                      # in memory
    python examples/recommendations.py sqlite+aiosqlite:///example.db
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_sessions import (
    ExecutionContext,
    SessionManager,
    SessionServiceConfigurator,
    SmartDependencyContainer,
    create_store,
)
from agent_sessions.analysis import RecommendationService, Table, analyze_user, record_interaction
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds
from agent_sessions.integrations.recommend import recommendation_toolset

BOOKS: dict[str, dict[str, Any]] = {
    "dune": {"genre": "scifi", "tags": ["space", "classic", "politics"]},
    "foundation": {"genre": "scifi", "tags": ["space", "classic", "politics"]},
    "hyperion": {"genre": "scifi", "tags": ["space", "pilgrimage"]},
    "neuromancer": {"genre": "scifi", "tags": ["cyberpunk", "classic"]},
    "snow-crash": {"genre": "scifi", "tags": ["cyberpunk", "satire"]},
    "emma": {"genre": "romance", "tags": ["classic", "satire"]},
    "persuasion": {"genre": "romance", "tags": ["classic"]},
    "rebecca": {"genre": "mystery", "tags": ["classic", "gothic"]},
    "gone-girl": {"genre": "mystery", "tags": ["thriller"]},
}

READERS = {
    "ana": ["dune", "foundation", "hyperion"],
    "bo": ["dune", "neuromancer", "snow-crash"],
    "cy": ["emma", "persuasion", "rebecca"],
    "dee": ["dune", "foundation", "emma"],
    "eli": ["gone-girl", "rebecca", "dune"],
}


def show(title: str, recommendations: list[Any]) -> None:
    rows = [(r["item_id"], r["algorithm"], r["score"], r["reason"]) for r in recommendations]
    print(Table.of(("book", "algorithm", "score", "why"), rows, title=title).to_text(), end="\n\n")


class OneToolCall:
    """A scripted model: call ``recommend_items`` once, then answer with the titles it got."""

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        last = messages[-1]
        returned = (
            [p.content for p in last.parts if isinstance(p, ToolReturnPart)] if isinstance(last, ModelRequest) else []
        )
        if not returned:
            return ModelResponse(parts=[ToolCallPart("recommend_items", json.dumps({"limit": 3}), tool_call_id="c1")])
        titles = ", ".join(item["item_id"] for item in returned[0]["items"])
        return ModelResponse(parts=[TextPart(f"You might enjoy: {titles} ({returned[0]['algorithm']}).")])


async def main(url: str) -> None:
    manager = SessionManager(create_store(url), auto_cleanup=False)
    async with manager:
        # 1. Purchases are interactions recorded in each reader's session history.
        for reader, books in READERS.items():
            session = await manager.create_session(reader)
            for book in books:
                record_interaction(session, book, "purchase")
            await manager.update_session(session)

        # 2. The container knows the service by its @service name; its constructor gets the
        #    SessionManager (by type) and the catalogue (by parameter name) injected.
        container = SmartDependencyContainer()
        container.register_instance(SessionManager, manager)
        container.register("catalogue", lambda: BOOKS)
        container.register(RecommendationService)
        configurator = SessionServiceConfigurator(manager, container)
        shared = await container.resolve("recommendations")

        # 3. Two new sessions of readers who bought "dune", configured differently.
        collab = await manager.create_session(
            "fay", {"service_config": {"RecommendationService": {"algorithm": "collaborative"}}}
        )
        content = await manager.create_session(
            "gus", {"service_config": {"RecommendationService": {"algorithm": "content_based"}}}
        )
        for session in (collab, content):
            record_interaction(session, "dune", "purchase")
            await manager.update_session(session)

        for session in (collab, content):
            context = ExecutionContext(session_id=session.session_id, user_id=session.user_id)
            service = await configurator.configure_service(shared, context)
            recommendations = await service.get_recommendations(session.user_id or "", limit=3)
            show(f"{session.user_id} ({service.algorithm}), after buying dune", recommendations)

        newcomer = await manager.create_session("hal")
        service = await configurator.configure_service(
            shared, ExecutionContext(session_id=newcomer.session_id, user_id="hal")
        )
        show("hal, a newcomer (cold start)", await service.get_recommendations("hal", limit=3))
        print(f"shared service untouched: algorithm={shared.algorithm!r}\n")

        # 4. The same service behind a tool, in an agent run for fay's session.
        agent = Agent(
            FunctionModel(OneToolCall()),
            deps_type=SessionIds,
            capabilities=[SessionCapability(manager)],
            toolsets=[recommendation_toolset(manager, configurator)],
        )
        result = await agent.run("What should I read next?", deps=SessionIds(collab.session_id, "fay"))
        print(f"agent: {result.output}")
        stats = await analyze_user(manager, "fay")
        print(f"fay's history: {stats.entries_by_type}, tools used: {[t.name for t in stats.top_tools()]}")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "memory://"))
