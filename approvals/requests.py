"""Approval requests: listing what waits for a human and delivering a decision to the workflow
that waits for it (a Temporal update, so the caller learns at once whether it was accepted).

This is liftloop's one approval path (the API and the CLI call it): each decision it delivers
carries a proof signed with the approval signing key (`liftloop.loop.approvals.sign_decision`),
which the worker checks; the workflow refuses a decision without one, so an update sent
straight to Temporal's port approves nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import and_, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.service import RPCError, RPCStatusCode

from liftloop.loop.approvals import PROOF_REFUSED, decision_event, sign_decision
from liftloop.loop.payloads import ApprovalOutcome
from liftloop.loop.tables import ApprovalRequest
from tools.audit import AuditEvent, AuditLog
from workflows.campaign_loop import CampaignLoopWorkflow


class ApprovalView(BaseModel):
    request_id: str
    # "variant" (the loop waits for it) or "objection" (a person's, to review).
    kind: str = "variant"
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
        col(ApprovalRequest.kind),
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
                kind=r[7] or "variant",
            )
            for r in conn.execute(query).all()
        ]


class ApprovalNotFound(LookupError):
    """No approval request with this id."""

    field = "request_id"

    def __init__(self, request_id: str) -> None:
        self.reason = f"no approval request {request_id}"
        super().__init__(f"{self.field}: {self.reason}")


class ApprovalProofRefused(RuntimeError):
    """The worker refused the proof this process signed: its approval signing key differs from
    the worker's (set the same LIFTLOOP_APPROVAL_SIGNING_KEY for both, or share the data
    directory), or the clocks differ by minutes."""

    field = "approval_signing_key"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{self.field}: {reason}")


class ApprovalConflict(RuntimeError):
    """The request is not (or no longer) waiting for a decision: decided already, being decided
    by a concurrent call, or no longer pending in its campaign."""

    field = "request_id"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{self.field}: {reason}")


# A claim older than this is taken to be left by a caller that died between claiming and
# answering (every update call is bounded by _UPDATE_TIMEOUT, far below it).
CLAIM_TTL = timedelta(minutes=2)
_UPDATE_TIMEOUT = timedelta(seconds=30)
_REQ = ApprovalRequest


def _claim(engine: Engine, request_id: str, approver: str) -> datetime:
    """Mark the request `deciding` if it is pending: one conditional UPDATE, so of concurrent
    callers exactly one wins. Returns the claim's time; ApprovalConflict for the others."""
    now = datetime.now(UTC)
    with engine.begin() as conn:
        claimed = conn.execute(
            update(_REQ)
            .where(col(_REQ.id) == request_id)
            .where(
                or_(
                    col(_REQ.status) == "pending",
                    and_(col(_REQ.status) == "deciding", col(_REQ.decided_at) < now - CLAIM_TTL),
                )
            )
            .values(status="deciding", decided_by=approver, decided_at=now)
        ).rowcount
        if claimed == 1:
            return now
        row = conn.execute(
            sa_select(col(_REQ.status), col(_REQ.decided_by)).where(col(_REQ.id) == request_id)
        ).first()
    if row is None:
        raise ApprovalNotFound(request_id)
    if row[0] == "deciding":
        raise ApprovalConflict(f"{request_id} is being decided by another call")
    raise ApprovalConflict(f"{request_id} is already {row[0]}")


def _release(engine: Engine, request_id: str, claimed_at: datetime) -> None:
    """Undo our claim (the workflow refused the decision, or could not be asked): the request
    is pending again unless the loop has written its own outcome meanwhile."""
    with engine.begin() as conn:
        conn.execute(
            update(_REQ)
            .where(col(_REQ.id) == request_id)
            .where(col(_REQ.status) == "deciding")
            .where(col(_REQ.decided_at) == claimed_at)
            .values(status="pending", decided_by=None, decided_at=None)
        )


