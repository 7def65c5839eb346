"""The simulator's true response model, calibrated on the Hillstrom e-mail experiment.

Source of the rates: Kevin Hillstrom, "The MineThatData E-Mail Analytics and Data Mining
Challenge" (2008): 64,000 customers who bought in the last 12 months, randomised into
Mens E-Mail, Womens E-Mail and No E-Mail, outcomes over the two weeks that followed.
The figures below were computed from that file, per purchase-history segment
(mens only, womens only, both). They are kept here as constants so that the demo
needs no data at run time; tests recompute them from the data set.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from tools.cdp.tables import PROFILE_SEGMENTS

# The simulated people carry the CDP's purchase-history segments.
SEGMENTS: tuple[str, ...] = PROFILE_SEGMENTS
# Share of customers per segment in the Hillstrom control arm (9,638 / 9,519 / 2,149 of 21,306).
SEGMENT_SHARE: dict[str, float] = {"mens": 0.4524, "womens": 0.4468, "both": 0.1008}

# No E-Mail arm: (visit rate, conversion rate, spend per converting customer in USD).
CONTROL: dict[str, tuple[float, float, float]] = {
    "mens": (0.09981, 0.00550, 126.46),
    "womens": (0.09581, 0.00515, 95.30),
    "both": (0.18055, 0.00931, 126.81),
}
# The e-mail that matches the purchase history (Mens E-Mail for mens buyers, Womens E-Mail for
# womens buyers, the mean of both e-mails for customers who bought both).
EMAIL: dict[str, tuple[float, float, float]] = {
    "mens": (0.16897, 0.01151, 119.75),
    "womens": (0.16979, 0.01026, 109.35),
    "both": (0.28332, 0.01947, 107.68),
}
OVERALL_CONTROL_CONVERSION = 0.00573
OVERALL_MENS_EMAIL_CONVERSION = 0.01253

# Assumptions of the simulator, not from Hillstrom: a push reaches people less than an e-mail,
# an SMS a little more, and each 10 points of discount multiply the odds of converting by 1.3.
CHANNEL_EFFECT_SHARE: dict[str, float] = {"email": 1.0, "push": 0.5, "sms": 0.7}
DISCOUNT_ODDS_PER_10PCT = 1.3
CHANNEL_COST: dict[str, float] = {"email": 0.002, "push": 0.001, "sms": 0.05}


def _segment_array(
    table: dict[str, tuple[float, float, float]], column: int, segments: NDArray[np.str_]
) -> NDArray[np.float64]:
    out = np.empty(len(segments), dtype=np.float64)
    for name, rates in table.items():
        out[segments == name] = rates[column]
    return out


def control_conversion(segments: NDArray[np.str_]) -> NDArray[np.float64]:
    return _segment_array(CONTROL, 1, segments)


def treated_conversion(
    segments: NDArray[np.str_], channel: str, discount_pct: float
) -> NDArray[np.float64]:
    p0 = control_conversion(segments)
    p_email = _segment_array(EMAIL, 1, segments)
    p = p0 + CHANNEL_EFFECT_SHARE[channel] * (p_email - p0)
    odds = p / (1 - p) * DISCOUNT_ODDS_PER_10PCT ** (discount_pct / 10.0)
    result: NDArray[np.float64] = odds / (1 + odds)
    return result


def basket(segments: NDArray[np.str_], treated: bool) -> NDArray[np.float64]:
    """Gross basket value (before any discount) of a converting customer."""
    return _segment_array(EMAIL if treated else CONTROL, 2, segments)


def expected_margin(
    segments: NDArray[np.str_],
    *,
    treated: bool,
    channel: str = "email",
    discount_pct: float = 0.0,
    margin_pct: float = 40.0,
) -> NDArray[np.float64]:
    """Expected contribution margin per person: orders × basket × (margin − discount) − cost."""
    if not treated:
        return control_conversion(segments) * basket(segments, False) * margin_pct / 100.0
    p = treated_conversion(segments, channel, discount_pct)
    value = p * basket(segments, True) * (margin_pct - discount_pct) / 100.0
    result: NDArray[np.float64] = value - CHANNEL_COST[channel]
    return result
