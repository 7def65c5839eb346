from __future__ import annotations

import numpy as np
import pytest
from scipy import optimize

from tools.allocator.curves import ResponseCurve
from tools.allocator.errors import AllocationInputError, InfeasibleAllocationError
from tools.allocator.solver import (
    AllocationRequest,
    ChannelSpec,
    GroupConstraint,
    allocate,
)


def hill(beta: float, k: float, shape: float = 1.0) -> ResponseCurve:
    return ResponseCurve(kind="hill", beta=beta, half_saturation=k, shape=shape)


def test_two_channel_optimum_matches_kkt_solution() -> None:
    # r_i = b_i x/(x + k_i): equal marginals b_i k_i/(x_i + k_i)² with x_1 + x_2 = B.
    b1, k1, b2, k2, budget = 100.0, 20.0, 60.0, 5.0, 50.0

    def gap(x1: float) -> float:
        return b1 * k1 / (x1 + k1) ** 2 - b2 * k2 / (budget - x1 + k2) ** 2

    x1 = optimize.brentq(gap, 0.0, budget)
    res = allocate(
        AllocationRequest(
            channels=[
                ChannelSpec(name="a", curve=hill(b1, k1)),
                ChannelSpec(name="b", curve=hill(b2, k2)),
            ],
            budget=budget,
        )
    )
    assert res.solver == "glop"
    assert res.spend_of("a") == pytest.approx(x1, rel=2e-3)
    assert res.total_spend == pytest.approx(budget)
    marginal = b1 * k1 / (x1 + k1) ** 2
    assert res.budget_shadow_price == pytest.approx(marginal, rel=0.02)
    for a in res.allocations:
        assert a.marginal_roas == pytest.approx(marginal, rel=0.02)


def test_matches_slsqp_on_smooth_curves() -> None:
    rng = np.random.default_rng(7)
    n = 12
    beta, k, shape = rng.uniform(50, 200, n), rng.uniform(10, 100, n), rng.uniform(0.6, 1.0, n)
    budget = float(k.sum())
    res = allocate(
        AllocationRequest(
            channels=[
                ChannelSpec(name=f"c{i}", curve=hill(beta[i], k[i], shape[i]), max_spend=3 * k[i])
                for i in range(n)
            ],
            budget=budget,
        )
    )

    def neg(x: np.ndarray) -> float:
        r = (np.maximum(x, 0) / k) ** shape
        return -float((beta * r / (1 + r)).sum())

    ref = optimize.minimize(
        neg,
        np.full(n, budget / n),
        method="SLSQP",
        bounds=[(0, 3 * v) for v in k],
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - budget}],
        options={"ftol": 1e-12, "maxiter": 500},
    )
    assert res.objective_value == pytest.approx(-ref.fun, rel=1e-4)
    assert res.objective_value >= -ref.fun * (1 - 1e-4)


def test_bounds_max_change_and_groups_hold() -> None:
    channels = [
        ChannelSpec(name="search", curve=hill(300, 10), current_spend=40, max_change=10),
        ChannelSpec(name="social", curve=hill(100, 50), current_spend=30, min_spend=25),
        ChannelSpec(name="video", curve=hill(200, 30), current_spend=30, max_spend=35),
    ]
    group = GroupConstraint(name="paid_social_video", channels=["social", "video"], max_spend=55)
    res = allocate(AllocationRequest(channels=channels, budget=100, groups=[group]))
    assert 30 - 1e-6 <= res.spend_of("search") <= 50 + 1e-6
    assert res.spend_of("social") >= 25 - 1e-6
    assert res.spend_of("video") <= 35 + 1e-6
    assert res.spend_of("social") + res.spend_of("video") <= 55 + 1e-6
    assert res.total_spend == pytest.approx(100)
    by_name = {a.name: a for a in res.allocations}
    assert by_name["search"].change == pytest.approx(by_name["search"].spend - 40)


