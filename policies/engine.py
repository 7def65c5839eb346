"""The guard engine: pure functions from a proposal and a policy to a Verdict.

Each public check opens a span carrying the decision, the rule ids and the policy version — never
copy text, slot values or anything else that could hold personal data.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, TypeVar

from opentelemetry import trace
from pydantic import BaseModel, ValidationError

from policies.contact import (
    cap_exceeded,
    count_in_window,
    in_quiet_hours,
    zone_or_none,
)
from policies.figures import host_allowed, offer_grants, stated_figures, stated_links
from policies.injection import SLOT_INJECTION, score_injection
from policies.models import (
    ModelInput,
    OfferTerms,
    Reason,
    SendProposal,
    Severity,
    VariantCopy,
    VariantProposal,
    Verdict,
)
from policies.pii import find_pii
from policies.policy import Policy

tracer = trace.get_tracer("liftloop.policies")

COPY_FIELDS = ("subject", "preheader", "body", "cta")
_LINK_SCHEMES = ("", "http", "https")
SLOT_REFERENCE = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
_Model = TypeVar("_Model", bound=BaseModel)
RawInput = Mapping[str, Any] | str | bytes


def _reason(
    policy: Policy,
    rule_id: str,
    field: str,
    severity: Severity,
    explanation: str,
    span: tuple[int, int] | None = None,
) -> Reason:
    # The engine builds every field itself, so validation would only cost time on the hot path.
    return Reason.model_construct(
        rule_id=rule_id,
        policy_version=policy.version,
        field=field,
        span=span,
        severity=severity,
        explanation=explanation,
    )


def _parse(raw: _Model | RawInput, model: type[_Model], policy: Policy) -> _Model | Reason:
    """Validate raw input; what cannot be parsed becomes a blocking reason, never an allow."""
    if isinstance(raw, model):
        return raw
    try:
        if isinstance(raw, str | bytes):
            return model.model_validate_json(raw)
        return model.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<input>"
        return _reason(
            policy,
            "input.unparseable",
            where,
            Severity.BLOCK,
            f"{where}: {first['msg']} ({exc.error_count()} problem(s) in the {model.__name__})",
        )
    except (TypeError, ValueError) as exc:
        return _reason(
            policy,
            "input.unparseable",
            "<input>",
            Severity.BLOCK,
            f"<input>: cannot read a {model.__name__}: {exc.__class__.__name__}",
        )


def _record(span: trace.Span, verdict: Verdict) -> Verdict:
    span.set_attribute("policy.version", verdict.policy_version)
    span.set_attribute("guard.decision", verdict.decision.value)
    span.set_attribute("guard.rule_ids", list(verdict.rule_ids))
    span.set_attribute("guard.reason_count", len(verdict.reasons))
    return verdict


# --- copy: claims, tone, banned words, personal data ------------------------------------------


def _claim_reasons(fields: Mapping[str, str], policy: Policy) -> list[Reason]:
    reasons: list[Reason] = []
    whole = "\n".join(fields.values())
    for compiled in policy.claims:
        if compiled.unless is not None and compiled.unless.search(whole):
            continue
        for name in compiled.rule.fields:
            for match in compiled.regex.finditer(fields.get(name, "")):
                reasons.append(
                    _reason(
                        policy,
                        compiled.rule.id,
                        name,
                        compiled.rule.severity,
                        f"{match.group(0)!r}: {compiled.rule.explanation}",
                        match.span(),
                    )
                )
    return reasons


def _tone_reasons(fields: Mapping[str, str], policy: Policy) -> list[Reason]:
    tone = policy.document.tone
    reasons: list[Reason] = []
    subject = SLOT_REFERENCE.sub("", fields.get("subject", ""))
    letters = [c for c in subject if c.isalpha()]
    if (
        tone.all_caps_subject is not None
        and len(letters) >= tone.all_caps_min_letters
        and all(c.isupper() for c in letters)
    ):
        reasons.append(
            _reason(
                policy,
                "tone.all_caps_subject",
                "subject",
                tone.all_caps_subject,
                "subject: written in capitals only",
            )
        )
    for name, limit in tone.max_exclamations.items():
        text = fields.get(name, "")
        positions = [i for i, c in enumerate(text) if c == "!"]
        if len(positions) > limit:
            reasons.append(
                _reason(
                    policy,
                    "tone.exclamations",
                    name,
                    tone.exclamation_severity,
                    f"{name}: {len(positions)} exclamation marks, at most {limit} allowed",
                    (positions[limit], positions[limit] + 1),
                )
            )
    if policy.banned_words is not None:
        for name, text in fields.items():
            for match in policy.banned_words.finditer(text):
                reasons.append(
                    _reason(
                        policy,
                        "tone.banned_word",
                        name,
                        tone.banned_words.severity,
                        f"{match.group(0)!r}: banned by the brand's tone rules",
                        match.span(),
                    )
                )
    return reasons


def _pii_reasons(fields: Mapping[str, str], language: str, policy: Policy) -> list[Reason]:
    rules = policy.document.pii
    wanted = {
        **{e: Severity.ESCALATE for e in rules.escalate},
        **{e: Severity.BLOCK for e in rules.block},
    }
    if not wanted:
        return []
    # One analyzer pass over all fields (it is the slow part), mapped back to field offsets.
    names = [n for n, t in fields.items() if t]
    joined = "\n\n".join(fields[n] for n in names)
    starts, offset = [], 0
    for name in names:
        starts.append(offset)
        offset += len(fields[name]) + 2
    reasons: list[Reason] = []
    for finding in find_pii(
        joined, language=language, min_score=rules.min_score, entities=tuple(wanted)
    ):
        index = max(i for i, s in enumerate(starts) if s <= finding.start)
        base = starts[index]
        reasons.append(
            _reason(
                policy,
                f"pii.{finding.entity_type.lower()}",
                names[index],
                wanted[finding.entity_type],
                f"{names[index]}: contains personal data of type {finding.entity_type} "
                f"(score {finding.score:.2f}); personal data goes into typed slots only",
                (finding.start - base, finding.end - base),
            )
        )
    return reasons


def _link_reasons(fields: Mapping[str, str], policy: Policy) -> list[Reason]:
    """Every link written out in the copy must go to an allow-listed domain (or a subdomain)."""
    allowed = policy.document.links.allowed_domains
    listed = ", ".join(allowed) or "none"
    reasons: list[Reason] = []
    for name, text in fields.items():
        for link in stated_links(text):
            if link.scheme not in _LINK_SCHEMES:
                reasons.append(
                    _reason(
                        policy,
                        "links.scheme_not_allowed",
                        name,
                        Severity.BLOCK,
                        f"{name}: a {link.scheme}: link; copy may link only over http(s)",
                        link.span,
                    )
                )
            elif not host_allowed(link.host, allowed):
                reasons.append(
                    _reason(
                        policy,
                        "links.domain_not_allowed",
                        name,
                        Severity.BLOCK,
                        f"{name}: links to {link.host or '(no host)'!r}, which is not an allowed "
                        f"link domain of the brand ({listed})",
                        link.span,
                    )
                )
    return reasons


def _copy_reasons(fields: Mapping[str, str], language: str, policy: Policy) -> list[Reason]:
    return [
        *_claim_reasons(fields, policy),
        *_tone_reasons(fields, policy),
        *_pii_reasons(fields, language, policy),
        *_link_reasons(fields, policy),
    ]


# --- what the copy promises against what the offer grants ----------------------------------


def _figure_reasons(
    fields: Mapping[str, str], offer: OfferTerms | None, policy: Policy
) -> list[Reason]:
    """Every discount and price the copy states must be one the variant's offer grants."""
    terms = offer or OfferTerms()
    reasons: list[Reason] = []
    for name, text in fields.items():
        for figure in stated_figures(text):
            ok, grants = offer_grants(figure, terms)
            if ok:
                continue
            what = "price" if figure.kind == "price" else "discount"
            reasons.append(
                _reason(
                    policy,
                    f"offer.{what}_mismatch",
                    name,
                    Severity.BLOCK,
                    f"{name}: states {figure.text!r} as a {what}, but the offer grants {grants}",
                    figure.span,
                )
            )
    return reasons


