"""The worker's composition root runs the daily budget loop too: refit the MMM, allocate, and
hand the budgets to the ad connector (the embedded runtime's budget file)."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

from liftloop.temporal import build_worker
from tools.allocator.budget_models import BudgetAllocationInput, ChannelPlan, MMMSource
from tools.measure.mmm import MMMConfig
from workflows.budget_allocation import BudgetAllocationWorkflow


async def test_budget_workflow_on_the_composed_worker(
    dev_env,
    settings,
    task_queue,  # type: ignore[no-untyped-def]
    data_file: Callable[[str], Path],
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(data_file("pymc_marketing_mmm_roas_data.csv"), settings.data_dir / "mmm.csv")
    plan = BudgetAllocationInput(
        plan_id=f"plan-{uuid.uuid4().hex[:8]}",
        source=MMMSource(csv_path="mmm.csv", date_column="date", target="y", controls=["z"]),
        channels=[
            ChannelPlan(name="x1", budget_ref="111", current_spend=0.9),
            ChannelPlan(name="x2", budget_ref="222", current_spend=0.3),
        ],
        budget=1.2,
        mmm=MMMConfig(n_bootstrap=0, n_starts=1),
        approval_threshold=1.0,
        approval_timeout_s=60,
    )
    async with build_worker(dev_env.client, settings, task_queue=task_queue):
        out = await dev_env.client.execute_workflow(
            BudgetAllocationWorkflow.run, plan, id=plan.plan_id, task_queue=task_queue
        )
    lines = [
        json.loads(x) for x in (settings.outbox_dir / "ad_budgets.jsonl").read_text().splitlines()
    ]
    assert {x["budget_ref"] for x in lines} == {"111", "222"}
    # Weekly MMM budgets become daily amounts (in cents) that add up to the weekly budget.
    assert abs(sum(x["daily_amount"] for x in lines) - 1.2 / 7) <= 0.01
    assert out is not None
