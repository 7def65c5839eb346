"""The guard port the copywriter calls after every draft, and a built-in default check."""

from __future__ import annotations

import re
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from policies import OfferTerms, host_allowed, stated_figures, stated_links
from policies.figures import offer_grants
from tools.content.models import CopyDraft, GuardReason, GuardResult
from tools.content.prompts import SLOT, PromptTemplate
from tools.content.sms import non_gsm_characters, sms_length

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+")
_PHONE = re.compile(r"\+?\d[\d /-]{7,}\d")


class GuardContext(BaseModel):
    """What a guard may check a draft against: the template's rules and what was retrieved."""

    model_config = ConfigDict(frozen=True)

    template: PromptTemplate
    language: str
    shown_doc_ids: frozenset[str]
    approved_claim_ids: frozenset[str]
    discount_pct: float = 0.0
    # Domains that links written out in the copy may point to; links normally come only from
    # slots ({{cta_url}}), so by default any written-out link is rejected.
    allowed_link_domains: tuple[str, ...] = ()


class CopyGuard(Protocol):
    """Any callable of this shape can guard drafts, e.g. an adapter over the policies package."""

    def __call__(self, draft: CopyDraft, context: GuardContext) -> GuardResult: ...


def draft_text(draft: CopyDraft) -> str:
    blocks = "\n".join(b.text for b in draft.body_blocks)
    return f"{draft.subject}\n{draft.preheader}\n{blocks}\n{draft.call_to_action}"


def as_sent(text: str, template: PromptTemplate) -> str:
    """The text with each slot replaced by as many characters as it takes once filled."""
    sizes = template.limits.slot_chars
    return SLOT.sub(lambda m: "x" * sizes.get(m.group(1), len(m.group(0))), text)


def sms_body(draft: CopyDraft) -> str:
    """What an SMS carries: the body blocks in order, one space apart (no subject, no CTA)."""
    return " ".join(b.text.strip() for b in draft.body_blocks if b.text.strip())


def builtin_guard(draft: CopyDraft, context: GuardContext) -> GuardResult:
    template = context.template
    limits = template.limits
    reasons: list[GuardReason] = []

    def fail(rule_id: str, message: str) -> None:
        reasons.append(GuardReason(rule_id=rule_id, message=message))

    body_len = sum(len(b.text) for b in draft.body_blocks)
    if not draft.subject.strip() and limits.subject_max > 0:
        fail("length.subject", "subject is empty")
    if len(draft.subject) > limits.subject_max:
        fail("length.subject", f"subject has {len(draft.subject)} chars, max {limits.subject_max}")
    if len(draft.preheader) > limits.preheader_max:
        fail(
            "length.preheader",
            f"preheader has {len(draft.preheader)} chars, max {limits.preheader_max}",
        )
    if body_len > limits.body_max:
        fail("length.body", f"body has {body_len} chars, max {limits.body_max}")
    if template.channel == "sms":
        sent = sms_length(as_sent(sms_body(draft), template))
        if not sent.fits:
            odd = non_gsm_characters(sms_body(draft))
            fail(
                "length.sms",
                f"the SMS takes {sent.units} {sent.encoding} units as sent, max {sent.limit}"
                + (f" (not in the GSM alphabet: {''.join(odd)})" if odd else ""),
            )
        if draft.call_to_action.strip():
            fail("sms.call_to_action", "an SMS has no button; put the link slot in the body")
    text = draft_text(draft)
    lowered = text.lower()
    offer = OfferTerms(discount_pct=context.discount_pct)
    for figure in stated_figures(text):
        granted, grants = offer_grants(figure, offer)
        if not granted:
            what = "price" if figure.kind == "price" else "discount"
            fail(
                f"offer.{what}_mismatch",
                f"states {figure.text!r} as a {what}, but the offer grants {grants}",
            )
    for link in stated_links(text):
        if link.scheme not in ("", "http", "https") or not host_allowed(
            link.host, context.allowed_link_domains
        ):
            fail(
                "links.domain_not_allowed",
                f"links to {link.host or link.scheme + ':'!r}; links come only from the slots",
            )
    for element in template.required_elements:
        if element not in text:
            fail("required_element", f"missing {element}")
    for phrase in template.banned_phrases:
        if phrase.lower() in lowered:
            fail("banned_phrase", f"contains banned phrase {phrase!r}")
    allowed_slots = {s.name for s in template.slots}
    for slot in sorted(set(SLOT.findall(text)) - allowed_slots):
        fail("slot.unknown", f"slot {{{{{slot}}}}} is not declared by template {template.id}")
    if _EMAIL.search(text) or _PHONE.search(text):
        fail("personal_data", "copy contains an email address or phone number")
    if not draft.citations:
        fail("citation.missing", "the draft cites no knowledge")
    for doc_id in sorted(set(draft.citations) - context.shown_doc_ids):
        fail("citation.unknown", f"cites {doc_id!r}, which retrieval did not return")
    for claim_id in sorted(set(draft.claims_used) - context.approved_claim_ids):
        fail("claim.unapproved", f"claim {claim_id!r} is not an approved claim that was shown")
    return GuardResult(passed=not reasons, reasons=tuple(reasons), guard="builtin")
