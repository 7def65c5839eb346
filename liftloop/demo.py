"""`liftloop demo`: a whole campaign loop on the embedded default with simulated customers whose
true response is known, so the measured lift can be checked against the truth."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime

from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from temporalio.client import Client

from approvals.requests import decide_approval, list_approvals
from liftloop.campaigns import handle_for, start_campaign
from liftloop.db import engine_for
from liftloop.loop.delivery_audit import DeliveryAudit, audit_deliveries
from liftloop.loop.spec import CampaignSpec, parse_spec
from liftloop.report import PooledLift, pool_lifts
from liftloop.settings import Settings
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignLoopOutput, CampaignLoopWorkflow, CampaignStatus

tracer = trace.get_tracer("liftloop.demo")
DEMO_WINDOW_S = 5.0


class DemoReport(BaseModel):
    campaign_id: str
    outcome: str
    profiles: int
    cycles: int
    audience: int
    sent: int
    held_out: int
    failed: int
    suppressed: int
    approvals: dict[str, int]
    duplicates: int
    delivery: DeliveryAudit
    primary_metric: str
    lift: PooledLift
    true_lift: float | None
    lifts: dict[str, PooledLift]
    temporal_ui: str
    trace_id: str


def demo_spec(campaign_id: str, batch: str, cycles: int, policy: str = "uniform") -> CampaignSpec:
    return parse_spec(
        {
            "id": campaign_id,
            "name": "Demo: new season offer",
            "goal": {"kpi": "contribution_margin", "attribution_window": "7d"},
            "audience": {
                "segment": {"all": [{"trait": "source_batch", "eq": batch}]},
                "consent": {"purpose": "marketing"},
            },
            "channels": ["email", "push"],
            "offers": [
                {"id": "content", "discount_pct": 0, "margin_pct": 42},
                {"id": "ten_off", "discount_pct": 10, "margin_pct": 42},
                {"id": "twenty_off", "discount_pct": 20, "margin_pct": 42},
            ],
            "limits": {"max_discount_pct": 15},
            "experiment": {"holdout_pct": 10, "policy": policy, "primary_metric": "conversion"},
            "content": {
                "template": "offer_email",
                "language": "en",
                "market": "US",
                "brand": "demo",
            },
            "cadence": {"every": "0s", "max_cycles": cycles},
            "stop": {"ship_when": "never", "min_cycles": cycles},
            "simulation": {"enabled": True, "seed": 7},
        }
    )


async def run_demo(
    client: Client,
    settings: Settings,
    *,
    profiles: int,
    cycles: int,
    approve_all: bool,
    policy: str = "uniform",
    ui_url: Callable[[str], str],
    on_status: Callable[[CampaignStatus], None] = lambda s: None,
    task_queue: str | None = None,
) -> DemoReport:
    engine = engine_for(settings.cdp_url)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    batch = f"demo{stamp}"
    spec = demo_spec(f"demo-{stamp}", batch, cycles, policy)
    if not settings.attribution_window_override_s:
        settings = settings.model_copy(update={"attribution_window_override_s": DEMO_WINDOW_S})
    with tracer.start_as_current_span(
        "liftloop.demo", attributes={"liftloop.campaign_id": spec.id, "liftloop.profiles": profiles}
    ) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        await asyncio.to_thread(generate_customers, engine, profiles, batch=batch)
        started = await start_campaign(client, settings, spec, task_queue=task_queue)
        handle = handle_for(client, spec.id)
        result_task = asyncio.ensure_future(handle.result())
        while not result_task.done():
            try:
                status = await handle.query(CampaignLoopWorkflow.status)
                on_status(status)
                if approve_all:
                    for req in list_approvals(engine, "pending", spec.id):
                        await decide_approval(
                            client,
                            engine,
                            req.request_id,
                            True,
                            "demo:--approve-all",
                            "approved by demo flag",
                        )
            except Exception:
                pass
            await asyncio.wait({result_task}, timeout=0.5)
        output: CampaignLoopOutput = result_task.result()
    return build_report(
        engine,
        settings,
        output,
        profiles,
        ui_url(started.workflow_id),
        trace_id,
        spec.experiment.primary_metric,
    )


def build_report(
    engine: Engine,
    settings: Settings,
    output: CampaignLoopOutput,
    profiles: int,
    ui: str,
    trace_id: str,
    primary: str,
) -> DemoReport:
    h = output.history
    lifts = {
        metric: pool_lifts(
            metric,
            [c.lifts[metric] for c in h],
            [c.true_lift.get(metric) if c.true_lift else None for c in h],
        )
        for metric in ("conversion", "contribution_margin")
    }
    audit = audit_deliveries(engine, settings, output.campaign_id)
    return DemoReport(
        campaign_id=output.campaign_id,
        outcome=output.outcome,
        profiles=profiles,
        cycles=len(h),
        audience=sum(c.audience for c in h),
        sent=sum(c.sent for c in h),
        held_out=sum(c.held_out for c in h),
        failed=sum(c.failed for c in h),
        suppressed=sum(c.suppressed for c in h),
        approvals={
            "requested": sum(c.approvals_requested for c in h),
            "approved": sum(c.approvals_approved for c in h),
        },
        duplicates=audit.duplicates,
        delivery=audit,
        primary_metric=primary,
        lift=lifts[primary],
        true_lift=lifts[primary].true_lift,
        lifts=lifts,
        temporal_ui=ui,
        trace_id=trace_id,
    )
