"""Pooling per-cycle lift estimates into one campaign figure."""

from __future__ import annotations

import math

from pydantic import BaseModel

from tools.measure.lift import LiftEstimate

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
