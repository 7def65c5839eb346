"""`POST /slack/interactivity`: where Slack sends the clicks on an approval message's buttons
and the reject form's submissions (the Request URL of the app's interactivity, see
deploy/slack-app-manifest.yml and docs/slack.md).

Slack signs these requests instead of sending liftloop's key: the raw body (at most 64 KiB) is
verified with the signing secret before anything is parsed (`approvals.slack_interactivity`);
a bad, missing, stale or replayed signature is 401, and without a signing secret every request
is 503. The route answers within Slack's three seconds and decides afterwards (a background
task), replying through the interaction's response_url.

`create_app` mounts the router and overrides `get_slack_context`; alone, the route has no
secret and refuses everything."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.engine import Engine
from temporalio.client import Client

from approvals.notify import ApprovalNotifier
from approvals.requests import approval_workflow, decide_approval
from approvals.rules import Decider
from approvals.slack_blocks import REASON_BLOCK
from approvals.slack_interactivity import (
    MAX_BODY_BYTES,
    SlackInteractivity,
    SlackPayloadError,
    SlackRequestRefused,
)
from liftloop.api_errors import ERROR_RESPONSES, ApiError, ShapedRoute
from liftloop.api_input import read_body
from liftloop.loop.payloads import ApprovalOutcome
from liftloop.notifications import slack_api
from liftloop.settings import Settings
from tools.audit import AuditLog


@dataclass
class SlackContext:
    """What the route needs from the app; the interactivity handler is made on first use."""

    settings: Settings
    engine: Engine
    audit: AuditLog
    temporal: Callable[[], Awaitable[Client]]
    signing_key: bytes
    notifier: ApprovalNotifier
    made: SlackInteractivity | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def decide(
        self, request_id: str, approved: bool, decider: Decider, note: str
    ) -> ApprovalOutcome:
        waiting = await asyncio.to_thread(approval_workflow, self.engine, request_id)
        return await decide_approval(
            await self.temporal() if waiting else None,
            self.engine,
            request_id,
            approved,
            decider,
            note,
            signing_key=self.signing_key,
            audit=self.audit,
            notifier=self.notifier,
        )

    def interactivity(self) -> SlackInteractivity:
        secret = self.settings.slack_signing_secret.get_secret_value()
        if not secret.strip():
            raise ApiError(
                503, "slack_signing_secret", "is not set: Slack's requests cannot be verified"
            )
        with self._lock:
            if self.made is None:
                self.made = SlackInteractivity(
                    self.engine, secret, slack_api(self.settings), self.decide
                )
            return self.made


def get_slack_context() -> SlackContext:
    """Overridden by `create_app`; unmounted, nothing can be verified."""
    raise ApiError(503, "slack_signing_secret", "Slack is not configured in this app")


router = APIRouter(tags=["slack"], route_class=ShapedRoute, responses=ERROR_RESPONSES)
Context = Annotated[SlackContext, Depends(get_slack_context)]


@router.post("/slack/interactivity", response_model=None)
async def interactivity(request: Request, background: BackgroundTasks, ctx: Context) -> Response:
    """Slack's interactivity requests (form-encoded `payload`, signed by Slack): 200 at once,
    the decision after; 401 for a request Slack did not sign (or signed long ago, or sent
    before); a refusal of the reject form's reason is shown in the form."""
    desk = ctx.interactivity()
    body = await read_body(request, MAX_BODY_BYTES)
    try:
        await asyncio.to_thread(desk.authenticate, body, request.headers)
        interaction = desk.parse(body)
    except SlackRequestRefused as exc:
        raise ApiError(401, exc.field, exc.reason) from None
    except SlackPayloadError as exc:
        raise ApiError(400, exc.field, exc.reason) from None
    if interaction is None:
        return Response(status_code=200)
    if interaction.kind == "reject_reason":
        problem = await asyncio.to_thread(desk.refusal, interaction)
        if problem is not None:
            return JSONResponse(
                {"response_action": "errors", "errors": {REASON_BLOCK: problem[:2000]}}
            )
    background.add_task(desk.act, interaction)
    return Response(status_code=200)
