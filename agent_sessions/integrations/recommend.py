"""`recommend_items`: a tool that recommends with the `RecommendationService` of the current session.

Each call resolves the service from the `SmartDependencyContainer` (inside the call context's
service scope, so scoped registrations work too) and lets the `SessionServiceConfigurator` apply
the session's ``service_config`` to a copy: two sessions configured with different algorithms
get different algorithms from the same agent, and the shared service is never changed. The user
is the context's user (``"session:<id>"`` for an anonymous session, as in `user_key`); the model
chooses only the optional similar-to item and how many items it wants.

::

    container = SmartDependencyContainer()
    container.register_instance(SessionManager, manager)
    container.register("catalogue", lambda: CATALOGUE)
    container.register(RecommendationService)
    configurator = SessionServiceConfigurator(manager, container)

    agent = Agent(model, deps_type=SessionIds, capabilities=[SessionCapability(manager)],
                  toolsets=[recommendation_toolset(manager, configurator)])

`recommendation_tool(configurator)` is the same tool as an agent_sessions `Tool`, for a
`ToolRegistry` of your own (any framework); `recommendation_toolset` needs the ``pydantic-ai`` extra.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Final

from pydantic import Field

from ..analysis.recommendations import RecommendationService
from ..context import ExecutionContext
from ..errors import SessionNotFound
from ..manager import SessionManager
from ..services import SessionServiceConfigurator
from ..tools import Tool, ToolRegistry

if TYPE_CHECKING:
    from pydantic_ai import FunctionToolset

    from .pydantic_ai import SessionDeps

__all__ = ["MAX_RECOMMENDATIONS", "recommendation_tool", "recommendation_toolset"]

#: The most items one `recommend_items` call may ask for.
MAX_RECOMMENDATIONS: Final = 20

Limit = Annotated[int, Field(ge=1, le=MAX_RECOMMENDATIONS)]


def recommendation_tool(
    configurator: SessionServiceConfigurator,
    *,
    service: type[RecommendationService] | str = "recommendations",
    name: str = "recommend_items",
) -> Tool[Any, Any]:
    """The `recommend_items` tool, resolving `service` (a registered name or type) per call."""

    async def recommend_items(ctx: ExecutionContext, item_id: str | None = None, limit: Limit = 5) -> dict[str, Any]:
        """Recommend items for the current user, never ones they already have.

        Give `item_id` to get items similar to that one. Returns the algorithm used and the items,
        each with a score and the reason it was chosen.
        """
        if ctx.user_id is not None:
            user = ctx.user_id
        elif ctx.session_id is not None:
            user = f"session:{ctx.session_id}"
        else:
            raise SessionNotFound("recommend_items needs a context with a session or a user")
        async with configurator.dependency_container.scope(ctx):
            configured = await configurator.get_service(service, ctx)
            if not isinstance(configured, RecommendationService):
                raise TypeError(f"{service!r} resolved to a {type(configured).__name__}, not a RecommendationService")
            items = await configured.get_recommendations(user, item_id=item_id, limit=limit)
        return {
            "algorithm": configured.algorithm,
            "personalized": configured.personalization_enabled,
            "items": items,
        }

    return Tool(recommend_items, name=name)


def recommendation_toolset(
    manager: SessionManager,
    configurator: SessionServiceConfigurator,
    *,
    service: type[RecommendationService] | str = "recommendations",
    id: str | None = "agent_sessions_recommendations",
) -> FunctionToolset[SessionDeps]:
    """`recommend_items` as a pydantic-ai `FunctionToolset` typed against `SessionDeps`
    (the session is the run's; with `SessionCapability` the call runs in its child context)."""
    from .pydantic_ai import session_toolset

    registry = ToolRegistry([recommendation_tool(configurator, service=service)])
    return session_toolset(manager, registry=registry, id=id)
