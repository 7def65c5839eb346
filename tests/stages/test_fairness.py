"""Fairness per cycle: disparity ratios computed from the decisions, stored and logged by the
measure stage, and a flagged one escalating every next-cycle variant to a human."""

from __future__ import annotations

from sqlalchemy import update
from sqlmodel import col

from liftloop.loop.fairness import RULE_ID, FairnessRule, checks_of
from liftloop.loop.guard import GuardStage
from liftloop.loop.measure import MeasureStage
from liftloop.loop.payloads import GuardInput, MeasureInput
from policies import PolicyStore
from tests.audit_support import audit_for
from tests.stages.helpers import (
    CycleRefBuilder,
    RecordingSender,
    decisions,
    run_decide,
    run_generate,
    run_segment,
    run_send,
    send_stage,
)
from tools.audit import timeline
from tools.cdp.tables import Profile
from tools.measure.fairness import Person, disparities


def _people(group: str, n: int, treated: int, discount: float) -> list[Person]:
    return [
        Person(
            groups={"country": group},
            holdout=i % 10 == 0,
            treated=i % 10 != 0 and i < treated,
            discount_pct=discount,
            suppressed=False,
        )
        for i in range(n)
    ]


def test_ratios_flag_below_the_threshold_and_ignore_small_groups() -> None:
    people = _people("US", 200, 190, 20.0) + _people("DE", 200, 100, 10.0)
    people += _people("FR", 20, 0, 0.0)  # below min_group: left out
    found = {d.metric: d for d in disparities(people, min_ratio=0.8, min_group=100)}
    treatment = found["treatment"]
    assert set(treatment.rates) == {"US", "DE"} and treatment.lowest == "DE"
    assert treatment.ratio == round((90 / 180) / (171 / 180), 6) and treatment.flagged
    assert found["discount"].ratio == 0.5 and found["discount"].flagged
    assert found["holdout"].ratio == 1.0 and not found["holdout"].flagged
    assert disparities(_people("US", 200, 190, 20.0), min_group=100) == []  # one group only


def test_a_flagged_cycle_escalates_the_next_ones_variants(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:  # type: ignore[no-untyped-def]
    ref = cycle_ref(shards=2)
    run_segment(env, engine, ref)
    run_decide(env, engine, ref)
    ids = run_generate(env, engine, ref).variant_ids
    run_send(
        env, send_stage(engine, {"email": RecordingSender(), "push": RecordingSender()}), ref, ids
    )
    # Everyone offered nothing lives in DE, everyone else in US: the discount differs by country.
    nothing = [d.profile_id for d in decisions(engine, ref) if d.offer_id == "content"]
    with engine.begin() as conn:
        conn.execute(update(Profile).values(country="US"))
        conn.execute(update(Profile).where(col(Profile.id).in_(nothing)).values(country="DE"))
    audit = audit_for(engine)
    rule = FairnessRule(attributes=("country", "segment"), min_ratio=0.8, min_group=10)
    measured = ref.model_copy(update={"window_start": ref.started_at})
    env.run(MeasureStage(engine, audit, fairness_rule=rule).measure, MeasureInput(ref=measured))

    checks = {(c.attribute, c.metric): c for c in checks_of(engine, ref.campaign_id)}
    discount = checks[("country", "discount")]
    assert discount.flagged and (discount.lowest, discount.highest) == ("DE", "US")
    assert discount.rates["DE"] == 0.0 and discount.ratio == 0.0
    assert not checks[("country", "holdout")].flagged
    [logged] = [e for e in timeline(engine) if e.kind == "fairness.flagged"]
    assert {d["metric"] for d in logged.details["disparities"]} >= {"discount"}

    following = cycle_ref(shards=2, cycle=2)
    next_ids = run_generate(env, engine, following).variant_ids
    result = env.run(
        GuardStage(engine, PolicyStore.bundled(), audit).guard,
        GuardInput(ref=following, variant_ids=next_ids),
    )
    assert {v.decision for v in result.verdicts} == {"escalate"}
    for v in result.verdicts:
        assert RULE_ID in {r.rule_id for r in v.reasons}
    assert any(
        "discount rate ratio 0.00 across country" in r.explanation
        for v in result.verdicts
        for r in v.reasons
    )