# --- variants ----------------------------------------------------------------------------------


def _offer_reasons(proposal: VariantProposal, policy: Policy) -> list[Reason]:
    offer = proposal.offer
    if offer is None:
        return []
    rules = policy.document.offers
    reasons: list[Reason] = []
    limit = policy.discount_limit(offer.segment, offer.product_class)
    if offer.discount_pct > rules.hard_ceiling_pct:
        reasons.append(
            _reason(
                policy,
                "offer.discount_ceiling",
                "offer.discount_pct",
                Severity.BLOCK,
                f"offer.discount_pct: {offer.discount_pct:g}% is above the hard ceiling of "
                f"{rules.hard_ceiling_pct:g}%",
            )
        )
    elif offer.discount_pct > limit:
        reasons.append(
            _reason(
                policy,
                "offer.discount_limit",
                "offer.discount_pct",
                Severity.ESCALATE,
                f"offer.discount_pct: {offer.discount_pct:g}% is above the {limit:g}% limit for "
                f"segment "
                f"{offer.segment!r}, product class {offer.product_class!r}; needs approval",
            )
        )
    if offer.price is not None and offer.min_price is not None and offer.price < offer.min_price:
        reasons.append(
            _reason(
                policy,
                "offer.price_floor",
                "offer.price",
                Severity.BLOCK,
                f"offer.price: {offer.price:g} is below the floor of {offer.min_price:g}",
            )
        )
    if rules.min_margin_pct is not None:
        if offer.margin_pct is None:
            if offer.discount_pct > 0:
                reasons.append(
                    _reason(
                        policy,
                        "offer.margin_unknown",
                        "offer.margin_pct",
                        Severity.NOTICE,
                        "offer.margin_pct: not given, so the margin floor was not checked",
                    )
                )
        else:
            # Margin m at list price; after a discount d the price is p(1-d) at unchanged cost.
            keep = 1 - offer.discount_pct / 100
            after = 100 * (1 - (1 - offer.margin_pct / 100) / keep) if keep > 0 else float("-inf")
            if after < rules.min_margin_pct:
                reasons.append(
                    _reason(
                        policy,
                        "offer.margin_floor",
                        "offer.margin_pct",
                        Severity.BLOCK,
                        f"offer.margin_pct: {after:.1f}% after the discount is below the floor of "
                        f"{rules.min_margin_pct:g}%",
                    )
                )
    return reasons


