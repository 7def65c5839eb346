"""The prompt library's release gate: campaigns use a prompt version only once its eval set has
passed with the model that will run it. A release is an evaluation recorded for exactly one
template id, version, content digest and model, so editing a prompt without a new version, or
switching models, asks for a new evaluation."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import JSON, Column, Index
from sqlalchemy.engine import Engine
from sqlmodel import Field, Session, SQLModel, col, select

from tools.content.errors import ContentError
from tools.content.evals import CHECKS, Check, EvalReport
from tools.content.models import GuardReason
from tools.content.prompts import PromptTemplate

T = TypeVar("T")
# Runs the template's eval set with the model in question and returns its report.
Evaluate = Callable[[], EvalReport | Awaitable[EvalReport]]


class PromptEvaluation(SQLModel, table=True):
    __tablename__ = "prompt_evaluations"
    # The gate's one query: the latest pass of one (template, version, digest, model).
    __table_args__ = (
        Index(
            "ix_prompt_evaluations_release",
            "template_id",
            "version",
            "template_digest",
            "model",
            "passed",
            "evaluated_at",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    template_id: str
    version: str
    template_digest: str
    model: str
    passed: bool
    pass_rate: float
    min_pass_rate: float
    policy_rate: float
    required_rate: float
    citations_rate: float
    length_rate: float
    tone_rate: float
    cases_passed: int
    cases_failed: int
    # Per failing case, its failure messages: what to fix, without running the set again.
    failures: dict[str, list[str]] = Field(
        default_factory=dict, sa_column=Column(JSON, nullable=False)
    )
    evaluated_at: datetime

    @property
    def rates(self) -> dict[Check, float]:
        return {k: float(getattr(self, f"{k}_rate")) for k in CHECKS}

    @property
    def evaluated_at_utc(self) -> datetime:
        # SQLite hands datetimes back without their offset; they were written in UTC.
        at = self.evaluated_at
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


class ReleaseCheck(BaseModel):
    """The gate's answer for one (template version, digest, model)."""

    model_config = ConfigDict(frozen=True)

    template_id: str
    version: str
    digest: str
    model: str
    released: bool
    # True when this check ran the evaluation because no passing one was recorded.
    evaluated: bool
    evaluation_id: int | None
    # Empty when released; else `prompt.unreleased` and a `prompt.eval.<check>` per failed check.
    reasons: tuple[GuardReason, ...] = ()


def record_evaluation(
    engine: Engine, template: PromptTemplate, model: str, report: EvalReport
) -> PromptEvaluation:
    """Store one evaluation of `template` with `model`. A report that was not produced by this
    template version and model is refused, so no pass is recorded that did not happen."""
    _check_report(template, model, report)
    rates = report.rates
    row = PromptEvaluation(
        template_id=template.id,
        version=template.version,
        template_digest=template.digest,
        model=model,
        passed=report.ok,
        pass_rate=report.pass_rate,
        min_pass_rate=report.min_pass_rate,
        policy_rate=rates["policy"],
        required_rate=rates["required"],
        citations_rate=rates["citations"],
        length_rate=rates["length"],
        tone_rate=rates["tone"],
        cases_passed=report.passed,
        cases_failed=report.failed,
        failures={c.case_id: list(c.failures) for c in report.cases if not c.passed},
        evaluated_at=datetime.now(UTC),
    )
    with Session(engine, expire_on_commit=False) as session:
        session.add(row)
        session.commit()
    return row


def _check_report(template: PromptTemplate, model: str, report: EvalReport) -> None:
    if report.template != template.id:
        raise ContentError("report.template", f"is {report.template!r}, not {template.id!r}")
    for case in report.cases:
        if case.template_version != template.version:
            raise ContentError(
                f"report.cases.{case.case_id}.template_version",
                f"is {case.template_version!r}, not {template.version!r}",
            )
        if case.model != model:
            raise ContentError(
                f"report.cases.{case.case_id}.model", f"is {case.model!r}, not {model!r}"
            )


