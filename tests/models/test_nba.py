from __future__ import annotations

import numpy as np
import pytest

from tools.models.errors import ModelInputError
from tools.models.nba import (
    ActionSpace,
    Channel,
    DecisionContext,
    NbaInputs,
    Offer,
    decide,
    decision_records,
    exploration_bandit,
    feature_hashes,
    learn_from_outcomes,
    score_actions,
    score_chunks,
)

SPACE = ActionSpace(
    offers=[
        Offer(id="ten_off", discount_pct=10, margin_pct=42),
        Offer(id="twenty_off", discount_pct=20, margin_pct=42),
    ],
    channels=[Channel(id="email", cost=0.01), Channel(id="push", cost=0.002)],
    hours=[9, 18],
)


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
    scores, eligible = score_actions(SPACE, inputs)
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
    _, eligible = score_actions(SPACE, inputs)
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
    assert score_actions(SPACE, no_stock)[1][0].tolist() == [True] + [False] * 4 + [True] * 4


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
    _, eligible = score_actions(SPACE, inputs)
    assert eligible[np.arange(n), a.actions].all()
    assert (a.propensities >= 0.01 - 1e-12).all() and (a.propensities <= 1.0).all()
    assert (a.eligible_actions == 3).all()
    # Exploration is small next to exploitation: the best-scoring action is chosen most often.
    scores, _ = score_actions(SPACE, inputs)
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


def test_decision_records_carry_the_log_fields() -> None:
    inputs = _inputs(3)
    bandit = exploration_bandit(SPACE, segments=1, prior_sd=0.2)
    d = decide(SPACE, inputs, np.zeros(3, dtype=np.int64), bandit, seed=2)
    features = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0]])
    hashes = feature_hashes(features)
    assert hashes[0] == hashes[1] != hashes[2]
    context = DecisionContext(
        campaign_id="winback", cycle=4, trace_id="ab" * 16, model_versions={"uplift": "v3"}
    )
    records = decision_records(SPACE, d, ["p1", "p2", "p3"], hashes, context)
    assert [r.action_id for r in records] == [SPACE.actions()[i].id for i in d.actions]
    assert records[2].propensity == pytest.approx(d.propensities[2])
    assert records[0].model_versions == {"uplift": "v3"} and records[0].cycle == 4
    assert records[0].model_dump()["trace_id"] == "ab" * 16


def test_bad_input_names_the_field() -> None:
    with pytest.raises(ModelInputError, match=r"^uplift: expected shape"):
        score_actions(SPACE, _inputs(2, uplift=np.zeros((2, 3))))
    with pytest.raises(ModelInputError, match=r"^base_conversion: must be probabilities"):
        score_actions(SPACE, _inputs(1, base_conversion=np.array([1.5])))
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
    inputs = _inputs(1000, seed=4)
    whole, eligible = score_actions(SPACE, inputs)
    parts = list(score_chunks(SPACE, inputs, chunk=300))
    assert [p[0] for p in parts] == [
        slice(0, 300),
        slice(300, 600),
        slice(600, 900),
        slice(900, 1000),
    ]
    np.testing.assert_array_equal(np.vstack([p[1] for p in parts]), whole)
    np.testing.assert_array_equal(np.vstack([p[2] for p in parts]), eligible)
