"""Campaign pages: the list, one campaign (stage, results and their lift chart, controls), and
the form that starts one. Everyone signed in reads; only managers start, pause, resume and
stop, checked here on every POST whatever the page showed."""

from __future__ import annotations

import asyncio
import re
from typing import get_args

from fastapi import APIRouter, Request
from fastapi.responses import Response
from temporalio.exceptions import WorkflowAlreadyStartedError

from liftloop.campaigns import (
    CampaignEnded,
    CampaignNotFound,
    Control,
    campaign_status,
    control_campaign,
    list_campaigns,
    start_campaign,
    workflow_id_for,
)
from liftloop.loop.spec import CAMPAIGN_ID_PATTERN, SpecError
from liftloop.runtime import ui_url
from liftloop.web.chart import lift_chart, metrics_of
from liftloop.web.pages import PageError, PageRoute, redirect, render
from liftloop.web.records import audience_size, campaign_start
from liftloop.web.session import Context, Form, SignedIn, require_role
from liftloop.web.spec_text import spec_from_text

router = APIRouter(route_class=PageRoute, include_in_schema=False)

_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
_ACTIONS: dict[str, Control] = {name: name for name in get_args(Control)}
# What the page says after a control; the query names one of these, never the text itself.
_DONE = {
    "pause": "Pause requested: the campaign holds at its next step.",
    "resume": "Resume requested.",
    "stop": "Stop requested.",
}
_EXAMPLE = """{
  "id": "spring-sale",
  "name": "Spring sale",
  "channels": ["email"],
  "audience": {"segment": {"all": [{"trait": "country", "eq": "US"}]}},
  "offers": [{"id": "ten_off", "discount_pct": 10}],
  "limits": {"max_discount_pct": 15},
  "content": {"market": "US", "brand": "demo"},
  "cadence": {"every": "1d", "max_cycles": 7}
}"""


def campaign_id_of(value: str) -> str:
    """The path's campaign id, or a 404 page: nothing else reaches Temporal or the database."""
    if len(value) > 80 or not _CAMPAIGN_ID.match(value):
        raise PageError(404, "No such campaign", "this is not a campaign id")
    return value


@router.get("/")
async def home(session: SignedIn) -> Response:
    return redirect("/campaigns")


@router.get("/campaigns")
async def campaigns(request: Request, ctx: Context, session: SignedIn) -> Response:
    found = await list_campaigns(await ctx.temporal(), 100)
    return render(request, "campaigns.html", campaigns=found)


def _new_form(
    request: Request, status: int = 200, *, text: str = "", problems: list[tuple[str, str]]
) -> Response:
    return render(
        request, "campaign_new.html", status, text=text, problems=problems, example=_EXAMPLE
    )


@router.get("/campaigns/new")
async def new_campaign(request: Request, session: SignedIn) -> Response:
    require_role(session, "starting a campaign", "manager")
    return _new_form(request, problems=[])


@router.post("/campaigns/new")
async def start(request: Request, ctx: Context, form: Form) -> Response:
    require_role(form.session, "starting a campaign", "manager")
    limit = ctx.settings.spec_max_bytes
    text = form.text("spec", max_chars=limit, required=False)
    try:
        spec = spec_from_text(text, limit)
        await start_campaign(
            await ctx.temporal(), ctx.settings, spec, audit=ctx.audit, actor=form.session.user.name
        )
    except SpecError as exc:
        return _new_form(request, 422, text=text, problems=exc.problems)
    except WorkflowAlreadyStartedError:
        problem = ("id", f"campaign {spec.id} is already running")
        return _new_form(request, 409, text=text, problems=[problem])
    return redirect(f"/campaigns/{spec.id}")


@router.get("/campaigns/{campaign_id}")
async def campaign(request: Request, campaign_id: str, ctx: Context, session: SignedIn) -> Response:
    cid = campaign_id_of(campaign_id)
    try:
        status = await campaign_status(await ctx.temporal(), cid)
    except CampaignNotFound as exc:
        raise PageError(404, "No such campaign", exc.reason) from None
    start = await asyncio.to_thread(campaign_start, ctx.engine, cid)
    audience = None
    if status.outcome == "running" and status.stage not in ("starting", "segment"):
        audience = await asyncio.to_thread(audience_size, ctx.engine, cid, status.cycle)
    charts = [c for m in metrics_of(status.history) if (c := lift_chart(status.history, m))]
    return render(
        request,
        "campaign.html",
        status=status,
        start=start,
        audience=audience,
        charts=charts,
        temporal_url=ui_url(ctx.settings, workflow_id_for(cid)),
        done=_DONE.get(request.query_params.get("done", "")),
    )


@router.post("/campaigns/{campaign_id}/control")
async def control(campaign_id: str, ctx: Context, form: Form) -> Response:
    require_role(form.session, "steering a campaign", "manager")
    cid = campaign_id_of(campaign_id)
    action = _ACTIONS.get(form.text("action", max_chars=10))
    if action is None:
        raise PageError(422, "Invalid field", f"action: must be one of {', '.join(_ACTIONS)}")
    try:
        await control_campaign(
            await ctx.temporal(), cid, action, audit=ctx.audit, actor=form.session.user.name
        )
    except CampaignNotFound as exc:
        raise PageError(404, "No such campaign", exc.reason) from None
    except CampaignEnded as exc:
        raise PageError(409, "Campaign ended", exc.reason) from None
    return redirect(f"/campaigns/{cid}?done={action}")
