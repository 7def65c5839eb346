"""The campaign's own limits, on top of the brand policy's: a campaign manager may allow less
than the brand does, never more."""

from __future__ import annotations

from policies.models import Reason, Severity, Verdict


def campaign_discount(discount_pct: float, max_discount_pct: float, campaign_id: str) -> Reason:
    """The reason an offer above the campaign's discount limit waits for a human."""
    return Reason(
        rule_id="campaign.max_discount",
        policy_version=f"campaign:{campaign_id}",
        field="offer.discount_pct",
        severity=Severity.ESCALATE,
        explanation=(
            f"discount {discount_pct:g}% is above the campaign limit of {max_discount_pct:g}%"
        ),
    )


def within_campaign_limits(
    verdict: Verdict, *, discount_pct: float, max_discount_pct: float, campaign_id: str
) -> Verdict:
    """The brand policy's verdict with the campaign's limits added, combined as every verdict is."""
    if discount_pct <= max_discount_pct:
        return verdict
    reason = campaign_discount(discount_pct, max_discount_pct, campaign_id)
    return Verdict.from_reasons([*verdict.reasons, reason], verdict.policy_version)
