"""Campaign specs: what a campaign manager writes, validated before anything starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Channel = Literal["email", "push", "sms"]
Purpose = Literal["marketing", "personalisation", "analytics", "ads"]
Metric = Literal["conversion", "contribution_margin"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(value: str | float | int) -> float:
    """'7d', '12h', '30m', '45s' or a number of seconds → seconds."""
    if isinstance(value, int | float):
        return float(value)
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"'{value}' is not a duration like 7d, 12h, 30m or 45s")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


class SpecError(ValueError):
    """A campaign spec that cannot start, with the field and the reason."""

    def __init__(self, problems: list[tuple[str, str]]):
        self.problems = problems
        super().__init__("; ".join(f"{field}: {reason}" for field, reason in problems))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Goal(_Model):
    kpi: Metric = "contribution_margin"
    attribution_window: float = Field(default=7 * 86400.0, gt=0, description="seconds")

    @field_validator("attribution_window", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)


class Audience(_Model):
    # A declarative filter over profile traits: {"all": [{"trait": "country", "eq": "DE"}, ...]}.
    segment: dict[str, Any] = Field(default_factory=dict)
    consent: dict[str, Purpose] = Field(default_factory=lambda: {"purpose": "marketing"})  # type: ignore[arg-type]

    @property
    def purpose(self) -> Purpose:
        return self.consent.get("purpose", "marketing")


class Offer(_Model):
    id: str = Field(pattern=r"^[a-z0-9_\-]+$")
    discount_pct: float = Field(default=0.0, ge=0, lt=100)
    margin_pct: float = Field(default=40.0, gt=0, le=100)


class FrequencyCap(_Model):
    per_day: int | None = Field(default=None, ge=0)
    per_week: int | None = Field(default=None, ge=0)


class QuietHours(_Model):
    from_: str = Field(alias="from", pattern=r"^\d\d:\d\d$")
    to: str = Field(pattern=r"^\d\d:\d\d$")
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Limits(_Model):
    max_discount_pct: float = Field(default=15.0, ge=0, le=100)
    frequency_cap: FrequencyCap = FrequencyCap()
    quiet_hours: QuietHours | None = None


class Experiment(_Model):
    holdout_pct: float = Field(default=10.0, gt=0, lt=100)
    # uniform: every allowed arm alike; thompson: Beta-Bernoulli bandit on conversion per
    # segment; nba: next best action by expected incremental margin (uplift model trained on
    # this campaign's own randomised history) with Thompson exploration, doing nothing included.
    policy: Literal["uniform", "thompson", "nba"] = "uniform"
    min_arm_share: float = Field(default=0.01, ge=0, le=0.5)
    # nba: prior spread (currency per person) of the residual posterior that drives exploration
    # before the uplift model has data; wide enough to try every action in the first cycle.
    exploration_sd: float = Field(default=1.0, gt=0)
    primary_metric: Metric = "contribution_margin"
    # The salt keeps assignments stable across cycles and independent between campaigns.
    salt: str = ""


class Content(_Model):
    # "template": the versioned built-in templates; "copywriter": the copywriter agent writes
    # one variant per arm from retrieved brand knowledge, with citations.
    generator: Literal["template", "copywriter"] = "template"
    template: str = "offer_email"
    language: Literal["en", "de"] = "en"
    # The brand and market whose policy file guards the copy and the sends.
    market: str = Field(default="US", pattern=r"^[A-Z]{2}$")
    brand: str = "default"
    brief: str = ""


class Cadence(_Model):
    every: float = Field(default=86400.0, ge=0, description="seconds between cycles")
    max_cycles: int = Field(default=14, ge=1, le=10_000)

    @field_validator("every", mode="before")
    @classmethod
    def _duration(cls, v: Any) -> float:
        return parse_duration(v)


class StopRule(_Model):
    ship_when: Literal["lift_ci_low_above_zero", "never"] = "lift_ci_low_above_zero"
    stop_when_harmful: bool = True
    min_cycles: int = Field(default=3, ge=1)


class Simulation(_Model):
    """Demo only: the response simulator plays the customers after each send."""

    enabled: bool = False
    seed: int = 7


def _default_channel_cost() -> dict[Channel, float]:
    return {"email": 0.002, "push": 0.001, "sms": 0.05}


class CampaignSpec(_Model):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_\-]{0,79}$")
    name: str = ""
    goal: Goal = Goal()
    audience: Audience = Audience()
    channels: list[Channel] = Field(min_length=1)
    offers: list[Offer] = Field(min_length=1)
    limits: Limits = Limits()
    experiment: Experiment = Experiment()
    content: Content = Content()
    cadence: Cadence = Cadence()
    stop: StopRule = StopRule()
    simulation: Simulation = Simulation()
    # What one message costs to send, per channel (currency); contribution margin pays it.
    channel_cost: dict[Channel, float] = Field(default_factory=_default_channel_cost)

    @model_validator(mode="after")
    def _consistent(self) -> CampaignSpec:
        ids = [o.id for o in self.offers]
        if len(set(ids)) != len(ids):
            raise ValueError("offers: offer ids must be unique")
        if len(set(self.channels)) != len(self.channels):
            raise ValueError("channels: each channel may appear once")
        if self.stop.min_cycles > self.cadence.max_cycles:
            raise ValueError("stop.min_cycles: larger than cadence.max_cycles")
        if any(cost < 0 for cost in self.channel_cost.values()):
            raise ValueError("channel_cost: a cost must not be negative")
        return self

    def cost_of(self, channel: str) -> float:
        return float(self.channel_cost.get(channel, 0.0))  # type: ignore[call-overload]

    @property
    def arms(self) -> list[tuple[str, Offer, Channel]]:
        """Every (offer, channel) pair is an arm, named 'offer@channel'."""
        return [(f"{o.id}@{c}", o, c) for o in self.offers for c in self.channels]

    @property
    def salt(self) -> str:
        return self.experiment.salt or self.id


def parse_spec(data: Any) -> CampaignSpec:
    try:
        return CampaignSpec.model_validate(data)
    except ValidationError as exc:
        problems = [
            (".".join(str(p) for p in err["loc"]) or "spec", err["msg"]) for err in exc.errors()
        ]
        raise SpecError(problems) from None


def load_spec(path: str | Path) -> CampaignSpec:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SpecError([(str(p.name), "file not found")]) from None
    except yaml.YAMLError as exc:
        raise SpecError([(str(p.name), f"not valid YAML: {exc}")]) from None
    if not isinstance(data, dict):
        raise SpecError([(str(p.name), "the spec must be a mapping")])
    return parse_spec(data)
