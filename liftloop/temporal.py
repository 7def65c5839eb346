"""Temporal client and worker: the one composition root of the loop's activities."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.runtime import (
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.service import TLSConfig
from temporalio.worker import Worker

from connectors.ads.budget_file import BudgetFileSink
from connectors.jsonl_file import JsonlFileSender
from connectors.ports import MessageSender
from connectors.smtp import SmtpSender
from liftloop.budget import BudgetActivities
from liftloop.credentials import ensure_credentials, log_warnings
from liftloop.cycle_tracing import CycleTracingInterceptor
from liftloop.db import engine_for
from liftloop.knowledge import evaluation_copywriter, loop_copywriter, policy_store
from liftloop.loop.approvals import ApprovalStage
from liftloop.loop.copy_sources import CopywriterSource
from liftloop.loop.decide import DecideStage
from liftloop.loop.fairness import FairnessRule
from liftloop.loop.generate import GenerateStage
from liftloop.loop.guard import GuardStage
from liftloop.loop.measure import MeasureStage
from liftloop.loop.prompt_releases import PromptReleases
from liftloop.loop.segment import SegmentStage
from liftloop.loop.send import MessageLinks, SendStage
from liftloop.loop.simulate import SimulateStage
from liftloop.notifications import approval_notifier
from liftloop.retention import RetentionActivities
from liftloop.retraining import RetrainingActivities
from liftloop.settings import Settings
from tools.audit import AuditLog
from tools.content.ledger import SqlCostLedger
from tools.models.registry import ModelRegistry
from workflows.budget_allocation import BudgetAllocationWorkflow
from workflows.campaign_loop import CampaignLoopWorkflow
from workflows.model_retraining import ModelRetrainingWorkflow
from workflows.retention import RetentionWorkflow


class TemporalTlsError(ValueError):
    """A TLS setting names a file that cannot be read, or a certificate without its key."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{field}: {reason}")


def _pem(setting: str, path: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise TemporalTlsError(setting, f"cannot read {path}: {exc.strerror or exc}") from None


def tls_config(settings: Settings) -> TLSConfig | bool:
    """TLS to Temporal from the settings: False when none is set; with a client certificate
    and key, mutual TLS (the server checks who connects); with a CA, the server's certificate
    is checked against it instead of the system's roots."""
    cert = _pem("LIFTLOOP_TEMPORAL_TLS_CERT", settings.temporal_tls_cert)
    key = _pem("LIFTLOOP_TEMPORAL_TLS_KEY", settings.temporal_tls_key)
    ca = _pem("LIFTLOOP_TEMPORAL_TLS_CA", settings.temporal_tls_ca)
    if (cert is None) != (key is None):
        missing = "LIFTLOOP_TEMPORAL_TLS_KEY" if key is None else "LIFTLOOP_TEMPORAL_TLS_CERT"
        raise TemporalTlsError(missing, "a client certificate and its key go together")
    if not (settings.temporal_tls or cert or ca or settings.temporal_tls_server_name):
        return False
    return TLSConfig(
        server_root_ca_cert=ca,
        client_cert=cert,
        client_private_key=key,
        domain=settings.temporal_tls_server_name or None,
    )


async def connect(settings: Settings) -> Client:
    return await Client.connect(
        settings.temporal_target,
        namespace=settings.temporal_namespace,
        data_converter=pydantic_data_converter,
        # One trace per cycle (liftloop/cycle_tracing.py).
        interceptors=[CycleTracingInterceptor()],
        tls=tls_config(settings),
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
    # The keys first: a public value fails the worker's start naming its setting.
    credentials = ensure_credentials(settings)
    log_warnings(credentials)
    policies = policy_store(settings)
    engine = engine_for(settings.cdp_url)
    models = ModelRegistry(settings.data_dir / "models")
    segment = SegmentStage(engine)
    decide = DecideStage(engine, models)
    audit = AuditLog(engine, credentials.audit_signing_key)
    generate = GenerateStage(
        engine,
        CopywriterSource(
            lambda: loop_copywriter(settings),
            PromptReleases(engine, lambda: evaluation_copywriter(settings)),
        ),
        audit,
        SqlCostLedger(engine),
    )
    guard = GuardStage(engine, policies, audit)
    approvals = ApprovalStage(
        engine,
        audit,
        decision_key=credentials.approval_signing_key,
        routes=settings.approval_routes,
        escalation_group=settings.approval_escalation_group,
        slack_channel=settings.slack_channel,
        notifier=approval_notifier(settings, engine),
    )
    send = SendStage(
        engine,
        senders or default_senders(settings),
        policies,
        {"sender_address": settings.sender_address, "imprint": settings.imprint},
        MessageLinks(
            unsubscribe_url=settings.unsubscribe_url,
            landing_url=settings.landing_url,
            provenance_url=settings.provenance_url,
        ),
        audit,
    )
    simulate = SimulateStage(engine)
    measure = MeasureStage(
        engine,
        audit,
        models,
        FairnessRule(
            attributes=tuple(settings.fairness_attributes),
            min_ratio=settings.fairness_min_ratio,
            min_group=settings.fairness_min_group,
        ),
    )
    budget = BudgetActivities(
        BudgetFileSink(settings.outbox_dir / "ad_budgets.jsonl"), data_root=settings.data_dir
    )
    retraining = RetrainingActivities(models, settings.data_dir, audit)
    retention = RetentionActivities(engine, settings, audit)
    return Worker(
        client,
        task_queue=task_queue or settings.task_queue,
        workflows=[
            CampaignLoopWorkflow,
            BudgetAllocationWorkflow,
            ModelRetrainingWorkflow,
            RetentionWorkflow,
        ],
        activities=[
            segment.segment,
            decide.decide,
            generate.generate,
            guard.guard,
            approvals.open_approvals,
            approvals.close_approvals,
            approvals.escalate_approvals,
            approvals.verify_decision,
            send.send,
            simulate.simulate,
            measure.measure,
            budget.refit_and_allocate,
            budget.apply,
            retraining.check_drift,
            retraining.train_candidate,
            retraining.promote,
            retention.expire,
        ],
        activity_executor=ThreadPoolExecutor(max_workers=8),
        max_concurrent_activities=8,
    )


def forward_temporal_logs() -> None:
    """Send the errors of Temporal's core to Python logging (so stderr) instead of stdout, where
    they would break `--json` output, and leave out its warnings: one per retried call while
    the server restarts; `wait_for_result` says once per attempt that it waits. Call it before
    the first client connects."""
    Runtime.set_default(
        Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="ERROR", other_level="ERROR"),
                    forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
                )
            )
        ),
        error_if_already_set=False,
    )
