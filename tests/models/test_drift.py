from __future__ import annotations

import numpy as np
import pytest

from tools.models.drift import drift_report, psi
from tools.models.errors import ModelInputError


def test_psi_separates_stable_from_shifted_samples() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(0, 1, 20_000)
    assert psi(ref, rng.normal(0, 1, 20_000)) < 0.01
    # PSI of N(0,1) against N(0.5,1) is about 0.25 (a textbook "significant shift").
    assert psi(ref, rng.normal(0.5, 1, 20_000)) == pytest.approx(0.25, abs=0.04)


def test_report_flags_the_drifted_feature_only() -> None:
    rng = np.random.default_rng(1)
    reference = {"recency": rng.exponential(30, 5000), "score": rng.beta(2, 5, 5000)}
    current = {"recency": rng.exponential(60, 5000), "score": rng.beta(2, 5, 5000)}
    report = drift_report(reference, current)
    status = {f.name: f.status for f in report.features}
    assert status == {"recency": "drifted", "score": "stable"}
    assert report.drifted


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ModelInputError, match=r"^current: feature sets differ: b"):
        drift_report({"a": [1.0]}, {"a": [1.0], "b": [2.0]})
    with pytest.raises(ModelInputError, match=r"^reference: both samples"):
        psi([], [1.0])
