"""A campaign's lift: everyone the policy decided for against the holdout, per metric, with the
interval that suits the metric, and the pre-registered stop rule over the cumulative figures."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict

from tools.measure.decision import CycleMeasurement, GuardrailReading, StopDecision, decide
from tools.measure.design import StopRule
from tools.measure.stats import Estimate, GroupStats, compare_means, compare_proportions

# Per metric: (everyone the policy decided for, the holdout).
MetricStats = Mapping[str, tuple[GroupStats, GroupStats]]


class LiftEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    metric: str
    treated_n: int
    control_n: int
    treated_mean: float
    control_mean: float
    estimate: float
    # None when a group has fewer than two people: no interval can be had.
    ci_low: float | None
    ci_high: float | None
    p_value: float | None
    sequential: bool = False


def estimate(
    metric: str, treated: GroupStats, control: GroupStats, *, sequential: bool = False
) -> Estimate | None:
    """Treated minus control; None while a group has fewer than two people."""
    if treated.n < 2 or control.n < 2:
        return None
    if metric == "conversion":
        # A holdout converts a handful of times per cycle: Wald intervals under-cover there.
        return compare_proportions(
            round(treated.sum),
            treated.n,
            round(control.sum),
            control.n,
            sequential=sequential,
            agresti_caffo=True,
        )
    return compare_means(treated, control, sequential=sequential)


def lift_from(metric: str, est: Estimate) -> LiftEstimate:
    return LiftEstimate(
        metric=metric,
        treated_n=est.n_treat,
        control_n=est.n_control,
        treated_mean=est.mean_treat,
        control_mean=est.mean_control,
        estimate=est.diff,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        p_value=est.p_value,
        sequential=est.sequential,
    )


def lift(metric: str, treated: GroupStats, control: GroupStats) -> LiftEstimate:
    """One cycle's lift; with too few people for an interval, the difference of means alone."""
    est = estimate(metric, treated, control)
    if est is not None:
        return lift_from(metric, est)
    mean_t = treated.sum / treated.n if treated.n else 0.0
    mean_c = control.sum / control.n if control.n else 0.0
    return LiftEstimate(
        metric=metric,
        treated_n=treated.n,
        control_n=control.n,
        treated_mean=mean_t,
        control_mean=mean_c,
        estimate=mean_t - mean_c,
        ci_low=None,
        ci_high=None,
        p_value=None,
    )


def cumulative(
    current: MetricStats, earlier: list[MetricStats]
) -> dict[str, tuple[GroupStats, GroupStats]]:
    """This cycle's statistics merged with every earlier cycle's, metric by metric."""
    total = dict(current)
    for past in earlier:
        for name, (t, c) in past.items():
            if name in total:
                total[name] = (total[name][0].merged(t), total[name][1].merged(c))
    return total


def stop_verdict(
    rule: StopRule, cycle: int, total: MetricStats, primary_metric: str, *, ship: bool = True
) -> tuple[LiftEstimate | None, StopDecision]:
    """The rule applied to the cumulative primary estimate with always-valid intervals (the rule
    looks every cycle); the other metrics are guardrails. `ship=False`: the campaign runs to its
    last cycle even when the lift is proven."""
    estimates = {name: estimate(name, t, c, sequential=True) for name, (t, c) in total.items()}
    primary = estimates[primary_metric]
    if primary is None:
        return None, StopDecision(action="continue", reason="not_yet_conclusive", cycle=cycle)
    guardrails = [
        GuardrailReading(name=n, estimate=e)
        for n, e in estimates.items()
        if n != primary_metric and e is not None
    ]
    decision = decide(rule, [CycleMeasurement(cycle=cycle, primary=primary, guardrails=guardrails)])
    if decision.action == "ship" and not ship:
        done = cycle >= rule.max_cycles
        decision = decision.model_copy(
            update={
                "action": "stop" if done else "continue",
                "reason": "max_cycles" if done else "not_yet_conclusive",
            }
        )
    return lift_from(primary_metric, primary), decision
