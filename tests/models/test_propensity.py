from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from tools.models.errors import ModelInputError
from tools.models.propensity import fit_propensity
from tools.models.transactions import Transactions, summarise

FEATURES = ["x", "t_x", "T", "mean_value", "weeks_since_last"]


def _churn_data(tx: Transactions) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features from the 39-week calibration, label: no purchase in the 39 weeks after it,
    time: the day of the customer's first purchase (their cohort)."""
    s = summarise(tx, date(1997, 9, 30))
    end_day = (date(1997, 9, 30) - date(1970, 1, 1)).days
    position = {c: i for i, c in enumerate(s.customer_ids)}
    owner = np.array([position[tx.customer_ids[c]] for c in tx.customer_index])
    active_later = np.zeros(len(s.customer_ids), dtype=bool)
    active_later[owner[tx.day > end_day]] = True
    X = np.column_stack([s.x, s.t_x, s.T, s.mean_value, s.T - s.t_x])
    return X, (~active_later).astype(int), end_day - s.T * 7


@pytest.mark.parametrize("calibration", ["isotonic", "sigmoid"])
def test_churn_model_on_a_later_cohort(cdnow_sample, calibration) -> None:
    X, y, cohort_day = _churn_data(cdnow_sample)
    march = (date(1997, 3, 1) - date(1970, 1, 1)).days
    model, metrics = fit_propensity(
        X, y, cohort_day, features=FEATURES, test_from=march, calibration=calibration
    )
    assert metrics.test_rows == int((cohort_day >= march).sum())
    assert metrics.train_rows + metrics.calibration_rows == int((cohort_day < march).sum())
    # Recency and frequency separate churners well; a calibrated model must also beat the
    # Brier score of always predicting the base rate.
    assert metrics.auc > 0.7
    assert metrics.pr_auc > metrics.base_rate
    assert metrics.brier < metrics.base_rate * (1 - metrics.base_rate)
    p = model.predict(X[cohort_day >= march])
    assert p.min() >= 0.0 and p.max() <= 1.0
    assert abs(p.mean() - metrics.base_rate) < 0.1


def test_bad_input_names_the_field() -> None:
    X = np.zeros((100, 2))
    t = np.arange(100.0)
    with pytest.raises(ModelInputError, match=r"^y: must be binary"):
        fit_propensity(X, np.full(100, 2), t, features=["a", "b"], test_from=50)
    with pytest.raises(ModelInputError, match=r"^features:"):
        fit_propensity(X, np.zeros(100), t, features=["a"], test_from=50)
    with pytest.raises(ModelInputError, match=r"^test_from:"):
        fit_propensity(X, np.arange(100) % 2, t, features=["a", "b"], test_from=5)
