"""Campaign operations shared by the CLI and the API: start, status and control."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from temporalio.client import Client, WorkflowHandle
from temporalio.common import WorkflowIDConflictPolicy

from liftloop.domain import CampaignSpec
from liftloop.settings import Settings
from workflows.campaign_loop import (
    CampaignLoopInput,
    CampaignLoopOutput,
    CampaignLoopWorkflow,
    CampaignStatus,
)

Control = Literal["pause", "resume", "stop"]


class CampaignStarted(BaseModel):
    campaign_id: str
    workflow_id: str
    run_id: str | None


def workflow_id_for(campaign_id: str) -> str:
    return f"campaign-{campaign_id}"


def loop_input(spec: CampaignSpec, settings: Settings) -> CampaignLoopInput:
    return CampaignLoopInput(
        spec=spec,
        shards=settings.shards,
        attribution_window_s=settings.attribution_window_override_s or None,
        approval_timeout_s=settings.approval_timeout_s,
    )


async def start_campaign(
    client: Client, settings: Settings, spec: CampaignSpec, task_queue: str | None = None
) -> CampaignStarted:
    handle = await client.start_workflow(
        CampaignLoopWorkflow.run,
        loop_input(spec, settings),
        id=workflow_id_for(spec.id),
        task_queue=task_queue or settings.task_queue,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
    )
    return CampaignStarted(campaign_id=spec.id, workflow_id=handle.id, run_id=handle.result_run_id)


def handle_for(
    client: Client, campaign_id: str
) -> WorkflowHandle[CampaignLoopWorkflow, CampaignLoopOutput]:
    return client.get_workflow_handle_for(CampaignLoopWorkflow.run, workflow_id_for(campaign_id))


async def campaign_status(client: Client, campaign_id: str) -> CampaignStatus:
    return await handle_for(client, campaign_id).query(CampaignLoopWorkflow.status)


async def control_campaign(client: Client, campaign_id: str, action: Control) -> None:
    handle = handle_for(client, campaign_id)
    signal = {
        "pause": CampaignLoopWorkflow.pause,
        "resume": CampaignLoopWorkflow.resume,
        "stop": CampaignLoopWorkflow.stop,
    }[action]
    await handle.signal(signal)
