"""The real app served by uvicorn on a free loopback port in a thread, and Debian's chromium
driven by Playwright, for the browser tests."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import uvicorn
from playwright.async_api import Browser, Page, Response, ViewportSize, async_playwright

from tests.api.conftest import free_port

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PHONE = ViewportSize(width=390, height=844)


@contextmanager
def serving(app: Any) -> Iterator[str]:
    """The app on http://127.0.0.1:<port> until the block ends; yields that base URL."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    # In a thread uvicorn installs no signal handlers; its own event loop serves the app.
    thread = threading.Thread(target=server.run, name="web-app", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the web app did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    executable = shutil.which("chromium")
    if executable is None:
        pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def phone_page(browser: Browser, base_url: str) -> Page:
    """A page in a fresh context (its own cookies) the size of a phone, as a phone lays out."""
    context = await browser.new_context(
        base_url=base_url, viewport=PHONE, is_mobile=True, has_touch=True
    )
    context.set_default_timeout(15_000)
    return await context.new_page()


async def sign_in(page: Page, name: str, password: str, path: str) -> None:
    """Open `path` signed out, sign in on the page it sends to, and come back to it."""
    await page.goto(path)
    assert "/login?next=" in page.url, page.url
    await page.fill('input[name="name"]', name)
    await page.fill('input[name="password"]', password)
    async with page.expect_navigation():
        await page.click('button:has-text("Sign in")')
    assert page.url.endswith(path), page.url


async def post_as_page(page: Page, action: str, fields: dict[str, str]) -> Response:
    """Submit a form the page does not offer, with the page's own CSRF token (from its sign-out
    form): what a user could send by hand. Returns the answer to the POST."""
    script = """([action, fields]) => {
        const form = document.createElement("form");
        form.method = "post";
        form.action = action;
        const token = document.querySelector('form[action="/logout"] [name="csrf_token"]');
        for (const [name, value] of Object.entries({...fields, csrf_token: token.value})) {
            const input = document.createElement("input");
            input.type = "hidden";
            input.name = name;
            input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        form.submit();
    }"""
    async with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(action)
    ) as answer:
        await page.evaluate(script, [action, fields])
    await page.wait_for_load_state()
    return await answer.value


async def fits_the_screen(page: Page) -> bool:
    """No horizontal scrolling: nothing on the page is wider than the viewport."""
    return bool(await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"))
