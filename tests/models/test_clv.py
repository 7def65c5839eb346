from __future__ import annotations

import numpy as np
import pytest

from tools.models.clv import (
    BgNbdParams,
    customer_lifetime_value,
    expected_purchases,
    expected_spend,
    fit_bgnbd,
    fit_gamma_gamma,
    fit_summary,
    probability_alive,
)
from tools.models.errors import ModelInputError


def test_bgnbd_reproduces_fader_hardie_lee_2005(cdnow_summary) -> None:
    # Fader, Hardie & Lee (2005), "Counting Your Customers the Easy Way: An Alternative to the
    # Pareto/NBD Model", Marketing Science 24(2), section 5: on the 2,357-customer CDNOW sample
    # with a 39-week calibration, r = 0.243, alpha = 4.414, a = 0.793, b = 2.426, LL = -9582.4.
    fit = fit_bgnbd(cdnow_summary.x, cdnow_summary.t_x, cdnow_summary.T)
    p = fit.params
    assert fit.converged
    assert (round(p.r, 3), round(p.alpha, 3), round(p.a, 3), round(p.b, 3)) == (
        0.243,
        4.414,
        0.793,
        2.426,
    )
    assert round(fit.log_likelihood, 1) == -9582.4
    assert fit.customers == 2357


def test_gamma_gamma_reproduces_fader_hardie_lee_rfm_clv(cdnow_summary) -> None:
    # Fader, Hardie & Lee (2005), "RFM and CLV: Using Iso-Value Curves for Customer Base
    # Analysis", JMR 42(4): the spend model on the 946 repeat buyers gives p = 6.25,
    # q = 3.74, gamma (v) = 15.44.
    fit = fit_gamma_gamma(cdnow_summary.x, cdnow_summary.mean_value)
    p = fit.params
    assert fit.customers == 946
    assert (round(p.p, 2), round(p.q, 2), round(p.v, 2)) == (6.25, 3.74, 15.44)


def test_predictions_match_the_reference_implementation(cdnow_summary) -> None:
    # Customer 1 of the sample (x=2, t_x=30.43, T=38.86); the reference figures were computed
    # with lifetimes 0.11.3 (BetaGeoFitter) at the fitted parameters.
    bg, _ = fit_summary(cdnow_summary)
    x, t_x, T = [2.0, 0.0], [30.43, 0.0], [38.86, 38.86]
    alive = probability_alive(bg.params, x, t_x, T)
    expected = expected_purchases(bg.params, 39.0, x, t_x, T)
    np.testing.assert_allclose(alive, [0.72662, 1.0], atol=1e-4)
    np.testing.assert_allclose(expected, [1.22599, 0.19479], atol=1e-4)


def test_expected_purchases_grow_with_the_horizon_and_vanish_at_zero(cdnow_summary) -> None:
    bg, _ = fit_summary(cdnow_summary)
    s = cdnow_summary
    e0 = expected_purchases(bg.params, 0.0, s.x, s.t_x, s.T)
    e10 = expected_purchases(bg.params, 10.0, s.x, s.t_x, s.T)
    e50 = expected_purchases(bg.params, 50.0, s.x, s.t_x, s.T)
    np.testing.assert_allclose(e0, 0.0, atol=1e-12)
    assert np.all(e50 > e10) and np.all(e10 > 0)


def test_clv_is_positive_discounting_lowers_it_and_it_ranks_like_frequency(cdnow_summary) -> None:
    bg, gg = fit_summary(cdnow_summary)
    low = customer_lifetime_value(bg.params, gg.params, cdnow_summary, discount_rate=0.0)
    high = customer_lifetime_value(bg.params, gg.params, cdnow_summary, discount_rate=0.05)
    assert np.all(low > 0) and np.all(high < low)
    spend = expected_spend(gg.params, cdnow_summary.x, cdnow_summary.mean_value)
    assert np.all(spend > 0)
    frequent = cdnow_summary.x >= 5
    assert low[frequent].mean() > 5 * low[cdnow_summary.x == 0].mean()


def test_bad_inputs_name_the_field() -> None:
    with pytest.raises(ModelInputError, match=r"^t_x: recency must not exceed"):
        fit_bgnbd([1], [5.0], [3.0])
    with pytest.raises(ModelInputError, match=r"^x: must not be negative"):
        fit_bgnbd([-1], [0.0], [3.0])
    with pytest.raises(ModelInputError, match=r"^x: no customer with a repeat purchase"):
        fit_gamma_gamma([0, 0], [0.0, 0.0])
    with pytest.raises(ModelInputError, match=r"^t: "):
        expected_purchases(BgNbdParams(r=1, alpha=1, a=2, b=2), -1.0, [1], [1.0], [2.0])
