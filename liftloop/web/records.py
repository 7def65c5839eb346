"""What the pages read from the database besides the workflow's status: who started a campaign
with which spec (its `campaign.start` audit entry: the spec as started, whatever the workflow
does later), a cycle's audience (its snapshot), and the offers a variant's arm names."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.engine import Engine
from sqlmodel import col

from liftloop.loop.tables import AudienceMember
from tools.audit.tables import AuditRecord
from tools.cdp.sql import driver_time


@dataclass(frozen=True)
class CampaignStart:
    actor: str
    at: datetime
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        value = self.spec.get("name")
        return value if isinstance(value, str) else ""

    @property
    def max_discount_pct(self) -> float | None:
        limits = self.spec.get("limits")
        value = limits.get("max_discount_pct") if isinstance(limits, dict) else None
        return _number(value)

    def offer(self, arm: str) -> OfferShown | None:
        """The offer an arm (`offer@channel`) names, as the spec set it."""
        offer_id = arm.partition("@")[0]
        offers = self.spec.get("offers")
        for item in offers if isinstance(offers, list) else []:
            if isinstance(item, dict) and item.get("id") == offer_id:
                return OfferShown(
                    id=offer_id,
                    discount_pct=_number(item.get("discount_pct")) or 0.0,
                    margin_pct=_number(item.get("margin_pct")),
                    max_discount_pct=self.max_discount_pct,
                )
        return None


@dataclass(frozen=True)
class OfferShown:
    id: str
    discount_pct: float
    margin_pct: float | None
    max_discount_pct: float | None

    @property
    def above_limit(self) -> bool:
        return self.max_discount_pct is not None and self.discount_pct > self.max_discount_pct


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def campaign_start(engine: Engine, campaign_id: str) -> CampaignStart | None:
    """The latest start of the campaign as the audit log recorded it, or None."""
    log = AuditRecord
    with engine.connect() as conn:
        row = conn.execute(
            select(col(log.body), col(log.at))
            .where(col(log.campaign_id) == campaign_id)
            .where(col(log.kind) == "campaign.start")
            .order_by(col(log.seq).desc())
            .limit(1)
        ).first()
    if row is None:
        return None
    body = orjson.loads(row[0])
    details = body.get("details") or {}
    spec = details.get("spec") if isinstance(details, dict) else None
    return CampaignStart(
        actor=str(body.get("actor", "")),
        at=driver_time(row[1]),
        spec=spec if isinstance(spec, dict) else {},
    )


def audience_size(engine: Engine, campaign_id: str, cycle: int) -> int | None:
    """The people in the cycle's audience snapshot; None before the segment stage wrote it."""
    with engine.connect() as conn:
        found = conn.execute(
            select(func.count())
            .select_from(AudienceMember)
            .where(col(AudienceMember.campaign_id) == campaign_id)
            .where(col(AudienceMember.cycle) == cycle)
        ).scalar_one()
    return int(found) or None
