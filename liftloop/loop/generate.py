"""Generate: one content variant per arm (offer × channel) — never per person — from the
built-in templates or the copywriter over the knowledge base; personal data stays in slots that
the send stage fills. A campaign's model budget, once spent, stops new copy, not the campaign."""

from __future__ import annotations

from sqlalchemy import delete, insert
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col, select
from temporalio import activity

from liftloop.loop.copy_sources import ArmCopy, CopySource, builtin_copy
from liftloop.loop.payloads import CycleRef, GenerateResult
from liftloop.loop.spec import CampaignSpec
from liftloop.loop.stage_kit import stage_span, variant_id
from liftloop.loop.tables import Variant
from tools.audit import AuditEvent, AuditLog
from tools.content.ledger import SqlCostLedger


class GenerateStage:
    def __init__(
        self, engine: Engine, copywriter: CopySource, audit: AuditLog, ledger: SqlCostLedger
    ) -> None:
        self.engine = engine
        self.copywriter = copywriter
        self.audit = audit
        self.ledger = ledger

    def _budget_left(self, spec: CampaignSpec) -> tuple[bool, float]:
        spent = self.ledger.spent_eur(spec.id)
        budget = spec.content.model_budget_eur
        return budget is None or spent < budget, spent

    @activity.defn(name="campaign.generate")
    def generate(self, ref: CycleRef) -> GenerateResult:
        spec = ref.spec
        by_model = spec.content.generator == "copywriter"
        with stage_span("generate", ref, **{"liftloop.generator": spec.content.generator}) as span:
            events: list[AuditEvent] = []
            spent_event: AuditEvent | None = None
            # Written first, the transaction after: no lock is held while a model writes copy
            # (and the copywriter books its usage in the same database meanwhile).
            copies: list[ArmCopy | None] = []
            for arm, offer, channel in spec.arms:
                copy: ArmCopy | None = None
                if not by_model:
                    copy = builtin_copy(spec, offer, channel, arm, ref.cycle)
                else:
                    left, spent = self._budget_left(spec)
                    if left:
                        copy = self.copywriter(spec, offer, channel, arm, ref.cycle)
                    else:
                        spent_event = spent_event or _budget_spent(ref, spent)
                copies.append(copy)
            with self.engine.begin() as conn:
                ids = []
                for (arm, offer, channel), written in zip(spec.arms, copies, strict=True):
                    vid = variant_id(ref, arm)
                    # No budget left: the arm's last copy goes on, or the built-in template.
                    copy = (
                        written
                        or _last_copy(conn, ref, arm)
                        or builtin_copy(spec, offer, channel, arm, ref.cycle)
                    )
                    _write(conn, ref, vid, arm, channel, copy)
                    # Logged the first time a template version writes copy with a model.
                    events.append(
                        AuditEvent(
                            kind="prompt.in_use",
                            actor="worker",
                            campaign_id=ref.campaign_id,
                            subject=copy.template_id,
                            details={"version": copy.template_version, "model": copy.model},
                            key=f"prompt.in_use:{copy.template_id}:{copy.template_version}"
                            f":{copy.model}",
                        )
                    )
                    ids.append(vid)
                for event in [*events, *([spent_event] if spent_event else [])]:
                    self.audit.append(event, conn)
            span.set_attribute("liftloop.variants", len(ids))
            span.set_attribute(
                "liftloop.generation_blocked", sum(bool(c and c.blocked) for c in copies)
            )
            span.set_attribute("liftloop.model_budget_spent", spent_event is not None)
            return GenerateResult(variant_ids=ids)


def _budget_spent(ref: CycleRef, spent: float) -> AuditEvent:
    return AuditEvent(
        kind="model.budget_spent",
        actor="worker",
        campaign_id=ref.campaign_id,
        subject=ref.campaign_id,
        details={
            "cycle": ref.cycle,
            "budget_eur": ref.spec.content.model_budget_eur,
            "spent_eur": round(spent, 6),
        },
        # Once per campaign run: from here on every cycle reuses its copy.
        key=f"model.budget_spent:{ref.started_at.isoformat()}:{ref.campaign_id}",
    )


def _last_copy(conn: Connection, ref: CycleRef, arm: str) -> ArmCopy | None:
    row = conn.execute(
        select(Variant)
        .where(
            col(Variant.campaign_id) == ref.campaign_id,
            col(Variant.arm) == arm,
            col(Variant.cycle) < ref.cycle,
        )
        .order_by(col(Variant.cycle).desc())
        .limit(1)
    ).first()
    if row is None or row.generation_reasons:
        return None
    return ArmCopy(
        subject=row.subject,
        body=row.body,
        template_id=row.template_id,
        template_version=row.template_version,
        model=row.model,
        snapshot_id=row.snapshot_id,
        snapshot_signature=row.snapshot_signature,
        citations=tuple(row.citations),
    )


def _write(
    conn: Connection, ref: CycleRef, vid: str, arm: str, channel: str, copy: ArmCopy
) -> None:
    conn.execute(delete(Variant).where(col(Variant.id) == vid))
    conn.execute(
        insert(Variant).values(
            id=vid,
            campaign_id=ref.campaign_id,
            cycle=ref.cycle,
            arm=arm,
            channel=channel,
            template_id=copy.template_id,
            template_version=copy.template_version,
            subject=copy.subject,
            body=copy.body,
            model=copy.model,
            snapshot_id=copy.snapshot_id,
            snapshot_signature=copy.snapshot_signature,
            citations=list(copy.citations),
            generation_reasons=[{"rule_id": r, "message": m} for r, m in copy.blocked],
        )
    )
