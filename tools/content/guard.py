"""The guard port the copywriter calls after every draft, and a built-in default check."""

from __future__ import annotations

import re
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from tools.content.models import CopyDraft, GuardReason, GuardResult
from tools.content.prompts import SLOT, PromptTemplate

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


class CopyGuard(Protocol):
    """Any callable of this shape can guard drafts, e.g. an adapter over the policies package."""

    def __call__(self, draft: CopyDraft, context: GuardContext) -> GuardResult: ...


def draft_text(draft: CopyDraft) -> str:
    blocks = "\n".join(b.text for b in draft.body_blocks)
    return f"{draft.subject}\n{draft.preheader}\n{blocks}\n{draft.call_to_action}"


def builtin_guard(draft: CopyDraft, context: GuardContext) -> GuardResult:
    template = context.template
    limits = template.limits
    reasons: list[GuardReason] = []

    def fail(rule_id: str, message: str) -> None:
        reasons.append(GuardReason(rule_id=rule_id, message=message))

    body_len = sum(len(b.text) for b in draft.body_blocks)
    if not draft.subject.strip():
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
    text = draft_text(draft)
    lowered = text.lower()
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
