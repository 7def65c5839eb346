"""The brand policy around a model call: the assembled prompt is checked before it is sent, and
each draft as it will be sent after it comes back.

Before: the policy's personal-data rules (Presidio) and injection scoring over the prompt. What
the policy would block as personal data is cut out of the prompt; an injection in the prompt
itself (the brief) stops the call. After: the brand policy's block rules on the draft's text as
the send stage will see it, so the copywriter rewrites a draft the guard stage would block.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import phonenumbers
from phonenumbers import Leniency
from pydantic import BaseModel, ConfigDict

from policies import (
    ModelInput,
    OfferTerms,
    Policy,
    Severity,
    VariantProposal,
    check_model_input,
    check_variant,
    score_injection,
)
from tools.content.guard import sms_body
from tools.content.models import CopyDraft, GuardReason, VariantRequest
from tools.content.prompts import SLOT

_REDACTED = "[REDACTED]"
# An e-mail address by its shape, whatever its domain: Presidio's recognizer also wants a known
# top-level domain, and a customer's address in a test or a private domain has none.
_EMAIL_SHAPE = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
# Personal-data spans per (policy version, prompt line), as found; bounded.
_SPANS: dict[tuple[str, str], tuple[tuple[int, int], ...]] = {}
_SPANS_KEPT = 2048
_SPANS_LOCK = threading.Lock()


class PromptCheck(BaseModel):
    model_config = ConfigDict(frozen=True)

    # What may be sent: the prompt with any personal data cut out.
    prompt: str
    redacted: int = 0
    # Non-empty: the prompt must not be sent at all.
    blocked: tuple[GuardReason, ...] = ()


class ModelCallGuard(Protocol):
    def check_prompt(self, prompt: str) -> PromptCheck: ...

    def check_draft(self, draft: CopyDraft) -> tuple[GuardReason, ...]: ...


# The body as the send stage will hold it (e.g. with the compliance footer the loop adds).
FinishBody = Callable[[str, VariantRequest], str]


def _as_sent_slots(text: str) -> str:
    return SLOT.sub(lambda m: "{" + m.group(1) + "}", text)


def _cut(text: str, spans: list[tuple[int, int]]) -> str:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    for start, end in reversed(merged):
        text = text[:start] + _REDACTED + text[end:]
    return text


def _personal_spans(line: str, policy: Policy) -> tuple[tuple[int, int], ...]:
    """Where in one line of a prompt personal data stands, by the policy's rules (Presidio)
    and by the shapes of e-mail addresses and international phone numbers."""
    key = (policy.version, line)
    with _SPANS_LOCK:
        if key in _SPANS:
            return _SPANS[key]
    verdict = check_model_input(ModelInput(prompt=line), policy)
    spans = [r.span for r in verdict.reasons if r.rule_id == "pii.unredacted" and r.span]
    spans += [m.span() for m in _EMAIL_SHAPE.finditer(line)]
    # Numbers with a leading +: without a region nothing else parses, so catalogue figures
    # and dates in the knowledge are left alone.
    spans += [
        (m.start, m.end)
        for m in phonenumbers.PhoneNumberMatcher(line, None, leniency=Leniency.POSSIBLE)
    ]
    found = tuple(sorted(spans))
    with _SPANS_LOCK:
        if len(_SPANS) >= _SPANS_KEPT:
            _SPANS.clear()
        _SPANS[key] = found
    return found


def screen_prompt(prompt: str, policy: Policy) -> PromptCheck:
    """What of `prompt` may reach a model under `policy`: its personal data cut out, or
    nothing at all when the prompt itself carries an injection.

    Personal data is looked for line by line and each distinct line is analysed once per
    policy version: the knowledge of a campaign's arms is the same long line in every prompt,
    and Presidio is the slow part. Injections are scored over the whole prompt."""
    cut_lines, redacted, leftover = [], 0, False
    for line in prompt.split("\n"):
        spans = _personal_spans(line, policy) if line.strip() else ()
        if spans:
            redacted += len(spans)
            line = _cut(line, list(spans))
            leftover = leftover or bool(_personal_spans(line, policy))
        cut_lines.append(line)
    screened = "\n".join(cut_lines)
    blocked: list[GuardReason] = []
    injection = score_injection(screened)
    if injection.flagged(policy.document.injection.threshold):
        blocked.append(
            GuardReason(
                rule_id="injection.detected",
                message=f"prompt: prompt-injection score {injection.score:.2f}"
                f" (signals: {', '.join(injection.signals)})",
            )
        )
    if leftover:
        blocked.append(
            GuardReason(
                rule_id="pii.unredacted", message="prompt: personal data left after cutting"
            )
        )
    return PromptCheck(prompt=screened, redacted=redacted, blocked=tuple(blocked))


@dataclass(frozen=True)
class PolicyCallGuard:
    policy: Policy
    request: VariantRequest
    finish_body: FinishBody | None = None

    def check_prompt(self, prompt: str) -> PromptCheck:
        return screen_prompt(prompt, self.policy)

    def check_draft(self, draft: CopyDraft) -> tuple[GuardReason, ...]:
        request = self.request
        body = (
            sms_body(draft)
            if request.channel == "sms"
            else "\n\n".join(b.text for b in draft.body_blocks)
        )
        body = _as_sent_slots(body)
        if self.finish_body is not None:
            body = self.finish_body(body, request)
        subject = _as_sent_slots(draft.subject)
        verdict = check_variant(
            VariantProposal(
                campaign_id=request.campaign_id,
                arm=request.arm,
                channel=request.channel,
                market=request.market,
                language=request.language,
                subject=subject,
                preheader=_as_sent_slots(draft.preheader),
                body=body,
                cta=_as_sent_slots(draft.call_to_action),
                offer=OfferTerms(discount_pct=request.discount_pct),
                slot_names=tuple(
                    sorted({m for t in (subject, body) for m in re.findall(r"\{(\w+)\}", t)})
                ),
            ),
            self.policy,
        )
        # Escalations are for a person at the guard stage; only what it would block is rewritten.
        return tuple(
            GuardReason(rule_id=r.rule_id, message=r.explanation)
            for r in verdict.reasons
            if r.severity is Severity.BLOCK
        )
