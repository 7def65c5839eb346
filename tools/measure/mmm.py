"""Weekly media-mix model fitted in seconds: geometric adstock + saturation inside least squares.

y_t = intercept + trend + Fourier seasonality + controls + Σ_c β_c · sat_c(adstock_c(x_c))_t + ε

The nonlinear parameters (adstock decay and saturation per channel) are found by L-BFGS-B
from several starts; for each candidate the linear part is solved exactly with β_c ≥ 0
(bounded least squares), so the outer search sees a profile objective. Intervals come from
a moving-block residual bootstrap that refits the whole model.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from numpy.typing import NDArray
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field
from scipy import optimize

from tools.allocator.curves import ResponseCurve
from tools.measure.errors import MeasureInputError

tracer = trace.get_tracer("liftloop.measure")

FloatArray = NDArray[np.float64]
_WEEKS_PER_YEAR = 365.25 / 7


class MMMConfig(BaseModel):
    model_config = ConfigDict(frozen=True)

    # logistic: (1 − e^(−λx)) / (1 + e^(−λx)); hill: x / (x + κ) (Hill with shape 1).
    saturation: Literal["logistic", "hill"] = "logistic"
    adstock_max_lag: int = Field(default=8, ge=1, le=52)
    max_decay: float = Field(default=0.9, gt=0.0, lt=1.0)
    fourier_order: int = Field(default=2, ge=0, le=10)
    # Polynomial trend degree in time (0 = none); curved trends bias media effects if ignored.
    trend_degree: int = Field(default=2, ge=0, le=4)
    n_starts: int = Field(default=4, ge=1)
    n_bootstrap: int = Field(default=20, ge=0)
    block_weeks: int = Field(default=4, ge=1)
    seed: int = 0


class MMMData(BaseModel):
    """Weekly series, oldest first; spends in money, the target in the KPI's unit."""

    model_config = ConfigDict(frozen=True)

    dates: list[str]
    target: list[float]
    channels: dict[str, list[float]]
    controls: dict[str, list[float]] = Field(default_factory=dict)


class LiftTest(BaseModel):
    """An experiment's incremental ROAS for one channel, used to calibrate the model."""

    model_config = ConfigDict(frozen=True)
    channel: str
    roas: float
    roas_se: float = Field(gt=0.0)


class Interval(BaseModel):
    model_config = ConfigDict(frozen=True)
    low: float
    high: float


class ChannelFit(BaseModel):
    model_config = ConfigDict(frozen=True)

    channel: str
    spend: float
    contribution: float
    roas: float
    mroas: float
    roas_interval: Interval | None
    mroas_interval: Interval | None
    contribution_interval: Interval | None
    decay: float
    saturation_param: float
    coefficient: float
    # Steady weekly spend → weekly response, ready for the allocator.
    response_curve: ResponseCurve


class FitDiagnostics(BaseModel):
    model_config = ConfigDict(frozen=True)
    n_weeks: int
    n_parameters: int
    r2: float
    mape: float
    nrmse: float
    durbin_watson: float
    fit_seconds: float
    n_bootstrap: int


class MMMResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    config: MMMConfig
    channels: list[ChannelFit]
    baseline_contribution: float
    fitted: list[float]
    diagnostics: FitDiagnostics


def _adstock(x: FloatArray, decay: float, max_lag: int) -> FloatArray:
    """Normalised geometric adstock: weights decay^l / Σ decay^l, l = 0..max_lag − 1."""
    w = decay ** np.arange(max_lag)
    w /= w.sum()
    return np.convolve(x, w)[: x.size]


def _saturate(x: FloatArray, param: float, kind: str) -> FloatArray:
    if kind == "logistic":
        e = np.exp(-param * x)
        return np.asarray((1 - e) / (1 + e), dtype=float)
    return np.asarray(x / (x + param), dtype=float)


