"""Approval latency: from a person's click to the campaign's workflow going on.

    .venv/bin/python bench/approvals.py [--requests N] [--skip web,api] [--work DIR]

Runs the embedded runtime (`liftloop up`: dev server on SQLite, CDP on SQLite, SMTP sink, one
worker, the API under uvicorn) with Slack configured against the local stand-in of Slack's Web
API (tests/slack/slack_stub.py, real HTTP on 127.0.0.1), and N one-cycle campaigns whose offer
is above their discount limit, so each waits on one approval request. Each request is decided
in turn, and two times are taken:
  ack      the clicked path's HTTP answer (Slack wants one within 3 s);
  resumed  from the click until the campaign's status shows it left the approval stage
           (the decision delivered to the workflow, its update accepted, the cycle going on),
for three paths:
  1. Slack: a signed `block_actions` POST to /slack/interactivity (Approve button), which
     answers at once and decides in a background task;
  2. web: the inbox's form post (POST /approvals/{id}/decide, signed in with a session), which
     decides before it answers — measured only when the web app is present (liftloop/web);
  3. API: POST /v1/approvals/{id} with the approver's personal token, as the reference.
`resumed` polls the request's row through the API until it reads approved, then the
campaign's status (a Temporal query) until its stage is no longer `approval`. Between two
samples the previous campaign runs its cycle out, so samples do not overlap; each path's first
request is a warm-up and not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from liftloop import runtime
from liftloop.accounts.tokens import issue_token
from liftloop.accounts.users import add_user
from liftloop.credentials import api_keys
from liftloop.db import engine_for
from liftloop.settings import Settings
from tests.slack.slack_stub import SlackStub, block_action, form, sign
from tools.simulation.customers import generate_customers

SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
APPROVER, APPROVER_SLACK, PASSWORD = "lead", "U0BENCHLEAD", "bench-password-1234"
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')

Click = Callable[[httpx.AsyncClient, str], Awaitable[httpx.Response]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _settings(work: Path, slack: SlackStub) -> Settings:
    return Settings(
        data_dir=work / "data",
        shards=2,
        attribution_window_override_s=0.2,
        temporal_port=_free_port(),
        temporal_http_port=_free_port(),
        temporal_metrics_port=_free_port(),
        temporal_ui_port=_free_port(),
        api_port=_free_port(),
        smtp_port=_free_port(),
        task_queue="bench-approvals",
        slack_bot_token=slack.token,
        slack_signing_secret=SIGNING_SECRET,
        slack_base_url=slack.base_url,
    )


def _export(settings: Settings) -> None:
    """The runtime's processes read the same settings from the environment."""
    os.environ.update(
        {
            "LIFTLOOP_DATA_DIR": str(settings.data_dir),
            "LIFTLOOP_SHARDS": str(settings.shards),
            "LIFTLOOP_TASK_QUEUE": settings.task_queue,
            "LIFTLOOP_ATTRIBUTION_WINDOW_OVERRIDE_S": str(settings.attribution_window_override_s),
            "LIFTLOOP_SLACK_BOT_TOKEN": settings.slack_bot_token.get_secret_value(),
            "LIFTLOOP_SLACK_SIGNING_SECRET": settings.slack_signing_secret.get_secret_value(),
            "LIFTLOOP_SLACK_BASE_URL": settings.slack_base_url,
            **{
                f"LIFTLOOP_{name.upper()}": str(getattr(settings, name))
                for name in (
                    "temporal_port",
                    "temporal_http_port",
                    "temporal_metrics_port",
                    "temporal_ui_port",
                    "api_port",
                    "smtp_port",
                )
            },
        }
    )


def _spec(campaign_id: str, batch: str) -> dict[str, Any]:
    return {
        "id": campaign_id,
        "channels": ["email"],
        "audience": {"segment": {"all": [{"trait": "source_batch", "eq": batch}]}},
        "offers": [{"id": "twenty_off", "discount_pct": 20}],
        "limits": {"max_discount_pct": 15},
        "content": {"market": "US", "brand": "demo"},
        "cadence": {"every": "0s", "max_cycles": 1},
        "stop": {"ship_when": "never", "min_cycles": 1},
    }


async def _until(probe: Callable[[], Awaitable[Any]], what: str, seconds: float = 120) -> Any:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await probe()
        if found:
            return found
        await asyncio.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what}")


async def _waiting_requests(
    http: httpx.AsyncClient, key: dict[str, str], manager: dict[str, str], prefix: str, n: int
) -> list[tuple[str, str]]:
    """Start n campaigns; (campaign id, request id) of each once its request waits."""
    ids = [f"{prefix}-{i}" for i in range(n)]
    for cid in ids:
        started = await http.post("/v1/campaigns", headers=manager, json=_spec(cid, "bench"))
        started.raise_for_status()
    pairs = []
    for cid in ids:

        async def pending(cid: str = cid) -> list[dict[str, Any]]:
            answer = await http.get("/v1/approvals", headers=key, params={"campaign_id": cid})
            return list(answer.json())

        found = await _until(pending, f"the approval request of {cid}")
        pairs.append((cid, str(found[0]["request_id"])))
    return pairs


async def _decided(http: httpx.AsyncClient, key: dict[str, str], cid: str, rid: str) -> bool:
    answer = await http.get(
        "/v1/approvals", headers=key, params={"campaign_id": cid, "status": "all"}
    )
    return any(r["request_id"] == rid and r["status"] == "approved" for r in answer.json())


