"""The measure stage's continue / ship / stop decision under a pre-registered rule."""

from __future__ import annotations

from typing import Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field

from tools.measure.design import StopRule
from tools.measure.errors import MeasureInputError
from tools.measure.stats import Estimate

tracer = trace.get_tracer("liftloop.measure")


class GuardrailReading(BaseModel):
    model_config = ConfigDict(frozen=True)
    name: str
    estimate: Estimate
    higher_is_better: bool = True

    @property
    def harmed(self) -> bool:
        if self.higher_is_better:
            return self.estimate.ci_high < 0.0
        return self.estimate.ci_low > 0.0


class CycleMeasurement(BaseModel):
    """Cumulative estimates after one cycle (treatment vs holdout on the primary metric)."""

    model_config = ConfigDict(frozen=True)
    cycle: int = Field(ge=1)
    primary: Estimate
    guardrails: list[GuardrailReading] = Field(default_factory=list)


class StopDecision(BaseModel):
    model_config = ConfigDict(frozen=True)
    action: Literal["continue", "ship", "stop"]
    reason: Literal[
        "guardrail_harmed",
        "primary_harmed",
        "lift_ci_low_above_zero",
        "futile",
        "max_cycles",
        "not_yet_conclusive",
    ]
    cycle: int
    detail: str = ""


def decide(rule: StopRule, history: list[CycleMeasurement]) -> StopDecision:
    """Apply the rule to the latest cycle; harm stops at once, shipping waits for min_cycles."""
    with tracer.start_as_current_span("measure.decide") as span:
        if not history:
            raise MeasureInputError("history", "no cycle measured yet")
        cycles = [h.cycle for h in history]
        if cycles != sorted(cycles) or len(set(cycles)) != len(cycles):
            raise MeasureInputError("history", "cycles must be distinct and in order")
        decision = _decide(rule, history[-1])
        span.set_attributes(
            {
                "measure.cycle": decision.cycle,
                "measure.action": decision.action,
                "measure.reason": decision.reason,
            }
        )
        return decision


def _decide(rule: StopRule, last: CycleMeasurement) -> StopDecision:
    cycle, est = last.cycle, last.primary
    harmed = [g.name for g in last.guardrails if g.harmed]
    if rule.stop_on_harm and harmed:
        return StopDecision(
            action="stop", reason="guardrail_harmed", cycle=cycle, detail=", ".join(harmed)
        )
    if rule.stop_on_harm and est.ci_high < 0.0:
        return StopDecision(action="stop", reason="primary_harmed", cycle=cycle)
    if cycle >= rule.min_cycles:
        if est.ci_low > 0.0:
            return StopDecision(action="ship", reason="lift_ci_low_above_zero", cycle=cycle)
        if rule.futility_max_effect is not None and est.ci_high < rule.futility_max_effect:
            return StopDecision(action="stop", reason="futile", cycle=cycle)
    if cycle >= rule.max_cycles:
        return StopDecision(action="stop", reason="max_cycles", cycle=cycle)
    return StopDecision(action="continue", reason="not_yet_conclusive", cycle=cycle)