class _Problem:
    """Scaled data and the fixed part of the design matrix."""

    def __init__(self, data: MMMData, config: MMMConfig) -> None:
        self.config = config
        self.names = list(data.channels)
        self.y_scale = float(np.abs(np.asarray(data.target)).mean()) or 1.0
        self.y = np.asarray(data.target, dtype=float) / self.y_scale
        self.spend = np.array([data.channels[c] for c in self.names], dtype=float)
        self.x_scale = self.spend.max(axis=1)
        self.x = self.spend / self.x_scale[:, None]
        n = self.y.size
        t = np.arange(n, dtype=float)
        cols = [np.ones(n)]
        scaled_t = 2 * t / max(n - 1, 1) - 1
        cols += [scaled_t**d for d in range(1, config.trend_degree + 1)]
        for k in range(1, config.fourier_order + 1):
            angle = 2 * np.pi * k * t / _WEEKS_PER_YEAR
            cols += [np.sin(angle), np.cos(angle)]
        for values in data.controls.values():
            v = np.asarray(values, dtype=float)
            cols.append((v - v.mean()) / v.std())
        self.base = np.column_stack(cols)

    @property
    def n_channels(self) -> int:
        return len(self.names)

    def bounds(self) -> list[tuple[float, float]]:
        sat = (0.1, 10.0) if self.config.saturation == "logistic" else (0.05, 5.0)
        return [(0.0, self.config.max_decay)] * self.n_channels + [
            (float(np.log(sat[0])), float(np.log(sat[1])))
        ] * self.n_channels

    def media(self, theta: FloatArray, x: FloatArray | None = None) -> FloatArray:
        x = self.x if x is None else x
        c = self.n_channels
        decay, param = theta[:c], np.exp(theta[c:])
        lag = self.config.adstock_max_lag
        kind = self.config.saturation
        return np.array(
            [_saturate(_adstock(x[i], decay[i], lag), param[i], kind) for i in range(c)]
        )

    def solve_linear(self, theta: FloatArray, y: FloatArray) -> tuple[FloatArray, FloatArray]:
        """Coefficients (base then channels, channels ≥ 0) and fitted values."""
        design = np.column_stack([self.base, self.media(theta).T])
        lower = np.r_[np.full(self.base.shape[1], -np.inf), np.zeros(self.n_channels)]
        sol = optimize.lsq_linear(design, y, bounds=(lower, np.inf), method="bvls")
        coef = np.asarray(sol.x, dtype=float)
        return coef, design @ coef

    def contributions(self, theta: FloatArray, coef: FloatArray, scale: float = 1.0) -> FloatArray:
        """Per-channel total contribution in target units, with spend multiplied by `scale`."""
        beta = coef[self.base.shape[1] :]
        media = self.media(theta, self.x * scale)
        return np.asarray((beta[:, None] * media).sum(axis=1) * self.y_scale, dtype=float)


def _objective(
    problem: _Problem, y: FloatArray, lift_tests: Sequence[LiftTest], sigma_sq: float
) -> Callable[[FloatArray], float]:
    def f(theta: FloatArray) -> float:
        coef, fitted = problem.solve_linear(theta, y)
        loss = float(((y - fitted) ** 2).sum())
        if lift_tests:
            roas = problem.contributions(theta, coef) / problem.spend.sum(axis=1)
            for test in lift_tests:
                i = problem.names.index(test.channel)
                loss += sigma_sq * ((roas[i] - test.roas) / test.roas_se) ** 2
        return loss

    return f


def _fit_theta(
    problem: _Problem,
    y: FloatArray,
    starts: Sequence[FloatArray],
    lift_tests: Sequence[LiftTest],
    sigma_sq: float,
) -> FloatArray:
    f = _objective(problem, y, lift_tests, sigma_sq)
    best_theta, best_loss = np.asarray(starts[0]), np.inf
    for start in starts:
        res = optimize.minimize(f, start, method="L-BFGS-B", bounds=problem.bounds())
        if res.fun < best_loss:
            best_theta, best_loss = np.asarray(res.x, dtype=float), float(res.fun)
    return best_theta


