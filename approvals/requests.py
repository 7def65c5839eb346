"""Approval requests: listing what waits for a human and delivering a decision to the workflow
that waits for it (a Temporal update, so the caller learns at once whether it was accepted)."""

from __future__ import annotations

from pydantic import BaseModel
from sqlalchemy import select as sa_select
from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.client import Client

from liftloop.stages import ApprovalDecision, ApprovalOutcome
from liftloop.tables import ApprovalRequest
from workflows.campaign_loop import CampaignLoopWorkflow


class ApprovalView(BaseModel):
    request_id: str
    campaign_id: str
    cycle: int
    variant_id: str
    status: str
    reasons: list[str]
    decided_by: str | None = None


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
    outcome: ApprovalOutcome = await handle.execute_update(
        CampaignLoopWorkflow.decide_approval,
        ApprovalDecision(request_id=request_id, approved=approved, approver=approver, note=note),
    )
    # The workflow accepted it; show it at once (its close_approvals activity writes the same
    # values when the last pending request of the cycle is answered).
    with engine.begin() as conn:
        conn.execute(
            update(ApprovalRequest)
            .where(col(ApprovalRequest.id) == request_id)
            .values(status="approved" if approved else "rejected", decided_by=approver, note=note)
        )
    return outcome
