"""Guard: every variant against the brand policy of its market and the campaign's own limits;
a verdict is allow, block or escalate (to a human), with machine-readable reasons."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity

from liftloop.loop.builtin_templates import slot_names
from liftloop.loop.fairness import escalation_reasons, flagged_before
from liftloop.loop.payloads import GuardInput, GuardReason, GuardResult, VariantVerdict
from liftloop.loop.stage_kit import stage_span
from liftloop.loop.tables import Variant
from policies import (
    OfferTerms,
    PolicyStore,
    VariantProposal,
    check_variant,
    within_campaign_limits,
)
from tools.audit import AuditEvent, AuditLog


class GuardStage:
    def __init__(self, engine: Engine, policies: PolicyStore, audit: AuditLog) -> None:
        self.engine = engine
        self.policies = policies
        self.audit = audit

    @activity.defn(name="campaign.guard")
    def guard(self, inp: GuardInput) -> GuardResult:
        ref, spec = inp.ref, inp.ref.spec
        policy = self.policies.get(spec.content.market, spec.content.brand)
        offers = {f"{o.id}@{c}": o for o in spec.offers for c in spec.channels}
        verdicts = []
        with (
            stage_span("guard", ref, **{"liftloop.policy_version": policy.version}) as span,
            self.engine.begin() as conn,
        ):
            # Logged the first time a policy version judges anything: the log's policy changes.
            brand, market = policy.key
            events = [
                AuditEvent(
                    kind="policy.in_force",
                    actor="worker",
                    campaign_id=ref.campaign_id,
                    subject=f"{brand}/{market}",
                    details={"version": policy.version, "source": Path(policy.source).name},
                    key=f"policy.in_force:{brand}/{market}:{policy.version}",
                )
            ]
            # A disparity flagged in the last measured cycle sends every variant to a human.
            unfair = escalation_reasons(flagged_before(conn, ref), policy.version)
            for vid in inp.variant_ids:
                variant = conn.execute(select(Variant).where(col(Variant.id) == vid)).one()
                offer = offers[variant.arm]
                # The brand policy's verdict (its span, policies.check_variant, says this one),
                # then the campaign's limits: the stage's verdict is the second.
                brand_verdict = check_variant(
                    VariantProposal(
                        campaign_id=ref.campaign_id,
                        arm=variant.arm,
                        channel=variant.channel,
                        market=spec.content.market,
                        language=spec.content.language,
                        subject=variant.subject,
                        body=variant.body,
                        offer=OfferTerms(
                            discount_pct=offer.discount_pct, margin_pct=offer.margin_pct
                        ),
                        slot_names=slot_names(variant.subject, variant.body),
                    ),
                    policy,
                )
                verdict = within_campaign_limits(
                    brand_verdict,
                    discount_pct=offer.discount_pct,
                    max_discount_pct=spec.limits.max_discount_pct,
                    campaign_id=spec.id,
                )
                decision = verdict.decision.value
                reasons = [
                    GuardReason.model_validate(r.model_dump(mode="json")) for r in verdict.reasons
                ]
                if unfair and decision != "block":
                    decision, reasons = "escalate", reasons + unfair
                # Copy the copywriter could not make acceptable is never sent, whatever else.
                if variant.generation_reasons:
                    decision = "block"
                    reasons = reasons + _generation_reasons(
                        variant.generation_reasons, policy.version
                    )
                rule_ids = sorted({r.rule_id for r in reasons})
                span.add_event(
                    "guard.verdict",
                    {
                        "liftloop.variant_id": vid,
                        "liftloop.arm": variant.arm,
                        "liftloop.guard.decision": decision,
                        "liftloop.guard.policy_decision": brand_verdict.decision.value,
                        "liftloop.rule_ids": rule_ids,
                    },
                )
                conn.execute(
                    update(Variant)
                    .where(col(Variant.id) == vid)
                    .values(
                        verdict=decision,
                        policy_version=policy.version,
                        approved=True if decision == "allow" else None,
                    )
                )
                events.append(
                    AuditEvent(
                        kind="guard.verdict",
                        actor="worker",
                        campaign_id=ref.campaign_id,
                        subject=vid,
                        details={
                            "cycle": ref.cycle,
                            "arm": variant.arm,
                            "verdict": decision,
                            "rule_ids": rule_ids,
                            "policy_version": policy.version,
                        },
                        key=f"guard.verdict:{ref.started_at.isoformat()}:{vid}",
                    )
                )
                verdicts.append(
                    VariantVerdict(
                        variant_id=vid,
                        arm=variant.arm,
                        decision=decision,
                        reasons=reasons,
                        policy_version=policy.version,
                    )
                )
            # Once every variant is judged: the log's lock is held until commit only.
            for event in events:
                self.audit.append(event, conn)
            span.set_attribute(
                "liftloop.escalated", sum(v.decision == "escalate" for v in verdicts)
            )
            span.set_attribute("liftloop.blocked", sum(v.decision == "block" for v in verdicts))
            # The stage's final verdict per variant (after the campaign's limits), as arm=verdict.
            span.set_attribute("liftloop.allowed", sum(v.decision == "allow" for v in verdicts))
            span.set_attribute("liftloop.verdicts", [f"{v.arm}={v.decision}" for v in verdicts])
            span.set_attribute(
                "liftloop.rule_ids", sorted({r.rule_id for v in verdicts for r in v.reasons})
            )
            return GuardResult(verdicts=verdicts)


def _generation_reasons(found: list[dict[str, str]], policy_version: str) -> list[GuardReason]:
    return [
        GuardReason(
            rule_id=f"generation.{r['rule_id']}",
            policy_version=policy_version,
            field="copy",
            severity="block",
            explanation=r["message"],
        )
        for r in found
    ]