def _starts(problem: _Problem, config: MMMConfig) -> list[FloatArray]:
    rng = np.random.default_rng(config.seed)
    lo, hi = np.array(problem.bounds()).T
    mid = (lo + hi) / 2
    return [mid] + [rng.uniform(lo, hi) for _ in range(config.n_starts - 1)]


def _validate(data: MMMData, config: MMMConfig) -> None:
    n = len(data.target)
    if not data.channels:
        raise MeasureInputError("channels", "need at least one channel")
    n_params = (
        1
        + config.trend_degree
        + 2 * config.fourier_order
        + len(data.controls)
        + 3 * len(data.channels)
    )
    # Half a year at least, and two weeks per parameter, or the fit is noise.
    needed = max(26, 2 * n_params)
    if n < needed:
        raise MeasureInputError("rows", f"need at least {needed} weeks for this model, got {n}")
    if len(data.dates) != n:
        raise MeasureInputError("dates", "one date per week is required")
    y = np.asarray(data.target, dtype=float)
    if not np.all(np.isfinite(y)):
        raise MeasureInputError("target", "contains NaN or infinite values")
    if np.ptp(y) == 0:
        raise MeasureInputError("target", "is constant")
    for group, series in (("channels", data.channels), ("controls", data.controls)):
        for name, values in series.items():
            v = np.asarray(values, dtype=float)
            if v.size != n:
                raise MeasureInputError(f"{group}.{name}", f"has {v.size} values, expected {n}")
            if not np.all(np.isfinite(v)):
                raise MeasureInputError(f"{group}.{name}", "contains NaN or infinite values")
            if np.ptp(v) == 0:
                raise MeasureInputError(f"{group}.{name}", "is constant")
            if group == "channels" and np.any(v < 0):
                raise MeasureInputError(f"{group}.{name}", "has negative spend")


def _percentiles(samples: FloatArray) -> list[Interval]:
    lo, hi = np.percentile(samples, [2.5, 97.5], axis=0)
    return [Interval(low=float(a), high=float(b)) for a, b in zip(lo, hi, strict=True)]


