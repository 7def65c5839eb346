"""Send: exactly once per (campaign, cycle, profile, channel). An outbox row with a deterministic
id is committed before any provider call; consent, caps and quiet hours are judged again per
filled message; the id is the provider's idempotency key, so a retried shard never sends twice."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict
from sqlalchemy import and_, bindparam, func, update
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity

from connectors.ports import MessageSender, OutboundMessage
from liftloop.loop import next_best_action
from liftloop.loop.builtin_templates import fill_slots, slot_names
from liftloop.loop.contact_history import recent_sends
from liftloop.loop.hashing import message_id
from liftloop.loop.payloads import SendInput, SendResult
from liftloop.loop.stage_kit import stage_span, variant_id
from liftloop.loop.tables import DecisionRecord, OutboxMessage, Variant
from policies import PolicyStore, SendProposal, check_sends
from tools.audit import AuditEvent, AuditLog
from tools.cdp.consent import latest_consent
from tools.cdp.sql import insert
from tools.cdp.tables import Profile

SEND_BATCH = 250
# Rows prepared or judged between heartbeats before the first provider call, so a shard of any
# size beats well inside the heartbeat timeout and a killed worker's shard resumes at once.
HEARTBEAT_ROWS = 2_000


class MessageLinks(BaseModel):
    """Where a message's links point; `{message_id}` is replaced by the outbox id."""

    model_config = ConfigDict(frozen=True)

    unsubscribe_url: str
    landing_url: str
    provenance_url: str | None = None

    def provenance(self, mid: str) -> str | None:
        return self.provenance_url.replace("{message_id}", mid) if self.provenance_url else None

    def slots(self, mid: str) -> dict[str, str]:
        return {
            "unsubscribe_url": self.unsubscribe_url.replace("{message_id}", mid),
            "cta_url": self.landing_url.replace("{message_id}", mid),
        }


def _recipient(channel: str, profile: Mapping[str, Any]) -> str | None:
    if channel == "email":
        return profile["email"]  # type: ignore[no-any-return]
    if channel == "sms":
        return profile["phone"]  # type: ignore[no-any-return]
    return f"device:{profile['id']}"


