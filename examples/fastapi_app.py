"""FastAPI with agent_sessions: a preferences API, a page, login and logout, and a
pydantic-ai agent turn that remembers the visitor.

Serve it (store from AGENT_SESSIONS_STORE, default the embedded SQLite file; the agent runs on an
offline scripted model unless AGENT_SESSIONS_MODEL names a real one, e.g. ``openai:gpt-4o``)::

    uvicorn examples.fastapi_app:app

then open http://127.0.0.1:8000/ and set a preference. Run as a script
(``python examples/fastapi_app.py``) it serves nothing: it plays a short exchange against the
app in-process and prints it.

The session travels in an HttpOnly cookie. `SessionMiddleware` puts the `Session` at
``request.state.session`` (also reached with `Depends(get_session)`): loaded when the browser
sends a known id, else a new one built without store I/O. It saves the changes when the
response starts, and writes a record (and sends a cookie) only once there is something in it.
Log in (`RequestSession.login`) rotates the id, binds the user and carries what the visitor
chose into the user's preferences, so they follow the user to their other devices and next
login; log out deletes the session.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field
from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

from agent_sessions import InvalidUserId, Session, SessionManager, create_store
from agent_sessions.integrations.asgi import RequestSession, SessionMiddleware, get_request_session, get_session
from agent_sessions.integrations.pydantic_ai import SessionCapability, SessionIds, run_turn

STORE_URL_ENV = "AGENT_SESSIONS_STORE"
MODEL_ENV = "AGENT_SESSIONS_MODEL"
THEMES = ("light", "dark", "solarized")
DEFAULT_STORE_URL = "sqlite+aiosqlite:///agent_sessions.db"

PAGE = """<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>agent_sessions: preferences</title>
  <style>
    :root { --bg: #f6f7f9; --card: #ffffff; --text: #1d2330; --muted: #5f6b7a; --accent: #2f6fde;
            --border: #dde2ea; }
    body.theme-dark { --bg: #14171c; --card: #1e232b; --text: #e7ebf0; --muted: #9aa6b5;
                      --accent: #6ea0ff; --border: #2f3641; }
    body.theme-solarized { --bg: #fdf6e3; --card: #eee8d5; --text: #586e75; --muted: #839496;
                           --accent: #268bd2; --border: #d9cfb3; }
    * { box-sizing: border-box; }
    body { margin: 0; font: 16px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif;
           background: var(--bg); color: var(--text); transition: background .2s, color .2s; }
    header { display: flex; align-items: center; justify-content: space-between; gap: 1em;
             padding: .8em 1.5em; background: var(--card); border-bottom: 1px solid var(--border); }
    header h1 { margin: 0; font-size: 1.15em; }
    #account { display: flex; align-items: center; gap: .6em; }
    main { max-width: 44em; margin: 1.5em auto; padding: 0 1em; display: grid; gap: 1em; }
    section { background: var(--card); border: 1px solid var(--border); border-radius: 10px;
              padding: 1em 1.3em; }
    h2 { margin: 0 0 .6em; font-size: 1.05em; }
    form { display: flex; flex-wrap: wrap; align-items: center; gap: .6em; margin: 0; }
    input, select, button { font: inherit; padding: .35em .7em; border-radius: 6px;
                            border: 1px solid var(--border); background: var(--bg); color: var(--text); }
    button { background: var(--accent); border-color: var(--accent); color: #fff; cursor: pointer; }
    button.secondary { background: transparent; color: var(--accent); }
    code { background: var(--bg); padding: .1em .4em; border-radius: 4px; }
    .muted { color: var(--muted); }
    [hidden] { display: none !important; }
  </style>
</head>
<body>
  <header>
    <h1>agent_sessions demo</h1>
    <div id="account">
      <span id="who" class="muted">Anonymous visitor</span>
      <form id="login-form">
        <label for="user-id" class="muted">User</label>
        <input id="user-id" name="user_id" size="12" placeholder="alice" required>
        <button id="login" type="submit">Log in</button>
      </form>
      <button id="logout" class="secondary" type="button" hidden>Log out</button>
    </div>
  </header>
  <main>
    <section>
      <h2>Your preferences</h2>
      <p>Theme: <strong id="current-theme">(none yet)</strong></p>
      <p class="muted">Stored: <code id="preferences">{}</code></p>
      <form id="preferences-form">
        <label for="theme">Theme</label>
        <select id="theme" name="theme">
          <option value="light">light</option>
          <option value="dark">dark</option>
          <option value="solarized">solarized</option>
        </select>
        <button id="save" type="submit">Save</button>
      </form>
    </section>
    <section>
      <h2>Ask the assistant</h2>
      <form id="chat-form">
        <input id="message" name="message" size="36" placeholder="e.g. switch me to the dark theme" required>
        <button id="send" type="submit">Send</button>
      </form>
      <p>Assistant: <span id="reply" class="muted"></span></p>
    </section>
    <p id="status" role="status" class="muted"></p>
  </main>
  <script>
    // Values are shown with textContent, never parsed as HTML.
    const $ = (id) => document.getElementById(id);
    function show(preferences) {
      const theme = preferences.theme;
      $("current-theme").textContent = theme ?? "(none yet)";
      $("preferences").textContent = JSON.stringify(preferences);
      // The form shows what is stored, not the browser's default option.
      $("theme").value = ["light", "dark", "solarized"].includes(theme) ? theme : "light";
      document.body.className = theme ? "theme-" + theme : "";
    }
    function showUser(userId) {
      $("who").textContent = userId ? "Signed in as " + userId : "Anonymous visitor";
      $("login-form").hidden = Boolean(userId);
      $("logout").hidden = !userId;
    }
    async function send(url, body) {
      return fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json"},
        body: JSON.stringify(body ?? {}),
      });
    }
    async function load(status) {
      const me = await (await fetch("/api/me", {credentials: "same-origin"})).json();
      showUser(me.user_id);
      show(me.preferences);
      $("status").textContent = status ?? "loaded";
    }
    $("preferences-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const response = await send("/api/user/preferences", {theme: $("theme").value});
      show((await response.json()).preferences);
      $("status").textContent = response.ok ? "saved" : "error " + response.status;
    });
    $("login-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const response = await send("/api/login", {user_id: $("user-id").value});
      await load(response.ok ? "logged in" : "error " + response.status);
    });
    $("logout").addEventListener("click", async () => {
      const response = await send("/api/logout");
      await load(response.ok ? "logged out" : "error " + response.status);
    });
    $("chat-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const response = await send("/api/agent/chat", {message: $("message").value});
      const answer = await response.json();
      $("reply").textContent = answer.reply;
      show(answer.preferences);
      $("status").textContent = response.ok ? "answered" : "error " + response.status;
    });
    load();
  </script>
