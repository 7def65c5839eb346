"""Population stability index (PSI) drift checks on features and scores."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict

from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

DriftStatus = Literal["stable", "moderate", "drifted"]
# Conventional PSI thresholds used in credit scoring: < 0.1 stable, 0.1-0.25 moderate shift.
MODERATE = 0.1
DRIFTED = 0.25


class FeatureDrift(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    psi: float
    status: DriftStatus


class DriftReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    features: list[FeatureDrift]
    drifted: bool


def psi(reference: npt.ArrayLike, current: npt.ArrayLike, bins: int = 10) -> float:
    """PSI of `current` against `reference` over the reference's quantile bins."""
    ref = np.asarray(reference, dtype=np.float64).ravel()
    cur = np.asarray(current, dtype=np.float64).ravel()
    if ref.size == 0 or cur.size == 0:
        raise ModelInputError("reference", "both samples must be non-empty")
    if not (np.all(np.isfinite(ref)) and np.all(np.isfinite(cur))):
        raise ModelInputError("current", "values must be finite")
    if bins < 2:
        raise ModelInputError("bins", "must be at least 2")
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1))[1:-1])
    ref_share = np.bincount(np.searchsorted(edges, ref, side="right"), minlength=edges.size + 1)
    cur_share = np.bincount(np.searchsorted(edges, cur, side="right"), minlength=edges.size + 1)
    # A small floor keeps empty bins from producing infinite PSI.
    p = np.maximum(ref_share / ref.size, 1e-4)
    q = np.maximum(cur_share / cur.size, 1e-4)
    return float(np.sum((q - p) * np.log(q / p)))


def status_of(value: float, moderate: float = MODERATE, drifted: float = DRIFTED) -> DriftStatus:
    if value >= drifted:
        return "drifted"
    return "moderate" if value >= moderate else "stable"


def drift_report(
    reference: Mapping[str, npt.ArrayLike],
    current: Mapping[str, npt.ArrayLike],
    *,
    moderate: float = MODERATE,
    drifted: float = DRIFTED,
) -> DriftReport:
    """PSI per named feature or score present in both samples."""
    missing = sorted(set(reference) ^ set(current))
    if missing:
        raise ModelInputError("current", f"feature sets differ: {', '.join(missing)}")
    if not 0 < moderate < drifted:
        raise ModelInputError("moderate", "thresholds must satisfy 0 < moderate < drifted")
    with tracer.start_as_current_span("models.drift.report") as span:
        rows = []
        for name in sorted(reference):
            value = psi(reference[name], current[name])
            rows.append(
                FeatureDrift(name=name, psi=value, status=status_of(value, moderate, drifted))
            )
        report = DriftReport(features=rows, drifted=any(r.status == "drifted" for r in rows))
        span.set_attribute("models.features", len(rows))
        span.set_attribute("models.drifted_features", sum(r.status == "drifted" for r in rows))
        return report