def release_for(engine: Engine, template: PromptTemplate, model: str) -> PromptEvaluation | None:
    """The latest passing evaluation of exactly this template id, version, digest and model."""
    query = (
        select(PromptEvaluation)
        .where(
            col(PromptEvaluation.template_id) == template.id,
            col(PromptEvaluation.version) == template.version,
            col(PromptEvaluation.template_digest) == template.digest,
            col(PromptEvaluation.model) == model,
            col(PromptEvaluation.passed).is_(True),
        )
        .order_by(col(PromptEvaluation.evaluated_at).desc(), col(PromptEvaluation.id).desc())
        .limit(1)
    )
    with Session(engine) as session:
        return session.exec(query).first()


def latest_evaluations(engine: Engine) -> list[PromptEvaluation]:
    """The latest evaluation of each (template, version, digest, model), by template id and
    newest first."""
    query = select(PromptEvaluation).order_by(
        col(PromptEvaluation.evaluated_at).desc(), col(PromptEvaluation.id).desc()
    )
    with Session(engine) as session:
        rows = session.exec(query).all()
    latest: dict[tuple[str, str, str, str], PromptEvaluation] = {}
    for row in rows:
        latest.setdefault((row.template_id, row.version, row.template_digest, row.model), row)
    return sorted(latest.values(), key=lambda r: r.template_id)


def ensure_released(
    engine: Engine, template: PromptTemplate, model: str, evaluate: Evaluate
) -> ReleaseCheck:
    """May `template` be used with `model` in a campaign? Call before the copywriter writes
    with a template; block the variant with `reasons` unless `released`.

    - A passing evaluation of this id, version, digest and model is on record: one indexed
      SELECT, `evaluate` is not called.
    - Otherwise `evaluate()` (sync, or async: run on an event loop of its own, in a thread when
      the caller is inside one) runs the template's eval set with `model`; its report is
      recorded and the answer follows from it. Each call without a pass on record evaluates
      again, so a fixed knowledge base or a flaky model gets another chance; callers that judge
      many variants should check once per template and model.
    - An exception from `evaluate` (a model outage, a broken eval set) propagates and nothing is
      recorded: an outage is not a failed evaluation.
    - Two workers racing on first use both evaluate and both record; each records only what
      its own report shows (`record_evaluation` refuses a report of another version or model).
    """
    digest = template.digest
    found = release_for(engine, template, model)
    if found is not None:
        return ReleaseCheck(
            template_id=template.id,
            version=template.version,
            digest=digest,
            model=model,
            released=True,
            evaluated=False,
            evaluation_id=found.id,
        )
    report = _evaluated(evaluate)
    row = record_evaluation(engine, template, model, report)
    return ReleaseCheck(
        template_id=template.id,
        version=template.version,
        digest=digest,
        model=model,
        released=row.passed,
        evaluated=True,
        evaluation_id=row.id,
        reasons=() if row.passed else unreleased_reasons(template, model, report),
    )


def unreleased_reasons(
    template: PromptTemplate, model: str, report: EvalReport
) -> tuple[GuardReason, ...]:
    n = len(report.cases)
    details = "; ".join(
        f"{c.case_id}: {', '.join(c.failures)}" for c in report.cases if not c.passed
    )
    reasons = [
        GuardReason(
            rule_id="prompt.unreleased",
            message=(
                f"{template.id} {template.version} ({template.digest[:12]}) failed its "
                f"evaluation with {model}: {report.passed} of {n} cases passed, "
                f"{report.min_pass_rate:.0%} needed ({details}); "
                f"see `liftloop prompts eval {template.id}`"
            ),
        )
    ]
    for check, rate in report.rates.items():
        if rate < 1.0:
            failed = [c.case_id for c in report.cases if not c.checks[check]]
            reasons.append(
                GuardReason(
                    rule_id=f"prompt.eval.{check}",
                    message=f"{check} passed in {rate:.0%} of cases; failed: {', '.join(failed)}",
                )
            )
    return tuple(reasons)


def _evaluated(evaluate: Evaluate) -> EvalReport:
    result = evaluate()
    if isinstance(result, EvalReport):
        return result
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(_wait(result))
    # asyncio.run refuses to nest; a first evaluation may block the caller's loop this once.
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, _wait(result)).result()


async def _wait(awaitable: Awaitable[T]) -> T:
    return await awaitable
