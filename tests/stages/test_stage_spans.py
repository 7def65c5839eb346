"""What the stages' spans say, stage by stage (no Temporal server): approvals per request with
the approver's pseudonym and the verdict, expired ones too; the guard's final verdict per
variant; the measure span's next step as the workflow takes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError

from liftloop.loop.approvals import ApprovalStage, approver_id, sign_decision
from liftloop.loop.guard import GuardStage
from liftloop.loop.measure import MeasureStage, cycle_outcome
from liftloop.loop.payloads import (
    ApprovalCloseInput,
    ApprovalOpenInput,
    ApprovalOutcome,
    GuardInput,
    MeasureInput,
)
from policies import PolicyStore
from tests.audit_support import audit_for
from tests.spans import named, record_spans, spans_in
from tests.stages.helpers import CycleRefBuilder, run_decide, run_generate, run_segment

KEY = b"tests-only-approval-signing-key-0123456789"


def _attrs(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    (span,) = named(spans, name)
    return dict(span["attributes"]) | {"events": span["events"]}


def test_approval_spans_carry_request_verdict_and_pseudonym_never_the_name(
    env, engine, cycle_ref: CycleRefBuilder, tmp_path: Path
) -> None:
    ref = cycle_ref()
    ids = run_generate(env, engine, ref).variant_ids
    guard = GuardStage(engine, PolicyStore.bundled(), audit_for(engine))
    escalated = [
        v
        for v in env.run(guard.guard, GuardInput(ref=ref, variant_ids=ids)).verdicts
        if v.decision == "escalate"
    ]
    stage = ApprovalStage(engine, audit_for(engine), decision_key=KEY)
    path = tmp_path / "spans.jsonl"
    with record_spans(path):
        rids = env.run(stage.open_approvals, ApprovalOpenInput(ref=ref, verdicts=escalated))
        good = sign_decision(KEY, rids[0], True, "Erika Mustermann")
        env.run(stage.verify_decision, good)
        forged = sign_decision(b"another-key-entirely-0123456789", rids[1], True, "Max Muster")
        with pytest.raises(ApplicationError):
            env.run(stage.verify_decision, forged)
        outcomes = [
            ApprovalOutcome(
                request_id=rids[0],
                variant_id=escalated[0].variant_id,
                approved=True,
                decided_by="Erika Mustermann",
            ),
            ApprovalOutcome(
                request_id=rids[1],
                variant_id=escalated[1].variant_id,
                approved=False,
                decided_by="system:timeout",
                note="no decision before the approval timeout",
            ),
        ]
        env.run(stage.close_approvals, ApprovalCloseInput(ref=ref, outcomes=outcomes))
    text = path.read_text("utf-8")
    assert "Mustermann" not in text and "Muster" not in text
    spans = spans_in(path)

    opened = _attrs(spans, "stage.approval.open")
    assert opened["liftloop.approval.request_ids"] == rids
    assert [e["attributes"]["liftloop.approval.request_id"] for e in opened["events"]] == rids

    checks = {
        s["attributes"]["liftloop.approval.request_id"]: s["attributes"]
        for s in named(spans, "approval.verify")
    }
    assert checks[rids[0]]["liftloop.approval.proof"] == "valid"
    assert checks[rids[0]]["liftloop.approval.approver_id"] == approver_id(KEY, "Erika Mustermann")
    assert checks[rids[1]]["liftloop.approval.proof"] == "refused"
    assert "does not verify" in checks[rids[1]]["liftloop.approval.proof_problem"]

    closed = _attrs(spans, "stage.approval.close")
    assert closed["liftloop.approval.verdicts"] == ["approved", "expired"]
    assert (
        closed["liftloop.approved"],
        closed["liftloop.rejected"],
        closed["liftloop.expired"],
    ) == (
        1,
        0,
        1,
    )
    decided = [e["attributes"] for e in closed["events"]]
    assert [d["liftloop.approval.verdict"] for d in decided] == ["approved", "expired"]
    assert decided[0]["liftloop.approval.approver_id"] == approver_id(KEY, "Erika Mustermann")
    assert decided[1]["liftloop.approval.approver_id"] == approver_id(KEY, "system:timeout")


def test_approver_ids_are_keyed_stable_and_short() -> None:
    one = approver_id(KEY, "Erika Mustermann")
    assert one == approver_id(KEY, "Erika Mustermann") and len(one) == 16
    assert one != approver_id(KEY, "Erika  Mustermann")
    assert one != approver_id(b"another-key", "Erika Mustermann")


def test_guard_span_says_escalate_for_a_variant_the_campaign_limit_escalates(
    env, engine, cycle_ref: CycleRefBuilder, tmp_path: Path
) -> None:
    ref = cycle_ref()  # twenty_off is above the campaign's 15 % limit; the brand allows it
    ids = run_generate(env, engine, ref).variant_ids
    path = tmp_path / "spans.jsonl"
    with record_spans(path):
        env.run(
            GuardStage(engine, PolicyStore.bundled(), audit_for(engine)).guard,
            GuardInput(ref=ref, variant_ids=ids),
        )
    guard = _attrs(spans_in(path), "stage.guard")
    assert sorted(guard["liftloop.verdicts"]) == [
        "content@email=allow",
        "content@push=allow",
        "ten_off@email=allow",
        "ten_off@push=allow",
        "twenty_off@email=escalate",
        "twenty_off@push=escalate",
    ]
    assert (guard["liftloop.allowed"], guard["liftloop.escalated"]) == (4, 2)
    verdicts = {e["attributes"]["liftloop.arm"]: e["attributes"] for e in guard["events"]}
    escalated = verdicts["twenty_off@email"]
    assert escalated["liftloop.guard.decision"] == "escalate"
    assert escalated["liftloop.guard.policy_decision"] == "allow"
    assert escalated["liftloop.rule_ids"] == ["campaign.max_discount"]
    assert verdicts["ten_off@push"]["liftloop.guard.decision"] == "allow"


@pytest.mark.parametrize(
    ("action", "reason", "stop_requested", "last_cycle", "outcome"),
    [
        ("continue", "not_yet_conclusive", False, False, "running"),
        ("continue", "not_yet_conclusive", True, False, "stopped"),
        ("continue", "not_yet_conclusive", False, True, "completed"),
        ("ship", "lift_ci_low_above_zero", True, False, "stopped"),
        ("ship", "lift_ci_low_above_zero", False, False, "shipped"),
        ("stop", "max_cycles", False, True, "completed"),
        ("stop", "futile", False, False, "stopped"),
        ("stop", "primary_harmed", False, False, "stopped_harmful"),
    ],
)
def test_the_workflow_rule_after_a_measured_cycle(
    action: str, reason: str, stop_requested: bool, last_cycle: bool, outcome: str
) -> None:
    assert (
        cycle_outcome(action, reason, stop_requested=stop_requested, last_cycle=last_cycle)
        == outcome
    )


@pytest.mark.parametrize(
    ("stop_requested", "last_cycle", "decision", "reason", "outcome"),
    [
        (True, False, "stop", "stop_requested", "stopped"),
        (False, True, "stop", "max_cycles", "completed"),
    ],
)
def test_measure_span_says_what_the_workflow_does_next(  # type: ignore[no-untyped-def]
    env,
    engine,
    models,
    cycle_ref: CycleRefBuilder,
    tmp_path: Path,
    stop_requested: bool,
    last_cycle: bool,
    decision: str,
    reason: str,
    outcome: str,
) -> None:
    # A first cycle with no orders at all (nothing sent): the rule says continue.
    ref = cycle_ref(shards=1, window_s=60.0)
    run_segment(env, engine, ref)
    run_decide(env, engine, ref)
    path = tmp_path / "spans.jsonl"
    with record_spans(path):
        result = env.run(
            MeasureStage(engine, audit_for(engine), models).measure,
            MeasureInput(ref=ref, stop_requested=stop_requested, last_cycle=last_cycle),
        )
    assert result.decision == "continue"  # the result keeps the rule's own verdict
    span = _attrs(spans_in(path), "stage.measure")
    assert span["liftloop.stop_rule.recommendation"] == "continue"
    assert span["liftloop.stop_requested"] is stop_requested
    assert (span["liftloop.decision"], span["liftloop.decision_reason"]) == (decision, reason)
    assert span["liftloop.outcome"] == outcome
