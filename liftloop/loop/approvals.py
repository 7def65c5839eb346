"""Approvals: an escalated variant becomes an approval request that waits in the inbox; the
workflow's decision (or its safe default, reject) is written back to the request and variant.

A decision counts only with a proof that it came through liftloop's approval path
(`approvals.requests.decide_approval`, behind the API and the CLI): `sign_decision` there, and
`verify_decision` here, an activity, since workflow code cannot read keys. Anyone who can reach
Temporal's port can send the workflow an update; without the approval signing key they cannot
make a proof, so what they send is refused and the request stays pending."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio import activity
from temporalio.exceptions import ApplicationError

from liftloop.loop.payloads import (
    ApprovalCloseInput,
    ApprovalDecision,
    ApprovalOpenInput,
    ApprovalProof,
)
from liftloop.loop.stage_kit import stage_span
from liftloop.loop.tables import ApprovalRequest, Variant
from tools.cdp.sql import insert


def request_id(variant_id: str) -> str:
    return f"apr-{variant_id.replace(':', '-').replace('@', '-')}"


# The failure type of a refused proof (the workflow's update fails with it).
PROOF_REFUSED = "ApprovalProofRefused"
# How long a proof is good for: signing and checking are one API call apart; the rest is room
# for clocks that differ between the signer and the worker.
PROOF_TTL_S = 300
_PROOF_CONTEXT = "liftloop.approval-decision.v1"


def decision_mac(
    key: bytes,
    request_id: str,
    approved: bool,
    approver: str,
    note: str,
    nonce: str,
    expires_at: int,
) -> str:
    """HMAC-SHA256 over the decision's fields, encoded without ambiguity (a JSON array, ASCII
    only, so any text, a lone surrogate too, has one encoding)."""
    message = json.dumps(
        [_PROOF_CONTEXT, request_id, approved, approver, note, nonce, expires_at],
        ensure_ascii=True,
        separators=(",", ":"),
    ).encode("ascii")
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_decision(
    key: bytes,
    request_id: str,
    approved: bool,
    approver: str,
    note: str = "",
    *,
    ttl_s: int = PROOF_TTL_S,
    now: float | None = None,
) -> ApprovalDecision:
    """A decision with its proof, as liftloop's approval path sends it to the workflow."""
    if not key:
        raise ValueError("approval signing key: must not be empty")
    nonce = secrets.token_urlsafe(16)
    expires_at = int(now if now is not None else time.time()) + ttl_s
    mac = decision_mac(key, request_id, approved, approver, note, nonce, expires_at)
    return ApprovalDecision(
        request_id=request_id,
        approved=approved,
        approver=approver,
        note=note,
        proof=ApprovalProof(nonce=nonce, expires_at=expires_at, mac=mac),
    )


def proof_problem(key: bytes, decision: ApprovalDecision, now: float) -> str | None:
    """Why the decision's proof does not hold, or None when it does."""
    proof = decision.proof
    if proof is None:
        return "missing: decide through liftloop's API or CLI"
    if not key:
        return "this worker has no approval signing key"
    expected = decision_mac(
        key,
        decision.request_id,
        decision.approved,
        decision.approver,
        decision.note,
        proof.nonce,
        proof.expires_at,
    )
    if not hmac.compare_digest(expected.encode(), proof.mac.encode("utf-8", "surrogatepass")):
        return (
            "does not verify (not signed by liftloop, altered, or signed for another request;"
            " the signer and the worker need the same LIFTLOOP_APPROVAL_SIGNING_KEY)"
        )
    if proof.expires_at < now:
        return f"expired {int(now) - proof.expires_at}s ago"
    if proof.expires_at > now + 2 * PROOF_TTL_S:
        return "expires too far in the future"
    return None


class ApprovalStage:
    def __init__(self, engine: Engine, decision_key: bytes = b"") -> None:
        self.engine = engine
        # The approval signing key; without one every decision is refused.
        self._decision_key = decision_key

    @activity.defn(name="campaign.verify_approval")
    def verify_decision(self, decision: ApprovalDecision) -> None:
        """Refuses (non-retryable, type ApprovalProofRefused) a decision whose proof does not
        hold: missing, forged, altered, for another request, or expired."""
        problem = proof_problem(self._decision_key, decision, time.time())
        if problem is not None:
            raise ApplicationError(f"proof: {problem}", type=PROOF_REFUSED, non_retryable=True)

    @activity.defn(name="campaign.open_approvals")
    def open_approvals(self, inp: ApprovalOpenInput) -> list[str]:
        ref = inp.ref
        now = datetime.now(UTC)
        ids = []
        with stage_span("approval.open", ref) as span, self.engine.begin() as conn:
            for v in inp.verdicts:
                rid = request_id(v.variant_id)
                conn.execute(
                    insert(conn, ApprovalRequest)
                    .on_conflict_do_nothing()
                    .values(
                        id=rid,
                        campaign_id=ref.campaign_id,
                        workflow_id=ref.workflow_id,
                        cycle=ref.cycle,
                        variant_id=v.variant_id,
                        reasons=[r.model_dump(mode="json") for r in v.reasons],
                        status="pending",
                        created_at=now,
                    )
                )
                ids.append(rid)
            span.set_attribute("liftloop.approval_requests", len(ids))
        return ids

    @activity.defn(name="campaign.close_approvals")
    def close_approvals(self, inp: ApprovalCloseInput) -> None:
        now = datetime.now(UTC)
        with stage_span("approval.close", inp.ref) as span, self.engine.begin() as conn:
            for o in inp.outcomes:
                conn.execute(
                    update(ApprovalRequest)
                    .where(col(ApprovalRequest.id) == o.request_id)
                    .values(
                        status="approved" if o.approved else "rejected",
                        decided_by=o.decided_by,
                        note=o.note,
                        decided_at=now,
                    )
                )
                conn.execute(
                    update(Variant)
                    .where(col(Variant.id) == o.variant_id)
                    .values(approved=o.approved)
                )
            span.set_attribute("liftloop.approved", sum(o.approved for o in inp.outcomes))
            span.set_attribute("liftloop.rejected", sum(not o.approved for o in inp.outcomes))
