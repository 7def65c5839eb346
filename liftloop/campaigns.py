"""Campaign operations shared by the CLI and the API: start, status, control, approvals."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from liftloop.domain import CampaignSpec
from liftloop.settings import Settings
from liftloop.stages import ApprovalDecision, ApprovalOutcome
from liftloop.tables import ApprovalRequest
from workflows.campaign_loop import (
    CampaignLoopInput,
    CampaignLoopOutput,
    CampaignLoopWorkflow,
    CampaignStatus,
)

Control = Literal["pause", "resume", "stop"]


class CampaignStarted(BaseModel):
    campaign_id: str
    workflow_id: str
    run_id: str | None


class ApprovalView(BaseModel):
    request_id: str
    campaign_id: str
    cycle: int
    variant_id: str
    status: str
    reasons: list[str]
    decided_by: str | None = None


def workflow_id_for(campaign_id: str) -> str:
    return f"campaign-{campaign_id}"


def loop_input(spec: CampaignSpec, settings: Settings) -> CampaignLoopInput:
    return CampaignLoopInput(
        spec=spec,
        shards=settings.shards,
        attribution_window_s=settings.attribution_window_override_s or None,
        approval_timeout_s=settings.approval_timeout_s,
    )


async def start_campaign(
    client: Client, settings: Settings, spec: CampaignSpec, task_queue: str | None = None
) -> CampaignStarted:
    handle = await client.start_workflow(
        CampaignLoopWorkflow.run,
        loop_input(spec, settings),
        id=workflow_id_for(spec.id),
        task_queue=task_queue or settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    return CampaignStarted(campaign_id=spec.id, workflow_id=handle.id, run_id=handle.result_run_id)


def handle_for(
    client: Client, campaign_id: str
) -> WorkflowHandle[CampaignLoopWorkflow, CampaignLoopOutput]:
    return client.get_workflow_handle_for(CampaignLoopWorkflow.run, workflow_id_for(campaign_id))


async def campaign_status(client: Client, campaign_id: str) -> CampaignStatus:
    return await handle_for(client, campaign_id).query(CampaignLoopWorkflow.status)


async def control_campaign(client: Client, campaign_id: str, action: Control) -> None:
    handle = handle_for(client, campaign_id)
    signal = {
        "pause": CampaignLoopWorkflow.pause,
        "resume": CampaignLoopWorkflow.resume,
        "stop": CampaignLoopWorkflow.stop,
    }[action]
    await handle.signal(signal)


def list_approvals(
    engine: Engine, status: str | None = "pending", campaign_id: str | None = None
) -> list[ApprovalView]:
    query = sa_select(
        col(ApprovalRequest.id),
        col(ApprovalRequest.campaign_id),
        col(ApprovalRequest.cycle),
        col(ApprovalRequest.variant_id),
        col(ApprovalRequest.status),
        col(ApprovalRequest.reasons),
        col(ApprovalRequest.decided_by),
    ).order_by(col(ApprovalRequest.created_at))
    if status:
        query = query.where(col(ApprovalRequest.status) == status)
    if campaign_id:
        query = query.where(col(ApprovalRequest.campaign_id) == campaign_id)
    with engine.connect() as conn:
        return [
            ApprovalView(
                request_id=r[0],
                campaign_id=r[1],
                cycle=r[2],
                variant_id=r[3],
                status=r[4],
                reasons=[x.get("explanation", "") for x in r[5]],
                decided_by=r[6],
            )
            for r in conn.execute(query).all()
        ]


class ApprovalNotFound(LookupError):
    pass


async def decide_approval(
    client: Client, engine: Engine, request_id: str, approved: bool, approver: str, note: str = ""
) -> ApprovalOutcome:
    with engine.connect() as conn:
        row = conn.execute(
            select(ApprovalRequest.workflow_id, ApprovalRequest.status).where(
                col(ApprovalRequest.id) == request_id
            )
        ).first()
    if row is None:
        raise ApprovalNotFound(f"request_id: no approval request {request_id}")
    if row[1] != "pending":
        raise ApprovalNotFound(f"request_id: {request_id} is already {row[1]}")
    handle = client.get_workflow_handle(row[0])
    return await handle.execute_update(
        CampaignLoopWorkflow.decide_approval,
        ApprovalDecision(request_id=request_id, approved=approved, approver=approver, note=note),
    )