</body>
</html>
"""


class Login(BaseModel):
    """The body of `POST /api/login` (a real app would check a password here)."""

    user_id: str = Field(min_length=1, max_length=256)


class Chat(BaseModel):
    """The body of `POST /api/agent/chat`."""

    message: str = Field(min_length=1, max_length=4000)


def offline_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Stands in for an LLM, offline: saves a theme the user names, else reads the preferences;
    then answers from what the session tool returned."""
    prompt, returned = "", {}
    for message in messages:
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    prompt, returned = part.content, {}
                elif isinstance(part, ToolReturnPart):
                    returned[part.tool_name] = part.content
    if not returned:
        theme = next((t for t in THEMES if t in prompt.lower()), None)
        if theme is not None:
            return ModelResponse(parts=[ToolCallPart("update_user_preferences", {"preferences": {"theme": theme}})])
        return ModelResponse(parts=[ToolCallPart("get_user_preferences", {})])
    result = next(iter(returned.values()))
    preferences = result.get("preferences", {}) if isinstance(result, dict) else {}
    verb = "Saved" if "update_user_preferences" in returned else "Your preferences"
    return ModelResponse(parts=[TextPart(f"{verb}: {json.dumps(preferences, sort_keys=True)}")])


def default_model() -> Model | str:
    """The model named by AGENT_SESSIONS_MODEL, else the offline scripted one."""
    return os.environ.get(MODEL_ENV) or FunctionModel(offline_model)


