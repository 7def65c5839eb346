"""GuardStage.guard alone: brand policy and campaign limits per variant, verdict on the row."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlmodel import Session, col

from liftloop.loop.guard import GuardStage
from liftloop.loop.payloads import CycleRef, GuardInput, GuardResult
from liftloop.loop.tables import Variant
from policies import PolicyStore
from tests.audit_support import audit_for
from tests.stages.helpers import CycleRefBuilder, all_rows, run_generate

FOOTER = "\n\n--\n{sender_address}\nUnsubscribe: {unsubscribe_url}\n"


@pytest.fixture(scope="module")
def policies() -> PolicyStore:
    return PolicyStore.bundled()


def _guard(env, engine, policies, ref: CycleRef, ids: list[str]) -> GuardResult:  # type: ignore[no-untyped-def]
    return env.run(
        GuardStage(engine, policies, audit_for(engine)).guard, GuardInput(ref=ref, variant_ids=ids)
    )


def _rows(engine, ref: CycleRef) -> dict[str, Variant]:  # type: ignore[no-untyped-def]
    return {v.id: v for v in all_rows(engine, Variant, col(Variant.campaign_id) == ref.campaign_id)}


def _craft(engine, ref: CycleRef, name: str, arm: str, subject: str, body: str) -> str:  # type: ignore[no-untyped-def]
    vid = f"{ref.campaign_id}:{ref.cycle}:{name}"
    with Session(engine) as session:
        session.add(
            Variant(
                id=vid,
                campaign_id=ref.campaign_id,
                cycle=ref.cycle,
                arm=arm,
                channel=arm.split("@")[1],
                template_id="crafted",
                template_version="v0",
                subject=subject,
                body=body,
            )
        )
        session.commit()
    return vid


def test_offer_above_the_campaign_limit_escalates_and_the_rest_allow(
    env, engine, policies, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref()  # limits.max_discount_pct 15; offers 0, 10 and 20 %
    ids = run_generate(env, engine, ref).variant_ids
    result = _guard(env, engine, policies, ref, ids)
    brand = policies.get("US", "demo").version
    assert [v.variant_id for v in result.verdicts] == ids
    stored = _rows(engine, ref)
    for v in result.verdicts:
        assert v.policy_version == brand
        if v.arm.startswith("twenty_off@"):
            assert v.decision == "escalate"
            (reason,) = [r for r in v.reasons if r.severity != "notice"]
            assert reason.rule_id == "campaign.max_discount"
            assert (reason.field, reason.severity) == ("offer.discount_pct", "escalate")
            assert reason.policy_version == f"campaign:{ref.campaign_id}"
            assert "20%" in reason.explanation and "15%" in reason.explanation
        else:
            assert v.decision == "allow"
            assert all(r.severity == "notice" for r in v.reasons)
        # The verdict is written onto the variant; only an allowed one is approved at once.
        assert stored[v.variant_id].verdict == v.decision
        assert stored[v.variant_id].approved is (True if v.decision == "allow" else None)


@pytest.mark.parametrize(
    ("max_discount", "escalated"),
    [(25.0, set()), (15.0, {"twenty_off"}), (5.0, {"ten_off", "twenty_off"})],
)
def test_the_campaign_limit_decides_which_offers_escalate(
    env, engine, policies, cycle_ref: CycleRefBuilder, max_discount: float, escalated: set[str]
) -> None:
    ref = cycle_ref(limits={"max_discount_pct": max_discount})
    result = _guard(env, engine, policies, ref, run_generate(env, engine, ref).variant_ids)
    got = {v.arm.split("@")[0] for v in result.verdicts if v.decision == "escalate"}
    assert got == escalated
    assert all(v.decision in ("allow", "escalate") for v in result.verdicts)


def test_a_banned_claim_blocks(env, engine, policies, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref()
    run_generate(env, engine, ref)
    health = _craft(
        engine,
        ref,
        "health",
        "ten_off@email",
        "{first_name}, 10% off",
        "Our tea is clinically proven to keep you well." + FOOTER,
    )
    clean = _craft(
        engine, ref, "clean", "ten_off@email", "{first_name}, 10% off", "Take 10% off." + FOOTER
    )
    # A banned claim on an over-limit offer: block wins over escalate, both reasons are kept.
    both = _craft(
        engine,
        ref,
        "both",
        "twenty_off@email",
        "{first_name}, 20% off",
        "Results guaranteed with 20% off." + FOOTER,
    )
    result = _guard(env, engine, policies, ref, [health, clean, both])
    verdicts = {v.variant_id: v for v in result.verdicts}
    assert verdicts[health].decision == "block"
    assert "claim.health_promise" in {r.rule_id for r in verdicts[health].reasons}
    block = next(r for r in verdicts[health].reasons if r.rule_id == "claim.health_promise")
    assert block.severity == "block" and block.field == "body"
    assert verdicts[clean].decision == "allow"
    assert verdicts[both].decision == "block"
    assert {"claim.guaranteed_result", "campaign.max_discount"} <= {
        r.rule_id for r in verdicts[both].reasons
    }
    stored = _rows(engine, ref)
    assert (stored[health].verdict, stored[health].approved) == ("block", None)
    assert (stored[both].verdict, stored[both].approved) == ("block", None)
    assert (stored[clean].verdict, stored[clean].approved) == ("allow", True)
    # Variants not passed to the stage are not judged.
    assert all(
        v.verdict == "pending" for vid, v in stored.items() if vid not in (health, clean, both)
    )


def test_a_missing_unsubscribe_link_is_caught(
    env, engine, policies, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref()
    vid = _craft(
        engine, ref, "nolink", "content@email", "{first_name}, hello", "New in.\n{sender_address}\n"
    )
    (verdict,) = _guard(env, engine, policies, ref, [vid]).verdicts
    assert verdict.decision != "allow"
    assert "required.unsubscribe" in {r.rule_id for r in verdict.reasons}
    assert _rows(engine, ref)[vid].verdict == verdict.decision


def test_rerunning_guard_gives_the_same_verdicts(
    env, engine, policies, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(started_at=datetime.now(UTC))
    ids = run_generate(env, engine, ref).variant_ids
    first = _guard(env, engine, policies, ref, ids)
    assert _guard(env, engine, policies, ref, ids) == first
    assert len(_rows(engine, ref)) == len(ids)
