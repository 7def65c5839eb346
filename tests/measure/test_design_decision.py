from __future__ import annotations

import pytest

from tools.measure.decision import CycleMeasurement, GuardrailReading, decide
from tools.measure.design import (
    StopRule,
    mde_means,
    mde_proportions,
    power_proportions,
    sample_size_means,
    sample_size_proportions,
)
from tools.measure.errors import MeasureInputError
from tools.measure.stats import compare_proportions


def test_proportion_sample_size_reaches_the_power() -> None:
    n = sample_size_proportions(0.10, 0.02, alpha=0.05, power=0.8)
    # Textbook value for 10 % → 12 %, α = 0.05 two-sided, 80 % power (Fleiss, no correction).
    assert 3800 <= n <= 3850
    assert power_proportions(0.10, 0.02, n) >= 0.8
    assert power_proportions(0.10, 0.02, n - 50) < 0.8
    assert mde_proportions(0.10, n) == pytest.approx(0.02, rel=0.01)


def test_means_sample_size_and_mde_invert() -> None:
    n = sample_size_means(sd=10.0, mde=1.0)
    assert n == 1570  # 2·(1.95996 + 0.84162)²·100 = 1569.8
    assert mde_means(10.0, n) <= 1.0


def test_power_inputs_are_checked() -> None:
    with pytest.raises(MeasureInputError, match=r"^baseline:"):
        sample_size_proportions(1.2, 0.01)
    with pytest.raises(MeasureInputError, match=r"^mde:"):
        sample_size_proportions(0.5, 0.6)


def _cycle(cycle: int, treat: int, control: int, n: int = 5000) -> CycleMeasurement:
    return CycleMeasurement(cycle=cycle, primary=compare_proportions(treat, n, control, n))


def test_decide_ships_only_after_min_cycles() -> None:
    rule = StopRule(min_cycles=3, max_cycles=10)
    assert decide(rule, [_cycle(1, 700, 500)]).action == "continue"
    decision = decide(rule, [_cycle(1, 700, 500), _cycle(2, 700, 500), _cycle(3, 700, 500)])
    assert (decision.action, decision.reason) == ("ship", "lift_ci_low_above_zero")


def test_decide_stops_on_harm_futility_and_max_cycles() -> None:
    rule = StopRule(min_cycles=2, max_cycles=4, futility_max_effect=0.02)
    assert decide(rule, [_cycle(1, 400, 600)]).reason == "primary_harmed"
    assert decide(rule, [_cycle(1, 500, 500), _cycle(2, 500, 500)]).reason == "futile"
    flat = [_cycle(i, 520, 500, n=3000) for i in range(1, 5)]
    assert decide(StopRule(min_cycles=2, max_cycles=4), flat).reason == "max_cycles"
    assert decide(StopRule(min_cycles=2, max_cycles=5), flat).action == "continue"
    harmed = GuardrailReading(
        name="unsubscribe", estimate=compare_proportions(90, 5000, 30, 5000), higher_is_better=False
    )
    guarded = CycleMeasurement(cycle=1, primary=_cycle(1, 700, 500).primary, guardrails=[harmed])
    decision = decide(rule, [guarded])
    assert (decision.action, decision.reason, decision.detail) == (
        "stop",
        "guardrail_harmed",
        "unsubscribe",
    )


def test_decide_rejects_empty_history() -> None:
    with pytest.raises(MeasureInputError, match=r"^history:"):
        decide(StopRule(), [])
