"""Segment: the cycle's audience from the CDP — the spec's segment at cycle time, with consent
for the purpose on at least one of the campaign's channels — stored as a snapshot of sharded
members that the later stages read by (campaign, cycle) reference."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, delete, func, insert
from sqlalchemy.engine import Engine
from sqlmodel import col, select
from temporalio import activity

from liftloop.loop.hashing import shard_of
from liftloop.loop.payloads import CycleRef, SegmentResult
from liftloop.loop.stage_kit import stage_span
from liftloop.loop.tables import AudienceMember
from tools.cdp.consent import latest_consent
from tools.cdp.segments import compile_segment
from tools.cdp.tables import Profile


class SegmentStage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="campaign.segment")
    def segment(self, ref: CycleRef) -> SegmentResult:
        spec = ref.spec
        with stage_span("segment", ref) as span, self.engine.begin() as conn:
            matched = (
                select(Profile.id, Profile.segment)
                .where(
                    compile_segment(spec.audience.segment, "audience.segment", as_of=ref.started_at)
                )
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
