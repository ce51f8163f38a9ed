"""Integrations with agent frameworks and web servers.

Import the one you use on purpose; each needs its extra:

- `agent_sessions.integrations.pydantic_ai` (``pip install agent-sessions[pydantic-ai]``):
  `SessionCapability`, `session_toolset`, `SessionDeps`, `run_turn`, and pydantic-ai
  `ConversationStore` backends on SQL databases and Redis;
- `agent_sessions.integrations.openai_agents` (``pip install agent-sessions[openai-agents]``):
  `AgentsSession`, the OpenAI Agents SDK `Session` protocol over one of our sessions;
- `agent_sessions.integrations.adk` (``pip install agent-sessions[adk]``): `AgentSessionsService`,
  a Google ADK `BaseSessionService` on a `SessionManager`;
- `agent_sessions.integrations.asgi` (``pip install agent-sessions[fastapi]``): `SessionMiddleware`
  and the FastAPI dependency `get_session`;
- `agent_sessions.integrations.mcp` (``pip install agent-sessions[mcp]``): `create_server` and
  `streamable_http_app`, the session tools as an MCP server (``agent-sessions mcp`` over stdio);
- `agent_sessions.integrations.recommend`: the `recommend_items` tool (`recommendation_tool`, and
  `recommendation_toolset` for pydantic-ai), which uses the session-configured
  `RecommendationService`.
"""
