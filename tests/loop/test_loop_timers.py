"""Durable timers and approval timeouts on the time-skipping test server: days pass in seconds."""

from __future__ import annotations

import uuid
from datetime import timedelta

from sqlalchemy import select

from liftloop.campaigns import loop_input
from liftloop.loop.tables import ApprovalRequest, CycleResult
from liftloop.temporal import build_worker
from tests.loop.helpers import spec
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignLoopWorkflow


async def test_unanswered_approval_is_rejected_and_window_is_a_durable_timer(  # type: ignore[no-untyped-def]
    skip_env, settings, engine, smtp, task_queue
):
    batch = f"b{uuid.uuid4().hex[:8]}"
    generate_customers(engine, 400, batch=batch)
    s = spec(
        f"c-{batch}",
        batch,
        goal={"attribution_window": "7d"},
        cadence={"every": "1d", "max_cycles": 2},
        stop={"ship_when": "never", "min_cycles": 2},
    )
    # A real day-long approval timeout and the spec's 7-day window: no demo shortcuts here.
    run_settings = settings.model_copy(
        update={"approval_timeout_s": 86400.0, "attribution_window_override_s": 0.0}
    )
    async with build_worker(skip_env.client, run_settings, task_queue=task_queue):
        # The handle from start_workflow follows the continue-as-new chain on the test server;
        # one looked up by id alone does not ("No completion event found").
        handle = await skip_env.client.start_workflow(
            CampaignLoopWorkflow.run,
            loop_input(s, run_settings),
            id=f"campaign-{s.id}",
            task_queue=task_queue,
        )
        out = await handle.result()
    assert out.outcome == "completed" and len(out.history) == 2
    assert all(c.approvals_requested == 2 and c.approvals_approved == 0 for c in out.history)
    with engine.connect() as conn:
        decided = conn.execute(
            select(ApprovalRequest.status, ApprovalRequest.decided_by).where(
                ApprovalRequest.campaign_id == s.id
            )
        ).all()
        measured = (
            conn.execute(select(CycleResult.cycle).where(CycleResult.campaign_id == s.id))
            .scalars()
            .all()
        )
    assert len(decided) == 4 and set(decided) == {("rejected", "system:timeout")}
    assert sorted(measured) == [1, 2]
    # The last run of the chain (cycle 2) waited out the day-long approval timeout and the
    # whole 7-day attribution window on workflow time.
    desc = await handle.describe()
    assert desc.close_time is not None and desc.start_time is not None
    assert desc.close_time - desc.start_time >= timedelta(days=8)
