"""Per-template eval sets: fixed inputs and checks, run as regression tests, from the CLI and by
the release gate (`tools.content.releases`). Each case scores five checks — policy, required
elements, citations, length, tone — and a set passes when enough of its cases pass all five."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, NamedTuple, Protocol

import yaml
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, ValidationError, computed_field

from tools.content.errors import ContentError
from tools.content.guard import as_sent
from tools.content.models import GeneratedVariant, VariantRequest
from tools.content.prompts import default_library
from tools.content.sms import sms_length
from tools.rag.knowledge_base import KnowledgeBase

EVALS_DIR = Path(__file__).resolve().parent / "evals"
tracer = trace.get_tracer("liftloop.content")

Check = Literal["policy", "required", "citations", "length", "tone"]
CHECKS: tuple[Check, ...] = ("policy", "required", "citations", "length", "tone")
# English and German, the languages of the bundled copy; matched as whole words, any case.
PRESSURE_PHRASES = (
    "act now",
    "last chance",
    "only today",
    "today only",
    "hurry",
    "don't miss out",
    "before it's too late",
    "final hours",
    "jetzt zuschlagen",
    "letzte chance",
    "nur heute",
    "nur noch heute",
    "schnell sein",
)
_LETTERS = re.compile(r"[^\W\d_]+")


class ToneRules(BaseModel):
    """No shouting, few exclamation marks, no pressure: the brand's "warm, no pressure"."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Shorter capitalised words are acronyms ("NEU", "EUR"); longer ones read as shouting
    # unless listed, like the SMS opt-out keyword "STOP".
    caps_min_letters: int = Field(default=4, ge=2)
    allowed_caps: tuple[str, ...] = ()
    max_exclamations: int = Field(default=1, ge=0)
    pressure_phrases: tuple[str, ...] = PRESSURE_PHRASES


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
    # In an eval set a case that leaves this out takes the set's rules; null turns it off.
    tone: ToneRules | None = ToneRules()


