"""Fairness per cycle: treatment, discount and suppression rates across the groups of each
configured attribute (segment, country, language, any trait such as an age band), from the
cycle's decisions, the people's profiles and the outbox (tools/measure/fairness.py computes).

The measure stage stores the ratios (`fairness_checks`) and logs a `fairness.flagged` audit
entry when one is below the threshold; the guard stage of the next cycle then escalates every
variant it would have allowed to a human approval, naming the disparity.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict
from sqlalchemy import delete
from sqlalchemy import select as sa_select
from sqlalchemy.engine import Connection, Engine
from sqlmodel import col, select

from liftloop.loop.next_best_action import DO_NOTHING
from liftloop.loop.payloads import CycleRef, GuardReason
from liftloop.loop.tables import DecisionRecord, FairnessCheck, OutboxMessage
from tools.cdp.sql import insert, table_of
from tools.cdp.tables import Profile
from tools.measure.fairness import Disparity, Person, disparities

RULE_ID = "fairness.disparity"


class FairnessRule(BaseModel):
    """Which attributes to compare, and when a ratio is a disparity (the settings')."""

    model_config = ConfigDict(frozen=True)

    attributes: tuple[str, ...] = ("segment", "country", "language", "age_band")
    min_ratio: float = 0.8
    min_group: int = 100


_COLUMNS = {"country": Profile.country, "language": Profile.language}


def check_cycle(conn: Connection, ref: CycleRef, rule: FairnessRule) -> list[Disparity]:
    """Compute and store the cycle's disparities (again on a retried activity)."""
    discount = {o.id: o.discount_pct for o in ref.spec.offers}
    suppressed = set(
        conn.execute(
            select(OutboxMessage.profile_id).where(
                col(OutboxMessage.campaign_id) == ref.campaign_id,
                col(OutboxMessage.cycle) == ref.cycle,
                col(OutboxMessage.status) == "suppressed",
            )
        ).scalars()
    )
    rows = conn.execute(
        sa_select(
            col(DecisionRecord.profile_id),
            col(DecisionRecord.segment),
            col(DecisionRecord.holdout),
            col(DecisionRecord.arm),
            col(DecisionRecord.offer_id),
            col(Profile.country),
            col(Profile.language),
            col(Profile.traits),
        )
        .join(Profile, col(Profile.id) == col(DecisionRecord.profile_id), isouter=True)
        .where(
            col(DecisionRecord.campaign_id) == ref.campaign_id,
            col(DecisionRecord.cycle) == ref.cycle,
        )
    ).all()
    people = []
    for r in rows:
        groups: dict[str, str] = {}
        for attribute in rule.attributes:
            if attribute == "segment":
                value = r.segment
            elif attribute in _COLUMNS:
                value = r.country if attribute == "country" else r.language
            else:
                value = (r.traits or {}).get(attribute)
            if value is not None and str(value) != "":
                groups[attribute] = str(value)
        treated = not r.holdout and r.arm != DO_NOTHING
        people.append(
            Person(
                groups=groups,
                holdout=bool(r.holdout),
                treated=treated,
                discount_pct=discount.get(r.offer_id, 0.0) if treated else 0.0,
                suppressed=r.profile_id in suppressed,
            )
        )
    found = disparities(people, min_ratio=rule.min_ratio, min_group=rule.min_group)
    conn.execute(
        delete(FairnessCheck).where(
            col(FairnessCheck.campaign_id) == ref.campaign_id,
            col(FairnessCheck.cycle) == ref.cycle,
        )
    )
    if found:
        conn.execute(
            insert(conn, FairnessCheck),
            [{"campaign_id": ref.campaign_id, "cycle": ref.cycle, **d.model_dump()} for d in found],
        )
    return found


def flagged_before(conn: Connection, ref: CycleRef) -> list[FairnessCheck]:
    """The flagged disparities of the campaign's latest checked cycle before this one."""
    latest = conn.execute(
        select(FairnessCheck.cycle)
        .where(
            col(FairnessCheck.campaign_id) == ref.campaign_id,
            col(FairnessCheck.cycle) < ref.cycle,
        )
        .order_by(col(FairnessCheck.cycle).desc())
        .limit(1)
    ).scalar()
    if latest is None:
        return []
    found = conn.execute(
        sa_select(table_of(FairnessCheck)).where(
            col(FairnessCheck.campaign_id) == ref.campaign_id,
            col(FairnessCheck.cycle) == latest,
            col(FairnessCheck.flagged).is_(True),
        )
    )
    return [FairnessCheck.model_validate(dict(m)) for m in found.mappings()]


def escalation_reasons(flagged: Sequence[FairnessCheck], policy_version: str) -> list[GuardReason]:
    return [
        GuardReason(
            rule_id=RULE_ID,
            policy_version=policy_version,
            field=f"fairness.{f.attribute}.{f.metric}",
            severity="escalate",
            explanation=(
                f"cycle {f.cycle}: {f.metric} rate ratio {f.ratio:.2f} across {f.attribute} "
                f"({f.lowest} lowest, {f.highest} highest) is below the threshold"
            ),
        )
        for f in flagged
    ]


def checks_of(engine: Engine, campaign_id: str) -> list[FairnessCheck]:
    """Every cycle's ratios of a campaign, by cycle, attribute and metric."""
    t = table_of(FairnessCheck)
    with engine.connect() as conn:
        found = conn.execute(
            sa_select(t).where(t.c.campaign_id == campaign_id).order_by(*t.primary_key.columns)
        )
        return [FairnessCheck.model_validate(dict(m)) for m in found.mappings()]
