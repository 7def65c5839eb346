from __future__ import annotations

import numpy as np
import pytest

from tools.models import nba
from tools.models.bandits import ThompsonBandit
from tools.models.errors import ModelInputError
from tools.models.nba import (
    ActionSpace,
    ChannelOption,
    NbaInputs,
    OfferOption,
    decide,
    exploration_bandit,
    feature_hashes,
    learn_from_outcomes,
    score_chunks,
)

SPACE = ActionSpace(
    offers=[
        OfferOption(id="ten_off", discount_pct=10, margin_pct=42),
        OfferOption(id="twenty_off", discount_pct=20, margin_pct=42),
    ],
    channels=[ChannelOption(id="email", cost=0.01), ChannelOption(id="push", cost=0.002)],
    hours=[9, 18],
)


def _score_all(space: ActionSpace, inputs: NbaInputs) -> tuple[np.ndarray, np.ndarray]:
    """Scores and eligibility of everyone, (n, n_actions) each: `score_chunks` in one block."""
    n = int(inputs.base_conversion.shape[0])
    ((_, scores, eligible),) = score_chunks(space, inputs, chunk=max(n, 1))
    return scores, eligible


def _inputs(n: int, seed: int = 0, **overrides: object) -> NbaInputs:
    rng = np.random.default_rng(seed)
    fields: dict[str, object] = {
        "base_conversion": rng.uniform(0.0, 0.05, n),
        "uplift": rng.uniform(0.0, 0.04, (n, 2)),
        "order_value": rng.gamma(2.0, 30.0, n),
        "consent": np.ones((n, 2), dtype=bool),
        "capped": np.zeros(n, dtype=bool),
        "in_stock": np.array([True, True]),
        "hour_response": rng.uniform(0.5, 1.5, (n, 2)),
    }
    fields.update(overrides)
    return NbaInputs.model_validate(fields)


def test_action_catalogue_starts_with_doing_nothing() -> None:
    actions = SPACE.actions()
    assert SPACE.n_actions == len(actions) == 1 + 2 * 2 * 2
    assert actions[0].id == "none" and actions[0].offer is None
    assert actions[1].id == "ten_off/email/09"
    assert actions[-1].id == "twenty_off/push/18"


def test_score_is_incremental_margin_minus_discount_and_channel_cost() -> None:
    inputs = _inputs(
        1,
        base_conversion=np.array([0.02]),
        uplift=np.array([[0.03, 0.05]]),
        order_value=np.array([100.0]),
        hour_response=np.array([[1.0, 0.5]]),
    )
    scores, eligible = _score_all(SPACE, inputs)
    # ten_off by email at 09: 0.03*100*0.42 - (0.02+0.03)*100*0.10 - 0.01
    assert scores[0, 1] == pytest.approx(1.26 - 0.5 - 0.01)
    # twenty_off by push at 18: u = 0.05*0.5 -> 0.025*42 - 0.045*20 - 0.002
    assert scores[0, 8] == pytest.approx(1.05 - 0.9 - 0.002)
    assert scores[0, 0] == 0.0
    assert eligible.all()


def test_eligibility_masks_consent_caps_stock_and_max_discount() -> None:
    consent = np.array([[True, False], [True, True], [True, True]])
    capped = np.array([False, True, False])
    inputs = _inputs(
        3,
        consent=consent,
        capped=capped,
        in_stock=np.array([True, True]),
        max_discount_pct=15.0,
    )
    _, eligible = _score_all(SPACE, inputs)
    actions = SPACE.actions()
    for n in range(3):
        allowed = {a.id for a, ok in zip(actions, eligible[n], strict=True) if ok}
        assert "none" in allowed
        assert not any(a.startswith("twenty_off") for a in allowed)  # above max discount
        if n == 0:
            assert allowed == {"none", "ten_off/email/09", "ten_off/email/18"}
        if n == 1:
            assert allowed == {"none"}
    no_stock = _inputs(1, in_stock=np.array([False, True]))
    assert _score_all(SPACE, no_stock)[1][0].tolist() == [True] + [False] * 4 + [True] * 4


