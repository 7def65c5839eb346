"""A campaign's decision log as bandit feedback, for off-policy evaluation (`liftloop ope`).

Every measured decision is one round: the context is the person's segment, the action is what
the logging policy chose (the holdout counts as an action, so the propensities of one context
sum to one), the reward is the margin of the person's orders in the attribution window and the
propensity is the logged probability of that action.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine
from sqlmodel import col

from liftloop.loop.tables import DecisionRecord


class BanditRound(BaseModel):
    context: int
    action: int
    reward: float
    propensity: float
    # Names for the indices, so a reader needs no second file.
    segment: str
    arm: str
    cycle: int


class BanditExport(BaseModel):
    campaign_id: str
    rounds: list[BanditRound]
    segments: list[str]
    arms: list[str]
    unmeasured: int


def export_bandit_log(engine: Engine, campaign_id: str) -> BanditExport:
    """The campaign's measured decisions; decisions still waiting for their window are counted
    in `unmeasured` and left out (their reward is not known yet)."""
    with engine.connect() as conn:
        rows: list[Any] = list(
            conn.execute(
                sa_select(
                    col(DecisionRecord.cycle),
                    col(DecisionRecord.segment),
                    col(DecisionRecord.arm),
                    col(DecisionRecord.propensity),
                    col(DecisionRecord.outcome_margin),
                )
                .where(col(DecisionRecord.campaign_id) == campaign_id)
                .order_by(col(DecisionRecord.cycle), col(DecisionRecord.profile_id))
            ).all()
        )
    measured = [r for r in rows if r.outcome_margin is not None]
    segments = sorted({r.segment for r in measured})
    arms = sorted({r.arm for r in measured}, key=lambda a: (a != "holdout", a != "none", a))
    seg_index = {s: i for i, s in enumerate(segments)}
    arm_index = {a: i for i, a in enumerate(arms)}
    return BanditExport(
        campaign_id=campaign_id,
        rounds=[
            BanditRound(
                context=seg_index[r.segment],
                action=arm_index[r.arm],
                reward=float(r.outcome_margin),
                propensity=float(r.propensity),
                segment=r.segment,
                arm=r.arm,
                cycle=int(r.cycle),
            )
            for r in measured
        ],
        segments=segments,
        arms=arms,
        unmeasured=len(rows) - len(measured),
    )
