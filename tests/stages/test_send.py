"""SendStage.send alone: the outbox, slots filled at send time, exactly once, consent again."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlmodel import col

from connectors.ports import TransientSendError
from liftloop.loop import next_best_action
from liftloop.loop import send as send_module
from liftloop.loop.builtin_templates import SLOT
from liftloop.loop.hashing import message_id
from liftloop.loop.payloads import CycleRef, SendResult
from liftloop.loop.stage_kit import variant_id
from liftloop.loop.tables import Variant
from tests.stages.helpers import (
    LINKS,
    SENDER_SLOTS,
    CycleRefBuilder,
    RecordingSender,
    add_consent,
    all_rows,
    decisions,
    outbox,
    profiles,
    run_decide,
    run_generate,
    run_segment,
    run_send,
    send_stage,
)
from tools.cdp.tables import Profile


def _prepare(env, engine, ref: CycleRef, models=None) -> list[str]:  # type: ignore[no-untyped-def]
    """Segment, decide and generate; returns the approved variants: all but twenty_off."""
    run_segment(env, engine, ref)
    run_decide(env, engine, ref, models)
    ids = run_generate(env, engine, ref).variant_ids
    return [v for v in ids if "twenty_off" not in v]


def _senders() -> dict[str, RecordingSender]:
    return {"email": RecordingSender(), "push": RecordingSender()}


def _totals(results: list[SendResult]) -> tuple[int, int, int, int]:
    return (
        sum(r.sent for r in results),
        sum(r.failed for r in results),
        sum(r.suppressed for r in results),
        sum(r.already_sent for r in results),
    )


def test_outbox_has_one_row_per_decision_and_unapproved_variants_are_suppressed(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(shards=2)
    approved = _prepare(env, engine, ref)
    senders = _senders()
    results = run_send(env, send_stage(engine, senders), ref, approved)

    decided = {d.profile_id: d for d in decisions(engine, ref)}
    rows = outbox(engine, ref)
    treated = {pid for pid, d in decided.items() if not d.holdout}
    assert len(rows) == len(treated) and {r.profile_id for r in rows} == treated
    for r in rows:
        d = decided[r.profile_id]
        assert r.id == message_id(ref.campaign_id, ref.cycle, r.profile_id, d.channel)
        assert (r.channel, r.shard, r.variant_id) == (d.channel, d.shard, variant_id(ref, d.arm))
        if d.offer_id == "twenty_off":
            assert (r.status, r.error, r.attempts, r.sent_at) == (
                "suppressed",
                "variant not approved",
                0,
                None,
            )
        else:
            assert (r.status, r.error, r.attempts) == ("sent", None, 1)
            assert r.provider_id == f"p-{r.id}" and r.sent_at is not None
    statuses = Counter(r.status for r in rows)
    assert statuses["sent"] > 0 and statuses["suppressed"] > 0
    assert _totals(results) == (statuses["sent"], 0, statuses["suppressed"], 0)
    for r in results:
        shard_rows = [x for x in rows if x.shard == r.shard]
        assert r.sent == sum(x.status == "sent" for x in shard_rows)
    # Each provider got exactly its channel's sent rows.
    for channel, sender in senders.items():
        assert set(sender.delivered) == {
            r.id for r in rows if r.status == "sent" and r.channel == channel
        }
        assert {m.channel for m in sender.delivered.values()} == {channel}


def test_personal_slots_are_filled_only_at_send_time(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(shards=1)
    approved = _prepare(env, engine, ref)
    senders = _senders()
    run_send(env, send_stage(engine, senders), ref, approved)
    people = profiles(engine)
    by_id = {r.id: r for r in outbox(engine, ref)}
    messages = [m for s in senders.values() for m in s.delivered.values()]
    assert messages
    for m in messages:
        person = people[by_id[m.id].profile_id]
        assert person.first_name
        assert m.subject.startswith(f"{person.first_name}, ")
        assert f"Hi {person.first_name}," in m.body
        assert "{first_name}" not in m.subject + m.body
        assert SLOT.search(m.subject + m.body) is None
        unsubscribe = LINKS.unsubscribe_url.replace("{message_id}", m.id)
        assert f"Unsubscribe: {unsubscribe}\n" in m.body
        assert SENDER_SLOTS["sender_address"] in m.body
        assert m.campaign_id == ref.campaign_id
        assert m.recipient == (person.email if m.channel == "email" else f"device:{person.id}")
    # The stored variants keep their slots.
    for v in all_rows(engine, Variant):
        assert "{first_name}" in v.subject


def test_sending_twice_sends_nothing_more(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref(shards=2)
    approved = _prepare(env, engine, ref)
    senders = _senders()
    stage = send_stage(engine, senders)
    first = run_send(env, stage, ref, approved)
    delivered = {ch: list(s.deliveries) for ch, s in senders.items()}
    calls = {ch: s.calls for ch, s in senders.items()}
    rows = sorted((r.id, r.status, r.attempts) for r in outbox(engine, ref))

    second = run_send(env, stage, ref, approved)
    assert second == first
    assert {ch: s.calls for ch, s in senders.items()} == calls
    assert {ch: list(s.deliveries) for ch, s in senders.items()} == delivered
    assert sorted((r.id, r.status, r.attempts) for r in outbox(engine, ref)) == rows


def test_an_outage_mid_batch_leaves_the_rest_pending_and_a_retry_completes(
    env, engine, cycle_ref: CycleRefBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(send_module, "SEND_BATCH", 10)
    ref = cycle_ref(shards=1, channels=["email"])
    approved = _prepare(env, engine, ref)
    # The third batch: four messages reach the provider, then the connection drops.
    email = RecordingSender(fail_on_call=3, deliver_before_failing=4)
    stage = send_stage(engine, {"email": email})
    with pytest.raises(TransientSendError):
        run_send(env, stage, ref, approved)

    rows = outbox(engine, ref)
    to_send = [r for r in rows if r.status != "suppressed"]
    assert len(to_send) > 30
    sent = {r.id for r in rows if r.status == "sent"}
    # Only the two acknowledged batches are marked; everything else waits.
    assert len(sent) == 20 and sent == set(email.deliveries[:20])
    assert {r.status for r in to_send if r.id not in sent} == {"pending"}
    assert len(email.delivered) == 24

    (result,) = run_send(env, stage, ref, approved)
    rows = outbox(engine, ref)
    assert all(r.status == "sent" for r in rows if r.status != "suppressed")
    assert result.sent == len(to_send) and result.failed == 0
    # The four the provider already had come back as duplicates under the same ids.
    assert result.already_sent == 4
    assert len(email.deliveries) == len(set(email.deliveries)) == len(to_send)
    assert set(email.delivered) == {r.id for r in rows if r.status == "sent"}
    assert all(r.attempts == 1 for r in rows if r.status == "sent")


def test_a_permanent_refusal_is_failed_and_not_retried(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(shards=1, channels=["email"])
    approved = _prepare(env, engine, ref)
    people = profiles(engine)
    pending = [d for d in decisions(engine, ref) if not d.holdout and d.offer_id != "twenty_off"]
    refused = people[sorted(d.profile_id for d in pending)[0]].email
    email = RecordingSender(refuse=frozenset({refused}))
    stage = send_stage(engine, {"email": email})
    (first,) = run_send(env, stage, ref, approved)
    failed = [r for r in outbox(engine, ref) if r.status == "failed"]
    assert len(failed) == 1 and first.failed == 1
    assert failed[0].error == "recipient refused" and failed[0].sent_at is None
    calls = email.calls
    (second,) = run_send(env, stage, ref, approved)
    assert second == first and email.calls == calls


def test_consent_withdrawn_after_decide_suppresses_with_a_policy_reason(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(shards=1)
    approved = _prepare(env, engine, ref)
    by_email = sorted(
        d.profile_id
        for d in decisions(engine, ref)
        if not d.holdout and d.channel == "email" and d.offer_id != "twenty_off"
    )
    withdrawn, other_channel = by_email[0], by_email[1]
    now = datetime.now(UTC)
    add_consent(engine, withdrawn, "email", False, now)
    # Withdrawing push says nothing about an e-mail.
    add_consent(engine, other_channel, "push", False, now)

    senders = _senders()
    (result,) = run_send(env, send_stage(engine, senders), ref, approved)
    rows = {r.profile_id: r for r in outbox(engine, ref)}
    assert rows[withdrawn].status == "suppressed"
    assert rows[withdrawn].error is not None and rows[withdrawn].error.startswith("policy: ")
    assert "consent.missing" in rows[withdrawn].error
    assert rows[withdrawn].id not in senders["email"].delivered
    assert rows[other_channel].status == "sent"
    assert rows[other_channel].id in senders["email"].delivered
    assert result.suppressed == sum(r.status == "suppressed" for r in rows.values())


def test_do_nothing_decisions_get_no_message(
    env, engine, cycle_ref: CycleRefBuilder, models
) -> None:
    ref = cycle_ref(shards=2, experiment={"policy": "nba"})
    approved = _prepare(env, engine, ref, models)
    run_send(env, send_stage(engine, _senders()), ref, approved)
    decided = decisions(engine, ref)
    nothing = {d.profile_id for d in decided if d.arm == next_best_action.DO_NOTHING}
    held = {d.profile_id for d in decided if d.holdout}
    assert nothing and held
    sent_to = {r.profile_id for r in outbox(engine, ref)}
    assert sent_to == {d.profile_id for d in decided} - nothing - held


def test_a_person_without_an_address_is_not_sent_to_an_empty_recipient(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(shards=1, channels=["email"])
    approved = _prepare(env, engine, ref)
    pid = sorted(
        d.profile_id for d in decisions(engine, ref) if not d.holdout and d.offer_id != "twenty_off"
    )[0]
    with engine.begin() as conn:
        conn.execute(update(Profile).where(col(Profile.id) == pid).values(email=None))
    email = RecordingSender()
    run_send(env, send_stage(engine, {"email": email}), ref, approved)
    assert all(m.recipient for m in email.delivered.values())
    (row,) = [r for r in outbox(engine, ref) if r.profile_id == pid]
    assert (row.status, row.error) == ("suppressed", "no email address")