def test_decide_logs_propensities_that_match_the_choice_frequencies() -> None:
    n = 1
    inputs = _inputs(n, seed=3)
    bandit = exploration_bandit(SPACE, segments=1, prior_sd=0.5)
    picks = []
    props: dict[int, float] = {}
    for seed in range(2000):
        d = decide(
            SPACE, inputs, np.zeros(n, dtype=np.int64), bandit, seed=seed, propensity_draws=2000
        )
        picks.append(int(d.actions[0]))
        props.setdefault(int(d.actions[0]), float(d.propensities[0]))
    freq = np.bincount(picks, minlength=SPACE.n_actions) / len(picks)
    for action, p in props.items():
        assert freq[action] == pytest.approx(p, abs=0.03)


def test_decide_is_reproducible_and_respects_the_floor_and_eligibility() -> None:
    n = 5000
    consent = np.ones((n, 2), dtype=bool)
    consent[:, 1] = False
    inputs = _inputs(n, consent=consent, max_discount_pct=15.0)
    segments = np.arange(n) % 3
    bandit = exploration_bandit(SPACE, segments=3, prior_sd=0.05)
    a = decide(SPACE, inputs, segments, bandit, seed=11)
    b = decide(SPACE, inputs, segments, bandit, seed=11)
    assert np.array_equal(a.actions, b.actions)
    assert np.array_equal(a.propensities, b.propensities)
    _, eligible = _score_all(SPACE, inputs)
    assert eligible[np.arange(n), a.actions].all()
    assert (a.propensities >= 0.01 - 1e-12).all() and (a.propensities <= 1.0).all()
    assert (a.eligible_actions == 3).all()
    # Exploration is small next to exploitation: the best-scoring action is chosen most often.
    scores, _ = _score_all(SPACE, inputs)
    best = np.where(eligible, scores, -np.inf).argmax(axis=1)
    assert (a.actions == best).mean() > 0.6


def test_learned_residuals_change_the_decision() -> None:
    n = 2000
    inputs = _inputs(n, seed=5)
    segments = np.zeros(n, dtype=np.int64)
    bandit = exploration_bandit(SPACE, segments=1, prior_sd=0.2)
    before = decide(SPACE, inputs, segments, bandit, seed=1)
    # Realised margins of "do nothing" came out far above the prediction of 0.
    bandit.update(np.zeros(500, dtype=np.int64), np.zeros(500, dtype=np.int64), np.full(500, 5.0))
    after = decide(SPACE, inputs, segments, bandit, seed=1)
    assert (after.actions == 0).mean() > 0.9 > (before.actions == 0).mean()


def test_feature_hashes_tell_feature_rows_apart() -> None:
    # The decide stage logs this hash with each decision instead of the features.
    features = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]])
    hashes = feature_hashes(features)
    assert hashes[0] == hashes[1] != hashes[2]
    assert len(hashes[0]) == 24
    with pytest.raises(ModelInputError, match=r"^features:"):
        feature_hashes([1.0, 2.0])


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ModelInputError, match=r"^uplift: expected shape"):
        _score_all(SPACE, _inputs(2, uplift=np.zeros((2, 3))))
    with pytest.raises(ModelInputError, match=r"^base_conversion: must be probabilities"):
        _score_all(SPACE, _inputs(1, base_conversion=np.array([1.5])))
    bandit = exploration_bandit(SPACE, segments=1, prior_sd=0.2)
    with pytest.raises(ModelInputError, match=r"^segments: "):
        decide(SPACE, _inputs(2), np.array([0, 1]), bandit, seed=0)
    with pytest.raises(ValueError, match=r"hours"):
        ActionSpace(offers=SPACE.offers, channels=SPACE.channels, hours=[25])


def test_learning_from_outcomes_and_an_empty_shard() -> None:
    n = 1000
    inputs = _inputs(n, seed=9)
    segments = np.zeros(n, dtype=np.int64)
    bandit = exploration_bandit(SPACE, segments=1, prior_sd=0.05)
    d = decide(SPACE, inputs, segments, bandit, seed=3)
    # Every send turned out worse than predicted by 1.0: doing nothing should win afterwards.
    realised = np.where(d.actions == 0, 0.0, d.expected_margin - 1.0)
    learn_from_outcomes(bandit, segments, d.actions, realised, d.expected_margin)
    assert bandit.state.cycle == 1
    after = decide(SPACE, inputs, segments, bandit, seed=4)
    assert (after.actions == 0).mean() > (d.actions == 0).mean()
    empty = decide(SPACE, _inputs(0), np.zeros(0, dtype=np.int64), bandit, seed=1)
    assert empty.actions.size == 0
    with pytest.raises(ModelInputError, match=r"^realised_margin:"):
        learn_from_outcomes(bandit, [0], [0], [1.0, 2.0], [1.0])


