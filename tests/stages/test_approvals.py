"""ApprovalStage.open_approvals / close_approvals alone: the inbox rows and the variant's flag."""

from __future__ import annotations

from sqlmodel import col

from liftloop.loop.approvals import ApprovalStage, request_id
from liftloop.loop.payloads import (
    ApprovalCloseInput,
    ApprovalOpenInput,
    ApprovalOutcome,
    CycleRef,
    GuardReason,
    VariantVerdict,
)
from liftloop.loop.stage_kit import variant_id
from liftloop.loop.tables import ApprovalRequest, Variant
from tests.audit_support import audit_for
from tests.stages.helpers import CycleRefBuilder, all_rows, run_generate


def _escalated(ref: CycleRef) -> list[VariantVerdict]:
    out = []
    for arm in ("twenty_off@email", "twenty_off@push"):
        out.append(
            VariantVerdict(
                variant_id=variant_id(ref, arm),
                arm=arm,
                decision="escalate",
                policy_version="2026.11.1",
                reasons=[
                    GuardReason(
                        rule_id="campaign.max_discount",
                        policy_version=f"campaign:{ref.campaign_id}",
                        field="offer.discount_pct",
                        severity="escalate",
                        explanation="discount 20% is above the campaign limit of 15%",
                    ),
                    GuardReason(
                        rule_id="claim.false_urgency",
                        policy_version="2026.11.1",
                        field="body",
                        severity="escalate",
                        explanation="urgency",
                        span=(3, 8),
                    ),
                ],
            )
        )
    return out


def _requests(engine, ref: CycleRef) -> dict[str, ApprovalRequest]:  # type: ignore[no-untyped-def]
    rows = all_rows(engine, ApprovalRequest, col(ApprovalRequest.campaign_id) == ref.campaign_id)
    return {r.id: r for r in rows}


def _variants(engine, ref: CycleRef) -> dict[str, Variant]:  # type: ignore[no-untyped-def]
    return {v.id: v for v in all_rows(engine, Variant, col(Variant.campaign_id) == ref.campaign_id)}


def test_open_creates_pending_requests_with_the_reasons(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref(cycle=4)
    verdicts = _escalated(ref)
    ids = env.run(
        ApprovalStage(engine, audit_for(engine)).open_approvals,
        ApprovalOpenInput(ref=ref, verdicts=verdicts),
    )
    assert ids == [request_id(v.variant_id) for v in verdicts]
    assert len(set(ids)) == 2 and all(":" not in i and "@" not in i for i in ids)
    stored = _requests(engine, ref)
    assert set(stored) == set(ids)
    for rid, v in zip(ids, verdicts, strict=True):
        r = stored[rid]
        assert (r.campaign_id, r.workflow_id, r.cycle) == (ref.campaign_id, ref.workflow_id, 4)
        assert (r.variant_id, r.status, r.decided_by, r.note, r.decided_at) == (
            v.variant_id,
            "pending",
            None,
            None,
            None,
        )
        assert r.reasons == [reason.model_dump(mode="json") for reason in v.reasons]
        assert [x["rule_id"] for x in r.reasons] == ["campaign.max_discount", "claim.false_urgency"]
        assert r.created_at is not None


def test_open_is_idempotent_on_retry(env, engine, cycle_ref: CycleRefBuilder) -> None:
    ref = cycle_ref()
    stage = ApprovalStage(engine, audit_for(engine))
    inp = ApprovalOpenInput(ref=ref, verdicts=_escalated(ref))
    first = env.run(stage.open_approvals, inp)
    created = {rid: r.created_at for rid, r in _requests(engine, ref).items()}
    assert env.run(stage.open_approvals, inp) == first
    again = _requests(engine, ref)
    assert len(again) == 2
    assert {rid: r.created_at for rid, r in again.items()} == created

    # A retry after the decision does not reopen it.
    env.run(
        stage.close_approvals,
        ApprovalCloseInput(
            ref=ref,
            outcomes=[
                ApprovalOutcome(
                    request_id=first[0],
                    variant_id=inp.verdicts[0].variant_id,
                    approved=True,
                    decided_by="ana",
                )
            ],
        ),
    )
    env.run(stage.open_approvals, inp)
    assert _requests(engine, ref)[first[0]].status == "approved"


def test_close_writes_the_decisions_onto_requests_and_variants(
    env, engine, cycle_ref: CycleRefBuilder
) -> None:
    ref = cycle_ref()
    run_generate(env, engine, ref)
    stage = ApprovalStage(engine, audit_for(engine))
    verdicts = _escalated(ref)
    ids = env.run(stage.open_approvals, ApprovalOpenInput(ref=ref, verdicts=verdicts))
    outcomes = [
        ApprovalOutcome(
            request_id=ids[0],
            variant_id=verdicts[0].variant_id,
            approved=True,
            decided_by="ana@brand.example",
            note="deadline is real",
        ),
        ApprovalOutcome(
            request_id=ids[1],
            variant_id=verdicts[1].variant_id,
            approved=False,
            decided_by="timeout",
            note="no answer in time",
        ),
    ]
    env.run(stage.close_approvals, ApprovalCloseInput(ref=ref, outcomes=outcomes))

    stored = _requests(engine, ref)
    assert (stored[ids[0]].status, stored[ids[0]].decided_by, stored[ids[0]].note) == (
        "approved",
        "ana@brand.example",
        "deadline is real",
    )
    assert (stored[ids[1]].status, stored[ids[1]].decided_by, stored[ids[1]].note) == (
        "rejected",
        "timeout",
        "no answer in time",
    )
    assert all(r.decided_at is not None for r in stored.values())
    # The reasons stay as they were opened.
    assert stored[ids[0]].reasons[0]["rule_id"] == "campaign.max_discount"

    variants = _variants(engine, ref)
    assert variants[verdicts[0].variant_id].approved is True
    assert variants[verdicts[1].variant_id].approved is False
    others = [v for vid, v in variants.items() if vid not in {x.variant_id for x in verdicts}]
    assert others and all(v.approved is None for v in others)
