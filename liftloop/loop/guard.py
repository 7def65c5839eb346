"""Guard: every variant against the brand policy of its market and the campaign's own limits;
a verdict is allow, block or escalate (to a human), with machine-readable reasons."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity

from liftloop.loop.builtin_templates import slot_names
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


class GuardStage:
    def __init__(self, engine: Engine, policies: PolicyStore) -> None:
        self.engine = engine
        self.policies = policies

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
            for vid in inp.variant_ids:
                variant = conn.execute(
                    select(Variant.arm, Variant.channel, Variant.subject, Variant.body).where(
                        col(Variant.id) == vid
                    )
                ).one()
                offer = offers[variant.arm]
                verdict = within_campaign_limits(
                    check_variant(
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
                    ),
                    discount_pct=offer.discount_pct,
                    max_discount_pct=spec.limits.max_discount_pct,
                    campaign_id=spec.id,
                )
                decision = verdict.decision.value
                conn.execute(
                    update(Variant)
                    .where(col(Variant.id) == vid)
                    .values(verdict=decision, approved=True if decision == "allow" else None)
                )
                verdicts.append(
                    VariantVerdict(
                        variant_id=vid,
                        arm=variant.arm,
                        decision=decision,
                        reasons=[
                            GuardReason.model_validate(r.model_dump(mode="json"))
                            for r in verdict.reasons
                        ],
                        policy_version=policy.version,
                    )
                )
            span.set_attribute(
                "liftloop.escalated", sum(v.decision == "escalate" for v in verdicts)
            )
            span.set_attribute("liftloop.blocked", sum(v.decision == "block" for v in verdicts))
            span.set_attribute(
                "liftloop.rule_ids", sorted({r.rule_id for v in verdicts for r in v.reasons})
            )
            return GuardResult(verdicts=verdicts)
