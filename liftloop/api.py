"""The HTTP API: what the CLI does, for programs. OpenAPI at /docs and /openapi.json.

Every refusal, on every route, answers `{"errors": [{"field", "reason"}]}` (`api_errors`); every
route that takes a key reads it one way, every JSON body is read within its limit and parsed by
one strict parser (`api_input`).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from approvals.requests import (
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalProofRefused,
    ApprovalView,
    approval_workflow,
    decide_approval,
    list_approvals,
)
from liftloop import api_cdp
from liftloop.api_errors import ERROR_RESPONSES, ApiError, install_error_handling
from liftloop.api_input import KEY_SCHEMES, api_key_bytes, read_json, require_known_key
from liftloop.campaigns import (
    CampaignEnded,
    CampaignNotFound,
    CampaignStarted,
    CampaignSummary,
    Control,
    ControlResult,
    campaign_status,
    control_campaign,
    list_campaigns,
    start_campaign,
)
from liftloop.credentials import ensure_credentials, log_warnings
from liftloop.db import engine_for
from liftloop.loop.payloads import ApprovalOutcome
from liftloop.loop.spec import CAMPAIGN_ID_PATTERN, CampaignSpec, parse_spec, text_problem
from liftloop.settings import Settings
from workflows.campaign_loop import CampaignStatus

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
ApprovalStatus = Literal["pending", "deciding", "approved", "rejected", "all"]


class ApprovalBody(BaseModel):
    """A decision on one approval request."""

    model_config = ConfigDict(extra="forbid")

    approved: StrictBool
    approver: str = Field(min_length=1, max_length=200)
    note: str = Field(default="", max_length=2000)

    @field_validator("approver", "note", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, str):
            bad = text_problem(value)
            if bad:
                raise ValueError(bad)
        return value

    @field_validator("approver")
    @classmethod
    def _one_line(cls, value: str) -> str:
        if _CONTROL_CHARS.search(value):
            raise ValueError("must not contain control characters (line breaks included)")
        return value


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON body the route reads itself (see `_openapi`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _campaign_id(campaign_id: str) -> str:
    if not _CAMPAIGN_ID.match(campaign_id):
        raise ApiError(404, "campaign_id", "no such campaign (not a campaign id)")
    return campaign_id


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The app. Its keys are resolved first (`liftloop.credentials`): `LIFTLOOP_API_KEYS`, else
    the key generated in `<data_dir>/secrets/api-key`; a public value such as `dev-key` is a
    startup error (InsecureSettingError) unless `LIFTLOOP_DEV_MODE=true`."""
    credentials = ensure_credentials(settings)
    log_warnings(credentials)
    state: dict[str, Client] = {"client": client} if client is not None else {}
    app = FastAPI(title="liftloop", version="0.1.0", responses=ERROR_RESPONSES)
    install_error_handling(
        app,
        max_body_bytes=max(
            settings.api_max_body_bytes,
            settings.cdp_max_batch_bytes,
            settings.cdp_max_message_bytes,
        ),
    )
    engine = engine_for(settings.cdp_url)
    app.include_router(api_cdp.router)
    app.dependency_overrides[api_cdp.get_cdp_engine] = lambda: engine
    app.dependency_overrides[api_cdp.get_cdp_settings] = lambda: settings
    app.dependency_overrides[api_cdp.get_cdp_api_keys] = lambda: list(credentials.api_keys)
    keys = api_key_bytes(credentials.api_keys)
    limit, depth = settings.api_max_body_bytes, settings.api_max_json_depth

    def require_key(request: Request) -> None:
        require_known_key(request.headers, keys)

    async def temporal() -> Client:
        if "client" not in state:
            from liftloop.temporal import connect

            try:
                state["client"] = await connect(settings)
            except (RuntimeError, ValueError):  # unreachable, or a TLS setting is unusable
                raise ApiError(503, "temporal", "cannot connect to Temporal") from None
        return state["client"]

    auth = [Depends(require_key), *KEY_SCHEMES]

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/campaigns", status_code=201, dependencies=auth, openapi_extra=_json_body(CampaignSpec)
    )
    async def start(request: Request) -> CampaignStarted:
        """Start a campaign from its spec (JSON); 422 names each bad field."""
        parsed = parse_spec(await read_json(request, limit, depth))
        try:
            return await start_campaign(await temporal(), settings, parsed)
        except WorkflowAlreadyStartedError:
            raise ApiError(409, "id", f"campaign {parsed.id} is already running") from None

    @app.get("/v1/campaigns", dependencies=auth)
    async def campaigns(
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[CampaignSummary]:
        """The latest run of each campaign with its outcome (and the reason when it failed)."""
        return await list_campaigns(await temporal(), limit)

    @app.get("/v1/campaigns/{campaign_id}", dependencies=auth)
    async def status(campaign_id: str) -> CampaignStatus:
        """Cycle, stage, pending approvals, results; outcome `failed` with the reason."""
        try:
            campaign_id = _campaign_id(campaign_id)
            return await campaign_status(await temporal(), campaign_id)
        except CampaignNotFound as exc:
            raise ApiError(404, exc.field, exc.reason) from None

    @app.post("/v1/campaigns/{campaign_id}/{action}", status_code=202, dependencies=auth)
    async def control(campaign_id: str, action: Control) -> ControlResult:
        """Pause, resume or stop. A stop that cannot take effect terminates the workflow."""
        try:
            campaign_id = _campaign_id(campaign_id)
            return await control_campaign(await temporal(), campaign_id, action)
        except CampaignNotFound as exc:
            raise ApiError(404, exc.field, exc.reason) from None
        except CampaignEnded as exc:
            raise ApiError(409, exc.field, exc.reason) from None

    @app.get("/v1/approvals", dependencies=auth)
    async def approvals(
        status: ApprovalStatus = "pending",
        campaign_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[ApprovalView]:
        """Approval requests (`status=all` for every one)."""
        if campaign_id is not None and text_problem(campaign_id):
            raise ApiError(422, "campaign_id", text_problem(campaign_id) or "")
        return list_approvals(engine, None if status == "all" else status, campaign_id)

    @app.post(
        "/v1/approvals/{request_id}", dependencies=auth, openapi_extra=_json_body(ApprovalBody)
    )
    async def decide(request: Request, request_id: str) -> ApprovalOutcome:
        """Decide one request; of concurrent decisions one wins, the others get 409."""
        body = ApprovalBody.model_validate(await read_json(request, limit, depth))
        if len(request_id) > 300 or text_problem(request_id):
            raise ApiError(404, "request_id", "no such approval request")
        try:
            approval_workflow(engine, request_id)  # an unknown id is 404 without Temporal
            return await decide_approval(
                await temporal(),
                engine,
                request_id,
                body.approved,
                body.approver,
                body.note,
                signing_key=credentials.approval_signing_key,
            )
        except ApprovalNotFound as exc:
            raise ApiError(404, exc.field, exc.reason) from None
        except ApprovalConflict as exc:
            raise ApiError(409, exc.field, exc.reason) from None
        except ApprovalProofRefused as exc:  # the API's and the worker's keys differ
            raise ApiError(503, exc.field, exc.reason) from None

    def _openapi() -> dict[str, Any]:
        """FastAPI's document plus the schemas of the bodies the routes read themselves."""
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (CampaignSpec, ApprovalBody):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in body.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    app.openapi = _openapi  # type: ignore[method-assign]
    return app
