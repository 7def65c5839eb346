"""`liftloop demo`: a whole campaign loop on the embedded default with simulated customers whose
true response is known, so the measured lift can be checked against the truth."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from opentelemetry import trace
from pydantic import BaseModel
from sqlalchemy.engine import Engine
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.service import RPCError, RPCStatusCode

from approvals.requests import decide_approval, list_approvals
from approvals.rules import Decider
from liftloop.accounts.users import AccountError, UserView, add_user, find_user
from liftloop.audit import audit_log
from liftloop.campaigns import handle_for, start_campaign
from liftloop.credentials import approval_signing_key
from liftloop.db import engine_for
from liftloop.loop.delivery_audit import DeliveryAudit, audit_deliveries
from liftloop.loop.spec import CampaignSpec, parse_spec
from liftloop.report import PooledLift, pool_lifts
from liftloop.settings import Settings
from tools.content.ledger import CampaignCosts, SqlCostLedger
from tools.simulation.customers import generate_customers
from workflows.campaign_loop import CampaignLoopOutput, CampaignLoopWorkflow, CampaignStatus

log = logging.getLogger("liftloop.demo")
tracer = trace.get_tracer("liftloop.demo")
DEMO_WINDOW_S = 5.0
# How long the demo keeps waiting while Temporal cannot be reached: a restart of the dev server
# takes seconds (its state is on SQLite); this is for one that does not come back.
UNREACHABLE_LIMIT_S = 300.0
_RPC_TIMEOUT = timedelta(seconds=5)
# The client's own retries gave up on these: the server may be restarting. Anything else (the
# workflow failed, was terminated, is unknown) is an answer, not an outage.
_OUTAGE = frozenset(
    {
        RPCStatusCode.UNAVAILABLE,
        RPCStatusCode.DEADLINE_EXCEEDED,
        RPCStatusCode.UNKNOWN,
        RPCStatusCode.INTERNAL,
        RPCStatusCode.CANCELLED,
        RPCStatusCode.ABORTED,
        RPCStatusCode.RESOURCE_EXHAUSTED,
    }
)


class TemporalUnreachable(RuntimeError):
    """Temporal could not be reached for longer than the demo waits; `field` and `reason` as
    the CLI prints them."""

    field = "temporal"

    def __init__(self, seconds: float, cause: BaseException) -> None:
        self.reason = (
            f"unreachable for {seconds:.0f} s while waiting for the campaign"
            f" ({type(cause).__name__}: {cause}); it goes on in Temporal:"
            " see `liftloop campaign status`"
        )
        super().__init__(f"{self.field}: {self.reason}")


def _outage(exc: BaseException) -> bool:
    if isinstance(exc, RPCError):
        return exc.status in _OUTAGE
    return isinstance(exc, ConnectionError | TimeoutError)


async def wait_for_result(
    handle: WorkflowHandle[Any, CampaignLoopOutput],
    poll: Callable[[], Awaitable[None]],
    *,
    unreachable_limit_s: float = UNREACHABLE_LIMIT_S,
    interval_s: float = 0.5,
) -> CampaignLoopOutput:
    """The campaign's result, calling `poll` (status, approvals) every `interval_s` meanwhile.

    A restart of Temporal breaks the result's long poll and the queries: the wait starts again,
    with backoff (`interval_s` doubling to 5 s), until the campaign ends, or raises
    TemporalUnreachable once no call has succeeded for `unreachable_limit_s`."""
    last_contact = time.monotonic()
    backoff = interval_s
    while True:
        result = asyncio.ensure_future(handle.result())
        try:
            while not result.done():
                try:
                    await poll()
                    last_contact, backoff = time.monotonic(), interval_s
                except Exception as exc:  # an outage, a refused approval: the next poll retries
                    log.debug("demo: poll failed: %s: %s", type(exc).__name__, exc)
                await asyncio.wait({result}, timeout=interval_s)
            return result.result()
        except Exception as exc:
            if not _outage(exc):
                raise
            away = time.monotonic() - last_contact
            if away > unreachable_limit_s:
                raise TemporalUnreachable(away, exc) from exc
            log.warning(
                "temporal unreachable (%s); waiting for the campaign again in %.1f s",
                getattr(exc, "message", None) or type(exc).__name__,
                backoff,
            )
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
        finally:
            if not result.done():
                result.cancel()


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
    generator: str = "template"
    # What the copywriter's model calls cost (the ledger of `liftloop campaign costs`).
    model_costs: CampaignCosts | None = None


def demo_spec(
    campaign_id: str,
    batch: str,
    cycles: int,
    policy: str = "uniform",
    generator: Literal["template", "copywriter"] = "template",
) -> CampaignSpec:
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
                "generator": generator,
                # The copywriter writes from the prompt library's own e-mail template.
                "template": "winback_email" if generator == "copywriter" else "offer_email",
                "language": "en",
                "market": "US",
                "brand": "demo",
                "brief": "a new season of outdoor gear, warm and without pressure",
            },
            "cadence": {"every": "0s", "max_cycles": cycles},
            "stop": {"ship_when": "never", "min_cycles": cycles},
            "simulation": {"enabled": True, "seed": 7},
        }
    )


# The demo's two people: the manager who starts the campaign (a name in the audit log) and
# the approver `--approve-all` decides as, a user without password or token (nobody can sign
# in as them), so the demo's decisions pass the same four-eyes rule as everyone's.
DEMO_MANAGER = "demo-manager"
DEMO_APPROVER = "demo-approver"


def demo_approver(engine: Engine) -> UserView:
    found = find_user(engine, DEMO_APPROVER)
    if found is None:
        try:
            found = add_user(engine, DEMO_APPROVER, "approver")
        except AccountError:  # a concurrent demo added them first
            found = find_user(engine, DEMO_APPROVER)
    if found is None or found.role != "approver" or found.disabled:
        raise AccountError("name", f"{DEMO_APPROVER} exists but is not an active approver")
    return found


async def run_demo(
    client: Client,
    settings: Settings,
    *,
    profiles: int,
    cycles: int,
    approve_all: bool,
    policy: str = "uniform",
    generator: Literal["template", "copywriter"] = "template",
    ui_url: Callable[[str], str],
    on_status: Callable[[CampaignStatus], None] = lambda s: None,
    # Told what runs before the first status can be had (the CLI's progress).
    on_step: Callable[[str], None] = lambda step: None,
    task_queue: str | None = None,
    unreachable_limit_s: float = UNREACHABLE_LIMIT_S,
) -> DemoReport:
    engine = engine_for(settings.cdp_url)
    approval_key = approval_signing_key(settings)
    audit = audit_log(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S%f")
    batch = f"demo{stamp}"
    spec = demo_spec(f"demo-{stamp}", batch, cycles, policy, generator)
    if not settings.attribution_window_override_s:
        settings = settings.model_copy(update={"attribution_window_override_s": DEMO_WINDOW_S})
    with tracer.start_as_current_span(
        "liftloop.demo", attributes={"liftloop.campaign_id": spec.id, "liftloop.profiles": profiles}
    ) as span:
        trace_id = format(span.get_span_context().trace_id, "032x")
        on_step(f"seeding {profiles} profiles")
        await asyncio.to_thread(generate_customers, engine, profiles, batch=batch)
        on_step("starting the campaign")
        started = await start_campaign(
            client, settings, spec, task_queue=task_queue, audit=audit, actor=DEMO_MANAGER
        )
        approver = Decider(await asyncio.to_thread(demo_approver, engine), "demo")
        handle = handle_for(_untraced(client), spec.id)

        async def poll() -> None:
            status = await handle.query(CampaignLoopWorkflow.status, rpc_timeout=_RPC_TIMEOUT)
            on_status(status)
            if approve_all:
                for req in list_approvals(engine, "pending", spec.id):
                    await decide_approval(
                        client,
                        engine,
                        req.request_id,
                        True,
                        approver,
                        "approved by demo flag",
                        signing_key=approval_key,
                        audit=audit,
                    )

        output = await wait_for_result(handle, poll, unreachable_limit_s=unreachable_limit_s)
    return build_report(
        engine,
        settings,
        output,
        profiles,
        ui_url(started.workflow_id),
        trace_id,
        spec.experiment.primary_metric,
        generator,
    )


def _untraced(client: Client) -> Client:
    """The client without its tracing interceptor, for the status polls (two a second): traced,
    they would bury the campaign's first trace under query spans. Decisions stay traced."""
    config = client.config()
    config["interceptors"] = [
        i for i in config["interceptors"] if not isinstance(i, TracingInterceptor)
    ]
    return Client(**config)


def build_report(
    engine: Engine,
    settings: Settings,
    output: CampaignLoopOutput,
    profiles: int,
    ui: str,
    trace_id: str,
    primary: str,
    generator: str = "template",
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
        generator=generator,
        model_costs=SqlCostLedger(engine).costs(output.campaign_id)
        if generator == "copywriter"
        else None,
    )
