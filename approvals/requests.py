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

from approvals.notify import ApprovalNotifier
from approvals.rules import Decider, DecisionRefused, RequestFacts, check_decision
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
    note: str | None = None
    rule_ids: list[str] = []
    started_by: str | None = None
    approver_group: str | None = None
    escalation_group: str | None = None
    escalated: bool = False
    created_at: datetime | None = None
    deadline_at: datetime | None = None
    # Other pending requests with the same fingerprint: decided together in bulk.
    fingerprint: str | None = None


def _as_view(r: ApprovalRequest) -> ApprovalView:
    return ApprovalView(
        request_id=r.id,
        campaign_id=r.campaign_id,
        cycle=r.cycle,
        variant_id=r.variant_id,
        status=r.status,
        reasons=[x.get("explanation", "") for x in r.reasons],
        rule_ids=sorted({x.get("rule_id", "") for x in r.reasons} - {""}),
        decided_by=r.decided_by,
        note=r.note,
        kind=r.kind or "variant",
        started_by=r.started_by,
        approver_group=r.approver_group,
        escalation_group=r.escalation_group,
        escalated=r.escalated_at is not None,
        created_at=_utc(r.created_at),
        deadline_at=_utc(r.deadline_at),
        fingerprint=r.fingerprint,
    )


def _utc(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def list_approvals(
    engine: Engine, status: str | None = "pending", campaign_id: str | None = None
) -> list[ApprovalView]:
    query = select(ApprovalRequest).order_by(col(ApprovalRequest.created_at))
    if status:
        query = query.where(col(ApprovalRequest.status) == status)
    if campaign_id:
        query = query.where(col(ApprovalRequest.campaign_id) == campaign_id)
    with engine.connect() as conn:
        return [_as_view(ApprovalRequest.model_validate(r._mapping)) for r in conn.execute(query)]


def get_approval(engine: Engine, request_id: str) -> ApprovalView:
    """One request; ApprovalNotFound if there is none."""
    with engine.connect() as conn:
        row = conn.execute(
            select(ApprovalRequest).where(col(ApprovalRequest.id) == request_id)
        ).first()
    if row is None:
        raise ApprovalNotFound(request_id)
    return _as_view(ApprovalRequest.model_validate(row._mapping))


def identical_pending(engine: Engine, request_id: str) -> list[str]:
    """The pending requests identical to this one (itself included), oldest first: the same
    variant content and reasons, as the bulk decision takes them."""
    found = get_approval(engine, request_id)
    if found.fingerprint is None or found.status != "pending":
        return [request_id]
    with engine.connect() as conn:
        ids = conn.execute(
            sa_select(col(ApprovalRequest.id))
            .where(col(ApprovalRequest.fingerprint) == found.fingerprint)
            .where(col(ApprovalRequest.status) == "pending")
            .order_by(col(ApprovalRequest.created_at), col(ApprovalRequest.id))
        ).scalars()
        return list(ids)


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


def _facts(engine: Engine, request_id: str) -> RequestFacts:
    found = get_approval(engine, request_id)
    return RequestFacts(
        started_by=found.started_by,
        group=found.approver_group,
        escalation_group=found.escalation_group,
        escalated=found.escalated,
        deadline_at=found.deadline_at,
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


def check_request(
    engine: Engine, request_id: str, decider: Decider, approved: bool, note: str
) -> str:
    """The id of the workflow that waits for the request ("" for an objection), once the rules
    allow `decider` this decision: ApprovalNotFound or DecisionRefused otherwise. Callers run it
    before they connect to Temporal; `decide_approval` runs it again."""
    workflow_id = approval_workflow(engine, request_id)
    if not workflow_id:
        if decider.user.role != "approver":
            raise DecisionRefused(
                "approver.role",
                f"{decider.user.name} is a {decider.user.role}; approvers review objections",
            )
        return workflow_id
    check_decision(decider, _facts(engine, request_id), approved, note)
    return workflow_id


async def decide_approval(
    client: Client | None,
    engine: Engine,
    request_id: str,
    approved: bool,
    decider: Decider,
    note: str = "",
    *,
    signing_key: bytes,
    audit: AuditLog,
    notifier: ApprovalNotifier | None = None,
) -> ApprovalOutcome:
    """Deliver a person's decision to the waiting workflow (a Temporal update), signed with
    `signing_key` (the approval signing key the worker checks).

    The rules come first (`approvals.rules`: DecisionRefused). The request is then claimed in
    the database, so concurrent decisions on one request cannot both reach the workflow: one
    wins, the others get ApprovalConflict. A decision the workflow refuses (the request timed
    out, the campaign stopped or ended) is ApprovalConflict too, a proof the worker refuses is
    ApprovalProofRefused; either way the claim is released."""
    workflow_id = check_request(engine, request_id, decider, approved, note)
    if not workflow_id:  # no workflow waits: a person's objection, reviewed here
        return _review_objection(engine, request_id, approved, decider.user.name, note, audit)
    if client is None:
        raise ValueError("client: a Temporal client is needed to decide a campaign's request")
    approver = decider.user.name
    claimed_at = _claim(engine, request_id, approver)
    handle = client.get_workflow_handle(workflow_id)
    decision = sign_decision(signing_key, request_id, approved, approver, note).model_copy(
        update={"path": decider.path}
    )
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
    if notifier is not None:
        notifier.decided(request_id)
    return outcome


class BulkOutcome(BaseModel):
    """Per request of a bulk decision: its outcome, or why it was not decided."""

    decided: list[ApprovalOutcome]
    refused: dict[str, str]


async def decide_identical(
    client: Client | None,
    engine: Engine,
    request_id: str,
    approved: bool,
    decider: Decider,
    note: str = "",
    *,
    signing_key: bytes,
    audit: AuditLog,
    notifier: ApprovalNotifier | None = None,
) -> BulkOutcome:
    """The same decision on this request and every pending one identical to it, each checked
    by the rules on its own (another campaign may have been started by the decider)."""
    decided, refused = [], {}
    for rid in identical_pending(engine, request_id):
        try:
            decided.append(
                await decide_approval(
                    client,
                    engine,
                    rid,
                    approved,
                    decider,
                    note,
                    signing_key=signing_key,
                    audit=audit,
                    notifier=notifier,
                )
            )
        except DecisionRefused as exc:
            refused[rid] = f"{exc.rule}: {exc.reason}"
        except (ApprovalConflict, ApprovalNotFound) as exc:
            refused[rid] = exc.reason
    return BulkOutcome(decided=decided, refused=refused)
