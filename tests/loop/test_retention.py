"""The retention job: what is older than its category's limit goes, from every store, by hand
(`liftloop privacy retention`) and on the schedule the worker keeps; the audit log stays."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import Session
from temporalio.testing import WorkflowEnvironment

from liftloop.loop.tables import DecisionRecord, OutboxMessage
from liftloop.retention import apply_retention, keep_retention_schedule, schedule_id
from liftloop.settings import Settings
from liftloop.telemetry import JsonlSpanExporter, expire_spans, spans_path
from liftloop.temporal import build_worker
from tests.audit_support import audit_for
from tools.audit import timeline
from tools.cdp.tables import Event, QuarantinedMessage

NOW = datetime.now(UTC)
OLD, NEW = NOW - timedelta(days=800), NOW - timedelta(days=1)


def _seed(engine: Engine) -> None:
    with Session(engine) as s:
        for tag, at in (("old", OLD), ("new", NEW)):
            s.add(
                Event(message_id=f"e-{tag}", profile_id="p1", name="email_opened", occurred_at=at)
            )
            s.add(
                QuarantinedMessage(
                    message_id=f"q-{tag}",
                    field_path="x",
                    reason="r",
                    source="s",
                    received_at=at,
                )
            )
            s.add(
                DecisionRecord(
                    campaign_id="c1",
                    cycle=1 if tag == "old" else 2,
                    profile_id="p1",
                    shard=0,
                    segment="mens",
                    holdout=False,
                    arm="a@email",
                    offer_id="a",
                    channel="email",
                    propensity=0.5,
                    policy="uniform",
                    decided_at=at,
                )
            )
            for status in ("sent", "pending"):
                s.add(
                    OutboxMessage(
                        id=f"m-{tag}-{status}",
                        campaign_id="c1",
                        cycle=1 if status == "sent" else 3,
                        profile_id=f"p-{tag}",
                        channel="email",
                        shard=0,
                        variant_id="v",
                        status=status,
                        created_at=at,
                    )
                )
        s.commit()


def _count(engine: Engine, model: type) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def _spans(path: Path) -> None:
    lines = [
        {"name": "old", "start_time": (NOW - timedelta(days=200)).isoformat()},
        {"name": "new", "start_time": NEW.isoformat().replace("+00:00", "Z")},
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"name": "half')


def test_retention_counts_then_deletes_each_category(settings: Settings, engine: Engine) -> None:
    _seed(engine)
    _spans(spans_path(settings))
    audit = audit_for(engine)
    dry = apply_retention(engine, settings, audit, apply=False, actor="cli:dpo")
    expected = {"events": 1, "quarantine": 1, "decisions": 1, "outbox": 1, "spans": 1}
    assert dry.deleted == expected and not dry.applied
    assert _count(engine, Event) == 2 and timeline(engine) == []  # a count changes nothing

    done = apply_retention(engine, settings, audit, apply=True, actor="cli:dpo")
    assert done.deleted == expected
    assert (_count(engine, Event), _count(engine, QuarantinedMessage)) == (1, 1)
    assert _count(engine, DecisionRecord) == 1
    with engine.connect() as conn:
        left = set(conn.execute(select(OutboxMessage.id)).scalars())  # type: ignore[call-overload]
    assert left == {"m-new-sent", "m-new-pending", "m-old-pending"}  # unfinished ones stay
    [entry] = timeline(engine)
    assert (entry.kind, entry.actor) == ("privacy.retention", "cli:dpo")
    assert entry.details["rows"]["events"] == 1
    names = spans_path(settings).read_text()
    assert '"old"' not in names and '"new"' in names and names.endswith('"half')


def test_an_exporter_keeps_appending_after_the_span_file_is_rewritten(tmp_path: Path) -> None:
    path = tmp_path / "spans.jsonl"
    _spans(path)
    path.write_text(path.read_text().rsplit("\n", 1)[0] + "\n")  # whole lines only
    provider = TracerProvider()  # a private one: the global provider is not touched
    provider.add_span_processor(SimpleSpanProcessor(JsonlSpanExporter(path)))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("before"):
        pass
    assert expire_spans(path, NOW - timedelta(days=90), apply=True) == 1
    with tracer.start_as_current_span("after"):
        pass
    names = [json.loads(line)["name"] for line in path.read_text().splitlines()]
    assert '"old"' not in path.read_text() and names == ["new", "before", "after"]


@pytest.mark.asyncio(loop_scope="session")
async def test_the_worker_keeps_a_schedule_that_runs_the_job(
    dev_env: WorkflowEnvironment, settings: Settings, engine: Engine, task_queue: str
) -> None:
    settings = settings.model_copy(update={"task_queue": task_queue})
    _seed(engine)
    await keep_retention_schedule(dev_env.client, settings)
    await keep_retention_schedule(dev_env.client, settings)  # a second worker: no error
    handle = dev_env.client.get_schedule_handle(schedule_id(settings))
    described = await handle.describe()
    assert described.schedule.spec.intervals[0].every == timedelta(hours=24)
    try:
        async with build_worker(dev_env.client, settings, task_queue=task_queue):
            await handle.trigger()
            for _ in range(300):
                if _count(engine, Event) == 1:
                    break
                await asyncio.sleep(0.1)
        assert _count(engine, Event) == 1 and _count(engine, DecisionRecord) == 1
        assert [e.actor for e in timeline(engine) if e.kind == "privacy.retention"] == ["worker"]
    finally:
        await handle.delete()