class EvalCase(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    request: VariantRequest
    checks: EvalChecks = EvalChecks()


class EvalSet(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    template: str
    # The share of cases that must pass every check for the set (and the prompt) to pass.
    min_pass_rate: float = Field(default=1.0, gt=0.0, le=1.0)
    tone: ToneRules = ToneRules()
    cases: tuple[EvalCase, ...] = Field(min_length=1)

    def checks_for(self, case: EvalCase) -> EvalChecks:
        if "tone" in case.checks.model_fields_set:
            return case.checks
        return case.checks.model_copy(update={"tone": self.tone})


class CaseResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    case_id: str
    passed: bool
    # Which of the five checks passed (a check with nothing to check passes).
    checks: dict[Check, bool]
    failures: tuple[str, ...]
    subject: str
    attempts: int
    citations: tuple[str, ...]
    # What wrote the variant, so a report cannot be recorded for another version or model.
    template_version: str
    model: str


class EvalReport(BaseModel):
    """Scores derived from the cases, never given, so a report cannot claim a pass."""

    model_config = ConfigDict(frozen=True)

    template: str
    min_pass_rate: float = 1.0
    cases: tuple[CaseResult, ...]

    @computed_field  # type: ignore[prop-decorator]
    @property
    def passed(self) -> int:
        return sum(c.passed for c in self.cases)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def failed(self) -> int:
        return len(self.cases) - self.passed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def pass_rate(self) -> float:
        return self.passed / len(self.cases) if self.cases else 0.0

    @computed_field  # type: ignore[prop-decorator]
    @property
    def rates(self) -> dict[Check, float]:
        """Per check, the share of cases that passed it."""
        n = len(self.cases) or 1
        return {k: sum(c.checks[k] for c in self.cases) / n for k in CHECKS}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ok(self) -> bool:
        return bool(self.cases) and self.pass_rate >= self.min_pass_rate


def load_eval_sets(directory: Path = EVALS_DIR) -> dict[str, EvalSet]:
    """Every `*.yaml` in `directory` by template id; a broken file raises a ContentError that
    names the file and the field."""
    sets: dict[str, EvalSet] = {}
    for path in sorted(directory.glob("*.yaml")):
        loaded = load_eval_set(path)
        if loaded.template in sets:
            raise ContentError(f"{path.name}:template", f"{loaded.template!r} has two eval sets")
        sets[loaded.template] = loaded
    return sets


def load_eval_set(path: Path) -> EvalSet:
    try:
        loaded = EvalSet.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
    except yaml.YAMLError as exc:
        raise ContentError(path.name, f"invalid YAML ({exc})") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ContentError(f"{path.name}:{where}" if where else path.name, first["msg"]) from exc
    for i, case in enumerate(loaded.cases):
        if case.request.template_id != loaded.template:
            raise ContentError(
                f"{path.name}:cases.{i}.request.template_id",
                f"is {case.request.template_id!r}, expected {loaded.template!r}",
            )
    return loaded


class Failure(NamedTuple):
    check: Check
    message: str


def tone_failures(text: str, rules: ToneRules) -> list[str]:
    allowed = set(rules.allowed_caps)
    shouted = sorted(
        {
            w
            for w in _LETTERS.findall(text)
            if len(w) >= rules.caps_min_letters and w.isupper() and w not in allowed
        }
    )
    failures = [f"tone: shouting {shouted}"] if shouted else []
    marks = text.count("!")
    if marks > rules.max_exclamations:
        failures.append(f"tone: {marks} exclamation marks > {rules.max_exclamations}")
    folded = text.casefold().replace("\u2019", "'")
    failures += [
        f"tone: pressure phrase {p!r}"
        for p in rules.pressure_phrases
        if re.search(rf"(?<!\w){re.escape(p.casefold())}(?!\w)", folded)
    ]
    return failures


def score_variant(
    variant: GeneratedVariant, checks: EvalChecks, known_doc_ids: set[str]
) -> list[Failure]:
    failures: list[Failure] = []
    text = "\n".join((variant.subject, variant.preheader, variant.body, variant.cta))
    if checks.policy_pass and not variant.guard.passed:
        message = "policy: " + "; ".join(r.rule_id for r in variant.guard.reasons)
        failures.append(Failure("policy", message))
    if checks.citations_valid:
        if not variant.citations:
            failures.append(Failure("citations", "citations: none"))
        unknown = sorted(set(variant.citations) - known_doc_ids)
        if unknown:
            failures.append(Failure("citations", f"citations: unknown documents {unknown}"))
    if checks.max_subject_chars is not None and len(variant.subject) > checks.max_subject_chars:
        message = f"length: subject {len(variant.subject)} > {checks.max_subject_chars}"
        failures.append(Failure("length", message))
    if checks.max_body_chars is not None and len(variant.body) > checks.max_body_chars:
        message = f"length: body {len(variant.body)} > {checks.max_body_chars}"
        failures.append(Failure("length", message))
    failures += [
        Failure("required", f"required: missing {r!r}") for r in checks.required if r not in text
    ]
    # Banned phrases are the brand's own rules, so they count against policy.
    failures += [
        Failure("policy", f"banned: contains {b!r}")
        for b in checks.banned
        if b.lower() in text.lower()
    ]
    failures += [
        Failure("citations", f"cite: missing {d!r}")
        for d in checks.must_cite
        if d not in variant.citations
    ]
    if checks.sms_single_message:
        sent = sms_length(as_sent(variant.body, default_library().get(variant.template_id)))
        if not sent.fits:
            message = f"sms: {sent.units} {sent.encoding} units > {sent.limit}"
            failures.append(Failure("length", message))
    if checks.tone is not None:
        failures += [Failure("tone", m) for m in tone_failures(text, checks.tone)]
    return failures


def check_variant(
    variant: GeneratedVariant, checks: EvalChecks, known_doc_ids: set[str]
) -> list[str]:
    return [f.message for f in score_variant(variant, checks, known_doc_ids)]


class VariantWriter(Protocol):
    """What an eval set runs against: the copywriter agent, or any other writer of variants
    over a knowledge base (whose documents the citations are checked against)."""

    knowledge: KnowledgeBase

    async def generate(self, request: VariantRequest) -> GeneratedVariant: ...


async def run_eval_set(
    copywriter: VariantWriter, eval_set: EvalSet, *, booked_as: str | None = None
) -> EvalReport:
    """Runs every case; the model usage is booked as job `eval`, under `booked_as` (the
    campaign whose first use of the template asked for the evaluation) or the case's own id."""
    with tracer.start_as_current_span("content.prompts_eval") as span:
        known = {c.meta.doc_id for c in copywriter.knowledge.index.all_chunks()}
        results = []
        for case in eval_set.cases:
            if case.request.template_id != eval_set.template:
                raise ContentError(
                    f"{eval_set.template}.{case.id}.template_id",
                    f"is {case.request.template_id!r}, expected {eval_set.template!r}",
                )
            booking: dict[str, str] = {"job": "eval"}
            if booked_as is not None:
                booking["campaign_id"] = booked_as
            variant = await copywriter.generate(case.request.model_copy(update=booking))
            failures = score_variant(variant, eval_set.checks_for(case), known)
            failed = {f.check for f in failures}
            results.append(
                CaseResult(
                    case_id=case.id,
                    passed=not failures,
                    checks={k: k not in failed for k in CHECKS},
                    failures=tuple(f.message for f in failures),
                    subject=variant.subject,
                    attempts=variant.attempts,
                    citations=variant.citations,
                    template_version=variant.template_version,
                    model=variant.model,
                )
            )
        report = EvalReport(
            template=eval_set.template, min_pass_rate=eval_set.min_pass_rate, cases=tuple(results)
        )
        span.set_attributes(
            {
                "content.template_id": eval_set.template,
                "content.eval_passed": report.passed,
                "content.eval_failed": report.failed,
                "content.eval_ok": report.ok,
            }
        )
        return report
