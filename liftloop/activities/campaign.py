"""The campaign loop's stages as activities. Each reads and writes the CDP in batches and returns
only counts and references; each is idempotent on (campaign, cycle, stage[, shard])."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from opentelemetry import trace
from sqlalchemy import and_, bindparam, delete, func, insert, update
from sqlalchemy import select as sa_select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity

from connectors.ports import MessageSender, OutboundMessage
from liftloop.activities import bandit_store, next_best_action
from liftloop.activities.contact_history import recent_sends
from liftloop.builtin_templates import fill_slots, slot_names
from liftloop.copy_sources import CopySource, builtin_copy
from liftloop.hashing import message_id, shard_of, unit_hash
from liftloop.stages import (
    ApprovalCloseInput,
    ApprovalOpenInput,
    CycleRef,
    DecideResult,
    GenerateResult,
    GuardInput,
    GuardReason,
    GuardResult,
    LiftEstimate,
    MeasureInput,
    MeasureResult,
    SegmentResult,
    SendInput,
    SendResult,
    ShardInput,
    SimulateResult,
    VariantVerdict,
)
from liftloop.tables import (
    ApprovalRequest,
    AudienceMember,
    CycleResult,
    Decision,
    Event,
    OutboxMessage,
    Profile,
    Variant,
)
from policies import Offer as PolicyOffer
from policies import PolicyStore, SendProposal, VariantProposal, check_sends, check_variant
from tools.cdp.consent import latest_consent
from tools.cdp.people import BUCKETS, profile_buckets
from tools.cdp.segments import compile_segment
from tools.measure.decision import CycleMeasurement, GuardrailReading
from tools.measure.decision import Decision as StopDecision
from tools.measure.decision import decide as decide_stop
from tools.measure.design import StopRule
from tools.measure.stats import Estimate, GroupStats, compare_means, compare_proportions
from tools.models import nba
from tools.models.bandits import ThompsonBandit
from tools.models.registry import ModelRegistry
from tools.simulation import truth
from tools.simulation.truth import SEGMENTS

tracer = trace.get_tracer("liftloop.loop")
SEND_BATCH = 250


def _stage_span(name: str, ref: CycleRef, **attrs: Any) -> Any:
    return tracer.start_as_current_span(
        f"stage.{name}",
        attributes={"liftloop.campaign_id": ref.campaign_id, "liftloop.cycle": ref.cycle, **attrs},
    )


def _insert_ignore(engine: Engine, table: Any) -> Any:
    dialect = postgresql if engine.dialect.name == "postgresql" else sqlite
    return dialect.insert(table).on_conflict_do_nothing()


def _variant_id(ref: CycleRef, arm: str) -> str:
    return f"{ref.campaign_id}:{ref.cycle}:{arm}"


def _recipient(channel: str, profile: Mapping[str, Any]) -> str | None:
    if channel == "email":
        return profile["email"]  # type: ignore[no-any-return]
    if channel == "sms":
        return profile["phone"]  # type: ignore[no-any-return]
    return f"device:{profile['id']}"


class CampaignActivities:
    def __init__(
        self,
        engine: Engine,
        senders: Mapping[str, MessageSender],
        policies: PolicyStore,
        sender_slots: Mapping[str, str],
        copywriter: CopySource,
        models: ModelRegistry | None = None,
    ):
        self.engine = engine
        # Where the nba policy keeps each campaign's uplift model; None: the model is not used.
        self.models = models
        self.copywriter = copywriter
        self.senders = senders
        self.policies = policies
        # Brand identity slots (postal address, imprint) that every message carries.
        self.sender_slots = dict(sender_slots)

    # -- segment ---------------------------------------------------------------------------
    @activity.defn(name="campaign.segment")
    def segment(self, ref: CycleRef) -> SegmentResult:
        spec = ref.spec
        with _stage_span("segment", ref) as span, self.engine.begin() as conn:
            matched = (
                select(Profile.id, Profile.segment)
                .where(compile_segment(spec.audience.segment, as_of=ref.started_at))
                .subquery()
            )
            consent = latest_consent(spec.audience.purpose, spec.channels).subquery()
            rows = conn.execute(
                select(matched.c.id, matched.c.segment, consent.c.channel).join(
                    consent, and_(consent.c.profile_id == matched.c.id, consent.c.granted)
                )
            ).all()
            total = conn.execute(select(func.count()).select_from(matched)).scalar_one()
            members: dict[str, dict[str, Any]] = {}
            bit = {ch: 1 << i for i, ch in enumerate(spec.channels)}
            for pid, seg, channel in rows:
                m = members.setdefault(pid, {"segment": seg, "mask": 0})
                m["mask"] |= bit[channel]
            conn.execute(
                delete(AudienceMember).where(
                    col(AudienceMember.campaign_id) == ref.campaign_id,
                    col(AudienceMember.cycle) == ref.cycle,
                )
            )
            if members:
                conn.execute(
                    insert(AudienceMember),
                    [
                        {
                            "campaign_id": ref.campaign_id,
                            "cycle": ref.cycle,
                            "profile_id": pid,
                            "shard": shard_of(pid, ref.shards),
                            "segment": m["segment"],
                            "channels": m["mask"],
                        }
                        for pid, m in members.items()
                    ],
                )
            span.set_attribute("liftloop.audience", len(members))
            return SegmentResult(
                audience=len(members), excluded_no_consent=total - len(members), shards=ref.shards
            )

    # -- decide ----------------------------------------------------------------------------
    @activity.defn(name="campaign.decide")
    def decide(self, inp: ShardInput) -> DecideResult:
        ref, spec = inp.ref, inp.ref.spec
        holdout_share = spec.experiment.holdout_pct / 100.0
        now = datetime.now(UTC)
        with (
            _stage_span(
                "decide",
                ref,
                **{"liftloop.shard": inp.shard, "liftloop.policy": spec.experiment.policy},
            ) as span,
            self.engine.begin() as conn,
        ):
            members = conn.execute(
                select(
                    AudienceMember.profile_id, AudienceMember.segment, AudienceMember.channels
                ).where(
                    col(AudienceMember.campaign_id) == ref.campaign_id,
                    col(AudienceMember.cycle) == ref.cycle,
                    col(AudienceMember.shard) == inp.shard,
                )
            ).all()
            # The holdout is the CDP's stored bucket of the person, kept across identity merges
            # and cycles: a person stays in the holdout (or out of it) all campaign.
            buckets = profile_buckets(conn, spec.salt, [m[0] for m in members])
            cut = holdout_share * BUCKETS
            held_rows = [m for m in members if buckets[m[0]] < cut]
            policy_rows = [m for m in members if buckets[m[0]] >= cut]
            picks = (
                self._nba_picks(conn, ref, inp.shard, policy_rows, span)
                if spec.experiment.policy == "nba"
                else self._table_picks(conn, ref, policy_rows)
            )
            base = {"campaign_id": ref.campaign_id, "cycle": ref.cycle, "shard": inp.shard}
            base |= {"policy": spec.experiment.policy, "decided_at": now} | dict.fromkeys(
                ("expected_margin", "model_versions", "feature_hash", "trace_id")
            )
            rows = [
                base
                | {"profile_id": pid, "segment": seg, "holdout": True, "arm": "holdout"}
                | {"offer_id": "", "channel": "", "propensity": holdout_share}
                for pid, seg, _ in held_rows
            ]
            per_arm: dict[str, int] = {}
            for (pid, seg, _), pick in zip(policy_rows, picks, strict=True):
                per_arm[pick["arm"]] = per_arm.get(pick["arm"], 0) + 1
                pick["propensity"] *= 1 - holdout_share
                rows.append(base | {"profile_id": pid, "segment": seg, "holdout": False} | pick)
            conn.execute(
                delete(Decision).where(
                    col(Decision.campaign_id) == ref.campaign_id,
                    col(Decision.cycle) == ref.cycle,
                    col(Decision.shard) == inp.shard,
                )
            )
            if rows:
                conn.execute(insert(Decision), rows)
            span.set_attribute("liftloop.decided", len(rows))
            span.set_attribute("liftloop.held_out", len(held_rows))
            return DecideResult(
                shard=inp.shard, decided=len(rows), held_out=len(held_rows), per_arm=per_arm
            )

    def _table_picks(self, conn: Any, ref: CycleRef, people: Sequence[Any]) -> list[dict[str, Any]]:
        """uniform / thompson: each person's arm drawn from P(arm | segment), restricted to the
        channels they consented to; the propensity is that restricted probability."""
        spec, arms = ref.spec, ref.spec.arms
        table = (
            self._bandit(conn, ref).arm_probabilities(seed=_seed(ref))
            if spec.experiment.policy == "thompson"
            else np.full((len(SEGMENTS), len(arms)), 1.0 / len(arms))
        )
        # The restricted policy depends only on segment and consented channels: a handful of
        # distinct rows per shard.
        restricted: dict[tuple[str, int], tuple[np.ndarray, np.ndarray]] = {}
        picks = []
        for pid, seg, mask in people:
            if (seg, mask) not in restricted:
                eligible = [bool(mask & (1 << spec.channels.index(c))) for _, _, c in arms]
                p = np.where(eligible, table[SEGMENTS.index(seg)], 0.0)
                restricted[(seg, mask)] = (p / p.sum(), np.cumsum(p / p.sum()))
            probs, cumulative = restricted[(seg, mask)]
            u = unit_hash(spec.salt, ref.cycle, "arm", pid)
            k = min(int(np.searchsorted(cumulative, u, side="right")), len(arms) - 1)
            arm, offer, channel = arms[k]
            picks.append(
                {"arm": arm, "offer_id": offer.id, "channel": channel, "propensity": probs[k]}
            )
        return picks

    def _nba_picks(
        self, conn: Any, ref: CycleRef, shard: int, people: Sequence[Any], span: Any
    ) -> list[dict[str, Any]]:
        """nba: the action with the highest expected incremental margin under Thompson
        exploration, doing nothing included; logged with its model versions and feature hash."""
        spec = ref.spec
        pids = [p[0] for p in people]
        x = next_best_action.features(conn, pids)
        version, model, order_value = next_best_action.serving_model(self.models, ref.campaign_id)
        bandit, bandit_version = next_best_action.residual_bandit(conn, ref)
        decision = nba.decide(
            next_best_action.action_space(spec),
            next_best_action.inputs(
                spec,
                x,
                np.array([p[2] for p in people], dtype=np.int64),
                model,
                order_value,
                next_best_action.capped(conn, ref, shard, pids, datetime.now(UTC)),
            ),
            np.array([SEGMENTS.index(p[1]) for p in people], dtype=np.int64),
            bandit,
            seed=_seed(ref) + shard,
            floor=spec.experiment.min_arm_share,
        )
        versions = {"uplift": version or "none", "residual_bandit": bandit_version}
        trace_id = format(trace.get_current_span().get_span_context().trace_id, "032x")
        hashes = nba.feature_hashes(x) if len(pids) else []
        arms = next_best_action.action_arms(spec)
        span.set_attribute("liftloop.model.uplift", versions["uplift"])
        span.set_attribute("liftloop.do_nothing", int((decision.actions == 0).sum()))
        return [
            {
                "arm": arms[a][0],
                "offer_id": arms[a][1],
                "channel": arms[a][2],
                "propensity": float(decision.propensities[i]),
                "expected_margin": float(decision.expected_margin[i]),
                "model_versions": versions,
                "feature_hash": hashes[i],
                "trace_id": trace_id,
            }
            for i, a in enumerate(decision.actions.tolist())
        ]

    def _bandit(self, conn: Any, ref: CycleRef) -> ThompsonBandit:
        """The posteriors after the last measured cycle, or the prior."""
        stored = bandit_store.latest(conn, ref)
        if stored:
            return stored[0]
        return ThompsonBandit.create(
            [a for a, _, _ in ref.spec.arms],
            segments=len(SEGMENTS),
            kind="bernoulli",
            floor=ref.spec.experiment.min_arm_share,
        )

    # -- generate --------------------------------------------------------------------------
    @activity.defn(name="campaign.generate")
    def generate(self, ref: CycleRef) -> GenerateResult:
        spec = ref.spec
        source = self.copywriter if spec.content.generator == "copywriter" else builtin_copy
        with (
            _stage_span("generate", ref, **{"liftloop.generator": spec.content.generator}) as span,
            self.engine.begin() as conn,
        ):
            ids = []
            for arm, offer, channel in spec.arms:
                copy = source(spec, offer, channel, arm)
                vid = _variant_id(ref, arm)
                conn.execute(delete(Variant).where(col(Variant.id) == vid))
                conn.execute(
                    insert(Variant).values(
                        id=vid,
                        campaign_id=ref.campaign_id,
                        cycle=ref.cycle,
                        arm=arm,
                        channel=channel,
                        template_id=copy.template_id,
                        template_version=copy.template_version,
                        subject=copy.subject,
                        body=copy.body,
                        model=copy.model,
                        snapshot_id=copy.snapshot_id,
                        citations=list(copy.citations),
                    )
                )
                ids.append(vid)
            span.set_attribute("liftloop.variants", len(ids))
            return GenerateResult(variant_ids=ids)

    @activity.defn(name="campaign.guard")
    def guard(self, inp: GuardInput) -> GuardResult:
        ref, spec = inp.ref, inp.ref.spec
        policy = self.policies.get(spec.content.market, spec.content.brand)
        offers = {f"{o.id}@{c}": o for o in spec.offers for c in spec.channels}
        verdicts = []
        with (
            _stage_span("guard", ref, **{"liftloop.policy_version": policy.version}) as span,
            self.engine.begin() as conn,
        ):
            for vid in inp.variant_ids:
                variant = conn.execute(
                    select(Variant.arm, Variant.channel, Variant.subject, Variant.body).where(
                        col(Variant.id) == vid
                    )
                ).one()
                offer = offers[variant.arm]
                verdict = check_variant(
                    VariantProposal(
                        campaign_id=ref.campaign_id,
                        arm=variant.arm,
                        channel=variant.channel,
                        market=spec.content.market,
                        language=spec.content.language,
                        subject=variant.subject,
                        body=variant.body,
                        offer=PolicyOffer(
                            discount_pct=offer.discount_pct, margin_pct=offer.margin_pct
                        ),
                        slot_names=slot_names(variant.subject, variant.body),
                    ),
                    policy,
                )
                reasons = [
                    GuardReason.model_validate(r.model_dump(mode="json")) for r in verdict.reasons
                ]
                # The campaign's own limit sits on top of the brand policy's.
                if offer.discount_pct > spec.limits.max_discount_pct:
                    reasons.append(
                        GuardReason(
                            rule_id="campaign.max_discount",
                            policy_version=f"campaign:{spec.id}",
                            field="offer.discount_pct",
                            severity="escalate",
                            explanation=(
                                f"discount {offer.discount_pct:g}% is above the campaign "
                                f"limit of {spec.limits.max_discount_pct:g}%"
                            ),
                        )
                    )
                severities = {r.severity for r in reasons}
                decision = (
                    "block"
                    if "block" in severities
                    else "escalate"
                    if "escalate" in severities
                    else "allow"
                )
                conn.execute(
                    update(Variant)
                    .where(col(Variant.id) == vid)
                    .values(verdict=decision, approved=True if decision == "allow" else None)
                )
                verdicts.append(
                    VariantVerdict(
                        variant_id=vid,
                        arm=variant.arm,
                        decision=decision,
                        reasons=reasons,
                        policy_version=policy.version,
                    )
                )
            span.set_attribute(
                "liftloop.escalated", sum(v.decision == "escalate" for v in verdicts)
            )
            span.set_attribute("liftloop.blocked", sum(v.decision == "block" for v in verdicts))
            span.set_attribute(
                "liftloop.rule_ids", sorted({r.rule_id for v in verdicts for r in v.reasons})
            )
            return GuardResult(verdicts=verdicts)

    # -- approvals -------------------------------------------------------------------------
    @activity.defn(name="campaign.open_approvals")
    def open_approvals(self, inp: ApprovalOpenInput) -> list[str]:
        ref = inp.ref
        now = datetime.now(UTC)
        ids = []
        with _stage_span("approval.open", ref) as span, self.engine.begin() as conn:
            for v in inp.verdicts:
                rid = f"apr-{v.variant_id.replace(':', '-').replace('@', '-')}"
                conn.execute(
                    _insert_ignore(self.engine, ApprovalRequest).values(
                        id=rid,
                        campaign_id=ref.campaign_id,
                        workflow_id=ref.workflow_id,
                        cycle=ref.cycle,
                        variant_id=v.variant_id,
                        reasons=[r.model_dump(mode="json") for r in v.reasons],
                        status="pending",
                        created_at=now,
                    )
                )
                ids.append(rid)
            span.set_attribute("liftloop.approval_requests", len(ids))
        return ids

    @activity.defn(name="campaign.close_approvals")
    def close_approvals(self, inp: ApprovalCloseInput) -> None:
        now = datetime.now(UTC)
        with _stage_span("approval.close", inp.ref) as span, self.engine.begin() as conn:
            for o in inp.outcomes:
                conn.execute(
                    update(ApprovalRequest)
                    .where(col(ApprovalRequest.id) == o.request_id)
                    .values(
                        status="approved" if o.approved else "rejected",
                        decided_by=o.decided_by,
                        note=o.note,
                        decided_at=now,
                    )
                )
                conn.execute(
                    update(Variant)
                    .where(col(Variant.id) == o.variant_id)
                    .values(approved=o.approved)
                )
            span.set_attribute("liftloop.approved", sum(o.approved for o in inp.outcomes))
            span.set_attribute("liftloop.rejected", sum(not o.approved for o in inp.outcomes))

    # -- send ------------------------------------------------------------------------------
    @activity.defn(name="campaign.send")
    def send(self, inp: SendInput) -> SendResult:
        ref = inp.ref
        with _stage_span("send", ref, **{"liftloop.shard": inp.shard}) as span:
            self._write_outbox(inp)
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
                select(Decision.profile_id, Decision.arm, Decision.channel).where(
                    col(Decision.campaign_id) == ref.campaign_id,
                    col(Decision.cycle) == ref.cycle,
                    col(Decision.shard) == inp.shard,
                    col(Decision.holdout).is_(False),
                    col(Decision.arm) != next_best_action.DO_NOTHING,
                )
            ).all()
            rows = []
            for pid, arm, channel in decisions:
                vid = _variant_id(ref, arm)
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
                conn.execute(_insert_ignore(self.engine, OutboxMessage), rows)

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
            for r in pending:
                v, names = variants[r["variant_id"]]
                values = {
                    **self.sender_slots,
                    "first_name": r["first_name"] or "",
                    "unsubscribe_url": f"https://shop.example/u/{r['id']}",
                    "cta_url": f"https://shop.example/new?m={r['id']}",
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
                        recipient=_recipient(
                            r["channel"],
                            {"id": r["profile_id"], "email": r["email"], "phone": r["phone"]},
                        )
                        or "",
                        subject=fill_slots(v.subject, slots),
                        body=fill_slots(v.body, slots),
                    )
                )
            verdicts = check_sends(proposals, policy)
            held = [
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

    # -- simulate (demo only) ----------------------------------------------------------------
    @activity.defn(name="campaign.simulate")
    def simulate(self, ref: CycleRef) -> SimulateResult:
        """Plays the customers: conversions drawn from the simulator's known truth."""
        spec = ref.spec
        offers = {o.id: o for o in spec.offers}
        base_margin = float(np.mean([o.margin_pct for o in spec.offers]))
        rng = np.random.default_rng([spec.simulation.seed, ref.cycle])
        with _stage_span("simulate", ref) as span, self.engine.begin() as conn:
            rows = conn.execute(
                sa_select(
                    col(Decision.profile_id),
                    col(Decision.segment),
                    col(Decision.holdout),
                    col(Decision.offer_id),
                    col(Decision.channel),
                    col(OutboxMessage.status),
                )
                .outerjoin(OutboxMessage, _OUTBOX_OF_DECISION)
                .where(
                    col(Decision.campaign_id) == ref.campaign_id, col(Decision.cycle) == ref.cycle
                )
                .order_by(col(Decision.profile_id))
            ).all()
            n = len(rows)
            segs = np.array([r[1] for r in rows], dtype=object).astype(str)
            treated = np.array([r[5] == "sent" for r in rows])
            p = truth.control_conversion(segs)
            basket = truth.basket(segs, treated=False)
            margin_pct = np.full(n, base_margin)
            discount = np.zeros(n)
            effect_conv = np.zeros(n)
            effect_margin = np.zeros(n)
            for (offer_id, channel), idx in _groups(rows, treated).items():
                o = offers[offer_id]
                s = segs[idx]
                p1 = truth.treated_conversion(s, channel, o.discount_pct)
                effect_conv[idx] = p1 - p[idx]
                effect_margin[idx] = truth.expected_margin(
                    s,
                    treated=True,
                    channel=channel,
                    discount_pct=o.discount_pct,
                    margin_pct=o.margin_pct,
                ) - truth.expected_margin(s, treated=False, margin_pct=base_margin)
                p[idx], basket[idx] = p1, truth.basket(s, treated=True)
                margin_pct[idx], discount[idx] = o.margin_pct, o.discount_pct
            converted = rng.random(n) < p
            # Baskets vary around the segment mean (gamma with shape 2 keeps the mean).
            gross = rng.gamma(2.0, basket / 2.0)
            offsets = rng.random(n) * ref.attribution_window_s * 0.9
            events = [
                {
                    "message_id": f"sim:{ref.campaign_id}:{ref.cycle}:{rows[int(i)][0]}",
                    "profile_id": rows[int(i)][0],
                    "name": "order_completed",
                    "occurred_at": ref.window_from + timedelta(seconds=float(offsets[i])),
                    "properties": {
                        "revenue": round(float(gross[i] * (1 - discount[i] / 100)), 2),
                        "margin": round(float(gross[i] * (margin_pct[i] - discount[i]) / 100), 4),
                        "discount_pct": float(discount[i]),
                        "simulated": True,
                    },
                }
                for i in np.flatnonzero(converted)
            ]
            if events:
                conn.execute(_insert_ignore(self.engine, Event), events)
            # The measure stage compares everyone the policy decided for (sent or not) with the
            # holdout, so the truth to compare with is the mean effect over that same group.
            policy_group = ~np.array([r[2] for r in rows], dtype=bool)
            true_lift = {
                "conversion": float(effect_conv[policy_group].mean())
                if policy_group.any()
                else 0.0,
                "contribution_margin": float(effect_margin[policy_group].mean())
                if policy_group.any()
                else 0.0,
            }
            span.set_attribute("liftloop.simulated_events", len(events))
            return SimulateResult(events=len(events), true_lift=true_lift)

    # -- measure ---------------------------------------------------------------------------
    @activity.defn(name="campaign.measure")
    def measure(self, inp: MeasureInput) -> MeasureResult:
        ref, spec = inp.ref, inp.ref.spec
        end = ref.window_from + timedelta(seconds=ref.attribution_window_s)
        with _stage_span("measure", ref) as span, self.engine.begin() as conn:
            orders = (
                select(
                    Event.profile_id,
                    func.count().label("orders"),
                    func.sum(Event.properties["margin"].as_float()).label("margin"),
                )
                .where(
                    col(Event.name) == "order_completed",
                    col(Event.occurred_at) >= ref.window_from,
                    col(Event.occurred_at) < end,
                )
                .group_by(Event.profile_id)
                .subquery()
            )
            rows = conn.execute(
                sa_select(
                    col(Decision.holdout),
                    col(Decision.arm),
                    col(Decision.channel),
                    col(OutboxMessage.status),
                    func.coalesce(orders.c.orders, 0),
                    func.coalesce(orders.c.margin, 0.0),
                    col(Decision.segment),
                    col(Decision.profile_id),
                )
                .outerjoin(OutboxMessage, _OUTBOX_OF_DECISION)
                .outerjoin(orders, orders.c.profile_id == Decision.profile_id)
                .where(
                    col(Decision.campaign_id) == ref.campaign_id, col(Decision.cycle) == ref.cycle
                )
            ).all()
            holdout = np.array([r[0] for r in rows], dtype=bool)
            sent = np.array([r[3] == "sent" for r in rows], dtype=bool)
            arms = np.array([r[1] for r in rows], dtype=object)
            cost = np.array([spec.cost_of(r[2]) for r in rows])
            # Contribution margin pays for the send itself.
            metrics = {
                "conversion": np.array([r[4] > 0 for r in rows], dtype=float),
                "contribution_margin": np.array([float(r[5]) for r in rows])
                - np.where(sent, cost, 0.0),
            }
            # Everyone the policy decided for — sent, suppressed at send time or left alone —
            # against the holdout: only that comparison keeps the randomisation, so it is the
            # campaign's incremental effect (per arm: everyone assigned that arm).
            policy_group = ~holdout
            stats = {
                name: (GroupStats.from_values(v[policy_group]), GroupStats.from_values(v[holdout]))
                for name, v in metrics.items()
            }
            lifts = {name: _lift(name, *pair) for name, pair in stats.items()}
            per_arm = {
                arm: {
                    name: _lift(
                        name,
                        GroupStats.from_values(v[policy_group & (arms == arm)]),
                        stats[name][1],
                    )
                    for name, v in metrics.items()
                }
                for arm in sorted(set(arms[policy_group].tolist()))
            }
            _record_outcomes(conn, ref, rows)
            if spec.experiment.policy == "thompson":
                self._update_bandit(conn, ref, rows, sent, metrics["conversion"])
            if spec.experiment.policy == "nba":
                self._learn_nba(conn, ref, span)
            cumulative, decision = self._apply_stop_rule(conn, ref, stats)
            result = MeasureResult(
                cycle=ref.cycle,
                lifts=lifts,
                per_arm=per_arm,
                true_lift=inp.true_lift,
                sent=int(sent.sum()),
                held_out=int(holdout.sum()),
                cumulative=cumulative,
                decision=decision.action,
                decision_reason=decision.reason,
            )
            conn.execute(
                delete(CycleResult).where(
                    col(CycleResult.campaign_id) == ref.campaign_id,
                    col(CycleResult.cycle) == ref.cycle,
                )
            )
            conn.execute(
                insert(CycleResult).values(
                    campaign_id=ref.campaign_id,
                    cycle=ref.cycle,
                    measured_at=datetime.now(UTC),
                    result={
                        **result.model_dump(mode="json"),
                        "stats": {k: [g.model_dump() for g in v] for k, v in stats.items()},
                    },
                )
            )
            primary = lifts[spec.experiment.primary_metric]
            span.set_attribute("liftloop.metric", primary.metric)
            span.set_attribute("liftloop.lift.estimate", primary.estimate)
            if primary.ci_low is not None and primary.ci_high is not None:
                span.set_attribute("liftloop.lift.ci_low", primary.ci_low)
                span.set_attribute("liftloop.lift.ci_high", primary.ci_high)
            span.set_attribute("liftloop.decision", decision.action)
            span.set_attribute("liftloop.decision_reason", decision.reason)
            return result

    def _update_bandit(
        self, conn: Any, ref: CycleRef, rows: Sequence[Any], sent: np.ndarray, converted: np.ndarray
    ) -> None:
        """One batched posterior update per cycle from the people who were sent a message."""
        bandit = self._bandit(conn, ref)
        arm_index = {a: i for i, (a, _, _) in enumerate(ref.spec.arms)}
        idx = [int(i) for i in np.flatnonzero(sent)]
        bandit.update(
            [SEGMENTS.index(rows[i][6]) for i in idx],
            [arm_index[rows[i][1]] for i in idx],
            converted[idx],
        )
        bandit_store.store(conn, ref, bandit)

    def _learn_nba(self, conn: Any, ref: CycleRef, span: Any) -> None:
        """After each window the uplift model is refit on all measured cycles (served from the
        next one) and the residual posterior that drives exploration is rebuilt against it."""
        history = next_best_action.History.load(conn, ref)
        version, model, metrics = None, None, {"rows": 0.0}
        if self.models is not None:
            version, model, metrics = next_best_action.train_uplift(history, ref, self.models)
            if model is None:
                # Not enough new data for a model this cycle: keep judging by the serving one.
                version, model, metrics["order_value"] = next_best_action.serving_model(
                    self.models, ref.campaign_id
                )
        span.set_attribute("liftloop.model.uplift", version or "none")
        span.set_attribute("liftloop.model.training_rows", int(metrics["rows"]))
        bandit = next_best_action.residual_posterior(
            history, ref.spec, model, metrics.get("order_value", 0.0)
        )
        bandit_store.store(conn, ref, bandit)

    def _apply_stop_rule(
        self, conn: Any, ref: CycleRef, stats: dict[str, tuple[GroupStats, GroupStats]]
    ) -> tuple[LiftEstimate | None, StopDecision]:
        """Cumulative treated-vs-holdout statistics over all cycles so far, always-valid
        intervals (the rule looks every cycle), and the campaign's pre-registered stop rule."""
        spec = ref.spec
        earlier = conn.execute(
            select(CycleResult.result).where(
                col(CycleResult.campaign_id) == ref.campaign_id, col(CycleResult.cycle) < ref.cycle
            )
        ).scalars()
        total = dict(stats)
        for past in earlier:
            for name, (t, c) in past.get("stats", {}).items():
                if name in total:
                    total[name] = (
                        total[name][0].merged(GroupStats.model_validate(t)),
                        total[name][1].merged(GroupStats.model_validate(c)),
                    )
        rule = StopRule(
            min_cycles=spec.stop.min_cycles,
            max_cycles=spec.cadence.max_cycles,
            stop_on_harm=spec.stop.stop_when_harmful,
        )
        primary_name = spec.experiment.primary_metric
        estimates = {name: _estimate(name, t, c, sequential=True) for name, (t, c) in total.items()}
        primary = estimates[primary_name]
        if primary is None:
            return None, StopDecision(
                action="continue", reason="not_yet_conclusive", cycle=ref.cycle
            )
        guardrails = [
            GuardrailReading(name=n, estimate=e)
            for n, e in estimates.items()
            if n != primary_name and e is not None
        ]
        decision = decide_stop(
            rule, [CycleMeasurement(cycle=ref.cycle, primary=primary, guardrails=guardrails)]
        )
        if decision.action == "ship" and spec.stop.ship_when == "never":
            done = ref.cycle >= spec.cadence.max_cycles
            decision = decision.model_copy(
                update={
                    "action": "stop" if done else "continue",
                    "reason": "max_cycles" if done else "not_yet_conclusive",
                }
            )
        return _lift_from(primary_name, primary), decision


