"""The planner's lint of a draft spec: what the guard stage will say about its offers, before
any copy exists — the brand policy of the spec's market and brand (`policies.check_variant`:
market, language, discount limit and hard ceiling, margin floor) and the campaign's own limits
(`policies.campaign_limits`) — plus the policy's frequency caps against the spec's.

A draft has no copy yet, so the copy rules (claims, tone, required elements, personal data) are
left to the guard stage; only the reasons about the market, the language and the offer count
here. A reason's field names the spec's path (`offers.2.discount_pct`), so a model can fix it.
"""

from __future__ import annotations

from typing import Any

from agents.planner_tools import LintArgs
from liftloop.loop.spec import CampaignSpec, SpecError, parse_spec
from policies import (
    OfferTerms,
    PolicyNotFoundError,
    PolicyStore,
    Reason,
    Severity,
    VariantProposal,
    check_variant,
    combine,
)
from policies.campaign_limits import campaign_discount


def _row(reason: Reason, field: str | None = None) -> dict[str, Any]:
    return {
        "rule_id": reason.rule_id,
        "severity": reason.severity.value,
        "field": field or reason.field,
        "explanation": reason.explanation,
    }


def _frequency_notices(spec: CampaignSpec, caps: dict[str, Any], version: str) -> list[Reason]:
    asked = spec.limits.frequency_cap.per_week
    notices = []
    for channel in spec.channels:
        cap = caps.get(channel)
        if cap is None or cap.per_week is None or (asked is not None and asked <= cap.per_week):
            continue
        notices.append(
            Reason(
                rule_id="contact.frequency_cap",
                policy_version=version,
                field="limits.frequency_cap.per_week",
                severity=Severity.NOTICE,
                explanation=f"the policy caps {channel} at {cap.per_week} a week; sends above it "
                "are suppressed at send time",
            )
        )
    return notices


def lint_spec(args: LintArgs, policies: PolicyStore) -> dict[str, Any]:
    try:
        # A draft may leave the id to the planner; the rest is judged as `campaign start` would.
        spec = parse_spec({"id": "draft", **args.spec})
    except SpecError as exc:
        return {
            "decision": "block",
            "valid": False,
            "policy_version": None,
            "reasons": [
                {"rule_id": "spec.invalid", "severity": "block", "field": f, "explanation": r}
                for f, r in exc.problems
            ],
        }
    market, brand = spec.content.market, spec.content.brand
    try:
        policy = policies.get(market, brand)
    except PolicyNotFoundError:
        reason = {
            "rule_id": "policy.not_found",
            "severity": "block",
            "field": "content.market",
            "explanation": f"no brand policy for brand {brand!r} in market {market!r}: the "
            "guard stage would block every variant",
        }
        return {"decision": "block", "valid": True, "policy_version": None, "reasons": [reason]}
    reasons: list[tuple[Reason, str | None]] = []
    for i, offer in enumerate(spec.offers):
        verdict = check_variant(
            VariantProposal(
                campaign_id=spec.id,
                arm=f"{offer.id}@{spec.channels[0]}",
                channel=spec.channels[0],
                market=market,
                language=spec.content.language,
                body="",
                offer=OfferTerms(discount_pct=offer.discount_pct, margin_pct=offer.margin_pct),
            ),
            policy,
        )
        for r in verdict.reasons:
            if r.rule_id.startswith("offer."):
                reasons.append((r, f"offers.{i}.{r.field.removeprefix('offer.')}"))
            elif r.rule_id.startswith("policy.") and i == 0:  # the same for every offer
                reasons.append((r, f"content.{r.field}"))
        if offer.discount_pct > spec.limits.max_discount_pct:
            limit = campaign_discount(offer.discount_pct, spec.limits.max_discount_pct, spec.id)
            reasons.append((limit, f"offers.{i}.discount_pct"))
    notices = _frequency_notices(spec, policy.document.contact.frequency_caps, policy.version)
    reasons += [(n, None) for n in notices]
    return {
        "decision": combine(r for r, _ in reasons).value,
        "valid": True,
        "policy_version": policy.version,
        "reasons": [_row(r, f) for r, f in reasons],
    }
