"""A CDP for the planner's tests: synthetic customers (with consents), their order history drawn
from the BG/NBD and Gamma-Gamma processes (so the CLV model fitted on it converges), and a
decision log of an earlier campaign whose channels paid back differently."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
from sqlalchemy import insert, select
from sqlalchemy.engine import Engine

from liftloop.loop.tables import DecisionRecord
from tools.cdp.tables import Event, Profile
from tools.simulation.customers import generate_customers

WEEKS = 104


def seed_customers(engine: Engine, n: int, *, batch: str, seed: int = 5) -> list[str]:
    """`n` profiles, most with orders over the last two years; returns their ids."""
    # From today's midnight: the history is the same in days whenever the tests run, so the
    # model fitted on it is too (scores are computed by date).
    now = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    generate_customers(engine, n, batch=batch, seed=seed, now=now - timedelta(weeks=WEEKS + 1))
    with engine.connect() as conn:
        ids = sorted(
            conn.execute(select(Profile.id).where(Profile.source_batch == batch)).scalars()
        )
    rng = np.random.default_rng(seed)
    rate = rng.gamma(0.5, 1 / 4.0, len(ids))  # purchases per week while active
    dropout = rng.beta(0.8, 2.5, len(ids))  # chance to leave after each purchase
    spend = rng.gamma(4, 1 / 15.0, len(ids))  # per-customer spend scale (Gamma-Gamma)
    start = now - timedelta(weeks=WEEKS)
    rows = []
    for i, pid in enumerate(ids):
        if i % 10 >= 7:  # three in ten never ordered
            continue
        week = rng.uniform(0, WEEKS / 2)
        while week < WEEKS:
            rows.append(
                {
                    "message_id": f"{batch}-order-{len(rows)}",
                    "profile_id": pid,
                    "name": "order_completed",
                    "occurred_at": start + timedelta(weeks=week),
                    "properties": {"revenue": round(float(rng.gamma(6, 1 / spend[i])), 2)},
                }
            )
            if rng.random() < dropout[i]:
                break
            week += rng.exponential(1 / rate[i])
    with engine.begin() as conn:
        conn.execute(insert(Event), rows)
    return ids


def seed_decision_log(
    engine: Engine, ids: list[str], *, campaign_id: str, margin: dict[str, float], seed: int = 3
) -> None:
    """A measured cycle: a fifth held out, the rest messaged on the channels of `margin` in
    turn; each person orders with 10 % chance plus the channel's extra chance in `margin`."""
    rng = np.random.default_rng(seed)
    channels = list(margin)
    now = datetime.now(UTC)
    rows = []
    for i, pid in enumerate(ids):
        holdout = i % 5 == 0
        channel = "" if holdout else channels[i % len(channels)]
        chance = 0.10 + (0.0 if holdout else margin[channel])
        ordered = bool(rng.random() < chance)
        rows.append(
            {
                "campaign_id": campaign_id,
                "cycle": 1,
                "profile_id": pid,
                "shard": 0,
                "segment": "womens",
                "holdout": holdout,
                "arm": "holdout" if holdout else f"none@{channel}",
                "offer_id": "" if holdout else "none",
                "channel": channel,
                "propensity": 0.8,
                "policy": "uniform",
                "decided_at": now,
                "outcome_orders": int(ordered),
                "outcome_margin": 20.0 if ordered else 0.0,
            }
        )
    with engine.begin() as conn:
        conn.execute(insert(DecisionRecord), rows)