# A decision's message (its channel is the decision's, so at most one per decision).
_OUTBOX_OF_DECISION = and_(
    col(OutboxMessage.campaign_id) == Decision.campaign_id,
    col(OutboxMessage.cycle) == Decision.cycle,
    col(OutboxMessage.profile_id) == Decision.profile_id,
)


def _record_outcomes(conn: Any, ref: CycleRef, rows: Sequence[Any]) -> None:
    """Writes the window's outcome onto each decision, which makes the decision log a complete
    bandit log (action, propensity, reward) for off-policy evaluation and uplift training."""
    conn.execute(
        update(Decision)
        .where(col(Decision.campaign_id) == ref.campaign_id, col(Decision.cycle) == ref.cycle)
        .values(outcome_orders=0, outcome_margin=0.0)
    )
    converted = [
        {"pid": r[7], "orders": int(r[4]), "margin": float(r[5])} for r in rows if r[4] > 0
    ]
    if converted:
        conn.execute(
            update(Decision)
            .where(
                col(Decision.campaign_id) == ref.campaign_id,
                col(Decision.cycle) == ref.cycle,
                col(Decision.profile_id) == bindparam("pid"),
            )
            .values(outcome_orders=bindparam("orders"), outcome_margin=bindparam("margin"))
            .execution_options(synchronize_session=False),
            converted,
        )


