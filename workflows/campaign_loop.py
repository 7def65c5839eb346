"""CampaignLoopWorkflow: one cycle of segment → decide → generate → guard → approval → send →
measure per run, then continue-as-new. Deterministic orchestration only; all I/O in activities."""

from __future__ import annotations

import asyncio
import contextlib
import math
from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from liftloop.loop.approvals import ApprovalStage
    from liftloop.loop.decide import DecideStage
    from liftloop.loop.generate import GenerateStage
    from liftloop.loop.guard import GuardStage
    from liftloop.loop.measure import MeasureStage, cycle_outcome
    from liftloop.loop.payloads import (
        ApprovalCloseInput,
        ApprovalDecision,
        ApprovalEscalateInput,
        ApprovalOpenInput,
        ApprovalOutcome,
        CycleRef,
        DecideResult,
        GenerateResult,
        GuardInput,
        GuardResult,
        MeasureInput,
        MeasureResult,
        SegmentResult,
        SendInput,
        SendResult,
        ShardInput,
        SimulateResult,
        VariantVerdict,
    )
    from liftloop.loop.segment import SegmentStage
    from liftloop.loop.send import SendStage
    from liftloop.loop.simulate import SimulateStage
    from liftloop.loop.spec import CampaignSpec
    from tools.durations import MAX_DURATION_S
    from tools.measure.lift import LiftEstimate

# "failed": a stage failed for good (the workflow ends failed with the reason, see `run`).
Outcome = Literal["running", "shipped", "stopped", "stopped_harmful", "completed", "failed"]
Stage = Literal[
    "starting",
    "segment",
    "decide",
    "generate",
    "guard",
    "approval",
    "send",
    "simulate",
    "attribution_wait",
    "measure",
    "cadence_wait",
    "done",
]


class CycleSummary(BaseModel):
    model_config = ConfigDict(frozen=True)

    cycle: int
    audience: int
    sent: int
    failed: int
    suppressed: int
    held_out: int
    approvals_requested: int
    approvals_approved: int
    lifts: dict[str, LiftEstimate]
    true_lift: dict[str, float] | None = None


class CampaignLoopInput(BaseModel):
    spec: CampaignSpec
    cycle: int = 1
    shards: int = 4
    attribution_window_s: float | None = None
    approval_timeout_s: float = 86400.0
    # Escalation of a pending request after this long (None or >= the timeout: never).
    approval_escalation_s: float | None = None
    # The user (or service) that started the campaign: four-eyes keeps them from deciding.
    started_by: str | None = None
    history: list[CycleSummary] = Field(default_factory=list)
    paused: bool = False


class CampaignLoopOutput(BaseModel):
    campaign_id: str
    outcome: Outcome
    cycles: int
    history: list[CycleSummary]


class PendingApproval(BaseModel):
    request_id: str
    variant_id: str
    arm: str
    reasons: list[str]


class CampaignStatus(BaseModel):
    campaign_id: str
    cycle: int
    stage: Stage
    paused: bool
    stop_requested: bool
    outcome: Outcome
    pending_approvals: list[PendingApproval]
    history: list[CycleSummary]
    # Why the campaign failed or was stopped from outside, or why it is stuck; None otherwise.
    reason: str | None = None
    started_by: str | None = None


# Outages are retried; input the worker can never accept (no policy for the market, an unknown
# template, a bad segment) fails the campaign at once with its reason instead of looping.
_RETRY = RetryPolicy(
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=["PolicyNotFoundError", "ContentError", "SegmentError", "CdpError"],
)
_QUICK = workflow.ActivityConfig(start_to_close_timeout=timedelta(minutes=10), retry_policy=_RETRY)
# A send on a worker that died is noticed by its heartbeat timeout and retried on another
# worker: the stage heartbeats every 2,000 rows it prepares and after every batch of 250 it sends,
# the SDK reports a heartbeat at most every 0.8 x 10 s. The first retry follows 1 s later and
# no retry waits more than 10 s, also after several crashes in a row. The start-to-close
# timeout only bounds a hung attempt. (docs/operations.md#recovery)
_SEND = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=30),
    heartbeat_timeout=timedelta(seconds=10),
    retry_policy=RetryPolicy(
        initial_interval=timedelta(seconds=1),
        maximum_interval=timedelta(seconds=10),
        non_retryable_error_types=_RETRY.non_retryable_error_types,
    ),
)