def test_score_chunks_equal_one_pass() -> None:
    # Scores are elementwise per person: blocks of any size give the same bits (the measure
    # stage scores a campaign's whole history in blocks).
    inputs = _inputs(1000, seed=4)
    whole, eligible = _score_all(SPACE, inputs)
    parts = list(score_chunks(SPACE, inputs, chunk=300))
    assert [p[0] for p in parts] == [
        slice(0, 300),
        slice(300, 600),
        slice(600, 900),
        slice(900, 1000),
    ]
    np.testing.assert_array_equal(np.vstack([p[1] for p in parts]), whole)
    np.testing.assert_array_equal(np.vstack([p[2] for p in parts]), eligible)


def test_action_uplift_expresses_what_offer_times_channel_cannot() -> None:
    # ten_off works only by push and twenty_off only by email: no uplift[o] · channel_response[c]
    # product has that pattern (it would be a rank-one matrix).
    per_action = np.array([[[0.0, 0.08], [0.05, 0.0]]])
    inputs = _inputs(
        1,
        base_conversion=np.array([0.02]),
        uplift=np.zeros((1, 2)),
        action_uplift=per_action,
        order_value=np.array([100.0]),
        hour_response=np.array([[1.0, 0.5]]),
    )
    scores, _ = _score_all(SPACE, inputs)
    offers = {o.id: o for o in SPACE.offers}
    cost = {c.id: c.cost for c in SPACE.channels}
    implied = np.zeros((2, 2))
    for a, action in enumerate(SPACE.actions()[1:], start=1):
        assert action.offer is not None and action.channel is not None
        o, c = int(action.offer == "twenty_off"), int(action.channel == "push")
        hour = 1.0 if action.send_hour == 9 else 0.5
        u = per_action[0, o, c] * hour
        d = offers[action.offer].discount_pct / 100.0
        assert scores[0, a] == pytest.approx(
            u * 100 * 0.42 - (0.02 + u) * 100 * d - cost[action.channel]
        )
        if action.send_hour == 9:
            # Recover u from the score: score + p0·V·d + cost = u · V · (margin − d).
            implied[o, c] = (scores[0, a] + 0.02 * 100 * d + cost[action.channel]) / (
                100 * (0.42 - d)
            )
    np.testing.assert_allclose(implied, per_action[0], atol=1e-12)
    assert abs(np.linalg.det(implied)) > 1e-3  # not rank one
    assert SPACE.actions()[int(scores[0].argmax())].id == "ten_off/push/09"
    bandit = exploration_bandit(SPACE, segments=1, prior_sd=0.01)
    d = decide(SPACE, inputs, np.zeros(1, dtype=np.int64), bandit, seed=0, floor=0.0)
    assert SPACE.actions()[int(d.actions[0])].id == "ten_off/push/09"
    # Without action_uplift the same inputs score every send below doing nothing.
    plain = inputs.model_copy(update={"action_uplift": None})
    assert (_score_all(SPACE, plain)[0][0, 1:] < 0).all()


def test_action_uplift_makes_uplift_optional_and_is_checked() -> None:
    n = 3
    per_action = np.full((n, 2, 2), 0.01)
    without = _inputs(n, uplift=None, action_uplift=per_action)
    with_zeros = _inputs(n, uplift=np.zeros((n, 2)), action_uplift=per_action)
    np.testing.assert_array_equal(_score_all(SPACE, without)[0], _score_all(SPACE, with_zeros)[0])
    with pytest.raises(ModelInputError, match=r"^uplift: required unless action_uplift"):
        _score_all(SPACE, _inputs(n, uplift=None))
    with pytest.raises(ModelInputError, match=r"^action_uplift: expected shape \(3, 2, 2\)"):
        _score_all(SPACE, _inputs(n, action_uplift=np.zeros((n, 2))))
    bad = per_action.copy()
    bad[1, 0, 1] = np.nan
    with pytest.raises(ModelInputError, match=r"^action_uplift: must be finite"):
        _score_all(SPACE, _inputs(n, action_uplift=bad))
    with pytest.raises(ModelInputError, match=r"^uplift: expected shape"):
        _score_all(SPACE, _inputs(n, uplift=np.zeros((n, 3)), action_uplift=per_action))
    with pytest.raises(ModelInputError, match=r"^channel_response: must be omitted"):
        _score_all(SPACE, _inputs(n, action_uplift=per_action, channel_response=np.ones((n, 2))))


