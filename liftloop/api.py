"""The HTTP API: what the CLI does, for programs. OpenAPI at /docs and /openapi.json.

Every refusal, on every route, answers `{"errors": [{"field", "reason"}]}` (`api_errors`); every
route that takes a key reads it one way, every JSON body is read within its limit and parsed by
one strict parser (`api_input`).
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, StrictBool, field_validator
from temporalio.client import Client
from temporalio.exceptions import WorkflowAlreadyStartedError

from approvals.requests import (
    ApprovalConflict,
    ApprovalNotFound,
    ApprovalProofRefused,
    ApprovalView,
    BulkOutcome,
    approval_workflow,
    check_request,
    decide_approval,
    decide_identical,
    list_approvals,
)
from approvals.rules import Decider, DecisionRefused
from liftloop import api_cdp, api_plans, api_slack, web
from liftloop.api_auth import (
    SERVICE,
    Caller,
    Principal,
    current_principal,
    principal_for,
    refused_decision,
)
from liftloop.api_errors import ERROR_RESPONSES, ApiError, install_error_handling
from liftloop.api_input import KEY_SCHEMES, api_key_bytes, read_json
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
from liftloop.loop.fairness import checks_of
from liftloop.loop.payloads import ApprovalOutcome
from liftloop.loop.provenance import MessageProvenance, message_provenance
from liftloop.loop.spec import CAMPAIGN_ID_PATTERN, CampaignSpec, parse_spec, text_problem
from liftloop.loop.tables import FairnessCheck
from liftloop.notifications import approval_notifier
from liftloop.privacy_records import RecordsOfProcessing, records_of_processing
from liftloop.redress import Objection, ObjectionFiled, file_objection, messages_of
from liftloop.settings import Settings
from tools.audit import AuditEntryView, AuditLog, ChainReport, as_csv, timeline, verify_chain
from tools.cdp.errors import UnknownIdentityError
from tools.content.ledger import CampaignCosts, SqlCostLedger
from workflows.campaign_loop import CampaignStatus

_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_CAMPAIGN_ID = re.compile(CAMPAIGN_ID_PATTERN)
ApprovalStatus = Literal["pending", "deciding", "approved", "rejected", "all"]


class ApprovalBody(BaseModel):
    """A decision on one approval request; who decides is the caller's personal token."""

    model_config = ConfigDict(extra="forbid")

    approved: StrictBool
    note: str = Field(default="", max_length=2000)

    @field_validator("note", mode="before")
    @classmethod
    def _storable(cls, value: Any) -> Any:
        if isinstance(value, str):
            bad = text_problem(value)
            if bad:
                raise ValueError(bad)
        return value


def _json_body(model: type[BaseModel]) -> dict[str, Any]:
    """OpenAPI for a JSON body the route reads itself (see `_openapi`)."""
    schema = {"$ref": f"#/components/schemas/{model.__name__}"}
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}


def _campaign_id(campaign_id: str) -> str:
    if not _CAMPAIGN_ID.match(campaign_id):
        raise ApiError(404, "campaign_id", "no such campaign (not a campaign id)")
    return campaign_id


class PersonMessages(BaseModel):
    profile_id: str
    messages: list[MessageProvenance]


def _person(person: str) -> str:
    if len(person) > 320 or text_problem(person):
        raise ApiError(404, "person", "no profile or identity has this id")
    return person


