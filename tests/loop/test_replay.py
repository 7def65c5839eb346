"""The current workflow code must replay a history recorded from an earlier run: a change that
breaks running campaigns fails here (and belongs behind workflow.patched)."""

from __future__ import annotations

from pathlib import Path

from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from workflows.campaign_loop import CampaignLoopWorkflow

HISTORIES = Path(__file__).parent / "histories"


async def test_recorded_cycle_replays() -> None:
    history = WorkflowHistory.from_json(
        "campaign-recorded", (HISTORIES / "campaign_loop_cycle.json").read_text()
    )
    # The recording holds a whole cycle: decisions per shard, approvals by update, the timer.
    kinds = {e.event_type for e in history.events}
    assert len(history.events) > 50 and len(kinds) > 8
    result = await Replayer(
        workflows=[CampaignLoopWorkflow], data_converter=pydantic_data_converter
    ).replay_workflow(history)
    assert result.replay_failure is None