def _seed(ref: CycleRef) -> int:
    return int(unit_hash(ref.spec.salt, ref.cycle, "policy") * 2**31)


def _groups(rows: Sequence[Any], treated: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    groups: dict[tuple[str, str], list[int]] = {}
    for i in map(int, np.flatnonzero(treated)):
        groups.setdefault((rows[i][3], rows[i][4]), []).append(i)
    return {k: np.array(v) for k, v in groups.items()}


def _estimate(
    metric: str, treated: GroupStats, control: GroupStats, *, sequential: bool = False
) -> Estimate | None:
    if treated.n < 2 or control.n < 2:
        return None
    if metric == "conversion":
        # A holdout converts a handful of times per cycle: Wald intervals under-cover there.
        return compare_proportions(
            round(treated.sum),
            treated.n,
            round(control.sum),
            control.n,
            sequential=sequential,
            agresti_caffo=True,
        )
    return compare_means(treated, control, sequential=sequential)


def _lift_from(metric: str, est: Estimate) -> LiftEstimate:
    return LiftEstimate(
        metric=metric,
        treated_n=est.n_treat,
        control_n=est.n_control,
        treated_mean=est.mean_treat,
        control_mean=est.mean_control,
        estimate=est.diff,
        ci_low=est.ci_low,
        ci_high=est.ci_high,
        p_value=est.p_value,
        sequential=est.sequential,
    )


def _lift(metric: str, treated: GroupStats, control: GroupStats) -> LiftEstimate:
    est = _estimate(metric, treated, control)
    if est is not None:
        return _lift_from(metric, est)
    mean_t = treated.sum / treated.n if treated.n else 0.0
    mean_c = control.sum / control.n if control.n else 0.0
    return LiftEstimate(
        metric=metric,
        treated_n=treated.n,
        control_n=control.n,
        treated_mean=mean_t,
        control_mean=mean_c,
        estimate=mean_t - mean_c,
        ci_low=None,
        ci_high=None,
        p_value=None,
    )