class SendStage:
    def __init__(
        self,
        engine: Engine,
        senders: Mapping[str, MessageSender],
        policies: PolicyStore,
        sender_slots: Mapping[str, str],
        links: MessageLinks,
        audit: AuditLog,
    ) -> None:
        self.engine = engine
        self.audit = audit
        self.senders = senders
        self.policies = policies
        # Brand identity slots (postal address, imprint) that every message carries.
        self.sender_slots = dict(sender_slots)
        self.links = links

    @activity.defn(name="campaign.send")
    def send(self, inp: SendInput) -> SendResult:
        ref = inp.ref
        with stage_span("send", ref, **{"liftloop.shard": inp.shard}) as span:
            self._write_outbox(inp)
            activity.heartbeat("outbox written")
            redelivered = self._deliver(inp)
            # Counted from the outbox, so an attempt that follows a crash reports the whole shard.
            with self.engine.connect() as conn:
                counts = dict(
                    conn.execute(
                        select(OutboxMessage.status, func.count())
                        .where(
                            col(OutboxMessage.campaign_id) == ref.campaign_id,
                            col(OutboxMessage.cycle) == ref.cycle,
                            col(OutboxMessage.shard) == inp.shard,
                        )
                        .group_by(OutboxMessage.status)
                    ).all()
                )
            result = SendResult(
                shard=inp.shard,
                sent=counts.get("sent", 0),
                failed=counts.get("failed", 0),
                suppressed=counts.get("suppressed", 0),
                already_sent=redelivered,
            )
            run = f"{ref.workflow_id}:{ref.started_at.isoformat()}"
            self.audit.append(
                AuditEvent(
                    kind="send.batch",
                    actor="worker",
                    campaign_id=ref.campaign_id,
                    subject=f"{ref.workflow_id}/cycle-{ref.cycle}/shard-{inp.shard}",
                    details={
                        "cycle": ref.cycle,
                        "shard": inp.shard,
                        "sent": result.sent,
                        "failed": result.failed,
                        "suppressed": result.suppressed,
                        "redelivered": redelivered,
                        "providers": {c: s.name for c, s in sorted(self.senders.items())},
                    },
                    key=f"send.batch:{run}:{ref.cycle}:{inp.shard}",
                )
            )
            span.set_attribute("liftloop.sent", result.sent)
            span.set_attribute("liftloop.failed", result.failed)
            span.set_attribute("liftloop.redelivered", redelivered)
            return result

    def _write_outbox(self, inp: SendInput) -> None:
        """One row per (campaign, cycle, profile, channel), written before any provider call."""
        ref = inp.ref
        allowed = set(inp.variant_ids)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            decisions = conn.execute(
                select(DecisionRecord.profile_id, DecisionRecord.arm, DecisionRecord.channel).where(
                    col(DecisionRecord.campaign_id) == ref.campaign_id,
                    col(DecisionRecord.cycle) == ref.cycle,
                    col(DecisionRecord.shard) == inp.shard,
                    col(DecisionRecord.holdout).is_(False),
                    col(DecisionRecord.arm) != next_best_action.DO_NOTHING,
                )
            ).all()
            rows = []
            for pid, arm, channel in decisions:
                vid = variant_id(ref, arm)
                rows.append(
                    {
                        "id": message_id(ref.campaign_id, ref.cycle, pid, channel),
                        "campaign_id": ref.campaign_id,
                        "cycle": ref.cycle,
                        "profile_id": pid,
                        "channel": channel,
                        "shard": inp.shard,
                        "variant_id": vid,
                        "status": "pending" if vid in allowed else "suppressed",
                        "error": None if vid in allowed else "variant not approved",
                        "attempts": 0,
                        "created_at": now,
                    }
                )
            if rows:
                conn.execute(insert(conn, OutboxMessage).on_conflict_do_nothing(), rows)

    def _deliver(self, inp: SendInput) -> int:
        """Guards and sends the shard's pending rows; returns how many the provider already had."""
        ref, spec = inp.ref, inp.ref.spec
        policy = self.policies.get(spec.content.market, spec.content.brand)
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            consent = latest_consent(spec.audience.purpose, spec.channels).subquery()
            pending = (
                conn.execute(
                    sa_select(
                        col(OutboxMessage.id),
                        col(OutboxMessage.channel),
                        col(OutboxMessage.variant_id),
                        col(OutboxMessage.profile_id),
                        col(Profile.email),
                        col(Profile.phone),
                        col(Profile.first_name),
                        col(Profile.timezone),
                        consent.c.granted,
                    )
                    .join(Profile, col(Profile.id) == OutboxMessage.profile_id)
                    .outerjoin(
                        consent,
                        and_(
                            consent.c.profile_id == OutboxMessage.profile_id,
                            consent.c.channel == OutboxMessage.channel,
                        ),
                    )
                    .where(
                        col(OutboxMessage.campaign_id) == ref.campaign_id,
                        col(OutboxMessage.cycle) == ref.cycle,
                        col(OutboxMessage.shard) == inp.shard,
                        col(OutboxMessage.status) == "pending",
                    )
                    .order_by(col(OutboxMessage.id))
                )
                .mappings()
                .all()
            )
            variants = {
                v.id: (v, slot_names(v.subject, v.body))
                for v in conn.execute(
                    select(Variant.id, Variant.subject, Variant.body).where(
                        col(Variant.id).in_(inp.variant_ids)
                    )
                ).all()
            }
            prior = recent_sends(conn, inp.ref, inp.shard, now - timedelta(days=8))
            # Consent, caps and quiet hours are judged again per message at send time.
            proposals, messages = [], []
            # Nobody is sent to an empty address: such a person is suppressed with the reason.
            held = []
            for i, r in enumerate(pending):
                if i % HEARTBEAT_ROWS == 0:
                    activity.heartbeat("preparing", i)
                recipient = _recipient(
                    r["channel"], {"id": r["profile_id"], "email": r["email"], "phone": r["phone"]}
                )
                if not recipient:
                    held.append({"mid": r["id"], "err": f"no {r['channel']} address"})
                    continue
                v, names = variants[r["variant_id"]]
                values = {
                    **self.sender_slots,
                    "first_name": r["first_name"] or "",
                    **self.links.slots(r["id"]),
                }
                slots = {name: values[name] for name in names if name in values}
                proposals.append(
                    SendProposal(
                        channel=r["channel"],
                        purpose=spec.audience.purpose,
                        consented_purposes=frozenset(
                            [spec.audience.purpose] if r["granted"] else []
                        ),
                        time_zone=r["timezone"],
                        send_at=now,
                        prior_sends=prior.get(r["profile_id"], {}),
                        slots=slots,
                    )
                )
                messages.append(
                    OutboundMessage(
                        id=r["id"],
                        campaign_id=ref.campaign_id,
                        channel=r["channel"],
                        recipient=recipient,
                        subject=fill_slots(v.subject, slots),
                        body=fill_slots(v.body, slots),
                        provenance_url=self.links.provenance(r["id"]),
                    )
                )
            verdicts = []
            for start in range(0, len(proposals), HEARTBEAT_ROWS):
                verdicts += check_sends(proposals[start : start + HEARTBEAT_ROWS], policy)
                activity.heartbeat("judged", start)
            held += [
                {"mid": m.id, "err": "policy: " + ",".join(v.rule_ids)}
                for m, v in zip(messages, verdicts, strict=True)
                if v.decision != "allow"
            ]
            if held:
                conn.execute(
                    update(OutboxMessage)
                    .where(col(OutboxMessage.id) == bindparam("mid"))
                    .values(status="suppressed", error=bindparam("err")),
                    held,
                )
        by_channel: dict[str, list[OutboundMessage]] = {}
        for m, verdict in zip(messages, verdicts, strict=True):
            if verdict.decision == "allow":
                by_channel.setdefault(m.channel, []).append(m)
        return self._send_batches(by_channel)

    def _send_batches(self, by_channel: dict[str, list[OutboundMessage]]) -> int:
        mark = (
            update(OutboxMessage)
            .where(col(OutboxMessage.id) == bindparam("mid"))
            .values(
                status=bindparam("st"),
                provider_id=bindparam("pid"),
                error=bindparam("err"),
                sent_at=bindparam("at"),
                attempts=OutboxMessage.attempts + 1,
            )
        )
        already = 0
        for channel, messages in by_channel.items():
            sender = self.senders[channel]
            for start in range(0, len(messages), SEND_BATCH):
                batch = messages[start : start + SEND_BATCH]
                # A TransientSendError propagates: Temporal retries the activity and the rows
                # still pending are sent again under the same ids.
                outcomes = sender.send(batch)
                now = datetime.now(UTC)
                with self.engine.begin() as conn:
                    conn.execute(
                        mark,
                        [
                            {
                                "mid": o.message_id,
                                "st": "failed" if o.status == "failed" else "sent",
                                "pid": o.provider_id,
                                "err": o.error,
                                "at": None if o.status == "failed" else now,
                            }
                            for o in outcomes
                        ],
                    )
                already += sum(o.status == "duplicate" for o in outcomes)
                activity.heartbeat(start + len(batch))
        return already