def create_app(settings: Settings, client: Client | None = None) -> FastAPI:
    """The app. Its keys are resolved first (`liftloop.credentials`): `LIFTLOOP_API_KEYS`, else
    the key generated in `<data_dir>/secrets/api-key`; a public value such as `dev-key` is a
    startup error (InsecureSettingError) unless `LIFTLOOP_DEV_MODE=true`."""
    credentials = ensure_credentials(settings)
    log_warnings(credentials)
    state: dict[str, Client] = {"client": client} if client is not None else {}
    # /docs and /redoc from assets served here (`/static-offline-docs`), not from a CDN, so the
    # API's manual opens on a machine without a network.
    app = FastAPIOffline(title="liftloop", version="0.1.0", responses=ERROR_RESPONSES)
    install_error_handling(
        app,
        max_body_bytes=max(
            settings.api_max_body_bytes,
            settings.cdp_max_batch_bytes,
            settings.cdp_max_message_bytes,
        ),
    )
    engine = engine_for(settings.cdp_url)
    audit = AuditLog(engine, credentials.audit_signing_key)
    ledger = SqlCostLedger(engine)
    app.include_router(api_cdp.router)
    app.dependency_overrides[api_cdp.get_cdp_engine] = lambda: engine
    app.dependency_overrides[api_cdp.get_cdp_settings] = lambda: settings
    app.dependency_overrides[api_cdp.get_cdp_api_keys] = lambda: list(credentials.api_keys)
    keys = api_key_bytes(credentials.api_keys)
    limit, depth = settings.api_max_body_bytes, settings.api_max_json_depth
    notifier = approval_notifier(settings, engine)

    def caller(request: Request) -> Principal:
        return principal_for(request.headers, keys, engine)

    def require_key(request: Request) -> None:
        caller(request)

    app.dependency_overrides[current_principal] = caller

    async def temporal() -> Client:
        if "client" not in state:
            from liftloop.temporal import connect

            try:
                state["client"] = await connect(settings)
            except (RuntimeError, ValueError):  # unreachable, or a TLS setting is unusable
                raise ApiError(503, "temporal", "cannot connect to Temporal") from None
        return state["client"]

    auth = [Depends(require_key), *KEY_SCHEMES]
    app.include_router(api_plans.router)
    plans = api_plans.PlanContext(settings, audit, temporal, limit, depth)
    app.dependency_overrides[api_plans.get_plan_context] = lambda: plans

    def plan_actor(request: Request) -> str:
        who = caller(request)
        who.require("planning a campaign", "manager", SERVICE)
        return who.name

    app.dependency_overrides[api_plans.plan_actor] = plan_actor
    app.include_router(api_slack.router)
    slack = api_slack.SlackContext(
        settings, engine, audit, temporal, credentials.approval_signing_key, notifier
    )
    app.dependency_overrides[api_slack.get_slack_context] = lambda: slack
    # The web app for people (liftloop/web): pages over the same engine, log and client.
    app.include_router(web.router)
    pages = web.WebContext(
        settings, engine, audit, temporal, credentials.approval_signing_key, notifier
    )
    app.dependency_overrides[web.get_web_context] = lambda: pages

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(
        "/v1/campaigns", status_code=201, dependencies=auth, openapi_extra=_json_body(CampaignSpec)
    )
    async def start(request: Request, who: Caller) -> CampaignStarted:
        """Start a campaign from its spec (JSON); 422 names each bad field. Managers (and
        service keys) start campaigns; the starter is recorded and may not approve its
        requests."""
        who.require("starting a campaign", "manager", SERVICE)
        parsed = parse_spec(await read_json(request, limit, depth))
        try:
            return await start_campaign(
                await temporal(), settings, parsed, audit=audit, actor=who.name
            )
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
    async def control(campaign_id: str, action: Control, who: Caller) -> ControlResult:
        """Pause, resume or stop. A stop that cannot take effect terminates the workflow."""
        who.require(f"{action} of a campaign", "manager", SERVICE)
        try:
            campaign_id = _campaign_id(campaign_id)
            return await control_campaign(
                await temporal(), campaign_id, action, audit=audit, actor=who.name
            )
        except CampaignNotFound as exc:
            raise ApiError(404, exc.field, exc.reason) from None
        except CampaignEnded as exc:
            raise ApiError(409, exc.field, exc.reason) from None

    @app.get("/v1/campaigns/{campaign_id}/fairness", dependencies=auth)
    async def fairness(campaign_id: str) -> list[FairnessCheck]:
        """Each cycle's treatment, discount, suppression and holdout rates across groups, with
        the disparity ratio (lowest over highest) and whether it was flagged."""
        return await asyncio.to_thread(checks_of, engine, _campaign_id(campaign_id))

    @app.get("/v1/campaigns/{campaign_id}/costs", dependencies=auth)
    async def costs(campaign_id: str) -> CampaignCosts:
        """Model tokens and cost per cycle, job, channel and model; 404 before any usage."""
        found = await asyncio.to_thread(ledger.costs, _campaign_id(campaign_id))
        if not found.lines:
            raise ApiError(404, "campaign_id", "no model usage recorded for this campaign")
        return found

    @app.get("/v1/approvals", dependencies=auth)
    async def approvals(
        status: ApprovalStatus = "pending",
        campaign_id: Annotated[str | None, Query(max_length=200)] = None,
    ) -> list[ApprovalView]:
        """Approval requests (`status=all` for every one)."""
        if campaign_id is not None and text_problem(campaign_id):
            raise ApiError(422, "campaign_id", text_problem(campaign_id) or "")
        return list_approvals(engine, None if status == "all" else status, campaign_id)

    async def decision_input(
        request: Request, request_id: str, who: Principal
    ) -> tuple[ApprovalBody, Decider]:
        """The body of a decision and its decider, or the refusal (422, 403, 404)."""
        body = ApprovalBody.model_validate(await read_json(request, limit, depth))
        decider = who.decider("api")
        if len(request_id) > 300 or text_problem(request_id):
            raise ApiError(404, "request_id", "no such approval request")
        return body, decider

    @app.post(
        "/v1/approvals/{request_id}", dependencies=auth, openapi_extra=_json_body(ApprovalBody)
    )
    async def decide(request: Request, request_id: str, who: Caller) -> ApprovalOutcome:
        """Decide one request as the caller (an approver's personal token); of concurrent
        decisions one wins, the others get 409. 403 names the rule a refusal rests on: the
        role, four-eyes (not on a campaign you started), the approver group, a rejection
        without a note, the deadline."""
        body, decider = await decision_input(request, request_id, who)
        try:
            # Unknown or refused without Temporal; an objection is reviewed without it.
            waiting = check_request(engine, request_id, decider, body.approved, body.note)
            return await decide_approval(
                await temporal() if waiting else None,
                engine,
                request_id,
                body.approved,
                decider,
                body.note,
                signing_key=credentials.approval_signing_key,
                audit=audit,
                notifier=notifier,
            )
        except DecisionRefused as exc:
            raise refused_decision(exc) from None
        except ApprovalNotFound as exc:
            raise ApiError(404, exc.field, exc.reason) from None
        except ApprovalConflict as exc:
            raise ApiError(409, exc.field, exc.reason) from None
        except ApprovalProofRefused as exc:  # the API's and the worker's keys differ
            raise ApiError(503, exc.field, exc.reason) from None

    @app.post(
        "/v1/approvals/{request_id}/identical",
        dependencies=auth,
        openapi_extra=_json_body(ApprovalBody),
    )
    async def decide_all(request: Request, request_id: str, who: Caller) -> BulkOutcome:
        """The same decision on this request and every pending request identical to it (same
        channel, arm, subject, body and reasons), each checked by the rules on its own: what
        was decided, and why the others were not."""
        body, decider = await decision_input(request, request_id, who)
        try:
            waiting = approval_workflow(engine, request_id)
            return await decide_identical(
                await temporal() if waiting else None,
                engine,
                request_id,
                body.approved,
                decider,
                body.note,
                signing_key=credentials.approval_signing_key,
                audit=audit,
                notifier=notifier,
            )
        except ApprovalNotFound as exc:
            raise ApiError(404, exc.field, exc.reason) from None

    @app.get("/v1/messages/{message_id}/provenance", dependencies=auth)
    async def provenance(message_id: str) -> MessageProvenance:
        """Everything behind one message: decision, variant, policy, approval."""
        found = None
        if len(message_id) <= 200 and not text_problem(message_id):
            found = await asyncio.to_thread(message_provenance, engine, message_id)
        if found is None:
            raise ApiError(404, "message_id", "no such message")
        return found

    @app.get("/v1/people/{person}/messages", dependencies=auth)
    async def person_messages(person: str) -> PersonMessages:
        """Why the person got each message: its provenance (decision, variant, approval)."""
        try:
            pid, found = await asyncio.to_thread(messages_of, engine, _person(person))
        except UnknownIdentityError as exc:
            raise ApiError(404, "person", exc.reason) from None
        return PersonMessages(profile_id=pid, messages=found)

    @app.post(
        "/v1/people/{person}/objections",
        status_code=201,
        dependencies=auth,
        openapi_extra=_json_body(Objection),
    )
    async def object_(request: Request, person: str, who: Caller) -> ObjectionFiled:
        """File the person's objection to direct marketing: honoured at once, then reviewed
        in the approvals inbox."""
        body = Objection.model_validate(await read_json(request, limit, depth))
        try:
            return await asyncio.to_thread(
                file_objection, engine, audit, _person(person), body, actor=who.name
            )
        except UnknownIdentityError as exc:
            raise ApiError(404, exc.field, exc.reason) from None

    @app.get("/v1/privacy/records", dependencies=auth)
    async def privacy_records() -> RecordsOfProcessing:
        """The records of processing, generated from this installation's configuration."""
        return records_of_processing(settings, api_cdp.get_contracts())

    @app.get("/v1/audit/verify", dependencies=auth)
    async def audit_verify() -> ChainReport:
        """Walk the audit chain and its signed checkpoints: `ok`, or the first bad entry."""
        return await asyncio.to_thread(verify_chain, engine, credentials.audit_signing_key)

    @app.get(
        "/v1/audit",
        dependencies=auth,
        responses={200: {"content": {"text/csv": {}}}},
        response_model=list[AuditEntryView],
    )
    async def audit_entries(
        campaign_id: Annotated[str | None, Query(pattern=CAMPAIGN_ID_PATTERN)] = None,
        limit: Annotated[int | None, Query(ge=1, le=100_000)] = None,
        format: Literal["json", "csv"] = "json",
    ) -> Any:
        """Audit entries in order (a campaign's with `campaign_id`, the newest `limit`), as
        JSON or `format=csv`."""
        entries = await asyncio.to_thread(timeline, engine, campaign_id=campaign_id, limit=limit)
        if format == "csv":
            return Response(as_csv(entries), media_type="text/csv")
        return entries

    def _openapi() -> dict[str, Any]:
        """FastAPI's document plus the schemas of the bodies the routes read themselves."""
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, routes=app.routes, description=app.description
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for model in (CampaignSpec, ApprovalBody, Objection):
            body = model.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, definition in body.pop("$defs", {}).items():
                components.setdefault(name, definition)
            components[model.__name__] = body
        app.openapi_schema = schema
        return schema

    app.openapi = _openapi  # type: ignore[method-assign]
    return app