def _slot_reference_reasons(
    fields: Mapping[str, str], declared: tuple[str, ...], policy: Policy
) -> list[Reason]:
    reasons: list[Reason] = []
    for name in declared:
        if name not in policy.slot_patterns:
            reasons.append(
                _reason(
                    policy,
                    "slot.untyped",
                    "slot_names",
                    Severity.BLOCK,
                    f"slot_names: {name!r} has no typed slot rule in the policy",
                )
            )
    for field, text in fields.items():
        for match in SLOT_REFERENCE.finditer(text):
            if match.group(1) not in declared:
                reasons.append(
                    _reason(
                        policy,
                        "slot.undeclared",
                        field,
                        Severity.BLOCK,
                        f"{field}: slot {{{match.group(1)}}} is not declared in slot_names",
                        match.span(),
                    )
                )
    return reasons


def _required_reasons(fields: Mapping[str, str], channel: str, policy: Policy) -> list[Reason]:
    whole = "\n".join(fields.values())
    return [
        _reason(
            policy,
            required.rule.id,
            "body",
            required.rule.severity,
            f"body: missing required element for {channel}: {required.rule.explanation}",
        )
        for required in policy.required
        if channel in required.rule.channels and not required.regex.search(whole)
    ]


def check_variant(proposal: VariantProposal | RawInput, policy: Policy) -> Verdict:
    """Judge one content variant: claims, tone, required elements, slots, personal data, links,
    the offer's limits, and that every discount or price in the copy is one the offer grants."""
    with tracer.start_as_current_span("policies.check_variant") as span:
        parsed = _parse(proposal, VariantProposal, policy)
        if isinstance(parsed, Reason):
            return _record(span, Verdict.from_reasons([parsed], policy.version))
        span.set_attribute("variant.channel", parsed.channel)
        span.set_attribute("variant.market", parsed.market)
        span.set_attribute("variant.campaign_id", parsed.campaign_id)
        span.set_attribute("variant.arm", parsed.arm)
        reasons: list[Reason] = []
        document = policy.document
        if parsed.market.upper() != document.market.upper():
            reasons.append(
                _reason(
                    policy,
                    "policy.market_mismatch",
                    "market",
                    Severity.BLOCK,
                    f"market: {parsed.market!r} is not covered by policy {document.id!r} "
                    f"({document.market})",
                )
            )
        if parsed.language not in document.languages:
            reasons.append(
                _reason(
                    policy,
                    "policy.language_unsupported",
                    "language",
                    Severity.BLOCK,
                    f"language: {parsed.language!r} has no claim rules in policy {document.id!r}",
                )
            )
        fields = {name: getattr(parsed, name) for name in COPY_FIELDS}
        reasons += _copy_reasons(fields, parsed.language, policy)
        reasons += _required_reasons(fields, parsed.channel, policy)
        reasons += _slot_reference_reasons(fields, parsed.slot_names, policy)
        reasons += _offer_reasons(parsed, policy)
        reasons += _figure_reasons(fields, parsed.offer, policy)
        return _record(span, Verdict.from_reasons(reasons, policy.version))


