"""The approval inbox as a reviewer needs it: per pending request the variant as written, the
reasons with their rule ids and policy version, the offer's terms, the audience, the deadline
and escalation, how many identical requests wait, and whether the viewer may decide it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import col, select

from approvals.rules import Decider, DecisionRefused, RequestFacts, check_decision
from liftloop.accounts.users import UserView
from liftloop.loop.tables import ApprovalRequest, Variant
from liftloop.web.records import CampaignStart, OfferShown, audience_size, campaign_start

# The inbox shows the oldest this many; more waiting is said on the page.
INBOX_LIMIT = 200


@dataclass(frozen=True)
class ReasonLine:
    rule_id: str
    explanation: str
    severity: str
    field: str


@dataclass(frozen=True)
class InboxItem:
    request: ApprovalRequest
    variant: Variant | None
    reasons: list[ReasonLine]
    policy_version: str | None
    offer: OfferShown | None
    audience: int | None
    # Pending requests with the same fingerprint, this one included (decided together).
    identical: int
    # Why the viewer may not decide it (None: they may; only approvers are asked).
    refusal: DecisionRefused | None

    @property
    def is_objection(self) -> bool:
        return self.request.kind == "objection"


def _reasons(raw: list[dict[str, Any]]) -> list[ReasonLine]:
    return [
        ReasonLine(
            rule_id=str(r.get("rule_id", "")),
            explanation=str(r.get("explanation", "")),
            severity=str(r.get("severity", "")),
            field=str(r.get("field", "")),
        )
        for r in raw
        if isinstance(r, dict)
    ]


def _policy_version(variant: Variant | None, raw: list[dict[str, Any]]) -> str | None:
    if variant is not None and variant.policy_version:
        return variant.policy_version
    versions = sorted({str(r["policy_version"]) for r in raw if r.get("policy_version")})
    return ", ".join(versions) or None


def refusal_for(user: UserView, request: ApprovalRequest) -> DecisionRefused | None:
    """What the rules would say to the user approving it (a note given): the page offers the
    buttons only when nothing; the decision itself is checked again when posted."""
    if request.kind == "objection":
        if user.role == "approver":
            return None
        return DecisionRefused("approver.role", f"{user.name} is a {user.role}")
    facts = RequestFacts(
        started_by=request.started_by,
        group=request.approver_group,
        escalation_group=request.escalation_group,
        escalated=request.escalated_at is not None,
        deadline_at=request.deadline_at,
    )
    try:
        check_decision(Decider(user, "web"), facts, True, "note")
    except DecisionRefused as exc:
        return exc
    return None


def pending_items(engine: Engine, viewer: UserView) -> tuple[list[InboxItem], bool]:
    """The oldest pending requests and whether more wait than are shown."""
    query = (
        select(ApprovalRequest)
        .where(col(ApprovalRequest.status) == "pending")
        .order_by(col(ApprovalRequest.created_at), col(ApprovalRequest.id))
        .limit(INBOX_LIMIT + 1)
    )
    with engine.connect() as conn:
        rows = [ApprovalRequest.model_validate(r._mapping) for r in conn.execute(query)]
        ids = [r.variant_id for r in rows]
        variants = {
            v.id: v
            for v in (
                Variant.model_validate(m._mapping)
                for m in conn.execute(select(Variant).where(col(Variant.id).in_(ids)))
            )
        }
    more = len(rows) > INBOX_LIMIT
    rows = rows[:INBOX_LIMIT]
    # The same set `identical_pending` gives: pending requests that share the fingerprint.
    counts: dict[str, int] = {}
    for r in rows:
        if r.fingerprint:
            counts[r.fingerprint] = counts.get(r.fingerprint, 0) + 1
    starts: dict[str, CampaignStart | None] = {}
    audiences: dict[tuple[str, int], int | None] = {}
    items = []
    for r in rows:
        variant = variants.get(r.variant_id)
        if r.campaign_id not in starts:
            starts[r.campaign_id] = campaign_start(engine, r.campaign_id)
        start = starts[r.campaign_id]
        key = (r.campaign_id, r.cycle)
        if key not in audiences and r.kind != "objection":
            audiences[key] = audience_size(engine, *key)
        arm = variant.arm if variant is not None else ""
        items.append(
            InboxItem(
                request=r,
                variant=variant,
                reasons=_reasons(r.reasons),
                policy_version=_policy_version(variant, r.reasons),
                offer=start.offer(arm) if start is not None and arm else None,
                audience=audiences.get(key),
                identical=counts.get(r.fingerprint, 1) if r.fingerprint else 1,
                refusal=refusal_for(viewer, r) if viewer.role == "approver" else None,
            )
        )
    return items, more
