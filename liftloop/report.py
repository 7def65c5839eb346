"""A campaign's figures over its cycles: the report built from the measure stage's stored cycle
results, and per-cycle lift estimates pooled into one campaign figure."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from liftloop.loop.tables import CycleResult
from tools.measure.decision import StopDecision
from tools.measure.lift import LiftEstimate

if TYPE_CHECKING:  # the report's module loads matplotlib; the demo imports this one
    from tools.measure.report import CampaignReportInput

_Z = 1.959963984540054


class PooledLift(BaseModel):
    metric: str
    estimate: float
    ci_low: float
    ci_high: float
    true_lift: float | None = None
    cycles: int


def pool_lifts(
    metric: str, estimates: list[LiftEstimate], truths: list[float | None]
) -> PooledLift:
    """Inverse-variance weighting of the cycles' estimates (each cycle is its own randomised
    comparison); the true lift is pooled with the same weights."""
    weights = []
    for e in estimates:
        se = (
            (e.ci_high - e.ci_low) / (2 * _Z)
            if e.ci_low is not None and e.ci_high is not None
            else 0.0
        )
        weights.append(1.0 / se**2 if se > 0 else 0.0)
    total = sum(weights)
    if total == 0:
        return PooledLift(
            metric=metric,
            estimate=math.nan,
            ci_low=-math.inf,
            ci_high=math.inf,
            cycles=len(estimates),
        )
    est = sum(w * e.estimate for w, e in zip(weights, estimates, strict=True)) / total
    se = math.sqrt(1.0 / total)
    true = None
    if truths and all(t is not None for t in truths):
        true = sum(w * t for w, t in zip(weights, truths, strict=True) if t is not None) / total
    return PooledLift(
        metric=metric,
        estimate=est,
        ci_low=est - _Z * se,
        ci_high=est + _Z * se,
        true_lift=true,
        cycles=len(estimates),
    )


def _decision(cycle: int, result: dict[str, Any]) -> StopDecision | None:
    try:
        return StopDecision(
            action=result.get("decision", "continue"),
            reason=result.get("decision_reason", ""),
            cycle=cycle,
        )
    except ValidationError:  # a result stored before the stop rule recorded its reason
        return None


def campaign_report_input(
    engine: Engine, campaign_id: str, *, generated_at: datetime | None = None
) -> CampaignReportInput | None:
    """What `tools.measure.report` draws for a campaign, from the cycle results its measure stage
    stored: the cumulative, always-valid primary lift after each cycle (what the stop rule
    read), the arm shares of each cycle's decisions (the holdout included) and the stop rule's
    latest verdict. None while no cycle has been measured."""
    from tools.measure.report import ArmCounts, CampaignReportInput, LiftPoint

    with engine.connect() as conn:
        rows = conn.execute(
            select(CycleResult.cycle, CycleResult.result)
            .where(col(CycleResult.campaign_id) == campaign_id)
            .order_by(col(CycleResult.cycle))
        ).all()
    if not rows:
        return None
    lift: list[LiftPoint] = []
    arms: list[ArmCounts] = []
    metric = ""
    for cycle, result in rows:
        cumulative = result.get("cumulative")
        if cumulative is not None:
            est = LiftEstimate.model_validate(cumulative)
            metric = est.metric
            if est.ci_low is not None and est.ci_high is not None:
                lift.append(
                    LiftPoint(
                        cycle=cycle, diff=est.estimate, ci_low=est.ci_low, ci_high=est.ci_high
                    )
                )
        counts = {"holdout": int(result.get("held_out", 0))}
        for arm, by_metric in sorted(result.get("per_arm", {}).items()):
            counts[arm] = int(next(iter(by_metric.values()))["treated_n"]) if by_metric else 0
        arms.append(ArmCounts(cycle=cycle, counts=counts))
    last_cycle, last = rows[-1]
    return CampaignReportInput(
        campaign_id=campaign_id,
        title=f"Campaign {campaign_id}",
        metric=(metric or "primary metric").replace("_", " "),
        generated_at=generated_at or datetime.now(UTC),
        lift=lift,
        arms=arms,
        decision=_decision(last_cycle, last),
    )
