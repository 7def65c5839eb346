"""Experiment design: power, sample size and MDE, the pre-registration record.

Arms are assigned from the CDP's stored experiment bucket (`tools.cdp.people.profile_buckets`),
which survives identity merges.
"""

from __future__ import annotations

import math
from typing import Literal

from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import optimize
from scipy import stats as sps

from tools.measure.errors import MeasureInputError

tracer = trace.get_tracer("liftloop.measure")


def _z(alpha: float, power: float) -> tuple[float, float]:
    if not 0.0 < alpha < 1.0:
        raise MeasureInputError("alpha", f"must lie in (0, 1), got {alpha}")
    if not 0.0 < power < 1.0:
        raise MeasureInputError("power", f"must lie in (0, 1), got {power}")
    return float(sps.norm.ppf(1 - alpha / 2)), float(sps.norm.ppf(power))


def _check_baseline(baseline: float) -> None:
    if not 0.0 < baseline < 1.0:
        raise MeasureInputError("baseline", f"must be a proportion in (0, 1), got {baseline}")


def sample_size_proportions(
    baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Per-arm n to detect an absolute change `mde` from `baseline` (two-sided, equal arms)."""
    _check_baseline(baseline)
    z_a, z_b = _z(alpha, power)
    p2 = baseline + mde
    if mde == 0.0 or not 0.0 < p2 < 1.0:
        raise MeasureInputError("mde", f"baseline + mde must lie in (0, 1) and mde ≠ 0, got {p2}")
    p_bar = (baseline + p2) / 2
    num = z_a * math.sqrt(2 * p_bar * (1 - p_bar)) + z_b * math.sqrt(
        baseline * (1 - baseline) + p2 * (1 - p2)
    )
    return math.ceil(num * num / (mde * mde))


def power_proportions(baseline: float, mde: float, n_per_arm: int, alpha: float = 0.05) -> float:
    """Power of the two-sided test with `n_per_arm` per arm for an absolute change `mde`."""
    _check_baseline(baseline)
    if n_per_arm < 2:
        raise MeasureInputError("n_per_arm", "must be at least 2")
    p2 = baseline + mde
    if not 0.0 < p2 < 1.0:
        raise MeasureInputError("mde", f"baseline + mde must lie in (0, 1), got {p2}")
    z_a = float(sps.norm.ppf(1 - alpha / 2))
    p_bar = (baseline + p2) / 2
    sd_alt = math.sqrt(baseline * (1 - baseline) + p2 * (1 - p2))
    z = (abs(mde) * math.sqrt(n_per_arm) - z_a * math.sqrt(2 * p_bar * (1 - p_bar))) / sd_alt
    return float(sps.norm.cdf(z))


def mde_proportions(
    baseline: float, n_per_arm: int, alpha: float = 0.05, power: float = 0.8
) -> float:
    """Smallest absolute increase over `baseline` detectable with `n_per_arm` per arm."""
    _check_baseline(baseline)
    _z(alpha, power)
    if n_per_arm < 2:
        raise MeasureInputError("n_per_arm", "must be at least 2")
    hi = 1.0 - baseline - 1e-12
    if power_proportions(baseline, hi, n_per_arm, alpha) < power:
        raise MeasureInputError("n_per_arm", "too small to reach the power at any effect size")
    return float(
        optimize.brentq(
            lambda d: power_proportions(baseline, d, n_per_arm, alpha) - power, 1e-12, hi
        )
    )


def sample_size_means(sd: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int:
    """Per-arm n to detect an absolute mean change `mde` when the metric has std dev `sd`."""
    if sd <= 0:
        raise MeasureInputError("sd", "must be positive")
    if mde == 0:
        raise MeasureInputError("mde", "must not be zero")
    z_a, z_b = _z(alpha, power)
    return math.ceil(2 * ((z_a + z_b) * sd / mde) ** 2)


def mde_means(sd: float, n_per_arm: int, alpha: float = 0.05, power: float = 0.8) -> float:
    """Smallest absolute mean change detectable with `n_per_arm` per arm (std dev `sd`)."""
    if sd <= 0:
        raise MeasureInputError("sd", "must be positive")
    if n_per_arm < 2:
        raise MeasureInputError("n_per_arm", "must be at least 2")
    z_a, z_b = _z(alpha, power)
    return (z_a + z_b) * sd * math.sqrt(2 / n_per_arm)


class PowerResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    baseline: float
    mde: float
    relative_mde: float
    alpha: float
    power: float
    n_per_arm: int
    n_total: int


def plan_proportion_test(
    baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8, arms: int = 2
) -> PowerResult:
    """Sample size for a conversion-rate test, as the CLI reports it."""
    with tracer.start_as_current_span("measure.plan_proportion_test") as span:
        if arms < 2:
            raise MeasureInputError("arms", "need at least 2")
        n = sample_size_proportions(baseline, mde, alpha, power)
        span.set_attributes({"measure.n_per_arm": n, "measure.arms": arms})
        return PowerResult(
            baseline=baseline,
            mde=mde,
            relative_mde=mde / baseline,
            alpha=alpha,
            power=power,
            n_per_arm=n,
            n_total=n * arms,
        )


class MeanPowerResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    sd: float
    mde: float
    alpha: float
    power: float
    n_per_arm: int
    n_total: int


def plan_mean_test(
    sd: float, mde: float, alpha: float = 0.05, power: float = 0.8, arms: int = 2
) -> MeanPowerResult:
    """Sample size for a test of a mean metric (revenue, margin), as the CLI reports it."""
    with tracer.start_as_current_span("measure.plan_mean_test") as span:
        if arms < 2:
            raise MeasureInputError("arms", "need at least 2")
        n = sample_size_means(sd, mde, alpha, power)
        span.set_attributes({"measure.n_per_arm": n, "measure.arms": arms})
        return MeanPowerResult(
            sd=sd, mde=mde, alpha=alpha, power=power, n_per_arm=n, n_total=n * arms
        )


class MdeResult(BaseModel):
    """The smallest effect a planned sample detects: absolute, and relative to a baseline
    conversion rate (None for a mean metric)."""

    model_config = ConfigDict(frozen=True)
    baseline: float | None
    sd: float | None
    n_per_arm: int
    alpha: float
    power: float
    mde: float
    relative_mde: float | None


def plan_mde(
    n_per_arm: int,
    *,
    baseline: float | None = None,
    sd: float | None = None,
    alpha: float = 0.05,
    power: float = 0.8,
) -> MdeResult:
    """MDE of a conversion rate (`baseline`) or of a mean metric (`sd`), as the CLI reports it."""
    with tracer.start_as_current_span("measure.plan_mde") as span:
        if baseline is not None and sd is None:
            mde = mde_proportions(baseline, n_per_arm, alpha, power)
        elif sd is not None and baseline is None:
            mde = mde_means(sd, n_per_arm, alpha, power)
        else:
            raise MeasureInputError("baseline", "give a baseline rate or a standard deviation")
        span.set_attributes({"measure.n_per_arm": n_per_arm, "measure.mde": mde})
        return MdeResult(
            baseline=baseline,
            sd=sd,
            n_per_arm=n_per_arm,
            alpha=alpha,
            power=power,
            mde=mde,
            relative_mde=mde / baseline if baseline is not None else None,
        )


class StopRule(BaseModel):
    """A pre-registered rule the measure stage applies after each cycle.

    Intervals the rule reads should be always-valid (sequential) since it looks every cycle.
    """

    model_config = ConfigDict(frozen=True)
    ship_when: Literal["lift_ci_low_above_zero"] = "lift_ci_low_above_zero"
    min_cycles: int = Field(default=3, ge=1)
    max_cycles: int = Field(default=14, ge=1)
    # Stop as futile once the interval rules out any effect at least this large (absolute).
    futility_max_effect: float | None = None
    stop_on_harm: bool = True

    @model_validator(mode="after")
    def _cycles(self) -> StopRule:
        if self.max_cycles < self.min_cycles:
            raise MeasureInputError("max_cycles", "must be at least min_cycles")
        return self
