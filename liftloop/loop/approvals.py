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
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity
from temporalio.exceptions import ApplicationError

from approvals.notify import ApprovalNotifier, NoNotifier
from approvals.routing import ApprovalRoute, route_for
from liftloop.loop.payloads import (
    ApprovalCloseInput,
    ApprovalDecision,
    ApprovalEscalateInput,
    ApprovalOpenInput,
    ApprovalOutcome,
    ApprovalProof,
)
from liftloop.loop.stage_kit import stage_span, tracer
from liftloop.loop.tables import ApprovalRequest, Variant
from tools.audit import AuditEvent, AuditLog
from tools.cdp.sql import insert


def request_id(variant_id: str) -> str:
    return f"apr-{variant_id.replace(':', '-').replace('@', '-')}"


_APPROVER_ID_CONTEXT = b"liftloop.approver-id.v1\x00"


def approver_id(key: bytes, approver: str) -> str:
    """The pseudonym of an approver in spans: approvers are free text (a name, an address), so
    spans carry this instead, an HMAC-SHA256 prefix under the approval signing key (the same
    approver, the same id, while the key stays; without the key nobody can test a guess)."""
    text = approver.encode("utf-8", "surrogatepass")
    return hmac.new(key, _APPROVER_ID_CONTEXT + text, hashlib.sha256).hexdigest()[:16]


def approval_verdict(outcome: ApprovalOutcome) -> str:
    """approved, rejected (by a person) or expired (nobody decided before the timeout or the
    campaign's stop: the workflow rejected it by default)."""
    if outcome.approved:
        return "approved"
    return "expired" if outcome.decided_by.startswith("system:") else "rejected"


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


def decision_event(
    campaign_id: str, request_id: str, variant_id: str, outcome: ApprovalOutcome
) -> AuditEvent:
    """The audit entry of a decided request, keyed so that it is logged once by whoever is
    first: the approval path (API, CLI) or the workflow's close."""
    return AuditEvent(
        kind="approval.decide",
        actor=outcome.decided_by,
        campaign_id=campaign_id,
        subject=request_id,
        details={
            "variant_id": variant_id,
            "verdict": "approved" if outcome.approved else "rejected",
            "note": outcome.note,
            "path": outcome.path or "workflow",
        },
        key=f"approval.decide:{request_id}",
    )


def variant_fingerprint(variant: Variant | None, rule_ids: list[str]) -> str:
    """The same for variants a reviewer cannot tell apart: channel, arm, subject, body and the
    rules that escalated them (so one decision can answer them all)."""
    parts = [rule_ids]
    if variant is not None:
        parts.append([variant.channel, variant.arm, variant.subject, variant.body])
    text = json.dumps(parts, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("ascii")).hexdigest()[:32]


def _after(now: datetime, seconds: float | None) -> datetime | None:
    return now + timedelta(seconds=seconds) if seconds else None