def create_app(
    manager: SessionManager | None = None,
    *,
    model: Model | str | None = None,
    cookie_secure: bool = False,
    cookie_max_age: int | None = 3600,
) -> FastAPI:
    """The example app. Without `manager`, it builds one on the store named by AGENT_SESSIONS_STORE
    and starts/stops it with the app; a `manager` you pass stays yours to start and stop.
    `model` defaults to `default_model()`."""
    owned = manager is None
    if manager is None:
        manager = SessionManager(create_store(os.environ.get(STORE_URL_ENV, DEFAULT_STORE_URL)))
    session_manager = manager

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if not owned:
            yield
            return
        async with session_manager:
            yield

    app = FastAPI(title="agent_sessions example", lifespan=lifespan)
    app.state.session_manager = session_manager
    # Built once: the capability and its toolset are shared by every run (per-run state is copied).
    agent = Agent(
        model if model is not None else default_model(),
        deps_type=SessionIds,
        capabilities=[SessionCapability(session_manager)],
        instructions="You are a helpful assistant that remembers the visitor's preferences.",
    )
    app.state.agent = agent

    # Add session middleware
    app.add_middleware(
        SessionMiddleware,
        session_manager=session_manager,
        cookie_name="session_id",
        cookie_max_age=cookie_max_age,
        cookie_secure=cookie_secure,
        cookie_httponly=True,
    )

    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        # A static page: it never changes the session, so it writes nothing and sets no cookie.
        return PAGE

    # Endpoint with session (usage example 1)
    @app.get("/api/user/preferences")
    async def get_preferences(session: Annotated[Session, Depends(get_session)]) -> dict[str, Any]:
        if not session:
            return {"preferences": {}}
        return {"preferences": session.preferences}

    # Update preferences endpoint (usage example 1)
    @app.post("/api/user/preferences")
    async def update_preferences(
        preferences: dict[str, Any],
        session: Annotated[Session, Depends(get_session)],
    ) -> dict[str, Any]:
        if not session:
            return {"error": "No session"}
        session.preferences.update(preferences)
        # Optional: the middleware saves the changes when the response starts anyway.
        await session_manager.update_session(session)
        return {"status": "success", "preferences": session.preferences}

    @app.get("/api/me")
    async def me(session: Annotated[Session, Depends(get_session)]) -> dict[str, Any]:
        # What the page shows after a reload: who is signed in and the stored preferences.
        return {"user_id": session.user_id, "preferences": session.preferences}

    @app.post("/api/login")
    async def login(body: Login, handle: Annotated[RequestSession, Depends(get_request_session)]) -> dict[str, Any]:
        # One call: a fresh id (a planted, fixated id never becomes a login), the user bound, and
        # what the visitor chose before logging in carried into the user's preferences, which
        # their sessions on other devices share (the visitor's choice wins: keep="session").
        current = await handle.load()
        if current is not None and current.user_id not in (None, body.user_id):
            await handle.destroy()  # someone else is signed in here: log them out first
        try:
            session = await handle.login(body.user_id)
        except InvalidUserId as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from exc
        return {"status": "logged in", "user_id": session.user_id, "preferences": session.preferences}

    @app.post("/api/agent/chat")
    async def chat(body: Chat, handle: Annotated[RequestSession, Depends(get_request_session)]) -> dict[str, Any]:
        # The run loads the session by id, so it must be in the store first (a new one is
        # created here, and its cookie goes out with this response).
        session = await handle.save()
        result = await run_turn(agent, session_manager, session.session_id, body.message)
        # The run saved through the manager: reload to see its changes and renew the cookie.
        refreshed = await handle.refresh()
        preferences = refreshed.preferences if refreshed is not None else {}
        return {"reply": result.output, "preferences": preferences}

    @app.post("/api/logout")
    async def logout(handle: Annotated[RequestSession, Depends(get_request_session)]) -> dict[str, Any]:
        await handle.destroy()
        return {"status": "logged out"}

    return app


app = create_app()


async def demo() -> None:
    """Play a short exchange against the app in-process, on a temporary SQLite file."""
    import httpx

    with tempfile.TemporaryDirectory() as tmp:
        url = os.environ.get(STORE_URL_ENV) or f"sqlite+aiosqlite:///{Path(tmp) / 'example.db'}"
        async with SessionManager(create_store(url)) as manager:
            transport = httpx.ASGITransport(app=create_app(manager))
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as client:
                page = await client.get("/")
                print(f"GET /                      -> {page.status_code}, Set-Cookie: {page.headers.get('set-cookie')}")
                first = await client.get("/api/user/preferences")
                print(f"GET /api/user/preferences  -> {first.json()} (no cookie: nothing was written)")
                saved = await client.post("/api/user/preferences", json={"theme": "dark", "language": "en"})
                cookie = saved.headers["set-cookie"].split(";")
                print(f"POST /api/user/preferences -> {saved.json()}")
                print(f"   cookie attributes: {'; '.join(c.strip() for c in cookie[1:])}")
                again = await client.get("/api/user/preferences")
                print(f"GET /api/user/preferences  -> {again.json()} (same session, from the store)")
                chat = await client.post("/api/agent/chat", json={"message": "Switch me to the solarized theme"})
                print(f"POST /api/agent/chat       -> {chat.json()}")
                login = await client.post("/api/login", json={"user_id": "alice"})
                print(f"POST /api/login            -> {login.json()}, new id issued: {'set-cookie' in login.headers}")
                async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as laptop:
                    elsewhere = await laptop.post("/api/login", json={"user_id": "alice"})
                    print(f"POST /api/login (laptop)   -> {elsewhere.json()} (the visitor's choices followed alice)")
                logout = await client.post("/api/logout")
                expired = "Max-Age=0" in logout.headers.get("set-cookie", "")
                print(f"POST /api/logout           -> {logout.json()}, cookie expired: {expired}")
                after = await client.get("/api/user/preferences")
                print(f"GET /api/user/preferences  -> {after.json()} (logged out: an empty session)")


if __name__ == "__main__":
    asyncio.run(demo())
