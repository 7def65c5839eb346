"""Simulate (demo only): after the sends, the response simulator plays the customers, writing
their orders into the CDP as events and reporting the true effect for the measured lift to be
compared with."""

from __future__ import annotations

import numpy as np
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col
from temporalio import activity

from liftloop.loop.payloads import CycleRef, SimulateResult
from liftloop.loop.stage_kit import OUTBOX_OF_DECISION, stage_span
from liftloop.loop.tables import DecisionRecord, OutboxMessage
from tools.cdp.sql import insert
from tools.cdp.tables import Event
from tools.simulation.playback import Decided, SimOffer, play


class SimulateStage:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @activity.defn(name="campaign.simulate")
    def simulate(self, ref: CycleRef) -> SimulateResult:
        """Plays the customers: conversions drawn from the simulator's known truth."""
        spec = ref.spec
        with stage_span("simulate", ref) as span, self.engine.begin() as conn:
            rows = conn.execute(
                sa_select(
                    col(DecisionRecord.profile_id),
                    col(DecisionRecord.segment),
                    col(DecisionRecord.holdout),
                    col(DecisionRecord.offer_id),
                    col(DecisionRecord.channel),
                    col(OutboxMessage.status),
                )
                .outerjoin(OutboxMessage, OUTBOX_OF_DECISION)
                .where(
                    col(DecisionRecord.campaign_id) == ref.campaign_id,
                    col(DecisionRecord.cycle) == ref.cycle,
                )
                .order_by(col(DecisionRecord.profile_id))
            ).all()
            played = play(
                [Decided(r[0], r[1], r[2], r[3], r[4], r[5] == "sent") for r in rows],
                {
                    o.id: SimOffer(discount_pct=o.discount_pct, margin_pct=o.margin_pct)
                    for o in spec.offers
                },
                rng=np.random.default_rng([spec.simulation.seed, ref.cycle]),
                window_from=ref.window_from,
                window_s=ref.attribution_window_s,
                message_prefix=f"sim:{ref.campaign_id}:{ref.cycle}",
            )
            if played.events:
                conn.execute(insert(conn, Event).on_conflict_do_nothing(), played.events)
            span.set_attribute("liftloop.simulated_events", len(played.events))
            return SimulateResult(events=len(played.events), true_lift=played.true_lift)
