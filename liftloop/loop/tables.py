"""The campaign loop's tables: audience snapshots, the decision log, variants, approval
requests, the outbox, cycle results and bandit states. Tables never cross the Temporal boundary;
payloads live in `liftloop.loop.payloads`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel


class AudienceMember(SQLModel, table=True):
    """The audience snapshot of one cycle; activities pass its (campaign, cycle) reference."""

    __tablename__ = "audience_members"

    campaign_id: str = Field(primary_key=True)
    cycle: int = Field(primary_key=True)
    profile_id: str = Field(primary_key=True)
    shard: int = Field(index=True)
    segment: str
    # Bit i set: consent granted for the spec's i-th channel.
    channels: int = 0


class DecisionRecord(SQLModel, table=True):
    """One logged decision per (campaign, cycle, profile): the action, its probability under the
    policy that ran, what the models expected, and (after the window) what happened — enough to
    evaluate any other policy off-line. Arm "none" is the next-best-action's "do nothing"."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_shard", "campaign_id", "cycle", "shard"),)

    campaign_id: str = Field(primary_key=True)
    cycle: int = Field(primary_key=True)
    profile_id: str = Field(primary_key=True)
    shard: int
    segment: str
    holdout: bool
    arm: str
    offer_id: str
    channel: str
    propensity: float
    policy: str
    decided_at: datetime
    expected_margin: float | None = None
    model_versions: dict[str, str] | None = Field(default=None, sa_column=Column(JSON))
    feature_hash: str | None = None
    trace_id: str | None = None
    # Filled by the measure stage from the attribution window's orders.
    outcome_orders: int | None = None
    outcome_margin: float | None = None


class Variant(SQLModel, table=True):
    __tablename__ = "variants"

    id: str = Field(primary_key=True)
    campaign_id: str = Field(index=True)
    cycle: int
    arm: str
    channel: str
    template_id: str
    template_version: str
    subject: str
    body: str
    model: str = "template"
    snapshot_id: str | None = None
    snapshot_signature: str | None = None
    citations: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    # Why the copywriter could not write acceptable copy (rule id and message per reason): the
    # guard stage blocks such a variant with these reasons.
    generation_reasons: list[dict[str, str]] | None = Field(
        default_factory=list, sa_column=Column(JSON, nullable=True)
    )
    verdict: str = "pending"
    # The version (declared version + content hash) of the policy that gave the verdict.
    policy_version: str | None = None
    approved: bool | None = None


class ApprovalRequest(SQLModel, table=True):
    __tablename__ = "approval_requests"

    id: str = Field(primary_key=True)
    # None: a variant the loop waits on; "objection": a person's objection to review.
    kind: str | None = None
    campaign_id: str = Field(index=True)
    workflow_id: str
    cycle: int
    variant_id: str
    reasons: list[dict[str, Any]] = Field(
        default_factory=list, sa_column=Column(JSON, nullable=False)
    )
    status: str = Field(default="pending", index=True)
    decided_by: str | None = None
    note: str | None = None
    created_at: datetime
    decided_at: datetime | None = None
    # Who started the campaign (four-eyes: they may not decide), the approver group that
    # answers (approvals/routing.py) and the group that may decide too once escalated.
    started_by: str | None = None
    approver_group: str | None = None
    escalation_group: str | None = None
    slack_channel: str | None = None
    escalate_at: datetime | None = None
    escalated_at: datetime | None = None
    deadline_at: datetime | None = None
    # The same for identical variants (channel, arm, subject, body, reasons): decided in bulk.
    fingerprint: str | None = Field(default=None, index=True)


class OutboxMessage(SQLModel, table=True):
    """Written before the provider call; its id is the provider's idempotency key."""

    __tablename__ = "outbox"
    __table_args__ = (
        UniqueConstraint("campaign_id", "cycle", "profile_id", "channel", name="uq_outbox_send"),
        Index("ix_outbox_shard_status", "campaign_id", "cycle", "shard", "status"),
    )

    id: str = Field(primary_key=True)
    campaign_id: str
    cycle: int
    profile_id: str
    channel: str
    shard: int
    variant_id: str
    recipient: str | None = None
    status: str = "pending"  # pending | sent | failed | suppressed
    attempts: int = 0
    provider_id: str | None = None
    error: str | None = None
    created_at: datetime
    sent_at: datetime | None = None


class CycleResult(SQLModel, table=True):
    __tablename__ = "cycle_results"

    campaign_id: str = Field(primary_key=True)
    cycle: int = Field(primary_key=True)
    result: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    measured_at: datetime


class FairnessCheck(SQLModel, table=True):
    """A cycle's disparity ratio of one rate across the groups of one attribute."""

    __tablename__ = "fairness_checks"

    campaign_id: str = Field(primary_key=True)
    cycle: int = Field(primary_key=True)
    attribute: str = Field(primary_key=True)
    metric: str = Field(primary_key=True)
    rates: dict[str, float] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    lowest: str
    highest: str
    ratio: float
    # The gap between the lowest and highest group in standard errors (flagged only beyond 3).
    z: float = 0.0
    flagged: bool


class BanditState(SQLModel, table=True):
    """A Thompson-sampling campaign's posteriors after each measured cycle."""

    __tablename__ = "bandit_states"

    campaign_id: str = Field(primary_key=True)
    cycle: int = Field(primary_key=True)
    state: str
