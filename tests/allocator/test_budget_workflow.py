from __future__ import annotations

import asyncio
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from connectors.ads.port import BudgetChange, BudgetChangeOutcome
from liftloop.budget import BudgetActivities
from tools.allocator.budget_models import (
    BudgetAllocationInput,
    BudgetAllocationOutput,
    BudgetApprovalDecision,
    ChannelPlan,
    MMMSource,
)
from tools.allocator.schedule import budget_schedule
from tools.measure.mmm import MMMConfig
from workflows.budget_allocation import BudgetAllocationWorkflow

TEST_SERVER = Path(sys.executable).parent / "temporal-test-server"


class RecordingAds:
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[list[BudgetChange]] = []

    def set_daily_budgets(self, changes: Sequence[BudgetChange]) -> list[BudgetChangeOutcome]:
        self.calls.append(list(changes))
        return [
            BudgetChangeOutcome(channel=c.channel, budget_ref=c.budget_ref, status="applied")
            for c in changes
        ]


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def env() -> AsyncIterator[WorkflowEnvironment]:
    if not TEST_SERVER.exists():
        raise FileNotFoundError(f"{TEST_SERVER} missing: install the dev dependencies (uv sync)")
    environment = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter, test_server_existing_path=str(TEST_SERVER)
    )
    yield environment
    await environment.shutdown()


@pytest.fixture(scope="module")
def data_root(data_file: Callable[[str], Path]) -> Path:
    """The folder holding the MMM data set, which the plan names by a relative path."""
    return data_file("pymc_marketing_mmm_roas_data.csv").parent


def plan(data_root: Path, threshold: float) -> BudgetAllocationInput:
    return BudgetAllocationInput(
        plan_id=f"plan-{uuid.uuid4().hex[:8]}",
        source=MMMSource(
            csv_path="pymc_marketing_mmm_roas_data.csv", date_column="date", target="y",
            controls=["z"],
        ),
        channels=[
            ChannelPlan(name="x1", budget_ref="111", current_spend=0.9),
            ChannelPlan(name="x2", budget_ref="222", current_spend=0.3),
        ],
        budget=1.2,
        mmm=MMMConfig(n_bootstrap=0, n_starts=1),
        approval_threshold=threshold,
        approval_timeout_s=3600,
    )  # fmt: skip


async def run_plan(
    client: Client,
    data_root: Path,
    threshold: float,
    decision: BudgetApprovalDecision | None,
) -> tuple[BudgetAllocationOutput, RecordingAds]:
    ads = RecordingAds()
    activities = BudgetActivities(ads, data_root=data_root)
    queue = f"budget-{uuid.uuid4().hex}"
    inp = plan(data_root, threshold)
    with ThreadPoolExecutor(max_workers=2) as pool:
        async with Worker(
            client,
            task_queue=queue,
            workflows=[BudgetAllocationWorkflow],
            activities=[activities.refit_and_allocate, activities.apply],
            activity_executor=pool,
        ):
            handle: WorkflowHandle[
                BudgetAllocationWorkflow, BudgetAllocationOutput
            ] = await client.start_workflow(
                BudgetAllocationWorkflow.run, inp, id=inp.plan_id, task_queue=queue
            )
            if decision is not None:
                for _ in range(600):
                    status = await handle.query(BudgetAllocationWorkflow.status)
                    if status.stage == "awaiting_approval":
                        break
                    await asyncio.sleep(0.1)
                answer = await handle.execute_update(BudgetAllocationWorkflow.decide, decision)
                assert answer == ("approved" if decision.approved else "rejected")
            result = await handle.result()
    return result, ads


@pytest.mark.asyncio(loop_scope="session")
async def test_small_shift_is_applied_without_approval(
    env: WorkflowEnvironment, data_root: Path
) -> None:
    result, ads = await run_plan(env.client, data_root, threshold=1.0, decision=None)
    assert result.status == "applied" and not result.approval_required
    spends = {c.name: c.proposed_spend for c in result.proposal.channels}
    assert sum(spends.values()) == pytest.approx(1.2)
    sent = {c.channel: c.daily_amount for c in ads.calls[0]}
    assert sent == pytest.approx({k: round(v / 7, 2) for k, v in spends.items()})


@pytest.mark.asyncio(loop_scope="session")
async def test_large_shift_waits_for_approval(env: WorkflowEnvironment, data_root: Path) -> None:
    decision = BudgetApprovalDecision(approved=True, approver="cmo@example.com")
    result, ads = await run_plan(env.client, data_root, threshold=0.0, decision=decision)
    assert result.status == "applied" and result.approval_required
    assert result.decided_by == "cmo@example.com"
    assert len(ads.calls) == 1


@pytest.mark.asyncio(loop_scope="session")
async def test_rejection_keeps_budgets(env: WorkflowEnvironment, data_root: Path) -> None:
    decision = BudgetApprovalDecision(approved=False, approver="cmo@example.com")
    result, ads = await run_plan(env.client, data_root, threshold=0.0, decision=decision)
    assert result.status == "rejected"
    assert ads.calls == []


@pytest.mark.asyncio(loop_scope="session")
async def test_no_answer_times_out_to_reject(env: WorkflowEnvironment, data_root: Path) -> None:
    result, ads = await run_plan(env.client, data_root, threshold=0.0, decision=None)
    assert result.status == "timed_out" and result.decided_by == "system:timeout"
    assert ads.calls == []


def test_schedule_targets_the_workflow(data_root: Path) -> None:
    schedule = budget_schedule(plan(data_root, 0.2), task_queue="liftloop")
    assert schedule.action.workflow == "BudgetAllocationWorkflow"  # type: ignore[attr-defined]
    assert schedule.spec.intervals[0].every.days == 1