def test_action_uplift_of_a_product_scores_like_uplift_times_channel_response() -> None:
    n = 50
    rng = np.random.default_rng(6)
    uplift = rng.uniform(0.0, 0.04, (n, 2))
    response = rng.uniform(0.2, 1.5, (n, 2))
    product = _inputs(n, uplift=uplift, channel_response=response)
    per_action = product.model_copy(
        update={
            "uplift": None,
            "channel_response": None,
            "action_uplift": uplift[:, :, None] * response[:, None, :],
        }
    )
    np.testing.assert_array_equal(_score_all(SPACE, per_action)[0], _score_all(SPACE, product)[0])
    # And channel_response matters: without it the scores differ.
    plain = product.model_copy(update={"channel_response": None})
    assert not np.allclose(_score_all(SPACE, plain)[0], _score_all(SPACE, product)[0])


def _naive_policy(
    inputs: NbaInputs, segments: np.ndarray, bandit: ThompsonBandit, seed: int, draws: int
) -> tuple[np.ndarray, int]:
    """The policy decide must log, written the direct way (argmax over every action and draw),
    and the number of (person, draw) argmaxes that were ties."""
    residual = bandit.posterior_draws(np.random.default_rng(seed), draws).astype(np.float32)
    scores, eligible = _score_all(SPACE, inputs)
    masked = np.where(eligible, scores, -np.inf).astype(np.float32)
    total = masked[None, :, :] + residual[:, segments, :]  # (draws, n, actions)
    best = total.argmax(axis=2)
    ties = int(((total == total.max(axis=2, keepdims=True)).sum(axis=2) > 1).sum())
    n, k = scores.shape
    thompson = np.zeros((n, k))
    for row in best:
        thompson[np.arange(n), row] += 1.0
    thompson /= draws
    allowed = eligible.sum(axis=1, keepdims=True)
    f = np.minimum(0.01, 1.0 / allowed)
    policy = np.where(eligible, np.minimum(f + (1.0 - allowed * f) * thompson, 1.0), 0.0)
    return policy, ties


@pytest.mark.parametrize("prior_sd", [1e-12, 0.05, 3.0])
def test_decide_logs_exactly_the_naive_policy_across_chunks_and_ties(
    monkeypatch: pytest.MonkeyPatch, prior_sd: float
) -> None:
    # Small chunks and blocks so that one call crosses many of both.
    monkeypatch.setattr(nba, "CHUNK_PEOPLE", 37)
    monkeypatch.setattr(nba, "DRAW_BLOCK", 40)
    n, draws = 600, 20
    rng = np.random.default_rng(8)
    value = rng.gamma(2.0, 30.0, n)
    value[:100] = 0.0  # every send scores minus its cost
    hours = rng.uniform(0.5, 1.5, (n, 2))
    # Equal hour responses: both hours score the same. With prior_sd 1e-12 the residual vanishes
    # in float32, so the sums tie exactly and the lower action index must win, as in argmax.
    hours[100:300, 1] = hours[100:300, 0]
    consent = rng.random((n, 2)) < 0.8
    inputs = _inputs(
        n,
        seed=8,
        order_value=value,
        hour_response=hours,
        consent=consent,
        capped=rng.random(n) < 0.1,
    )
    segments = rng.integers(0, 3, n)
    bandit = exploration_bandit(SPACE, segments=3, prior_sd=prior_sd)
    # Learned residuals in segment 2 only; segments 0 and 1 keep the prior.
    bandit.update(np.full(50, 2), np.arange(50) % SPACE.n_actions, rng.normal(0, 0.3, 50))
    d = decide(SPACE, inputs, segments, bandit, seed=5, propensity_draws=draws)
    policy, ties = _naive_policy(inputs, segments, bandit, 5, draws)
    if prior_sd == 1e-12:
        assert ties > 1000
    rows = np.arange(n)
    np.testing.assert_array_equal(d.propensities, policy[rows, d.actions])
    scores, eligible = _score_all(SPACE, inputs)
    np.testing.assert_array_equal(d.expected_margin, scores[rows, d.actions])
    np.testing.assert_array_equal(d.eligible_actions, eligible.sum(axis=1))
    assert eligible[rows, d.actions].all()
