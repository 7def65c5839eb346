"""Approvals: an escalated variant becomes an approval request that waits in the inbox; the
workflow's decision (or its safe default, reject) is written back to the request and variant."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio import activity

from liftloop.loop.payloads import ApprovalCloseInput, ApprovalOpenInput
from liftloop.loop.stage_kit import stage_span
from liftloop.loop.tables import ApprovalRequest, Variant
from tools.cdp.sql import insert


def request_id(variant_id: str) -> str:
    return f"apr-{variant_id.replace(':', '-').replace('@', '-')}"


class ApprovalStage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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
