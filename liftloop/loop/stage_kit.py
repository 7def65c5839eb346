"""What every stage of the loop shares: its span, the ids it derives, the decision-to-message
join."""

from __future__ import annotations

from typing import Any

from opentelemetry import trace
from sqlalchemy import and_
from sqlmodel import col

from liftloop.loop.hashing import unit_hash
from liftloop.loop.payloads import CycleRef
from liftloop.loop.tables import DecisionRecord, OutboxMessage

tracer = trace.get_tracer("liftloop.loop")


def stage_span(name: str, ref: CycleRef, **attrs: Any) -> Any:
    return tracer.start_as_current_span(
        f"stage.{name}",
        attributes={"liftloop.campaign_id": ref.campaign_id, "liftloop.cycle": ref.cycle, **attrs},
    )


def variant_id(ref: CycleRef, arm: str) -> str:
    return f"{ref.campaign_id}:{ref.cycle}:{arm}"


def policy_seed(ref: CycleRef) -> int:
    """The seed of a cycle's policy draws: the same on every retry of the stage."""
    return int(unit_hash(ref.spec.salt, ref.cycle, "policy") * 2**31)


# A decision's message (its channel is the decision's, so at most one per decision).
OUTBOX_OF_DECISION = and_(
    col(OutboxMessage.campaign_id) == DecisionRecord.campaign_id,
    col(OutboxMessage.cycle) == DecisionRecord.cycle,
    col(OutboxMessage.profile_id) == DecisionRecord.profile_id,
)
