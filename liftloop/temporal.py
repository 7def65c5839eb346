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
from liftloop.activities.campaign import CampaignActivities
from liftloop.copy_sources import CopywriterSource
from liftloop.db import engine_for
from liftloop.settings import Settings
from policies import PolicyStore
from tools.allocator.activities import BudgetActivities
from tools.models.activities import ModelActivities
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
    campaign = CampaignActivities(
        engine_for(settings.cdp_url),
        senders or default_senders(settings),
        policies,
        {"sender_address": settings.sender_address, "imprint": settings.imprint},
        CopywriterSource(settings.data_dir, settings.knowledge_signing_key.get_secret_value()),
        ModelRegistry(settings.data_dir / "models"),
    )
    budget = BudgetActivities(
        BudgetFileSink(settings.outbox_dir / "ad_budgets.jsonl"), data_root=settings.data_dir
    )
    models = ModelActivities(ModelRegistry(settings.data_dir / "models"), settings.data_dir)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[CampaignLoopWorkflow, BudgetAllocationWorkflow, ModelRetrainingWorkflow],
        activities=[
            campaign.segment,
            campaign.decide,
            campaign.generate,
            campaign.guard,
            campaign.open_approvals,
            campaign.close_approvals,
            campaign.send,
            campaign.simulate,
            campaign.measure,
            budget.refit_and_allocate,
            budget.apply,
            models.check_drift,
            models.train_candidate,
            models.promote,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=8),
        max_concurrent_activities=8,
    )