async def measure(
    http: httpx.AsyncClient,
    key: dict[str, str],
    pairs: list[tuple[str, str]],
    click: Click,
) -> tuple[list[float], list[float]]:
    """Per request: seconds to the click's answer, and to the campaign leaving approval."""
    acks, resumed = [], []
    for cid, rid in pairs:
        t0 = time.perf_counter()
        answer = await click(http, rid)
        acks.append(time.perf_counter() - t0)
        if answer.status_code >= 400:
            raise RuntimeError(f"{rid}: {answer.status_code} {answer.text[:300]}")
        # The request's row first (the database, not the worker): a query of the workflow
        # while its update is under way would compete with it on the worker.
        while not await _decided(http, key, cid, rid):
            await asyncio.sleep(0.005)
        while (await http.get(f"/v1/campaigns/{cid}", headers=key)).json()["stage"] == "approval":
            await asyncio.sleep(0.005)
        resumed.append(time.perf_counter() - t0)

        async def done(cid: str = cid) -> bool:
            st = (await http.get(f"/v1/campaigns/{cid}", headers=key)).json()
            return bool(st["stage"] == "done")

        await _until(done, f"{cid} to finish")  # untimed: the next sample starts idle
    return acks, resumed


def slack_click(slack: SlackStub) -> Click:
    async def click(http: httpx.AsyncClient, rid: str) -> httpx.Response:
        payload = block_action(APPROVER_SLACK, "approve", rid, response_url=slack.response_url(rid))
        body = form(payload)
        return await http.post(
            "/slack/interactivity", content=body, headers=sign(SIGNING_SECRET, body)
        )

    return click


async def web_session(http: httpx.AsyncClient) -> str | None:
    """Sign the approver in to the web app; its CSRF token, or None without a web app."""
    page = await http.get("/login")
    found = _CSRF.search(page.text) if page.status_code == 200 else None
    if found is None:
        return None
    signed_in = await http.post(
        "/login",
        data={"name": APPROVER, "password": PASSWORD, "csrf_token": found.group(1), "next": "/"},
    )
    if signed_in.status_code >= 400:
        return None
    inbox = await http.get("/approvals")
    token = _CSRF.search(inbox.text)
    return token.group(1) if token else None


def web_click(csrf: str) -> Click:
    """The inbox's Approve: the form post a browser sends (session cookie, CSRF token)."""

    async def click(http: httpx.AsyncClient, rid: str) -> httpx.Response:
        return await http.post(
            f"/approvals/{rid}/decide",
            data={"csrf_token": csrf, "verdict": "approve", "note": ""},
        )

    return click


def api_click(token: str) -> Click:
    async def click(http: httpx.AsyncClient, rid: str) -> httpx.Response:
        return await http.post(
            f"/v1/approvals/{rid}",
            headers={"Authorization": f"Bearer {token}"},
            json={"approved": True},
        )

    return click


def _ms(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0] * 1000
    return statistics.quantiles(ordered, n=100, method="inclusive")[int(q) - 1] * 1000


def report(label: str, acks: list[float], resumed: list[float]) -> None:
    print(
        f"  {label:<44} ack p50 {_ms(acks, 50):7.1f} ms  p95 {_ms(acks, 95):7.1f} ms   "
        f"resumed p50 {_ms(resumed, 50):7.1f} ms  p95 {_ms(resumed, 95):7.1f} ms  (n={len(acks)})"
    )


async def run(settings: Settings, slack: SlackStub, n: int, skip: set[str]) -> None:
    engine = engine_for(settings.cdp_url)
    generate_customers(engine, 20, batch="bench", seed=1)
    add_user(engine, "maya", "manager")
    add_user(engine, APPROVER, "approver", slack_id=APPROVER_SLACK, password=PASSWORD)
    manager = {"Authorization": f"Bearer {issue_token(engine, 'maya')}"}
    approver_token = issue_token(engine, APPROVER)
    key = {"X-API-Key": api_keys(settings)[0]}
    base = f"http://127.0.0.1:{settings.api_port}"
    async with httpx.AsyncClient(base_url=base, timeout=60) as http:
        paths: list[tuple[str, str, Click]] = [
            ("slack", "1. Slack button -> /slack/interactivity", slack_click(slack))
        ]
        if "web" not in skip:
            csrf = await web_session(http)
            if csrf is None:
                print("  2. web inbox click: not measured (no web app with an inbox here)")
            else:
                paths.append(
                    ("web", "2. web inbox click -> /approvals/{id}/decide", web_click(csrf))
                )
        if "api" not in skip:
            paths.append(
                ("api", "3. API POST /v1/approvals/{id} (reference)", api_click(approver_token))
            )
        for name, label, click in paths:
            pairs = await _waiting_requests(http, key, manager, f"bench-{name}", n + 1)
            acks, resumed = await measure(http, key, pairs, click)
            # The first sample of a path is a warm-up: the API process's first Temporal call
            # connects its client, its first form post reads templates.
            report(label, acks[1:], resumed[1:])
        updates = len(slack.calls("chat.update"))
        posts = len(slack.calls("chat.postMessage"))
        print(f"  Slack stand-in: {posts} messages posted, {updates} updated to decided")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=20)
    parser.add_argument("--skip", default="", help="comma-separated: web, api")
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="liftloop-bench-approvals-"))
    skip = {s for s in args.skip.split(",") if s}
    with SlackStub() as slack:
        settings = _settings(work, slack)
        _export(settings)
        print(
            f"approvals: embedded runtime (dev server on SQLite, CDP on SQLite, SMTP sink, one"
            f" worker, API under uvicorn), Slack stand-in on 127.0.0.1, {os.cpu_count()} cores,"
            f" {args.requests} requests per path"
        )
        try:
            t0 = time.monotonic()
            await asyncio.to_thread(runtime.up, settings)
            print(f"  runtime up in {time.monotonic() - t0:.1f} s")
            await run(settings, slack, args.requests, skip)
        finally:
            await asyncio.to_thread(runtime.down, settings)


if __name__ == "__main__":
    asyncio.run(main())
