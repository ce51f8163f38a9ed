"""A real browser against the example app: Debian's chromium, headless, driven by Playwright.

`uvicorn examples.fastapi_app:app` runs as its own process on a free port (the socket is bound
here and handed over, so there is no race), on an embedded SQLite file. The browser loads the
page, sets a preference through the page's fetch, reloads and sees it persisted; the session
cookie is HttpOnly, so the page's JavaScript can never read it. A chat turn with the example's
pydantic-ai agent (offline model) changes the same session. The login and logout buttons rotate
and end the session; a screenshot of the signed-in page is saved in the test's tmp_path.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ..support import services_required
from .support import free_socket

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> None:
    if Path(CHROMIUM).exists():
        return
    message = f"{CHROMIUM} is missing; install it with: apt-get update && apt-get install -y chromium"
    if services_required():
        pytest.fail(message + " (AGENT_SESSIONS_REQUIRE_SERVICES=1)")
    pytest.skip(message)


@pytest.fixture
def example_server(tmp_path: Path) -> Iterator[str]:
    """`uvicorn examples.fastapi_app:app` on a free port and a fresh SQLite file; its base URL."""
    sock = free_socket()
    port = sock.getsockname()[1]
    env = {
        **os.environ,
        "AGENT_SESSIONS_STORE": f"sqlite+aiosqlite:///{tmp_path / 'browser.db'}",
        "PYTHONPATH": str(ROOT),
    }
    log = (tmp_path / "uvicorn.log").open("wb")
    command = [sys.executable, "-m", "uvicorn", "examples.fastapi_app:app", "--fd", str(sock.fileno())]
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()]
    )
    sock.close()  # the child holds its own copy
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.close()


async def wait_until_up(base_url: str, log: Path) -> None:
    async with httpx.AsyncClient(base_url=base_url, verify=False, trust_env=False) as client:
        for _ in range(300):
            try:
                if (await client.get("/")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"the example app did not come up:\n{log.read_text()}")


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    require_chromium()
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        instance = await playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield instance
        finally:
            await instance.close()


async def test_preference_set_in_the_browser_survives_a_reload_and_the_cookie_stays_httponly(
    browser: Any, example_server: str, tmp_path: Path
) -> None:
    await wait_until_up(example_server, tmp_path / "uvicorn.log")
    context = await browser.new_context()
    page = await context.new_page()

    await page.goto(example_server + "/")
    await page.wait_for_function("document.getElementById('status').textContent === 'loaded'")
    assert await page.text_content("#current-theme") == "(none yet)"
    assert await context.cookies() == []  # viewing and reading wrote nothing: no session, no cookie

    await page.select_option("#theme", "dark")
    await page.click("#save")
    await page.wait_for_function("document.getElementById('status').textContent === 'saved'")

    [session_cookie] = [c for c in await context.cookies() if c["name"] == "session_id"]
    assert session_cookie["httpOnly"] is True
    assert session_cookie["sameSite"] == "Lax"
    assert session_cookie["path"] == "/"
    visible = await page.evaluate("document.cookie")
    assert "session_id" not in visible and session_cookie["value"] not in visible
    # Nor does any response header hand the id to the page's JavaScript.
    exposed = await page.evaluate(
        "fetch('/api/user/preferences').then(r => [...r.headers.entries()].map(e => e.join(': ')).join('\\n'))"
    )
    assert session_cookie["value"] not in exposed

    await page.reload()
    await page.wait_for_function("document.getElementById('status').textContent === 'loaded'")
    assert await page.text_content("#current-theme") == "dark"
    assert await page.input_value("#theme") == "dark"  # the form shows the stored value
    [after_reload] = [c for c in await context.cookies() if c["name"] == "session_id"]
    assert after_reload["value"] == session_cookie["value"]

    # The agent turn (offline scripted model) changes the same session's preferences.
    await page.fill("#message", "Please switch me to the solarized theme")
    await page.click("#send")
    await page.wait_for_function("document.getElementById('status').textContent === 'answered'")
    assert "solarized" in (await page.text_content("#reply") or "")
    await page.reload()
    await page.wait_for_function("document.getElementById('status').textContent === 'loaded'")
    assert await page.text_content("#current-theme") == "solarized"

    # Another browser profile is another visitor: it does not see the preference.
    stranger = await browser.new_context()
    other = await stranger.new_page()
    await other.goto(example_server + "/")
    await other.wait_for_function("document.getElementById('status').textContent === 'loaded'")
    assert await other.text_content("#current-theme") == "(none yet)"
    await stranger.close()
    await context.close()


async def wait_for_status(page: Any, status: str) -> None:
    await page.wait_for_function(f"document.getElementById('status').textContent === {status!r}")


async def test_login_and_logout_buttons_rotate_and_end_the_session_and_a_screenshot_is_saved(
    browser: Any, example_server: str, tmp_path: Path
) -> None:
    await wait_until_up(example_server, tmp_path / "uvicorn.log")
    context = await browser.new_context(viewport={"width": 1000, "height": 700})
    page = await context.new_page()
    await page.goto(example_server + "/")
    await wait_for_status(page, "loaded")
    assert await page.text_content("#who") == "Anonymous visitor"
    assert await page.is_hidden("#logout")
    await page.screenshot(path=str(tmp_path / "example-page-anonymous.png"))

    await page.select_option("#theme", "solarized")
    await page.click("#save")
    await wait_for_status(page, "saved")
    [anonymous] = [c["value"] for c in await context.cookies() if c["name"] == "session_id"]

    await page.fill("#user-id", "alice")
    await page.click("#login")
    await wait_for_status(page, "logged in")
    assert await page.text_content("#who") == "Signed in as alice"
    assert await page.is_visible("#logout") and await page.is_hidden("#login-form")
    [alice] = [c for c in await context.cookies() if c["name"] == "session_id"]
    assert alice["value"] != anonymous and alice["httpOnly"] is True  # a fresh id on login

    await page.select_option("#theme", "dark")
    await page.click("#save")
    await wait_for_status(page, "saved")
    await page.reload()
    await wait_for_status(page, "loaded")
    assert await page.text_content("#who") == "Signed in as alice"
    assert await page.input_value("#theme") == "dark"
    assert await page.get_attribute("body", "class") == "theme-dark"  # the page wears the stored theme
    screenshot = tmp_path / "example-page-signed-in.png"
    await page.screenshot(path=str(screenshot), full_page=True)
    assert screenshot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") and screenshot.stat().st_size > 10_000

    await page.click("#logout")
    await wait_for_status(page, "logged out")
    assert await page.text_content("#who") == "Anonymous visitor"
    assert await page.text_content("#current-theme") == "(none yet)"
    assert await page.input_value("#theme") == "light"
    assert [c for c in await context.cookies() if c["name"] == "session_id"] == []  # the cookie was deleted

    # Alice's preferences follow her to her next login (a new session).
    await page.fill("#user-id", "alice")
    await page.click("#login")
    await wait_for_status(page, "logged in")
    assert await page.input_value("#theme") == "dark"
    [again] = [c["value"] for c in await context.cookies() if c["name"] == "session_id"]
    assert again != alice["value"]
    await context.close()
