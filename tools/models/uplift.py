"""Uplift per offer from randomised history: a T-learner (one outcome model per arm), the
container the model registry stores it in (`UpliftModel`, kind "uplift"), and the checks that
keep it honest (difference in means with its interval, Qini curve)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]
Z95 = 1.959963984540054


class EffectEstimate(BaseModel):
    model_config = ConfigDict(frozen=True)

    value: float
    ci_low: float
    ci_high: float


def difference_in_means(y: npt.ArrayLike, treated: npt.ArrayLike) -> EffectEstimate:
    """Randomised ATE estimate with a Welch 95 % interval."""
    out = np.asarray(y, dtype=np.float64).ravel()
    t = np.asarray(treated, dtype=bool).ravel()
    if out.size != t.size:
        raise ModelInputError("treated", "must have the same length as y")
    a, b = out[t], out[~t]
    if a.size < 2 or b.size < 2:
        raise ModelInputError("treated", "needs at least two treated and two control rows")
    diff = float(a.mean() - b.mean())
    se = float(np.sqrt(a.var(ddof=1) / a.size + b.var(ddof=1) / b.size))
    return EffectEstimate(value=diff, ci_low=diff - Z95 * se, ci_high=diff + Z95 * se)


class TLearner:
    """One gradient-boosted outcome model per arm; arm 0 is the control."""

    def __init__(
        self,
        n_arms: int,
        *,
        seed: int = 0,
        max_iter: int = 100,
        min_events_per_leaf: float | None = None,
    ) -> None:
        """min_events_per_leaf: size each arm's leaves so that a leaf expects at least this
        many positive outcomes (rows ≥ events / the arm's rate). Rare outcomes such as a 1 %
        conversion then fit rates from enough events instead of from noise; None keeps leaves
        of 100 rows."""
        if n_arms < 2:
            raise ModelInputError("n_arms", "needs a control and at least one treatment")
        if min_events_per_leaf is not None and min_events_per_leaf <= 0:
            raise ModelInputError("min_events_per_leaf", "must be positive")
        # Imported here: scikit-learn costs a worker over 100 MiB, and only campaigns with the
        # nba policy fit uplift models.
        from sklearn.ensemble import HistGradientBoostingRegressor

        self.n_arms = n_arms
        self.min_events_per_leaf = min_events_per_leaf
        self.models = [
            HistGradientBoostingRegressor(
                max_iter=max_iter, learning_rate=0.05, min_samples_leaf=100, random_state=seed
            )
            for _ in range(n_arms)
        ]

    def fit(self, X: npt.ArrayLike, arm: npt.ArrayLike, y: npt.ArrayLike) -> TLearner:
        rows = np.asarray(X, dtype=np.float64)
        arms = np.asarray(arm).ravel().astype(np.int64)
        out = np.asarray(y, dtype=np.float64).ravel()
        if rows.ndim != 2 or rows.shape[0] != arms.size or arms.size != out.size:
            raise ModelInputError("X", "X rows, arm and y must have the same length")
        if np.any((arms < 0) | (arms >= self.n_arms)):
            raise ModelInputError("arm", f"must be in [0, {self.n_arms})")
        with tracer.start_as_current_span("models.uplift.fit") as span:
            for k, model in enumerate(self.models):
                mask = arms == k
                if mask.sum() < 50:
                    raise ModelInputError("arm", f"arm {k} has fewer than 50 rows")
                if self.min_events_per_leaf is not None:
                    rate = max(float(np.abs(out[mask]).mean()), 1e-6)
                    leaf = int(np.ceil(self.min_events_per_leaf / rate))
                    # At most half the arm per leaf, so a leaf can still split once.
                    model.set_params(min_samples_leaf=max(100, min(leaf, int(mask.sum()) // 2)))
                model.fit(rows[mask], out[mask])
            span.set_attribute("models.rows", int(arms.size))
            span.set_attribute("models.arms", self.n_arms)
        return self

    def predict_outcomes(self, X: npt.ArrayLike) -> FloatArray:
        rows = np.asarray(X, dtype=np.float64)
        return np.column_stack([m.predict(rows) for m in self.models])

    def predict_uplift(self, X: npt.ArrayLike) -> FloatArray:
        """(n, n_arms - 1): each treatment's predicted effect over the control."""
        mu = self.predict_outcomes(X)
        out: FloatArray = mu[:, 1:] - mu[:, :1]
        return out


class UpliftModel(BaseModel):
    """A fitted T-learner with the names of its arms (arm 0 is the control) and of its input
    columns, as the registry stores it (kind "uplift", pickled)."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    arms: list[str] = Field(min_length=2)
    features: list[str] = Field(min_length=1)
    learner: TLearner

    @model_validator(mode="after")
    def _consistent(self) -> UpliftModel:
        if len(set(self.arms)) != len(self.arms):
            raise ValueError("arms: names must be unique")
        if self.learner.n_arms != len(self.arms):
            raise ValueError(
                f"learner: has {self.learner.n_arms} arms but {len(self.arms)} arm names"
            )
        return self

    def problem(self) -> str | None:
        """Why this model cannot serve, or None. Unpickling skips the validators, so the
        registry asks again after loading."""
        if not isinstance(self.learner, TLearner):
            return f"learner is a {type(self.learner).__name__}, not a TLearner"
        if self.learner.n_arms != len(self.arms) or len(self.learner.models) != len(self.arms):
            return f"learner has {self.learner.n_arms} arms but {len(self.arms)} arm names"
        for k, model in enumerate(self.learner.models):
            fitted = getattr(model, "n_features_in_", None)
            if fitted is None:
                return f"the outcome model of arm {k} is not fitted"
            if fitted != len(self.features):
                return f"arm {k} was fitted on {fitted} features, not {len(self.features)}"
        return None

    def predict_outcomes(self, X: npt.ArrayLike) -> FloatArray:
        """(n, arms): predicted outcome under each arm, control first."""
        return self.learner.predict_outcomes(self._rows(X))

    def predict_uplift(self, X: npt.ArrayLike) -> FloatArray:
        """(n, arms - 1): each treatment arm's predicted effect over the control."""
        return self.learner.predict_uplift(self._rows(X))

    def _rows(self, X: npt.ArrayLike) -> FloatArray:
        rows = np.asarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ModelInputError("X", f"expected (n, {len(self.features)}) feature rows")
        return rows


def qini_curve(
    uplift: npt.ArrayLike, treated: npt.ArrayLike, y: npt.ArrayLike
) -> tuple[FloatArray, FloatArray]:
    """Targeted fraction and incremental outcome (treated minus scaled control) when treating
    people in order of predicted uplift; both start at 0."""
    score = np.asarray(uplift, dtype=np.float64).ravel()
    t = np.asarray(treated, dtype=bool).ravel()
    out = np.asarray(y, dtype=np.float64).ravel()
    if not (score.size == t.size == out.size) or score.size == 0:
        raise ModelInputError("uplift", "uplift, treated and y must have equal non-zero length")
    order = np.argsort(-score, kind="stable")
    t, out = t[order], out[order]
    n_t = np.cumsum(t)
    n_c = np.cumsum(~t)
    y_t = np.cumsum(out * t)
    y_c = np.cumsum(out * ~t)
    gain = y_t - np.divide(y_c * n_t, n_c, out=np.zeros_like(y_c), where=n_c > 0)
    frac = np.arange(1, score.size + 1) / score.size
    return np.r_[0.0, frac], np.r_[0.0, gain]


def qini_coefficient(uplift: npt.ArrayLike, treated: npt.ArrayLike, y: npt.ArrayLike) -> float:
    """Area between the Qini curve and the random-targeting line, per person; > 0 beats random."""
    frac, gain = qini_curve(uplift, treated, y)
    random_line = frac * gain[-1]
    diff = gain - random_line
    area = float(np.sum((diff[1:] + diff[:-1]) * np.diff(frac)) / 2.0)
    return area / (frac.size - 1)