def fit_mmm(
    data: MMMData, config: MMMConfig | None = None, lift_tests: Sequence[LiftTest] = ()
) -> MMMResult:
    """Fit the model; ROAS and marginal ROAS per channel with bootstrap intervals."""
    config = config or MMMConfig()
    with tracer.start_as_current_span("measure.fit_mmm") as span:
        started = time.perf_counter()
        _validate(data, config)
        for test in lift_tests:
            if test.channel not in data.channels:
                raise MeasureInputError("lift_tests", f"unknown channel {test.channel!r}")
        problem = _Problem(data, config)
        starts = _starts(problem, config)
        theta = _fit_theta(problem, problem.y, starts, (), 0.0)
        if lift_tests:
            _, fitted = problem.solve_linear(theta, problem.y)
            sigma_sq = float(((problem.y - fitted) ** 2).mean())
            theta = _fit_theta(problem, problem.y, [theta, *starts], lift_tests, sigma_sq)
        else:
            sigma_sq = 0.0
        coef, fitted = problem.solve_linear(theta, problem.y)
        point = _summaries(problem, theta, coef)

        boot: list[FloatArray] = []
        rng = np.random.default_rng(config.seed + 1)
        resid = problem.y - fitted
        n, block = resid.size, min(config.block_weeks, resid.size)
        for _ in range(config.n_bootstrap):
            starts_idx = rng.integers(0, n - block + 1, size=n // block + 1)
            picked = np.concatenate([resid[s : s + block] for s in starts_idx])[:n]
            y_star = fitted + picked - picked.mean()
            th = _fit_theta(problem, y_star, [theta], lift_tests, sigma_sq)
            cf, _ = problem.solve_linear(th, y_star)
            boot.append(_summaries(problem, th, cf))
        intervals = None
        if boot:
            stacked = np.array(boot)
            intervals = [_percentiles(stacked[:, k, :]) for k in range(3)]

        channels = []
        c = problem.n_channels
        for i, name in enumerate(problem.names):
            beta = float(coef[problem.base.shape[1] + i]) * problem.y_scale
            param = float(np.exp(theta[c + i]))
            curve = _weekly_curve(config.saturation, beta, param, float(problem.x_scale[i]))
            channels.append(
                ChannelFit(
                    channel=name,
                    spend=float(problem.spend[i].sum()),
                    contribution=float(point[0, i]),
                    roas=float(point[1, i]),
                    mroas=float(point[2, i]),
                    contribution_interval=intervals[0][i] if intervals else None,
                    roas_interval=intervals[1][i] if intervals else None,
                    mroas_interval=intervals[2][i] if intervals else None,
                    decay=float(theta[i]),
                    saturation_param=param,
                    coefficient=beta,
                    response_curve=curve,
                )
            )
        y = problem.y * problem.y_scale
        fit = fitted * problem.y_scale
        resid_y = y - fit
        elapsed = time.perf_counter() - started
        diagnostics = FitDiagnostics(
            n_weeks=int(y.size),
            n_parameters=int(problem.base.shape[1] + 3 * c),
            r2=float(1 - (resid_y**2).sum() / ((y - y.mean()) ** 2).sum()),
            mape=float(np.mean(np.abs(resid_y) / np.maximum(np.abs(y), 1e-12))),
            nrmse=float(np.sqrt((resid_y**2).mean()) / np.ptp(y)),
            durbin_watson=float((np.diff(resid_y) ** 2).sum() / (resid_y**2).sum()),
            fit_seconds=elapsed,
            n_bootstrap=config.n_bootstrap,
        )
        span.set_attributes(
            {
                "mmm.channels": c,
                "mmm.weeks": diagnostics.n_weeks,
                "mmm.r2": diagnostics.r2,
                "mmm.bootstrap": config.n_bootstrap,
                "mmm.calibrated": bool(lift_tests),
            }
        )
        return MMMResult(
            config=config,
            channels=channels,
            baseline_contribution=float(y.sum() - point[0].sum()),
            fitted=[float(v) for v in fit],
            diagnostics=diagnostics,
        )


def _summaries(problem: _Problem, theta: FloatArray, coef: FloatArray) -> FloatArray:
    """Rows: contribution, ROAS, marginal ROAS (1 % more spend in every week), per channel."""
    spend = problem.spend.sum(axis=1)
    contribution = problem.contributions(theta, coef)
    bumped = problem.contributions(theta, coef, scale=1.01)
    return np.array([contribution, contribution / spend, (bumped - contribution) / (0.01 * spend)])


def _weekly_curve(kind: str, beta: float, param: float, x_scale: float) -> ResponseCurve:
    """Normalised adstock of a steady weekly spend s is s itself, so response = β·sat(s/scale)."""
    if kind == "logistic":
        return ResponseCurve(kind="logistic", beta=max(beta, 1e-12), lam=param / x_scale)
    return ResponseCurve(
        kind="hill", beta=max(beta, 1e-12), half_saturation=param * x_scale, shape=1.0
    )


def read_mmm_csv(
    path: Path,
    date_column: str,
    target: str,
    channels: Sequence[str],
    controls: Sequence[str] = (),
) -> MMMData:
    """Load weekly rows from a CSV, sorted by date; every named column must exist."""
    if not path.is_file():
        raise MeasureInputError("csv", f"file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        named: Mapping[str, Sequence[str]] = {
            "date-column": [date_column],
            "target": [target],
            "channels": channels,
            "controls": controls,
        }
        for option, columns in named.items():
            for col in columns:
                if col not in header:
                    raise MeasureInputError(option, f"unknown column {col!r}; columns are {header}")
        rows = sorted(reader, key=lambda r: r[date_column])

    def column(name: str, option: str) -> list[float]:
        try:
            return [float(r[name]) for r in rows]
        except ValueError as exc:
            raise MeasureInputError(option, f"column {name!r} is not numeric: {exc}") from None

    return MMMData(
        dates=[r[date_column] for r in rows],
        target=column(target, "target"),
        channels={c: column(c, "channels") for c in channels},
        controls={c: column(c, "controls") for c in controls},
    )
