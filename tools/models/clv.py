"""Customer lifetime value: BG/NBD (Fader, Hardie & Lee 2005) and Gamma-Gamma spend models.

Both are fitted by maximum likelihood with analytic gradients over log-parameters (L-BFGS-B),
vectorised over customers; identical (x, t_x, T) rows are collapsed into weights first.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from scipy.optimize import minimize
from scipy.special import digamma, gammaln, hyp2f1

from tools.models.errors import ModelInputError
from tools.models.transactions import RfmSummary

tracer = trace.get_tracer("liftloop.models")

FloatArray = npt.NDArray[np.float64]


class BgNbdParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    r: float
    alpha: float
    a: float
    b: float


class GammaGammaParams(BaseModel):
    model_config = ConfigDict(frozen=True)

    p: float
    q: float
    v: float


class BgNbdFit(BaseModel):
    model_config = ConfigDict(frozen=True)

    params: BgNbdParams
    log_likelihood: float
    customers: int
    converged: bool


class GammaGammaFit(BaseModel):
    model_config = ConfigDict(frozen=True)

    params: GammaGammaParams
    log_likelihood: float
    customers: int
    converged: bool


def _as_float(name: str, values: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ModelInputError(name, "must be finite")
    if np.any(arr < 0):
        raise ModelInputError(name, "must not be negative")
    return arr


def _check_rft(x: FloatArray, t_x: FloatArray, T: FloatArray) -> None:
    if not (x.size == t_x.size == T.size) or x.size == 0:
        raise ModelInputError("x", "x, t_x and T must be non-empty and of equal length")
    if np.any(t_x > T + 1e-9):
        raise ModelInputError("t_x", "recency must not exceed the customer's age T")
    if np.any((x == 0) & (t_x > 0)):
        raise ModelInputError("t_x", "must be 0 where x is 0")


def _collapse(*cols: FloatArray) -> tuple[list[FloatArray], FloatArray]:
    """Distinct rows and their counts (a lexsort is much faster than np.unique(axis=0))."""
    order = np.lexsort(cols[::-1])
    sorted_cols = [c[order] for c in cols]
    new = np.zeros(order.size, dtype=bool)
    new[0] = True
    for c in sorted_cols:
        new[1:] |= c[1:] != c[:-1]
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, order.size)).astype(np.float64)
    return [c[starts] for c in sorted_cols], counts


def _bgnbd_ll_grad(
    theta: FloatArray, x: FloatArray, t_x: FloatArray, T: FloatArray, w: FloatArray
) -> tuple[float, FloatArray, FloatArray]:
    r, alpha, a, b = theta
    rx = r + x
    has = x > 0
    log_at = np.log(alpha + T)
    log_atx = np.log(alpha + t_x)
    abx = a + b + x
    a1 = gammaln(rx) - gammaln(r) + r * np.log(alpha)
    a2 = gammaln(a + b) + gammaln(b + x) - gammaln(b) - gammaln(abx)
    a3 = -rx * log_at
    bx1 = np.where(has, b + x - 1.0, 1.0)
    a4 = np.where(has, np.log(a) - np.log(bx1) - rx * log_atx, -np.inf)
    mix = np.logaddexp(a3, a4)
    ll = a1 + a2 + mix
    w3 = np.exp(a3 - mix)
    w4 = 1.0 - w3
    d_r = digamma(rx) - digamma(r) + np.log(alpha) - w3 * log_at - w4 * log_atx
    d_alpha = r / alpha - rx * (w3 / (alpha + T) + w4 / (alpha + t_x))
    psi_ab, psi_abx = digamma(a + b), digamma(abx)
    d_a = psi_ab - psi_abx + w4 / a
    d_b = psi_ab + digamma(b + x) - digamma(b) - psi_abx - w4 / bx1
    grad = np.array([w @ d_r, w @ d_alpha, w @ d_a, w @ d_b])
    return float(w @ ll), grad, ll


def _maximise(
    fun: object, start: FloatArray, args: tuple[FloatArray, ...]
) -> tuple[FloatArray, float, bool]:
    def negative(log_theta: FloatArray) -> tuple[float, FloatArray]:
        theta = np.exp(log_theta)
        ll, grad, _ = fun(theta, *args)  # type: ignore[operator]
        if not np.isfinite(ll):
            return 1e300, np.zeros_like(log_theta)
        # Chain rule for the log-parameterisation keeps every parameter positive.
        return -ll, -(grad * theta)

    result = minimize(
        negative,
        np.log(start),
        jac=True,
        method="L-BFGS-B",
        bounds=[(-20.0, 20.0)] * start.size,
        options={"maxiter": 2000, "ftol": 1e-14, "gtol": 1e-9},
    )
    return np.exp(result.x), float(-result.fun), bool(result.success)


def fit_bgnbd(x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> BgNbdFit:
    """Fit BG/NBD by maximum likelihood to repeat-purchase counts, recency and age."""
    xs, ts, Ts = _as_float("x", x), _as_float("t_x", t_x), _as_float("T", T)
    _check_rft(xs, ts, Ts)
    with tracer.start_as_current_span("models.clv.fit_bgnbd") as span:
        (ux, ut, uT), w = _collapse(xs, ts, Ts)
        theta, ll, ok = _maximise(_bgnbd_ll_grad, np.array([1.0, 1.0, 1.0, 1.0]), (ux, ut, uT, w))
        span.set_attribute("models.customers", int(xs.size))
        span.set_attribute("models.distinct_rows", int(ux.size))
        span.set_attribute("models.converged", ok)
        span.set_attribute("models.log_likelihood", ll)
    r, alpha, a, b = (float(v) for v in theta)
    return BgNbdFit(
        params=BgNbdParams(r=r, alpha=alpha, a=a, b=b),
        log_likelihood=ll,
        customers=int(xs.size),
        converged=ok,
    )


def _gg_ll_grad(
    theta: FloatArray, x: FloatArray, m: FloatArray, w: FloatArray, log_xm: FloatArray
) -> tuple[float, FloatArray, FloatArray]:
    p, q, v = theta
    px = p * x
    xm_v = x * m + v
    log_xm_v = np.log(xm_v)
    psi_pxq = digamma(px + q)
    # log_xm = log(x) + log(m) is constant across iterations, so it is computed once.
    ll = (
        gammaln(px + q) - gammaln(px) - gammaln(q) + q * np.log(v)
        + px * log_xm - np.log(m) - (px + q) * log_xm_v
    )  # fmt: skip
    d_p = x * (psi_pxq - digamma(px) + log_xm - log_xm_v)
    d_q = psi_pxq - digamma(q) + np.log(v) - log_xm_v
    d_v = q / v - (px + q) / xm_v
    return float(w @ ll), np.array([w @ d_p, w @ d_q, w @ d_v]), ll


def fit_gamma_gamma(x: npt.ArrayLike, mean_value: npt.ArrayLike) -> GammaGammaFit:
    """Fit the Gamma-Gamma spend model on customers with at least one repeat purchase."""
    xs, ms = _as_float("x", x), _as_float("mean_value", mean_value)
    if xs.size != ms.size:
        raise ModelInputError("mean_value", "must have the same length as x")
    keep = (xs > 0) & (ms > 0)
    if not np.any(keep):
        raise ModelInputError("x", "no customer with a repeat purchase of positive value")
    with tracer.start_as_current_span("models.clv.fit_gamma_gamma") as span:
        (ux, um), w = _collapse(xs[keep], ms[keep])
        log_xm = np.log(ux) + np.log(um)
        theta, ll, ok = _maximise(_gg_ll_grad, np.array([1.0, 1.0, 1.0]), (ux, um, w, log_xm))
        span.set_attribute("models.customers", int(keep.sum()))
        span.set_attribute("models.converged", ok)
    p, q, v = (float(t) for t in theta)
    return GammaGammaFit(
        params=GammaGammaParams(p=p, q=q, v=v),
        log_likelihood=ll,
        customers=int(keep.sum()),
        converged=ok,
    )


def fit_summary(summary: RfmSummary) -> tuple[BgNbdFit, GammaGammaFit]:
    """Both CLV models on one calibration summary."""
    return (
        fit_bgnbd(summary.x, summary.t_x, summary.T),
        fit_gamma_gamma(summary.x, summary.mean_value),
    )


def _alive_odds(p: BgNbdParams, x: FloatArray, t_x: FloatArray, T: FloatArray) -> FloatArray:
    has = x > 0
    bx1 = np.where(has, p.b + x - 1.0, 1.0)
    log_term = np.log(p.a) - np.log(bx1) + (p.r + x) * (np.log(p.alpha + T) - np.log(p.alpha + t_x))
    return np.where(has, np.exp(log_term), 0.0)


def probability_alive(
    params: BgNbdParams, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> FloatArray:
    """P(the customer is still active at T | x, t_x, T)."""
    xs, ts, Ts = _as_float("x", x), _as_float("t_x", t_x), _as_float("T", T)
    _check_rft(xs, ts, Ts)
    return 1.0 / (1.0 + _alive_odds(params, xs, ts, Ts))


def expected_purchases(
    params: BgNbdParams, t: float, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike
) -> FloatArray:
    """E[purchases in (T, T + t] | x, t_x, T] (FHL 2005, eq. 10)."""
    if not t >= 0:
        raise ModelInputError("t", "must be a non-negative horizon")
    xs, ts, Ts = _as_float("x", x), _as_float("t_x", t_x), _as_float("T", T)
    _check_rft(xs, ts, Ts)
    p = params
    ratio = (p.alpha + Ts) / (p.alpha + Ts + t)
    z = t / (p.alpha + Ts + t)
    hyp = hyp2f1(p.r + xs, p.b + xs, p.a + p.b + xs - 1.0, z)
    head = (p.a + p.b + xs - 1.0) / (p.a - 1.0)
    out: FloatArray = head * (1.0 - ratio ** (p.r + xs) * hyp) / (1.0 + _alive_odds(p, xs, ts, Ts))
    return out


def expected_spend(
    params: GammaGammaParams, x: npt.ArrayLike, mean_value: npt.ArrayLike
) -> FloatArray:
    """E[value of a future transaction | x, mean value] from the Gamma-Gamma model."""
    xs, ms = _as_float("x", x), _as_float("mean_value", mean_value)
    p = params
    if p.q <= 1.0:
        raise ModelInputError("params.q", "must exceed 1 for a finite expectation")
    out: FloatArray = p.p * (p.v + xs * ms) / (p.p * xs + p.q - 1.0)
    return out


def customer_lifetime_value(
    bgnbd: BgNbdParams,
    gamma_gamma: GammaGammaParams,
    summary: RfmSummary,
    *,
    periods: int = 12,
    period_weeks: float = 52.0 / 12.0,
    discount_rate: float = 0.01,
    margin: float = 1.0,
) -> FloatArray:
    """Discounted expected margin over `periods` future periods, per customer.

    Each period's expected purchases (the increment of the cumulative expectation) are
    valued at the Gamma-Gamma expected spend times `margin` and discounted per period.
    """
    if periods < 1:
        raise ModelInputError("periods", "must be at least 1")
    if not period_weeks > 0:
        raise ModelInputError("period_weeks", "must be positive")
    if not 0 <= discount_rate < 1:
        raise ModelInputError("discount_rate", "must be in [0, 1)")
    if not margin > 0:
        raise ModelInputError("margin", "must be positive")
    with tracer.start_as_current_span("models.clv.lifetime_value") as span:
        span.set_attribute("models.customers", len(summary.customer_ids))
        span.set_attribute("models.periods", periods)
        spend = expected_spend(gamma_gamma, summary.x, summary.mean_value) * margin
        value = np.zeros_like(spend)
        previous = np.zeros_like(spend)
        for i in range(1, periods + 1):
            cumulative = expected_purchases(
                bgnbd, i * period_weeks, summary.x, summary.t_x, summary.T
            )
            value += (cumulative - previous) * spend / (1.0 + discount_rate) ** i
            previous = cumulative
        return value
