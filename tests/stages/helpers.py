"""Helpers of the stage tests: the spec, the stages built as the worker builds them, a recording
message sender, and plain reads of the tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel, col, select
from temporalio.testing import ActivityEnvironment

from connectors.ports import OutboundMessage, SendOutcome, TransientSendError
from liftloop.loop.copy_sources import builtin_copy
from liftloop.loop.decide import DecideStage
from liftloop.loop.generate import GenerateStage
from liftloop.loop.payloads import (
    CycleRef,
    DecideResult,
    GenerateResult,
    SegmentResult,
    SendInput,
    SendResult,
    ShardInput,
)
from liftloop.loop.segment import SegmentStage
from liftloop.loop.send import MessageLinks, SendStage
from liftloop.loop.spec import CampaignSpec, parse_spec
from liftloop.loop.tables import AudienceMember, DecisionRecord, OutboxMessage
from policies import PolicyStore
from tests.audit_support import audit_for
from tools.cdp.tables import Consent, Profile
from tools.content.ledger import SqlCostLedger
from tools.models.registry import ModelRegistry

# The seeded customers the campaigns target, and a batch that no campaign's segment matches.
BATCH = "stg"
OTHER_BATCH = "oth"
CAMPAIGN = "stg-campaign"
# How many customers the `engine` fixture seeds in each batch.
CUSTOMERS = 300
OTHERS = 40

CycleRefBuilder = Callable[..., CycleRef]

SENDER_SLOTS = {
    "sender_address": "liftloop demo shop, 1 Example Street, Springfield, IL 62701",
    "imprint": "liftloop Demo GmbH, Beispielstr. 1, 10115 Berlin, HRB 000000",
}
LINKS = MessageLinks(
    unsubscribe_url="https://shop.example/u/{message_id}",
    landing_url="https://shop.example/new?m={message_id}",
)


def make_spec(campaign_id: str = CAMPAIGN, **overrides: Any) -> CampaignSpec:
    """Three offers (one above the campaign's 15 % limit) on e-mail and push, for the seeded
    batch, guarded by the demo brand's US policy (no quiet hours, loose caps)."""
    data: dict[str, Any] = {
        "id": campaign_id,
        "audience": {"segment": {"all": [{"trait": "source_batch", "eq": BATCH}]}},
        "channels": ["email", "push"],
        "offers": [
            {"id": "content"},
            {"id": "ten_off", "discount_pct": 10},
            {"id": "twenty_off", "discount_pct": 20},
        ],
        "limits": {"max_discount_pct": 15},
        "cadence": {"every": "0s", "max_cycles": 5},
        "stop": {"ship_when": "lift_ci_low_above_zero", "min_cycles": 3},
        "content": {"market": "US", "brand": "demo"},
    }
    data.update(overrides)
    return parse_spec(data)


def all_rows(engine: Engine, model: type[SQLModel], *where: Any) -> list[Any]:
    with Session(engine) as session:
        return list(session.exec(select(model).where(*where)).all())


def members(engine: Engine, ref: CycleRef) -> list[AudienceMember]:
    return all_rows(
        engine,
        AudienceMember,
        col(AudienceMember.campaign_id) == ref.campaign_id,
        col(AudienceMember.cycle) == ref.cycle,
    )


def decisions(engine: Engine, ref: CycleRef) -> list[DecisionRecord]:
    return all_rows(
        engine,
        DecisionRecord,
        col(DecisionRecord.campaign_id) == ref.campaign_id,
        col(DecisionRecord.cycle) == ref.cycle,
    )


def outbox(engine: Engine, ref: CycleRef) -> list[OutboxMessage]:
    return all_rows(
        engine,
        OutboxMessage,
        col(OutboxMessage.campaign_id) == ref.campaign_id,
        col(OutboxMessage.cycle) == ref.cycle,
    )


def profiles(engine: Engine) -> dict[str, Profile]:
    return {p.id: p for p in all_rows(engine, Profile)}


def consented_channels(
    engine: Engine, batch: str, channels: Sequence[str], purpose: str = "marketing"
) -> dict[str, set[str]]:
    """Per profile of the batch, the channels whose latest statement for the purpose grants
    consent, worked out in Python from the raw consent rows (not through the CDP's query)."""
    batch_ids = {p.id for p in all_rows(engine, Profile, col(Profile.source_batch) == batch)}
    latest: dict[tuple[str, str], Consent] = {}
    for c in all_rows(engine, Consent, col(Consent.purpose) == purpose):
        if c.profile_id not in batch_ids or c.channel not in channels:
            continue
        key = (c.profile_id, c.channel)
        held = latest.get(key)
        if held is None or (c.recorded_at, c.id or 0) > (held.recorded_at, held.id or 0):
            latest[key] = c
    out: dict[str, set[str]] = {}
    for (pid, channel), c in latest.items():
        if c.granted:
            out.setdefault(pid, set()).add(channel)
    return out


def add_consent(engine: Engine, profile_id: str, channel: str, granted: bool, at: Any) -> None:
    with Session(engine) as session:
        session.add(
            Consent(
                profile_id=profile_id,
                channel=channel,
                purpose="marketing",
                granted=granted,
                source="test",
                recorded_at=at,
            )
        )
        session.commit()


def run_segment(env: ActivityEnvironment, engine: Engine, ref: CycleRef) -> SegmentResult:
    return env.run(SegmentStage(engine).segment, ref)


def run_decide(
    env: ActivityEnvironment,
    engine: Engine,
    ref: CycleRef,
    models: ModelRegistry | None = None,
) -> list[DecideResult]:
    stage = DecideStage(engine, models)
    return [env.run(stage.decide, ShardInput(ref=ref, shard=s)) for s in range(ref.shards)]


def run_generate(env: ActivityEnvironment, engine: Engine, ref: CycleRef) -> GenerateResult:
    return env.run(
        GenerateStage(engine, builtin_copy, audit_for(engine), SqlCostLedger(engine)).generate, ref
    )


def send_stage(engine: Engine, senders: dict[str, Any]) -> SendStage:
    return SendStage(engine, senders, PolicyStore.bundled(), SENDER_SLOTS, LINKS, audit_for(engine))


def run_send(
    env: ActivityEnvironment, stage: SendStage, ref: CycleRef, variant_ids: Sequence[str]
) -> list[SendResult]:
    return [
        env.run(stage.send, SendInput(ref=ref, shard=s, variant_ids=list(variant_ids)))
        for s in range(ref.shards)
    ]


class RecordingSender:
    """A provider that keeps what it delivered, honours the idempotency key (an id it has seen
    is a duplicate) and can have an outage: on call number `fail_on_call` it delivers the first
    `deliver_before_failing` messages of the batch and then raises TransientSendError."""

    name = "recording"

    def __init__(
        self,
        fail_on_call: int | None = None,
        deliver_before_failing: int = 0,
        refuse: frozenset[str] = frozenset(),
    ) -> None:
        self.fail_on_call = fail_on_call
        self.deliver_before_failing = deliver_before_failing
        # Recipients the provider refuses for good (a permanent failure outcome).
        self.refuse = refuse
        self.calls = 0
        self.delivered: dict[str, OutboundMessage] = {}
        self.deliveries: list[str] = []
        self.batches: list[int] = []

    def _deliver(self, m: OutboundMessage) -> SendOutcome:
        if m.recipient in self.refuse:
            return SendOutcome(message_id=m.id, status="failed", error="recipient refused")
        if m.id in self.delivered:
            return SendOutcome(message_id=m.id, status="duplicate", provider_id=f"p-{m.id}")
        self.delivered[m.id] = m
        self.deliveries.append(m.id)
        return SendOutcome(message_id=m.id, status="sent", provider_id=f"p-{m.id}")

    def send(self, messages: Sequence[OutboundMessage]) -> list[SendOutcome]:
        self.calls += 1
        self.batches.append(len(messages))
        if self.calls == self.fail_on_call:
            for m in messages[: self.deliver_before_failing]:
                self._deliver(m)
            raise TransientSendError("provider unreachable")
        return [self._deliver(m) for m in messages]
