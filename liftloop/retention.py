"""The retention job: what is older than its category's limit is deleted, on every store.

Events and quarantined messages (the CDP's), decisions and finished outbox rows (the loop's) and
spans in the local span file, each by its own setting (`LIFTLOOP_RETENTION_*_DAYS`). The audit
log is never expired: it is the record of what was done, erasures and this job included (each
run that deletes anything is an audit entry with its counts). A Temporal schedule that the
worker keeps runs it every `LIFTLOOP_RETENTION_EVERY_H` hours; `liftloop privacy retention`
shows what it would delete and `--apply` deletes it now.
"""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta

from pydantic import BaseModel
from sqlalchemy import delete
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio import activity
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
)

from liftloop.loop.tables import DecisionRecord, OutboxMessage
from liftloop.settings import Settings
from liftloop.telemetry import expire_spans, spans_path
from tools.audit import AuditEvent, AuditLog
from tools.cdp.retention import expire_cdp_rows

_FINISHED = ("sent", "failed", "suppressed")


class RetentionReport(BaseModel):
    applied: bool
    cutoffs: dict[str, datetime]
    deleted: dict[str, int]


def cutoffs(settings: Settings, now: datetime) -> dict[str, datetime]:
    days = {
        "events": settings.retention_events_days,
        "quarantine": settings.retention_quarantine_days,
        "decisions": settings.retention_decisions_days,
        "outbox": settings.retention_outbox_days,
        "spans": settings.retention_spans_days,
    }
    return {name: now - timedelta(days=d) for name, d in days.items()}


def apply_retention(
    engine: Engine, settings: Settings, audit: AuditLog, *, apply: bool, actor: str
) -> RetentionReport:
    """Delete (with `apply`) or count what is past its retention; one transaction for the
    database, then the span file."""
    limits = cutoffs(settings, datetime.now(UTC))
    with engine.connect() as conn, conn.begin() as tx:
        deleted = expire_cdp_rows(
            conn, events_before=limits["events"], quarantine_before=limits["quarantine"]
        )
        deleted["decisions"] = conn.execute(
            delete(DecisionRecord).where(col(DecisionRecord.decided_at) < limits["decisions"])
        ).rowcount
        deleted["outbox"] = conn.execute(
            delete(OutboxMessage).where(
                col(OutboxMessage.created_at) < limits["outbox"],
                col(OutboxMessage.status).in_(_FINISHED),
            )
        ).rowcount
        if not apply:
            tx.rollback()
        elif any(deleted.values()):
            audit.append(
                AuditEvent(kind="privacy.retention", actor=actor, details={"rows": deleted}),
                conn,
            )
    path = spans_path(settings)
    deleted["spans"] = expire_spans(path, limits["spans"], apply=apply) if path.exists() else 0
    return RetentionReport(applied=apply, cutoffs=limits, deleted=deleted)


class RetentionActivities:
    def __init__(self, engine: Engine, settings: Settings, audit: AuditLog) -> None:
        self.engine, self.settings, self.audit = engine, settings, audit

    @activity.defn(name="privacy.retention")
    def expire(self) -> RetentionReport:
        return apply_retention(self.engine, self.settings, self.audit, apply=True, actor="worker")


def schedule_id(settings: Settings) -> str:
    """One schedule per task queue: the workers that poll it run the job."""
    return f"liftloop-retention-{settings.task_queue}"


async def keep_retention_schedule(client: Client, settings: Settings) -> None:
    """Create the schedule that runs RetentionWorkflow, unless it exists (from an earlier start
    or another worker); its interval follows the setting at creation."""
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            "RetentionWorkflow", id=schedule_id(settings), task_queue=settings.task_queue
        ),
        spec=ScheduleSpec(
            intervals=[ScheduleIntervalSpec(every=timedelta(hours=settings.retention_every_h))]
        ),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    with contextlib.suppress(ScheduleAlreadyRunningError):
        await client.create_schedule(schedule_id(settings), schedule)
