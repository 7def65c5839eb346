"""Shared helpers for the loop tests."""

from __future__ import annotations

import asyncio
from typing import Any

from temporalio.client import Client, WorkflowHandle

from liftloop.audit import audit_log
from liftloop.campaigns import handle_for, start_campaign
from liftloop.credentials import approval_signing_key
from liftloop.loop.approvals import sign_decision
from liftloop.loop.spec import CampaignSpec, parse_spec
from liftloop.settings import Settings
from workflows.campaign_loop import CampaignLoopOutput, CampaignLoopWorkflow


async def start(
    client: Client, settings: Settings, s: CampaignSpec, task_queue: str
) -> WorkflowHandle[CampaignLoopWorkflow, CampaignLoopOutput]:
    """Start the campaign (audited as the actor "test") and return its handle."""
    await start_campaign(
        client, settings, s, task_queue=task_queue, audit=audit_log(settings), actor="test"
    )
    return handle_for(client, s.id)


def spec(campaign_id: str, batch: str, **overrides: Any) -> CampaignSpec:
    data: dict[str, Any] = {
        "id": campaign_id,
        "audience": {"segment": {"all": [{"trait": "source_batch", "eq": batch}]}},
        "channels": ["email", "push"],
        "offers": [
            {"id": "content"},
            {"id": "ten_off", "discount_pct": 10},
            {"id": "twenty_off", "discount_pct": 20},
        ],
        "limits": {"max_discount_pct": 15},
        "cadence": {"every": "0s", "max_cycles": 1},
        "stop": {"ship_when": "never", "min_cycles": 1},
        "content": {"market": "US", "brand": "demo"},
        "simulation": {"enabled": True},
    }
    data.update(overrides)
    return parse_spec(data)


async def drive(
    client: Client,
    handle: WorkflowHandle[Any, CampaignLoopOutput],
    approve: bool | None = True,
    *,
    settings: Settings,
) -> CampaignLoopOutput:
    """Waits for the result, answering each pending approval (or leaving it when None) with a
    decision signed by the approval key of `settings`, as liftloop's approval path signs it."""
    key = approval_signing_key(settings)
    result = asyncio.ensure_future(handle.result())
    answered: set[str] = set()
    while not result.done():
        if approve is not None:
            try:
                status = await handle.query(CampaignLoopWorkflow.status)
            except Exception:
                status = None
            for p in status.pending_approvals if status else []:
                if p.request_id not in answered:
                    answered.add(p.request_id)
                    await handle.execute_update(
                        CampaignLoopWorkflow.decide_approval,
                        sign_decision(key, p.request_id, approve, "test"),
                    )
        await asyncio.wait({result}, timeout=0.2)
    return result.result()
