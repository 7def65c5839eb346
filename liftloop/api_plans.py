"""The planner's API: `POST /v1/plans`, `GET /v1/plans/{thread_id}`,
`POST /v1/plans/{thread_id}/decision`.

A plan runs the planner graph up to its approval step (`liftloop.planning.PlanDesk`, in a worker
thread: the graph, its tools and its model calls block); an approval starts the campaign through
`liftloop.campaigns.start_campaign`, as `POST /v1/campaigns` does. Bodies are read by the API's
one strict JSON reader and refused in its one error shape; every route takes the API's key.

`create_app` mounts the router and overrides its two dependencies: the desk of the app and the
app's key check. Alone, the router refuses every request (no key is known).
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from agents.planner import (
    MAX_BRIEF_CHARS,
    ApprovalDecision,
    PlanConflict,
    PlanningError,
    PlanNotFound,
    PlanResult,
)
from liftloop.api_errors import ERROR_RESPONSES, ApiError, ShapedRoute
from liftloop.api_input import KEY_FIELD, KEY_SCHEMES, read_json
from liftloop.campaigns import CampaignStarted, start_campaign
from liftloop.loop.spec import CAMPAIGN_ID_PATTERN, CampaignSpec, text_problem
from liftloop.planning import PlanDecided, PlanDesk, PlannerMisconfigured
from liftloop.settings import Settings
from tools.audit import AuditLog

# A brief is prose: line breaks and tabs are text, other control characters are not.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_THREAD_ID = re.compile(r"^plan-[a-z0-9][a-z0-9_\-]{0,79}$")


def _plain_text(value: Any) -> Any:
    if isinstance(value, str):
        bad = text_problem(value)
        if bad:
            raise ValueError(bad)
        if _CONTROL.search(value):
            raise ValueError("must not contain control characters (line breaks and tabs are fine)")
    return value


class PlanRequest(BaseModel):
    """A brief to plan; the campaign id defaults to one derived from the brief."""

    model_config = ConfigDict(extra="forbid")

    brief: str = Field(min_length=1, max_length=MAX_BRIEF_CHARS)
    campaign_id: str | None = Field(default=None, pattern=CAMPAIGN_ID_PATTERN)

    @field_validator("brief", "campaign_id", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _plain_text(value)

    @field_validator("brief")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


class DecisionRequest(BaseModel):
    """A decision on a plan that waits for one; an approval starts the campaign."""

    model_config = ConfigDict(extra="forbid")

    approve: StrictBool
    comment: str = Field(default="", max_length=2_000)

    @field_validator("comment", mode="before")
    @classmethod
    def _text(cls, value: Any) -> Any:
        return _plain_text(value)


@dataclass
class PlanContext:
    """What the routes need from the app. The desk is made on the first request that plans:
    it opens the checkpoint file and the tools, which an app that never plans does not need."""

    settings: Settings
    audit: AuditLog
    temporal: Callable[[], Awaitable[Client]]
    max_body_bytes: int
    max_json_depth: int
    made: PlanDesk | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def desk(self) -> PlanDesk:
        with self._lock:
            if self.made is None:
                self.made = PlanDesk(self.settings, audit=self.audit)
            return self.made


def get_plan_context() -> PlanContext:
    """Overridden by `create_app`; unmounted, the routes have nothing to plan with."""
    raise ApiError(503, "planner", "the planner is not configured in this app")


def plan_actor(request: Request) -> str:
    """Who plans: overridden by `create_app` with the app's caller check (managers and service
    keys plan); alone, every key is unknown."""
    raise ApiError(401, KEY_FIELD, "unknown key")


router = APIRouter(
    prefix="/v1",
    tags=["plans"],
    route_class=ShapedRoute,
    dependencies=[Depends(plan_actor), *KEY_SCHEMES],
    responses=ERROR_RESPONSES,
)
Context = Annotated[PlanContext, Depends(get_plan_context)]
Actor = Annotated[str, Depends(plan_actor)]


def _body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON body the route reads itself (the models hold no nested schemas)."""
    schema = model.model_json_schema()
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _thread(thread_id: str) -> str:
    if not _THREAD_ID.match(thread_id):
        raise ApiError(404, "thread_id", "no such plan (not a plan's thread id)")
    return thread_id


def _refusal(exc: PlanningError) -> ApiError:
    if isinstance(exc, PlanNotFound):
        return ApiError(404, exc.field, exc.reason)
    if isinstance(exc, PlanConflict):
        return ApiError(409, exc.field, exc.reason)
    if isinstance(exc, PlannerMisconfigured):  # the installation's fault, not the request's
        return ApiError(503, exc.field, exc.reason)
    # Bad input, or a model that found no valid spec (PlanFailed names the spec's errors).
    return ApiError(422, exc.field, exc.reason)


@router.post("/plans", status_code=201, openapi_extra=_body(PlanRequest))
async def create_plan(request: Request, ctx: Context) -> PlanResult:
    """Plan a campaign from a brief, up to the approval step: the spec, the evidence of the
    tools and every tool call the model made. The same brief and campaign id again goes on with
    a plan that stopped part-way; a finished one is 409."""
    body = PlanRequest.model_validate(
        await read_json(request, ctx.max_body_bytes, ctx.max_json_depth)
    )
    try:
        desk = await asyncio.to_thread(ctx.desk)
        return await asyncio.to_thread(desk.plan, body.brief, body.campaign_id)
    except PlanningError as exc:
        raise _refusal(exc) from None


@router.get("/plans/{thread_id}")
async def get_plan(thread_id: str, ctx: Context) -> PlanResult:
    """A plan: status (running, awaiting_approval, approved, rejected, failed), spec, evidence,
    tool calls, usage and decision."""
    try:
        desk = await asyncio.to_thread(ctx.desk)
        return await asyncio.to_thread(desk.status, _thread(thread_id))
    except PlanningError as exc:
        raise _refusal(exc) from None


@router.post("/plans/{thread_id}/decision", openapi_extra=_body(DecisionRequest))
async def decide_plan(request: Request, thread_id: str, ctx: Context, actor: Actor) -> PlanDecided:
    """Approve (the campaign starts) or reject a waiting plan; a plan is decided once (409)."""
    body = DecisionRequest.model_validate(
        await read_json(request, ctx.max_body_bytes, ctx.max_json_depth)
    )
    thread_id = _thread(thread_id)

    async def start(spec: CampaignSpec) -> CampaignStarted:
        try:
            return await start_campaign(
                await ctx.temporal(), ctx.settings, spec, audit=ctx.audit, actor=actor
            )
        except WorkflowAlreadyStartedError:
            raise ApiError(409, "campaign_id", f"campaign {spec.id} is already running") from None

    decision = ApprovalDecision(approved=body.approve, approver=actor, comment=body.comment)
    try:
        desk = await asyncio.to_thread(ctx.desk)
        return await desk.decide(thread_id, decision, actor=actor, start=start)
    except PlanningError as exc:
        raise _refusal(exc) from None
