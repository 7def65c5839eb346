"""The token and cost ledger: every model call's usage, per campaign, cycle, job and channel,
kept in the CDP database so that costs survive the worker and a campaign's model budget holds
across cycles and processes."""

from __future__ import annotations

import threading
from collections import defaultdict
from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, insert
from sqlalchemy.engine import Engine
from sqlmodel import Field as Column
from sqlmodel import SQLModel, col, select

# What a model was called for: the loop's copy, the planner, a prompt evaluation.
Job = Literal["generate", "plan", "eval"]


class UsageEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    campaign_id: str
    cycle: int | None = None
    job: Job = "generate"
    channel: str = ""
    template_id: str = ""
    model: str
    input_tokens: int = Field(default=0, ge=0)
    output_tokens: int = Field(default=0, ge=0)
    requests: int = Field(default=0, ge=0)
    cost_eur: float = Field(default=0.0, ge=0)
    # A response served from the cache: counted, but nothing was paid for it.
    cached: bool = False


class UsageLedger(Protocol):
    def record(self, entry: UsageEntry) -> None: ...


class MemoryLedger:
    """Usage kept in memory, for a one-off run (the CLI's `generate`, tests)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entries: list[UsageEntry] = []

    def record(self, entry: UsageEntry) -> None:
        with self._lock:
            self.entries.append(entry)


class ModelUsage(SQLModel, table=True):
    __tablename__ = "model_usage"

    id: int | None = Column(default=None, primary_key=True)
    at: datetime
    campaign_id: str = Column(index=True)
    cycle: int | None = None
    job: str
    channel: str
    template_id: str
    model: str
    input_tokens: int
    output_tokens: int
    requests: int
    cost_eur: float
    cached: bool


class CostLine(BaseModel):
    """Usage summed over one (cycle, job, channel, model)."""

    model_config = ConfigDict(frozen=True)

    cycle: int | None
    job: str
    channel: str
    model: str
    input_tokens: int
    output_tokens: int
    requests: int
    cached_responses: int
    cost_eur: float


class CampaignCosts(BaseModel):
    model_config = ConfigDict(frozen=True)

    campaign_id: str
    input_tokens: int
    output_tokens: int
    requests: int
    cost_eur: float
    lines: tuple[CostLine, ...]


class SqlCostLedger:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, entry: UsageEntry) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(ModelUsage).values(at=datetime.now(UTC), **entry.model_dump()))

    def spent_eur(self, campaign_id: str) -> float:
        with self.engine.connect() as conn:
            spent = conn.execute(
                select(func.coalesce(func.sum(ModelUsage.cost_eur), 0.0)).where(
                    col(ModelUsage.campaign_id) == campaign_id
                )
            ).scalar_one()
        return float(spent)

    def costs(self, campaign_id: str) -> CampaignCosts:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(ModelUsage).where(col(ModelUsage.campaign_id) == campaign_id)
            ).all()
        sums: dict[tuple[int | None, str, str, str], list[float]] = defaultdict(
            lambda: [0, 0, 0, 0, 0.0]
        )
        for row in rows:
            acc = sums[(row.cycle, row.job, row.channel, row.model)]
            acc[0] += row.input_tokens
            acc[1] += row.output_tokens
            acc[2] += row.requests
            acc[3] += row.cached
            acc[4] += row.cost_eur
        lines = tuple(
            CostLine(
                cycle=cycle,
                job=job,
                channel=channel,
                model=model,
                input_tokens=int(v[0]),
                output_tokens=int(v[1]),
                requests=int(v[2]),
                cached_responses=int(v[3]),
                cost_eur=round(v[4], 8),
            )
            for (cycle, job, channel, model), v in sorted(
                sums.items(), key=lambda kv: (kv[0][0] is None, kv[0][0] or 0, kv[0][1:])
            )
        )
        return CampaignCosts(
            campaign_id=campaign_id,
            input_tokens=sum(line.input_tokens for line in lines),
            output_tokens=sum(line.output_tokens for line in lines),
            requests=sum(line.requests for line in lines),
            cost_eur=round(sum(line.cost_eur for line in lines), 8),
            lines=lines,
        )
