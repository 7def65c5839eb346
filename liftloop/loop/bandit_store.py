"""The loop's bandit posteriors between cycles: one JSON state per (campaign, measured cycle)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, insert
from sqlmodel import col, select

from liftloop.loop.payloads import CycleRef
from liftloop.loop.tables import BanditState
from tools.cdp.tables import PROFILE_SEGMENTS
from tools.models.bandits import ThompsonBandit


def latest(conn: Any, ref: CycleRef) -> tuple[ThompsonBandit, int] | None:
    """The posterior after the last cycle measured before `ref`, with that cycle; None before
    the first measurement."""
    stored = conn.execute(
        select(BanditState.cycle, BanditState.state)
        .where(col(BanditState.campaign_id) == ref.campaign_id, col(BanditState.cycle) < ref.cycle)
        .order_by(col(BanditState.cycle).desc())
        .limit(1)
    ).first()
    return (ThompsonBandit.from_json(stored[1]), int(stored[0])) if stored else None


def store(conn: Any, ref: CycleRef, bandit: ThompsonBandit) -> None:
    """The posterior after measuring `ref`'s cycle; a retried measure overwrites it."""
    conn.execute(
        delete(BanditState).where(
            col(BanditState.campaign_id) == ref.campaign_id, col(BanditState.cycle) == ref.cycle
        )
    )
    conn.execute(
        insert(BanditState).values(
            campaign_id=ref.campaign_id, cycle=ref.cycle, state=bandit.to_json()
        )
    )


def thompson_bandit(conn: Any, ref: CycleRef) -> ThompsonBandit:
    """A thompson campaign's posteriors after its last measured cycle, or the prior."""
    stored = latest(conn, ref)
    if stored:
        return stored[0]
    return ThompsonBandit.create(
        [a for a, _, _ in ref.spec.arms],
        segments=len(PROFILE_SEGMENTS),
        kind="bernoulli",
        floor=ref.spec.experiment.min_arm_share,
    )