@workflow.defn(name="CampaignLoopWorkflow")
class CampaignLoopWorkflow:
    @workflow.init
    def __init__(self, inp: CampaignLoopInput) -> None:
        self._inp = inp
        self._stage: Stage = "starting"
        self._paused = inp.paused
        self._stop = False
        self._outcome: Outcome = "running"
        self._pending: dict[str, VariantVerdict] = {}
        self._decided: dict[str, ApprovalOutcome] = {}
        self._reason: str | None = None
        # Nonces of the approval proofs this run accepted: a proof counts once.
        self._proof_nonces: set[str] = set()

    # -- signals, updates, queries ---------------------------------------------------------
    @workflow.signal
    def pause(self) -> None:
        self._paused = True

    @workflow.signal
    def resume(self) -> None:
        self._paused = False

    @workflow.signal
    def stop(self) -> None:
        self._stop = True

    @workflow.update
    async def decide_approval(self, decision: ApprovalDecision) -> ApprovalOutcome:
        """A human's decision. It counts only with a proof from liftloop's approval path, which
        the worker checks (`ApprovalStage.verify_decision`: workflow code cannot read keys); a
        refused one fails the update (ApprovalProofRefused) and the request stays pending.
        Histories recorded before the patch took decisions without proof and replay so."""
        if workflow.patched("approval-proof"):
            try:
                await workflow.execute_activity_method(
                    ApprovalStage.verify_decision, decision, **_VERIFY
                )
            except ActivityError as exc:
                detail = getattr(exc.cause, "message", None) or str(exc.cause or exc)
                raise ApplicationError(
                    f"request_id: {decision.request_id}: {detail}",
                    type="ApprovalProofRefused",
                    non_retryable=True,
                ) from None
            # Checked again: the wait may have timed out, or another decision won, meanwhile.
            nonce = decision.proof.nonce if decision.proof else ""
            if decision.request_id not in self._pending or nonce in self._proof_nonces:
                raise ApplicationError(
                    f"request_id: {decision.request_id} is no longer pending in this campaign",
                    type="ApprovalNotPending",
                    non_retryable=True,
                )
            self._proof_nonces.add(nonce)
        verdict = self._pending.pop(decision.request_id)
        outcome = ApprovalOutcome(
            request_id=decision.request_id,
            variant_id=verdict.variant_id,
            approved=decision.approved,
            decided_by=decision.approver,
            note=decision.note,
            path=decision.path,
        )
        self._decided[decision.request_id] = outcome
        return outcome

    @decide_approval.validator
    def _validate_approval(self, decision: ApprovalDecision) -> None:
        if decision.request_id not in self._pending:
            raise ValueError(f"request_id: {decision.request_id} is not pending in this campaign")
        # A decision without proof never reaches the handler (validators do not run on replay,
        # so histories recorded before proofs existed still replay).
        if decision.proof is None:
            raise ValueError(
                f"request_id: {decision.request_id}: a decision needs liftloop's proof"
                " (decide through liftloop's API or CLI)"
            )
        if decision.proof.nonce in self._proof_nonces:
            raise ValueError(f"request_id: {decision.request_id}: this proof was used already")

    @workflow.query
    def status(self) -> CampaignStatus:
        return CampaignStatus(
            campaign_id=self._inp.spec.id,
            cycle=self._inp.cycle,
            stage=self._stage,
            paused=self._paused,
            stop_requested=self._stop,
            outcome=self._outcome,
            pending_approvals=[
                PendingApproval(
                    request_id=rid,
                    variant_id=v.variant_id,
                    arm=v.arm,
                    reasons=[r.explanation for r in v.reasons],
                )
                for rid, v in self._pending.items()
            ],
            history=self._inp.history,
            reason=self._reason,
            started_by=self._inp.started_by,
        )

    # -- the cycle -------------------------------------------------------------------------
    async def _checkpoint(self, stage: Stage) -> bool:
        """Waits while paused; False once a stop was requested."""
        await workflow.wait_condition(lambda: not self._paused or self._stop)
        self._stage = stage
        return not self._stop

    async def _sleep_unless_stopped(self, seconds: float) -> None:
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: self._stop, timeout=timedelta(seconds=_timer_s(seconds))
                )

    @workflow.run
    async def run(self, inp: CampaignLoopInput) -> CampaignLoopOutput:
        """One cycle. A stage that fails for good (an activity error that is not retried: no
        policy for the market, an unknown template, a bad segment) ends the workflow failed
        with an ApplicationError that names the stage and the reason; queries then show the
        outcome `failed` with that reason."""
        try:
            return await self._cycle(inp)
        except ActivityError as exc:
            # The activity's own error stays the cause (its type and message, as before).
            cause = exc.cause or exc
            detail = getattr(cause, "message", None) or str(cause)
            self._reason = f"stage {self._stage} failed ({exc.activity_type}): {detail}"
            self._outcome, self._stage = "failed", "done"
            raise ApplicationError(
                self._reason, type="CampaignFailed", non_retryable=True
            ) from cause

    async def _cycle(self, inp: CampaignLoopInput) -> CampaignLoopOutput:
        spec = inp.spec
        info = workflow.info()
        window = inp.attribution_window_s or spec.goal.attribution_window
        ref = CycleRef(
            campaign_id=spec.id,
            workflow_id=info.workflow_id,
            cycle=inp.cycle,
            spec=spec,
            started_at=workflow.now(),
            attribution_window_s=window,
            shards=inp.shards,
        )

        if not await self._checkpoint("segment"):
            return self._finish("stopped")
        seg: SegmentResult = await workflow.execute_activity_method(
            SegmentStage.segment, ref, **_QUICK
        )

        if not await self._checkpoint("decide"):
            return self._finish("stopped")
        decided: list[DecideResult] = list(
            await asyncio.gather(
                *[
                    workflow.execute_activity_method(
                        DecideStage.decide, ShardInput(ref=ref, shard=s), **_QUICK
                    )
                    for s in range(ref.shards)
                ]
            )
        )

        if not await self._checkpoint("generate"):
            return self._finish("stopped")
        gen: GenerateResult = await workflow.execute_activity_method(
            GenerateStage.generate, ref, **_QUICK
        )

        if not await self._checkpoint("guard"):
            return self._finish("stopped")
        guard: GuardResult = await workflow.execute_activity_method(
            GuardStage.guard, GuardInput(ref=ref, variant_ids=gen.variant_ids), **_QUICK
        )
        allowed = [v.variant_id for v in guard.verdicts if v.decision == "allow"]
        escalated = [v for v in guard.verdicts if v.decision == "escalate"]

        outcomes = await self._approvals(ref, escalated, inp)
        allowed += [o.variant_id for o in outcomes if o.approved]

        if not await self._checkpoint("send"):
            return self._finish("stopped")
        sends: list[SendResult] = list(
            await asyncio.gather(
                *[
                    workflow.execute_activity_method(
                        SendStage.send,
                        SendInput(ref=ref, shard=s, variant_ids=sorted(allowed)),
                        **_SEND,
                    )
                    for s in range(ref.shards)
                ]
            )
        )

        ref = ref.model_copy(update={"window_start": workflow.now()})
        true_lift = None
        if spec.simulation.enabled:
            self._stage = "simulate"
            sim: SimulateResult = await workflow.execute_activity_method(
                SimulateStage.simulate, ref, **_QUICK
            )
            true_lift = sim.true_lift

        # The attribution window is a durable timer; a stop cuts it short but still measures,
        # so what was sent is always accounted for.
        self._stage = "attribution_wait"
        elapsed = (workflow.now() - ref.window_from).total_seconds()
        await self._sleep_unless_stopped(window - elapsed)
        self._stage = "measure"
        last_cycle = inp.cycle >= spec.cadence.max_cycles
        # What the workflow knows goes along, so that the measure span says what it does next.
        measured: MeasureResult = await workflow.execute_activity_method(
            MeasureStage.measure,
            MeasureInput(
                ref=ref, true_lift=true_lift, stop_requested=self._stop, last_cycle=last_cycle
            ),
            **_QUICK,
        )

        summary = CycleSummary(
            cycle=inp.cycle,
            audience=seg.audience,
            sent=sum(s.sent for s in sends),
            failed=sum(s.failed for s in sends),
            suppressed=sum(s.suppressed for s in sends),
            held_out=sum(d.held_out for d in decided),
            approvals_requested=len(escalated),
            approvals_approved=sum(o.approved for o in outcomes),
            lifts=measured.lifts,
            true_lift=true_lift,
        )
        history = [*inp.history, summary]
        self._inp = inp.model_copy(update={"history": history})

        verdict = self._stop_rule(measured, last_cycle)
        if verdict != "running":
            return self._finish(verdict)

        self._stage = "cadence_wait"
        await self._sleep_unless_stopped(
            spec.cadence.every - (workflow.now() - ref.started_at).total_seconds()
        )
        if self._stop:
            return self._finish("stopped")
        workflow.continue_as_new(
            inp.model_copy(
                update={"cycle": inp.cycle + 1, "history": history, "paused": self._paused}
            )
        )

    async def _approvals(
        self, ref: CycleRef, escalated: list[VariantVerdict], inp: CampaignLoopInput
    ) -> list[ApprovalOutcome]:
        if not escalated:
            return []
        self._stage = "approval"
        timeout_s = inp.approval_timeout_s
        escalate_s = inp.approval_escalation_s
        if escalate_s is not None and escalate_s >= timeout_s:
            escalate_s = None
        ids: list[str] = await workflow.execute_activity_method(
            ApprovalStage.open_approvals,
            ApprovalOpenInput(
                ref=ref,
                verdicts=escalated,
                started_by=inp.started_by,
                escalate_after_s=escalate_s,
                timeout_s=timeout_s,
            ),
            **_QUICK,
        )
        self._pending = dict(zip(ids, escalated, strict=True))
        waited = 0.0
        if escalate_s is not None and workflow.patched("approval-escalation"):
            with contextlib.suppress(TimeoutError):
                await workflow.wait_condition(
                    lambda: not self._pending or self._stop,
                    timeout=timedelta(seconds=_timer_s(escalate_s)),
                )
            waited = escalate_s
            if self._pending and not self._stop:
                await workflow.execute_activity_method(
                    ApprovalStage.escalate_approvals,
                    ApprovalEscalateInput(ref=ref, request_ids=list(self._pending)),
                    **_QUICK,
                )
        with contextlib.suppress(TimeoutError):
            await workflow.wait_condition(
                lambda: not self._pending or self._stop,
                timeout=timedelta(seconds=_timer_s(timeout_s - waited)),
            )
        # Nobody answered (or the campaign stops): the safe default is to reject.
        for rid, verdict in self._pending.items():
            self._decided[rid] = ApprovalOutcome(
                request_id=rid,
                variant_id=verdict.variant_id,
                approved=False,
                decided_by="system:timeout" if not self._stop else "system:stopped",
                note="no decision before the approval timeout",
            )
        self._pending = {}
        outcomes = [self._decided[rid] for rid in ids]
        await workflow.execute_activity_method(
            ApprovalStage.close_approvals,
            ApprovalCloseInput(ref=ref, outcomes=outcomes),
            **_QUICK,
        )
        return outcomes

    def _stop_rule(self, measured: MeasureResult, last_cycle: bool) -> Outcome:
        # A stop requested while the measure ran counts too (the measure span predates it).
        return cycle_outcome(
            measured.decision,
            measured.decision_reason,
            stop_requested=self._stop,
            last_cycle=last_cycle,
        )

    def _finish(self, outcome: Outcome) -> CampaignLoopOutput:
        self._outcome, self._stage = outcome, "done"
        return CampaignLoopOutput(
            campaign_id=self._inp.spec.id,
            outcome=outcome,
            cycles=self._inp.cycle,
            history=self._inp.history,
        )


def _timer_s(seconds: float) -> float:
    """A timer's length within what a timedelta and Temporal can hold. Specs and settings are
    validated to this bound already; this keeps a bad value from failing every workflow task."""
    if not seconds > 0:  # also NaN
        return 0.0
    return min(seconds, MAX_DURATION_S) if math.isfinite(seconds) else MAX_DURATION_S


# The check of an approval proof: the update waits for it, so it is bounded well below the
# update call's own timeout (approvals.requests) and a refusal is final.
_VERIFY = workflow.ActivityConfig(
    schedule_to_close_timeout=timedelta(seconds=20),
    retry_policy=RetryPolicy(
        maximum_interval=timedelta(seconds=2), non_retryable_error_types=["ApprovalProofRefused"]
    ),
)
