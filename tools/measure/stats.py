"""Two-group comparisons from sufficient statistics: Welch, proportions, CUPED, sequential.

Everything works from per-group sums (n, Σy, Σy², and optionally a pre-period covariate's Σx,
Σx², Σxy) so that an activity can aggregate in the database and only a few numbers cross
Temporal. Array helpers reduce to the same sums.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, model_validator
from scipy import stats as sps

from tools.measure.errors import MeasureInputError

tracer = trace.get_tracer("liftloop.measure")

# Total sample size (both groups) at which the always-valid interval is tightest.
DEFAULT_SEQUENTIAL_TUNING_N = 10_000


class GroupStats(BaseModel):
    """Sufficient statistics of one metric in one group (and of an optional covariate)."""

    model_config = ConfigDict(frozen=True)

    n: int = Field(ge=0)
    sum: float
    sum_sq: float = Field(ge=0.0)
    cov_sum: float | None = None
    cov_sum_sq: float | None = None
    cross_sum: float | None = None

    @model_validator(mode="after")
    def _consistent(self) -> GroupStats:
        covariate = (self.cov_sum, self.cov_sum_sq, self.cross_sum)
        if any(v is None for v in covariate) and any(v is not None for v in covariate):
            raise MeasureInputError(
                "cov_sum/cov_sum_sq/cross_sum", "give all three covariate sums or none"
            )
        if self.n > 0 and self.sum_sq < self.sum * self.sum / self.n * (1 - 1e-9) - 1e-9:
            raise MeasureInputError("sum_sq", "smaller than sum²/n, so not a sum of squares")
        return self

    @property
    def has_covariate(self) -> bool:
        return self.cov_sum is not None

    @property
    def mean(self) -> float:
        if self.n == 0:
            raise MeasureInputError("n", "group is empty")
        return self.sum / self.n

    @property
    def variance(self) -> float:
        """Sample variance (n − 1 denominator)."""
        if self.n < 2:
            raise MeasureInputError("n", f"need at least 2 observations, got {self.n}")
        return max(self.sum_sq - self.sum * self.sum / self.n, 0.0) / (self.n - 1)

    @classmethod
    def from_values(cls, values: ArrayLike, covariate: ArrayLike | None = None) -> GroupStats:
        y = np.asarray(values, dtype=float)
        if y.ndim != 1:
            raise MeasureInputError("values", "must be one-dimensional")
        if not np.all(np.isfinite(y)):
            raise MeasureInputError("values", "contains NaN or infinite values")
        if covariate is None:
            return cls(n=y.size, sum=float(y.sum()), sum_sq=float(y @ y))
        x = np.asarray(covariate, dtype=float)
        if x.shape != y.shape:
            raise MeasureInputError("covariate", f"shape {x.shape} differs from values {y.shape}")
        if not np.all(np.isfinite(x)):
            raise MeasureInputError("covariate", "contains NaN or infinite values")
        return cls(
            n=y.size,
            sum=float(y.sum()),
            sum_sq=float(y @ y),
            cov_sum=float(x.sum()),
            cov_sum_sq=float(x @ x),
            cross_sum=float(x @ y),
        )

    @classmethod
    def from_proportion(cls, successes: int, n: int) -> GroupStats:
        if n <= 0:
            raise MeasureInputError("n", "must be positive")
        if not 0 <= successes <= n:
            raise MeasureInputError("successes", f"must lie in [0, n={n}], got {successes}")
        return cls(n=n, sum=float(successes), sum_sq=float(successes))

    def merged(self, other: GroupStats) -> GroupStats:
        """Sums add up, so cycle-level aggregates combine into cumulative ones."""
        both = self.has_covariate and other.has_covariate
        return GroupStats(
            n=self.n + other.n,
            sum=self.sum + other.sum,
            sum_sq=self.sum_sq + other.sum_sq,
            cov_sum=(self.cov_sum or 0.0) + (other.cov_sum or 0.0) if both else None,
            cov_sum_sq=(self.cov_sum_sq or 0.0) + (other.cov_sum_sq or 0.0) if both else None,
            cross_sum=(self.cross_sum or 0.0) + (other.cross_sum or 0.0) if both else None,
        )


class Estimate(BaseModel):
    """Treatment minus control, with its interval, p-value and relative lift."""

    model_config = ConfigDict(frozen=True)

    n_treat: int
    n_control: int
    mean_treat: float
    mean_control: float
    diff: float
    se: float
    ci_low: float
    ci_high: float
    p_value: float
    rel_lift: float | None
    rel_ci_low: float | None
    rel_ci_high: float | None
    chance_to_win: float
    alpha: float
    method: Literal["welch", "proportion"]
    cuped: bool = False
    sequential: bool = False


class _Moments(BaseModel):
    model_config = ConfigDict(frozen=True)
    n: int
    mean: float
    var: float


def _check_alpha(alpha: float) -> None:
    if not 0.0 < alpha < 1.0:
        raise MeasureInputError("alpha", f"must lie in (0, 1), got {alpha}")


def _plain_moments(g: GroupStats, name: str) -> _Moments:
    if g.n < 2:
        raise MeasureInputError(f"{name}.n", f"need at least 2 observations, got {g.n}")
    return _Moments(n=g.n, mean=g.mean, var=g.variance)


def _cuped_moments(treat: GroupStats, control: GroupStats) -> tuple[_Moments, _Moments, float]:
    """CUPED (Deng et al. 2013) with one θ pooled over both groups, from sums alone."""
    for name, g in (("treat", treat), ("control", control)):
        if not g.has_covariate:
            raise MeasureInputError(f"{name}.cov_sum", "CUPED needs the covariate sums")
        if g.n < 2:
            raise MeasureInputError(f"{name}.n", f"need at least 2 observations, got {g.n}")
    n = treat.n + control.n
    sx = (treat.cov_sum or 0.0) + (control.cov_sum or 0.0)
    sxx = (treat.cov_sum_sq or 0.0) + (control.cov_sum_sq or 0.0)
    sxy = (treat.cross_sum or 0.0) + (control.cross_sum or 0.0)
    sy = treat.sum + control.sum
    var_x = (sxx - sx * sx / n) / (n - 1)
    if var_x <= 1e-12 * max(1.0, sxx / n):
        raise MeasureInputError("covariate", "is constant, so it cannot reduce variance")
    theta = ((sxy - sx * sy / n) / (n - 1)) / var_x
    mean_x = sx / n

    def adjust(g: GroupStats) -> _Moments:
        gx, gxx, gxy = g.cov_sum or 0.0, g.cov_sum_sq or 0.0, g.cross_sum or 0.0
        vx = (gxx - gx * gx / g.n) / (g.n - 1)
        cxy = (gxy - gx * g.sum / g.n) / (g.n - 1)
        var = max(g.variance - 2 * theta * cxy + theta * theta * vx, 0.0)
        return _Moments(n=g.n, mean=g.mean - theta * (gx / g.n - mean_x), var=var)

    return adjust(treat), adjust(control), theta


def sequential_half_width(se: float, n_total: int, alpha: float, tuning_n: int) -> float:
    """Half-width of the normal-mixture always-valid interval (Howard et al. 2021, eq. 14).

    The per-observation scale is σ = se·√N; ρ is chosen so the interval is tightest at
    `tuning_n`, as GrowthBook does.
    """
    if tuning_n <= 0:
        raise MeasureInputError("sequential_tuning_n", "must be positive")
    log_a = -2.0 * math.log(alpha)
    rho_sq = (log_a + math.log(log_a + 1.0)) / tuning_n
    n = float(n_total)
    sigma = se * math.sqrt(n)
    factor = 2.0 * (n * rho_sq + 1.0) / (n * n * rho_sq)
    return sigma * math.sqrt(factor * math.log(math.sqrt(n * rho_sq + 1.0) / alpha))


def _sequential_p_value(diff: float, se: float, n_total: int, tuning_n: int, alpha: float) -> float:
    """1 / mixture likelihood ratio at zero, capped at 1: consistent with the interval."""
    log_a = -2.0 * math.log(alpha)
    rho_sq = (log_a + math.log(log_a + 1.0)) / tuning_n
    n = float(n_total)
    if se == 0.0:
        return 0.0 if diff != 0.0 else 1.0
    z_sq = (diff / se) ** 2
    log_lr = -0.5 * math.log1p(n * rho_sq) + 0.5 * z_sq * n * rho_sq / (1.0 + n * rho_sq)
    return float(min(1.0, math.exp(-log_lr)))


def _estimate(
    t: _Moments,
    c: _Moments,
    alpha: float,
    method: Literal["welch", "proportion"],
    *,
    cuped: bool,
    sequential: bool,
    tuning_n: int,
) -> Estimate:
    vt, vc = t.var / t.n, c.var / c.n
    se = math.sqrt(vt + vc)
    diff = t.mean - c.mean
    if sequential:
        half = sequential_half_width(se, t.n + c.n, alpha, tuning_n)
        p_value = _sequential_p_value(diff, se, t.n + c.n, tuning_n, alpha)
    elif method == "proportion":
        half = float(sps.norm.ppf(1 - alpha / 2)) * se
        p_value = float(2 * sps.norm.sf(abs(diff) / se)) if se > 0 else float(diff == 0.0)
    else:
        df = _welch_df(vt, vc, t.n, c.n)
        half = float(sps.t.ppf(1 - alpha / 2, df)) * se
        p_value = float(2 * sps.t.sf(abs(diff) / se, df)) if se > 0 else float(diff == 0.0)
    multiplier = half / se if se > 0 else 0.0
    rel = rel_lo = rel_hi = None
    if c.mean != 0.0:
        # Delta method for mean_t / mean_c − 1 with independent groups.
        rel = t.mean / c.mean - 1.0
        rel_se = math.sqrt(vt / c.mean**2 + t.mean**2 * vc / c.mean**4)
        rel_lo, rel_hi = rel - multiplier * rel_se, rel + multiplier * rel_se
    chance = float(sps.norm.cdf(diff / se)) if se > 0 else float(diff > 0) + 0.5 * (diff == 0)
    return Estimate(
        n_treat=t.n,
        n_control=c.n,
        mean_treat=t.mean,
        mean_control=c.mean,
        diff=diff,
        se=se,
        ci_low=diff - half,
        ci_high=diff + half,
        p_value=min(1.0, p_value),
        rel_lift=rel,
        rel_ci_low=rel_lo,
        rel_ci_high=rel_hi,
        chance_to_win=chance,
        alpha=alpha,
        method=method,
        cuped=cuped,
        sequential=sequential,
    )


def _welch_df(vt: float, vc: float, nt: int, nc: int) -> float:
    denom = vt * vt / (nt - 1) + vc * vc / (nc - 1)
    if denom == 0.0:
        return float(nt + nc - 2)
    return (vt + vc) ** 2 / denom


def compare_means(
    treat: GroupStats,
    control: GroupStats,
    alpha: float = 0.05,
    *,
    cuped: bool = False,
    sequential: bool = False,
    sequential_tuning_n: int = DEFAULT_SEQUENTIAL_TUNING_N,
) -> Estimate:
    """Welch difference of means (or CUPED-adjusted, or always-valid) from sufficient stats."""
    _check_alpha(alpha)
    with tracer.start_as_current_span("measure.compare_means") as span:
        if cuped:
            t, c, theta = _cuped_moments(treat, control)
            span.set_attribute("measure.cuped_theta", theta)
        else:
            t, c = _plain_moments(treat, "treat"), _plain_moments(control, "control")
        est = _estimate(
            t, c, alpha, "welch", cuped=cuped, sequential=sequential, tuning_n=sequential_tuning_n
        )
        span.set_attributes(
            {
                "measure.n_treat": treat.n,
                "measure.n_control": control.n,
                "measure.sequential": sequential,
                "measure.cuped": cuped,
                "measure.p_value": est.p_value,
            }
        )
        return est


def compare_proportions(
    treat_successes: int,
    treat_n: int,
    control_successes: int,
    control_n: int,
    alpha: float = 0.05,
    *,
    sequential: bool = False,
    sequential_tuning_n: int = DEFAULT_SEQUENTIAL_TUNING_N,
    agresti_caffo: bool = False,
) -> Estimate:
    """Difference of two proportions with the unpooled (Wald) normal interval.

    With ``agresti_caffo`` the interval (and p-value) come from the counts plus one success and
    one failure per group (Agresti & Caffo 2000), which keeps its coverage when a group has only
    a handful of conversions — the usual case for a holdout; the point estimate stays the raw
    difference.
    """
    _check_alpha(alpha)
    with tracer.start_as_current_span("measure.compare_proportions") as span:
        moments = []
        add = 1 if agresti_caffo else 0
        for name, k, n in (
            ("treat", treat_successes, treat_n),
            ("control", control_successes, control_n),
        ):
            if n < 2:
                raise MeasureInputError(f"{name}_n", f"need at least 2 observations, got {n}")
            if not 0 <= k <= n:
                raise MeasureInputError(f"{name}_successes", f"must lie in [0, {n}], got {k}")
            p = (k + add) / (n + 2 * add)
            moments.append(_Moments(n=n + 2 * add, mean=p, var=p * (1 - p)))
        est = _estimate(
            moments[0],
            moments[1],
            alpha,
            "proportion",
            cuped=False,
            sequential=sequential,
            tuning_n=sequential_tuning_n,
        )
        if agresti_caffo:
            raw_t, raw_c = treat_successes / treat_n, control_successes / control_n
            est = est.model_copy(
                update={
                    "n_treat": treat_n,
                    "n_control": control_n,
                    "mean_treat": raw_t,
                    "mean_control": raw_c,
                    "diff": raw_t - raw_c,
                    "rel_lift": raw_t / raw_c - 1.0 if raw_c else None,
                }
            )
        span.set_attributes(
            {"measure.n_treat": treat_n, "measure.n_control": control_n, "measure.p": est.p_value}
        )
        return est


class SrmResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    chi2: float
    p_value: float
    mismatch: bool
    observed: list[int]
    expected: list[float]


def srm_check(
    counts: Sequence[int], expected_shares: Sequence[float], threshold: float = 0.001
) -> SrmResult:
    """Sample-ratio mismatch: chi-square goodness of fit of arm counts to planned shares."""
    with tracer.start_as_current_span("measure.srm_check") as span:
        obs = np.asarray(counts, dtype=float)
        shares = np.asarray(expected_shares, dtype=float)
        if obs.size < 2 or obs.shape != shares.shape:
            raise MeasureInputError("counts", "need one count per arm (at least 2) and one share")
        if np.any(obs < 0):
            raise MeasureInputError("counts", "must be non-negative")
        if np.any(shares <= 0):
            raise MeasureInputError("expected_shares", "must be positive")
        if obs.sum() == 0:
            raise MeasureInputError("counts", "all zero")
        expected = shares / shares.sum() * obs.sum()
        chi2 = float(((obs - expected) ** 2 / expected).sum())
        p = float(sps.chi2.sf(chi2, obs.size - 1))
        span.set_attributes({"measure.arms": int(obs.size), "measure.srm_p": p})
        return SrmResult(
            chi2=chi2,
            p_value=p,
            mismatch=p < threshold,
            observed=[int(v) for v in obs],
            expected=[float(v) for v in expected],
        )


def adjust_p_values(
    p_values: Sequence[float], method: Literal["holm", "bonferroni", "none"] = "holm"
) -> list[float]:
    """Family-wise error corrections for several arms against one control."""
    p = np.asarray(p_values, dtype=float)
    if np.any((p < 0) | (p > 1)):
        raise MeasureInputError("p_values", "must lie in [0, 1]")
    m = p.size
    if method == "none" or m == 0:
        return [float(v) for v in p]
    if method == "bonferroni":
        return [float(v) for v in np.minimum(p * m, 1.0)]
    if method != "holm":
        raise MeasureInputError("method", f"unknown correction {method!r}")
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    return [float(v) for v in adjusted]
