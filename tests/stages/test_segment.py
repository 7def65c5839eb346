"""SegmentStage.segment alone: the audience snapshot of one cycle."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from liftloop.loop.hashing import shard_of
from tests.stages.helpers import (
    BATCH,
    CUSTOMERS,
    OTHER_BATCH,
    CycleRefBuilder,
    add_consent,
    all_rows,
    consented_channels,
    members,
    run_segment,
)
from tools.cdp.tables import Profile


def test_audience_is_the_matching_profiles_with_consent_on_a_channel(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref()
    expected = consented_channels(engine, BATCH, ref.spec.channels)
    result = run_segment(env, engine, ref)

    stored = members(engine, ref)
    assert {m.profile_id for m in stored} == set(expected)
    assert result.audience == len(stored) == len(expected)
    # Everyone of the batch matched the segment; those without consent on e-mail or push are out.
    assert result.excluded_no_consent == CUSTOMERS - len(expected)
    assert 0 < result.excluded_no_consent < CUSTOMERS // 4
    assert result.shards == ref.shards
    # The other batch matches no part of the segment.
    assert not any(m.profile_id.startswith(f"{OTHER_BATCH}-") for m in stored)
    segments = {p.id: p.segment for p in all_rows(engine, Profile)}
    assert all(m.segment == segments[m.profile_id] for m in stored)


@pytest.mark.parametrize("channels", [["email", "push"], ["push", "email", "sms"], ["sms"]])
def test_channel_bitmask_follows_the_specs_channel_order(
    env, engine, cycle_ref: CycleRefBuilder, channels: list[str]
) -> None:
    ref = cycle_ref(channels=channels)
    expected = consented_channels(engine, BATCH, channels)
    run_segment(env, engine, ref)

    stored = {m.profile_id: m.channels for m in members(engine, ref)}
    assert set(stored) == set(expected)
    for pid, mask in stored.items():
        want = sum(1 << i for i, ch in enumerate(channels) if ch in expected[pid])
        assert mask == want, pid
    if len(channels) > 1:
        # Every single-channel bit and a combination occur, so the check above is not vacuous.
        masks = set(stored.values())
        assert {1 << i for i in range(2)} <= masks and 3 in masks


@pytest.mark.parametrize("shards", [1, 3, 5])
def test_shards_are_assigned_by_shard_of(env, engine, cycle_ref: CycleRefBuilder, shards) -> None:
    ref = cycle_ref(shards=shards)
    run_segment(env, engine, ref)
    stored = members(engine, ref)
    assert stored and all(m.shard == shard_of(m.profile_id, shards) for m in stored)
    assert {m.shard for m in stored} == set(range(shards))


def test_segment_filters_on_traits(env, engine, cycle_ref: CycleRefBuilder) -> None:
    segment = {"all": [{"trait": "source_batch", "eq": BATCH}, {"trait": "country", "eq": "DE"}]}
    ref = cycle_ref(audience={"segment": segment})
    german = {
        p.id for p in all_rows(engine, Profile) if p.country == "DE" and p.source_batch == BATCH
    }
    expected = {
        pid for pid in consented_channels(engine, BATCH, ref.spec.channels) if pid in german
    }
    result = run_segment(env, engine, ref)
    assert 0 < len(german) < CUSTOMERS
    assert {m.profile_id for m in members(engine, ref)} == expected
    assert result.excluded_no_consent == len(german) - len(expected)


def test_no_consent_for_the_purpose_means_an_empty_audience(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    # The synthetic customers consented to marketing only.
    ref = cycle_ref(
        audience={
            "segment": {"all": [{"trait": "source_batch", "eq": BATCH}]},
            "consent": {"purpose": "analytics"},
        }
    )
    result = run_segment(env, engine, ref)
    assert (result.audience, result.excluded_no_consent) == (0, CUSTOMERS)
    assert members(engine, ref) == []


def test_the_latest_consent_statement_wins(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref()
    before = consented_channels(engine, BATCH, ref.spec.channels)
    both = next(pid for pid, chans in sorted(before.items()) if chans == {"email", "push"})
    email_only = next(pid for pid, chans in sorted(before.items()) if chans == {"email"})
    nobody = next(f"{BATCH}-{i}" for i in range(CUSTOMERS) if f"{BATCH}-{i}" not in before)
    now = datetime.now(UTC)
    add_consent(engine, both, "email", False, now)
    add_consent(engine, both, "push", False, now)
    add_consent(engine, email_only, "push", True, now)
    add_consent(engine, nobody, "push", True, now)

    result = run_segment(env, engine, ref)
    stored = {m.profile_id: m.channels for m in members(engine, ref)}
    assert both not in stored
    assert stored[email_only] == 0b11 and stored[nobody] == 0b10
    assert result.audience == len(before)  # one left, one came in
    assert result.excluded_no_consent == CUSTOMERS - len(before)


def test_rerunning_a_cycle_replaces_its_snapshot(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref()
    first = run_segment(env, engine, ref)
    snapshot = sorted((m.profile_id, m.shard, m.channels) for m in members(engine, ref))
    again = run_segment(env, engine, ref)
    assert again == first
    assert sorted((m.profile_id, m.shard, m.channels) for m in members(engine, ref)) == snapshot

    # A retry after a withdrawal drops the person instead of keeping the old row beside it.
    leaver = snapshot[0][0]
    for channel in ref.spec.channels:
        add_consent(engine, leaver, channel, False, datetime.now(UTC))
    third = run_segment(env, engine, ref)
    after = members(engine, ref)
    assert third.audience == first.audience - 1 == len(after)
    assert leaver not in {m.profile_id for m in after}


def test_each_cycle_keeps_its_own_snapshot(env, engine, cycle_ref: CycleRefBuilder) -> None:
    one, two = cycle_ref(cycle=1), cycle_ref(cycle=2)
    run_segment(env, engine, one)
    leaver = sorted(m.profile_id for m in members(engine, one))[0]
    for channel in one.spec.channels:
        add_consent(engine, leaver, channel, False, datetime.now(UTC))
    run_segment(env, engine, two)
    assert leaver in {m.profile_id for m in members(engine, one)}
    assert leaver not in {m.profile_id for m in members(engine, two)}
    assert len(members(engine, one)) == len(members(engine, two)) + 1
