"""Posting signed interactions to the app, as Slack posts them."""

from __future__ import annotations

from typing import Any

import httpx

from tests.slack.slack_stub import form, sign

ROUTE = "/slack/interactivity"
# The app's signing secret in these tests (a test value: Slack makes a random one per app).
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"


def http_for(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


async def post_signed(
    http: httpx.AsyncClient,
    payload: dict[str, Any],
    *,
    secret: str = SIGNING_SECRET,
    timestamp: int | None = None,
) -> httpx.Response:
    body = form(payload)
    return await http.post(ROUTE, content=body, headers=sign(secret, body, timestamp))