# --- model calls -------------------------------------------------------------------------------


def check_model_input(model_input: ModelInput | RawInput, policy: Policy) -> Verdict:
    """Judge what would be sent to a model: injections in prompt or documents, personal data."""
    with tracer.start_as_current_span("policies.check_model_input") as span:
        parsed = _parse(model_input, ModelInput, policy)
        if isinstance(parsed, Reason):
            return _record(span, Verdict.from_reasons([parsed], policy.version))
        span.set_attribute("model_input.document_count", len(parsed.documents))
        threshold = policy.document.injection.threshold
        texts = {"prompt": parsed.prompt} | {
            f"documents[{i}]": doc.text for i, doc in enumerate(parsed.documents)
        }
        reasons: list[Reason] = []
        for field, text in texts.items():
            score = score_injection(text)
            if score.flagged(threshold):
                reasons.append(
                    _reason(
                        policy,
                        "injection.detected",
                        field,
                        Severity.BLOCK,
                        f"{field}: prompt-injection score {score.score:.2f} >= {threshold:g} "
                        f"(signals: {', '.join(score.signals)})",
                        score.span,
                    )
                )
        # Personal data must have been replaced by placeholders before this point.
        reasons += [
            reason.model_copy(update={"severity": Severity.BLOCK, "rule_id": "pii.unredacted"})
            for reason in _pii_reasons(texts, "en", policy)
            if reason.severity is Severity.BLOCK
        ]
        return _record(span, Verdict.from_reasons(reasons, policy.version))


