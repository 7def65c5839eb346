"""BudgetAllocationWorkflow: refit the MMM, allocate, ask for approval on large shifts, apply.

Deterministic orchestration only; the MMM, the solver and the ad platform run in activities.
Started by a Temporal schedule (see tools.allocator.schedule).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from connectors.ads.port import BudgetChange
    from liftloop.budget import BudgetActivities
    from tools.allocator.budget_models import (
        AllocationProposal,
        ApplyBudgetsInput,
        ApplyBudgetsResult,
        BudgetAllocationInput,
        BudgetAllocationOutput,
        BudgetApprovalDecision,
    )

Stage = Literal["starting", "allocating", "awaiting_approval", "applying", "done"]


class BudgetAllocationStatus(BaseModel):
    plan_id: str
    stage: Stage
    proposal: AllocationProposal | None


_REFIT = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=15),
    retry_policy=RetryPolicy(maximum_attempts=3, maximum_interval=timedelta(minutes=1)),
)
_APPLY = workflow.ActivityConfig(
    start_to_close_timeout=timedelta(minutes=5),
    retry_policy=RetryPolicy(maximum_interval=timedelta(minutes=1), maximum_attempts=10),
)


@workflow.defn(name="BudgetAllocationWorkflow")
class BudgetAllocationWorkflow:
    @workflow.init
    def __init__(self, inp: BudgetAllocationInput) -> None:
        self._plan_id = inp.plan_id
        self._stage: Stage = "starting"
        self._proposal: AllocationProposal | None = None
        self._decision: BudgetApprovalDecision | None = None

    @workflow.update
    def decide(self, decision: BudgetApprovalDecision) -> str:
        self._decision = decision
        return "approved" if decision.approved else "rejected"

    @decide.validator
    def _validate_decision(self, decision: BudgetApprovalDecision) -> None:
        if self._stage != "awaiting_approval" or self._decision is not None:
            raise ValueError(f"stage: plan {self._plan_id} is not waiting for an approval")

    @workflow.query
    def status(self) -> BudgetAllocationStatus:
        return BudgetAllocationStatus(
            plan_id=self._plan_id, stage=self._stage, proposal=self._proposal
        )

    @workflow.run
    async def run(self, inp: BudgetAllocationInput) -> BudgetAllocationOutput:
        self._stage = "allocating"
        proposal: AllocationProposal = await workflow.execute_activity_method(
            BudgetActivities.refit_and_allocate, inp, **_REFIT
        )
        self._proposal = proposal
        needs_approval = proposal.shifted_share > inp.approval_threshold
        decided_by = None
        if needs_approval:
            self._stage = "awaiting_approval"
            try:
                await workflow.wait_condition(
                    lambda: self._decision is not None,
                    timeout=timedelta(seconds=inp.approval_timeout_s),
                )
            except TimeoutError:
                # Nobody answered: the safe default is to keep the current budgets.
                return self._finish(inp, proposal, "timed_out", needs_approval, "system:timeout")
            assert self._decision is not None
            decided_by = self._decision.approver
            if not self._decision.approved:
                return self._finish(inp, proposal, "rejected", needs_approval, decided_by)
        self._stage = "applying"
        changes = [
            BudgetChange(
                channel=c.name,
                budget_ref=c.budget_ref,
                daily_amount=round(c.proposed_spend / inp.days_per_period, 2),
            )
            for c in proposal.channels
        ]
        applied: ApplyBudgetsResult = await workflow.execute_activity_method(
            BudgetActivities.apply,
            ApplyBudgetsInput(plan_id=inp.plan_id, changes=changes),
            **_APPLY,
        )
        ok = all(o.status != "failed" for o in applied.outcomes)
        return self._finish(
            inp,
            proposal,
            "applied" if ok else "partially_applied",
            needs_approval,
            decided_by,
            applied,
        )

    def _finish(
        self,
        inp: BudgetAllocationInput,
        proposal: AllocationProposal,
        status: Literal["applied", "partially_applied", "rejected", "timed_out"],
        needs_approval: bool,
        decided_by: str | None,
        applied: ApplyBudgetsResult | None = None,
    ) -> BudgetAllocationOutput:
        self._stage = "done"
        return BudgetAllocationOutput(
            plan_id=inp.plan_id,
            status=status,
            proposal=proposal,
            approval_required=needs_approval,
            decided_by=decided_by,
            outcomes=applied.outcomes if applied else [],
        )