class ApprovalStage:
    def __init__(
        self,
        engine: Engine,
        audit: AuditLog,
        decision_key: bytes = b"",
        *,
        routes: Sequence[ApprovalRoute] = (),
        escalation_group: str | None = None,
        slack_channel: str | None = None,
        notifier: ApprovalNotifier | None = None,
    ) -> None:
        self.engine = engine
        self.audit = audit
        # The approval signing key; without one every decision is refused.
        self._decision_key = decision_key
        self._routes = tuple(routes)
        self._escalation_group = escalation_group
        self._slack_channel = slack_channel
        self.notifier: ApprovalNotifier = notifier or NoNotifier()

    @activity.defn(name="campaign.verify_approval")
    def verify_decision(self, decision: ApprovalDecision) -> None:
        """Refuses (non-retryable, type ApprovalProofRefused) a decision whose proof does not
        hold: missing, forged, altered, for another request, or expired."""
        problem = proof_problem(self._decision_key, decision, time.time())
        with tracer.start_as_current_span(
            "approval.verify",
            attributes={
                "liftloop.approval.request_id": decision.request_id,
                "liftloop.approval.verdict": "approved" if decision.approved else "rejected",
                "liftloop.approval.approver_id": approver_id(self._decision_key, decision.approver),
                "liftloop.approval.proof": "refused" if problem else "valid",
            },
        ) as span:
            if problem is not None:
                span.set_attribute("liftloop.approval.proof_problem", problem)
                raise ApplicationError(f"proof: {problem}", type=PROOF_REFUSED, non_retryable=True)

    @activity.defn(name="campaign.open_approvals")
    def open_approvals(self, inp: ApprovalOpenInput) -> list[str]:
        ref = inp.ref
        now = datetime.now(UTC)
        ids = []
        market = ref.spec.content.market
        with stage_span("approval.open", ref) as span, self.engine.begin() as conn:
            for v in inp.verdicts:
                rid = request_id(v.variant_id)
                rule_ids = sorted({r.rule_id for r in v.reasons})
                route = route_for(
                    self._routes, market, rule_ids, default_channel=self._slack_channel
                )
                variant = conn.execute(
                    select(Variant).where(col(Variant.id) == v.variant_id)
                ).first()
                self.audit.append(
                    AuditEvent(
                        kind="approval.request",
                        actor="worker",
                        campaign_id=ref.campaign_id,
                        subject=rid,
                        details={
                            "cycle": ref.cycle,
                            "variant_id": v.variant_id,
                            "arm": v.arm,
                            "rule_ids": sorted({r.rule_id for r in v.reasons}),
                            "policy_version": v.policy_version,
                        },
                        key=f"approval.request:{rid}",
                    ),
                    conn,
                )
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
                        started_by=inp.started_by,
                        approver_group=route.group,
                        escalation_group=self._escalation_group if inp.escalate_after_s else None,
                        slack_channel=route.slack_channel,
                        escalate_at=_after(now, inp.escalate_after_s),
                        deadline_at=_after(now, inp.timeout_s),
                        fingerprint=variant_fingerprint(
                            Variant.model_validate(variant._mapping) if variant else None,
                            rule_ids,
                        ),
                    )
                )
                ids.append(rid)
                span.add_event(
                    "approval.requested",
                    {
                        "liftloop.approval.request_id": rid,
                        "liftloop.variant_id": v.variant_id,
                        "liftloop.arm": v.arm,
                        "liftloop.rule_ids": sorted({r.rule_id for r in v.reasons}),
                    },
                )
            span.set_attribute("liftloop.approval_requests", len(ids))
            span.set_attribute("liftloop.approval.request_ids", ids)
        self.notifier.opened(ids)
        return ids

    @activity.defn(name="campaign.escalate_approvals")
    def escalate_approvals(self, inp: ApprovalEscalateInput) -> list[str]:
        """Mark the still pending requests escalated (their escalation group may decide now),
        log it, and tell the notifier. Returns the ids escalated by this call."""
        now = datetime.now(UTC)
        escalated = []
        with stage_span("approval.escalate", inp.ref) as span, self.engine.begin() as conn:
            for rid in inp.request_ids:
                changed = conn.execute(
                    update(ApprovalRequest)
                    .where(col(ApprovalRequest.id) == rid)
                    .where(col(ApprovalRequest.status) == "pending")
                    .where(col(ApprovalRequest.escalated_at).is_(None))
                    .values(escalated_at=now)
                ).rowcount
                if changed:
                    escalated.append(rid)
                    self.audit.append(
                        AuditEvent(
                            kind="approval.escalate",
                            actor="worker",
                            campaign_id=inp.ref.campaign_id,
                            subject=rid,
                            details={"cycle": inp.ref.cycle, "group": self._escalation_group},
                            key=f"approval.escalate:{rid}",
                        ),
                        conn,
                    )
            span.set_attribute("liftloop.approval.request_ids", escalated)
        if escalated:
            self.notifier.escalated(escalated)
        return escalated

    @activity.defn(name="campaign.close_approvals")
    def close_approvals(self, inp: ApprovalCloseInput) -> None:
        now = datetime.now(UTC)
        with stage_span("approval.close", inp.ref) as span, self.engine.begin() as conn:
            for o in inp.outcomes:
                # The API or CLI logged a human's decision as it was made; this one is for
                # the outcomes only the workflow knows (a request that timed out).
                self.audit.append(
                    decision_event(inp.ref.campaign_id, o.request_id, o.variant_id, o), conn
                )
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
            # Per request: its verdict and who decided, by pseudonym (never the free text).
            verdicts = [approval_verdict(o) for o in inp.outcomes]
            span.set_attribute("liftloop.approved", verdicts.count("approved"))
            span.set_attribute("liftloop.rejected", verdicts.count("rejected"))
            span.set_attribute("liftloop.expired", verdicts.count("expired"))
            span.set_attribute(
                "liftloop.approval.request_ids", [o.request_id for o in inp.outcomes]
            )
            span.set_attribute("liftloop.approval.verdicts", verdicts)
            for o, verdict in zip(inp.outcomes, verdicts, strict=True):
                span.add_event(
                    "approval.decided",
                    {
                        "liftloop.approval.request_id": o.request_id,
                        "liftloop.variant_id": o.variant_id,
                        "liftloop.approval.verdict": verdict,
                        "liftloop.approval.approver_id": approver_id(
                            self._decision_key, o.decided_by
                        ),
                    },
                )
        # After the commit, so the notifier reads the outcome it is told of.
        for o in inp.outcomes:
            if o.decided_by.startswith("system:"):
                self.notifier.decided(o.request_id)