def parse_model_output(raw: Any, schema: type[_Model]) -> _Model | str:
    """The model's output as ``schema``, or a short description of why it is not one."""
    if isinstance(raw, schema):
        return raw
    try:
        if isinstance(raw, str | bytes):
            return schema.model_validate(json.loads(raw))
        return schema.model_validate(raw)
    except json.JSONDecodeError as exc:
        return f"output: not JSON ({exc.msg} at position {exc.pos})"
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "<root>"
        return f"output.{where}: {first['msg']}"
    except (TypeError, ValueError) as exc:
        return f"output: cannot be read as {schema.__name__} ({exc.__class__.__name__})"


def check_model_output(
    raw: Any, policy: Policy, *, language: str = "en", schema: type[BaseModel] = VariantCopy
) -> Verdict:
    """Judge a model's output: it must parse as ``schema``; its text passes the copy rules."""
    with tracer.start_as_current_span("policies.check_model_output") as span:
        parsed = parse_model_output(raw, schema)
        if isinstance(parsed, str):
            reason = _reason(
                policy, "output.unparseable", parsed.split(":", 1)[0], Severity.BLOCK, parsed
            )
            return _record(span, Verdict.from_reasons([reason], policy.version))
        fields = {
            name: value for name, value in parsed.model_dump().items() if isinstance(value, str)
        }
        reasons = _copy_reasons(fields, language, policy)
        for field, text in fields.items():
            for match in SLOT_REFERENCE.finditer(text):
                if match.group(1) not in policy.slot_patterns:
                    reasons.append(
                        _reason(
                            policy,
                            "slot.untyped",
                            field,
                            Severity.BLOCK,
                            f"{field}: slot {{{match.group(1)}}} has no typed slot rule",
                            match.span(),
                        )
                    )
        return _record(span, Verdict.from_reasons(reasons, policy.version))


# --- sends (the per-message fast path) ---------------------------------------------------------


def _send_reasons(proposal: SendProposal, policy: Policy) -> list[Reason]:
    reasons: list[Reason] = []
    channel = proposal.channel
    if proposal.opted_out:
        reasons.append(
            _reason(
                policy,
                "consent.opted_out",
                "opted_out",
                Severity.BLOCK,
                f"opted_out: the person opted out of {channel}",
            )
        )
    if proposal.purpose not in proposal.consented_purposes:
        reasons.append(
            _reason(
                policy,
                "consent.missing",
                "consented_purposes",
                Severity.BLOCK,
                f"consented_purposes: no consent for purpose {proposal.purpose!r} on {channel}",
            )
        )
    # An instruction needs several words; one short token ("Anna") skips the injection regex,
    # the slowest check on this path.
    for name, value in proposal.slots.items():
        checked = policy.slot_patterns.get(name)
        if checked is None:
            reasons.append(
                _reason(
                    policy,
                    "slot.untyped",
                    f"slots.{name}",
                    Severity.BLOCK,
                    f"slots.{name}: no typed slot rule in the policy",
                )
            )
        elif len(value) > checked[0]:
            reasons.append(
                _reason(
                    policy,
                    "slot.too_long",
                    f"slots.{name}",
                    Severity.BLOCK,
                    f"slots.{name}: {len(value)} characters, at most {checked[0]}",
                )
            )
        elif checked[1].fullmatch(value) is None:
            reasons.append(
                _reason(
                    policy,
                    "slot.bad_characters",
                    f"slots.{name}",
                    Severity.BLOCK,
                    f"slots.{name}: markup, links or characters not allowed in this slot",
                )
            )
        elif checked[2] and (" " in value or len(value) > 15) and SLOT_INJECTION.search(value):
            reasons.append(
                _reason(
                    policy,
                    "slot.injection",
                    f"slots.{name}",
                    Severity.BLOCK,
                    f"slots.{name}: reads like an instruction to a model",
                )
            )
    zone = zone_or_none(proposal.time_zone)
    send_at = proposal.send_at
    if zone is None:
        reasons.append(
            _reason(
                policy,
                "send.time_zone",
                "time_zone",
                Severity.BLOCK,
                "time_zone: not a known IANA time zone",
            )
        )
        return reasons
    if send_at.tzinfo is None:
        reasons.append(
            _reason(
                policy,
                "send.naive_time",
                "send_at",
                Severity.BLOCK,
                "send_at: needs a time zone (UTC); a naive time is ambiguous",
            )
        )
        return reasons
    local = send_at.astimezone(zone)
    contact = policy.document.contact
    quiet = contact.quiet_hours
    if quiet is not None and channel in quiet.channels and in_quiet_hours(local.time(), quiet):
        reasons.append(
            _reason(
                policy,
                "contact.quiet_hours",
                "send_at",
                Severity.BLOCK,
                f"send_at: {local:%H:%M} local time is inside quiet hours "
                f"{quiet.start:%H:%M}-{quiet.end:%H:%M}",
            )
        )
    cap = contact.frequency_caps.get(channel)
    if cap is not None:
        counts = count_in_window(proposal.prior_sends.get(channel, ()), zone, local.date())
        if counts is None:
            reasons.append(
                _reason(
                    policy,
                    "send.naive_time",
                    f"prior_sends.{channel}",
                    Severity.BLOCK,
                    f"prior_sends.{channel}: every instant needs a time zone (UTC)",
                )
            )
            return reasons
        same_day, same_week = counts
        broken = cap_exceeded(cap, same_day, same_week)
        if broken is not None:
            limit = cap.per_day if broken == "per_day" else cap.per_week
            reasons.append(
                _reason(
                    policy,
                    f"contact.frequency_cap.{broken}",
                    f"prior_sends.{channel}",
                    Severity.BLOCK,
                    f"prior_sends.{channel}: {same_day if broken == 'per_day' else same_week} "
                    f"{channel} sends already this local "
                    f"{broken.removeprefix('per_')}, cap {limit}",
                )
            )
    return reasons


