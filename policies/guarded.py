"""Input and output guards around any model call, with one revision before escalation."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import trace
from pydantic import BaseModel

from policies.engine import (
    UNAPPROVABLE_RULES,
    check_model_input,
    check_model_output,
    parse_model_output,
)
from policies.models import (
    Decision,
    ModelInput,
    Reason,
    RetrievedDocument,
    Severity,
    VariantCopy,
    Verdict,
)
from policies.pii import PiiVault, redact
from policies.policy import Policy

tracer = trace.get_tracer("liftloop.policies")


@dataclass(frozen=True)
class ModelRequest:
    """What the wrapped model function receives: redacted text, and on a retry the reasons."""

    prompt: str
    documents: tuple[RetrievedDocument, ...]
    revision_reasons: tuple[Reason, ...] = ()


ModelFn = Callable[[ModelRequest], Any | Awaitable[Any]]


@dataclass(frozen=True)
class GuardedResult:
    verdict: Verdict
    # The parsed output when the model was called and its output parsed, else None.
    output: BaseModel | None
    attempts: int
    # Placeholder -> personal data, for to_typed_slots; in memory only.
    vault: PiiVault = field(default_factory=PiiVault, repr=False)


def _escalated(verdict: Verdict) -> Verdict:
    note = Reason(
        rule_id="guard.revision_exhausted",
        policy_version=verdict.policy_version,
        field="output",
        severity=Severity.ESCALATE,
        explanation="output: still blocked after one revision; a person has to decide",
    )
    # The blocking reasons stay visible to the approver but no longer decide alone — except
    # those no approver may override (a link off the brand's domains, a promise the offer does
    # not grant), which keep blocking.
    softened = tuple(
        r.model_copy(update={"severity": Severity.ESCALATE})
        if r.severity is Severity.BLOCK and r.rule_id not in UNAPPROVABLE_RULES
        else r
        for r in verdict.reasons
    )
    return Verdict.from_reasons((*softened, note), verdict.policy_version)


async def guarded_call(
    fn: ModelFn,
    model_input: ModelInput,
    policy: Policy,
    *,
    language: str = "en",
    schema: type[BaseModel] = VariantCopy,
    max_revisions: int = 1,
) -> GuardedResult:
    """Redact personal data, guard the input, call ``fn``, guard the output.

    A blocked input never reaches the model. A blocked output is sent back once with its
    reasons (``max_revisions``); if it is still blocked the verdict becomes escalate, so a person
    decides and nothing blocked is ever returned as allowed — unless a reason is one no person
    may override (``UNAPPROVABLE_RULES``: links off the brand's domains), which keeps it
    blocked. ``fn`` may be sync or async.
    """
    with tracer.start_as_current_span("policies.guarded_call") as span:
        span.set_attribute("policy.version", policy.version)
        vault = PiiVault()
        prompt, redacted = redact(model_input.prompt, vault)
        documents = []
        for doc in model_input.documents:
            text, count = redact(doc.text, vault)
            redacted += count
            documents.append(RetrievedDocument(doc_id=doc.doc_id, text=text))
        span.set_attribute("pii.redacted_count", redacted)
        safe_input = ModelInput(prompt=prompt, documents=tuple(documents))
        input_verdict = check_model_input(safe_input, policy)
        if input_verdict.decision is Decision.BLOCK:
            span.set_attribute("guard.decision", "block")
            span.set_attribute("guard.stage", "input")
            return GuardedResult(input_verdict, None, 0, vault)

        reasons: tuple[Reason, ...] = ()
        attempts = 0
        while True:
            attempts += 1
            result = fn(ModelRequest(prompt, tuple(documents), reasons))
            raw = await result if inspect.isawaitable(result) else result
            verdict = check_model_output(raw, policy, language=language, schema=schema)
            if verdict.decision is not Decision.BLOCK or attempts > max_revisions:
                break
            reasons = verdict.reasons
        if verdict.decision is Decision.BLOCK:
            verdict = _escalated(verdict)
        parsed = parse_model_output(raw, schema)
        span.set_attribute("guard.decision", verdict.decision.value)
        span.set_attribute("guard.attempts", attempts)
        span.set_attribute("guard.rule_ids", list(verdict.rule_ids))
        return GuardedResult(
            verdict, parsed if isinstance(parsed, BaseModel) else None, attempts, vault
        )
