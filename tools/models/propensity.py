"""Churn and purchase propensity: gradient-boosted trees with a time-based split and a
calibration step fitted on the latest slice of the training period."""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pydantic import BaseModel, ConfigDict
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from tools.models.errors import ModelInputError

tracer = trace.get_tracer("liftloop.models")

FloatArray = npt.NDArray[np.float64]
Calibration = Literal["isotonic", "sigmoid"]


class ClassifierMetrics(BaseModel):
    """Scores on the held-out (latest) period."""

    model_config = ConfigDict(frozen=True)

    auc: float
    pr_auc: float
    brier: float
    base_rate: float
    train_rows: int
    calibration_rows: int
    test_rows: int


class PropensityModel:
    """A fitted, calibrated classifier; `predict` returns calibrated probabilities."""

    def __init__(
        self,
        booster: HistGradientBoostingClassifier,
        calibrator: IsotonicRegression | LogisticRegression,
        features: list[str],
    ) -> None:
        self.booster = booster
        self.calibrator = calibrator
        self.features = features

    def predict(self, X: npt.ArrayLike) -> FloatArray:
        rows = np.asarray(X, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != len(self.features):
            raise ModelInputError("X", f"expected {len(self.features)} feature columns")
        raw = self.booster.predict_proba(rows)[:, 1]
        if isinstance(self.calibrator, IsotonicRegression):
            out: FloatArray = np.asarray(self.calibrator.predict(raw), dtype=np.float64)
            return out
        return np.asarray(self.calibrator.predict_proba(_logit(raw)[:, None])[:, 1])


def _logit(p: FloatArray) -> FloatArray:
    q = np.clip(p, 1e-6, 1 - 1e-6)
    out: FloatArray = np.log(q / (1 - q))
    return out


def fit_propensity(
    X: npt.ArrayLike,
    y: npt.ArrayLike,
    time: npt.ArrayLike,
    *,
    features: list[str],
    test_from: float,
    calibration_fraction: float = 0.2,
    calibration: Calibration = "isotonic",
    seed: int = 0,
) -> tuple[PropensityModel, ClassifierMetrics]:
    """Train on rows with time < test_from (the latest `calibration_fraction` of them fits the
    calibrator), and score on rows with time >= test_from."""
    rows = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y).ravel()
    t = np.asarray(time, dtype=np.float64).ravel()
    if rows.ndim != 2 or rows.shape[0] != labels.size or labels.size != t.size:
        raise ModelInputError("X", "X rows, y and time must have the same length")
    if rows.shape[1] != len(features):
        raise ModelInputError("features", f"{len(features)} names for {rows.shape[1]} columns")
    if not set(np.unique(labels)) <= {0, 1}:
        raise ModelInputError("y", "must be binary 0/1")
    if not 0 < calibration_fraction < 1:
        raise ModelInputError("calibration_fraction", "must be in (0, 1)")
    train = np.flatnonzero(t < test_from)
    test = np.flatnonzero(t >= test_from)
    if train.size < 20 or test.size < 10:
        raise ModelInputError("test_from", "leaves too few rows for training or testing")
    train = train[np.argsort(t[train], kind="stable")]
    cut = int(train.size * (1 - calibration_fraction))
    fit_rows, cal_rows = train[:cut], train[cut:]
    for name, idx in (("training", fit_rows), ("calibration", cal_rows), ("test", test)):
        if np.unique(labels[idx]).size < 2:
            raise ModelInputError("y", f"the {name} period needs both classes")
    with tracer.start_as_current_span("models.propensity.fit") as span:
        booster = HistGradientBoostingClassifier(
            max_iter=200, learning_rate=0.05, early_stopping=False, random_state=seed
        )
        booster.fit(rows[fit_rows], labels[fit_rows])
        raw_cal = booster.predict_proba(rows[cal_rows])[:, 1]
        calibrator: IsotonicRegression | LogisticRegression
        if calibration == "isotonic":
            calibrator = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip")
            calibrator.fit(raw_cal, labels[cal_rows])
        else:
            calibrator = LogisticRegression()
            calibrator.fit(_logit(raw_cal)[:, None], labels[cal_rows])
        model = PropensityModel(booster, calibrator, features)
        p = model.predict(rows[test])
        yt = labels[test]
        metrics = ClassifierMetrics(
            auc=float(roc_auc_score(yt, p)),
            pr_auc=float(average_precision_score(yt, p)),
            brier=float(brier_score_loss(yt, p)),
            base_rate=float(yt.mean()),
            train_rows=int(fit_rows.size),
            calibration_rows=int(cal_rows.size),
            test_rows=int(test.size),
        )
        span.set_attribute("models.train_rows", metrics.train_rows)
        span.set_attribute("models.test_rows", metrics.test_rows)
        span.set_attribute("models.auc", metrics.auc)
        span.set_attribute("models.calibration", calibration)
        return model, metrics