def approval_workflow(engine: Engine, request_id: str) -> str:
    """The id of the workflow that waits for the request; ApprovalNotFound if there is none."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ApprovalRequest.workflow_id).where(col(ApprovalRequest.id) == request_id)
        ).first()
    if row is None:
        raise ApprovalNotFound(request_id)
    return str(row[0])


def _review_objection(
    engine: Engine, request_id: str, upheld: bool, reviewer: str, note: str, audit: AuditLog
) -> ApprovalOutcome:
    """Close the review of an objection (liftloop/redress.py); the withdrawal it made stays."""
    _claim(engine, request_id, reviewer)
    with engine.begin() as conn:
        conn.execute(
            update(_REQ)
            .where(col(_REQ.id) == request_id)
            .values(
                status="approved" if upheld else "rejected",
                decided_by=reviewer,
                note=note,
                decided_at=datetime.now(UTC),
            )
        )
        variant_id = conn.execute(
            select(_REQ.variant_id).where(col(_REQ.id) == request_id)
        ).scalar_one()
        audit.append(
            AuditEvent(
                kind="privacy.objection_reviewed",
                actor=reviewer,
                subject=request_id,
                details={"verdict": "upheld" if upheld else "declined", "note": note},
                key=f"privacy.objection_reviewed:{request_id}",
            ),
            conn,
        )
    return ApprovalOutcome(
        request_id=request_id,
        variant_id=variant_id,
        approved=upheld,
        decided_by=reviewer,
        note=note,
    )


async def decide_approval(
    client: Client | None,
    engine: Engine,
    request_id: str,
    approved: bool,
    approver: str,
    note: str = "",
    *,
    signing_key: bytes,
    audit: AuditLog,
) -> ApprovalOutcome:
    """Deliver a human's decision to the waiting workflow (a Temporal update), signed with
    `signing_key` (the approval signing key the worker checks).

    The request is claimed in the database first, so concurrent decisions on one request cannot
    both reach the workflow: one wins, the others get ApprovalConflict. A decision the workflow
    refuses (the request timed out, the campaign stopped or ended) is ApprovalConflict too, a
    proof the worker refuses is ApprovalProofRefused; either way the claim is released."""
    workflow_id = approval_workflow(engine, request_id)
    if not workflow_id:  # no workflow waits: a person's objection, reviewed here
        return _review_objection(engine, request_id, approved, approver, note, audit)
    if client is None:
        raise ValueError("client: a Temporal client is needed to decide a campaign's request")
    claimed_at = _claim(engine, request_id, approver)
    handle = client.get_workflow_handle(workflow_id)
    decision = sign_decision(signing_key, request_id, approved, approver, note)
    try:
        outcome: ApprovalOutcome = await handle.execute_update(
            CampaignLoopWorkflow.decide_approval, decision, rpc_timeout=_UPDATE_TIMEOUT
        )
    except WorkflowUpdateFailedError as exc:
        _release(engine, request_id, claimed_at)
        cause = exc.cause
        detail = getattr(cause, "message", "") or "refused by the campaign"
        if getattr(cause, "type", None) == PROOF_REFUSED:
            raise ApprovalProofRefused(detail.removeprefix("request_id: ")) from None
        raise ApprovalConflict(detail.removeprefix("request_id: ")) from None
    except RPCError as exc:
        _release(engine, request_id, claimed_at)
        if exc.status == RPCStatusCode.NOT_FOUND:  # the campaign's workflow has ended
            raise ApprovalConflict(f"{request_id}: its campaign has ended") from None
        raise
    except BaseException:
        _release(engine, request_id, claimed_at)
        raise
    # The workflow accepted it; show it at once (its close_approvals activity writes the same
    # values when the last pending request of the cycle is answered).
    with engine.begin() as conn:
        conn.execute(
            update(_REQ)
            .where(col(_REQ.id) == request_id)
            .where(col(_REQ.status) == "deciding")
            .values(status="approved" if approved else "rejected", decided_by=approver, note=note)
        )
        campaign_id = conn.execute(
            select(_REQ.campaign_id).where(col(_REQ.id) == request_id)
        ).scalar_one()
        audit.append(decision_event(campaign_id, request_id, outcome.variant_id, outcome), conn)
    return outcome
