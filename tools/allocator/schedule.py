"""The Temporal schedule that runs BudgetAllocationWorkflow every period."""

from __future__ import annotations

from datetime import timedelta

from temporalio.client import (
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from tools.allocator.budget_models import BudgetAllocationInput


def budget_schedule(
    inp: BudgetAllocationInput, *, task_queue: str, every: timedelta = timedelta(days=1)
) -> Schedule:
    """Pass to `client.create_schedule(schedule_id, budget_schedule(...))`.

    A run that is still waiting for approval when the next one is due is left alone
    (overlap SKIP): two competing proposals for the same budgets would confuse approvers.
    """
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "BudgetAllocationWorkflow",
            inp,
            id=f"budget-{inp.plan_id}",
            task_queue=task_queue,
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
