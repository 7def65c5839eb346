"""DecideStage.decide alone: holdout by the CDP's bucket, the policy's arms and propensities."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from liftloop.loop import bandit_store, next_best_action
from liftloop.loop.payloads import CycleRef
from liftloop.loop.stage_kit import policy_seed
from liftloop.loop.tables import DecisionRecord
from tests.stages.helpers import (
    CycleRefBuilder,
    all_rows,
    decisions,
    members,
    run_decide,
    run_segment,
)
from tools.cdp.people import BUCKETS
from tools.cdp.tables import PROFILE_SEGMENTS, BucketAssignment
from tools.models import nba


def _decided(env, engine, ref: CycleRef, models=None) -> list[DecisionRecord]:  # type: ignore[no-untyped-def]
    run_segment(env, engine, ref)
    run_decide(env, engine, ref, models)
    return decisions(engine, ref)


def _consented(engine, ref: CycleRef) -> dict[str, set[str]]:  # type: ignore[no-untyped-def]
    return {
        m.profile_id: {c for i, c in enumerate(ref.spec.channels) if m.channels & (1 << i)}
        for m in members(engine, ref)
    }


def _key(rows: list[DecisionRecord]) -> list[tuple[object, ...]]:
    return sorted(
        (d.profile_id, d.shard, d.segment, d.holdout, d.arm, d.offer_id, d.channel, d.propensity)
        for d in rows
    )


@pytest.mark.parametrize("holdout_pct", [10.0, 30.0])
def test_holdout_is_the_cdp_bucket_below_the_cut(
    env, engine, cycle_ref: CycleRefBuilder, holdout_pct: float
) -> None:
    ref = cycle_ref(experiment={"holdout_pct": holdout_pct})
    run_segment(env, engine, ref)
    results = run_decide(env, engine, ref)
    rows = decisions(engine, ref)
    audience = members(engine, ref)
    assert len(rows) == len(audience) == sum(r.decided for r in results)
    assert {d.profile_id for d in rows} == {m.profile_id for m in audience}

    # The bucket the CDP stored for each person under the campaign's salt decides the holdout.
    stored = {
        b.assigned_id: b.bucket
        for b in all_rows(engine, BucketAssignment)
        if b.salt == ref.spec.salt
    }
    cut = holdout_pct / 100 * BUCKETS
    for d in rows:
        assert d.holdout == (stored[d.profile_id] < cut), d.profile_id
    held = [d for d in rows if d.holdout]
    assert sum(r.held_out for r in results) == len(held)
    # ~290 people: the share is within four standard errors of the spec's percentage.
    share, p = len(held) / len(rows), holdout_pct / 100
    assert abs(share - p) < 4 * (p * (1 - p) / len(rows)) ** 0.5
    for d in held:
        assert (d.arm, d.offer_id, d.channel) == ("holdout", "", "")
        assert d.propensity == pytest.approx(p)


def test_uniform_propensity_is_the_arm_probability_times_the_non_holdout_share(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(experiment={"holdout_pct": 20.0})
    rows = _decided(env, engine, ref)
    consented = _consented(engine, ref)
    arms = {a: (o.id, c) for a, o, c in ref.spec.arms}
    treated = [d for d in rows if not d.holdout]
    assert treated
    for d in treated:
        eligible = [a for a, (_, c) in arms.items() if c in consented[d.profile_id]]
        # Only the channels the person consented to get arms.
        assert d.arm in eligible and d.channel in consented[d.profile_id]
        assert (d.offer_id, d.channel) == arms[d.arm]
        assert d.propensity == pytest.approx(1 / len(eligible) * (1 - 0.2))
        assert d.policy == "uniform" and d.model_versions is None
    # Every arm is used, none by more than chance would allow.
    counts = Counter(d.arm for d in treated)
    assert set(counts) == set(arms)


def test_per_arm_counts_match_the_log(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref()
    run_segment(env, engine, ref)
    results = run_decide(env, engine, ref)
    rows = decisions(engine, ref)
    for r in results:
        shard_rows = [d for d in rows if d.shard == r.shard]
        assert r.decided == len(shard_rows)
        assert r.per_arm == dict(Counter(d.arm for d in shard_rows if not d.holdout))


def _favour_one_arm(engine, ref: CycleRef, arm: str) -> None:  # type: ignore[no-untyped-def]
    """Stores a measured cycle's posterior in which `arm` converts and every other arm does not."""
    with engine.begin() as conn:
        bandit = bandit_store.thompson_bandit(conn, ref)
        arm_names = [a for a, _, _ in ref.spec.arms]
        segs, picked, rewards = [], [], []
        for s in range(len(PROFILE_SEGMENTS)):
            for k, name in enumerate(arm_names):
                segs += [s] * 300
                picked += [k] * 300
                rewards += [1.0 if name == arm else 0.0] * 300
        bandit.update(segs, picked, rewards)
        bandit_store.store(conn, ref, bandit)


