"""Several arms against one control: per-arm estimates, corrections and the SRM check."""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict

from tools.measure.errors import MeasureInputError
from tools.measure.stats import (
    GroupStats,
    SrmResult,
    adjust_p_values,
    compare_means,
    srm_check,
)

tracer = trace.get_tracer("liftloop.measure")


class ArmResult(BaseModel):
    model_config = ConfigDict(frozen=True)
    arm: str
    n: int
    mean: float
    is_control: bool
    diff: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    rel_lift: float | None = None
    rel_ci_low: float | None = None
    rel_ci_high: float | None = None
    p_value: float | None = None
    p_value_adjusted: float | None = None
    chance_to_win: float | None = None


class ExperimentAnalysis(BaseModel):
    model_config = ConfigDict(frozen=True)
    control: str
    alpha: float
    correction: Literal["holm", "bonferroni", "none"]
    cuped: bool
    sequential: bool
    arms: list[ArmResult]
    srm: SrmResult | None


def analyze_arms(
    groups: Mapping[str, GroupStats],
    control: str,
    alpha: float = 0.05,
    *,
    cuped: bool = False,
    sequential: bool = False,
    correction: Literal["holm", "bonferroni", "none"] = "holm",
    planned_shares: Mapping[str, float] | None = None,
) -> ExperimentAnalysis:
    """Every treatment arm against `control`; p-values corrected across arms.

    Without planned shares the SRM check assumes equal allocation.
    """
    with tracer.start_as_current_span("measure.analyze_arms") as span:
        if control not in groups:
            raise MeasureInputError("control", f"{control!r} is not an arm ({sorted(groups)})")
        if len(groups) < 2:
            raise MeasureInputError("arms", "need at least one arm besides the control")
        treatments = [a for a in groups if a != control]
        estimates = [
            compare_means(groups[a], groups[control], alpha, cuped=cuped, sequential=sequential)
            for a in treatments
        ]
        adjusted = adjust_p_values([e.p_value for e in estimates], correction)
        arms = [
            ArmResult(arm=control, n=groups[control].n, mean=groups[control].mean, is_control=True)
        ]
        for name, est, p_adj in zip(treatments, estimates, adjusted, strict=True):
            arms.append(
                ArmResult(
                    arm=name,
                    n=est.n_treat,
                    mean=groups[name].mean,
                    is_control=False,
                    diff=est.diff,
                    ci_low=est.ci_low,
                    ci_high=est.ci_high,
                    rel_lift=est.rel_lift,
                    rel_ci_low=est.rel_ci_low,
                    rel_ci_high=est.rel_ci_high,
                    p_value=est.p_value,
                    p_value_adjusted=p_adj,
                    chance_to_win=est.chance_to_win,
                )
            )
        names = [control, *treatments]
        if planned_shares is not None and any(a not in planned_shares for a in names):
            raise MeasureInputError("planned_shares", "need a share for every arm")
        shares = [(planned_shares or {}).get(a, 1.0) for a in names]
        srm = srm_check([groups[a].n for a in names], shares)
        span.set_attributes({"measure.arms": len(names), "measure.srm_mismatch": srm.mismatch})
        return ExperimentAnalysis(
            control=control,
            alpha=alpha,
            correction=correction,
            cuped=cuped,
            sequential=sequential,
            arms=arms,
            srm=srm,
        )


def _float_column(rows: Sequence[dict[str, str]], column: str, path: Path) -> np.ndarray:
    try:
        values = np.array([float(r[column]) for r in rows])
    except ValueError as exc:
        raise MeasureInputError(column, f"non-numeric value in {path.name}: {exc}") from None
    if not np.all(np.isfinite(values)):
        raise MeasureInputError(column, "contains NaN or infinite values")
    return values


def read_arm_groups(
    path: Path, arm_column: str, metric: str, covariate: str | None = None
) -> dict[str, GroupStats]:
    """Reduce a per-unit CSV (one row per randomised unit) to per-arm sufficient statistics."""
    if not path.is_file():
        raise MeasureInputError("csv", f"file not found: {path}")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        for name, col in (("arm-column", arm_column), ("metric", metric), ("covariate", covariate)):
            if col is not None and col not in header:
                raise MeasureInputError(name, f"unknown column {col!r}; columns are {header}")
        rows = list(reader)
    if len(rows) < 4:
        raise MeasureInputError("csv", f"need at least 4 rows, got {len(rows)}")
    y = _float_column(rows, metric, path)
    x = _float_column(rows, covariate, path) if covariate else None
    if np.ptp(y) == 0:
        raise MeasureInputError("metric", f"column {metric!r} is constant")
    if x is not None and np.ptp(x) == 0:
        raise MeasureInputError("covariate", f"column {covariate!r} is constant")
    arms = np.array([r[arm_column] for r in rows])
    groups: dict[str, GroupStats] = {}
    for arm in dict.fromkeys(arms.tolist()):
        mask = arms == arm
        groups[arm] = GroupStats.from_values(y[mask], None if x is None else x[mask])
    return groups
