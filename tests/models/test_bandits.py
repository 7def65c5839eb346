from __future__ import annotations

import numpy as np
import pytest

from tools.models.bandits import ThompsonBandit
from tools.models.errors import ModelInputError

TRUE_RATES = np.array([[0.02, 0.06, 0.03], [0.10, 0.04, 0.04]])


def _run(bandit: ThompsonBandit, cycles: int, seed: int) -> ThompsonBandit:
    rng = np.random.default_rng(seed)
    for cycle in range(cycles):
        segments = rng.integers(0, 2, 2000)
        choice = bandit.choose(segments, seed=1000 + cycle)
        clicks = rng.random(segments.size) < TRUE_RATES[segments, choice.arms]
        bandit.update(segments, choice.arms, clicks)
    return bandit


def test_learns_the_best_arm_per_segment_and_keeps_the_floor() -> None:
    bandit = _run(ThompsonBandit.create(["a", "b", "c"], segments=2), cycles=8, seed=0)
    table = bandit.arm_probabilities(seed=99)
    assert table.argmax(axis=1).tolist() == [1, 0]
    assert table.max(axis=1).min() > 0.9
    assert table.min() >= 0.01 - 1e-12
    np.testing.assert_allclose(table.sum(axis=1), 1.0)
    assert bandit.state.cycle == 8


def test_same_seed_same_choices_and_json_round_trip() -> None:
    bandit = _run(ThompsonBandit.create(["a", "b", "c"], segments=2), cycles=2, seed=1)
    segments = np.arange(100) % 2
    restored = ThompsonBandit.from_json(bandit.to_json())
    first = bandit.choose(segments, seed=7)
    again = restored.choose(segments, seed=7)
    assert np.array_equal(first.arms, again.arms)
    assert np.array_equal(first.propensities, again.propensities)
    assert not np.array_equal(first.arms, bandit.choose(segments, seed=8).arms)


def test_propensities_are_the_probabilities_the_arms_were_drawn_with() -> None:
    bandit = _run(ThompsonBandit.create(["a", "b", "c"], segments=2), cycles=1, seed=2)
    segments = np.zeros(200_000, dtype=np.int64)
    choice = bandit.choose(segments, seed=3)
    observed = np.bincount(choice.arms, minlength=3) / segments.size
    np.testing.assert_allclose(observed, choice.arm_probabilities[0], atol=0.005)
    assert np.allclose(choice.propensities, choice.arm_probabilities[0, choice.arms])


def test_top_two_gives_the_challenger_a_share() -> None:
    plain = _run(ThompsonBandit.create(["a", "b", "c"], segments=2), cycles=8, seed=0)
    top_two = ThompsonBandit.create(["a", "b", "c"], segments=2, top_two_beta=0.5)
    top_two = _run(top_two, cycles=8, seed=0)
    leader_share = top_two.arm_probabilities(seed=5)[0, 1]
    assert 0.4 < leader_share < 0.7
    assert plain.arm_probabilities(seed=5)[0, 1] > 0.9


def test_gaussian_bandit_prefers_the_higher_mean() -> None:
    rng = np.random.default_rng(4)
    bandit = ThompsonBandit.create(["x", "y"], kind="gaussian", prior_sd=10.0, floor=0.05)
    arms = np.repeat([0, 1], 400)
    bandit.update(np.zeros(800, dtype=np.int64), arms, rng.normal(5.0 + arms, 2.0))
    table = bandit.arm_probabilities(seed=1)
    assert table[0, 1] > 0.9
    assert table[0, 0] >= 0.05 - 1e-12
    np.testing.assert_allclose(bandit.posterior_means()[0], [5.0, 6.0], atol=0.3)


def test_bad_input_is_refused_with_the_field_name() -> None:
    bandit = ThompsonBandit.create(["a", "b"], segments=2)
    with pytest.raises(ModelInputError, match=r"^segments: must be in"):
        bandit.choose([0, 2], seed=1)
    with pytest.raises(ModelInputError, match=r"^rewards: must be in \[0, 1\]"):
        bandit.update([0], [1], [2.0])
    with pytest.raises(ModelInputError, match=r"^arms: "):
        bandit.update([0], [5], [1.0])
    with pytest.raises(ModelInputError, match=r"^bandit: .*floor"):
        ThompsonBandit.create(["a", "b"], floor=0.6)
    with pytest.raises(ModelInputError, match=r"^bandit_state:"):
        ThompsonBandit.from_json('{"kind": "bernoulli"}')