def test_thompson_follows_the_stored_posterior(env, engine, cycle_ref: CycleRefBuilder) -> None:
    measured = cycle_ref(cycle=1, experiment={"policy": "thompson"})
    _favour_one_arm(engine, measured, "ten_off@email")
    ref = cycle_ref(cycle=2, experiment={"policy": "thompson"})
    rows = _decided(env, engine, ref)
    consented = _consented(engine, ref)

    with engine.connect() as conn:
        table = bandit_store.thompson_bandit(conn, ref).arm_probabilities(seed=policy_seed(ref))
    arms = [a for a, _, _ in ref.spec.arms]
    treated = [d for d in rows if not d.holdout]
    for d in treated:
        eligible = np.array([c in consented[d.profile_id] for _, _, c in ref.spec.arms])
        p = np.where(eligible, table[PROFILE_SEGMENTS.index(d.segment)], 0.0)
        assert d.propensity == pytest.approx(p[arms.index(d.arm)] / p.sum() * 0.9)
        assert d.policy == "thompson" and d.channel in consented[d.profile_id]
    by_email = [d for d in treated if "email" in consented[d.profile_id]]
    favoured = sum(d.arm == "ten_off@email" for d in by_email) / len(by_email)
    assert favoured > 0.8

    # The same people under the uniform policy spread over the arms.
    uniform = cycle_ref(cycle=2, campaign_id="stg-uniform")
    urows = _decided(env, engine, uniform)
    uconsented = _consented(engine, uniform)
    u_email = [d for d in urows if not d.holdout and "email" in uconsented[d.profile_id]]
    assert sum(d.arm == "ten_off@email" for d in u_email) / len(u_email) < 0.5


@pytest.mark.parametrize("policy", ["uniform", "thompson", "nba"])
def test_rerunning_decide_gives_identical_decisions(
    env, engine, cycle_ref: CycleRefBuilder, models, policy: str
) -> None:
    ref = cycle_ref(experiment={"policy": policy})
    first = _key(_decided(env, engine, ref, models))
    again = run_decide(env, engine, ref, models)
    rows = decisions(engine, ref)
    assert _key(rows) == first
    assert sum(r.decided for r in again) == len(rows)


def test_holdout_is_stable_across_cycles_while_arms_are_redrawn(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    one = _decided(env, engine, cycle_ref(cycle=1))
    two = _decided(env, engine, cycle_ref(cycle=2))
    assert {d.profile_id for d in one if d.holdout} == {d.profile_id for d in two if d.holdout}
    arm1 = {d.profile_id: d.arm for d in one if not d.holdout}
    arm2 = {d.profile_id: d.arm for d in two if not d.holdout}
    assert any(arm1[p] != arm2[p] for p in arm1)


def test_nba_runs_without_a_model_and_logs_versions_and_feature_hashes(
    env, engine, cycle_ref: CycleRefBuilder, models
) -> None:
    ref = cycle_ref(experiment={"policy": "nba", "holdout_pct": 10.0})
    rows = _decided(env, engine, ref, models)
    consented = _consented(engine, ref)
    action_arms = {a: (o, c) for a, o, c in next_best_action.action_arms(ref.spec)}
    treated = [d for d in rows if not d.holdout]
    assert treated

    with engine.connect() as conn:
        pids = [d.profile_id for d in treated]
        hashes = dict(
            zip(pids, nba.feature_hashes(next_best_action.features(conn, pids)), strict=True)
        )
    for d in treated:
        assert d.policy == "nba"
        assert d.model_versions == {"uplift": "none", "residual_bandit": "prior"}
        assert d.feature_hash == hashes[d.profile_id]
        assert d.expected_margin is not None and d.trace_id
        assert (d.offer_id, d.channel) == action_arms[d.arm]
        if d.arm != next_best_action.DO_NOTHING:
            assert d.channel in consented[d.profile_id]
        assert 0 < d.propensity <= 0.9 + 1e-9
    for d in rows:
        if d.holdout:
            assert d.model_versions is None and d.feature_hash is None
    # The prior explores: doing nothing and sending are both chosen.
    chosen = Counter(d.arm for d in treated)
    assert chosen[next_best_action.DO_NOTHING] > 0 and len(chosen) > 1
    # No model was needed, so none was written.
    assert not any(models.root.glob("*/v*"))
