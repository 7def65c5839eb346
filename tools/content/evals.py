"""Per-template eval sets: fixed inputs and checks, run as regression tests and from the CLI."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import yaml
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tools.content.errors import ContentError
from tools.content.guard import as_sent
from tools.content.models import GeneratedVariant, VariantRequest
from tools.content.prompts import default_library
from tools.content.sms import sms_length
from tools.rag.knowledge_base import KnowledgeBase

EVALS_DIR = Path(__file__).resolve().parent / "evals"
tracer = trace.get_tracer("liftloop.content")


class EvalChecks(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_pass: bool = True
    citations_valid: bool = True
    max_subject_chars: int | None = None
    max_body_chars: int | None = None
    required: tuple[str, ...] = ()
    banned: tuple[str, ...] = ()
    must_cite: tuple[str, ...] = ()
    # The body, with each slot at its filled length, fits one SMS (160 GSM / 70 UCS-2).
    sms_single_message: bool = False


class EvalCase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    request: VariantRequest
    checks: EvalChecks = EvalChecks()


class EvalSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    cases: tuple[EvalCase, ...] = Field(min_length=1)


class CaseResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    case_id: str
    passed: bool
    failures: tuple[str, ...]
    subject: str
    attempts: int
    citations: tuple[str, ...]


class EvalReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    template: str
    passed: int
    failed: int
    cases: tuple[CaseResult, ...]


def load_eval_sets(directory: Path = EVALS_DIR) -> dict[str, EvalSet]:
    sets: dict[str, EvalSet] = {}
    for path in sorted(directory.glob("*.yaml")):
        try:
            loaded = EvalSet.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ContentError(f"{path.name}:{where}", first["msg"]) from exc
        sets[loaded.template] = loaded
    return sets


def check_variant(
    variant: GeneratedVariant, checks: EvalChecks, known_doc_ids: set[str]
) -> list[str]:
    failures = []
    text = "\n".join((variant.subject, variant.preheader, variant.body, variant.cta))
    if checks.policy_pass and not variant.guard.passed:
        failures.append("policy: " + "; ".join(r.rule_id for r in variant.guard.reasons))
    if checks.citations_valid:
        if not variant.citations:
            failures.append("citations: none")
        unknown = sorted(set(variant.citations) - known_doc_ids)
        if unknown:
            failures.append(f"citations: unknown documents {unknown}")
    if checks.max_subject_chars is not None and len(variant.subject) > checks.max_subject_chars:
        failures.append(f"length: subject {len(variant.subject)} > {checks.max_subject_chars}")
    if checks.max_body_chars is not None and len(variant.body) > checks.max_body_chars:
        failures.append(f"length: body {len(variant.body)} > {checks.max_body_chars}")
    failures += [f"required: missing {r!r}" for r in checks.required if r not in text]
    failures += [f"banned: contains {b!r}" for b in checks.banned if b.lower() in text.lower()]
    failures += [f"cite: missing {d!r}" for d in checks.must_cite if d not in variant.citations]
    if checks.sms_single_message:
        sent = sms_length(as_sent(variant.body, default_library().get(variant.template_id)))
        if not sent.fits:
            failures.append(f"sms: {sent.units} {sent.encoding} units > {sent.limit}")
    return failures


class VariantWriter(Protocol):
    """What an eval set runs against: the copywriter agent, or any other writer of variants
    over a knowledge base (whose documents the citations are checked against)."""

    knowledge: KnowledgeBase

    async def generate(self, request: VariantRequest) -> GeneratedVariant: ...


async def run_eval_set(copywriter: VariantWriter, eval_set: EvalSet) -> EvalReport:
    with tracer.start_as_current_span("content.prompts_eval") as span:
        known = {c.meta.doc_id for c in copywriter.knowledge.index.all_chunks()}
        results = []
        for case in eval_set.cases:
            if case.request.template_id != eval_set.template:
                raise ContentError(
                    f"{eval_set.template}.{case.id}.template_id",
                    f"is {case.request.template_id!r}, expected {eval_set.template!r}",
                )
            variant = await copywriter.generate(case.request)
            failures = check_variant(variant, case.checks, known)
            results.append(
                CaseResult(
                    case_id=case.id,
                    passed=not failures,
                    failures=tuple(failures),
                    subject=variant.subject,
                    attempts=variant.attempts,
                    citations=variant.citations,
                )
            )
        passed = sum(r.passed for r in results)
        span.set_attributes(
            {
                "content.template_id": eval_set.template,
                "content.eval_passed": passed,
                "content.eval_failed": len(results) - passed,
            }
        )
        return EvalReport(
            template=eval_set.template,
            passed=passed,
            failed=len(results) - passed,
            cases=tuple(results),
        )
