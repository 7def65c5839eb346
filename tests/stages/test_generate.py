"""GenerateStage.generate alone: one variant per arm, personal data left in slots."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import update
from sqlmodel import col

from liftloop.loop.builtin_templates import render_variant, slot_names
from liftloop.loop.copy_sources import ArmCopy
from liftloop.loop.generate import GenerateStage
from liftloop.loop.guard import GuardStage
from liftloop.loop.payloads import CycleRef, GuardInput
from liftloop.loop.stage_kit import variant_id
from liftloop.loop.tables import Variant
from policies import PolicyStore
from tests.audit_support import audit_for
from tests.stages.helpers import CycleRefBuilder, all_rows, profiles, run_generate
from tools.audit.tables import AuditRecord
from tools.content.ledger import SqlCostLedger, UsageEntry


def _variants(engine, ref: CycleRef) -> dict[str, Variant]:  # type: ignore[no-untyped-def]
    return {v.id: v for v in all_rows(engine, Variant, col(Variant.campaign_id) == ref.campaign_id)}


@pytest.mark.parametrize("language", ["en", "de"])
def test_one_variant_per_arm_with_its_template(
    env, engine, cycle_ref: CycleRefBuilder, language: str
) -> None:
    market = "US" if language == "en" else "DE"
    ref = cycle_ref(content={"market": market, "language": language}, cycle=2)
    result = run_generate(env, engine, ref)
    assert result.variant_ids == [variant_id(ref, arm) for arm, _, _ in ref.spec.arms]
    stored = _variants(engine, ref)
    assert set(stored) == set(result.variant_ids)
    offers = {arm: (o, c) for arm, o, c in ref.spec.arms}
    for vid in result.variant_ids:
        v = stored[vid]
        offer, channel = offers[v.arm]
        template, subject, body = render_variant("offer_email", language, offer.discount_pct)
        assert (v.campaign_id, v.cycle, v.channel) == (ref.campaign_id, 2, channel)
        assert (v.template_id, v.template_version) == ("offer_email", template.version)
        assert (v.subject, v.body) == (subject, body)
        assert (v.model, v.verdict, v.approved, v.citations) == ("template", "pending", None, [])
        # The offer's discount is in the copy of its arm and in no other.
        pct = f"{offer.discount_pct:g}"
        assert (f"{pct}%" in body or f"{pct} %" in body) == bool(offer.discount_pct)
    versions = {v.template_version for v in stored.values()}
    assert len(versions) == 1 and len(next(iter(versions))) == 12


def test_no_personal_data_in_any_variant(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref()
    run_generate(env, engine, ref)
    people = profiles(engine).values()
    names = {p.first_name for p in people if p.first_name}
    assert len(names) > 5
    name_pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    for v in _variants(engine, ref).values():
        text = f"{v.subject}\n{v.body}"
        assert name_pattern.search(text) is None, v.id
        assert not any(p.email and p.email in text for p in people)
        assert not any(re.search(rf"\b{re.escape(p.id)}\b", text) for p in people)
        # The personal parts are slots the send stage fills.
        assert "first_name" in slot_names(v.subject, v.body)
        assert {"unsubscribe_url", "sender_address"} <= set(slot_names(v.body))


def test_rerunning_generate_replaces_the_variants(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref()
    first = run_generate(env, engine, ref)
    before = {vid: (v.subject, v.body) for vid, v in _variants(engine, ref).items()}
    with engine.begin() as conn:
        conn.execute(
            update(Variant)
            .where(col(Variant.id) == first.variant_ids[0])
            .values(body="tampered", verdict="allow", approved=True)
        )
    again = run_generate(env, engine, ref)
    after = _variants(engine, ref)
    assert again == first
    assert len(after) == len(first.variant_ids)
    assert {vid: (v.subject, v.body) for vid, v in after.items()} == before
    assert (after[first.variant_ids[0]].verdict, after[first.variant_ids[0]].approved) == (
        "pending",
        None,
    )


def test_each_cycle_has_its_own_variants(env, engine, cycle_ref: CycleRefBuilder) -> None:
    one = run_generate(env, engine, cycle_ref(cycle=1))
    two = run_generate(env, engine, cycle_ref(cycle=2))
    assert not set(one.variant_ids) & set(two.variant_ids)
    assert len(_variants(engine, cycle_ref())) == len(one.variant_ids) + len(two.variant_ids)


def test_copywriter_generator_stores_what_the_copy_source_wrote(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    calls: list[tuple[str, str, str]] = []

    def copywriter(spec, offer, channel, arm, cycle):  # type: ignore[no-untyped-def]
        calls.append((offer.id, channel, arm))
        return ArmCopy(
            subject=f"{{first_name}}: {arm}",
            body=f"{offer.id} on {channel}\n{{sender_address}}\n{{unsubscribe_url}}",
            template_id="winback_email",
            template_version="v-test",
            model="test-model",
            snapshot_id="snap-1",
            citations=("doc-1#2",),
        )

    ref = cycle_ref(content={"generator": "copywriter", "market": "US", "brand": "demo"})
    result = env.run(
        GenerateStage(engine, copywriter, audit_for(engine), SqlCostLedger(engine)).generate, ref
    )
    assert calls == [(o.id, c, a) for a, o, c in ref.spec.arms]
    stored = _variants(engine, ref)
    for vid in result.variant_ids:
        v = stored[vid]
        assert v.subject == f"{{first_name}}: {v.arm}"
        assert (v.template_id, v.template_version, v.model) == (
            "winback_email",
            "v-test",
            "test-model",
        )
        assert (v.snapshot_id, v.citations) == ("snap-1", ["doc-1#2"])


def _model_copy(arm: str, cycle: int) -> ArmCopy:
    return ArmCopy(
        subject=f"Cycle {cycle}: {arm}",
        body="Hello {first_name}\n{sender_address}\n{unsubscribe_url}",
        template_id="winback_email",
        template_version="v-test",
        model="gpt-test",
    )


def test_a_spent_model_budget_stops_new_copy_not_the_campaign(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    calls: list[int] = []
    ledger = SqlCostLedger(engine)

    def copywriter(spec, offer, channel, arm, cycle):  # type: ignore[no-untyped-def]
        calls.append(cycle)
        # Each variant costs 0.4 EUR: the second arm of the first cycle crosses the budget.
        ledger.record(UsageEntry(campaign_id=spec.id, cycle=cycle, model="gpt-test", cost_eur=0.4))
        return _model_copy(arm, cycle)

    content = {"generator": "copywriter", "market": "US", "model_budget_eur": 0.5}
    stage = GenerateStage(engine, copywriter, audit_for(engine), ledger)
    first = env.run(stage.generate, cycle_ref(content=content, cycle=1))
    arms = [arm for arm, _, _ in cycle_ref(content=content).spec.arms]
    assert calls == [1, 1] and len(arms) > 2
    stored = _variants(engine, cycle_ref(content=content))
    subjects = [stored[v].subject for v in first.variant_ids]
    # Arms past the budget in the first cycle have no copy of their own yet: built-in template.
    assert subjects[:2] == [f"Cycle 1: {a}" for a in arms[:2]]
    assert all(not s.startswith("Cycle") for s in subjects[2:])
    second = env.run(stage.generate, cycle_ref(content=content, cycle=2))
    assert calls == [1, 1], "no model call once the budget is spent"
    stored = _variants(engine, cycle_ref(content=content))
    assert [stored[v].subject for v in second.variant_ids][:2] == subjects[:2]
    spent = all_rows(engine, AuditRecord, col(AuditRecord.kind) == "model.budget_spent")
    assert len(spent) == 1 and '"budget_eur":0.5' in spent[0].body.replace(" ", "")


def test_copy_the_copywriter_could_not_make_acceptable_is_blocked(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    def copywriter(spec, offer, channel, arm, cycle):  # type: ignore[no-untyped-def]
        blocked = (("claim.health_promise", "still promises a cure after 2 revisions"),)
        return _model_copy(arm, cycle).model_copy(update={"blocked": blocked})

    ref = cycle_ref(content={"generator": "copywriter", "market": "US"})
    stage = GenerateStage(engine, copywriter, audit_for(engine), SqlCostLedger(engine))
    ids = env.run(stage.generate, ref).variant_ids
    guard = GuardStage(engine, PolicyStore.bundled(), audit_for(engine))
    verdicts = env.run(guard.guard, GuardInput(ref=ref, variant_ids=ids)).verdicts
    assert {v.decision for v in verdicts} == {"block"}
    assert all(
        "generation.claim.health_promise" in {r.rule_id for r in v.reasons} for v in verdicts
    )