def _judge_send(proposal: SendProposal | RawInput, policy: Policy) -> Verdict:
    parsed = _parse(proposal, SendProposal, policy)
    if isinstance(parsed, Reason):
        return Verdict.from_reasons([parsed], policy.version)
    reasons = _send_reasons(parsed, policy)
    return _allow(policy) if not reasons else Verdict.from_reasons(reasons, policy.version)


def check_send(proposal: SendProposal | RawInput, policy: Policy) -> Verdict:
    """Judge one filled message: consent, slot values, quiet hours and frequency caps.

    No analyzer or model work happens here; for many messages use :func:`check_sends`, which
    records one span per batch instead of one per message.
    """
    with tracer.start_as_current_span("policies.check_send") as span:
        span.set_attribute(
            "send.channel", proposal.channel if isinstance(proposal, SendProposal) else ""
        )
        return _record(span, _judge_send(proposal, policy))


_ALLOW: dict[str, Verdict] = {}


def _allow(policy: Policy) -> Verdict:
    # Allowed messages share one verdict object per policy version: verdicts are immutable.
    verdict = _ALLOW.get(policy.version)
    if verdict is None:
        verdict = _ALLOW.setdefault(policy.version, Verdict.from_reasons([], policy.version))
    return verdict


def check_sends(proposals: list[SendProposal], policy: Policy) -> list[Verdict]:
    """Judge a batch of filled messages under one span with the batch's counts per decision."""
    with tracer.start_as_current_span("policies.check_sends") as span:
        verdicts = [_judge_send(p, policy) for p in proposals]
        span.set_attribute("policy.version", policy.version)
        span.set_attribute("guard.message_count", len(verdicts))
        counts: dict[str, int] = {}
        rule_ids: set[str] = set()
        for verdict in verdicts:
            counts[verdict.decision.value] = counts.get(verdict.decision.value, 0) + 1
            rule_ids.update(verdict.rule_ids)
        for decision, count in counts.items():
            span.set_attribute(f"guard.{decision}_count", count)
        span.set_attribute("guard.rule_ids", sorted(rule_ids))
        return verdicts
