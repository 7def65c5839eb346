"""Temporal client and worker: the one composition root of the loop's activities."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker

from connectors.ads.budget_file import BudgetFileSink
from connectors.jsonl_file import JsonlFileSender
from connectors.ports import MessageSender
from connectors.smtp import SmtpSender
from liftloop.budget import BudgetActivities
from liftloop.db import engine_for
from liftloop.knowledge import loop_copywriter
from liftloop.loop.approvals import ApprovalStage
from liftloop.loop.copy_sources import CopywriterSource
from liftloop.loop.decide import DecideStage
from liftloop.loop.generate import GenerateStage
from liftloop.loop.guard import GuardStage
from liftloop.loop.measure import MeasureStage
from liftloop.loop.segment import SegmentStage
from liftloop.loop.send import MessageLinks, SendStage
from liftloop.loop.simulate import SimulateStage
from liftloop.retraining import RetrainingActivities
from liftloop.settings import Settings
from policies import PolicyStore
from tools.models.registry import ModelRegistry
from workflows.budget_allocation import BudgetAllocationWorkflow
from workflows.campaign_loop import CampaignLoopWorkflow
from workflows.model_retraining import ModelRetrainingWorkflow


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        interceptors=[TracingInterceptor()],
    )


def default_senders(settings: Settings) -> dict[str, MessageSender]:
    smtp = SmtpSender(settings.smtp_host, settings.smtp_port, settings.email_from)
    return {
        "email": smtp,
        "push": JsonlFileSender(settings.outbox_dir / "push.jsonl"),
        "sms": JsonlFileSender(settings.outbox_dir / "sms.jsonl"),
    }


def build_worker(
    client: Client,
    settings: Settings,
    senders: dict[str, MessageSender] | None = None,
    task_queue: str | None = None,
) -> Worker:
    policies = PolicyStore.bundled()
    if settings.policy_path:
        policies.load(settings.policy_path)
    engine = engine_for(settings.cdp_url)
    models = ModelRegistry(settings.data_dir / "models")
    segment = SegmentStage(engine)
    decide = DecideStage(engine, models)
    generate = GenerateStage(engine, CopywriterSource(lambda: loop_copywriter(settings)))
    guard = GuardStage(engine, policies)
    approvals = ApprovalStage(engine)
    send = SendStage(
        engine,
        senders or default_senders(settings),
        policies,
        {"sender_address": settings.sender_address, "imprint": settings.imprint},
        MessageLinks(unsubscribe_url=settings.unsubscribe_url, landing_url=settings.landing_url),
    )
    simulate = SimulateStage(engine)
    measure = MeasureStage(engine, models)
    budget = BudgetActivities(
        BudgetFileSink(settings.outbox_dir / "ad_budgets.jsonl"), data_root=settings.data_dir
    )
    retraining = RetrainingActivities(models, settings.data_dir)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[CampaignLoopWorkflow, BudgetAllocationWorkflow, ModelRetrainingWorkflow],
        activities=[
            segment.segment,
            decide.decide,
            generate.generate,
            guard.guard,
            approvals.open_approvals,
            approvals.close_approvals,
            send.send,
            simulate.simulate,
            measure.measure,
            budget.refit_and_allocate,
            budget.apply,
            retraining.check_drift,
            retraining.train_candidate,
            retraining.promote,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=8),
        max_concurrent_activities=8,
    )
