"""The typed input and output of every loop stage: the seams that policies, decisioning,
measurement, the CDP and knowledge plug into. Only references and counts cross Temporal;
per-profile data stays in the database, so history does not grow with the audience."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from liftloop.loop.spec import CampaignSpec
from tools.measure.lift import LiftEstimate

GuardDecision = Literal["allow", "block", "escalate"]


class _Payload(BaseModel):
    # Payloads evolve only by adding optional fields, so old histories still replay.
    model_config = ConfigDict(frozen=True)


class CycleRef(_Payload):
    campaign_id: str
    workflow_id: str
    cycle: int
    spec: CampaignSpec
    started_at: datetime
    attribution_window_s: float
    shards: int = 4
    # Set once the sends are done: the attribution window runs from here.
    window_start: datetime | None = None

    @property
    def window_from(self) -> datetime:
        return self.window_start or self.started_at


class SegmentResult(_Payload):
    audience: int
    excluded_no_consent: int
    shards: int


class ShardInput(_Payload):
    ref: CycleRef
    shard: int


class DecideResult(_Payload):
    shard: int
    decided: int
    held_out: int
    per_arm: dict[str, int] = Field(default_factory=dict)


class GenerateResult(_Payload):
    variant_ids: list[str]


class GuardReason(_Payload):
    rule_id: str
    policy_version: str
    field: str
    severity: Literal["notice", "escalate", "block"] = "block"
    explanation: str
    span: tuple[int, int] | None = None


class VariantVerdict(_Payload):
    variant_id: str
    arm: str
    decision: GuardDecision
    reasons: list[GuardReason] = Field(default_factory=list)
    policy_version: str


class GuardInput(_Payload):
    ref: CycleRef
    variant_ids: list[str]


class GuardResult(_Payload):
    verdicts: list[VariantVerdict]


class ApprovalOpenInput(_Payload):
    ref: CycleRef
    verdicts: list[VariantVerdict]
    # The campaign's starter (four-eyes), the wait before escalation and the deadline.
    started_by: str | None = None
    escalate_after_s: float | None = None
    timeout_s: float | None = None


class ApprovalEscalateInput(_Payload):
    ref: CycleRef
    request_ids: list[str]


class ApprovalProof(_Payload):
    """That a decision came through liftloop's approval path (`approvals.requests`): an
    HMAC-SHA256 under the approval signing key over the request id, the approved flag, the
    approver, the note, the nonce and the expiry. Only this MAC travels, never the key."""

    nonce: str
    # Unix time in seconds after which the worker refuses the proof.
    expires_at: int
    mac: str


class ApprovalDecision(_Payload):
    request_id: str
    approved: bool
    approver: str = "unknown"
    note: str = ""
    # Where it was decided: api, web, slack, cli, demo (for the audit log).
    path: str | None = None
    # Required by the workflow (patch "approval-proof"); None only in histories recorded before.
    proof: ApprovalProof | None = None


class ApprovalOutcome(_Payload):
    request_id: str
    variant_id: str
    approved: bool
    decided_by: str
    note: str = ""
    path: str | None = None


class ApprovalCloseInput(_Payload):
    ref: CycleRef
    outcomes: list[ApprovalOutcome]


class SendInput(_Payload):
    ref: CycleRef
    shard: int
    variant_ids: list[str]


class SendResult(_Payload):
    shard: int
    sent: int
    failed: int
    suppressed: int
    already_sent: int = 0


class SimulateResult(_Payload):
    events: int
    true_lift: dict[str, float]


class MeasureInput(_Payload):
    ref: CycleRef
    true_lift: dict[str, float] | None = None
    # What the workflow knows when it measures, so that the measure span says what it does next:
    # a stop was requested (it cut the attribution window short), this is the last cycle.
    stop_requested: bool = False
    last_cycle: bool = False


class MeasureResult(_Payload):
    cycle: int
    lifts: dict[str, LiftEstimate]
    per_arm: dict[str, dict[str, LiftEstimate]] = Field(default_factory=dict)
    true_lift: dict[str, float] | None = None
    sent: int = 0
    held_out: int = 0
    # The pre-registered stop rule applied to the cumulative, always-valid primary estimate.
    cumulative: LiftEstimate | None = None
    decision: Literal["continue", "ship", "stop"] = "continue"
    decision_reason: str = ""
