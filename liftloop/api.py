"""The HTTP API: what the CLI does, for programs. OpenAPI at /docs and /openapi.json."""

from __future__ import annotations

import hmac
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError

from approvals.requests import ApprovalNotFound, ApprovalView, decide_approval, list_approvals
from liftloop.api_cdp import get_cdp_engine
from liftloop.api_cdp import router as cdp_router
from liftloop.campaigns import (
    CampaignStarted,
    Control,
    campaign_status,
    control_campaign,
    start_campaign,
)
from liftloop.db import engine_for
from liftloop.domain import SpecError, parse_spec
from liftloop.settings import Settings
from liftloop.stages import ApprovalOutcome
from workflows.campaign_loop import CampaignStatus


class ApprovalBody(BaseModel):
    approved: bool
    approver: str
    note: str = ""


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    state: dict[str, Client] = {"client": client} if client is not None else {}
    app = FastAPI(title="liftloop", version="0.1.0")
    engine = engine_for(settings.cdp_url)
    app.include_router(cdp_router)
    app.dependency_overrides[get_cdp_engine] = lambda: engine
    keys = [k.get_secret_value().encode() for k in settings.api_keys]

    def require_key(
        x_api_key: Annotated[str | None, Header()] = None,
        authorization: Annotated[str | None, Header()] = None,
    ) -> None:
        given = x_api_key or (authorization or "").removeprefix("Bearer ").strip()
        if not given or not any(hmac.compare_digest(given.encode(), k) for k in keys):
            raise HTTPException(
                401, detail=[{"field": "X-API-Key", "reason": "missing or unknown"}]
            )

    async def temporal() -> Client:
        if "client" not in state:
            from liftloop.temporal import connect

            state["client"] = await connect(settings)
        return state["client"]

    @app.exception_handler(SpecError)
    async def _spec_error(_: Request, exc: SpecError) -> JSONResponse:
        return JSONResponse(
            status_code=422,
            content={"detail": [{"field": f, "reason": r} for f, r in exc.problems]},
        )

    @app.exception_handler(RPCError)
    async def _rpc_error(_: Request, exc: RPCError) -> JSONResponse:
        code = 404 if "not found" in str(exc).lower() else 409
        return JSONResponse(
            status_code=code, content={"detail": [{"field": "campaign_id", "reason": str(exc)}]}
        )

    auth = [Depends(require_key)]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/campaigns", status_code=201, dependencies=auth)
    async def start(spec: Annotated[dict[str, Any], Body()]) -> CampaignStarted:
        parsed = parse_spec(spec)
        try:
            return await start_campaign(await temporal(), settings, parsed)
        except WorkflowAlreadyStartedError as exc:
            raise HTTPException(
                409, detail=[{"field": "id", "reason": f"campaign {parsed.id} is already running"}]
            ) from exc

    @app.get("/v1/campaigns/{campaign_id}", dependencies=auth)
    async def status(campaign_id: str) -> CampaignStatus:
        return await campaign_status(await temporal(), campaign_id)

    @app.post("/v1/campaigns/{campaign_id}/{action}", status_code=202, dependencies=auth)
    async def control(campaign_id: str, action: Control) -> dict[str, str]:
        await control_campaign(await temporal(), campaign_id, action)
        return {"campaign_id": campaign_id, "action": action}

    @app.get("/v1/approvals", dependencies=auth)
    async def approvals(
        status: str | None = "pending", campaign_id: str | None = None
    ) -> list[ApprovalView]:
        return list_approvals(engine, status, campaign_id)

    @app.post("/v1/approvals/{request_id}", dependencies=auth)
    async def decide(request_id: str, body: ApprovalBody) -> ApprovalOutcome:
        try:
            return await decide_approval(
                await temporal(), engine, request_id, body.approved, body.approver, body.note
            )
        except ApprovalNotFound as exc:
            raise HTTPException(404, detail=[{"field": "request_id", "reason": str(exc)}]) from exc

    return app