def test_on_off_channel_uses_mip_and_switches_off_a_poor_channel() -> None:
    channels = [
        ChannelSpec(name="good", curve=hill(500, 50)),
        ChannelSpec(name="poor", curve=hill(20, 50), min_spend=30, on_off=True),
    ]
    res = allocate(AllocationRequest(channels=channels, budget=60))
    assert res.solver == "scip"
    assert res.spend_of("poor") == pytest.approx(0.0, abs=1e-6)
    assert res.spend_of("good") == pytest.approx(60)
    assert res.budget_shadow_price > 0


def test_max_change_keeps_an_on_off_channel_on() -> None:
    channels = [
        ChannelSpec(name="good", curve=hill(500, 50)),
        ChannelSpec(
            name="poor", curve=hill(20, 50), min_spend=30, on_off=True,
            current_spend=40, max_change=5,
        ),
    ]  # fmt: skip
    res = allocate(AllocationRequest(channels=channels, budget=100))
    assert res.spend_of("poor") == pytest.approx(35.0)


def test_s_shaped_curve_still_solves() -> None:
    channels = [
        ChannelSpec(name="tv", curve=hill(1000, 40, 2.5)),
        ChannelSpec(name="search", curve=hill(200, 10)),
    ]
    res = allocate(AllocationRequest(channels=channels, budget=100))
    assert res.total_spend == pytest.approx(100)
    assert res.spend_of("tv") > 40  # worth passing the threshold of the S-curve


def test_margin_objective_stops_where_returns_fall_below_cost() -> None:
    channels = [ChannelSpec(name="a", curve=hill(100, 10), value_per_response=1.0)]
    res = allocate(AllocationRequest(channels=channels, budget=1000, objective="margin"))
    # d/dx 100x/(x+10) = 1000/(x+10)² = 1 at x = 21.6.
    assert res.spend_of("a") == pytest.approx(1000**0.5 - 10, rel=0.01)
    assert res.budget_shadow_price == pytest.approx(0.0, abs=1e-9)


def test_budget_below_minimums_is_a_clear_error() -> None:
    channels = [
        ChannelSpec(name="a", curve=hill(100, 10), min_spend=60),
        ChannelSpec(name="b", curve=hill(100, 10), min_spend=50),
    ]
    with pytest.raises(AllocationInputError, match=r"^budget: 100 is below the sum of channel"):
        allocate(AllocationRequest(channels=channels, budget=100))


def test_conflicting_constraints_are_named() -> None:
    channels = [
        ChannelSpec(name="a", curve=hill(100, 10), max_spend=20),
        ChannelSpec(name="b", curve=hill(100, 10), max_spend=20),
        ChannelSpec(name="c", curve=hill(100, 10)),
    ]
    group = GroupConstraint(name="ab", channels=["a", "b"], min_spend=50)
    with pytest.raises(InfeasibleAllocationError) as info:
        allocate(AllocationRequest(channels=channels, budget=100, groups=[group]))
    assert "group ab.min_spend" in info.value.conflicting
    lone = [ChannelSpec(name="a", curve=hill(100, 10), min_spend=50, max_spend=40)]
    with pytest.raises(InfeasibleAllocationError, match=r"a\.min_spend"):
        allocate(AllocationRequest(channels=lone, budget=100))


def test_unknown_group_channel_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"groups\.g"):
        AllocationRequest(
            channels=[ChannelSpec(name="a", curve=hill(1, 1))],
            budget=1,
            groups=[GroupConstraint(name="g", channels=["zzz"])],
        )


def test_curve_derivative_matches_finite_difference() -> None:
    for curve in (
        hill(100, 20, 0.7),
        ResponseCurve(kind="logistic", beta=50, lam=0.1),
        ResponseCurve(kind="pwl", xs=[0, 10, 30], ys=[0, 20, 30]),
    ):
        x = np.array([5.0, 15.0, 25.0])
        fd = (curve.value(x + 1e-5) - curve.value(x - 1e-5)) / 2e-5
        assert np.allclose(curve.derivative(x), fd, rtol=1e-4)
