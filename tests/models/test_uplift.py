from __future__ import annotations

import numpy as np
import pytest

from tools.models.errors import ModelInputError
from tools.models.uplift import TLearner, difference_in_means, qini_coefficient, qini_curve

# Hillstrom (2008), MineThatData E-Mail Analytics challenge: a randomised test of 64,000
# customers, one third each to a Mens e-mail, a Womens e-mail and no e-mail.


@pytest.mark.parametrize("outcome", ["visit", "conversion", "spend"])
def test_t_learner_ate_matches_the_randomised_difference_in_means(hillstrom, outcome) -> None:
    y = hillstrom.outcomes[outcome]
    model = TLearner(3, seed=0).fit(hillstrom.X, hillstrom.arm, y)
    uplift = model.predict_uplift(hillstrom.X)
    for arm in (1, 2):
        sel = (hillstrom.arm == 0) | (hillstrom.arm == arm)
        dim = difference_in_means(y[sel], hillstrom.arm[sel] == arm)
        assert dim.ci_low > 0  # both e-mails raised every outcome in the published test
        assert dim.ci_low <= uplift[:, arm - 1].mean() <= dim.ci_high


def test_published_visit_rates(hillstrom) -> None:
    # The challenge's summary: visit rate 18.3 % (Mens), 15.1 % (Womens), 10.6 % (no e-mail).
    visit = hillstrom.outcomes["visit"]
    rates = [visit[hillstrom.arm == a].mean() for a in (1, 2, 0)]
    assert [round(r, 3) for r in rates] == [0.183, 0.151, 0.106]


def test_uplift_targeting_beats_random_on_held_out_customers(hillstrom) -> None:
    rng = np.random.default_rng(0)
    train = rng.random(hillstrom.arm.size) < 0.5
    y = hillstrom.outcomes["visit"]
    model = TLearner(3, seed=0).fit(hillstrom.X[train], hillstrom.arm[train], y[train])
    test = ~train
    uplift = model.predict_uplift(hillstrom.X[test])
    null = {}
    qini = {}
    for arm in (1, 2):
        sel = (hillstrom.arm[test] == 0) | (hillstrom.arm[test] == arm)
        treated = hillstrom.arm[test][sel] == arm
        score, out = uplift[sel, arm - 1], y[test][sel]
        qini[arm] = qini_coefficient(score, treated, out)
        null[arm] = [qini_coefficient(rng.permutation(score), treated, out) for _ in range(100)]
    # The Womens e-mail's effect differs clearly between customers: its ranking beats 95 % of
    # random rankings. The Mens e-mail's effect is nearly uniform, so only beat the median.
    assert qini[2] > np.percentile(null[2], 95)
    assert qini[1] > np.median(null[1])


def test_qini_curve_of_a_perfect_ranking() -> None:
    treated = np.array([True, False, True, False])
    y = np.array([1.0, 0.0, 0.0, 0.0])
    frac, gain = qini_curve(np.array([4.0, 3.0, 2.0, 1.0]), treated, y)
    assert frac.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert gain.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert qini_coefficient([4.0, 3.0, 2.0, 1.0], treated, y) > 0


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ModelInputError, match=r"^n_arms:"):
        TLearner(1)
    with pytest.raises(ModelInputError, match=r"^arm: must be in"):
        TLearner(2).fit(np.zeros((3, 1)), [0, 1, 2], [0.0, 1.0, 0.0])
    with pytest.raises(ModelInputError, match=r"^treated:"):
        difference_in_means([1.0, 2.0], [True])


def test_leaves_sized_for_rare_events_stop_fitting_noise() -> None:
    # A 1 % conversion with a true effect of +0.5 points that does not depend on the features:
    # every person's predicted uplift should be close to the same 0.005.
    # 8,000 rows per arm, as a campaign's first cycles give (scikit-learn's early stopping only
    # starts above 10,000).
    rng = np.random.default_rng(3)
    n = 16_000
    x = rng.normal(size=(n, 3))
    arm = rng.integers(0, 2, size=n)
    y = (rng.random(n) < np.where(arm == 1, 0.015, 0.010)).astype(float)
    loose = TLearner(2, seed=0).fit(x, arm, y).predict_uplift(x[:5000])[:, 0]
    sized = TLearner(2, seed=0, min_events_per_leaf=20).fit(x, arm, y).predict_uplift(x[:5000])
    assert sized[:, 0].std() < 0.5 * loose.std()
    assert abs(sized[:, 0].mean() - 0.005) < 0.003
    with pytest.raises(ModelInputError, match=r"^min_events_per_leaf:"):
        TLearner(2, min_events_per_leaf=0)
